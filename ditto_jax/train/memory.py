"""Per-device memory estimate for a training step, and the check that refuses a config that cannot fit.

An estimate from the architecture, so the trainer can say "this will not fit"
in one line before spending minutes compiling. It adds:

- parameters, in `param_dtype`, split over `param_shards` devices (fsdp x tensor);
- gradients, the same size (plus a float32 accumulator with gradient accumulation);
- AdamW state: two float32 moments per parameter;
- with LoRA (`lora_params` > 0): the frozen base (its layer matrices in
  `quantize_base` bytes when quantized) plus the adapters, and gradients and
  AdamW moments for the adapters only;
  a quantized base is dense one layer at a time only with remat (full or
  save-matmuls); with none, every dequantized layer is kept for the backward;
  with LoRA dropout and remat none, each adapter's dropped input (compute
  dtype) and its mask (1 byte) are kept too (`lora_dropout_inputs`); remat
  recomputes them from the dropout keys;
- activations kept for the backward pass, which depend on the remat policy:
  ``none`` keeps every layer's intermediates, ``full`` only each layer's input,
  ``save-matmuls`` each layer's weight-matmul outputs (not attention scores);
- the workspace of the largest transient: one layer's recomputed intermediates
  and its attention scores in the backward pass (dense: [B, H, T, T] float32
  several times over; chunked: [B, H, block, block]), or one loss chunk's
  [B, chunk, V] float32 logits, whichever is larger.

Per-token sizes follow the tensors in model.py's `_decoder_layer`; XLA fuses
some away and adds its own buffers, so `check_fits` keeps a margin.

Letters: B micro batch, T sequence length, D hidden, F ffn, H / K query / kv
heads, E head dim, V vocab, L layers.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from ditto_jax.config import ModelConfig
from ditto_native import DittoError

REMAT_POLICIES = ("none", "full", "save-matmuls")
GIB = 1024**3
# Bytes per base-matrix weight when quantized: int8 codes (+ per-channel scales, negligible);
# nf4: a nibble plus a float32 absmax per block of 64.
QUANT_BYTES = {"int8": 1.0, "nf4": 0.5 + 4 / 64}


def base_matrix_params(cfg: ModelConfig) -> int:
    """Weights in the decoder layers' seven projection matrices (what QLoRA quantizes)."""
    d, f, e = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    return cfg.num_layers * (d * e * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) + 3 * d * f)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device."""

    params: int
    grads: int
    optimizer: int
    activations: int  # kept from the forward pass for the backward pass
    workspace: int  # the largest transient (attention scores, a loss chunk)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.workspace

    def describe(self) -> str:
        """One line: 'total 3.2 GiB = params 0.5 + grads 0.5 + optimizer 1.0 + activations 0.9 + workspace 0.3'."""
        gib = {f.name: getattr(self, f.name) / GIB for f in dataclasses.fields(self)}
        parts = " + ".join(f"{name} {value:.2f}" for name, value in gib.items())
        return f"total {self.total / GIB:.2f} GiB = {parts}"


def _layer_saved_bytes_per_token(cfg: ModelConfig, seq_len: int, remat: str, attention: str, s: int, tensor: int, dropped: float = 0) -> float:
    """Bytes one layer keeps for its backward pass, per token of the micro batch.

    `dropped`: elements per token of adapter inputs that LoRA dropout copies (kept only with remat none).
    """
    d, f, e = cfg.hidden_size, cfg.intermediate_size / tensor, cfg.head_dim
    he, ke = cfg.num_heads * e / tensor, cfg.num_kv_heads * e / tensor
    heads = cfg.num_heads / tensor
    dense = attention == "dense"
    if remat == "full":
        return s * d  # the layer input; the rest is recomputed
    if remat == "save-matmuls":
        # The layer input and the outputs of q, k, v, o, gate, up and down; scores are recomputed.
        return s * (d + he + 2 * ke + 2 * d + 2 * f)
    # none: norm inputs/outputs, q/k/v before and after RoPE, attention output, residuals, SwiGLU.
    kept = s * (4 * d + 3 * he + 3 * ke + 3 * f) + dropped * (s + 1)
    if dense:
        kept += heads * seq_len * (4 + s) + seq_len  # f32 probabilities, their cast, the mask
    else:
        kept += s * he + 4 * heads  # the output and the log-sum-exp saved by the custom VJP
    return kept


def estimate_memory(
    cfg: ModelConfig,
    *,
    seq_len: int,
    micro_batch: int,
    param_dtype="float32",
    compute_dtype="float32",
    remat: str = "none",
    attention: str = "dense",
    param_shards: int = 1,
    tensor: int = 1,
    grad_accum: bool = False,
    lora_params: int = 0,
    quantize_base: str = "none",
    lora_dropout_inputs: float = 0,
    loss_chunk: int = 512,
    attention_block: int = 512,
) -> MemoryEstimate:
    """Per-device bytes of one training step of `micro_batch` rows of `seq_len` tokens.

    `attention` is a resolved implementation (dense, chunked, splash, cudnn: the
    last two are blockwise kernels, costed as chunked). `param_shards` is the
    number of devices the parameters and optimizer state are split over,
    `tensor` the tensor-parallel split of heads and ffn activations.
    `lora_dropout_inputs`: with LoRA dropout, `ditto_jax.lora.dropout_inputs` (0 without).

    >>> estimate_memory(smollm2_cfg, seq_len=8192, micro_batch=1, remat="full", attention="chunked").describe()
    """
    if remat not in REMAT_POLICIES:
        raise DittoError(f"remat: unknown policy {remat!r}; expected one of {', '.join(REMAT_POLICIES)}")
    p_bytes, s = jnp.dtype(param_dtype).itemsize, jnp.dtype(compute_dtype).itemsize
    n_params = cfg.num_params()
    trained = lora_params or n_params
    quantized = base_matrix_params(cfg) if lora_params and quantize_base != "none" else 0
    base = 0 if not lora_params else (n_params - quantized) * p_bytes + quantized * QUANT_BYTES.get(quantize_base, 0)
    params = (base + trained * p_bytes) / param_shards
    grads = trained * p_bytes / param_shards + (trained * 4 / param_shards if grad_accum else 0)
    optimizer = 2 * trained * 4 / param_shards

    b, t, d, v = micro_batch, seq_len, cfg.hidden_size, cfg.vocab_size
    tokens = b * t
    per_layer = _layer_saved_bytes_per_token(cfg, t, remat, attention, s, tensor, lora_dropout_inputs)
    # Embedding output, final-norm hidden states, and the loss's saved d(loss)/d(hidden) in f32.
    activations = cfg.num_layers * tokens * per_layer + tokens * d * (2 * s + 4)
    if quantized and remat == "none":  # without remat the backward pass keeps every dequantized layer
        activations += quantized * s / param_shards

    # One layer in the backward pass: its recomputed (or kept) intermediates, their
    # gradients, plus the attention scores in flight.
    heads = cfg.num_heads / tensor
    layer_live = 2 * tokens * _layer_saved_bytes_per_token(cfg, t, "none", "chunked", s, tensor, lora_dropout_inputs)
    if attention == "dense":
        # Scores, probabilities and their gradient in f32 plus a cast copy, for the whole row at once.
        scores = b * heads * t * t * (3 * 4 + s)
    else:
        blk = min(attention_block, t)
        scores = b * heads * blk * blk * (4 * 4) + 3 * tokens * heads * cfg.head_dim * 4  # f32 dq/dk/dv accumulators
    # A loss chunk: logits, softmax and d(logits) in f32, plus the f32 head-gradient accumulator.
    loss = b * min(loss_chunk, t) * v * 3 * 4 + d * v * 4 / param_shards
    casts = (n_params * s / param_shards) if jnp.dtype(compute_dtype) != jnp.dtype(param_dtype) else 0
    if quantized:  # one layer's matrices dequantized (float32) and cast, at a time
        casts += quantized / cfg.num_layers * (4 + s) / param_shards
    workspace = max(layer_live + scores, loss) + casts
    return MemoryEstimate(int(params), int(grads), int(optimizer), int(activations), int(workspace))


def device_memory_bytes(device=None) -> int | None:
    """Memory one device may use: the accelerator's limit, or on CPU the host's (cgroup-aware) RAM
    split over the local CPU devices. None when unknown."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup = Path("/sys/fs/cgroup/memory.max")
    if cgroup.is_file():
        limit = cgroup.read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    return total // max(1, jax.local_device_count("cpu"))


def fits(estimate: MemoryEstimate, capacity: int | None, *, margin: float = 0.9) -> bool:
    """Whether the estimate fits in `margin` of the device's memory (unknown capacity: assume it fits)."""
    return capacity is None or estimate.total <= margin * capacity


def check_fits(estimate: MemoryEstimate, capacity: int | None, *, margin: float = 0.9) -> None:
    """Raise a one-line DittoError when the step cannot fit, before anything compiles."""
    if not fits(estimate, capacity, margin=margin):
        raise DittoError(
            f"the config does not fit in device memory: estimated {estimate.describe()}, "
            f"over {margin:.0%} of {capacity / GIB:.2f} GiB per device; "
            "lower micro_batch or the sequence length, or use remat=full, attention=chunked or more fsdp"
        )
