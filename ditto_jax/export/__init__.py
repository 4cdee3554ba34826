"""`ditto-jax export`: any model reference to a Hugging Face directory or a GGUF file.

    export_model("runs/ditto/checkpoints/300", "ditto-hf")                       # HF directory
    export_model("smollm2", "smollm2.q8_0.gguf", fmt="gguf", dtype="q8_0")         # GGUF file

The output is written beside its final path and moved into place when complete
(`atomic_io.atomic_path`), so an interrupted export never leaves a directory or
file that looks finished, and --force replaces the old output in one rename.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from ditto_jax.atomic_io import atomic_path
from ditto_jax.config import SUPPORTED_MODEL_TYPES, ModelConfig
from ditto_jax.export.gguf_file import GGUF_DTYPES, check_gguf_config, write_gguf
from ditto_jax.export.model_card import ModelCardInputs, find_run, model_card
from ditto_jax.loader import ResolvedRef, resolve_model_ref
from ditto_jax.model import CausalLM
from ditto_jax.tokenizer import TokenizerBundle, end_of_turn_id
from ditto_jax.train.run_dir import MODEL
from ditto_jax.weights.gguf import hf_config_from_gguf, open_gguf
from ditto_jax.weights.table import hf_entries
from ditto_jax.weights.hf import DEFAULT_MAX_SHARD_BYTES, EXPORT_DTYPES, checkpoint_files, export_hf, open_safetensors, read_hf_config
from ditto_native import DittoError

FORMATS = ("hf", "gguf", "peft")
DTYPES = {"hf": tuple(EXPORT_DTYPES), "gguf": tuple(GGUF_DTYPES), "peft": ("float32", "bfloat16", "float16")}
_PARAM_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def check_request(fmt: str, dtype: str | None) -> None:
    """Refuse a format or dtype before anything is loaded."""
    if fmt not in FORMATS:
        raise DittoError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES[fmt]:
        hint = " (q8_0 is for --format gguf)" if dtype == "q8_0" else ""
        raise DittoError(f"--dtype {dtype} is not supported for --format {fmt}; choose {', '.join(DTYPES[fmt])}{hint}")


def check_output(out: Path, force: bool) -> None:
    """An existing, non-empty output is replaced only with --force."""
    if not out.exists():
        return
    non_empty = any(out.iterdir()) if out.is_dir() else out.stat().st_size > 0
    if non_empty and not force:
        raise DittoError(f"{out} already exists and is not empty; pass --force to replace it")


def source_dtype(resolved: ResolvedRef) -> str:
    """The dtype the source stores its parameters in: the export's default.

    HF directories: the embedding's safetensors dtype. GGUF files: float16 or
    bfloat16 when every matrix is stored so, else float32 (quantized matrices
    dequantize to float32). Training checkpoints: the `torch_dtype` their
    model config records (the run's param_dtype).
    """
    if resolved.kind == "hf":
        with open_safetensors(checkpoint_files(resolved.path)) as entries:
            embed = entries.get("model.embed_tokens.weight")
            return embed.dtype if embed is not None and embed.dtype in _PARAM_DTYPES else "float32"
    if resolved.kind == "gguf":
        types = {t.tensor_type.name for t in open_gguf(resolved.path).tensors if len(t.shape) >= 2}
        return {"F16": "float16", "BF16": "bfloat16"}.get(types.pop(), "float32") if len(types) == 1 else "float32"
    if resolved.kind == "checkpoint":
        hf, _ = read_hf_config(resolved.path / MODEL)
        stored = hf.get("torch_dtype") or hf.get("dtype")
        return stored if stored in _PARAM_DTYPES else "float32"
    raise DittoError(f"{resolved.ref}: cannot export a {resolved.kind} source")


def source_config(resolved: ResolvedRef) -> ModelConfig:
    """The source's model config, read without loading any weights."""
    if resolved.kind == "hf":
        return read_hf_config(resolved.path)[1]
    if resolved.kind == "checkpoint":
        return read_hf_config(resolved.path / MODEL)[1]
    if resolved.kind == "gguf":
        hf = hf_config_from_gguf(open_gguf(resolved.path), resolved.path)
        return ModelConfig.from_hf_config(hf, source=str(resolved.path))
    raise DittoError(f"{resolved.ref}: cannot export a {resolved.kind} source")


def generation_config(model: CausalLM, bundle: TokenizerBundle) -> dict:
    """generation_config.json: stop on eos and on the chat template's end-of-turn token."""
    cfg = model.cfg
    eos: list[int] = []
    for value in (cfg.eos_token_id, *bundle.eos_token_ids, end_of_turn_id(bundle)):
        eos.extend(value if isinstance(value, tuple) else [] if value is None else [value])
    eos = list(dict.fromkeys(int(i) for i in eos))
    bos = cfg.bos_token_id
    if bos is None and bundle.bos_token is not None:
        bos = bundle.tokenizer.token_to_id(bundle.bos_token)
    out = {"bos_token_id": bos, "eos_token_id": eos[0] if len(eos) == 1 else eos, "pad_token_id": bundle.pad_token_id}
    return {k: v for k, v in out.items() if v is not None}


def export_model(
    ref: str,
    out: str | Path,
    *,
    fmt: str = "hf",
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Export model reference `ref` to `out` (a directory for hf and peft, a file for gguf).

    A LoRA run exports merged (base + adapters) as hf or gguf, or as its adapters alone with peft.
    """
    check_request(fmt, dtype)
    out = Path(out).expanduser()
    check_output(out, force)
    resolved = resolve_model_ref(str(ref))
    source = resolved.path.resolve()
    target = out.resolve()
    if target == source or target in source.parents:
        raise DittoError(f"{out}: the output would replace the source model {resolved.path}")
    if fmt == "gguf" and out.is_dir():
        raise DittoError(f"{out}: is a directory; --format gguf writes one file (for example {out / 'model.gguf'})")

    if fmt == "peft":  # the adapters alone, in PEFT's layout; a LoRA run's hf export merges them
        from ditto_jax.export.peft import export_peft

        if resolved.kind != "checkpoint" or not (resolved.path / MODEL / "lora.json").is_file():
            raise DittoError(f"{ref}: --format peft needs a LoRA training run (lora.rank > 0); this source holds no adapters")
        return export_peft(resolved.path, out, dtype=dtype or source_dtype(resolved))
    if fmt == "gguf":
        check_gguf_config(source_config(resolved))  # refuse before loading any weights
    stored = source_dtype(resolved)
    dtype = dtype or stored
    if dtype not in DTYPES[fmt]:  # a default the format lacks (none today, but keep the check exact)
        raise DittoError(f"the source stores {dtype}, which --format {fmt} cannot; pass --dtype ({', '.join(DTYPES[fmt])})")
    # Loading in the stored dtype is lossless and keeps host memory at the model's own size.
    model, bundle = resolved.load_model(dtype=_PARAM_DTYPES.get(stored, jnp.float32))

    return write_model(model, bundle, out, fmt=fmt, dtype=dtype, max_shard_bytes=max_shard_bytes, source=resolved, progress=progress)


def write_model(
    model: CausalLM,
    bundle: TokenizerBundle,
    out: str | Path,
    *,
    fmt: str = "hf",
    dtype: str = "float32",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    source: ResolvedRef | None = None,
    progress: bool = False,
) -> Path:
    """Write a loaded model (its parameters placed on any mesh) to `out`, atomically.

    In a multi-process run every process calls this: each tensor is all-gathered
    by all of them, in the writers' order, and process 0 alone writes.
    """
    out = Path(out).expanduser()
    if jax.process_index() != 0:
        for entry in hf_entries(model).values():  # the writers fetch in this order
            entry.load()
        return out
    with atomic_path(out) as partial:
        if fmt == "hf":
            _write_hf_dir(model, bundle, partial, source=source, name=out.name, dtype=dtype, max_shard_bytes=max_shard_bytes, progress=progress)
        else:
            write_gguf(model, bundle, partial, dtype=dtype, name=out.stem, progress=progress)
    return out


def _write_hf_dir(model, bundle, out: Path, *, source: ResolvedRef | None, name: str, dtype: str, max_shard_bytes: int, progress: bool) -> None:
    export_hf(model, bundle, out, dtype=dtype, max_shard_bytes=max_shard_bytes, generation_config=generation_config(model, bundle), progress=progress)
    card = ModelCardInputs(
        name=name, source=source.ref if source else bundle.name, fmt="hf", dtype=dtype,
        architecture=SUPPORTED_MODEL_TYPES[model.cfg.model_type], num_params=model.cfg.num_params(),
        run=find_run(source.path) if source else None,
    )
    (out / "README.md").write_text(model_card(card), encoding="utf-8")
