"""Tokenizer bundles from real Hugging Face tokenizer folders, against transformers."""
from __future__ import annotations

import pytest
import transformers

from ditto_jax.tokenizer import load_tokenizer
from ditto_native import DittoError

FOLDERS = {
    # folder: (eos_token, end-of-turn token generation must stop on)
    "qwen2.5-instruct": ("<|im_end|>", "<|im_end|>"),
    "qwen3": ("<|im_end|>", "<|im_end|>"),
    "llama3-instruct": ("<|eot_id|>", "<|eot_id|>"),
    "mistral-instruct": ("</s>", "</s>"),
}
TEXT = "Hello, world! 你好 12345  spaces\n<|im_end|> </s> <|eot_id|> 😀"


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_matches_transformers(shared_dir, tmp_path, folder):
    path = shared_dir / "tokenizers" / folder
    bundle = load_tokenizer(path)
    hf = transformers.AutoTokenizer.from_pretrained(path)
    eos, end_of_turn = FOLDERS[folder]
    assert bundle.eos_token == eos == hf.eos_token
    assert bundle.eos_token_ids[0] == hf.eos_token_id
    assert bundle.tokenizer.token_to_id(end_of_turn) in bundle.eos_token_ids
    assert bundle.chat_template.source == hf.chat_template
    assert bundle.encode(TEXT) == hf(TEXT, add_special_tokens=False)["input_ids"]
    assert bundle.name == folder
    # A fixed date keeps Llama 3's "Today Date" line reproducible; other templates ignore it.
    messages = [{"role": "system", "content": "You are Alice."}, {"role": "user", "content": "Hi 你好"}]
    expected = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, date_string="26 Jul 2024")
    assert bundle.encode_chat(messages, date_string="26 Jul 2024") == list(expected["input_ids"])

    bundle.save(tmp_path)
    saved = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert saved(TEXT, add_special_tokens=False)["input_ids"] == bundle.encode(TEXT)
    assert saved.chat_template == hf.chat_template and saved.eos_token == eos
    assert load_tokenizer(tmp_path).sha256() == bundle.sha256()


def test_chat_template_jinja_file_wins(shared_dir, tmp_path):
    load_tokenizer(shared_dir / "tokenizers" / "qwen3").save(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    assert load_tokenizer(tmp_path).chat_template.source == "{{ messages[0]['content'] }}"


def test_eos_not_in_vocabulary(shared_dir, tmp_path):
    bundle = load_tokenizer(shared_dir / "tokenizers" / "qwen3")
    bundle.save(tmp_path)
    config = (tmp_path / "tokenizer_config.json").read_text(encoding="utf-8").replace('"<|im_end|>"', '"<|nope|>"')
    (tmp_path / "tokenizer_config.json").write_text(config, encoding="utf-8")
    with pytest.raises(DittoError, match=r"eos_token '<\|nope\|>' is not in the vocabulary"):
        load_tokenizer(tmp_path)
