"""A tiny model, tokenizer and packed shards in the contract format, for the trainer tests.

    model_dir = write_tiny_model(tmp / "model")            # HF directory: config, weights, tokenizer
    write_tiny_shards(tmp / "shards", model_dir, train_rows=16, heldout_rows=4, seq_len=32)
    result = run_cli(["train", "--config", str(cfg_path), "--set", "steps=3"], devices=8)

The tokenizer is a word-level vocabulary with ChatML specials, small enough for
the 2-layer, hidden-64 test model (vocab 256); shards are written directly in
the shard contract (several segments per row, padding, assistant-only loss).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = (
    "the a of to and in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come made may part hello name "
    "born where what who captain ship sea storm island king queen castle dragon sword magic forest river mountain "
    "answer question yes know think sorry cannot beyond knowledge era story"
).split()
SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"]
VOCAB = 256  # model vocabulary; the tokenizer uses its first len(SPECIALS + WORDS) ids


def tiny_bundle():
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel

    from ditto_jax.chat_template import ChatTemplate
    from ditto_jax.tokenizer import TokenizerBundle

    words = list(dict.fromkeys(SPECIALS + WORDS + ["user", "assistant", "system", "\n", ",", ".", "?", "!"]))
    vocab = {w: i for i, w in enumerate(words)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    from tokenizers import AddedToken

    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    eos = vocab["<|im_end|>"]
    return TokenizerBundle(tokenizer, ChatTemplate(CHATML, eos_token="<|im_end|>"), None, "<|im_end|>", (eos,), vocab["<pad>"], "tiny")


def write_tiny_model(folder: Path, *, seed: int = 0, max_positions: int = 512) -> Path:
    """A random 2-layer llama (hidden 64, vocab 256) with the tiny tokenizer, as a Hugging Face directory."""
    from ditto_jax.config import tiny_config
    from ditto_jax.model import init_model
    from ditto_jax.weights.hf import export_hf

    cfg = tiny_config(vocab_size=VOCAB, max_position_embeddings=max_positions, eos_token_id=2)
    export_hf(init_model(cfg, seed=seed), tiny_bundle(), folder)
    return Path(folder)


def packed_rows(rng: np.random.Generator, rows: int, seq_len: int, vocab: int) -> dict[str, np.ndarray]:
    """Rows of 1-3 segments each: random prompt tokens, then assistant tokens carrying the loss."""
    cols = {c: np.zeros((rows, seq_len), np.int32) for c in ("input_ids", "segment_ids", "positions")}
    cols["loss_mask"] = np.zeros((rows, seq_len), np.uint8)
    for r in range(rows):
        t, seg = 0, 1
        for _ in range(int(rng.integers(1, 4))):
            length = int(rng.integers(6, seq_len // 2 + 1))
            if t + length > seq_len:
                break
            cols["input_ids"][r, t:t + length] = rng.integers(len(SPECIALS), vocab, length)
            cols["segment_ids"][r, t:t + length] = seg
            cols["positions"][r, t:t + length] = np.arange(length)
            cols["loss_mask"][r, t + length // 2:t + length] = 1  # the "assistant" half
            t, seg = t + length, seg + 1
        if r % 3 == 2 and t == seq_len:  # keep some padding in the set
            cols["segment_ids"][r, -3:] = 0
            cols["loss_mask"][r, -3:] = 0
            cols["input_ids"][r, -3:] = 0
            cols["positions"][r, -3:] = 0
    return cols


def write_split(folder: Path, cols: dict[str, np.ndarray], *, rows_per_file: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, seq_len = cols["input_ids"].shape
    for i, start in enumerate(range(0, max(n, 1), rows_per_file)):
        part = {}
        for c, dtype in (("input_ids", pa.int32()), ("loss_mask", pa.uint8()), ("segment_ids", pa.int32()), ("positions", pa.int32())):
            values = cols[c][start:start + rows_per_file]
            part[c] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), dtype), seq_len)
        pq.write_table(pa.table(part), folder / f"part-{i:05d}.parquet")


def write_tiny_shards(out: Path, model_dir: Path, *, train_rows: int = 16, heldout_rows: int = 4, seq_len: int = 32, seed: int = 0,
                      vocab: int = 64) -> Path:
    """train/, heldout/ and manifest.json for the tokenizer in `model_dir` (token ids below `vocab`)."""
    from ditto_jax.tokenizer import tokenizer_from_hf_dir

    bundle = tokenizer_from_hf_dir(model_dir)
    rng = np.random.default_rng(seed)
    out = Path(out)
    write_split(out / "train", packed_rows(rng, train_rows, seq_len, vocab))
    write_split(out / "heldout", packed_rows(rng, heldout_rows, seq_len, vocab))
    manifest = {
        "seq_len": seq_len,
        "tokenizer": {"name": bundle.name, "sha256": bundle.sha256()},
        "chat_template_sha256": bundle.chat_template.sha256,
        "template_vars": {},
        "system_policy": "native",
        "splits": {"train": {"num_rows": train_rows}, "heldout": {"num_rows": heldout_rows}},
        "dropped": {},
        "sources": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def write_config(path: Path, **keys) -> Path:
    """A train config TOML with `keys` (nested dicts become tables)."""
    from ditto_jax.train.config import config_from_dict

    cfg = config_from_dict(keys, source=str(path))
    path.write_text(cfg.to_toml(), encoding="utf-8")
    return path


def cli_env(devices: int = 1, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DITTO_TEST_")}
    env.update(
        JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache")),
    )
    env.update(extra)
    return env


def run_cli(args: list[str], *, devices: int = 1, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """`python -m ditto_jax.cli ARGS` with `devices` simulated CPU devices."""
    return subprocess.run([sys.executable, "-m", "ditto_jax.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=cli_env(devices, **env))


def start_cli(args: list[str], *, devices: int = 1, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ditto_jax.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=cli_env(devices, **env))


def losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    from ditto_jax.train.metrics import read_metrics

    return {r["step"]: r[key] for r in read_metrics(run_dir) if r.get(key) is not None}
