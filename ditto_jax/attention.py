"""Causal self-attention over packed rows, behind one implementation switch.

`attend(q, k, v, segment_ids, impl=...)` is the training / scoring attention:
a query attends to keys at or before its own position in the same segment, and
segment 0 is padding (attended by nothing). Implementations:

- ``dense``: the explicit [B, H, T, T] float32 scores and mask. Simple, the
  reference for the others, and fastest for short rows; at 8,192 tokens it is
  2.4 GiB per row per layer for SmolLM2.
- ``chunked``: blockwise online softmax in plain JAX (FlashAttention's
  algorithm) with a hand-written backward pass, so forward and backward hold
  O(T x block) scores. Block pairs that are above the diagonal or share no
  segment are skipped. Runs on every backend.
- ``splash``: the Pallas TPU splash-attention kernel with segment ids (TPU only).
- ``cudnn``: cuDNN's fused kernel through ``jax.nn.dot_product_attention``
  (GPU, bf16/fp16), with the segments given as a mask (see `cudnn_attention`).
- ``auto``: splash on TPU, cuDNN on GPU with bf16/fp16 activations, otherwise
  chunked for rows of at least `AUTO_CHUNKED_MIN_LEN` tokens and dense below.

All of them agree on every real (non-padding) query. A padding query has no key
it may attend to; its output is unspecified (dense gives the mean of all values,
chunked gives zero) and never reaches a counted loss target.

Shapes: q [B, T, H, E], k and v [B, S, K, E] with H a multiple of K (GQA; the
number of kv heads comes from the shapes). Letters: B batch, T query length,
S key length, H query heads, K kv heads, G = H / K, E head dim, Q / C a block
of queries / keys, N blocks.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ditto_native import DittoError

# Large negative instead of -inf so a fully masked row (a padding query) gives a
# harmless uniform softmax rather than NaN.
_MASK_VALUE = -1e30

IMPLEMENTATIONS = ("auto", "dense", "chunked", "splash", "cudnn")
AUTO_CHUNKED_MIN_LEN = 1024  # below this the dense scores are small and dense is faster
DEFAULT_BLOCK = 512


# ---- dense --------------------------------------------------------------------------------------


def segment_mask(segment_ids_bt: jax.Array) -> jax.Array:
    """[B, T, T] bool: causal within each packed segment; keys in segment 0 (padding) are masked."""
    t = segment_ids_bt.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    same = segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :]
    return causal[None] & same & (segment_ids_bt[:, None, :] != 0)


def masked_attention(q_bthe: jax.Array, k_bske: jax.Array, v_bske: jax.Array, mask_bts: jax.Array) -> jax.Array:
    """Grouped-query attention with an explicit boolean mask; softmax in float32. Returns [B, T, H, E]."""
    b, t, h, e = q_bthe.shape
    kv_heads = k_bske.shape[2]
    q_btkge = q_bthe.reshape(b, t, kv_heads, h // kv_heads, e)
    scores = jnp.einsum("btkge,bske->bkgts", q_btkge, k_bske, preferred_element_type=jnp.float32)
    scores = scores * (e**-0.5)
    scores = jnp.where(mask_bts[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_bske.dtype)
    out = jnp.einsum("bkgts,bske->btkge", probs, v_bske)
    return out.reshape(b, t, h, e)


# ---- chunked (blockwise online softmax) -----------------------------------------------------------


def _live_blocks(seg_bt: jax.Array, block: int) -> jax.Array:
    """[N, N] bool: query block i may see key block j (j <= i and some row shares a segment).

    Works from each block's range of non-zero segment ids, so it never skips a
    pair that holds an allowed (query, key), whatever the id order.
    """
    b, tp = seg_bt.shape
    n = tp // block
    seg = seg_bt.reshape(b, n, block)
    nonzero = seg != 0
    info = jnp.iinfo(seg.dtype)
    lo = jnp.where(nonzero, seg, info.max).min(-1)  # [B, N]
    hi = jnp.where(nonzero, seg, info.min).max(-1)
    has = nonzero.any(-1)
    overlap = (lo[:, :, None] <= hi[:, None, :]) & (lo[:, None, :] <= hi[:, :, None]) & has[:, :, None] & has[:, None, :]
    return overlap.any(0) & jnp.tril(jnp.ones((n, n), bool))


def _block_mask(seg_q_bq, seg_k_bc, i, j, block):
    """[B, 1, 1, Q, C] bool for query block i against key block j."""
    q_pos = i * block + jnp.arange(block)
    k_pos = j * block + jnp.arange(block)
    causal = k_pos[None, :] <= q_pos[:, None]
    mask = causal[None] & (seg_q_bq[:, :, None] == seg_k_bc[:, None, :]) & (seg_k_bc[:, None, :] != 0)
    return mask[:, None, None]


def _slice(x, i, block, axis):
    return jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=axis)


def _flash_forward(q, k, v, seg, block):
    """q [B, K, G, Tp, E], k/v [B, K, Tp, E], seg [B, Tp] -> (out like q, logsumexp [B, K, G, Tp] f32)."""
    b, kh, g, tp, e = q.shape
    n = tp // block
    scale = e**-0.5
    live = _live_blocks(seg, block)

    def query_block(i, carry):
        out, lse = carry
        q_i, seg_i = _slice(q, i, block, 3), _slice(seg, i, block, 1)

        def key_block(j, state):
            def update(state):
                m, l, acc = state
                k_j, v_j, seg_j = _slice(k, j, block, 2), _slice(v, j, block, 2), _slice(seg, j, block, 1)
                s = jnp.einsum("bkgqe,bkce->bkgqc", q_i, k_j, preferred_element_type=jnp.float32) * scale
                mask = _block_mask(seg_i, seg_j, i, j, block)
                s = jnp.where(mask, s, _MASK_VALUE)
                m_new = jnp.maximum(m, s.max(-1))
                p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
                correction = jnp.exp(m - m_new)
                l = l * correction + p.sum(-1)
                pv = jnp.einsum("bkgqc,bkce->bkgqe", p.astype(v.dtype), v_j, preferred_element_type=jnp.float32)
                return m_new, l, acc * correction[..., None] + pv

            return jax.lax.cond(live[i, j], update, lambda s: s, state)

        init = (
            jnp.full((b, kh, g, block), _MASK_VALUE, jnp.float32),
            jnp.zeros((b, kh, g, block), jnp.float32),
            jnp.zeros((b, kh, g, block, e), jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(0, i + 1, key_block, init)  # causal: key blocks up to the diagonal
        seen = l > 0  # false only on padding queries, which attend nowhere: output 0, no NaN
        o = acc / jnp.where(seen, l, 1.0)[..., None]
        lse_i = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
        out = jax.lax.dynamic_update_slice_in_dim(out, o.astype(out.dtype), i * block, axis=3)
        lse = jax.lax.dynamic_update_slice_in_dim(lse, lse_i, i * block, axis=3)
        return out, lse

    init = (jnp.zeros(q.shape, q.dtype), jnp.zeros((b, kh, g, tp), jnp.float32))
    return jax.lax.fori_loop(0, n, query_block, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, seg, block):
    return _flash_forward(q, k, v, seg, block)[0]


def _flash_fwd(q, k, v, seg, block):
    out, lse = _flash_forward(q, k, v, seg, block)
    return out, (q, k, v, seg, out, lse)


def _flash_bwd(block, residuals, dout):
    """FlashAttention-2 backward: recompute each live block's probabilities from the saved logsumexp."""
    q, k, v, seg, out, lse = residuals
    b, kh, g, tp, e = q.shape
    n = tp // block
    scale = e**-0.5
    live = _live_blocks(seg, block)
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B, K, G, Tp]

    def key_block(j, carry):
        dq, dk, dv = carry
        k_j, v_j, seg_j = _slice(k, j, block, 2), _slice(v, j, block, 2), _slice(seg, j, block, 1)

        def query_block(i, state):
            def update(state):
                dq, dk_j, dv_j = state
                q_i, do_i, seg_i = _slice(q, i, block, 3), _slice(dout, i, block, 3), _slice(seg, i, block, 1)
                lse_i, delta_i = _slice(lse, i, block, 3), _slice(delta, i, block, 3)
                s = jnp.einsum("bkgqe,bkce->bkgqc", q_i, k_j, preferred_element_type=jnp.float32) * scale
                mask = _block_mask(seg_i, seg_j, i, j, block)
                p = jnp.where(mask, jnp.exp(s - lse_i[..., None]), 0.0)
                dv_j = dv_j + jnp.einsum("bkgqc,bkgqe->bkce", p.astype(dout.dtype), do_i, preferred_element_type=jnp.float32)
                dp = jnp.einsum("bkgqe,bkce->bkgqc", do_i, v_j, preferred_element_type=jnp.float32)
                ds = p * (dp - delta_i[..., None]) * scale
                dk_j = dk_j + jnp.einsum("bkgqc,bkgqe->bkce", ds.astype(q.dtype), q_i, preferred_element_type=jnp.float32)
                dq_i = jnp.einsum("bkgqc,bkce->bkgqe", ds.astype(k.dtype), k_j, preferred_element_type=jnp.float32)
                dq = jax.lax.dynamic_update_slice_in_dim(dq, _slice(dq, i, block, 3) + dq_i, i * block, axis=3)
                return dq, dk_j, dv_j

            return jax.lax.cond(live[i, j], update, lambda s: s, state)

        zeros = jnp.zeros((b, kh, block, e), jnp.float32)
        dq, dk_j, dv_j = jax.lax.fori_loop(j, n, query_block, (dq, zeros, zeros))  # causal: queries from the diagonal on
        dk = jax.lax.dynamic_update_slice_in_dim(dk, dk_j, j * block, axis=2)
        dv = jax.lax.dynamic_update_slice_in_dim(dv, dv_j, j * block, axis=2)
        return dq, dk, dv

    init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    dq, dk, dv = jax.lax.fori_loop(0, n, key_block, init)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


