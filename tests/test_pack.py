"""Packing invariants: whole conversations per row, positions restart per
segment, segment ids distinct and 0 only on padding, loss only on assistant
tokens of real segments."""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
from dialogue_fixtures import SHARED_TOKENIZERS, TEMPLATE_VARS, make_sessions, sessions_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ditto_native import SftPacker, is_heldout
from data_tools.tokenize import load_tokenizer_source


@functools.cache
def encoder():
    return load_tokenizer_source(SHARED_TOKENIZERS / "qwen2.5-instruct").encoder(TEMPLATE_VARS)


def rows_of(batch) -> dict[str, np.ndarray]:
    """A shard batch as [rows, seq_len] arrays."""
    seq_len = batch.schema.field("input_ids").type.list_size
    return {name: batch.column(name).flatten().to_numpy().reshape(-1, seq_len) for name in batch.schema.names}


def segments(rows: dict[str, np.ndarray]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Check the row invariants and return every segment's (ids, mask)."""
    out = []
    for ids, mask, seg, pos in zip(rows["input_ids"], rows["loss_mask"], rows["segment_ids"], rows["positions"]):
        real = seg > 0
        n_real = int(real.sum())
        # Padding only at the end, with zero mask and position.
        assert real[:n_real].all() and not real[n_real:].any()
        assert not mask[~real].any() and not pos[~real].any()
        # Segment ids 1, 2, ... in order: distinct within the row.
        bounds = np.flatnonzero(np.diff(seg[:n_real])) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [n_real]])
        assert list(seg[starts]) == list(range(1, len(starts) + 1))
        for a, b in zip(starts, ends):
            assert list(pos[a:b]) == list(range(b - a))  # positions restart per segment
            out.append((tuple(ids[a:b].tolist()), tuple(mask[a:b].tolist())))
    return out


pieces = st.sampled_from(["a", "b", "c", " ", "xyz", ".", "\n", "é", "你", "🎉", "<|im_end|>"])
texts = st.lists(pieces, max_size=60).map("".join)
turn = st.tuples(texts, texts)
session = st.tuples(st.lists(turn, min_size=1, max_size=4), st.one_of(st.none(), texts))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(session, min_size=1, max_size=25), st.integers(min_value=40, max_value=400), st.floats(0.0, 1.0))
def test_packing_conserves_whole_conversations(drawn, seq_len, heldout_fraction):
    sessions = [
        {
            "session_id": f"h{i}",
            "system": system,
            "messages": [{"role": r, "content": c} for u, a in turns for r, c in (("user", u), ("assistant", a))],
        }
        for i, (turns, system) in enumerate(drawn)
    ]
    table = sessions_table(sessions)
    enc = encoder().encode(table)
    full = list(zip(enc.column("input_ids").to_pylist(), enc.column("loss_mask").to_pylist()))
    assert all(ids is not None for ids, _ in full)

    packer = SftPacker(encoder(), seq_len=seq_len, overlong="drop", heldout_fraction=heldout_fraction)
    packer.add(table)
    train, heldout, stats = packer.finish()

    for split, batch in (("train", train), ("heldout", heldout)):
        want = Counter(
            (tuple(ids), tuple(mask))
            for s, (ids, mask) in zip(sessions, full)
            if len(ids) <= seq_len and is_heldout(s["session_id"], heldout_fraction) == (split == "heldout")
        )
        rows = rows_of(batch)
        got = segments(rows)
        # Every kept conversation is exactly one segment, never split.
        assert Counter(got) == want
        real = sum(len(ids) for ids, _ in got)
        assert stats[split]["real_tokens"] == real
        assert stats[split]["num_sessions"] == len(got)
        assert stats[split]["loss_tokens"] == int(rows["loss_mask"].sum())
        # Best fit leaves at most one row half empty.
        assert batch.num_rows <= 2 * real / seq_len + 1
    assert dict(stats["dropped"]).get("overlong", 0) == sum(len(ids) > seq_len for ids, _ in full)


def test_truncation_keeps_whole_turns():
    enc = encoder()
    sessions = make_sessions(30, seed=7, turns=6)
    table = sessions_table(sessions)
    full = enc.encode(table).column("input_ids").to_pylist()
    seq_len = 200
    packer = SftPacker(enc, seq_len=seq_len, overlong="truncate", heldout_fraction=0.0)
    packer.add(table)
    train, _, stats = packer.finish()
    got = segments(rows_of(train))
    end_id = enc_end_id()
    too_long = [ids for ids in full if len(ids) > seq_len]
    assert too_long, "the test needs over-long sessions"
    assert stats["truncated"] + dict(stats["dropped"]).get("overlong", 0) == len(too_long)
    by_prefix = Counter(tuple(ids) for ids in full)
    for ids, mask in got:
        if ids in by_prefix:
            continue
        # A cut session: a prefix of one full session ending on its end-of-turn token.
        assert ids[-1] == end_id and mask[-1] == 1
        assert any(f[: len(ids)] == list(ids) for f in too_long)
    assert sum(ids not in by_prefix for ids, _ in got) == stats["truncated"]


def enc_end_id() -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(SHARED_TOKENIZERS / "qwen2.5-instruct" / "tokenizer.json")).token_to_id("<|im_end|>")


def test_packer_rejects_bad_settings_and_reuse():
    with pytest.raises(ValueError, match="overlong"):
        SftPacker(encoder(), seq_len=16, overlong="squeeze")
    with pytest.raises(ValueError, match="seq_len"):
        SftPacker(encoder(), seq_len=0)
    packer = SftPacker(encoder(), seq_len=64)
    packer.finish()
    with pytest.raises(ValueError, match="finished"):
        packer.finish()
