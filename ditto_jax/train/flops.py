"""Model FLOPs per token, accelerator peaks and model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s, with the model FLOPs counted from
the architecture, not from what the compiler ran (recomputation for remat does
not count, as in PaLM's definition):

- matmuls: 6 x the matmul weights per token (2 forward, 4 backward). The
  embedding lookup is not a matmul; the output head is (tied or not).
- causal attention: per layer and token, q.k and p.v over the (t + 1) keys at
  or before position t, averaged over a row of `seq_len`: 2 x 2 x H x E x
  (seq_len + 1) / 2 forward, times 3 for training. Packed rows attend less (only
  within a segment); the convention counts the full row, as MaxText does.

The peak on CPU is measured (`cpu_matmul_peak_flops`); on GPU and TPU it comes
from `KNOWN_PEAK_TFLOPS` (dense bf16, per chip) or an explicit `peak_tflops`.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from ditto_jax.config import ModelConfig

# Dense (no sparsity) bf16 peak TFLOP/s per chip, from the vendors' data sheets. Matched
# against `device.device_kind` in order, so more specific names come first.
KNOWN_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756.0),
    ("h200", 989.0),
    ("h100", 989.0),  # SXM
    ("a100", 312.0),
    ("tpu v6 lite", 918.0),  # v6e (Trillium)
    ("tpu v6e", 918.0),
    ("tpu v5 lite", 197.0),  # v5e
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),  # v5p reports "TPU v5"
    ("tpu v4", 275.0),
)


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that enter a matmul per token: q, k, v, o and the SwiGLU per layer, plus the head."""
    d, f, e = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    attn = d * e * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)  # q and o: H x E wide; k and v: K x E
    return cfg.num_layers * (attn + 3 * d * f) + d * cfg.vocab_size


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True) -> float:
    """Causal score and value matmuls per token, averaged over a row of `seq_len` tokens."""
    forward = cfg.num_layers * 2 * 2 * cfg.num_heads * cfg.head_dim * (seq_len + 1) / 2
    return 3 * forward if training else forward


def flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True) -> float:
    """Model FLOPs per token: 6 x matmul weights + causal attention (2 x and forward only when not training)."""
    per_weight = 6 if training else 2
    return per_weight * matmul_params(cfg) + attention_flops_per_token(cfg, seq_len, training=training)


def known_peak_tflops(device_kind: str) -> float | None:
    """The table's peak for a `device.device_kind` string, or None when the chip is not listed."""
    kind = device_kind.lower()
    for name, tflops in KNOWN_PEAK_TFLOPS:
        if name in kind:
            return tflops
    return None


@functools.lru_cache(maxsize=None)
def cpu_matmul_peak_flops(size: int = 1024, repeats: int = 5, dtype: str = "float32") -> float:
    """Best FLOP/s of a jitted [size, size] x [size, size] matmul on the default device, over `repeats` runs.

    A start-up probe (well under a few seconds on two cores): a square matmul of
    SmolLM2's scale is the best this XLA CPU build does on the trainer's kind of work.
    """
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()  # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_flops(device=None, *, peak_tflops: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from) for MFU.

    Order: an explicit `peak_tflops`; the measured probe on CPU; the table for a
    known GPU/TPU. An unknown accelerator without `peak_tflops` gives (0.0, ...),
    and MFU is then reported as 0.
    """
    if peak_tflops is not None:
        return peak_tflops * 1e12, "config peak_tflops"
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return cpu_matmul_peak_flops(), "CPU matmul probe"
    tflops = known_peak_tflops(device.device_kind)
    if tflops is None:
        return 0.0, f"unknown device {device.device_kind!r}: set peak_tflops for MFU"
    return tflops * 1e12, f"{device.device_kind} bf16 data sheet"


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float, *, devices: int = 1) -> float:
    """Model FLOPs utilisation of `devices` devices processing `tokens_per_s` tokens in all."""
    if peak <= 0 or devices <= 0:
        return 0.0
    return tokens_per_s * flops_per_tok / (peak * devices)