def chunked_attention(q_bthe, k_bske, v_bske, segment_ids_bt, *, block: int = DEFAULT_BLOCK) -> jax.Array:
    """Blockwise causal, segment-aware attention; memory O(T x block) forward and backward. Returns [B, T, H, E]."""
    b, t, h, e = q_bthe.shape
    kh = k_bske.shape[2]
    blk = max(1, min(block, t))
    n = -(-t // blk)
    pad = n * blk - t  # padded positions get segment 0: masked as keys, zero as queries, then cut off

    def padded(x):
        return jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))

    q_bkgte = padded(q_bthe).reshape(b, n * blk, kh, h // kh, e).transpose(0, 2, 3, 1, 4)
    k_bkte = padded(k_bske).transpose(0, 2, 1, 3)
    v_bkte = padded(v_bske).transpose(0, 2, 1, 3)
    out = _flash(q_bkgte, k_bkte, v_bkte, padded(segment_ids_bt.astype(jnp.int32)), blk)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, n * blk, h, e)[:, :t]


# ---- splash (TPU) -------------------------------------------------------------------------------


def splash_attention(
    q_bthe, k_bske, v_bske, segment_ids_bt, *, block: int = DEFAULT_BLOCK, interpret: bool = False
) -> jax.Array:
    """Pallas TPU splash attention with segment ids. Returns [B, T, H, E].

    `interpret` runs the kernel in Pallas' interpreter (any backend, slow): the CPU test's way in.
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, t, h, e = q_bthe.shape
    kh = k_bske.shape[2]
    # The kernel tiles the sequence in multiples of 128; padding gets segment 0, which
    # no real query shares.
    blk = min(block, -(-t // 128) * 128)
    tp = -(-t // blk) * blk
    pad = ((0, 0), (0, tp - t))
    seg = jnp.pad(segment_ids_bt.astype(jnp.int32), pad)
    q = jnp.pad(q_bthe * (e**-0.5), pad + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)  # [B, H, T, E]; the kernel does not scale
    k = jnp.pad(k_bske, pad + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)  # [B, K, T, E]
    v = jnp.pad(v_bske, pad + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)
    sizes = sk.BlockSizes(
        block_q=blk, block_kv=blk, block_kv_compute=blk,
        block_q_dkv=blk, block_kv_dkv=blk, block_kv_dkv_compute=blk,
        block_q_dq=blk, block_kv_dq=blk,
    )

    def rows(q_bhte, k_bkte, v_bkte, seg_bt):
        # Built from the (per-shard) shapes: GQA maps query heads onto kv heads from them.
        heads = q_bhte.shape[1]
        mask = sm.MultiHeadMask([sm.CausalMask((tp, tp)) for _ in range(heads)])
        kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret)

        def one_row(q_hte, k_kte, v_kte, seg_t):
            return kernel(q_hte, k_kte, v_kte, segment_ids=sk.SegmentIds(q=seg_t, kv=seg_t))

        return jax.vmap(one_row)(q_bhte, k_bkte, v_bkte, seg_bt)  # [B, H, Tp, E]

    out = _per_shard(rows, b, h, kh)(q, k, v, seg)
    return out.transpose(0, 2, 1, 3)[:, :t]


def _per_shard(fn, batch: int, heads: int, kv_heads: int):
    """Run `fn(q [B, H, T, E], k, v, seg [B, T])` on each device's rows and heads under the current mesh.

    A Pallas kernel is opaque to XLA's partitioner, which would gather every operand and
    run the whole batch on every device; shard_map gives each device its own slice:
    rows over (data, fsdp), heads over tensor, where they divide. No mesh: `fn` itself.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    row_axes = tuple(a for a in ("data", "fsdp") if a in sizes)
    n_rows = 1
    for a in row_axes:
        n_rows *= sizes[a]
    rows = row_axes if row_axes and batch % n_rows == 0 else None
    tp = sizes.get("tensor", 1)
    head_axis = "tensor" if tp > 1 and heads % tp == 0 and kv_heads % tp == 0 else None
    qkv_spec = jax.sharding.PartitionSpec(rows, head_axis, None, None)
    seg_spec = jax.sharding.PartitionSpec(rows, None)
    return jax.shard_map(fn, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec), out_specs=qkv_spec, check_vma=False)


