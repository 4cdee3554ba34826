"""The trainer's configuration: a typed, frozen dataclass read from TOML.

    cfg = load_train_config("cpu-demo", ["steps=4", "mesh.fsdp=2"])

A config is a TOML file or the name of a shipped one (``ditto_jax/configs``:
``cpu-demo``, ``ditto-paper``). ``--set key=value`` overrides take dotted keys;
a value is read as TOML (``lr=3e-5``, ``remat="full"``) and, failing that, as a
bare string (``model=smollm2``). An unknown key, a wrong type or a value out of
range is one DittoError naming the key. Relative paths (``model``, ``data``,
``out``) are relative to the working directory.

Checks that need the device count (the mesh, batch divisibility) live in
`resolve_mesh_shape` and `accumulation_steps`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from ditto_native import DittoError

DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "save-matmuls")
ATTENTION_IMPLS = ("auto", "dense", "chunked", "splash", "cudnn")
MESH_AXES = ("data", "fsdp", "tensor")
QUANTIZE_SCHEMES = ("none", "int8", "nf4")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # ditto_jax.lora.TARGETS
_TABLES = ("mesh", "lora")  # nested [tables] of TrainConfig


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device counts per mesh axis; -1 takes the devices the other axes leave."""

    data: int = 1  # pure data parallelism: parameters replicated
    fsdp: int = -1  # data parallelism with parameters and optimizer state sharded
    tensor: int = 1  # heads / FFN / vocab split across devices


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (`ditto_jax.lora`); rank 0 is full fine-tuning."""

    rank: int = 0  # adapter rank r; 0 = train every weight
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on each adapter's input, training steps only (PEFT's lora_dropout); in [0, 1)
    targets: str = "q,k,v,o,gate,up,down"  # adapted projections, comma-separated (a TOML list works too)
    quantize_base: str = "none"  # frozen base stored as none, int8 (per channel) or nf4 (QLoRA)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "smollm2"  # any model reference, a training run or checkpoint included
    data: str = "ditto-out/shards"  # `ditto-data tokenize` output: train/, heldout/, manifest.json
    out: str = "ditto-out/train"  # run directory: config.toml, checkpoints/, metrics.jsonl, loss.png
    steps: int | None = None  # optimizer updates; wins over `epochs` when both are set
    epochs: float | None = None  # passes over train/ (rounded up to whole updates)
    seq_len: int | None = None  # when set, the shards must have exactly this length
    global_batch: int = 8  # rows per optimizer update, all devices and micro-batches together
    micro_batch: int = 1  # rows per device per forward pass; accumulation makes up the rest
    lr: float = 1e-5  # peak learning rate, reached at the end of warm-up
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr (the paper: 2e-6 -> 2e-7)
    warmup_ratio: float = 0.1  # fraction of the updates spent on the linear warm-up
    weight_decay: float = 0.0  # AdamW decoupled decay, on matrices only (not norms, biases)
    clip_norm: float = 1.0  # global gradient-norm clip; 0 turns it off
    b1: float = 0.9  # Adam first-moment decay
    b2: float = 0.999  # Adam second-moment decay
    param_dtype: str = "float32"  # master weights and optimizer state
    compute_dtype: str = "auto"  # activations/matmuls; auto = float32 on CPU, bfloat16 on GPU/TPU
    remat: str = "none"  # per-layer rematerialisation: none, full, save-matmuls
    attention: str = "auto"  # auto, dense, chunked, splash (TPU), cudnn (GPU)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    eval_every: int = 0  # held-out loss every N updates (and always at the end); 0 = end only
    save_every: int = 100  # checkpoint every N updates (and always at the end)
    keep: int = 3  # checkpoints kept (the newest)
    log_every: int = 1  # metrics.jsonl record every N updates (and at evaluations and the end)
    seed: int = 0  # data order and any randomness
    peak_tflops: float | None = None  # per-device peak for MFU; default: probe (CPU) or chip table

    def __post_init__(self) -> None:
        _check_values(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved config as TOML (None values are left out: absent means unset)."""
        flat = {k: v for k, v in self.to_dict().items() if k not in _TABLES and v is not None}
        lines = [f"{k} = {_toml_value(v)}" for k, v in flat.items()]
        for table in _TABLES:
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(getattr(self, table)).items()]
        return "\n".join(lines) + "\n"

    def lora_spec(self):
        """The run's `ditto_jax.lora.LoRASpec`, or None for full fine-tuning."""
        from ditto_jax.lora import LoRASpec

        if self.lora.rank == 0:
            return None
        targets = tuple(t.strip() for t in self.lora.targets.split(",") if t.strip())
        return LoRASpec(self.lora.rank, self.lora.alpha, targets, self.lora.quantize_base)


