"""Device-side logit processing and sampling against NumPy references of the HF rules."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import llguidance.numpy as llg_numpy
import numpy as np
import pytest

from ditto_jax.generation.sampling import (
    RowParams,
    SamplingSpec,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    choose_tokens,
    greedy_tokens,
    row_uniforms,
    sample_tokens,
    seed_key_data,
    unpack_bitmask,
)

# ---- NumPy references (Hugging Face logits processors, written out) ------------------------


def ref_penalty(logits, seen, penalty):
    out = logits.copy()
    for b in range(logits.shape[0]):
        ids = np.flatnonzero(seen[b])
        score = out[b, ids]
        out[b, ids] = np.where(score < 0, score * penalty[b], score / penalty[b])
    return out


def ref_top_k(logits, k):
    out = logits.copy()
    for b in range(logits.shape[0]):
        if k[b] > 0:
            kth = np.sort(logits[b])[::-1][k[b] - 1]
            out[b, logits[b] < kth] = -np.inf
    return out


def ref_top_p(logits, p):
    """HF TopPLogitsWarper: sort ascending, drop while the cumulative mass <= 1 - top_p, keep the top token."""
    out = logits.copy()
    for b in range(logits.shape[0]):
        if p[b] >= 1:
            continue
        order = np.argsort(logits[b], kind="stable")
        x = logits[b, order].astype(np.float64)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        remove = np.cumsum(probs) <= 1 - p[b]
        remove[-1] = False
        out[b, order[remove]] = -np.inf
    return out


def _logits(batch, vocab, seed, scale=3.0):
    return np.random.default_rng(seed).normal(size=(batch, vocab)).astype(np.float32) * scale


# ---- processors -----------------------------------------------------------------------------


def test_repetition_penalty_matches_reference():
    logits = _logits(4, 300, 0)
    seen = np.random.default_rng(1).random((4, 300)) < 0.2
    penalty = np.array([1.0, 1.3, 2.0, 0.8], np.float32)
    got = np.asarray(apply_repetition_penalty(jnp.asarray(logits), jnp.asarray(seen), jnp.asarray(penalty)))
    np.testing.assert_allclose(got, ref_penalty(logits, seen, penalty), rtol=1e-6)
    assert not np.allclose(got[2], logits[2])  # the penalty did something


@pytest.mark.parametrize("vocab", [300, 1000])
def test_top_k_matches_reference(vocab):
    logits = _logits(5, vocab, 2)
    k = np.array([0, 1, 5, 40, 64], np.int32)
    got = np.asarray(apply_top_k(jnp.asarray(logits), jnp.asarray(k), cap=64))
    want = ref_top_k(logits, k)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    assert [int(np.isfinite(r).sum()) for r in got] == [vocab, 1, 5, 40, 64]


def test_top_p_matches_reference_on_peaked_rows():
    # Peaked rows: the nucleus lies inside the 256 candidates (the exact path).
    logits = np.repeat(_logits(1, 5000, 3, scale=4.0), 6, axis=0)
    p = np.array([1.0, 0.1, 0.5, 0.8, 0.9, 0.97], np.float32)
    got = np.asarray(apply_top_p(jnp.asarray(logits), jnp.asarray(p)))
    want = ref_top_p(logits, p)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    kept = np.isfinite(got).sum(axis=1)
    assert kept[0] == 5000 and all(kept[1:] < 256) and np.all(np.diff(kept[1:]) >= 0)


def test_top_p_matches_reference_on_flat_rows():
    # Flat rows: 256 candidates hold far less than top_p, so the bisection fallback decides.
    logits = _logits(4, 4000, 4, scale=0.3)
    p = np.array([0.5, 0.9, 0.99, 1.0], np.float32)
    got = np.asarray(apply_top_p(jnp.asarray(logits), jnp.asarray(p)))
    want = ref_top_p(logits, p)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    assert np.isfinite(got[1]).sum() > 256


def test_processors_match_transformers_warpers():
    """Penalty -> temperature -> top-k -> top-p against transformers' own processors, row by row."""
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = _logits(3, 2000, 5)
    seen_ids = np.array([[1, 5, 9, 1999], [0, 2, 4, 6], [100, 200, 300, 400]])
    seen = np.zeros_like(logits, bool)
    np.put_along_axis(seen, seen_ids, True, axis=1)
    penalty, temp, top_k, top_p = 1.4, 0.7, 50, 0.8
    x = apply_repetition_penalty(jnp.asarray(logits), jnp.asarray(seen), jnp.full((3,), penalty))
    x = x / temp
    x = apply_top_k(x, jnp.full((3,), top_k, jnp.int32), cap=64)
    x = np.asarray(apply_top_p(x, jnp.full((3,), top_p)))
    ids = torch.tensor(seen_ids)
    t = torch.tensor(logits)
    for proc in (RepetitionPenaltyLogitsProcessor(penalty), TemperatureLogitsWarper(temp), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)):
        t = proc(ids, t)
    want = t.numpy()
    np.testing.assert_array_equal(np.isfinite(x), np.isfinite(want))
    np.testing.assert_allclose(x[np.isfinite(x)], want[np.isfinite(want)], rtol=1e-5)


