"""SmolLM2 from its GGUF: our float32 model against transformers loading the same file.

A missed q/k un-permute still gives fluent text, so logits are compared directly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from ditto_jax.model import KVCache

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant who writes vivid stories."},
    {"role": "user", "content": "Write a short story about a dragon who learns to bake bread."},
]
NEW_TOKENS = 32


def chat_ids(hf_tokenizer) -> list[int]:
    encoded = hf_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def our_greedy(model, prompt: list[int], steps: int, eos: tuple[int, ...]) -> list[int]:
    # split/merge + jax.jit: nnx.jit re-walks the module graph on every call, which
    # measured ~0.5 s per SmolLM2 decode step here against ~0.1 s for this.
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tokens, positions, cache, index):
        logits, cache = nnx.merge(graphdef, state)(tokens, positions, cache=cache, cache_index=index)
        return logits[:, -1], cache

    cache = KVCache.zeros(model.cfg, 1, len(prompt) + steps)
    logits, cache = step(state, jnp.asarray([prompt]), jnp.arange(len(prompt))[None], cache, 0)
    out: list[int] = []
    for i in range(steps):
        nxt = int(jnp.argmax(logits[0]))
        out.append(nxt)
        if nxt in eos:
            break
        pos = len(prompt) + i
        logits, cache = step(state, jnp.asarray([[nxt]]), jnp.asarray([[pos]]), cache, pos)
    return out


def test_config_matches_transformers(smollm2, hf_smollm2_model):
    model, _ = smollm2
    cfg, ref = model.cfg, hf_smollm2_model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size) == (ref.num_hidden_layers, ref.hidden_size, ref.intermediate_size)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (9, 3, 64, 49152)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 100000.0


def test_logits_match_transformers(smollm2, hf_smollm2_model, hf_smollm2_tokenizer):
    model, bundle = smollm2
    ids = chat_ids(hf_smollm2_tokenizer)
    assert ids == bundle.encode_chat(MESSAGES)
    assert ids[0] == 1  # <|im_start|>, written by the template; no BOS added
    with torch.no_grad():
        ref = hf_smollm2_model(torch.tensor([ids])).logits.numpy()
    ours, _ = model(jnp.asarray([ids]), jnp.arange(len(ids))[None])
    diff = np.abs(np.asarray(ours) - ref).max()
    assert diff <= 1e-3, f"max abs logit diff {diff:.3g}"


def test_greedy_tokens_match_transformers(smollm2, hf_smollm2_model, hf_smollm2_tokenizer):
    model, bundle = smollm2
    ids = chat_ids(hf_smollm2_tokenizer)
    prompt = torch.tensor([ids])
    with torch.no_grad():
        ref = hf_smollm2_model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS, do_sample=False,
            eos_token_id=list(bundle.eos_token_ids), pad_token_id=bundle.pad_token_id,
        )[0, len(ids):].tolist()
    ours = our_greedy(model, ids, NEW_TOKENS, bundle.eos_token_ids)
    assert len(ref) == NEW_TOKENS  # the prompt asks for a story: no early stop
    assert ours == ref, (bundle.decode(ours), bundle.decode(ref))


def test_export_loads_in_transformers(smollm2, hf_smollm2_model, hf_smollm2_tokenizer, tmp_path):
    import transformers

    from ditto_jax.weights.hf import export_hf

    model, bundle = smollm2
    out = export_hf(model, bundle, tmp_path / "smollm2-hf")
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = bundle.encode_chat(MESSAGES)
    with torch.no_grad():
        ours_in_torch = exported(torch.tensor([ids])).logits.numpy()
        reference = hf_smollm2_model(torch.tensor([ids])).logits.numpy()
    diff = np.abs(ours_in_torch - reference).max()
    assert diff <= 1e-5, f"export vs transformers' own GGUF load: max abs logit diff {diff:.3g}"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert list(tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)["input_ids"]) == ids
    assert exported.config.eos_token_id == 2 and exported.config.tie_word_embeddings
