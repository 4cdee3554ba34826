"""The one mapping between Hugging Face tensor names and the NNX model's parameters.

Each `Rule` pairs an HF key template with an NNX path and a transform. A
template containing ``{layer}`` names one tensor per decoder layer; those are
stacked on the parameter's leading L axis. Import (`fill_model`) and export
(`hf_entries`) both read this table, so they cannot drift apart.

Llama, Mistral, Qwen2 and Qwen3 share the table: the bias and q/k-norm rules
only apply when the config gives the model those parameters (`qkv_bias`,
`qk_norm`); for any other config a tensor matching them is an error.

Every problem found (unmapped key, missing tensor, wrong shape, wrong dtype)
is collected and reported once, as one line.
"""
from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from functools import cached_property

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from ditto_jax.config import ModelConfig
from ditto_jax.model import CausalLM, abstract_model
from ditto_native import DittoError


class Transform(enum.Enum):
    COPY = "copy"  # same layout on both sides (embeddings, norms, biases)
    TRANSPOSE = "transpose"  # torch Linear.weight is [out, in]; our kernels are [in, out]

    def to_nnx(self, hf: np.ndarray) -> np.ndarray:
        return hf.T if self is Transform.TRANSPOSE else hf

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        return value.T if self is Transform.TRANSPOSE else value

    def hf_shape(self, nnx_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(reversed(nnx_shape)) if self is Transform.TRANSPOSE else tuple(nnx_shape)


@dataclasses.dataclass(frozen=True)
class Rule:
    hf_key: str  # template; "{layer}" marks a per-layer tensor stacked on axis 0
    nnx_path: tuple[str, ...]
    transform: Transform = Transform.COPY

    @property
    def stacked(self) -> bool:
        return "{layer}" in self.hf_key

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.hf_key).replace(re.escape("{layer}"), r"(?P<layer>\d+)"))

    def key(self, layer: int | None = None) -> str:
        return self.hf_key.format(layer=layer) if self.stacked else self.hf_key


_T = Transform.TRANSPOSE
_L = "model.layers.{layer}."

LLAMA_FAMILY: tuple[Rule, ...] = (
    Rule("model.embed_tokens.weight", ("embed_vd",)),
    Rule(_L + "input_layernorm.weight", ("layers", "attn_norm_ld")),
    Rule(_L + "self_attn.q_proj.weight", ("layers", "wq_ldh"), _T),
    Rule(_L + "self_attn.k_proj.weight", ("layers", "wk_ldk"), _T),
    Rule(_L + "self_attn.v_proj.weight", ("layers", "wv_ldk"), _T),
    Rule(_L + "self_attn.o_proj.weight", ("layers", "wo_lhd"), _T),
    Rule(_L + "self_attn.q_proj.bias", ("layers", "bq_lh")),  # qwen2 only
    Rule(_L + "self_attn.k_proj.bias", ("layers", "bk_lk")),  # qwen2 only
    Rule(_L + "self_attn.v_proj.bias", ("layers", "bv_lk")),  # qwen2 only
    Rule(_L + "self_attn.q_norm.weight", ("layers", "q_norm_le")),  # qwen3 only
    Rule(_L + "self_attn.k_norm.weight", ("layers", "k_norm_le")),  # qwen3 only
    Rule(_L + "post_attention_layernorm.weight", ("layers", "mlp_norm_ld")),
    Rule(_L + "mlp.gate_proj.weight", ("layers", "w_gate_ldf"), _T),
    Rule(_L + "mlp.up_proj.weight", ("layers", "w_up_ldf"), _T),
    Rule(_L + "mlp.down_proj.weight", ("layers", "w_down_lfd"), _T),
    Rule("model.norm.weight", ("final_norm_d",)),
    Rule("lm_head.weight", ("lm_head_dv",), _T),  # absent when tie_word_embeddings
)

TABLES: dict[str, tuple[Rule, ...]] = {"llama": LLAMA_FAMILY, "mistral": LLAMA_FAMILY, "qwen2": LLAMA_FAMILY, "qwen3": LLAMA_FAMILY}

