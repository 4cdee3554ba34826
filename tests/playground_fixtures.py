"""Test material for the playground: a small characters table and tiny chat models that `ditto-jax serve` can load."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CHARACTERS = [
    # character_id, lang, label, description, aliases, sitelinks
    ("Q935", "en", "Isaac Newton", "English physicist and mathematician", ["Newton", "Sir Isaac Newton"], 250),
    ("Q935", "zh", "艾萨克·牛顿", "英国物理学家、数学家", ["牛顿"], 250),
    ("Q7259", "en", "Ada Lovelace", "English mathematician and writer", ["Augusta Ada King"], 120),
    ("Q1057", "en", "Newton Knight", "American farmer and soldier", [], 20),
    ("Q29564", "zh", "孙悟空", "", ["美猴王", "齐天大圣"], 90),
    ("sample:mystery", "en", "Mystery Guest", "", [], 0),
]

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ("<|im_start|>", "<|im_end|>")
VOCAB = 256 + len(SPECIALS)


def write_characters(path: Path, rows=CHARACTERS) -> Path:
    table = pa.table({
        "character_id": [r[0] for r in rows], "lang": [r[1] for r in rows], "category": ["human"] * len(rows),
        "label": [r[2] for r in rows], "description": [r[3] for r in rows],
        "aliases": pa.array([r[4] for r in rows], type=pa.list_(pa.string())), "sitelinks": [r[5] for r in rows],
    })
    pq.write_table(table, path)
    return path


def byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return [table[b] for b in range(256)]


def write_byte_tokenizer(folder: Path) -> None:
    """A byte-level tokenizer (one token per byte, no merges) with ChatML specials: any text encodes."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    vocab = {ch: i for i, ch in enumerate(byte_alphabet())}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
              "bos_token": None, "chat_template": CHATML}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def make_tiny_chat_model(make_tiny_hf, seed: int) -> Path:
    """A random 2-layer llama with a byte tokenizer whose greedy replies are printable ASCII.

    The output rows of every other token are zeroed, so their logit is 0
    while the largest of the 95 printable tokens' random logits is well above
    it: greedy decoding writes visible text and never ends early.
    """
    import torch

    model, folder = make_tiny_hf("llama", seed=seed, vocab_size=VOCAB, tie_word_embeddings=False, max_position_embeddings=4096,
                                 bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1)
    printable = set(range(0x20, 0x7F))
    with torch.no_grad():
        for token in range(VOCAB):
            if token not in printable:
                model.lm_head.weight[token].zero_()
    model.save_pretrained(folder)
    write_byte_tokenizer(folder)
    return folder
