"""The struct-based GGUF metadata reader gives what gguf.GGUFReader gives."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter

from ditto_jax.weights.gguf_meta import read_gguf_metadata
from ditto_native import DittoError


def _write(path, endianess=GGUFEndian.LITTLE, with_tensor=True):
    w = GGUFWriter(path, "llama", endianess=endianess)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["a", "Ġb", "<|im_end|>", "中文", ""])
    w.add_array("tokenizer.ggml.token_type", [1, 1, 3, 1, 5])
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_key_value("general.size", 2**40 + 3, GGUFValueType.UINT64)
    w.add_key_value("general.offset", -7, GGUFValueType.INT64)
    w.add_key_value("general.small", -3, GGUFValueType.INT8)
    w.add_key_value("general.flag", True, GGUFValueType.BOOL)
    w.add_key_value("general.scale", 0.1, GGUFValueType.FLOAT32)
    w.add_key_value("general.precise", 0.1, GGUFValueType.FLOAT64)
    w.add_array("llama.per_layer", [0.5, 1.5])
    if with_tensor:
        w.add_tensor("token_embd.weight", np.ones((2, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _reference(path) -> dict:
    reader = GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.mark.parametrize("endianess", [GGUFEndian.LITTLE, GGUFEndian.BIG])
def test_values_and_types_match_gguf_reader(tmp_path, endianess):
    path = tmp_path / "m.gguf"
    _write(path, endianess)
    meta, ref = read_gguf_metadata(path), _reference(path)
    assert list(meta) == list(ref)
    for key, value in ref.items():
        assert meta[key] == value and type(meta[key]) is type(value), key
    assert meta["tokenizer.ggml.tokens"] == ["a", "Ġb", "<|im_end|>", "中文", ""]
    assert meta["general.size"] == 2**40 + 3 and meta["general.offset"] == -7 and meta["general.flag"] is True


def test_the_builtin_model_matches_gguf_reader():
    from ditto_jax.loader import resolve_model_ref

    path = resolve_model_ref("smollm2").path
    meta, ref = read_gguf_metadata(path), _reference(path)
    assert meta == ref
    assert len(meta["tokenizer.ggml.tokens"]) == 49152


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(DittoError, match="no such GGUF file"):
        read_gguf_metadata(tmp_path / "missing.gguf")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(DittoError, match="empty"):
        read_gguf_metadata(empty)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(DittoError, match="no GGUF magic"):
        read_gguf_metadata(other)
    good = tmp_path / "good.gguf"
    _write(good, with_tensor=False)
    data = good.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DittoError, match=r"cut\.gguf: not a readable GGUF file \(metadata cut off"):
        read_gguf_metadata(cut)
    old = tmp_path / "v1.gguf"
    old.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(16))
    with pytest.raises(DittoError, match="GGUF version 1 is not supported"):
        read_gguf_metadata(old)


def test_a_string_that_is_not_utf8_names_its_key(tmp_path):
    path = tmp_path / "m.gguf"
    _write(path, with_tensor=False)
    data = bytearray(path.read_bytes())
    at = data.index("中文".encode())
    data[at] = 0xFF  # no longer UTF-8
    path.write_bytes(bytes(data))
    with pytest.raises(DittoError, match="'tokenizer.ggml.tokens' holds a string that is not UTF-8") as err:
        read_gguf_metadata(path)
    assert "\n" not in str(err.value)
