"""Hugging Face directories: config.json + safetensors (single file or sharded), both ways.

Only safetensors are read; pickle checkpoints (pytorch_model.bin) are refused,
because unpickling runs arbitrary code.

    cfg, model = load_hf_dir("path/to/model")
    export_hf(model, tokenizer_bundle, "out/", dtype="bfloat16")
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from ditto_jax.config import ModelConfig
from ditto_jax.model import CausalLM
from ditto_jax.weights.table import TensorEntry, fill_model, hf_entries, raise_problems
from ditto_native import DittoError

if TYPE_CHECKING:
    from ditto_jax.tokenizer import TokenizerBundle

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG = "generation_config.json"
# Shard above 2 GB (decimal, as transformers counts "2GB"). It also bounds host memory
# during export: one shard is held at a time.
DEFAULT_MAX_SHARD_BYTES = 2 * 10**9

# safetensors dtype codes -> numpy names (what `TensorEntry.dtype` holds)
_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "BOOL": "bool",
    "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
}
EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def read_hf_config(model_dir: Path) -> tuple[dict, ModelConfig]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise DittoError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DittoError(f"{path}: invalid JSON ({exc})") from None
    return hf, ModelConfig.from_hf_config(hf, source=str(path))


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files that make up the checkpoint, from the index when there is one."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DittoError(f"{index}: not a safetensors index ({exc!r})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise DittoError(f"{index}: lists {len(missing)} missing shard(s), first {missing[0]}")
        return [model_dir / n for n in names]
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise DittoError(f"{model_dir}: only pickle checkpoints (*.bin/*.pt) found; convert them to safetensors")
    raise DittoError(f"{model_dir}: no {SINGLE_FILE} or {INDEX_FILE}")


@contextlib.contextmanager
def open_safetensors(files: list[Path]) -> Iterator[dict[str, TensorEntry]]:
    """All tensors of `files` as lazily read entries; files stay open inside the `with`."""
    with contextlib.ExitStack() as stack:
        entries: dict[str, TensorEntry] = {}
        problems: list[str] = []
        for path in files:
            try:
                handle = stack.enter_context(safe_open(str(path), framework="numpy"))
            except Exception as exc:  # safetensors raises its own error types for corrupt headers
                raise DittoError(f"{path}: unreadable safetensors file ({exc})".replace("\n", " ")) from None
            for key in handle.keys():
                if key in entries:
                    problems.append(f"tensor {key} appears in more than one shard")
                    continue
                meta = handle.get_slice(key)
                entries[key] = TensorEntry(
                    shape=tuple(meta.get_shape()),
                    dtype=_ST_DTYPES.get(meta.get_dtype(), meta.get_dtype()),
                    load=lambda h=handle, k=key: h.get_tensor(k),
                )
        raise_problems(str(files[0].parent), problems)
        yield entries


def load_hf_dir(model_dir: str | Path, *, dtype=jnp.float32, param_dtype=None) -> tuple[ModelConfig, CausalLM]:
    """Config and weights of a Hugging Face directory as a `CausalLM`."""
    model_dir = Path(model_dir)
    _, cfg = read_hf_config(model_dir)
    with open_safetensors(checkpoint_files(model_dir)) as entries:
        model = fill_model(cfg, entries, source=str(model_dir), dtype=dtype, param_dtype=param_dtype or dtype)
    return cfg, model


def export_hf(
    model: CausalLM,
    tokenizer_bundle: "TokenizerBundle | None",
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    generation_config: dict | None = None,
    progress: bool = False,
) -> Path:
    """Write a directory `transformers` loads: config.json, safetensors (sharded past
    `max_shard_bytes`, with model.safetensors.index.json), generation_config.json
    when given, and, given a bundle, the tokenizer files.

    Tensors are fetched from the devices one at a time as each shard is written,
    so host memory holds about one shard (or one tensor, when that is larger).
    """
    if dtype not in EXPORT_DTYPES:
        raise DittoError(f"export dtype {dtype!r} is not supported for Hugging Face directories; choose {', '.join(EXPORT_DTYPES)}")
    np_dtype = np.dtype(EXPORT_DTYPES[dtype])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / SINGLE_FILE, out / INDEX_FILE, *out.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)  # a re-export must not leave shards of an older one behind
    entries = hf_entries(model)
    sizes = {key: math.prod(entry.shape) * np_dtype.itemsize for key, entry in entries.items()}
    shards = _plan_shards(sizes, max_shard_bytes)
    names = [SINGLE_FILE] if len(shards) == 1 else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    metadata = {"format": "pt"}  # transformers reads it to know the layout is torch's
    with tqdm(total=len(entries), desc="export", unit="tensor", disable=not progress, file=sys.stderr) as bar:
        for keys, name in zip(shards, names):
            tensors = {}
            for key in keys:
                tensors[key] = cast_weights(entries[key].load(), np_dtype, key)
                bar.update(1)
            save_file(tensors, str(out / name), metadata=metadata)
            # safetensors creates its files owner-only (0600); give them the mode every other
            # file gets, so that a server running as another user can read a shared export.
            os.chmod(out / name, 0o666 & ~_umask())
    if len(shards) > 1:
        weight_map = {key: name for keys, name in zip(shards, names) for key in keys}
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    hf_config = model.cfg.to_hf_config(torch_dtype=dtype)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    if generation_config is not None:
        (out / GENERATION_CONFIG).write_text(json.dumps(generation_config, indent=2) + "\n", encoding="utf-8")
    if tokenizer_bundle is not None:
        tokenizer_bundle.save(out)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cast_weights(value: np.ndarray, dtype: np.dtype, key: str) -> np.ndarray:
    """`value` in `dtype`, refusing a cast that would turn finite weights into inf."""
    if dtype == np.float16:
        peak = float(np.max(np.abs(value), initial=0.0))
        if peak > float(np.finfo(np.float16).max):
            raise DittoError(f"{key}: values up to {peak:.4g} overflow float16; export float32 or bfloat16 instead")
    return np.ascontiguousarray(value.astype(dtype))


def _plan_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
    """Tensor names per shard, in table order; a new shard starts when the next tensor would overflow."""
    shards: list[list[str]] = [[]]
    size = 0
    for key, nbytes in sizes.items():
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards
