"""GGUF files (llama.cpp): dequantize to float32 and rename into the HF layout.

GGUF tensors are renamed to their Hugging Face keys here and then placed by
the same table as safetensors (`table.fill_model`), so the model stays
HF-native and export is a plain copy.

llama.cpp's converter permutes the rows of the llama q/k projections so that
its interleaved RoPE works; `unpermute_qk` inverts that exactly, and
`permute_qk` redoes it for export (ditto_jax/export/gguf_file.py). Without it the
model still writes fluent text with HF split-half RoPE, so only a logits parity
test against transformers catches the bug. Qwen2/Qwen3 use NEOX (split-half)
RoPE in llama.cpp and are stored unpermuted.

    cfg, model, reader = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

from ditto_jax.config import ModelConfig
from ditto_native import DittoError

if TYPE_CHECKING:  # jax and flax load only with the weights, so a tokenizer alone stays light
    from ditto_jax.model import CausalLM
    from ditto_jax.weights.table import TensorEntry


@dataclasses.dataclass(frozen=True)
class GGUFArch:
    model_type: str  # the HF family it maps to
    permuted_qk: bool  # llama.cpp stored q/k rows in interleaved-RoPE order


ARCHITECTURES = {
    "llama": GGUFArch("llama", permuted_qk=True),
    "qwen2": GGUFArch("qwen2", permuted_qk=False),
    "qwen3": GGUFArch("qwen3", permuted_qk=False),
}

# GGUF tensor name -> HF key; "{layer}" is the block index in both.
TENSOR_NAMES: tuple[tuple[str, str], ...] = (
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.{layer}.attn_norm.weight", "model.layers.{layer}.input_layernorm.weight"),
    ("blk.{layer}.attn_q.weight", "model.layers.{layer}.self_attn.q_proj.weight"),
    ("blk.{layer}.attn_k.weight", "model.layers.{layer}.self_attn.k_proj.weight"),
    ("blk.{layer}.attn_v.weight", "model.layers.{layer}.self_attn.v_proj.weight"),
    ("blk.{layer}.attn_output.weight", "model.layers.{layer}.self_attn.o_proj.weight"),
    ("blk.{layer}.attn_q.bias", "model.layers.{layer}.self_attn.q_proj.bias"),
    ("blk.{layer}.attn_k.bias", "model.layers.{layer}.self_attn.k_proj.bias"),
    ("blk.{layer}.attn_v.bias", "model.layers.{layer}.self_attn.v_proj.bias"),
    ("blk.{layer}.attn_q_norm.weight", "model.layers.{layer}.self_attn.q_norm.weight"),
    ("blk.{layer}.attn_k_norm.weight", "model.layers.{layer}.self_attn.k_norm.weight"),
    ("blk.{layer}.ffn_norm.weight", "model.layers.{layer}.post_attention_layernorm.weight"),
    ("blk.{layer}.ffn_gate.weight", "model.layers.{layer}.mlp.gate_proj.weight"),
    ("blk.{layer}.ffn_up.weight", "model.layers.{layer}.mlp.up_proj.weight"),
    ("blk.{layer}.ffn_down.weight", "model.layers.{layer}.mlp.down_proj.weight"),
)
_NAME_PATTERNS = [
    (re.compile(re.escape(g).replace(re.escape("{layer}"), r"(?P<layer>\d+)")), hf) for g, hf in TENSOR_NAMES
]
_HF_PATTERNS = [
    (re.compile(re.escape(hf).replace(re.escape("{layer}"), r"(?P<layer>\d+)")), g) for g, hf in TENSOR_NAMES
]
_PERMUTED = {"self_attn.q_proj.weight": "num_heads", "self_attn.k_proj.weight": "num_kv_heads"}


def open_gguf(path: str | Path) -> GGUFReader:
    path = Path(path)
    if not path.is_file():
        raise DittoError(f"{path}: no such GGUF file")
    try:
        return GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError/struct errors/etc. on non-GGUF input
        raise DittoError(f"{path}: not a readable GGUF file ({exc})".replace("\n", " ")) from None


def field(reader: GGUFReader, key: str, default: Any = None) -> Any:
    """One metadata value as a Python value (str, int, float, bool or list)."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def field_type(reader: GGUFReader, key: str) -> GGUFValueType | None:
    f = reader.fields.get(key)
    return None if f is None else f.types[0]