# Buffers some older checkpoints saved; recomputed from the config, never weights.
IGNORED = (re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"),)

TIED_HEAD_KEY = "lm_head.weight"
EMBED_KEY = "model.embed_tokens.weight"
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_MAX_LISTED = 4  # problems named in the one-line error; the rest are counted


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint, described before it is read."""

    shape: tuple[int, ...]
    dtype: str  # numpy name ("float32", "bfloat16", ...) or the file's own code for anything else
    load: Callable[[], np.ndarray]


def raise_problems(source: str, problems: list[str]) -> None:
    """Raise one one-line DittoError naming the first few problems and counting the rest."""
    if not problems:
        return
    shown = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    noun = "problem" if len(problems) == 1 else "problems"
    raise DittoError(f"{source}: {len(problems)} weight {noun}: {shown}{more}".replace("\n", " "))


def _match(table: tuple[Rule, ...], key: str) -> tuple[Rule | None, int | None]:
    for rule in table:
        m = rule.pattern.fullmatch(key)
        if m:
            return rule, int(m["layer"]) if rule.stacked else None
    return None, None


def _np_dtype(dtype) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if jnp.dtype(dtype) == jnp.bfloat16 else np.dtype(dtype)


def fill_model(
    cfg: ModelConfig,
    tensors: Mapping[str, TensorEntry],
    *,
    source: str,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    problems: list[str] | None = None,
) -> CausalLM:
    """Place HF-named tensors into a fresh model for `cfg`, checking every one.

    `problems` carries failures a format reader found earlier, so that the
    single error lists those too.
    """
    table = TABLES[cfg.model_type]
    problems = list(problems or [])
    graphdef, state = nnx.split(abstract_model(cfg, dtype=dtype, param_dtype=param_dtype))
    targets = {path: sds for path, sds in _flatten(nnx.to_pure_dict(state))}
    buffers: dict[tuple[str, ...], np.ndarray] = {}
    seen: set[str] = set()  # placed, or rejected for shape/dtype (then not also "missing")
    tied_head: TensorEntry | None = None

    for key, entry in tensors.items():
        if any(p.fullmatch(key) for p in IGNORED):
            continue
        rule, layer = _match(table, key)
        if rule is None:
            problems.append(f"unmapped tensor {key}")
            continue
        target = targets.get(rule.nnx_path)
        if target is None:
            if key == TIED_HEAD_KEY and cfg.tie_word_embeddings:
                tied_head = entry  # allowed only if it equals the embedding; checked below
            else:
                problems.append(f"unexpected tensor {key} (this {cfg.model_type} config has no {'.'.join(rule.nnx_path)})")
            continue
        if layer is not None and layer >= target.shape[0]:
            problems.append(f"unexpected tensor {key} (num_hidden_layers is {target.shape[0]})")
            continue
        want = rule.transform.hf_shape(target.shape[1:] if rule.stacked else target.shape)
        seen.add(key)
        if tuple(entry.shape) != want:
            problems.append(f"{key} has shape {list(entry.shape)}, expected {list(want)}")
            continue
        if entry.dtype not in FLOAT_DTYPES:
            problems.append(f"{key} has dtype {entry.dtype}, expected one of {'/'.join(FLOAT_DTYPES)}")
            continue
        buf = buffers.get(rule.nnx_path)
        if buf is None:
            buf = buffers[rule.nnx_path] = np.empty(target.shape, _np_dtype(target.dtype))
        value = rule.transform.to_nnx(np.asarray(entry.load()))
        if rule.stacked:
            buf[layer] = value
        else:
            buf[...] = value

    for rule in table:
        target = targets.get(rule.nnx_path)
        if target is None:
            continue
        for layer in range(target.shape[0]) if rule.stacked else (None,):
            if rule.key(layer) not in seen:
                problems.append(f"missing tensor {rule.key(layer)}")

    if tied_head is not None and not problems:
        # Compare the file's own tensors, before any cast to the parameter dtype.
        head, embed = np.asarray(tied_head.load()), np.asarray(tensors[EMBED_KEY].load())
        if head.shape != embed.shape or not np.array_equal(head.astype(np.float32), embed.astype(np.float32)):
            problems.append(f"{TIED_HEAD_KEY} differs from {EMBED_KEY} but tie_word_embeddings is true")
    raise_problems(source, problems)

    filled = _unflatten({path: jnp.asarray(buf) for path, buf in buffers.items()})
    nnx.replace_by_pure_dict(state, filled)
    return nnx.merge(graphdef, state)


def hf_entries(model: CausalLM) -> dict[str, TensorEntry]:
    """The model's weights under their HF names, in HF layout, each fetched only when loaded
    (the inverse of `fill_model`).

    A `load()` gathers just that tensor (one layer's slice of a stacked parameter)
    from the devices to host memory, so an exporter that writes each tensor
    before loading the next holds about one tensor at a time, however the
    parameters are sharded. Entries keep the parameter's dtype; callers cast.
    """
    table = TABLES[model.cfg.model_type]
    values = dict(_flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    entries: dict[str, TensorEntry] = {}
    for rule in table:
        value = values.get(rule.nnx_path)
        if value is None:
            continue
        shape = rule.transform.hf_shape(value.shape[1:] if rule.stacked else value.shape)
        dtype = _np_dtype(value.dtype).name
        for layer in range(value.shape[0]) if rule.stacked else (None,):
            def load(value=value, layer=layer, rule=rule) -> np.ndarray:
                part = _to_host(value[layer] if layer is not None else value)
                return np.ascontiguousarray(rule.transform.to_hf(part))

            entries[rule.key(layer)] = TensorEntry(shape=tuple(shape), dtype=dtype, load=load)
    return entries


def _to_host(value: jax.Array) -> np.ndarray:
    """One array on the host. A multi-process (pod) array is all-gathered: every process
    must call this for the same tensors in the same order, which the exporters do."""
    if getattr(value, "is_fully_addressable", True):
        return np.asarray(jax.device_get(value))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def _flatten(tree, prefix: tuple[str, ...] = ()):
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, prefix + (str(name),))
        else:
            yield prefix + (str(name),), value


def _unflatten(flat: dict[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree
