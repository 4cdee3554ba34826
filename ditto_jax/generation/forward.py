"""The engine's forward pass: the model's `decoder_layer`, unrolled over per-layer weights and KV buffers.

`CausalLM` scans its one layer function over stacked layer weights, which suits
training. For decoding on XLA CPU that layout is slow: slicing a layer out of a
stacked array inside the compiled step copies it, and a KV cache carried
through the scan is copied whole on every layer. Measured on SmolLM2 at batch
16 (2 cores): 660 ms per decode step through the scan, 62 ms with the layers
unrolled over separate buffers. So the engine holds each layer's weights as
their own arrays and keeps one K and one V buffer per layer (donated to every
step, so XLA writes the new slots in place), and calls the same
`decoder_layer` once per layer with an `attn_fn` that writes the head-major
buffers and attends over them. The maths and the precision policy are the
model's (see model.py); `matmul_dtype=bfloat16` weights make bf16 the compute
dtype. Tests hold it to the model: greedy output equals transformers', and the
engine's tokens equal a full-forward reference.

Einsum letters as in model.py: B batch, T query length, S cache slots, D hidden,
K kv heads, E head dim, V vocab.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ditto_jax.attention import _MASK_VALUE
from ditto_jax.config import ModelConfig, rope_inv_freq
from ditto_jax.lora import BASE_MATRICES
from ditto_jax.model import CausalLM, OutIn, decoder_layer, project, rms_norm


class InferenceWeights(NamedTuple):
    embed_vd: jax.Array  # [V, D]
    # One dict per layer, keys as DecoderLayers attributes; base matrices as OutIn ([out, in]).
    layers: tuple[dict[str, "jax.Array | OutIn"], ...]
    final_norm_d: jax.Array  # [D]
    lm_head: OutIn  # [V, D]: the embedding itself when tied


class KVBuffers(NamedTuple):
    """One K and one V buffer per layer. Slot s of row b holds the key/value of that row's token at position s.

    Head-major, so the attention matmuls get their batch dims (B, K) leading: slot-major
    [B, S, K, E] made XLA copy-transpose every layer's whole cache on every step (~140 MB
    per step for SmolLM2 at batch 16, 192 slots). Keys are stored transposed, [E, S], so
    q.K is a plain (untransposed) product: ~5% faster decode steps than [S, E].

    A row's slots past its current position hold stale data (an earlier row's, or prefill
    padding); every query masks slots after its own position, and a row writes slot p
    before its query at position p reads it, so stale slots are never attended.
    """

    k: tuple[jax.Array, ...]  # L x [B, K, E, S]
    v: tuple[jax.Array, ...]  # L x [B, K, S, E]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, slots)."""
        return self.v[0].shape[0], self.v[0].shape[2]


def weights_from_model(model: CausalLM, matmul_dtype=None) -> InferenceWeights:
    """Copy the model's stacked layer weights into one array per layer (done once per engine).

    Base matrices are stored [out, in] (`OutIn`, faster on XLA CPU at small
    batch); LoRA factors, norms and biases keep the model's layout.
    `matmul_dtype` (e.g. bfloat16) stores the projection and head matrices in
    that dtype; norms and biases keep theirs.
    """
    stacked = model.layers.arrays()

    def cast(name, arr):
        return arr.astype(matmul_dtype) if matmul_dtype is not None and name.startswith("w") else arr

    def layer(i):
        out = {}
        for name, arr in stacked.items():
            w = cast(name, arr[i])
            out[name] = OutIn(jnp.array(w.T)) if name in BASE_MATRICES and w.ndim == 2 else jnp.array(w)
        return out

    layers = tuple(layer(i) for i in range(model.cfg.num_layers))
    embed = model.embed_vd[...]
    head = embed if model.lm_head_dv is None else model.lm_head_dv[...].T
    return InferenceWeights(embed, layers, model.final_norm_d[...], OutIn(cast("w", jnp.array(head))))


def empty_buffers(cfg: ModelConfig, batch: int, slots: int, dtype=jnp.float32) -> KVBuffers:
    b, k, e, s = batch, cfg.num_kv_heads, cfg.head_dim, slots
    keys = tuple(jnp.zeros((b, k, e, s), dtype) for _ in range(cfg.num_layers))
    values = tuple(jnp.zeros((b, k, s, e), dtype) for _ in range(cfg.num_layers))
    return KVBuffers(keys, values)


@functools.partial(jax.jit, static_argnames=("slots",))  # no donation: the output's shape differs
def resize_buffers(buffers: KVBuffers, rows_b: jax.Array, *, slots: int) -> KVBuffers:
    """New buffers of [len(rows_b), slots] whose row i is old row `rows_b[i]` (its first `slots` slots, zero-padded).

    Grows the batch or the cache length, or compacts live rows into a smaller batch.
    """

    def one(a, slot_axis):
        a = a[rows_b]
        have = a.shape[slot_axis]
        if have >= slots:
            return jax.lax.slice_in_dim(a, 0, slots, axis=slot_axis)
        pad = [(0, 0)] * a.ndim
        pad[slot_axis] = (0, slots - have)
        return jnp.pad(a, pad)

    return KVBuffers(tuple(one(k, 3) for k in buffers.k), tuple(one(v, 2) for v in buffers.v))


