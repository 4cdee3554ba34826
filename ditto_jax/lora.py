"""LoRA and QLoRA on the stacked decoder weights: adapters, the frozen base, merging, the base reference.

Adapters are Flax NNX `LoRAParam` variables set on `DecoderLayers` beside the
matrix they adapt and stacked on the layer axis like it (`model.adapter_names`):
    wq_ldh [L, D, H·E]  ->  wq_a_ldr [L, D, r] (random) and wq_b_lrh [L, r, H·E] (zeros)
`decoder_layer` adds (x @ A) @ B · alpha / r to x @ W inside the one scanned
layer, and the letters shard them with the base through the same rules table
(r is replicated). With B at zero the adapted model is the base exactly.

Why NNX `LoRAParam` and not qwix: qwix is not a dependency here, and it adds
LoRA by intercepting a model's `nnx.Linear`/einsum modules per layer, while this
model has no per-layer modules at all: its weights are stacked arrays scanned
by `jax.lax.scan`, so qwix has nothing to wrap. `LoRAParam` is its own variable
type, so one filter, `nnx.split(model, nnx.LoRAParam, ...)`, separates the
trainable adapters (what optax and the checkpoints see) from the frozen base.

Dropout (`lora.dropout`, PEFT's `lora_dropout`) is applied to each adapter's
input in the training step only (`model.adapted`, keys from
`train.step.dropout_row_keys`): never in evaluation, generation, the merge or
export, which see the adapters as trained. It is a training setting, not part of
the adapter layout, so `LoRASpec` and `lora.json` do not carry it.

QLoRA (`quantize_base`): the base matrices are replaced by `QuantizedBase`
variables (`ditto_jax.quant`), dequantized one layer at a time in the scan.

A LoRA checkpoint holds the adapters and, in `model/lora.json`, the spec and a
reference to the base (its model reference and the sha256 of its weight files),
never a copy of the base. `load_merged` rebuilds the adapted model from them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ditto_jax import quant
from ditto_jax.config import ModelConfig
from ditto_jax.model import CausalLM, adapter_names
from ditto_native import DittoError

# Config target name -> stacked base matrix, and the PEFT / HF module it is.
TARGETS = {
    "q": ("wq_ldh", "self_attn.q_proj"),
    "k": ("wk_ldk", "self_attn.k_proj"),
    "v": ("wv_ldk", "self_attn.v_proj"),
    "o": ("wo_lhd", "self_attn.o_proj"),
    "gate": ("w_gate_ldf", "mlp.gate_proj"),
    "up": ("w_up_ldf", "mlp.up_proj"),
    "down": ("w_down_lfd", "mlp.down_proj"),
}
BASE_MATRICES = tuple(name for name, _ in TARGETS.values())
LORA_FILE = "lora.json"


class QuantizedBase(nnx.Variable):
    """A frozen, quantized base array (codes or scales); never trained."""


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    rank: int
    alpha: float
    targets: tuple[str, ...]
    quantize_base: str = "none"

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of each base matrix."""
    d, f, he, ke = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return {"wq_ldh": (d, he), "wk_ldk": (d, ke), "wv_ldk": (d, ke), "wo_lhd": (he, d), "w_gate_ldf": (d, f), "w_up_ldf": (d, f), "w_down_lfd": (f, d)}


def check_spec(spec: LoRASpec, cfg: ModelConfig) -> None:
    """A rank larger than an adapted projection's width is a one-line error."""
    dims = shapes(cfg)
    for target in spec.targets:
        n_in, n_out = dims[TARGETS[target][0]]
        if spec.rank > min(n_in, n_out):
            raise DittoError(f"config: lora.rank {spec.rank} is larger than the {target} projection's width {min(n_in, n_out)} ([{n_in}, {n_out}])")


def adapter_params(cfg: ModelConfig, spec: LoRASpec) -> int:
    """Number of adapter parameters."""
    dims = shapes(cfg)
    return sum(cfg.num_layers * spec.rank * sum(dims[TARGETS[t][0]]) for t in spec.targets)


def dropout_inputs(cfg: ModelConfig, spec: LoRASpec, *, tensor: int = 1) -> float:
    """Elements per token per layer, per device, that adapter dropout draws masks for: each target's input
    width (the o and down inputs are split over `tensor`), for the memory estimate."""
    split = {"wo_lhd": tensor, "w_down_lfd": tensor}
    dims = shapes(cfg)
    return sum(dims[TARGETS[t][0]][0] / split.get(TARGETS[t][0], 1) for t in spec.targets)


def attach(model: CausalLM, spec: LoRASpec, *, seed: int = 0) -> CausalLM:
    """Add adapters (A ~ N(0, 1/in), B = 0) to `model` in place and quantize its base if asked."""
    check_spec(spec, model.cfg)
    layers = model.layers
    dims = shapes(model.cfg)
    key = jax.random.key(seed)
    for i, target in enumerate(spec.targets):
        name = TARGETS[target][0]
        w = getattr(layers, name)
        (n_in, n_out), n_layers = dims[name], model.cfg.num_layers
        a_name, b_name = adapter_names(name)
        a = jax.random.normal(jax.random.fold_in(key, i), (n_layers, n_in, spec.rank), jnp.float32) / np.sqrt(n_in)
        setattr(layers, a_name, nnx.LoRAParam(a.astype(w.dtype)))
        setattr(layers, b_name, nnx.LoRAParam(jnp.zeros((n_layers, spec.rank, n_out), w.dtype)))
    if spec.quantize_base != "none":
        for name in BASE_MATRICES:
            codes, scales = quant.quantize(getattr(layers, name)[...], spec.quantize_base, name)
            codes_name, scales_name = quant.stored_names(name, spec.quantize_base)
            delattr(layers, name)
            setattr(layers, codes_name, QuantizedBase(codes))
            setattr(layers, scales_name, QuantizedBase(scales))
    layers.lora_scale = float(spec.scale)
    return model


