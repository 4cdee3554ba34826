"""Model configuration for the Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM).

One frozen dataclass describes every supported architecture; the differences
between families are a handful of flags (qkv bias, q/k norm, tied embeddings,
RoPE scaling). `from_hf_config` reads a Hugging Face `config.json` dict and
`to_hf_config` writes one back, so import and export share one definition.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ditto_native import DittoError

# HF `model_type` values this model implements, with the HF class name export writes.
SUPPORTED_MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model_type: str = "llama"  # HF family name; decides the export class and defaults
    vocab_size: int = 49152  # rows of the embedding table
    hidden_size: int = 576  # D, the residual width
    intermediate_size: int = 1536  # F, the SwiGLU width
    num_layers: int = 30  # L
    num_heads: int = 9  # H, query heads
    num_kv_heads: int = 3  # K, key/value heads (GQA: H % K == 0)
    head_dim: int = 64  # per-head width; Qwen3 sets it apart from D / H
    rope_theta: float = 100000.0  # RoPE base
    # HF `rope_scaling` as sorted (key, value) pairs so the config stays hashable
    # (it is a static argument of jitted functions). Only "llama3" and "default".
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True  # lm_head shares the embedding matrix
    qkv_bias: bool = False  # Qwen2/2.5 add a bias to the q, k and v projections
    qk_norm: bool = False  # Qwen3 RMS-normalises q and k per head before RoPE
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise DittoError(f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise DittoError(f"unsupported model_type {self.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def num_params(self) -> int:
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * hd * (self.num_heads * 2 + self.num_kv_heads * 2)
        if self.qkv_bias:
            attn += hd * (self.num_heads + 2 * self.num_kv_heads)
        if self.qk_norm:
            attn += 2 * hd
        per_layer = attn + 3 * d * f + 2 * d
        embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + d

    # ---- Hugging Face config.json <-> ModelConfig -------------------------------------------

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], *, source: str = "config.json") -> "ModelConfig":
        """Build from a Hugging Face config dict; unknown families and features fail loudly."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise DittoError(f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        try:
            hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
            cfg_kwargs = dict(
                model_type=model_type,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=int(hf.get("head_dim") or hidden // heads),
            )
        except KeyError as exc:
            raise DittoError(f"{source}: missing field {exc.args[0]!r}") from None
        if hf.get("mlp_bias"):
            raise DittoError(f"{source}: mlp_bias=true is not supported")
        if model_type == "llama" and hf.get("attention_bias"):
            raise DittoError(f"{source}: attention_bias=true is not supported for llama")
        if hf.get("use_sliding_window") and model_type in ("qwen2", "qwen3"):
            raise DittoError(f"{source}: use_sliding_window=true is not supported")
        window, context = hf.get("sliding_window"), hf.get("max_position_embeddings", 8192)
        if model_type == "mistral" and window and int(window) < int(context):
            # Attention here is full causal: a window shorter than the context would change the model's outputs.
            raise DittoError(f"{source}: sliding_window={window} is shorter than max_position_embeddings={context}; sliding-window attention is not supported")
        hidden_act = hf.get("hidden_act", "silu")
        if hidden_act != "silu":
            raise DittoError(f"{source}: hidden_act {hidden_act!r} is not supported (only silu)")
        # transformers 5 moves rope settings under `rope_parameters`; older configs use top-level keys.
        rope_params = hf.get("rope_parameters") or {}
        rope_theta = float(hf.get("rope_theta") or rope_params.get("rope_theta") or 10000.0)
        scaling = hf.get("rope_scaling") or (rope_params if rope_params.get("rope_type") not in (None, "default") else None)
        rope_scaling = None
        if scaling:
            rope_type = scaling.get("rope_type") or scaling.get("type")
            if rope_type == "llama3":
                keep = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                rope_scaling = tuple(sorted([("rope_type", "llama3")] + [(k, float(scaling[k])) for k in keep]))
            elif rope_type not in (None, "default"):
                raise DittoError(f"{source}: rope_scaling type {rope_type!r} is not supported (only llama3)")
        eos = hf.get("eos_token_id")
        return cls(
            **cfg_kwargs,
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),  # HF default for all four families
            qkv_bias=model_type == "qwen2",
            qk_norm=model_type == "qwen3",
            max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        )

    def to_hf_config(self, *, torch_dtype: str = "float32") -> dict[str, Any]:
        hf: dict[str, Any] = {
            "architectures": [SUPPORTED_MODEL_TYPES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling_dict,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "torch_dtype": torch_dtype,
            "use_cache": True,
        }
        # Each class's own switches, stated so that its defaults cannot differ from this model
        # (Mistral and Qwen2 default to a 4096-token sliding window, which this model never uses).
        # Qwen2's q/k/v biases are implied by its class.
        if self.model_type == "llama":
            hf.update(attention_bias=False, mlp_bias=False)
        elif self.model_type == "mistral":
            hf.update(sliding_window=None)
        elif self.model_type == "qwen2":
            hf.update(use_sliding_window=False, sliding_window=None)
        elif self.model_type == "qwen3":
            hf.update(attention_bias=False, use_sliding_window=False, sliding_window=None)
        return hf


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse RoPE frequencies [head_dim // 2], with Llama 3 scaling when configured."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    scaling = cfg.rope_scaling_dict
    if scaling and scaling.get("rope_type") == "llama3":
        # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend smoothly between.
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        inv_freq = np.where(mid, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)
    return inv_freq.astype(np.float32)


# Tiny configs for tests: 2 layers, hidden 64 keep XLA compiles short on 2 CPU cores.
def tiny_config(model_type: str = "llama", **overrides: Any) -> ModelConfig:
    base = dict(
        model_type=model_type, vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=model_type != "llama", qkv_bias=model_type == "qwen2", qk_norm=model_type == "qwen3",
        max_position_embeddings=512,
    )
    base.update(overrides)
    return ModelConfig(**base)
