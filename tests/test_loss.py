"""The chunked next-token loss against a naive full-logits loss (values and gradients)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditto_jax.train.loss import lm_loss_sums

B, T, D, V = 3, 37, 16, 53


def packed_batch(seed: int = 0):
    """Rows with several segments, padding and a partial loss mask."""
    rng = np.random.RandomState(seed)
    seg = np.zeros((B, T), np.int32)
    seg[0, :12], seg[0, 12:30], seg[0, 30:34] = 1, 2, 3  # three segments, then padding
    seg[1, :] = 7  # one segment filling the row
    seg[2, 3:20], seg[2, 20:25] = 4, 5  # padding first, two segments, padding
    ids = rng.randint(0, V, (B, T)).astype(np.int32)
    mask = (rng.rand(B, T) < 0.6).astype(np.int32)
    hidden = rng.randn(B, T, D).astype(np.float32)
    head = (rng.randn(D, V) * 0.7).astype(np.float32)
    return hidden, head, ids, seg, mask


def naive_counted(ids, seg, mask):
    """Written out position by position, independently of the code under test."""
    counted = np.zeros(ids.shape, bool)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            counted[b, t] = mask[b, t + 1] == 1 and seg[b, t + 1] == seg[b, t] != 0
    return counted


def naive_loss(hidden, head, ids, seg, mask):
    """Sum of cross-entropy over counted targets from the full [B, T, V] float32 logits."""
    logits = jnp.einsum("btd,dv->btv", hidden, head, preferred_element_type=jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    targets = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(naive_counted(ids, seg, mask), nll, 0.0))


def float64_loss(hidden, head, ids, seg, mask) -> float:
    logits = hidden.astype(np.float64) @ head.astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    total = 0.0
    for b, t in zip(*np.nonzero(naive_counted(ids, seg, mask))):
        total -= logp[b, t, ids[b, t + 1]]
    return total


@pytest.mark.parametrize("chunk", [1, 8, 37, 512])
def test_chunked_loss_matches_full_logits(chunk):
    hidden, head, ids, seg, mask = packed_batch()
    total, count = jax.jit(lambda h, w: lm_loss_sums(h, w, ids, seg, mask, chunk=chunk))(hidden, head)
    assert total.dtype == jnp.float32 and count.dtype == jnp.float32
    assert count == naive_counted(ids, seg, mask).sum() > 0
    reference = float64_loss(hidden, head, ids, seg, mask)
    assert abs(float(total) - reference) <= 1e-6 * abs(reference)
    assert abs(float(naive_loss(hidden, head, ids, seg, mask)) - reference) <= 1e-6 * abs(reference)


@pytest.mark.parametrize("chunk", [8, 512])
def test_chunked_loss_gradients_match_full_logits(chunk):
    hidden, head, ids, seg, mask = packed_batch(1)
    count = naive_counted(ids, seg, mask).sum()

    def chunked(h, w):
        total, n = lm_loss_sums(h, w, ids, seg, mask, chunk=chunk)
        return total / n  # the trainer's normalisation: the cotangent is not 1

    def naive(h, w):
        return naive_loss(h, w, ids, seg, mask) / count

    loss_c, (dh_c, dw_c) = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(hidden, head)
    loss_n, (dh_n, dw_n) = jax.jit(jax.value_and_grad(naive, argnums=(0, 1)))(hidden, head)
    np.testing.assert_allclose(loss_c, loss_n, rtol=1e-6)
    assert np.abs(dh_n).max() > 1e-3 and np.abs(dw_n).max() > 1e-3  # the gradients are not trivially zero
    np.testing.assert_allclose(dh_c, dh_n, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw_c, dw_n, rtol=1e-5, atol=1e-7)
    # Positions that predict nothing (padding, segment ends, unmasked targets) get no gradient.
    idle = ~naive_counted(ids, seg, mask)
    assert np.all(np.asarray(dh_c)[idle] == 0)


def test_chunked_loss_bfloat16_inputs_stay_close():
    """bf16 hidden states and head: float32 accumulation keeps the loss near the float32 value."""
    hidden, head, ids, seg, mask = packed_batch(2)
    f32, _ = lm_loss_sums(hidden, head, ids, seg, mask, chunk=8)
    bf16, _ = lm_loss_sums(hidden.astype(jnp.bfloat16), head.astype(jnp.bfloat16), ids, seg, mask, chunk=8)
    grads = jax.grad(lambda h, w: lm_loss_sums(h, w, ids, seg, mask, chunk=8)[0], argnums=(0, 1))(
        hidden.astype(jnp.bfloat16), head.astype(jnp.bfloat16)
    )
    assert bf16.dtype == jnp.float32
    assert abs(float(bf16) - float(f32)) < 0.02 * abs(float(f32))
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
    assert all(bool(jnp.isfinite(g.astype(jnp.float32)).all()) for g in grads)


def test_no_counted_targets_gives_zero():
    hidden, head, ids, seg, _ = packed_batch()
    total, count = lm_loss_sums(hidden, head, ids, seg, np.zeros_like(ids), chunk=8)
    assert float(total) == 0.0 and float(count) == 0.0
