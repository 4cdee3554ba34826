"""GGUF key/value metadata alone, read with `struct` from the head of the file.

The tokenizer of a GGUF model lives in its metadata (tokenizer.ggml.*), which
sits before the tensor table. `gguf.GGUFReader` builds a NumPy view per value
and per array element and then indexes every tensor: 3.6 s of the 4 s that
loading SmolLM2's tokenizer took (cProfile, `ditto-data tokenize`). This
reader walks only the key/value section of a memory map and returns plain
Python values, the same ones `GGUFReader.fields[key].contents()` gives, so the
tokenizer path needs neither NumPy nor the gguf package. Weights still go
through GGUFReader (ditto_jax/weights/gguf.py).

    meta = read_gguf_metadata("SmolLM2-135M-Instruct.Q4_1.gguf")
    meta["tokenizer.ggml.model"]  # 'gpt2'
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from ditto_native import DittoError

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)  # those gguf.GGUFReader reads; version 1 used 32-bit counts
# GGUF value type -> struct code (llama.cpp's gguf_type); 8 is string, 9 array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    pass


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Every metadata key of a GGUF file -> its value (str, int, float, bool or a list of them).

    Raises a one-line DittoError for a missing file, a file that is not GGUF,
    a version other than 2 or 3, a cut-off or malformed header, or a string
    that is not UTF-8 (naming the key).
    """
    path = Path(path)
    if not path.is_file():
        raise DittoError(f"{path}: no such GGUF file")
    with open(path, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise DittoError(f"{path}: not a readable GGUF file (empty)") from None
    with buf:
        if buf[:4] != _MAGIC:
            raise DittoError(f"{path}: not a readable GGUF file (no GGUF magic)")
        order = "<"
        if len(buf) >= 8 and struct.unpack_from("<I", buf, 4)[0] & 0xFFFF == 0:
            order = ">"  # written on a big-endian machine, as GGUFReader detects it
        try:
            return _Parser(buf, order, path).run()
        except _Truncated:
            raise DittoError(f"{path}: not a readable GGUF file (metadata cut off at byte {len(buf)})") from None


class _Parser:
    def __init__(self, buf: mmap.mmap, order: str, path: Path):
        self.buf, self.order, self.path = buf, order, path
        self.u32 = struct.Struct(order + "I").unpack_from
        self.u64 = struct.Struct(order + "Q").unpack_from
        self.key = ""

    def run(self) -> dict[str, Any]:
        buf = self.buf
        if len(buf) < 24:
            raise _Truncated
        (version,) = self.u32(buf, 4)
        if version not in _VERSIONS:
            raise DittoError(f"{self.path}: GGUF version {version} is not supported (only {', '.join(map(str, _VERSIONS))})")
        (kv_count,) = self.u64(buf, 16)
        off = 24
        meta: dict[str, Any] = {}
        for _ in range(kv_count):
            self.key = ""
            key, off = self._string(off)
            self.key = key
            if key in meta:
                raise DittoError(f"{self.path}: GGUF metadata key {key!r} appears twice")
            vtype, off = self._uint32(off)
            meta[key], off = self._value(vtype, off)
        return meta

    def _uint32(self, off: int) -> tuple[int, int]:
        if off + 4 > len(self.buf):
            raise _Truncated
        return self.u32(self.buf, off)[0], off + 4

    def _string(self, off: int) -> tuple[str, int]:
        buf = self.buf
        if off + 8 > len(buf):
            raise _Truncated
        (n,) = self.u64(buf, off)
        end = off + 8 + n
        if end > len(buf):
            raise _Truncated
        return self._decode(buf[off + 8 : end]), end

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"key {self.key!r}" if self.key else "a key name"
            raise DittoError(f"{self.path}: GGUF metadata {where} holds a string that is not UTF-8 ({exc.reason} at byte {exc.start})") from None

    def _value(self, vtype: int, off: int) -> tuple[Any, int]:
        if vtype == _STRING:
            return self._string(off)
        if vtype == _ARRAY:
            etype, off = self._uint32(off)
            if off + 8 > len(self.buf):
                raise _Truncated
            (count,) = self.u64(self.buf, off)
            return self._array(etype, count, off + 8)
        code = _SCALARS.get(vtype)
        if code is None:
            raise DittoError(f"{self.path}: GGUF metadata key {self.key!r} has unknown value type {vtype}")
        size = struct.calcsize(code)
        if off + size > len(self.buf):
            raise _Truncated
        return struct.unpack_from(self.order + code, self.buf, off)[0], off + size

    def _array(self, etype: int, count: int, off: int) -> tuple[list, int]:
        buf = self.buf
        if etype == _STRING:
            # The hot loop: ~50k tokens and ~50k merges per vocabulary.
            u64, decode, size = self.u64, self._decode, len(buf)
            out = []
            append = out.append
            for _ in range(count):
                if off + 8 > size:
                    raise _Truncated
                (n,) = u64(buf, off)
                off += 8
                if off + n > size:
                    raise _Truncated
                raw = buf[off : off + n]
                try:
                    append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    decode(raw)  # raises the one-line error
                off += n
            return out, off
        if etype == _ARRAY:  # no tokenizer or model key nests arrays
            raise DittoError(f"{self.path}: GGUF metadata key {self.key!r} is an array of arrays (not supported)")
        code = _SCALARS.get(etype)
        if code is None:
            raise DittoError(f"{self.path}: GGUF metadata key {self.key!r} has unknown array element type {etype}")
        size = struct.calcsize(code) * count
        if off + size > len(buf):
            raise _Truncated
        return list(struct.unpack_from(f"{self.order}{count}{code}", buf, off)), off + size
