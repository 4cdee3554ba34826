"""Next-token cross-entropy over packed rows, computed chunk by chunk over the sequence.

The full float32 logits of one row are T x V x 4 bytes: 5 GB at T = 8,192 and a
152k vocabulary. `lm_loss_sums` never holds more than one chunk of them
([B, chunk, V]) in the forward pass or the backward pass.

It has a custom VJP, the "fused linear cross-entropy" trick: while a chunk's
logits are live, the forward pass also forms d(loss)/d(logits) = softmax - onehot
and folds it into the gradients for the hidden states and the head at once. The
backward pass then only scales those by the incoming cotangent. This saves the
logits recomputation a jax.checkpoint per chunk would cost (4 head-sized matmuls
per token become 3: ~7% of a SmolLM2 training step) at the same O(B x chunk x V)
memory. Without differentiation (evaluation) the plain loop runs, no gradients.

Einsum letters: B batch, T sequence, C chunk, N chunks, D hidden, V vocab.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def target_weights(input_ids_bt: jax.Array, segment_ids_bt: jax.Array, loss_mask_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Targets and which of them count, aligned with the predicting position.

    Position t predicts input_ids[t + 1]. It counts when loss_mask[t + 1] == 1 and
    t + 1 continues t's segment (segment_ids[t + 1] == segment_ids[t] != 0). The
    last position predicts nothing. Returns (targets [B, T] int32, counted [B, T] bool).
    """
    seg = segment_ids_bt
    counted = (loss_mask_bt[:, 1:] == 1) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    counted = jnp.pad(counted, ((0, 0), (0, 1)))
    targets = jnp.pad(input_ids_bt[:, 1:].astype(jnp.int32), ((0, 0), (0, 1)))
    return targets, counted


def _chunk_logits(h_bcd: jax.Array, head_dv: jax.Array) -> jax.Array:
    return jnp.einsum("bcd,dv->bcv", h_bcd, head_dv, preferred_element_type=jnp.float32)


def _chunk_nll(logits_bcv: jax.Array, tgt_bc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-position negative log-likelihood and log-sum-exp, float32."""
    lse_bc = jax.nn.logsumexp(logits_bcv, axis=-1)
    tgt_logit_bc = jnp.take_along_axis(logits_bcv, tgt_bc[..., None], axis=-1)[..., 0]
    return lse_bc - tgt_logit_bc, lse_bc


@jax.custom_vjp
def _nll_sum(h_nbcd: jax.Array, head_dv: jax.Array, tgt_nbc: jax.Array, w_nbc: jax.Array) -> jax.Array:
    def body(total, xs):
        h, tgt, w = xs
        nll, _ = _chunk_nll(_chunk_logits(h, head_dv), tgt)
        return total + jnp.sum(jnp.where(w, nll, 0.0)), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (h_nbcd, tgt_nbc, w_nbc))
    return total


def _nll_sum_fwd(h_nbcd, head_dv, tgt_nbc, w_nbc):
    vocab = head_dv.shape[1]

    def body(carry, xs):
        total, dhead_dv = carry
        h, tgt, w = xs
        logits = _chunk_logits(h, head_dv)
        nll, lse = _chunk_nll(logits, tgt)
        total = total + jnp.sum(jnp.where(w, nll, 0.0))
        # d nll / d logits = softmax - onehot(target), zero where the target does not count.
        # The one-hot is a compare XLA fuses into this elementwise pass (no [B, C, V] int array).
        onehot = jnp.arange(vocab, dtype=tgt.dtype) == tgt[..., None]
        dlogits = jnp.where(w[..., None], jnp.exp(logits - lse[..., None]) - onehot, 0.0)
        dlogits = dlogits.astype(head_dv.dtype)  # matmul inputs in the compute dtype, f32 accumulation
        dh = jnp.einsum("bcv,dv->bcd", dlogits, head_dv, preferred_element_type=jnp.float32)
        dhead_dv = dhead_dv + jnp.einsum("bcd,bcv->dv", h, dlogits, preferred_element_type=jnp.float32)
        return (total, dhead_dv), dh.astype(h_nbcd.dtype)

    init = (jnp.zeros((), jnp.float32), jnp.zeros(head_dv.shape, jnp.float32))
    (total, dhead_dv), dh_nbcd = jax.lax.scan(body, init, (h_nbcd, tgt_nbc, w_nbc))
    return total, (dh_nbcd, dhead_dv.astype(head_dv.dtype))


def _nll_sum_bwd(residuals, g):
    dh_nbcd, dhead_dv = residuals
    # The loss is a sum, so its gradient is linear in the scalar cotangent g.
    return (g * dh_nbcd).astype(dh_nbcd.dtype), (g * dhead_dv).astype(dhead_dv.dtype), None, None


_nll_sum.defvjp(_nll_sum_fwd, _nll_sum_bwd)


def lm_loss_sums(
    hidden_btd: jax.Array,
    head_dv: jax.Array,
    input_ids_bt: jax.Array,
    segment_ids_bt: jax.Array,
    loss_mask_bt: jax.Array,
    *,
    chunk: int = 512,
) -> tuple[jax.Array, jax.Array]:
    """Summed next-token cross-entropy and the number of counted targets, both float32.

    `hidden_btd` are the final-norm hidden states (``model.hidden_states(...)``) and
    `head_dv` the output projection (``model.head_dv()``). Logits are formed
    `chunk` positions at a time with float32 accumulation; log-softmax is float32.
    Divide the sum by the count of the whole global batch for the mean loss, so
    the value does not depend on accumulation or data parallelism.

    >>> total, count = lm_loss_sums(model.hidden_states(ids, pos, seg), model.head_dv(), ids, seg, mask)
    >>> loss = total / jnp.maximum(count, 1.0)
    """
    b, t, d = hidden_btd.shape
    targets_bt, counted_bt = target_weights(input_ids_bt, segment_ids_bt, loss_mask_bt)
    c = max(1, min(chunk, t))
    n = -(-t // c)
    pad = n * c - t  # T need not be a multiple of the chunk: padded positions never count

    def chunked(x_bt, value=0):
        widths = ((0, 0), (0, pad)) + ((0, 0),) * (x_bt.ndim - 2)
        x = jnp.pad(x_bt, widths, constant_values=value)
        return jnp.moveaxis(x.reshape((b, n, c) + x.shape[2:]), 1, 0)  # [N, B, C, ...]

    total = _nll_sum(chunked(hidden_btd), head_dv, chunked(targets_bt), chunked(counted_bt, False))
    return total, jnp.sum(counted_bt, dtype=jnp.float32)