# ---- cuDNN (GPU) --------------------------------------------------------------------------------

# jax 0.10.2's public `jax.nn.dot_product_attention` has no segment ids or packed
# offsets (its cuDNN packed layout is private API). It does take a boolean mask,
# which it hands to cuDNN's fused kernel as an additive [B, 1, T, S] bias: one
# T x S plane per row, shared by all heads (128 MiB in bf16 at 8,192 tokens, and
# as much again for the bias gradient jax forms), against dense attention's
# float32 [B, H, T, S] scores. cuDNN runs only in bfloat16 / float16.
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def cudnn_attention(q_bthe, k_bske, v_bske, segment_ids_bt, *, block: int = DEFAULT_BLOCK) -> jax.Array:
    """cuDNN fused attention with the packed-segment mask (GPU, bf16/fp16). Returns [B, T, H, E]."""
    del block  # cuDNN tiles internally
    mask = segment_mask(segment_ids_bt)[:, None]  # [B, 1, T, S], broadcast over heads
    return jax.nn.dot_product_attention(q_bthe, k_bske, v_bske, mask=mask, implementation="cudnn")


# ---- the switch ---------------------------------------------------------------------------------


def resolve_impl(impl: str, seq_len: int, backend: str | None = None, dtype=None) -> str:
    """The concrete implementation `impl` stands for at this sequence length, backend and activation dtype.

    `dtype` None assumes the trainer's default compute dtype: bfloat16 on GPU and TPU, float32 on CPU.
    """
    if impl not in IMPLEMENTATIONS:
        raise DittoError(f"attention: unknown implementation {impl!r}; expected one of {', '.join(IMPLEMENTATIONS)}")
    backend = backend or jax.default_backend()
    on_gpu = backend in ("gpu", "cuda", "rocm")
    if dtype is None:
        dtype = jnp.float32 if backend == "cpu" else jnp.bfloat16
    half = jnp.dtype(dtype) in CUDNN_DTYPES
    if impl == "auto":
        if backend == "tpu":
            return "splash"
        if on_gpu and half:
            return "cudnn"
        return "chunked" if seq_len >= AUTO_CHUNKED_MIN_LEN else "dense"
    if impl == "splash" and backend != "tpu":
        raise DittoError(f"attention: splash needs a TPU backend, this one is {backend}; use auto or chunked")
    if impl == "cudnn" and not (on_gpu and half):
        raise DittoError(
            f"attention: cudnn needs a GPU backend and bfloat16/float16 activations, not {backend}/{jnp.dtype(dtype)}; "
            "use auto or chunked"
        )
    return impl


_IMPLS = {
    "chunked": chunked_attention,
    "splash": splash_attention,
    "cudnn": cudnn_attention,
}


def attend(q_bthe, k_bske, v_bske, segment_ids_bt, *, impl: str = "dense", block: int = DEFAULT_BLOCK) -> jax.Array:
    """Causal attention within packed segments (segment 0 = padding). Returns [B, T, H, E].

    >>> out = attend(q, k, v, segment_ids, impl="chunked")  # q [B, T, H, E], k/v [B, T, K, E]
    """
    impl = resolve_impl(impl, q_bthe.shape[1], dtype=q_bthe.dtype)
    if impl == "dense":
        return masked_attention(q_bthe, k_bske, v_bske, segment_mask(segment_ids_bt))
    return _IMPLS[impl](q_bthe, k_bske, v_bske, segment_ids_bt, block=block)