def _attend(q_bthe, k_bkes, v_bkse, mask_bts, num_kv_heads: int):
    """Grouped-query attention over the head-major cache; float32 scores and softmax. Returns [B, T, H, E]."""
    b, t, h, e = q_bthe.shape
    g = h // num_kv_heads
    q_bkgte = q_bthe.reshape(b, t, num_kv_heads, g, e).transpose(0, 2, 3, 1, 4) * (e**-0.5)
    scores = jnp.einsum("bkgte,bkes->bkgts", q_bkgte, k_bkes.astype(jnp.float32), preferred_element_type=jnp.float32)
    scores = jnp.where(mask_bts[:, None, None], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bkse->bkgte", probs, v_bkse.astype(jnp.float32), preferred_element_type=jnp.float32)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)  # head index k * G + g, as the model's reshape


def _layers(cfg, weights: InferenceWeights, buffers: KVBuffers, tokens_bt, positions_bt, mask_bts, write):
    """Embed, then `decoder_layer` per layer over its own buffers; the final hidden states [B, T, D] and new buffers.

    `write(k_buf, v_buf, k_btke, v_btke)` stores a layer's new keys/values in its buffers.
    """
    inv_freq = jnp.asarray(rope_inv_freq(cfg))
    x = weights.embed_vd[tokens_bt].astype(jnp.float32)  # [B, T, D] float32 residual
    new_k, new_v = [], []
    for li, params in enumerate(weights.layers):

        def cached_attention(q, k, v, k_buf=buffers.k[li], v_buf=buffers.v[li]):
            k_buf, v_buf = write(k_buf, v_buf, k.astype(k_buf.dtype), v.astype(v_buf.dtype))
            return _attend(q, k_buf, v_buf, mask_bts, cfg.num_kv_heads), (k_buf, v_buf)

        x, (k_buf, v_buf) = decoder_layer(cfg, params, x, positions_bt, inv_freq, cached_attention)
        new_k.append(k_buf)
        new_v.append(v_buf)
    return x, KVBuffers(tuple(new_k), tuple(new_v))


def decode_logits(cfg, weights: InferenceWeights, buffers: KVBuffers, tokens_b, positions_b):
    """Feed one token per row at its own position (= its slot); next-token logits [B, V] (float32) and new buffers.

    The residual stream stays float32; matmuls take the weights' dtype and
    accumulate in float32.
    """
    b = tokens_b.shape[0]
    s = buffers.shape[1]
    rows = jnp.arange(b)
    mask_bts = (jnp.arange(s)[None, :] <= positions_b[:, None])[:, None, :]  # [B, 1, S]

    def write(k_buf, v_buf, k_btke, v_btke):
        # One scatter per buffer; with the buffers donated XLA updates them in place.
        k_buf = k_buf.at[rows, :, :, positions_b].set(k_btke[:, 0])  # [B, K, E] at each row's slot
        v_buf = v_buf.at[rows, :, positions_b, :].set(v_btke[:, 0])
        return k_buf, v_buf

    x, buffers = _layers(cfg, weights, buffers, tokens_b[:, None], positions_b[:, None], mask_bts, write)
    logits = project(rms_norm(x, weights.final_norm_d, cfg.rms_norm_eps), weights.lm_head)
    return logits[:, 0], buffers


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("buffers",))
def prefill_rows(weights, buffers: KVBuffers, rows_r, tokens_rt, start, *, cfg) -> KVBuffers:
    """Write T prompt tokens of each of R rows at positions/slots [start, start + T); no logits.

    Row i of `tokens_rt` goes to batch row `rows_r[i]`. R is bucketed: padding
    rows repeat the first row (its index and tokens) and are written before it,
    so the real row's values land last. Only the named rows are read and
    written (dynamic slices, updated in place in the donated buffers: a gather
    and scatter over the batch axis copied every layer's whole buffer), so the
    other rows of a running batch are untouched. Tokens past a prompt (bucket
    padding) leave stale slots that decoding overwrites before any query reads them.
    """
    r, t = tokens_rt.shape
    s = buffers.shape[1]
    positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (r, t))  # [R, T]
    mask_bts = jnp.broadcast_to((jnp.arange(s)[None, :] <= positions[0][:, None])[None], (r, t, s))  # [R, T, S]

    def gather(a):
        return jnp.concatenate([jax.lax.dynamic_slice_in_dim(a, rows_r[i], 1, axis=0) for i in range(r)], axis=0)

    def scatter(a, new):
        for i in reversed(range(r)):  # padding rows (at the end) first, then the real row they repeat
            a = jax.lax.dynamic_update_slice_in_dim(a, new[i : i + 1], rows_r[i], axis=0)
        return a

    def write(k_buf, v_buf, k_btke, v_btke):
        k_buf = jax.lax.dynamic_update_slice(k_buf, k_btke.transpose(0, 2, 3, 1), (0, 0, 0, start))
        v_buf = jax.lax.dynamic_update_slice(v_buf, v_btke.transpose(0, 2, 1, 3), (0, 0, start, 0))
        return k_buf, v_buf

    some_rows = KVBuffers(tuple(gather(k) for k in buffers.k), tuple(gather(v) for v in buffers.v))
    _, some_rows = _layers(cfg, weights, some_rows, tokens_rt, positions, mask_bts, write)
    return KVBuffers(
        tuple(scatter(k, new) for k, new in zip(buffers.k, some_rows.k)),
        tuple(scatter(v, new) for v, new in zip(buffers.v, some_rows.v)),
    )