# ---- token choice ----------------------------------------------------------------------------


def test_greedy_is_argmax_with_first_index_on_ties():
    logits = _logits(4, 1000, 6)  # 1000 is not a multiple of the 256-token block
    logits[1, 10] = logits[1, 700] = 50.0  # tie across blocks: first wins
    logits[2, 999] = 60.0  # the last (padded) block
    logits[3, 300] = logits[3, 301] = 70.0  # tie inside a block
    got = np.asarray(greedy_tokens(jnp.asarray(logits)))
    np.testing.assert_array_equal(got, np.argmax(logits, axis=1))
    assert list(got[1:]) == [10, 999, 300]


def test_inverse_cdf_sampling_picks_the_token_whose_interval_holds_u():
    rng = np.random.default_rng(7)
    logits = _logits(1, 1000, 8, scale=2.0)
    logits[0, rng.choice(1000, 300, replace=False)] = -np.inf  # masked tokens must never come out
    probs = np.exp(logits[0] - logits[0].max())
    probs /= probs.sum()
    cdf_hi = np.cumsum(probs.astype(np.float64))
    cdf_lo = cdf_hi - probs
    u = np.sort(rng.random(2000)).astype(np.float32)
    tokens = np.asarray(jax.jit(jax.vmap(lambda ui: sample_tokens(jnp.asarray(logits), ui[None])[0]))(jnp.asarray(u)))
    assert np.all(np.isfinite(logits[0, tokens]))
    assert np.all((cdf_lo[tokens] <= u + 1e-5) & (u - 1e-5 <= cdf_hi[tokens]))
    assert np.all(np.diff(tokens[np.diff(np.r_[0, tokens]) != 0]) > 0)  # monotone in u
    # u right at the ends still lands on real tokens
    edge = np.asarray(sample_tokens(jnp.asarray(np.repeat(logits, 2, 0)), jnp.asarray([0.0, 1.0 - 2**-24], jnp.float32)))
    assert np.all(np.isfinite(logits[0, edge]))


