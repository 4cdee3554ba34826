"""Flax NNX causal decoder for the Llama family.

Covers Llama 2/3 (llama3 RoPE scaling), Mistral, Qwen2/2.5 (qkv bias), Qwen3
(q/k RMSNorm) and SmolLM: GQA, RMSNorm, SwiGLU, Hugging Face split-half RoPE,
tied or untied embeddings.

Layer weights are stacked on a leading layer axis and the forward pass scans
over them, so XLA compiles one layer instead of L copies (SmolLM2's 30 layers
compile in seconds, not minutes, on 2 CPU cores).

Einsum letters, also used as name suffixes: B batch, T query length, S key
length (cache slots), D hidden, F ffn, H query heads, K kv heads, G = H / K
query heads per kv head, E head dim, V vocab, L layers.

Weights are stored HF-native: the q/k projections are in split-half RoPE order,
so import from safetensors and export back are plain (transposing) copies.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ditto_jax.attention import _MASK_VALUE, IMPLEMENTATIONS, attend, masked_attention  # noqa: F401 (_MASK_VALUE: generation)
from ditto_jax.config import ModelConfig, rope_inv_freq
from ditto_jax.sharding import ACT_BTD, constrain
from ditto_native import DittoError

REMAT_POLICIES = ("none", "full", "save-matmuls")


class KVCache(NamedTuple):
    """Per-layer keys and values for generation, plus which slots hold real tokens."""

    k_lbske: jax.Array  # [L, B, S, K, E]
    v_lbske: jax.Array  # [L, B, S, K, E]
    valid_bs: jax.Array  # [B, S] bool: slot holds a real (non-padding) token

    @classmethod
    def zeros(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, max_len), bool))


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    # Normalise in float32 whatever the activation dtype, as HF does.
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * scale.astype(jnp.float32)).astype(x.dtype)


def apply_rope(x_bthe: jax.Array, positions_bt: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """HF split-half rotary embedding: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    angles = positions_bt[..., None].astype(jnp.float32) * inv_freq  # [B, T, E/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x_bthe.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_bthe.dtype)


