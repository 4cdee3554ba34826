"""`ditto-data tokenize`: clean.parquet -> packed, loss-masked train/held-out shards.

The work happens in Rust (`ditto_native.ChatEncoder` / `SftPacker`): each
session is rendered once with the model's chat template, tokenized, masked so
that the loss falls on assistant turns only, cut or dropped when longer than a
row, assigned to train or held-out by a hash of its id, and packed best fit
decreasing into rows of `seq_len`. This module resolves the tokenizer, feeds
Arrow chunks to Rust with a progress bar, and writes the shard contract
(see DESIGN.md, "Shards"):

    out/train/part-00000.parquet ...    input_ids, loss_mask, segment_ids, positions
    out/heldout/part-00000.parquet ...  (each a fixed_size_list of seq_len per row)
    out/manifest.json

`loss_mask[t] == 1` when `input_ids[t]` is an assistant token: the trainer
scores the prediction of token t from the tokens before it in its segment.
The mask covers each assistant turn from the end of its role header through
its end-of-turn token (content, and whatever the template writes inside the
turn, such as Qwen3's think block). The separator the template writes after
the end-of-turn token (ChatML's "\n") is not in the mask: generation stops at
the end-of-turn token, so the model never has to produce it. Literal
special-token text inside content (`<|im_end|>`) is tokenized as plain text.
A system message the template drops (Mistral v0.3) is folded into the first
user message; the manifest records `system_policy`.

    ditto-data tokenize --in clean.parquet --tokenizer smollm2 --seq-len 2048 --out shards/
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ditto_jax.atomic_io import atomic_path
from ditto_native import ChatEncoder, DittoError, SftPacker

SESSION_COLUMNS = ("session_id", "system", "messages")
SPLITS = ("train", "heldout")
# Sessions per Rust call: big enough to keep every core busy, small enough for
# a progress bar that moves.
CHUNK_ROWS = 2048
# Tokens per shard file (~100 MB of int32 columns before compression).
TOKENS_PER_FILE = 1 << 23


@dataclass(frozen=True)
class TokenizeConfig:
    seq_len: int  # tokens per packed row
    overlong: str = "truncate"  # "truncate" at a turn boundary, or "drop"
    heldout_fraction: float = 0.02  # share of sessions, by SHA-256 of session_id
    template_vars: Mapping[str, Any] = field(default_factory=dict)  # extra chat-template variables

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise DittoError(f"--seq-len must be positive, got {self.seq_len}")
        if self.overlong not in ("truncate", "drop"):
            raise DittoError(f"--overlong must be truncate or drop, got {self.overlong!r}")
        if not 0.0 <= self.heldout_fraction <= 1.0:
            raise DittoError(f"--heldout-fraction must be in [0, 1], got {self.heldout_fraction}")
        for reserved in ("messages", "add_generation_prompt"):
            if reserved in self.template_vars:
                raise DittoError(f"--template-var {reserved} is reserved")


@dataclass(frozen=True)
class TokenizerSource:
    """What the Rust encoder needs from a tokenizer reference."""

    name: str
    tokenizer_json: str  # tokenizer.json text (also for a tokenizer built from a GGUF)
    chat_template: str
    bos_token: str | None
    eos_token: str | None
    pad_token_id: int
    sha256: str  # of tokenizer_json

    @property
    def chat_template_sha256(self) -> str:
        return hashlib.sha256(self.chat_template.encode()).hexdigest()

    def encoder(self, template_vars: Mapping[str, Any]) -> ChatEncoder:
        return ChatEncoder(self.tokenizer_json, self.chat_template, self.bos_token, self.eos_token, dict(template_vars))


def load_tokenizer_source(ref: str | Path) -> TokenizerSource:
    """Resolve `--tokenizer REF`: any model reference (`smollm2`, a Hugging
    Face folder, a .gguf file) or a folder holding only tokenizer files."""
    from ditto_jax.tokenizer import load_tokenizer  # data_tools imports ditto_jax lazily

    return tokenizer_source_from_bundle(load_tokenizer(ref), f"--tokenizer {ref}")


def tokenizer_source_from_bundle(bundle, what: str) -> TokenizerSource:
    """The encoder's inputs from an already loaded `ditto_jax` TokenizerBundle; `what` names it in errors."""
    template = bundle.chat_template
    if template is None:
        raise DittoError(f"{what}: {bundle.name} has no chat template")
    tokenizer_json = bundle.tokenizer.to_str()  # serialised once: `bundle.sha256()` would do it again
    return TokenizerSource(
        name=bundle.name,
        tokenizer_json=tokenizer_json,
        chat_template=template.source,
        bos_token=template.bos_token,
        eos_token=template.eos_token,
        pad_token_id=bundle.pad_token_id,
        sha256=hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest(),
    )


