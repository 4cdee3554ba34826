"""Weight-only quantization of the frozen base matrices for QLoRA: int8 and NF4.

A base matrix `wq_ldh` [L, in, out] is stored as two arrays named after it
(the letters keep the sharding rules of `ditto_jax.sharding` working):

  int8: `wq_q8_ldh`  int8 codes [L, in, out] and `wq_q8s_lh` float32 per-output-channel absmax / 127 [L, out];
  nf4:  `wq_nf4_ldh` uint8 [L, in, out / 2] holding two 4-bit indices into the NF4 table (even output
        column in the low nibble), and `wq_nf4s_ldh` float32 absmax [L, in / 64, out] of each block of 64 inputs.

`dequantize_layer` turns them back into `wq_ldh` (float32); it runs per layer
inside the scan, so only one layer's matrices are ever dense. The functions
work on any number of leading axes (stacked [L, ...] or one layer).
"""
from __future__ import annotations

import jax.numpy as jnp

from ditto_native import DittoError

SCHEMES = ("none", "int8", "nf4")
NF4_BLOCK = 64
# The 16 NF4 levels (QLoRA): quantiles of a standard normal scaled to [-1, 1], with an exact zero.
NF4_TABLE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


def stored_names(name: str, scheme: str) -> tuple[str, str]:
    """`wq_ldh` -> the (codes, scales) names it is stored under with `scheme`."""
    prefix, letters = name.rsplit("_", 1)
    if scheme == "int8":
        return f"{prefix}_q8_{letters}", f"{prefix}_q8s_{letters[0]}{letters[2]}"
    return f"{prefix}_nf4_{letters}", f"{prefix}_nf4s_{letters}"


def quantize(w: jnp.ndarray, scheme: str, name: str = "weight") -> tuple[jnp.ndarray, jnp.ndarray]:
    """(codes, scales) of a float matrix [..., in, out]."""
    w = w.astype(jnp.float32)
    if scheme == "int8":
        scale = jnp.max(jnp.abs(w), axis=-2) / 127.0
        scale = jnp.where(scale == 0, 1.0, scale)
        return jnp.clip(jnp.round(w / scale[..., None, :]), -127, 127).astype(jnp.int8), scale
    n_in, n_out = w.shape[-2:]
    if n_in % NF4_BLOCK or n_out % 2:
        raise DittoError(f"lora.quantize_base=nf4: {name} is [{n_in}, {n_out}]; nf4 needs inputs divisible by {NF4_BLOCK} and an even output width")
    blocks = w.reshape(*w.shape[:-2], n_in // NF4_BLOCK, NF4_BLOCK, n_out)
    absmax = jnp.max(jnp.abs(blocks), axis=-2)
    absmax = jnp.where(absmax == 0, 1.0, absmax)
    table = jnp.asarray(NF4_TABLE, jnp.float32)
    # Nearest level: the count of midpoints below the value.
    idx = jnp.searchsorted((table[1:] + table[:-1]) / 2, blocks / absmax[..., None, :]).astype(jnp.uint8)
    idx = idx.reshape(w.shape)
    return idx[..., 0::2] | (idx[..., 1::2] << 4), absmax


def dequantize(codes: jnp.ndarray, scales: jnp.ndarray, scheme: str) -> jnp.ndarray:
    """The float32 matrix [..., in, out] that (codes, scales) stand for."""
    if scheme == "int8":
        return codes.astype(jnp.float32) * scales[..., None, :]
    idx = jnp.stack([codes & 0xF, codes >> 4], axis=-1).reshape(*codes.shape[:-1], codes.shape[-1] * 2)
    values = jnp.asarray(NF4_TABLE, jnp.float32)[idx]
    return values * jnp.repeat(scales, NF4_BLOCK, axis=-2)


def dequantize_layer(p: dict) -> dict:
    """`p` with every stored (codes, scales) pair replaced by its float32 matrix under the base name."""
    if not any("_q8_" in n or "_nf4_" in n for n in p):
        return p
    out = dict(p)
    for name in list(p):
        for marker, scheme in (("_q8_", "int8"), ("_nf4_", "nf4")):
            if marker in name:
                prefix, letters = name.split(marker)
                base = f"{prefix}_{letters}"
                out[base] = dequantize(out.pop(name), out.pop(stored_names(base, scheme)[1]), scheme)
    return out
