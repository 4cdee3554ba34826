"""Synthetic corpora with known near-duplicate clusters, and pair scores.

Used to measure dedupe (tests/test_dedupe.py and bench/dedupe.py), so it
lives beside the benches, outside the installed packages. Every cluster is a
base text plus variants made by the edits simulators produce when they repeat
themselves: character typos, swapped words, reordered sentences and added
filler. Texts of different clusters are unrelated, except that a share of
them open with one of a few stock sentences, as simulated answers do ("It is
a pleasure to share my thoughts with you."): such texts overlap a little
(Jaccard about 0.1) without being duplicates, which is what LSH candidates
get wrong and exact verification gets right.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import polars as pl

SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
_FILLER_EN = ["well", "you know", "to be honest", "in truth", "as it happens", "i must say"]
_FILLER_ZH = ["其实", "说实话", "你知道吗", "老实说", "话说回来"]


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def _base_text(rng: random.Random, vocab: list[str], zh: bool) -> list[list[str]]:
    """Sentences as token lists (words, or Han characters for Chinese)."""
    if zh:
        return [[chr(0x4E00 + rng.randrange(3000)) for _ in range(rng.randint(8, 15))] for _ in range(rng.randint(3, 5))]
    return [[rng.choice(vocab) for _ in range(rng.randint(6, 12))] for _ in range(rng.randint(3, 5))]


def _render(sentences: list[list[str]], zh: bool) -> str:
    if zh:
        return "".join("".join(s) + "。" for s in sentences)
    return " ".join(" ".join(s).capitalize() + "." for s in sentences)


def _variant(rng: random.Random, base: list[list[str]], zh: bool) -> list[list[str]]:
    sents = [list(s) for s in base]
    for op in rng.sample(["typo", "swap", "reorder", "filler"], rng.choice([1, 1, 2])):
        s = rng.choice(sents)
        i = rng.randrange(len(s))
        if op == "typo":
            if zh:
                s[i] = chr(0x4E00 + rng.randrange(3000))
            else:
                w = s[i]
                j = rng.randrange(len(w))
                s[i] = w[:j] + rng.choice("abcdefghijklmnopqrstuvwxyz") + w[j + 1 :]
        elif op == "swap" and i + 1 < len(s):
            s[i], s[i + 1] = s[i + 1], s[i]
        elif op == "reorder":
            rng.shuffle(sents)
        elif op == "filler":
            filler = rng.choice(_FILLER_ZH if zh else _FILLER_EN)
            s[:0] = list(filler) if zh else filler.split()
    return sents


def near_duplicate_corpus(
    n_texts: int,
    *,
    seed: int = 0,
    duplicate_fraction: float = 0.5,
    max_cluster: int = 5,
    zh_fraction: float = 0.2,
    boilerplate_fraction: float = 0.2,
) -> tuple[list[str], list[int]]:
    """`n_texts` texts in shuffled order and the true cluster id of each.

    About `duplicate_fraction` of the texts belong to clusters of 2 to
    `max_cluster` members (a base and its variants); the rest are singletons.
    About `boilerplate_fraction` of the clusters open with one of 50 stock
    sentences of their language.
    """
    rng = random.Random(seed)
    vocab = _vocabulary(rng, 5000)
    stock = {zh: [_base_text(rng, vocab, zh)[0] for _ in range(50)] for zh in (False, True)}
    texts: list[str] = []
    labels: list[int] = []
    cluster = 0
    while len(texts) < n_texts:
        zh = rng.random() < zh_fraction
        base = _base_text(rng, vocab, zh)
        if rng.random() < boilerplate_fraction:
            base.insert(0, list(rng.choice(stock[zh])))
        size = rng.randint(2, max_cluster) if rng.random() < duplicate_fraction else 1
        size = min(size, n_texts - len(texts))
        texts.append(_render(base, zh))
        texts.extend(_render(_variant(rng, base, zh), zh) for _ in range(size - 1))
        labels.extend([cluster] * size)
        cluster += 1
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


def pair_scores(true: Sequence[int], pred: Sequence[int]) -> dict[str, float]:
    """Precision, recall and F1 over same-cluster pairs, counted without
    listing the pairs (sum of n*(n-1)/2 over contingency cells)."""
    df = pl.DataFrame({"t": list(true), "p": list(pred)})

    def pairs(*keys: str) -> int:
        n = df.group_by(*keys).len()["len"].cast(pl.Int64)
        return int((n * (n - 1) // 2).sum())

    tp, true_pairs, pred_pairs = pairs("t", "p"), pairs("t"), pairs("p")
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": true_pairs, "predicted_pairs": pred_pairs}