class DecoderLayers(nnx.Module):
    """All decoder layers' weights, stacked on a leading layer axis L."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        L, D, F, E = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
        HE, KE = cfg.num_heads * E, cfg.num_kv_heads * E
        init = nnx.initializers.normal(0.02)

        def weight(*shape):
            return nnx.Param(init(rngs.params(), shape, param_dtype))

        def ones(*shape):
            return nnx.Param(jnp.ones(shape, param_dtype))

        def zeros(*shape):
            return nnx.Param(jnp.zeros(shape, param_dtype))

        self.attn_norm_ld = ones(L, D)
        self.wq_ldh = weight(L, D, HE)  # kernels are [in, out]: the transpose of torch's Linear.weight
        self.wk_ldk = weight(L, D, KE)
        self.wv_ldk = weight(L, D, KE)
        self.wo_lhd = weight(L, HE, D)
        self.bq_lh = zeros(L, HE) if cfg.qkv_bias else None
        self.bk_lk = zeros(L, KE) if cfg.qkv_bias else None
        self.bv_lk = zeros(L, KE) if cfg.qkv_bias else None
        self.q_norm_le = ones(L, E) if cfg.qk_norm else None
        self.k_norm_le = ones(L, E) if cfg.qk_norm else None
        self.mlp_norm_ld = ones(L, D)
        self.w_gate_ldf = weight(L, D, F)
        self.w_up_ldf = weight(L, D, F)
        self.w_down_lfd = weight(L, F, D)

    def arrays(self) -> dict[str, jax.Array]:
        """The present weights as plain arrays, keyed by attribute name (scan input)."""
        return {name: value[...] for name, value in vars(self).items() if isinstance(value, nnx.Param)}


def _decoder_layer(cfg: ModelConfig, p: dict, x_btd, positions_bt, inv_freq, attn_fn):
    """One pre-norm block. `attn_fn(q, k, v) -> (out [B, T, H, E], extra)` attends (self or cached)."""
    b, t, _ = x_btd.shape
    dtype = x_btd.dtype
    h = rms_norm(x_btd, p["attn_norm_ld"], cfg.rms_norm_eps)
    q = jnp.einsum("btd,dh->bth", h, p["wq_ldh"].astype(dtype))
    k = jnp.einsum("btd,dk->btk", h, p["wk_ldk"].astype(dtype))
    v = jnp.einsum("btd,dk->btk", h, p["wv_ldk"].astype(dtype))
    if cfg.qkv_bias:
        q, k, v = q + p["bq_lh"].astype(dtype), k + p["bk_lk"].astype(dtype), v + p["bv_lk"].astype(dtype)
    q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
    k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
        q = rms_norm(q, p["q_norm_le"], cfg.rms_norm_eps)
        k = rms_norm(k, p["k_norm_le"], cfg.rms_norm_eps)
    q = apply_rope(q, positions_bt, inv_freq)
    k = apply_rope(k, positions_bt, inv_freq)
    attn, extra = attn_fn(q, k, v)
    attn = attn.reshape(b, t, cfg.num_heads * cfg.head_dim)
    x_btd = x_btd + jnp.einsum("bth,hd->btd", attn, p["wo_lhd"].astype(dtype))
    h = rms_norm(x_btd, p["mlp_norm_ld"], cfg.rms_norm_eps)
    gate = jnp.einsum("btd,df->btf", h, p["w_gate_ldf"].astype(dtype))
    up = jnp.einsum("btd,df->btf", h, p["w_up_ldf"].astype(dtype))
    x_btd = x_btd + jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, p["w_down_lfd"].astype(dtype))
    return x_btd, extra


class CausalLM(nnx.Module):
    """Llama-family causal language model.

    Training / scoring:  ``logits, _ = model(tokens, positions, segment_ids)``
      (packed rows: attention stays within a segment; segment 0 is padding).
      The same pass in two halves, for a loss that never forms all logits:
      ``model.hidden_states(tokens, positions, segment_ids)`` [B, T, D] and ``model.head_dv()`` [D, V].
      `attention` picks the implementation (see ditto_jax.attention); set it at
      construction or by assignment (``model.attention = "chunked"``).
    Generation:          ``logits, cache = model(tokens, positions, segment_ids, cache=c, cache_index=i)``
      writes the new keys/values at slots [i, i + T) and attends to all valid
      slots up to each query's own slot (always dense).
    """

    def __init__(
        self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, remat: bool | str = False,
        attention: str = "dense",
    ):
        if remat not in (False, True) + REMAT_POLICIES:
            raise DittoError(f"remat: unknown policy {remat!r}; expected one of {', '.join(REMAT_POLICIES)}")
        if attention not in IMPLEMENTATIONS:
            raise DittoError(f"attention: unknown implementation {attention!r}; expected one of {', '.join(IMPLEMENTATIONS)}")
        self.cfg = cfg
        self.dtype = dtype  # activation / matmul dtype
        self.remat = remat  # recompute layers in the backward pass: False/"none", True/"full" or "save-matmuls"
        self.attention = attention  # static: which `attend` implementation the no-cache pass uses
        self.embed_vd = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size), param_dtype))
        self.layers = DecoderLayers(cfg, rngs=rngs, param_dtype=param_dtype)
        self.final_norm_d = nnx.Param(jnp.ones((cfg.hidden_size,), param_dtype))
        self.lm_head_dv = None if cfg.tie_word_embeddings else nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (cfg.hidden_size, cfg.vocab_size), param_dtype)
        )

    def _layer_fn(self):
        policy = {False: "none", True: "full"}.get(self.remat, self.remat)
        if policy == "none":
            return _decoder_layer
        # save-matmuls keeps the weight matmuls' outputs, not the attention scores (batch-dim dots).
        saveable = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if policy == "save-matmuls" else None
        return jax.checkpoint(_decoder_layer, static_argnums=(0, 5), policy=saveable)

    def head_dv(self) -> jax.Array:
        """The output projection [D, V] in the compute dtype (the embedding's transpose when tied)."""
        head = self.embed_vd[...].T if self.lm_head_dv is None else self.lm_head_dv[...]
        return head.astype(self.dtype)

    def hidden_states(self, tokens_bt: jax.Array, positions_bt: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states [B, T, D] of the training / scoring pass (causal within segments)."""
        cfg = self.cfg
        if segment_ids_bt is None:
            segment_ids_bt = jnp.ones_like(tokens_bt)
        # Rows stay split over the data-parallel devices between layers (a no-op without a mesh).
        x = constrain(self.embed_vd[...][tokens_bt].astype(self.dtype), ACT_BTD)  # [B, T, D]
        inv_freq = jnp.asarray(rope_inv_freq(cfg))  # a compile-time constant, not a weight
        layer, impl = self._layer_fn(), self.attention

        def self_attention(q, k, v):
            return attend(q, k, v, segment_ids_bt, impl=impl), None

        def body(x, p):
            x, _ = layer(cfg, p, x, positions_bt, inv_freq, self_attention)
            return constrain(x, ACT_BTD), None

        x, _ = jax.lax.scan(body, x, self.layers.arrays())
        return rms_norm(x, self.final_norm_d[...], cfg.rms_norm_eps)

    def __call__(
        self,
        tokens_bt: jax.Array,
        positions_bt: jax.Array,
        segment_ids_bt: jax.Array | None = None,
        *,
        cache: KVCache | None = None,
        cache_index: jax.Array | int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        if cache is None:
            x = self.hidden_states(tokens_bt, positions_bt, segment_ids_bt)
            return jnp.einsum("btd,dv->btv", x, self.head_dv(), preferred_element_type=jnp.float32), None

        cfg = self.cfg
        if segment_ids_bt is None:
            segment_ids_bt = jnp.ones_like(tokens_bt)
        x = self.embed_vd[...][tokens_bt].astype(self.dtype)  # [B, T, D]
        inv_freq = jnp.asarray(rope_inv_freq(cfg))
        layer = self._layer_fn()
        t = tokens_bt.shape[1]
        s = cache.valid_bs.shape[1]
        start = jnp.asarray(cache_index, jnp.int32)
        valid = jax.lax.dynamic_update_slice(cache.valid_bs, segment_ids_bt != 0, (0, start))
        query_slot = start + jnp.arange(t)
        mask = (jnp.arange(s)[None, :] <= query_slot[:, None])[None] & valid[:, None, :]  # [B, T, S]

        def body(carry, xs):
            x, k_all, v_all = carry
            p, li = xs

            def cached_attention(q, k, v):
                k_l = jax.lax.dynamic_update_slice(k_all[li], k.astype(k_all.dtype), (0, start, 0, 0))
                v_l = jax.lax.dynamic_update_slice(v_all[li], v.astype(v_all.dtype), (0, start, 0, 0))
                return masked_attention(q, k_l.astype(x.dtype), v_l.astype(x.dtype), mask), (k, v)

            x, (k, v) = layer(cfg, p, x, positions_bt, inv_freq, cached_attention)
            # Write only the new slots back; XLA updates the carried cache in place.
            k_all = jax.lax.dynamic_update_slice(k_all, k.astype(k_all.dtype)[None], (li, 0, start, 0, 0))
            v_all = jax.lax.dynamic_update_slice(v_all, v.astype(v_all.dtype)[None], (li, 0, start, 0, 0))
            return (x, k_all, v_all), None

        layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        (x, k_all, v_all), _ = jax.lax.scan(body, (x, cache.k_lbske, cache.v_lbske), (self.layers.arrays(), layer_ids))
        x = rms_norm(x, self.final_norm_d[...], cfg.rms_norm_eps)
        logits = jnp.einsum("btd,dv->btv", x, self.head_dv(), preferred_element_type=jnp.float32)
        return logits, KVCache(k_all, v_all, valid)


def init_model(
    cfg: ModelConfig, *, seed: int = 0, dtype=jnp.float32, param_dtype=jnp.float32, remat: bool | str = False, attention: str = "dense",
) -> CausalLM:
    return CausalLM(cfg, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=param_dtype, remat=remat, attention=attention)


def abstract_model(
    cfg: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, remat: bool | str = False, attention: str = "dense",
) -> CausalLM:
    """A model whose arrays are shape/dtype placeholders, for loading weights into without initialising."""
    return nnx.eval_shape(
        lambda: CausalLM(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat=remat, attention=attention)
    )


def positions_from_segments(segment_ids_bt: np.ndarray) -> np.ndarray:
    """Positions restarting at 0 for each segment (0 on padding)."""
    seg = np.asarray(segment_ids_bt)
    pos = np.zeros_like(seg, dtype=np.int32)
    for b in range(seg.shape[0]):
        run = 0
        for t in range(seg.shape[1]):
            if t > 0 and seg[b, t] != seg[b, t - 1]:
                run = 0
            pos[b, t] = run if seg[b, t] != 0 else 0
            run += 1
    return pos