def shipped_configs() -> dict[str, Path]:
    folder = resources.files("ditto_jax") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def load_train_config(source: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """A config file or shipped name, with `key=value` overrides applied in order."""
    path = Path(source)
    shipped = shipped_configs()
    if not path.is_file():
        if str(source) not in shipped:
            raise DittoError(f"--config {source}: no such file or shipped config (shipped: {', '.join(sorted(shipped))})")
        path = shipped[str(source)]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DittoError(f"{path}: invalid TOML: {exc}") from None
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return config_from_dict(raw, source=str(path))


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value); the value is TOML, else a bare string."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise DittoError(f"--set {item!r}: expected key=value")
    text = text.strip()
    if text.lower() in ("none", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key, text


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Type-check every key against `TrainConfig` and build it; errors name the key."""
    raw = dict(raw)
    mesh_raw = raw.pop("mesh", {})
    if not isinstance(mesh_raw, dict):
        raise DittoError(f"{source}: mesh must be a table with {', '.join(MESH_AXES)}")
    mesh = MeshConfig(**_typed_fields(MeshConfig, mesh_raw, prefix="mesh.", source=source))
    lora_raw = raw.pop("lora", {})
    if not isinstance(lora_raw, dict):
        raise DittoError(f"{source}: lora must be a table with {', '.join(f.name for f in dataclasses.fields(LoRAConfig))}")
    if isinstance(lora_raw.get("targets"), list):
        lora_raw = {**lora_raw, "targets": ",".join(str(t) for t in lora_raw["targets"])}
    lora = LoRAConfig(**_typed_fields(LoRAConfig, lora_raw, prefix="lora.", source=source))
    return TrainConfig(**_typed_fields(TrainConfig, raw, prefix="", source=source), mesh=mesh, lora=lora)


def _typed_fields(cls, raw: dict[str, Any], *, prefix: str, source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _TABLES]
    out = {}
    for key, value in raw.items():
        if key not in names:
            allowed = ", ".join(prefix + n for n in names) + ("" if prefix else ", mesh.*, lora.*")
            raise DittoError(f"{source}: unknown key {prefix}{key} (known: {allowed})")
        out[key] = _coerce(value, hints[key], prefix + key, source)
    return out


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise DittoError(f"{source}: {key} cannot be unset")
    for kind in options:
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if kind is bool and isinstance(value, bool):
            return value
    want = " or ".join(getattr(k, "__name__", str(k)) for k in options if k is not type(None))
    raise DittoError(f"{source}: {key} must be {want}, got {value!r}")


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DittoError(f"--set {key}: {part} is not a table")
        node = child
    node[parts[-1]] = value


def _check_values(c: TrainConfig) -> None:
    def fail(key: str, why: str) -> None:
        raise DittoError(f"config: {key} {why}")

    for key in ("model", "data", "out"):
        if not getattr(c, key):
            fail(key, "must not be empty")
    if c.steps is None and c.epochs is None:
        fail("steps", "or epochs must be set")
    if c.steps is not None and c.steps < 1:
        fail("steps", f"must be >= 1, got {c.steps}")
    if c.epochs is not None and not c.epochs > 0:
        fail("epochs", f"must be > 0, got {c.epochs}")
    if c.seq_len is not None and c.seq_len < 1:
        fail("seq_len", f"must be >= 1, got {c.seq_len}")
    for key in ("global_batch", "micro_batch", "save_every", "keep", "log_every"):
        if getattr(c, key) < 1:
            fail(key, f"must be >= 1, got {getattr(c, key)}")
    if c.global_batch % c.micro_batch:
        fail("global_batch", f"({c.global_batch}) is not divisible by micro_batch ({c.micro_batch})")
    if c.eval_every < 0:
        fail("eval_every", f"must be >= 0, got {c.eval_every}")
    if not c.lr > 0:
        fail("lr", f"must be > 0, got {c.lr}")
    if not 0 <= c.min_lr_ratio <= 1:
        fail("min_lr_ratio", f"must be in [0, 1], got {c.min_lr_ratio}")
    if not 0 <= c.warmup_ratio < 1:
        fail("warmup_ratio", f"must be in [0, 1), got {c.warmup_ratio}")
    for key in ("weight_decay", "clip_norm"):
        if getattr(c, key) < 0:
            fail(key, f"must be >= 0, got {getattr(c, key)}")
    for key in ("b1", "b2"):
        if not 0 <= getattr(c, key) < 1:
            fail(key, f"must be in [0, 1), got {getattr(c, key)}")
    if c.param_dtype not in DTYPES:
        fail("param_dtype", f"must be one of {', '.join(DTYPES)}, got {c.param_dtype!r}")
    if c.compute_dtype not in ("auto", *DTYPES):
        fail("compute_dtype", f"must be one of auto, {', '.join(DTYPES)}, got {c.compute_dtype!r}")
    if c.remat not in REMAT_POLICIES:
        fail("remat", f"must be one of {', '.join(REMAT_POLICIES)}, got {c.remat!r}")
    if c.attention not in ATTENTION_IMPLS:
        fail("attention", f"must be one of {', '.join(ATTENTION_IMPLS)}, got {c.attention!r}")
    if c.peak_tflops is not None and not c.peak_tflops > 0:
        fail("peak_tflops", f"must be > 0, got {c.peak_tflops}")
    sizes = dataclasses.asdict(c.mesh)
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            fail(f"mesh.{axis}", f"must be -1 or >= 1, got {size}")
    if sum(1 for s in sizes.values() if s == -1) > 1:
        fail("mesh", "may use -1 (the rest of the devices) on one axis only")
    if c.lora.rank < 0:
        fail("lora.rank", f"must be >= 0 (0 = full fine-tuning), got {c.lora.rank}")
    if not c.lora.alpha > 0:
        fail("lora.alpha", f"must be > 0, got {c.lora.alpha}")
    if not 0 <= c.lora.dropout < 1:
        fail("lora.dropout", f"must be in [0, 1), got {c.lora.dropout}")
    if c.lora.dropout > 0 and c.lora.rank == 0:
        fail("lora.dropout", "needs lora.rank > 0 (it drops the adapters' input)")
    if c.lora.quantize_base not in QUANTIZE_SCHEMES:
        fail("lora.quantize_base", f"must be one of {', '.join(QUANTIZE_SCHEMES)}, got {c.lora.quantize_base!r}")
    if c.lora.quantize_base != "none" and c.lora.rank == 0:
        fail("lora.quantize_base", "needs lora.rank > 0 (a quantized base cannot be fully fine-tuned)")
    targets = [t.strip() for t in c.lora.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets:
        fail("lora.targets", f"has unknown target {unknown[0]!r} (known: {', '.join(LORA_TARGETS)})" if unknown else f"must name at least one of {', '.join(LORA_TARGETS)}")


def resolve_mesh_shape(mesh: MeshConfig, num_devices: int) -> dict[str, int]:
    """Axis sizes with -1 filled in; their product must be the device count."""
    sizes = dataclasses.asdict(mesh)
    fixed = math.prod(s for s in sizes.values() if s != -1)
    rest = [axis for axis, s in sizes.items() if s == -1]
    if rest:
        if num_devices % fixed:
            raise DittoError(f"config: mesh.{rest[0]}=-1 cannot fill {num_devices} devices: the other axes use {fixed}, which does not divide it")
        sizes[rest[0]] = num_devices // fixed
    elif fixed != num_devices:
        shape = " x ".join(f"{a}={s}" for a, s in sizes.items())
        raise DittoError(f"config: mesh {shape} uses {fixed} devices but {num_devices} are present (set one axis to -1)")
    return sizes


def accumulation_steps(c: TrainConfig, data_parallel: int) -> int:
    """Micro-batches per update: global_batch = micro_batch x data-parallel size x this."""
    per_pass = c.micro_batch * data_parallel
    if c.global_batch % per_pass:
        raise DittoError(
            f"config: global_batch ({c.global_batch}) is not divisible by micro_batch ({c.micro_batch}) "
            f"x data-parallel size ({data_parallel} = mesh.data x mesh.fsdp)"
        )
    return c.global_batch // per_pass


def total_steps(c: TrainConfig, train_rows: int) -> int:
    """Optimizer updates of the run: `steps` when set, else `epochs` passes over the rows, rounded up."""
    if c.steps is not None:
        return c.steps
    return max(1, math.ceil(c.epochs * train_rows / c.global_batch))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
