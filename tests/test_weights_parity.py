"""Weight import/export parity with transformers on tiny random models (float32).

Each case builds a model with transformers, saves it with save_pretrained, loads
it with our loader and compares logits. Export is checked by loading our export
back (ours and transformers') and by a GGUF written in llama.cpp's layout.
"""
from __future__ import annotations

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from gguf import GGUFWriter

from ditto_jax.loader import load_model
from ditto_jax.tokenizer import load_tokenizer
from ditto_jax.weights.gguf import load_gguf
from ditto_jax.weights.hf import INDEX_FILE, export_hf, load_hf_dir

TOL = 1e-4
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
CASES = {
    "llama-tied": ("llama", dict(tie_word_embeddings=True)),
    "llama-untied": ("llama", dict(tie_word_embeddings=False)),
    "llama-untied-llama3-rope": ("llama", dict(tie_word_embeddings=False, rope_scaling=LLAMA3_ROPE)),
    "qwen2-bias": ("qwen2", dict(tie_word_embeddings=True)),
    "qwen3-qk-norm": ("qwen3", dict(tie_word_embeddings=True, head_dim=32)),
    "mistral": ("mistral", dict(tie_word_embeddings=False)),
}
TOKENS = np.random.RandomState(0).randint(0, 256, (2, 40))  # 40 > 64/8: spans llama3's scaled band


def torch_logits(model, tokens=TOKENS) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


def our_logits(model, tokens=TOKENS) -> np.ndarray:
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    logits, _ = model(jnp.asarray(tokens), jnp.asarray(positions))
    return np.asarray(logits)


def param_arrays(model) -> dict:
    return {"/".join(map(str, path)): np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("case", CASES)
def test_hf_import_matches_transformers(make_tiny_hf, case):
    model_type, overrides = CASES[case]
    torch_model, path = make_tiny_hf(model_type, **overrides)
    cfg, model = load_hf_dir(path)
    assert cfg.model_type == model_type
    assert (model.lm_head_dv is None) == overrides["tie_word_embeddings"]
    diff = np.abs(our_logits(model) - torch_logits(torch_model)).max()
    assert diff <= TOL, f"{case}: max abs logit diff {diff:.3g}"


def test_sharded_checkpoint(make_tiny_hf):
    torch_model, path = make_tiny_hf("llama", tie_word_embeddings=False, max_shard_size="40KB")
    assert (path / INDEX_FILE).is_file() and len(list(path.glob("model-*.safetensors"))) > 2
    _, model = load_hf_dir(path)
    assert np.abs(our_logits(model) - torch_logits(torch_model)).max() <= TOL


@pytest.mark.parametrize("case", ["llama-untied-llama3-rope", "qwen2-bias", "qwen3-qk-norm"])
def test_export_round_trip(make_tiny_hf, tmp_path, shared_dir, case):
    model_type, overrides = CASES[case]
    torch_model, path = make_tiny_hf(model_type, **overrides)
    _, model = load_hf_dir(path)
    bundle = load_tokenizer(shared_dir / "tokenizers" / "qwen2.5-instruct")  # any real tokenizer: files must load

    out = export_hf(model, bundle, tmp_path / "export")
    _, again = load_hf_dir(out)
    first, second = param_arrays(model), param_arrays(again)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    np.testing.assert_array_equal(torch_logits(exported), torch_logits(torch_model))
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "Round trip: 12345 你好 <|im_end|>"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == bundle.encode(text)


def test_export_sharded_bfloat16(make_tiny_hf, tmp_path):
    _, path = make_tiny_hf("qwen2", tie_word_embeddings=False)
    _, model = load_hf_dir(path)
    out = export_hf(model, None, tmp_path / "bf16", dtype="bfloat16", max_shard_bytes=30_000)
    index = json.loads((out / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _, again = load_hf_dir(out)
    first, second = param_arrays(model), param_arrays(again)
    for name in first:  # float32 -> bfloat16 -> float32 is exactly the bfloat16 rounding
        np.testing.assert_array_equal(first[name].astype(ml_dtypes.bfloat16).astype(np.float32), second[name], err_msg=name)
    exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert exported.dtype == torch.bfloat16


def test_load_model_hf_dir_with_tokenizer(make_tiny_hf, shared_dir):
    torch_model, path = make_tiny_hf("llama", tie_word_embeddings=True)
    load_tokenizer(shared_dir / "tokenizers" / "llama3-instruct").save(path)
    model, bundle = load_model(str(path))
    assert bundle.eos_token == "<|eot_id|>" and bundle.name == path.name
    assert np.abs(our_logits(model) - torch_logits(torch_model)).max() <= TOL


# ---- GGUF in llama.cpp's layout, from the same tiny models ------------------------------------


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert script's q/k row order (its interleaved RoPE), written out here as the oracle."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(torch_model, path, arch: str) -> None:
    cfg = torch_model.config
    sd = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    names = {
        "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight",
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    }
    for key, value in sd.items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if key.startswith("model.layers."):
            _, _, layer, rest = key.split(".", 3)
            name = f"blk.{layer}.{names[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":
                value = llama_cpp_permute(value, cfg.num_attention_heads)
            if arch == "llama" and rest == "self_attn.k_proj.weight":
                value = llama_cpp_permute(value, cfg.num_key_value_heads)
        else:
            name = names[key]
        writer.add_tensor(name, np.ascontiguousarray(value, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("case", ["llama-untied", "llama-tied", "qwen2-bias", "qwen3-qk-norm"])
def test_gguf_import_matches_transformers(make_tiny_hf, tmp_path, case):
    model_type, overrides = CASES[case]
    torch_model, _ = make_tiny_hf(model_type, **overrides)
    write_gguf(torch_model, tmp_path / "tiny.gguf", model_type)
    cfg, model, _ = load_gguf(tmp_path / "tiny.gguf")
    assert cfg.tie_word_embeddings == overrides["tie_word_embeddings"]
    diff = np.abs(our_logits(model) - torch_logits(torch_model)).max()
    assert diff <= TOL, f"{case}: max abs logit diff {diff:.3g}"


def test_bfloat16_load(make_tiny_hf):
    torch_model, path = make_tiny_hf("qwen2", tie_word_embeddings=True)
    _, model = load_hf_dir(path, dtype=jnp.bfloat16)
    assert model.embed_vd[...].dtype == jnp.bfloat16 and model.layers.bq_lh[...].dtype == jnp.bfloat16
    ref = torch_logits(torch_model)
    diff = np.abs(our_logits(model) - ref).max()
    assert diff <= 0.05 * np.abs(ref).max(), f"bfloat16 max abs logit diff {diff:.3g}"
