"""Benchmark: render + tokenize + loss-mask + pack, Rust path vs baselines.

    .venv/bin/python bench/sft_tokenize.py [--tokenizer smollm2] [--sessions 4000] [--seq-len 2048] [--quick]

On the same Ditto-shaped corpus (system prompt + 5 question/answer turns of
realistic lengths, made up deterministically), it measures conversations/s
and tokens/s of:

- ours, kernel: `data_tools.tokenize.pack_sessions` (Rust, rayon): render,
  tokenize, mask, split and pack, called in-process;
- ours, whole command: `ditto-data tokenize` as a fresh process on the same
  sessions in a Parquet file (start-up, tokenizer loading, reading, packing,
  writing the shards and the manifest);
- (a) transformers in a Python loop: `apply_chat_template` once per
  conversation, one tokenizer call with offsets (the ids equal
  `apply_chat_template(tokenize=True)`), and the prefix renders that locate
  each assistant turn for the mask. Run on a subset because it is slow;
- (b) the floor: raw `tokenizers` `encode_batch_fast` on the already-rendered
  strings (rendering not timed), no masks, no packing.

Targets: >= 10x (a) for the whole command, >= 0.7x (b) for the kernel;
packing efficiency >= 95% real tokens.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.tokenize import TokenizeConfig, load_tokenizer_source, pack_sessions

WORDS = (
    "the of and to in was he his that with for as on by at from an which were had first this who their "
    "after also is war city time people new later family during king army him when years into born "
    "between other only two most where would over against she her government before early three life "
    "known many could some world great about what work university being since under its returned "
    "London Paris detective novel poem science empire river mountain letter friend battle court music"
).split()
NAMES = ["Ada Lovelace", "Sherlock Holmes", "Marie Curie", "Sun Wukong", "Napoleon Bonaparte", "Elizabeth Bennet"]


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + rng.choice([".", "?", "!", "."])


def corpus(n: int, seed: int = 0) -> list[dict]:
    """Ditto-shaped sessions: `You are {label}, {description}` + 5 turns; questions of
    one sentence, answers of 2-8 sentences (about 40-250 tokens)."""
    rng = random.Random(seed)
    sessions = []
    for i in range(n):
        name = rng.choice(NAMES)
        messages = []
        for _ in range(5):
            messages.append({"role": "user", "content": sentence(rng, 6, 25)})
            messages.append({"role": "assistant", "content": " ".join(sentence(rng, 8, 30) for _ in range(rng.randint(2, 8)))})
        sessions.append({"session_id": f"bench-{i}", "system": f"You are {name}, {sentence(rng, 5, 12)}", "messages": messages})
    return sessions


def as_table(sessions: list[dict]) -> pa.Table:
    return pa.table(
        {
            "session_id": [s["session_id"] for s in sessions],
            "system": [s["system"] for s in sessions],
            "messages": pa.array([s["messages"] for s in sessions], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        }
    )


def chat_messages(session: dict, system_policy: str) -> list[dict]:
    msgs = [dict(m) for m in session["messages"]]
    if system_policy == "native":
        msgs.insert(0, {"role": "system", "content": session["system"]})
    else:
        msgs[0]["content"] = f"{session['system']}\n\n{msgs[0]['content']}"
    return msgs


def hf_tokenizer(ref: str):
    from transformers import AutoTokenizer

    if Path(ref).is_dir():
        return AutoTokenizer.from_pretrained(ref)
    from ditto_jax.loader import resolve_model_ref

    path = resolve_model_ref(ref).path
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def transformers_loop(hf, sessions: list[dict], policy: str, template_vars: dict) -> int:
    """Baseline (a): ids + prefix-render masks per conversation. Returns tokens."""
    specials = [t.content for t in hf.added_tokens_decoder.values() if t.special]
    tokens = 0
    for s in sessions:
        msgs = chat_messages(s, policy)
        full = hf.apply_chat_template(msgs, tokenize=False, **template_vars)
        enc = hf(full, add_special_tokens=False, return_offsets_mapping=True)
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                start = len(hf.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True, **template_vars))
                through = hf.apply_chat_template(msgs[: i + 1], tokenize=False, **template_vars)
                turn = through[start:]
                end = max((turn.rfind(t) + len(t) for t in specials if t in turn), default=len(turn))
                spans.append((start, start + end))
        mask = [int(any(a < y and b > x for x, y in spans)) for a, b in enc["offset_mapping"]]
        tokens += len(mask)
    return tokens


def tokenize_command(table: pa.Table, tokenizer: str, seq_len: int, template_vars: dict) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of `ditto-data tokenize` as a fresh process."""
    with tempfile.TemporaryDirectory(prefix="ditto-bench-tokenize-") as tmp:
        src = Path(tmp) / "clean.parquet"
        pq.write_table(table, src)
        cmd = [sys.executable, "-m", "data_tools.cli", "tokenize", "--in", str(src), "--tokenizer", tokenizer,
               "--seq-len", str(seq_len), "--out", str(Path(tmp) / "shards"), "--heldout-fraction", "0"]
        cmd += [a for k, v in template_vars.items() for a in ("--template-var", f"{k}={v}")]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        took = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"ditto-data tokenize failed: {done.stderr.strip()}")
    return took, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="smollm2", help="tokenizer reference (default: smollm2)")
    ap.add_argument("--sessions", type=int, default=4000)
    ap.add_argument("--baseline-sessions", type=int, default=200, help="subset for the transformers loop")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pack-seq-lens", default="4096,8192", help="further row lengths to report packing efficiency for")
    ap.add_argument("--quick", action="store_true", help="a small run to check the bench works (400 sessions, 1 round)")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.baseline_sessions, args.repeats = min(args.sessions, 400), min(args.baseline_sessions, 20), 1
        args.pack_seq_lens = ""

    sessions = corpus(args.sessions)
    table = as_table(sessions)
    source = load_tokenizer_source(args.tokenizer)
    template_vars = {"date_string": "26 Jul 2024"}
    config = TokenizeConfig(seq_len=args.seq_len, heldout_fraction=0.0, template_vars=template_vars)
    print(
        f"tokenizer {source.name}, {args.sessions} sessions ({args.baseline_sessions} for (a)), seq_len {args.seq_len}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    encoder = source.encoder(template_vars)
    from ditto_jax.chat_template import ChatTemplate
    from tokenizers import Tokenizer

    template = ChatTemplate(source.chat_template, bos_token=source.bos_token, eos_token=source.eos_token)
    texts = [template.render(chat_messages(s, encoder.system_policy), **template_vars) for s in sessions]
    raw = Tokenizer.from_str(source.tokenizer_json)
    hf = hf_tokenizer(args.tokenizer)
    subset = sessions[: args.baseline_sessions]

    # The three paths take turns, best of `repeats` rounds each, so that a
    # busy shared machine slows them alike rather than one of them.
    ours_s = floor_s = hf_s = cmd_s = cmd_cpu = float("inf")
    for _ in range(args.repeats):
        wall, cpu = tokenize_command(table, args.tokenizer, args.seq_len, template_vars)
        cmd_s, cmd_cpu = min(cmd_s, wall), min(cmd_cpu, cpu)
        t, shards = timed(lambda: pack_sessions(table.to_batches(2048), source, config, progress=False))
        ours_s = min(ours_s, t)
        t, encs = timed(lambda: raw.encode_batch_fast(texts, add_special_tokens=False))
        floor_s = min(floor_s, t)
        t, hf_tokens = timed(lambda: transformers_loop(hf, subset, encoder.system_policy, template_vars))
        hf_s = min(hf_s, t)
    stats = shards.stats
    real = stats["train"]["real_tokens"]
    floor_tokens = sum(len(e.ids) for e in encs)
    assert floor_tokens == real, (floor_tokens, real)  # same tokens, so the rates compare
    ours_cps, ours_tps = args.sessions / ours_s, real / ours_s
    floor_cps, floor_tps = args.sessions / floor_s, floor_tokens / floor_s
    hf_cps, hf_tps = len(subset) / hf_s, hf_tokens / hf_s

    cmd_cps, cmd_tps = args.sessions / cmd_s, real / cmd_s

    print(f"{'path':<50} {'seconds':>8} {'conv/s':>10} {'tokens/s':>12}")
    print(f"{'ditto-data tokenize, whole command (fresh process)':<50} {cmd_s:>8.2f} {cmd_cps:>10.0f} {cmd_tps:>12.0f}")
    print(f"{'ours, kernel (render+tokenize+mask+pack, Rust)':<50} {ours_s:>8.2f} {ours_cps:>10.0f} {ours_tps:>12.0f}")
    print(f"{'(a) transformers loop + prefix-render masks':<50} {hf_s:>8.2f} {hf_cps:>10.0f} {hf_tps:>12.0f}")
    print(f"{'(b) tokenizers encode_batch_fast (floor)':<50} {floor_s:>8.2f} {floor_cps:>10.0f} {floor_tps:>12.0f}")
    print(f"whole-command ratio vs (a): {cmd_tps / hf_tps:.1f}x (target >= 10x); the command used {cmd_cpu:.2f} s CPU (all threads, best round)")
    print(f"kernel ratio vs (a): {ours_tps / hf_tps:.1f}x; vs (b): {ours_tps / floor_tps:.2f}x (target >= 0.7x)")
    for seq_len in [args.seq_len, *(int(x) for x in args.pack_seq_lens.split(",") if x)]:
        if seq_len != args.seq_len:
            cfg = TokenizeConfig(seq_len=seq_len, heldout_fraction=0.0, template_vars=template_vars)
            stats = pack_sessions(table.to_batches(2048), source, cfg, progress=False).stats
        real, rows = stats["train"]["real_tokens"], stats["train"]["num_rows"]
        print(f"packing at seq_len {seq_len}: {stats['train']['num_sessions']} sessions, {real} tokens in {rows} rows: "
              f"{real / (rows * seq_len):.2%} real tokens (target >= 95%); truncated {stats['truncated']}, dropped {stats['dropped'] or 'none'}")


if __name__ == "__main__":
    main()
