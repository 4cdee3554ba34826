"""The inference forward pass: per-layer weights and per-layer KV buffers, layers unrolled.

`CausalLM.__call__` scans over stacked layer weights, which suits training. For
decoding on XLA CPU that layout is slow: slicing a layer out of a stacked array
inside the compiled step copies it, and a KV cache carried through the scan is
copied whole on every layer. Measured on SmolLM2 at batch 16 (2 cores): 660 ms
per decode step through the scan, 62 ms with the layers unrolled over separate
buffers. So the engine holds each layer's weights as their own arrays, keeps one
K and one V buffer per layer (donated to every step, so XLA writes the new slot
in place), and reuses the model's own `_decoder_layer` for the maths, which
keeps it identical to the parity-tested model.

Einsum letters as in model.py: B batch, T query length, S cache slots, D hidden,
K kv heads, E head dim, V vocab.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from ditto_jax.config import ModelConfig, rope_inv_freq
from ditto_jax.model import CausalLM, _decoder_layer, rms_norm


class InferenceWeights(NamedTuple):
    embed_vd: jax.Array  # [V, D]
    layers: tuple[dict[str, jax.Array], ...]  # one dict per layer, keys as DecoderLayers attributes
    final_norm_d: jax.Array  # [D]
    lm_head_dv: jax.Array | None  # [D, V]; None when tied to the embedding


class KVBuffers(NamedTuple):
    # Head-major [B, K, S, E]: the attention dot takes its batch dims (B, K) leading, so this
    # layout feeds it directly. Slot-major [B, S, K, E] made XLA copy-transpose every layer's
    # whole cache on every step (~140 MB per step for SmolLM2 at batch 16, 192 slots).
    k: tuple[jax.Array, ...]  # L x [B, K, S, E]
    v: tuple[jax.Array, ...]  # L x [B, K, S, E]
    valid_bs: jax.Array  # [B, S] bool: slot holds a real token


def weights_from_model(model: CausalLM) -> InferenceWeights:
    """Copy the model's stacked layer weights into one array per layer (done once per engine)."""
    stacked = model.layers.arrays()
    num_layers = model.cfg.num_layers
    layers = tuple({name: jnp.array(arr[i]) for name, arr in stacked.items()} for i in range(num_layers))
    head = None if model.lm_head_dv is None else model.lm_head_dv[...]
    return InferenceWeights(model.embed_vd[...], layers, model.final_norm_d[...], head)


def empty_buffers(cfg: ModelConfig, batch: int, slots: int, dtype=jnp.float32) -> KVBuffers:
    shape = (batch, cfg.num_kv_heads, slots, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    zeros_v = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return KVBuffers(zeros, zeros_v, jnp.zeros((batch, slots), bool))


def forward(
    cfg: ModelConfig,
    dtype,
    weights: InferenceWeights,
    buffers: KVBuffers,
    tokens_bt: jax.Array,
    positions_bt: jax.Array,
    segment_ids_bt: jax.Array,
    start: jax.Array,
    *,
    want_logits: bool,
) -> tuple[jax.Array | None, KVBuffers]:
    """Run T new tokens per row, writing their keys/values at slots [start, start + T).

    Returns the last position's logits [B, V] (float32) when `want_logits`, and
    the updated buffers. Each query attends to valid slots up to its own.
    """
    b, t = tokens_bt.shape
    s = buffers.valid_bs.shape[1]
    valid = jax.lax.dynamic_update_slice(buffers.valid_bs, segment_ids_bt != 0, (0, start))
    query_slot = start + jnp.arange(t)
    mask_bts = (jnp.arange(s)[None, :] <= query_slot[:, None])[None] & valid[:, None, :]
    inv_freq = jnp.asarray(rope_inv_freq(cfg))
    x = weights.embed_vd[tokens_bt].astype(dtype)  # [B, T, D]
    new_k, new_v = [], []
    for li, params in enumerate(weights.layers):

        def cached_kv(k_btke, v_btke, li=li):
            k_all = jax.lax.dynamic_update_slice(buffers.k[li], k_btke.transpose(0, 2, 1, 3).astype(buffers.k[li].dtype), (0, 0, start, 0))
            v_all = jax.lax.dynamic_update_slice(buffers.v[li], v_btke.transpose(0, 2, 1, 3).astype(buffers.v[li].dtype), (0, 0, start, 0))
            # The model's attention takes [B, S, K, E]; XLA folds this transpose into the dot's own.
            as_bske = lambda a: a.transpose(0, 2, 1, 3).astype(dtype)  # noqa: E731
            return as_bske(k_all), as_bske(v_all), mask_bts, (k_all, v_all)

        x, (k_all, v_all) = _decoder_layer(cfg, params, x, positions_bt, inv_freq, cached_kv)
        new_k.append(k_all)
        new_v.append(v_all)
    out = KVBuffers(tuple(new_k), tuple(new_v), valid)
    if not want_logits:
        return None, out
    x_bd = rms_norm(x[:, -1], weights.final_norm_d, cfg.rms_norm_eps)
    if weights.lm_head_dv is None:
        logits = jnp.einsum("bd,vd->bv", x_bd, weights.embed_vd.astype(dtype), preferred_element_type=jnp.float32)
    else:
        logits = jnp.einsum("bd,dv->bv", x_bd, weights.lm_head_dv.astype(dtype), preferred_element_type=jnp.float32)
    return logits, out


@functools.partial(jax.jit, static_argnames=("cfg", "dtype"), donate_argnames=("buffers",))
def prefill_chunk(weights, buffers, tokens_bt, positions_bt, segment_ids_bt, start, *, cfg, dtype) -> KVBuffers:
    """Write one chunk of (left-padded) prompt tokens into the buffers; no logits."""
    _, buffers = forward(cfg, dtype, weights, buffers, tokens_bt, positions_bt, segment_ids_bt, start, want_logits=False)
    return buffers


@jax.jit
def take_rows(tree, rows_b: jax.Array):
    """Keep the given batch rows of every array in `tree` (batch compaction)."""
    return jax.tree.map(lambda a: a[rows_b], tree)
