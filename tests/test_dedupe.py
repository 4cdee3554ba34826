"""Exact and MinHash-LSH dedupe in the Rust core, on corpora with known clusters."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from ditto_native import DittoError, duplicates, exact_duplicates, near_duplicates

from synthetic import near_duplicate_corpus, pair_scores  # bench/synthetic.py, on the path through conftest

LSH = dict(word_ngram=3, cjk_char_ngram=3, num_perm=128, bands=32, rows=4, seed=1, max_bucket_window=64)


def _clusters(texts, threshold=0.5, **kw):
    rep, partner, jac = near_duplicates(pa.array(texts), threshold=threshold, **{**LSH, **kw})
    return rep.to_numpy(), partner, jac.to_numpy()


@pytest.fixture(scope="module")
def corpus():
    return near_duplicate_corpus(4000, seed=11)


def test_exact_duplicates_normalise_and_group():
    texts = pl.Series(["Hello World", "hello world", "other", "Hello World"])
    assert exact_duplicates(texts).to_pylist() == [0, 0, 2, 0]
    assert exact_duplicates(texts, pl.Series([1, 2, 1, 2], dtype=pl.UInt32)).to_pylist() == [0, 1, 2, 1]
    # Any Arrow string layout is read, chunked input too.
    chunked = pa.chunked_array([pa.array(["a b", "x"], pa.string_view()), pa.array(["A B"], pa.string_view())])
    assert exact_duplicates(chunked).to_pylist() == [0, 1, 0]
    assert exact_duplicates(pa.array(["a b", "x", "A B"], pa.large_string())).to_pylist() == [0, 1, 0]


def test_near_duplicates_on_known_clusters(corpus):
    texts, truth = corpus
    rep, _, _ = _clusters(texts)
    scores = pair_scores(truth, rep.tolist())
    assert scores["true_pairs"] > 1000
    assert scores["precision"] >= 0.99, scores
    assert scores["recall"] >= 0.95, scores
    # A representative is the lowest index of its cluster.
    assert (rep <= np.arange(len(rep))).all()
    assert (rep[rep] == rep).all()


def test_every_kind_of_edit_is_found():
    base = "The apple fell from the tree. I wrote down the law of gravity. Light splits in a prism. The moon pulls the tides."
    variants = [
        base.replace("apple", "appel"),  # character edit
        base.replace("the law of", "law the of"),  # word swap
        " ".join(reversed(base.split(". "))),  # reordered sentences
        "Well, you know, " + base,  # added filler
    ]
    zh = "苹果从树上落下来。我写下了万有引力定律。光在棱镜中分成七色。月亮牵引着潮汐。"
    zh_variants = [zh.replace("苹果", "萍果"), "其实，" + zh, "。".join(reversed(zh.rstrip("。").split("。"))) + "。"]
    unrelated = ["A completely different text about painting portraits in Florence during the spring.", "画家在春天的佛罗伦萨画肖像。"]
    texts = [base, *variants, zh, *zh_variants, *unrelated]
    rep, partner, jac = _clusters(texts)
    assert rep.tolist() == [0] * 5 + [5] * 4 + [9, 10]
    assert partner.to_pylist()[9:] == [None, None]
    assert (jac[1:9] >= 0.5).all()


def test_groups_keep_duplicates_apart():
    texts = ["what did you discover about light and colour"] * 4
    rep, _, _ = near_duplicates(pa.array(texts), pa.array([7, 8, 7, 8]), threshold=0.8, **LSH)
    assert rep.to_pylist() == [0, 1, 0, 1]


def test_same_result_for_one_and_many_threads(corpus):
    texts, _ = corpus
    arr = pa.array(texts)
    one = near_duplicates(arr, threshold=0.5, num_threads=1, **LSH)
    many = near_duplicates(arr, threshold=0.5, num_threads=4, **LSH)
    assert all(a.equals(b) for a, b in zip(one, many))
    assert exact_duplicates(arr, num_threads=1).equals(exact_duplicates(arr, num_threads=3))


def test_small_bucket_window_keeps_clusters_whole():
    texts = ["the same sentence about optics and gravity again"] * 300 + ["other words entirely here now"]
    rep, _, _ = _clusters(texts, max_bucket_window=1)
    assert rep.tolist() == [0] * 300 + [300]


@pytest.mark.parametrize(
    "kw,message",
    [(dict(bands=64), "bands \\* rows = 256 exceeds num_perm = 128"), (dict(threshold=1.5), "threshold"), (dict(word_ngram=0), "shingle")],
)
def test_bad_settings_raise_project_error(kw, message):
    with pytest.raises(DittoError, match=message):
        near_duplicates(pa.array(["a"]), **{**LSH, "threshold": 0.5, **kw})


def test_wrong_arrow_types_raise_project_error():
    with pytest.raises(DittoError, match="texts: expected strings"):
        exact_duplicates(pa.array([1, 2]))
    with pytest.raises(DittoError, match="groups has 1 entries but texts has 2"):
        exact_duplicates(pa.array(["a", "b"]), pa.array([1]))


def test_reordered_chinese_sentences_keep_their_jaccard():
    # Character n-grams stop at sentence ends, so reordering whole sentences
    # leaves the shingle set as it was: Jaccard 1, as for English word order.
    zh = ["苹果从树上落下来。", "我写下了万有引力定律。", "光在棱镜中分成七色！", "月亮牵引着潮汐。"]
    texts = ["".join(zh), "".join(zh[2:] + zh[:2]), "".join(reversed(zh))]
    rep, partner, jac = near_duplicates(pa.array(texts), threshold=0.9, **LSH)
    assert rep.to_pylist() == [0, 0, 0]
    assert jac.to_pylist() == [1.0, 1.0, 1.0]


def test_both_passes_in_one_call_match_the_separate_calls(corpus):
    texts, _ = corpus
    arr = pa.array(texts[:1500] + texts[:200])  # 200 exact repeats at the end
    groups = pa.array([i % 3 for i in range(1700)])
    first, near = duplicates(arr, groups, exact=True, threshold=0.5, **LSH)
    assert first.equals(exact_duplicates(arr, groups))
    keep = [i for i, f in enumerate(first.to_pylist()) if f == i]
    assert len(keep) <= 1500
    sub = near_duplicates(pa.array([texts[i] for i in keep]), pa.array([i % 3 for i in keep]), threshold=0.5, **LSH)
    assert all(a.equals(b) for a, b in zip(near, sub))
    assert duplicates(arr, exact=False, threshold=None, **LSH) == (None, None)
