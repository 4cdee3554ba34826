"""Packed shards as training batches, read through the shard contract (DESIGN.md "Shards").

    shards = open_shards("ditto-out/shards")
    check_manifest(shards.manifest, bundle, model_cfg, shards.path, seq_len=None)
    rows = shards.train.read(np.array([5, 2, 9]))   # {"input_ids": [3, T], ...}

The global order of training rows is a fixed function of (seed, epoch): epoch e
visits `train_order(n, seed, e)`. Training consumes that stream row by row, so a
run's data position is one number, the rows consumed, and a resumed run continues
from it exactly. Each process reads only the rows its devices hold.
"""
from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ditto_native import DittoError

COLUMNS = ("input_ids", "loss_mask", "segment_ids", "positions")
_DTYPES = {"input_ids": np.int32, "loss_mask": np.int32, "segment_ids": np.int32, "positions": np.int32}
_CACHED_FILES = 4  # decoded Parquet files kept in memory per split


class Split:
    """One split (train/ or heldout/): an index over its Parquet files, read by row number."""

    def __init__(self, folder: Path, seq_len: int):
        self.folder = folder
        self.seq_len = seq_len
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        counts = []
        for path in files:
            try:
                meta = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DittoError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
            missing = [c for c in COLUMNS if c not in meta.schema_arrow.names]
            if missing:
                raise DittoError(f"{path}: missing column(s) {', '.join(missing)} (expected the shard contract)")
            for c in COLUMNS:
                size = getattr(meta.schema_arrow.field(c).type, "list_size", None)
                if size != seq_len:
                    raise DittoError(f"{path}: column {c} holds rows of {size} tokens, but manifest.json says seq_len {seq_len}")
            counts.append(meta.metadata.num_rows)
        self.files = files
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.num_rows = int(self.starts[-1])
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given rows (global row numbers of this split), each column [len(rows), seq_len] int32."""
        rows = np.asarray(rows, np.int64)
        out = {c: np.zeros((len(rows), self.seq_len), _DTYPES[c]) for c in COLUMNS}
        file_of = np.searchsorted(self.starts, rows, side="right") - 1
        for f in np.unique(file_of):
            pick = np.nonzero(file_of == f)[0]
            table = self._file(int(f))
            for c in COLUMNS:
                out[c][pick] = table[c][rows[pick] - self.starts[f]]
        return out

    def _file(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        path = self.files[index]
        table = pq.read_table(path, columns=list(COLUMNS))
        decoded = {}
        for c in COLUMNS:
            flat = table.column(c).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            decoded[c] = flat.astype(_DTYPES[c], copy=False).reshape(-1, self.seq_len)
        self._cache[index] = decoded
        while len(self._cache) > _CACHED_FILES:
            self._cache.popitem(last=False)
        return decoded


@dataclasses.dataclass
class Shards:
    path: Path
    manifest: dict[str, Any]
    train: Split
    heldout: Split

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])


def open_shards(data_dir: str | Path) -> Shards:
    path = Path(data_dir)
    manifest = read_manifest(path)
    seq_len = manifest["seq_len"]
    train = Split(path / "train", seq_len)
    if train.num_rows == 0:
        raise DittoError(f"{path / 'train'}: no training rows")
    return Shards(path, manifest, train, Split(path / "heldout", seq_len))


def read_manifest(data_dir: Path) -> dict[str, Any]:
    if not data_dir.is_dir():
        raise DittoError(f"data {data_dir}: no such shards directory (write one with ditto-data tokenize)")
    path = data_dir / "manifest.json"
    if not path.is_file():
        raise DittoError(f"{path}: missing manifest.json (not a ditto-data tokenize output)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DittoError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DittoError(f"{path}: expected a JSON object")
    for key in ("seq_len", "tokenizer", "chat_template_sha256"):
        if key not in manifest:
            raise DittoError(f"{path}: missing key {key!r}")
    if not isinstance(manifest["seq_len"], int) or manifest["seq_len"] < 2:
        raise DittoError(f"{path}: seq_len must be an integer >= 2, got {manifest['seq_len']!r}")
    if not isinstance(manifest["tokenizer"], dict) or "sha256" not in manifest["tokenizer"]:
        raise DittoError(f"{path}: tokenizer must be an object with sha256")
    return manifest


def check_manifest(manifest: dict[str, Any], bundle, model_cfg, data_dir: Path, *, seq_len: int | None = None) -> None:
    """Refuse shards made for another tokenizer or template, or longer than the model's context."""
    where = Path(data_dir) / "manifest.json"
    want_tok = bundle.sha256()
    if manifest["tokenizer"]["sha256"] != want_tok:
        name = manifest["tokenizer"].get("name", "?")
        raise DittoError(
            f"{where}: shards were tokenized with {name} (tokenizer sha256 {manifest['tokenizer']['sha256'][:12]}…), "
            f"not the model's {bundle.name} ({want_tok[:12]}…); re-run ditto-data tokenize --tokenizer with this model"
        )
    if bundle.chat_template is None:
        raise DittoError(f"{where}: the model {bundle.name} has no chat template to check the shards against")
    if manifest["chat_template_sha256"] != bundle.chat_template.sha256:
        raise DittoError(
            f"{where}: shards were rendered with another chat template (sha256 {manifest['chat_template_sha256'][:12]}…) "
            f"than the model's ({bundle.chat_template.sha256[:12]}…)"
        )
    if manifest["seq_len"] > model_cfg.max_position_embeddings:
        raise DittoError(
            f"{where}: seq_len {manifest['seq_len']} exceeds the model's context ({model_cfg.max_position_embeddings} tokens)"
        )
    if seq_len is not None and seq_len != manifest["seq_len"]:
        raise DittoError(f"config: seq_len {seq_len} differs from the shards' seq_len {manifest['seq_len']} ({where})")


def train_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of train rows that epoch `epoch` visits; a pure function of its arguments."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


class TrainStream:
    """Rows of the endless (seed, epoch)-ordered stream, addressed by stream position."""

    def __init__(self, split: Split, seed: int):
        self.split = split
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """Split row numbers for stream positions (position p is row order(p // n)[p % n])."""
        n = self.split.num_rows
        positions = np.asarray(positions, np.int64)
        epochs, offsets = positions // n, positions % n
        out = np.empty_like(positions)
        for e in np.unique(epochs):
            order = self._order(int(e))
            sel = epochs == e
            out[sel] = order[offsets[sel]]
        return out

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 2:  # a batch spans at most two epochs
                self._orders.pop(min(self._orders))
            self._orders[epoch] = train_order(self.split.num_rows, self.seed, epoch)
        return self._orders[epoch]


def local_rows(accum: int, per_pass: int, lo: int, hi: int) -> np.ndarray:
    """Offsets, within one update's global batch, of the rows this process holds.

    The global batch is laid out [accum, per_pass] (micro-batch a holds offsets
    a * per_pass + r); this process's devices hold columns [lo, hi).
    """
    return (np.arange(accum)[:, None] * per_pass + np.arange(lo, hi)[None, :]).reshape(-1)


def empty_rows(count: int, seq_len: int) -> dict[str, np.ndarray]:
    """Padding rows (segment 0, no loss) that fill a last partial evaluation batch."""
    return {c: np.zeros((count, seq_len), _DTYPES[c]) for c in COLUMNS}
