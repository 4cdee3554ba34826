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

One layer function, `decoder_layer`, holds the block's maths for every use:
training and scoring (scanned over the stacked weights, `attention` switch),
`cache=` generation here (scanned, cache carried), and the serving engine's
prefill and decode (`generation/forward.py`: layers unrolled over per-layer
weights and head-major KV buffers, 62 against 660 ms per SmolLM2 step). Each
caller only supplies how to attend (`attn_fn`).

Precision policy (one, for all of them):
- the residual stream, RMSNorm, RoPE, the attention softmax and the logits are
  float32;
- every matmul takes its inputs in the compute dtype and accumulates in
  float32 (`preferred_element_type`): the weight matmuls through `project`,
  and attention on q/k/v handed over in the compute dtype (a KV cache stores
  them in its own dtype, float32 unless asked otherwise, and attends in it).
The compute dtype is the model's `dtype` (matrices are cast to it per layer)
or, in the engine, the dtype its weights are stored in (`matmul_dtype`). With
float32 everything is plain float32; with bf16 only matmul inputs are rounded.
"""
from __future__ import annotations

import zlib
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ditto_jax.attention import IMPLEMENTATIONS, attend, masked_attention
from ditto_jax.config import ModelConfig, rope_inv_freq
from ditto_jax.quant import dequantize_layer
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
        """The present weights as plain arrays, keyed by attribute name (scan input).

        With LoRA (`ditto_jax.lora`) these include the adapters, any quantized
        base matrices and `lora_scale` (alpha / rank, repeated per layer).
        """
        out = {name: value[...] for name, value in vars(self).items() if isinstance(value, nnx.Variable)}
        scale = getattr(self, "lora_scale", None)  # static: set by `ditto_jax.lora.attach`
        if scale is not None:
            out["lora_scale"] = jnp.full((self.attn_norm_ld.shape[0],), scale, jnp.float32)
        return out


class OutIn(NamedTuple):
    """A weight matrix stored transposed, [out, in], for `project`.

    The model keeps HF-style [in, out] matrices; the serving engine stores its
    copies [out, in], because XLA CPU streams them faster through small-batch
    products (SmolLM2 at batch 16, 2 cores: the layer matmuls 60 -> 48 ms per
    step, the head 11.5 -> 7 ms, and a tied head needs no copy of the embedding).
    """

    w_hd: jax.Array  # [out, in]

    @property
    def dtype(self):
        return self.w_hd.dtype


def project(x: jax.Array, w: "jax.Array | OutIn", bias: jax.Array | None = None) -> jax.Array:
    """x @ w over the last axis: inputs in the weight's dtype (the compute dtype), float32 accumulation and result."""
    if isinstance(w, OutIn):
        y = jnp.einsum("...d,hd->...h", x.astype(w.dtype), w.w_hd, preferred_element_type=jnp.float32)
    else:
        y = jnp.einsum("...d,dh->...h", x.astype(w.dtype), w, preferred_element_type=jnp.float32)
    return y if bias is None else y + bias.astype(jnp.float32)


def adapted(x: jax.Array, p: dict, name: str, bias: jax.Array | None = None) -> jax.Array:
    """`project(x, p[name], bias)` plus the LoRA update (dropout(x) @ A) @ B * alpha / r when `p` holds adapters for it.

    Dropout (PEFT's `lora_dropout`) acts on the adapter branch's input only, and
    only when the training step put keys in `p` (`AdapterDropout`).
    """
    y = project(x, p[name], bias)
    a_name, b_name = adapter_names(name)
    if a_name not in p:
        return y
    if "lora_dropout_keys" in p:
        x = _dropout(x, p["lora_dropout_keys"], p["lora_dropout_rate"], name)
    return y + project(project(x, p[a_name]), p[b_name]) * p["lora_scale"]


class AdapterDropout(NamedTuple):
    """LoRA dropout for one forward pass: `rate`, and one key per row [B] (see `train.step.dropout_row_keys`)."""

    rate: float
    row_keys: jax.Array