def test_unpack_bitmask_matches_llguidance_kernel():
    rng = np.random.default_rng(9)
    vocab = 1000
    bitmask = rng.integers(-(2**31), 2**31, size=(3, (vocab + 31) // 32), dtype=np.int64).astype(np.int32)
    logits = np.zeros((3, vocab), np.float32)
    llg_numpy.apply_token_bitmask_inplace(logits, bitmask)
    got = np.asarray(unpack_bitmask(jnp.asarray(bitmask), vocab))
    np.testing.assert_array_equal(got, np.isfinite(logits))
    assert 0 < got.sum() < got.size


def _rows(temperature, top_p=None, top_k=None, penalty=None, seeds=None, sample_index=None, min_new=None):
    n = len(temperature)
    return RowParams(
        temperature=jnp.asarray(temperature, jnp.float32),
        top_p=jnp.asarray(top_p if top_p is not None else [1.0] * n, jnp.float32),
        top_k=jnp.asarray(top_k if top_k is not None else [0] * n, jnp.int32),
        penalty=jnp.asarray(penalty if penalty is not None else [1.0] * n, jnp.float32),
        key_data=jnp.asarray([seed_key_data(s) for s in (seeds if seeds is not None else range(n))], jnp.uint32),
        sample_index=jnp.asarray(sample_index if sample_index is not None else [0] * n, jnp.int32),
        min_new_tokens=jnp.asarray(min_new if min_new is not None else [0] * n, jnp.int32),
    )


def test_row_draws_depend_only_on_seed_sample_and_step():
    a = np.asarray(row_uniforms(_rows([1, 1, 1], seeds=[5, 6, 2**40 + 5]), jnp.int32(3)))
    b = np.asarray(row_uniforms(_rows([1, 1, 1, 1], seeds=[9, 2**40 + 5, 5, 6]), jnp.int32(3)))
    assert a[0] == b[2] and a[1] == b[3] and a[2] == b[1]
    assert len(set(a.tolist())) == 3  # 5 and 2**40 + 5 differ: all 64 seed bits count
    c = np.asarray(row_uniforms(_rows([1], seeds=[5]), jnp.int32(4)))
    d = np.asarray(row_uniforms(_rows([1], seeds=[5], sample_index=[1]), jnp.int32(3)))
    assert c[0] != a[0] and d[0] != a[0]


def test_choose_tokens_is_independent_of_batch_position():
    logits = _logits(5, 3000, 10, scale=1.0)
    rows = _rows([1.0, 0.0, 0.8, 1.3, 1.0], top_p=[0.9, 1, 0.95, 1, 0.7], top_k=[0, 0, 20, 100, 0], seeds=[1, 2, 3, 4, 5])
    spec = SamplingSpec(greedy=True, sample=True, top_k_cap=128, top_p=True)
    perm = np.array([3, 0, 4, 1, 2])
    for step in range(4):
        got = np.asarray(choose_tokens(jnp.asarray(logits), rows, jnp.int32(step), spec))
        permuted_rows = jax.tree.map(lambda a: a[perm], rows)
        got_perm = np.asarray(choose_tokens(jnp.asarray(logits[perm]), permuted_rows, jnp.int32(step), spec))
        np.testing.assert_array_equal(got[perm], got_perm)
        assert got[1] == np.argmax(logits[1])  # the temperature-0 row is greedy


def test_sampled_frequencies_follow_the_filtered_distribution():
    vocab, draws = 50, 4000
    logits = _logits(1, vocab, 11, scale=1.5)
    rows = _rows([0.7] * draws, top_k=[10] * draws, seeds=list(range(draws)))
    spec = SamplingSpec(greedy=False, sample=True, top_k_cap=16)
    tokens = np.asarray(choose_tokens(jnp.asarray(np.repeat(logits, draws, 0)), rows, jnp.int32(0), spec))
    want = ref_top_k(logits / 0.7, np.array([10]))[0]
    probs = np.exp(want - want.max())
    probs /= probs.sum()
    freq = np.bincount(tokens, minlength=vocab) / draws
    assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(probs))
    np.testing.assert_allclose(freq, probs, atol=0.03)


def test_mask_and_penalty_apply_before_the_choice():
    logits = np.zeros((2, 64), np.float32)
    logits[:, 7] = 5.0
    logits[:, 9] = 4.0
    logits[:, 11] = -1.0
    seen = np.zeros((2, 64), bool)
    seen[1, 7] = True  # penalised: 5 / 2 = 2.5 < 4
    bitmask = llg_numpy.allocate_token_bitmask(2, 64)
    bitmask[0] = 0
    bitmask[0, 0] = 1 << 11  # row 0 may only emit token 11
    spec = SamplingSpec(greedy=True, sample=False, penalty=True, masked=True)
    got = choose_tokens(jnp.asarray(logits), _rows([0, 0], penalty=[1.0, 2.0]), jnp.int32(0), spec, jnp.asarray(seen), jnp.asarray(bitmask))
    assert list(np.asarray(got)) == [11, 9]


def test_min_new_tokens_masks_every_eos_until_reached():
    logits = np.zeros((3, 64), np.float32)
    logits[:, 2] = 9.0  # EOS (two ids) lead every row
    logits[:, 5] = 8.0
    logits[:, 7] = 7.0
    eos = jnp.asarray([2, 5], jnp.int32)
    spec = SamplingSpec(greedy=True, sample=False, min_new=True)
    rows = _rows([0, 0, 0], min_new=[0, 3, 4])
    got = np.asarray(choose_tokens(jnp.asarray(logits), rows, jnp.int32(3), spec, eos_ids=eos))
    assert list(got) == [2, 2, 7]  # row 2 has 3 < 4 tokens: both EOS ids masked