@dataclass(frozen=True)
class Shards:
    """Packed splits and their counts, before writing."""

    tables: dict[str, pa.Table]
    stats: dict[str, Any]


def _session_batches(path: Path) -> tuple[int, Any]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DittoError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in SESSION_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise DittoError(f"{path}: missing column(s) {', '.join(missing)} (expected the dialogues contract)")
    return pf.metadata.num_rows, pf.iter_batches(batch_size=CHUNK_ROWS, columns=list(SESSION_COLUMNS))


def pack_sessions(batches, source: TokenizerSource, config: TokenizeConfig, *, total: int | None = None, progress: bool = True) -> Shards:
    """Encode and pack Arrow batches of sessions (columns session_id, system,
    messages). Returns the train/held-out tables and the stage's counts."""
    from tqdm import tqdm

    encoder = source.encoder(config.template_vars)
    packer = SftPacker(
        encoder,
        seq_len=config.seq_len,
        overlong=config.overlong,
        heldout_fraction=config.heldout_fraction,
        pad_id=source.pad_token_id,
    )
    with tqdm(total=total, unit="session", desc="tokenize", disable=not progress, file=sys.stderr) as bar:
        for batch in batches:
            bar.update(packer.add(batch))
    train, heldout, stats = packer.finish()
    stats["dropped"] = dict(stats["dropped"])
    stats["system_policy"] = encoder.system_policy
    return Shards(tables={"train": pa.Table.from_batches([train]), "heldout": pa.Table.from_batches([heldout])}, stats=stats)