def architecture(reader: GGUFReader, path: str | Path) -> GGUFArch:
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise DittoError(f"{path}: unsupported GGUF architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def hf_config_from_gguf(reader: GGUFReader, path: str | Path) -> dict[str, Any]:
    """The Hugging Face config.json this file's `{arch}.*` metadata describes."""
    arch = field(reader, "general.architecture")
    spec = architecture(reader, path)

    def meta(name: str, default: Any = None, *, required: bool = False) -> Any:
        value = field(reader, f"{arch}.{name}", default)
        if required and value is None:
            raise DittoError(f"{path}: missing GGUF metadata {arch}.{name}")
        return value

    heads = int(meta("attention.head_count", required=True))
    kv_heads = meta("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):  # per-layer counts; only a uniform one fits this model
        if len(set(kv_heads)) != 1:
            raise DittoError(f"{path}: per-layer {arch}.attention.head_count_kv {sorted(set(kv_heads))} is not supported")
        kv_heads = kv_heads[0]
    hidden = int(meta("embedding_length", required=True))
    head_dim = int(meta("attention.key_length", hidden // heads))
    rope_dims = meta("rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != head_dim:
        raise DittoError(f"{path}: partial rotary ({arch}.rope.dimension_count={rope_dims}, head_dim={head_dim}) is not supported")
    scaling = meta("rope.scaling.type")
    if scaling not in (None, "none"):
        raise DittoError(f"{path}: {arch}.rope.scaling.type {scaling!r} is not supported")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise DittoError(f"{path}: per-frequency RoPE factors (rope_freqs.weight, e.g. Llama 3.1 scaling) are not supported")
    vocab = meta("vocab_size") or len(field(reader, "tokenizer.ggml.tokens", []) or []) or None
    if vocab is None:
        embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        if embd is None:
            raise DittoError(f"{path}: cannot tell the vocabulary size (no {arch}.vocab_size, tokens or token_embd.weight)")
        vocab = int(embd.shape[-1])
    return {
        "model_type": spec.model_type,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(meta("feed_forward_length", required=True)),
        "num_hidden_layers": int(meta("block_count", required=True)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads),
        "head_dim": head_dim,
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(meta("context_length", 8192)),
        "tie_word_embeddings": "output.weight" not in names,  # llama.cpp omits the head when tied
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "hidden_act": "silu",
    }


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (per head: interleaved pairs -> split halves).

    llama.cpp wrote, per head, rows (x0, x_{E/2}, x1, x_{E/2+1}, ...) from HF's
    (x0..x_{E/2-1}, x_{E/2}..x_{E-1}): reshape(h, 2, E/2, D).swapaxes(1, 2).
    Swapping the same axes back of reshape(h, E/2, 2, D) restores HF order.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order from HF's: the inverse of `unpermute_qk`."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permuted_heads(hf_key: str, cfg: ModelConfig, spec: GGUFArch) -> int | None:
    """Heads to (un)permute this tensor's rows over, or None when llama.cpp stores it as HF does."""
    suffix = hf_key.split(".", 3)[-1]  # "self_attn.q_proj.weight" for a layer tensor
    return getattr(cfg, _PERMUTED[suffix]) if spec.permuted_qk and suffix in _PERMUTED else None


def gguf_name(hf_key: str) -> str | None:
    """The GGUF tensor name for an HF key (the inverse of `_hf_key`), from the same table."""
    for pattern, gguf in _HF_PATTERNS:
        m = pattern.fullmatch(hf_key)
        if m:
            return gguf.format(layer=m["layer"]) if "{layer}" in gguf else gguf
    return None


def hf_entries(reader: GGUFReader, cfg: ModelConfig, spec: GGUFArch) -> tuple[dict[str, TensorEntry], list[str]]:
    """GGUF tensors renamed to HF keys, dequantized to float32 when loaded."""
    from ditto_jax.weights.table import TensorEntry

    entries: dict[str, TensorEntry] = {}
    problems: list[str] = []
    for tensor in reader.tensors:
        key = _hf_key(tensor.name)
        if key is None:
            problems.append(f"unmapped GGUF tensor {tensor.name}")
            continue
        heads = permuted_heads(key, cfg, spec)

        def load(t=tensor, heads=heads) -> np.ndarray:
            w = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
            return unpermute_qk(w, heads) if heads else w

        # ggml lists dimensions fastest-first; numpy (and torch) order is the reverse.
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        entries[key] = TensorEntry(shape=shape, dtype="float32", load=load)
    return entries, problems


def _hf_key(gguf_name: str) -> str | None:
    for pattern, hf in _NAME_PATTERNS:
        m = pattern.fullmatch(gguf_name)
        if m:
            return hf.format(layer=m["layer"]) if "{layer}" in hf else hf
    return None


def load_gguf(path: str | Path, *, dtype=None, param_dtype=None, reader: GGUFReader | None = None) -> tuple[ModelConfig, CausalLM, GGUFReader]:
    """Config and float32-dequantized weights of a GGUF file as a `CausalLM` (`dtype` default float32)."""
    import jax.numpy as jnp

    from ditto_jax.weights.table import fill_model

    dtype = jnp.float32 if dtype is None else dtype
    reader = reader or open_gguf(path)
    spec = architecture(reader, path)
    cfg = ModelConfig.from_hf_config(hf_config_from_gguf(reader, path), source=str(path))
    entries, problems = hf_entries(reader, cfg, spec)
    model = fill_model(cfg, entries, source=str(path), dtype=dtype, param_dtype=param_dtype or dtype, problems=problems)
    return cfg, model, reader
