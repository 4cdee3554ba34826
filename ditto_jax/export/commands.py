"""`ditto-jax export`: parse arguments, call `export_model`, print where the export went."""
from __future__ import annotations

import argparse
import re
import sys

from ditto_native import DittoError

# Decimal units as transformers counts "2GB"; binary ones spelled KiB/MiB/GiB.
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'2GB' -> 2_000_000_000, '40KiB' -> 40_960, '1000' -> 1000."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if not m or float(m[1]) <= 0:
        raise DittoError(f"--max-shard-size {text!r}: expected a size such as 2GB, 500MB or 1GiB")
    return int(float(m[1]) * _UNITS[(m[2] or "").upper()])


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as a Hugging Face directory or a GGUF file",
        description=(
            "Export a model reference (smollm2, a Hugging Face directory, a .gguf file or a training run/checkpoint) "
            "to a directory transformers and vLLM load (config.json, generation_config.json, sharded safetensors, "
            "tokenizer, chat template, README.md model card), or to one GGUF file for llama.cpp and Ollama "
            "(llama and mistral models)."
        ),
    )
    p.add_argument("--model", required=True, help="model reference to export")
    p.add_argument("--out", required=True, help="output: a directory for --format hf, a file for --format gguf")
    p.add_argument(
        "--format", default="hf", dest="fmt", metavar="{hf,gguf,peft}",
        help="hf (default), gguf, or peft (a LoRA run's adapters: adapter_model.safetensors + adapter_config.json)",
    )
    p.add_argument("--merge", action="store_true", help="LoRA runs: merge the adapters into the base (the default for hf and gguf)")
    p.add_argument(
        "--dtype", default=None, metavar="DTYPE",
        help="weight dtype: float32, bfloat16 or float16; q8_0 for gguf only (default: the dtype the source stores)",
    )
    p.add_argument("--max-shard-size", default="2GB", metavar="SIZE", help="hf: largest safetensors shard, e.g. 500MB (default 2GB); also bounds host memory")
    p.add_argument("--force", action="store_true", help="replace an output that exists and is not empty")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ditto_jax.export import export_model  # JAX is imported only when a command runs

    if args.merge and args.fmt == "peft":
        raise DittoError("--merge writes a whole model; --format peft writes the adapters alone: pass one of them")
    out = export_model(
        args.model, args.out, fmt=args.fmt, dtype=args.dtype, max_shard_bytes=parse_size(args.max_shard_size),
        force=args.force, progress=True,
    )
    print(f"ditto-jax export: wrote {out}", file=sys.stderr)
    return 0