def split_summary(table: pa.Table, seq_len: int, counts: Mapping[str, int]) -> dict[str, Any]:
    rows = table.num_rows
    capacity = rows * seq_len
    real = counts["real_tokens"]
    return {
        "num_rows": rows,
        "num_segments": counts["num_sessions"],
        "real_tokens": real,
        "padded_tokens": capacity - real,
        "loss_tokens": counts["loss_tokens"],
        "packing_efficiency": real / capacity if capacity else 0.0,
    }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_split(table: pa.Table, folder: Path, seq_len: int) -> list[str]:
    folder.mkdir(parents=True)
    per_file = max(1, TOKENS_PER_FILE // seq_len)
    names = []
    # An empty split still gets one file, so readers always find the schema.
    for i, start in enumerate(range(0, max(table.num_rows, 1), per_file)):
        name = f"part-{i:05d}.parquet"
        pq.write_table(table.slice(start, per_file), folder / name, compression="zstd")
        names.append(name)
    return names


def write_shards(shards: Shards, out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write train/, heldout/ and manifest.json into a temporary folder beside
    `out_dir`, then move it into place, so `out_dir` is never half written."""
    with atomic_path(out_dir) as tmp:  # the folder appears whole, in one rename
        tmp.mkdir()
        files = {split: _write_split(shards.tables[split], tmp / split, manifest["seq_len"]) for split in SPLITS}
        manifest = {**manifest, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def count_languages(path: Path) -> dict[str, int]:
    """Sessions per `lang` code in a dialogues file, most first ({} without a lang column)."""
    pf = pq.ParquetFile(path)
    if "lang" not in pf.schema_arrow.names:
        return {}
    counts = pf.read(columns=["lang"]).column("lang").value_counts().to_pylist()
    pairs = [(str(c["values"]), int(c["counts"])) for c in counts]
    return dict(sorted(pairs, key=lambda kv: (-kv[1], kv[0])))


def build_manifest(
    shards: Shards, source: TokenizerSource, config: TokenizeConfig, sources: Mapping[str, str], languages: Mapping[str, int] | None = None
) -> dict[str, Any]:
    stats = shards.stats
    return {
        "seq_len": config.seq_len,
        "tokenizer": {"name": source.name, "sha256": source.sha256},
        "chat_template_sha256": source.chat_template_sha256,
        "template_vars": dict(sorted(config.template_vars.items())),
        "system_policy": stats["system_policy"],
        "splits": {s: split_summary(shards.tables[s], config.seq_len, stats[s]) for s in SPLITS},
        "dropped": dict(sorted(stats["dropped"].items())),
        "sources": dict(sources),
        # Beyond the contract's keys: what went in (sessions per language sum to sessions_in;
        # model cards summarise the data with it) and how the rows were made.
        "languages": dict(languages or {}),
        "sessions_in": stats["sessions_in"],
        "truncated": stats["truncated"],
        "overlong": config.overlong,
        "heldout_fraction": config.heldout_fraction,
        "pad_token_id": source.pad_token_id,
    }


def tokenize_file(in_path: str | Path, source: TokenizerSource, out_dir: str | Path, config: TokenizeConfig, *, progress: bool = True) -> dict[str, Any]:
    """The whole stage: read, encode, pack, write. Returns the manifest."""
    in_path = Path(in_path)
    total, batches = _session_batches(in_path)
    shards = pack_sessions(batches, source, config, total=total, progress=progress)
    kept = sum(shards.stats[s]["num_sessions"] for s in SPLITS)
    if kept == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(shards.stats["dropped"].items())) or "the input has no rows"
        raise DittoError(f"{in_path}: no sessions left to tokenize ({reasons})")
    manifest = build_manifest(shards, source, config, {str(in_path): file_sha256(in_path)}, count_languages(in_path))
    write_shards(shards, Path(out_dir), manifest)
    return manifest


def parse_template_var(text: str) -> tuple[str, Any]:
    """`k=v`; v is read as JSON when it is a JSON scalar (true, 3, null),
    otherwise kept as a string: `enable_thinking=false`, `date_string=26 Jul 2024`."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return key, value
    return key, parsed if isinstance(parsed, (bool, int, float, type(None))) else value


def _run(args: argparse.Namespace) -> int:
    config = TokenizeConfig(
        seq_len=args.seq_len,
        overlong=args.overlong,
        heldout_fraction=args.heldout_fraction,
        template_vars=dict(args.template_var),
    )
    source = load_tokenizer_source(args.tokenizer)
    if "strftime_now" in source.chat_template and "date_string" not in config.template_vars:
        print(
            "ditto-data tokenize: note: the chat template writes today's date; pin it with --template-var date_string=... for reproducible shards",
            file=sys.stderr,
        )
    manifest = tokenize_file(args.input, source, args.out, config)
    train, held = manifest["splits"]["train"], manifest["splits"]["heldout"]
    dropped = ", ".join(f"{k} {v}" for k, v in manifest["dropped"].items()) or "none"
    print(
        f"{args.out}: train {train['num_rows']} rows / {train['num_segments']} sessions, "
        f"heldout {held['num_rows']} rows / {held['num_segments']} sessions, "
        f"packing {train['packing_efficiency']:.1%}, truncated {manifest['truncated']}, dropped {dropped}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="render, tokenize, loss-mask and pack dialogues into train/held-out shards",
        description=(
            "Render each session with the tokenizer's chat template, tokenize it, mask the loss to the "
            "assistant turns, and pack sessions best fit decreasing into rows of --seq-len tokens. "
            "Writes OUT/train/, OUT/heldout/ (Parquet: input_ids, loss_mask, segment_ids, positions) "
            "and OUT/manifest.json."
        ),
    )
    p.add_argument("--in", dest="input", required=True, metavar="FILE", help="clean.parquet (the dialogues contract)")
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="REF",
        help="a model reference (smollm2, a Hugging Face folder, a .gguf file) or a folder with tokenizer.json and tokenizer_config.json",
    )
    p.add_argument("--seq-len", type=int, required=True, metavar="N", help="tokens per packed row")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced atomically)")
    p.add_argument(
        "--overlong",
        choices=("truncate", "drop"),
        default="truncate",
        help="a session longer than a row is cut after its last whole turn that fits, or dropped (default: truncate)",
    )
    p.add_argument("--heldout-fraction", type=float, default=0.02, metavar="F", help="share of sessions held out, by hash of session_id (default: 0.02)")
    p.add_argument(
        "--template-var",
        type=parse_template_var,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="chat-template variable, repeatable (date_string=26 Jul 2024, enable_thinking=false); recorded in the manifest",
    )
    p.set_defaults(func=_run)