def _dropout(x_btn: jax.Array, row_keys: jax.Array, rate: jax.Array, name: str) -> jax.Array:
    """Inverted dropout of one adapter's input [B, T, N]; each row's mask comes from its own key, so it does
    not depend on how rows are split into micro-batches or over devices. Every adapter draws its own mask."""
    keep = 1.0 - rate
    tag = zlib.crc32(name.encode()) & 0x7FFFFFFF
    draw = jax.vmap(lambda key: jax.random.bernoulli(jax.random.fold_in(key, tag), keep, x_btn.shape[1:]))
    return jnp.where(draw(row_keys), x_btn / keep.astype(x_btn.dtype), 0).astype(x_btn.dtype)


def adapter_names(name: str) -> tuple[str, str]:
    """`wq_ldh` [L, D, H] -> its LoRA factors' names: `wq_a_ldr` [L, D, r] and `wq_b_lrh` [L, r, H]."""
    prefix, letters = name.rsplit("_", 1)
    return f"{prefix}_a_{letters[:2]}r", f"{prefix}_b_{letters[0]}r{letters[2]}"


# attn_fn(q [B, T, H, E], k [B, T, K, E], v [B, T, K, E]) -> (out [B, T, H, E], extra): attends to
# the row itself (training) or to a KV cache it first writes k, v into (generation).
AttnFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, object]]


def decoder_layer(cfg: ModelConfig, p: dict, x_btd: jax.Array, positions_bt: jax.Array, inv_freq: jax.Array, attn_fn: AttnFn):
    """One pre-norm block: x + attn(norm(x)), then + SwiGLU(norm(x)). Returns (x [B, T, D] float32, attn_fn's extra).

    `p` holds this layer's weights (`DecoderLayers` names, layer axis removed),
    matrices in the compute dtype; `x_btd` is the float32 residual stream.
    """
    b, t, _ = x_btd.shape
    compute = p["wq_ldh"].dtype
    h = rms_norm(x_btd, p["attn_norm_ld"], cfg.rms_norm_eps)
    q = adapted(h, p, "wq_ldh", p.get("bq_lh")).reshape(b, t, cfg.num_heads, cfg.head_dim)
    k = adapted(h, p, "wk_ldk", p.get("bk_lk")).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    v = adapted(h, p, "wv_ldk", p.get("bv_lk")).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
        q = rms_norm(q, p["q_norm_le"], cfg.rms_norm_eps)
        k = rms_norm(k, p["k_norm_le"], cfg.rms_norm_eps)
    q = apply_rope(q, positions_bt, inv_freq)
    k = apply_rope(k, positions_bt, inv_freq)
    attn, extra = attn_fn(q.astype(compute), k.astype(compute), v.astype(compute))
    x_btd = x_btd + adapted(attn.reshape(b, t, cfg.num_heads * cfg.head_dim), p, "wo_lhd")
    h = rms_norm(x_btd, p["mlp_norm_ld"], cfg.rms_norm_eps)
    gated = jax.nn.silu(adapted(h, p, "w_gate_ldf")) * adapted(h, p, "w_up_ldf")
    return x_btd + adapted(gated, p, "w_down_lfd"), extra


def layer_weights(p: dict, dtype) -> dict:
    """A layer's weights with the matrices (names starting with "w") in the compute dtype `dtype`.

    Quantized base matrices (QLoRA) are dequantized here, one layer at a time inside the scan.
    """
    p = dequantize_layer(p)
    return {name: w.astype(dtype) if name.startswith("w") else w for name, w in p.items()}


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
        self.dtype = dtype  # compute dtype: matmul inputs (the residual stream stays float32)
        self.remat = remat  # recompute layers in the backward pass: False/"none", True/"full" or "save-matmuls"
        self.attention = attention  # static: which `attend` implementation the no-cache pass uses
        self.embed_vd = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size), param_dtype))
        self.layers = DecoderLayers(cfg, rngs=rngs, param_dtype=param_dtype)
        self.final_norm_d = nnx.Param(jnp.ones((cfg.hidden_size,), param_dtype))
        self.lm_head_dv = None if cfg.tie_word_embeddings else nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (cfg.hidden_size, cfg.vocab_size), param_dtype)
        )

    def _layer_fn(self):
        """`decoder_layer` on a layer's stored weights: cast (and dequantized, for QLoRA) inside the
        rematerialised function, so the backward pass recomputes them instead of keeping them."""
        dtype = self.dtype

        def layer(cfg, p, x, positions, inv_freq, attn_fn):
            return decoder_layer(cfg, layer_weights(p, dtype), x, positions, inv_freq, attn_fn)

        policy = {False: "none", True: "full"}.get(self.remat, self.remat)
        if policy == "none":
            return layer
        # save-matmuls keeps the weight matmuls' outputs, not the attention scores (batch-dim dots).
        saveable = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if policy == "save-matmuls" else None
        return jax.checkpoint(layer, static_argnums=(0, 5), policy=saveable)

    def head_dv(self) -> jax.Array:
        """The output projection [D, V] in the compute dtype (the embedding's transpose when tied)."""
        head = self.embed_vd[...].T if self.lm_head_dv is None else self.lm_head_dv[...]
        return head.astype(self.dtype)

    def hidden_states(
        self, tokens_bt: jax.Array, positions_bt: jax.Array, segment_ids_bt: jax.Array | None = None, *,
        adapter_dropout: AdapterDropout | None = None,
    ) -> jax.Array:
        """Final-norm hidden states [B, T, D] of the training / scoring pass (causal within segments).

        `adapter_dropout` (training steps only) drops LoRA adapter inputs; without it the pass is deterministic.
        """
        cfg = self.cfg
        if segment_ids_bt is None:
            segment_ids_bt = jnp.ones_like(tokens_bt)
        # Rows stay split over the data-parallel devices between layers (a no-op without a mesh).
        x = constrain(self.embed_vd[...][tokens_bt].astype(jnp.float32), ACT_BTD)  # [B, T, D] float32 residual
        inv_freq = jnp.asarray(rope_inv_freq(cfg))  # a compile-time constant, not a weight
        layer, impl, dtype = self._layer_fn(), self.attention, self.dtype

        def self_attention(q, k, v):
            return attend(q, k, v, segment_ids_bt, impl=impl), None

        def body(x, p):
            x, _ = layer(cfg, p, x, positions_bt, inv_freq, self_attention)
            return constrain(x, ACT_BTD), None

        weights = self.layers.arrays()
        if adapter_dropout is not None and adapter_dropout.rate > 0:
            # Scanned with the weights: layer l's row keys are fold_in(row key, l).
            per_layer = jax.vmap(lambda l: jax.vmap(lambda k: jax.random.fold_in(k, l))(adapter_dropout.row_keys))
            weights["lora_dropout_keys"] = per_layer(jnp.arange(cfg.num_layers))  # [L, B]
            weights["lora_dropout_rate"] = jnp.full((cfg.num_layers,), adapter_dropout.rate, jnp.float32)
        x, _ = jax.lax.scan(body, x, weights)
        return rms_norm(x, self.final_norm_d[...], cfg.rms_norm_eps).astype(dtype)

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
            return project(x, self.head_dv()), None

        # Generation: a thin driver of the same layer, scanned with the cache carried.
        cfg = self.cfg
        if segment_ids_bt is None:
            segment_ids_bt = jnp.ones_like(tokens_bt)
        x = self.embed_vd[...][tokens_bt].astype(jnp.float32)  # [B, T, D]
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
                return masked_attention(q, k_l.astype(q.dtype), v_l.astype(q.dtype), mask), (k, v)

            x, (k, v) = layer(cfg, p, x, positions_bt, inv_freq, cached_attention)
            # Write only the new slots back; XLA updates the carried cache in place.
            k_all = jax.lax.dynamic_update_slice(k_all, k.astype(k_all.dtype)[None], (li, 0, start, 0, 0))
            v_all = jax.lax.dynamic_update_slice(v_all, v.astype(v_all.dtype)[None], (li, 0, start, 0, 0))
            return (x, k_all, v_all), None

        layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        (x, k_all, v_all), _ = jax.lax.scan(body, (x, cache.k_lbske, cache.v_lbske), (self.layers.arrays(), layer_ids))
        x = rms_norm(x, self.final_norm_d[...], cfg.rms_norm_eps)
        return project(x, self.head_dv()), KVCache(k_all, v_all, valid)


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
