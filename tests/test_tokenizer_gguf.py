"""Our tokenizer built from GGUF metadata against transformers' GGUF tokenizer for the same file."""
from __future__ import annotations

import pytest
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from ditto_jax.tokenizer import load_tokenizer

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 'quoted', isn't it?",
    "chinese": "我爱北京天安门，天安门上太阳升。你好世界！",
    "emoji": "emoji 😀👍🏽 🇫🇷 family 👨‍👩‍👧 ❤️",
    "code": "def f(x):\n    return {'a': x**2}  # square\n\tpass\n",
    "digits": "1234567890 3.14159 1,000,000 a   1 007",
    "whitespace": "   leading  and \n\n\n trailing\t\t   \r\n",
    "special": "<|im_start|>user\nhi<|im_end|>\n<|endoftext|> <repo_name>x<|im_end|>",
    "accents": "Ünïcödé café naïve ß ﬁ Ω",
    "odd_spaces": "a\u00a0b\u200bc\u3000d",
}
# No lone surrogates: they are not encodable text.
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
# SmolLM2's vocabulary lacks the byte tokens for six ASCII controls and for the UTF-8
# lead bytes of planes 4+ (F1, F2): those bytes are dropped by both tokenizers, so
# only text without them can round-trip.
ROUND_TRIP_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), max_codepoint=0x3FFFF, exclude_characters="\x04\x06\x13\x14\x16\x1d"), max_size=60
)


@pytest.fixture(scope="module")
def bundle(smollm2_gguf):
    return load_tokenizer(smollm2_gguf)


@pytest.mark.parametrize("name", TEXTS)
def test_ids_match_transformers(bundle, hf_smollm2_tokenizer, name):
    text = TEXTS[name]
    ours = bundle.encode(text)
    assert ours == hf_smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert bundle.decode(ours, skip_special_tokens=False) == text


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT)
def test_any_text_matches_transformers(bundle, hf_smollm2_tokenizer, text):
    assert bundle.encode(text) == hf_smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]


@settings(max_examples=150, deadline=None)
@given(text=ROUND_TRIP_TEXT)
def test_decode_inverts_encode(bundle, text):
    assert bundle.decode(bundle.encode(text), skip_special_tokens=False) == text


def test_special_tokens(bundle):
    assert bundle.eos_token == "<|im_end|>" and bundle.tokenizer.token_to_id("<|im_end|>") == 2
    assert bundle.eos_token_ids[0] == 2
    assert bundle.pad_token_id == 2
    assert bundle.encode("<|im_end|>") == [2]
    assert bundle.encode("Hello")[0] != 1  # no BOS added
    assert bundle.decode(bundle.encode("<|im_start|>hi<|im_end|>")) == "hi"  # specials skipped by default
    assert bundle.name == "SmolLM2-135M-Instruct"
    assert "<|im_start|>" in bundle.chat_template.source


def test_saved_tokenizer_loads_in_transformers(bundle, hf_smollm2_tokenizer, tmp_path):
    bundle.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.sha256() == bundle.sha256()
    assert (again.eos_token, again.eos_token_ids, again.pad_token_id) == (bundle.eos_token, bundle.eos_token_ids, bundle.pad_token_id)
    assert again.chat_template.source == bundle.chat_template.source
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token == "<|im_end|>"
    for text in TEXTS.values():
        assert hf(text)["input_ids"] == bundle.encode(text)
    messages = [{"role": "user", "content": "Hi there"}]
    assert hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == hf_smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "You are Ada Lovelace."}, {"role": "user", "content": "What is 2+2? 你好 😀"}],
    [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "  Why?\n\n"},
    ],
]


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_encode_chat_matches_apply_chat_template(bundle, hf_smollm2_tokenizer, index, generation_prompt):
    messages = CONVERSATIONS[index]
    expected_text = hf_smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    assert bundle.render(messages, add_generation_prompt=generation_prompt) == expected_text
    expected = hf_smollm2_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    assert bundle.encode_chat(messages, add_generation_prompt=generation_prompt) == list(expected["input_ids"])