def split(model: CausalLM):
    """(graphdef, adapters, frozen base) as pure dicts: only the adapters are trained."""
    graphdef, adapters, frozen = nnx.split(model, nnx.LoRAParam, ...)
    return graphdef, nnx.to_pure_dict(adapters), nnx.to_pure_dict(frozen)


def merge_into(model: CausalLM, adapters: dict, spec: LoRASpec) -> CausalLM:
    """A plain model: base (dequantized if quantized) + A @ B · scale for each target, adapters removed."""
    layers = model.layers
    dtype = model.embed_vd[...].dtype
    if spec.quantize_base != "none":
        for name in BASE_MATRICES:
            codes_name, scales_name = quant.stored_names(name, spec.quantize_base)
            w = quant.dequantize(getattr(layers, codes_name)[...], getattr(layers, scales_name)[...], spec.quantize_base)
            delattr(layers, codes_name)
            delattr(layers, scales_name)
            setattr(layers, name, nnx.Param(w.astype(dtype)))
    for target in spec.targets:
        name = TARGETS[target][0]
        a_name, b_name = adapter_names(name)
        a, b = (jnp.asarray(adapters["layers"][n], jnp.float32) for n in (a_name, b_name))
        for n in (a_name, b_name):
            if hasattr(layers, n):
                delattr(layers, n)
        w = getattr(layers, name)[...].astype(jnp.float32)
        delta = jnp.einsum("ldr,lrh->ldh", a, b, precision=jax.lax.Precision.HIGHEST) * spec.scale
        setattr(layers, name, nnx.Param((w + delta).astype(dtype)))
    layers.lora_scale = None
    return model


# ---- the base reference ----------------------------------------------------------------------


def weight_files(resolved) -> list[Path]:
    """The files holding a resolved model reference's weights."""
    if resolved.kind == "gguf":
        return [resolved.path]
    if resolved.kind == "hf":
        from ditto_jax.weights.hf import checkpoint_files

        return [Path(p) for p in checkpoint_files(resolved.path)]
    raise DittoError(f"{resolved.ref}: a LoRA base must be a Hugging Face directory or a .gguf file, not a {resolved.kind}")


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def base_reference(ref: str) -> dict:
    """{"model": the absolute base reference, "sha256": of its weight files}."""
    from ditto_jax.loader import BUILTIN_MODELS, resolve_model_ref

    resolved = resolve_model_ref(ref)
    model = ref if ref in BUILTIN_MODELS else str(resolved.path.resolve())
    return {"model": model, "sha256": sha256_files(weight_files(resolved))}


def record(spec: LoRASpec, base: dict) -> dict:
    """The lora.json a checkpoint carries."""
    return {**dataclasses.asdict(spec), "targets": list(spec.targets), "base": base}


def read_record(model_dir: Path) -> tuple[LoRASpec, dict] | None:
    path = Path(model_dir) / LORA_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    spec = LoRASpec(int(raw["rank"]), float(raw["alpha"]), tuple(raw["targets"]), raw.get("quantize_base", "none"))
    return spec, raw["base"]


def check_base(base: dict, *, where: str) -> None:
    """The base on disk must be the one the adapters were trained on."""
    now = base_reference(base["model"])
    if now["sha256"] != base["sha256"]:
        raise DittoError(f"{where}: the LoRA base {base['model']} has changed (sha256 {now['sha256'][:12]}, trained on {base['sha256'][:12]})")


def load_adapters(step_dir: Path) -> tuple[LoRASpec, dict, dict, ModelConfig]:
    """(spec, adapters as {"layers": {name: array}}, base reference, model config) of a LoRA checkpoint step."""
    import orbax.checkpoint as ocp

    from ditto_jax.train.run_dir import MODEL, PARAMS
    from ditto_jax.weights.hf import read_hf_config

    hf, cfg = read_hf_config(step_dir / MODEL)
    spec, base = read_record(step_dir / MODEL)
    dtype = jnp.dtype(hf.get("torch_dtype") or "float32")
    dims = shapes(cfg)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"layers": {}}
    for t in spec.targets:
        name = TARGETS[t][0]
        a_name, b_name = adapter_names(name)
        n_in, n_out = dims[name]
        target["layers"][a_name] = jax.ShapeDtypeStruct((cfg.num_layers, n_in, spec.rank), dtype, sharding=device)
        target["layers"][b_name] = jax.ShapeDtypeStruct((cfg.num_layers, spec.rank, n_out), dtype, sharding=device)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            adapters = checkpointer.restore(Path(step_dir).absolute() / PARAMS, target)
    except Exception as exc:  # Orbax/TensorStore raise many types for unreadable data
        raise DittoError(f"{step_dir}: unreadable LoRA adapters ({' '.join(str(exc).split())[:200]})") from None
    return spec, adapters, base, cfg


def load_merged(step_dir: Path, *, dtype=jnp.float32) -> CausalLM:
    """The adapted model of a LoRA checkpoint: its base (checked by sha256) with the adapters merged in."""
    from ditto_jax.loader import resolve_model_ref

    spec, adapters, base, _ = load_adapters(step_dir)
    check_base(base, where=str(step_dir))
    model, _ = resolve_model_ref(base["model"]).load_model(dtype=dtype)
    if spec.quantize_base != "none":  # the adapters were trained against the quantized base
        attach(model, spec)  # quantizes the base; its zero adapters are replaced below
    return merge_into(model, adapters, spec)
