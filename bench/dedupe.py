"""Near-duplicate detection: ditto_native vs datasketch MinHashLSH.

Both run on the same generated corpus (default 200k short English and Chinese
texts with known clusters: typos, swapped words, reordered sentences, filler),
with the same shingling (word 3-grams, Han character 3-grams), the same number
of permutations and the same bands x rows. Prints wall time and pair F1 of each
and the speed ratio. Two datasketch figures are given, so the baseline is
never weakened: LSH candidates taken as duplicates (its fastest use) and LSH
candidates verified by exact Jaccard (its most accurate use, as ditto_native
does). The ratio is against the faster one; F1 is compared with the better one.

The machine may be shared: ditto_native's wall time is the best of 3 runs
(timeit's rule), datasketch runs once (a run takes minutes); CPU seconds of
each are printed too, since they depend little on other load.

    .venv/bin/python bench/dedupe.py [--n 200000] [--threshold 0.5]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time

import pyarrow as pa
from datasketch import MinHash, MinHashLSH
from tqdm import tqdm

import ditto_native
from data_tools.cleaning.synthetic import near_duplicate_corpus, pair_scores

# The corpus holds lower-case ASCII words and Han characters only, so this
# regex and str.lower() tokenise exactly as the Rust shingler does on it.
_TOKENS = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]+")


def python_shingles(text: str, word_n: int, cjk_n: int) -> set[str]:
    """Word n-grams over all words; character n-grams inside each Han run;
    a sequence shorter than n is one shingle (the Rust rules)."""
    words: list[str] = []
    out: set[str] = set()
    for tok in _TOKENS.findall(text.lower()):
        if "\u4e00" <= tok[0] <= "\u9fff":
            n = min(cjk_n, len(tok))
            out.update("\x1e" + tok[i : i + n] for i in range(len(tok) - n + 1))
        else:
            words.append(tok)
    if words:
        n = min(word_n, len(words))
        out.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return out


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def union_find_labels(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]


def run_datasketch(texts: list[str], args) -> tuple[tuple[float, float], list[int], tuple[float, float], list[int], list[set[str]]]:
    """((wall, cpu) seconds, labels) for candidates-as-duplicates, then for verified."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    sets = [python_shingles(t, args.word_ngram, args.cjk_char_ngram) for t in tqdm(texts, desc="datasketch shingle", file=sys.stderr)]
    encoded = ([s.encode("utf-8") for s in shingles] for shingles in sets)
    minhashes = MinHash.bulk(tqdm(encoded, total=len(texts), desc="datasketch minhash", file=sys.stderr), num_perm=args.num_perm)
    lsh = MinHashLSH(num_perm=args.num_perm, params=(args.bands, args.rows))
    with lsh.insertion_session() as session:
        for i, m in enumerate(tqdm(minhashes, desc="datasketch insert", file=sys.stderr)):
            if sets[i]:
                session.insert(i, m, check_duplication=False)
    candidates = []
    for i, m in enumerate(tqdm(minhashes, desc="datasketch query", file=sys.stderr)):
        if sets[i]:
            candidates.append((i, [j for j in lsh.query(m) if j < i]))
    raw_labels = union_find_labels(len(texts), ((i, j) for i, js in candidates for j in js))
    t_raw, c_raw = time.perf_counter() - t0, cpu_seconds() - c0

    t1, c1 = time.perf_counter(), cpu_seconds()
    verified = (
        (i, j)
        for i, js in candidates
        for j in js
        if len(sets[i] & sets[j]) >= args.threshold * len(sets[i] | sets[j])
    )
    verified_labels = union_find_labels(len(texts), verified)
    t_verified, c_verified = t_raw + time.perf_counter() - t1, c_raw + cpu_seconds() - c1
    return (t_raw, c_raw), raw_labels, (t_verified, c_verified), verified_labels, sets


def run_native(texts: list[str], args, threads: int | None, seed: int = 1, repeats: int = 1):
    """((best wall, its cpu) seconds, labels, partner, jaccard); the input is
    converted to Arrow inside the timed region."""
    best = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), cpu_seconds()
        out = _native_once(texts, args, threads, seed)
        took = (time.perf_counter() - t0, cpu_seconds() - c0)
        best = took if best is None or took[0] < best[0] else best
    rep, partner, jaccard = out
    return best, rep.to_pylist(), partner, jaccard


def _native_once(texts: list[str], args, threads: int | None, seed: int):
    return ditto_native.near_duplicates(
        pa.array(texts, pa.large_string()),
        threshold=args.threshold,
        word_ngram=args.word_ngram,
        cjk_char_ngram=args.cjk_char_ngram,
        num_perm=args.num_perm,
        bands=args.bands,
        rows=args.rows,
        seed=seed,
        max_bucket_window=64,
        num_threads=threads,
    )


def check_same_shingling(sets: list[set[str]], partner, jaccard, sample: int = 2000) -> None:
    """Exact Jaccard of matched pairs from both shinglers must agree."""
    checked = 0
    for i, (p, j) in enumerate(zip(partner.to_pylist(), jaccard.to_pylist())):
        if p is None:
            continue
        a, b = sets[i], sets[p]
        py = len(a & b) / len(a | b)
        if abs(py - j) > 1e-6:
            raise SystemExit(f"shingling differs: text {i} vs {p}: python jaccard {py:.6f}, rust {j:.6f}")
        checked += 1
        if checked >= sample:
            break
    print(f"shingling cross-check: {checked} matched pairs have the same Jaccard in both")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="texts in the corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.5, help="Jaccard threshold of the verification")
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--bands", type=int, default=32)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--word-ngram", type=int, default=3)
    p.add_argument("--cjk-char-ngram", type=int, default=3)
    p.add_argument("--lsh-seeds", type=int, default=5, help="permutation seeds for the F1 spread of ditto_native")
    args = p.parse_args()

    texts, truth = near_duplicate_corpus(args.n, seed=args.seed)
    print(f"corpus: {len(texts)} texts, {len(set(truth))} true clusters, "
          f"{pair_scores(truth, truth)['true_pairs']} duplicate pairs; num_perm {args.num_perm}, "
          f"bands {args.bands} x rows {args.rows}, word {args.word_ngram}-grams, Han {args.cjk_char_ngram}-grams")

    run_native(texts[:1000], args, None)  # warm the thread pool and page in the module
    t_nat, lab_nat, partner, jaccard = run_native(texts, args, None, repeats=3)
    t_nat1, lab_nat1, _, _ = run_native(texts, args, 1, repeats=3)
    if lab_nat1 != lab_nat:
        raise SystemExit("ditto_native differs between 1 thread and all threads")
    t_raw, lab_raw, t_ver, lab_ver, sets = run_datasketch(texts, args)
    check_same_shingling(sets, partner, jaccard)

    f_nat = pair_scores(truth, lab_nat)
    f_raw = pair_scores(truth, lab_raw)
    f_ver = pair_scores(truth, lab_ver)
    rows = [
        (f"ditto_native ({os.cpu_count()} cores)", t_nat, f_nat),
        ("ditto_native (1 thread)", t_nat1, f_nat),
        ("datasketch LSH, candidates as dups", t_raw, f_raw),
        ("datasketch LSH + exact Jaccard", t_ver, f_ver),
    ]
    print(f"{'method':<38} {'wall s':>8} {'cpu s':>8} {'precision':>10} {'recall':>8} {'F1':>8}")
    for name, (wall, cpu), f in rows:
        print(f"{name:<38} {wall:>8.2f} {cpu:>8.2f} {f['precision']:>10.4f} {f['recall']:>8.4f} {f['f1']:>8.4f}")
    base = min((t_raw, t_ver), key=lambda t: t[0])
    best_f1 = max(f_raw["f1"], f_ver["f1"])
    print(f"speed ratio, wall (fastest datasketch / ditto_native): {base[0] / t_nat[0]:.1f}x all cores, "
          f"{base[0] / t_nat1[0]:.1f}x on 1 thread (target >= 30x)")
    print(f"speed ratio, cpu seconds: {base[1] / t_nat1[1]:.1f}x (1 thread)")
    print(f"F1: ditto_native {f_nat['f1']:.4f} vs best datasketch {best_f1:.4f} "
          f"({'no lower' if f_nat['f1'] >= best_f1 else 'LOWER'})")
    # Which pairs LSH misses depends on the random permutations: show how far
    # F1 moves with the permutation seed alone, to size the difference above.
    f1s = [pair_scores(truth, run_native(texts, args, None, seed)[1])["f1"] for seed in range(1, args.lsh_seeds + 1)]
    if f1s:
        mean = sum(f1s) / len(f1s)
        print(f"ditto_native F1 over permutation seeds 1..{len(f1s)}: mean {mean:.4f}, min {min(f1s):.4f}, max {max(f1s):.4f}")


if __name__ == "__main__":
    main()
