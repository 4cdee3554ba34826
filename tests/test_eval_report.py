"""`ditto-eval report`: every number and interval recomputed here, independently, from the results files."""
from __future__ import annotations

import json
import random
import zlib

import numpy as np
import pytest

from data_tools.eval.cli import main
from eval_fixtures import eval_record, one_line_error, write_jsonl

B = 200
SEED = 5
METRIC_KEYS = ("consistency", "knowledge", "rejection", "leak", "identity_break", "refusal_contrastive", "refusal_role_specific")


def results_records(model: str, seed: int, n: int = 12, *, with_flags: bool = True) -> list[dict]:
    """Results records with random (seeded) judgements, nulls included, en and zh."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        turns = rng.randint(2, 5)
        labels = [rng.randint(0, 1) for _ in range(turns)]
        record = eval_record(f"Role {i}", "en" if i % 3 else "zh", [f"q{i}.{t}?" for t in range(turns)], labels,
                             others=("Other A", "Other B", "Other C"))
        record.update(
            model=model, judge="judge-x",
            consist_scores=[rng.choice([0.0, 1 / 3, 2 / 3, 1.0]) for _ in labels],
            knowledge_scores=[rng.choice([None, 2.0, 5.5, 7.0, 10.0]) for _ in labels],
            reject_scores=[rng.choice([None, 0, 1, 1]) for _ in labels],
        )
        if with_flags:
            record.update(
                leak_flags=[rng.random() < 0.2 for _ in labels],
                identity_break_flags=[rng.random() < 0.1 for _ in labels],
                refusal_flags=[rng.random() < 0.5 for _ in labels],
            )
        records.append(record)
    return records


def per_turn(record: dict, key: str) -> list[float]:
    """The values a metric counts in one session, written out directly from the metric definitions."""
    labels = record["rejection_labels"]
    if key == "consistency":
        return [v for v in record["consist_scores"] if v is not None]
    if key == "knowledge":
        return [v for v in record["knowledge_scores"] if v is not None]
    if key == "rejection":
        return [float(p == t) for p, t in zip(record["reject_scores"], labels) if p is not None]
    if "leak_flags" not in record:
        return []
    if key == "leak":
        return [float(f) for f in record["leak_flags"]]
    if key == "identity_break":
        return [float(f) for f in record["identity_break_flags"]]
    wanted = 1 if key == "refusal_contrastive" else 0
    return [float(f) for f, t in zip(record["refusal_flags"], labels) if t == wanted]


def pooled(records: list[dict], key: str) -> float | None:
    values = [v for r in records for v in per_turn(r, key)]
    return sum(values) / len(values) if values else None


def boot(records: list[dict], key: str, split: str) -> list[float]:
    rng = np.random.default_rng([SEED, zlib.crc32(split.encode())])
    idx = rng.integers(0, len(records), size=(B, len(records)))
    out = []
    for row in idx:
        value = pooled([records[i] for i in row], key)
        out.append(np.nan if value is None else value)
    return out


def pct(values) -> tuple[float, float] | None:
    values = np.array(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def split_of(records: list[dict], split: str) -> list[dict]:
    return [r for r in records if split == "All" or r["meta"]["lang"] == split]


def test_report_numbers_and_intervals(tmp_path, capsys):
    base = results_records("base-model", 1)
    tuned = [dict(r) for r in results_records("tuned-model", 2)]
    for b, t in zip(base, tuned):  # the same sessions as base, other judgements: paired differences
        t.update({k: b[k] for k in ("system", "prompts", "rejection_labels", "meta", "role_consist_cands", "evidence")})
        n = len(b["prompts"])
        for k in ("consist_scores", "knowledge_scores", "reject_scores", "leak_flags", "identity_break_flags", "refusal_flags"):
            t[k] = (t[k] * 5)[:n]
    other = results_records("paper-model", 3, n=9, with_flags=False)  # other sessions, no flags
    files = [write_jsonl(tmp_path / f"{name}.jsonl", recs) for name, recs in (("base", base), ("tuned", tuned), ("other", other))]
    out = tmp_path / "report.md"
    assert main(["report", *map(str, files), "--out", str(out), "--seed", str(SEED), "--resamples", str(B)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    text = out.read_text()
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "(report.png)" in text

    section = data["wikiroleeval"]
    assert [m["name"] for m in section["models"]] == ["base-model", "tuned-model", "paper-model"]
    assert list(section["splits"]) == ["All", "en", "zh"]
    checked = 0
    for split, content in section["splits"].items():
        parts = [split_of(r, split) for r in (base, tuned, other)]
        for key in METRIC_KEYS:
            rows = content["metrics"][key]
            for m, (records, row) in enumerate(zip(parts, rows)):
                expected = pooled(records, key)
                if expected is None:
                    assert row["value"] is None and row["lo"] is None
                    continue
                assert row["value"] == pytest.approx(expected, abs=1e-12)
                assert [row["lo"], row["hi"]] == pytest.approx(list(pct(boot(records, key, split))), abs=1e-12)
                assert row["counted"] == sum(len(per_turn(r, key)) for r in records)
                checked += 1
                if m == 0:
                    assert row["delta"] is None
                    continue
                base_value = pooled(parts[0], key)
                assert row["delta"]["value"] == pytest.approx(expected - base_value, abs=1e-12)
                if m == 1:  # paired: same resamples
                    diff = np.array(boot(records, key, split)) - np.array(boot(parts[0], key, split))
                    assert [row["delta"]["lo"], row["delta"]["hi"]] == pytest.approx(list(pct(diff)), abs=1e-12)
                else:  # different sessions: no interval
                    assert row["delta"]["lo"] is None
        # The Markdown table shows the same numbers, rounded.
        consistency = content["metrics"]["consistency"][1]
        assert f"{consistency['value']:.3f} [{consistency['lo']:.3f}, {consistency['hi']:.3f}]" in text
        delta = consistency["delta"]
        assert f"{delta['value']:+.3f} [{delta['lo']:+.3f}, {delta['hi']:+.3f}]" in text
        counts = content["counts"][0]
        assert counts["rejection_null"] == sum(v is None for r in parts[0] for v in r["reject_scores"])
    assert checked > 40
    # The judge-free metrics of a file without flags are n/a, not zero.
    assert section["splits"]["All"]["metrics"]["leak"][2]["value"] is None
    assert "### zh" in text and "tuned-model − base-model" in text


def test_mtbench_section(tmp_path):
    def mt(model, scores):
        return [{"question_id": 91 + i, "category": "roleplay", "turns": ["a", "b"], "answers": ["x", "y"],
                 "turn_scores": [s, s], "score": s, "model": model, "judge": "j"} for i, s in enumerate(scores)]

    a = write_jsonl(tmp_path / "a.jsonl", mt("A", [5.0, 6.0, None, 8.0]))
    b = write_jsonl(tmp_path / "b.jsonl", mt("B", [7.0, 6.5, 9.0, 8.0]))
    out = tmp_path / "r.md"
    assert main(["report", str(a), str(b), "--out", str(out), "--resamples", "100"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["mtbench"]["models"]
    assert rows[0]["value"] == pytest.approx(19 / 3) and rows[1]["value"] == pytest.approx(30.5 / 4)
    rng = np.random.default_rng([0, zlib.crc32(b"mtbench")])
    idx = rng.integers(0, 4, size=(100, 4))
    sa = [[5.0, 6.0, None, 8.0][i] for i in range(4)]
    draws = []
    for row in idx:
        vals = [sa[i] for i in row if sa[i] is not None]
        draws.append(sum(vals) / len(vals) if vals else np.nan)
    assert [rows[0]["lo"], rows[0]["hi"]] == pytest.approx(list(pct(draws)))
    assert rows[1]["delta"]["value"] == pytest.approx(30.5 / 4 - 19 / 3) and rows[1]["delta"]["lo"] is not None
    assert "## MT-Bench roleplay" in out.read_text()


def test_bad_results_input(tmp_path, capsys):
    plain = write_jsonl(tmp_path / "eval.jsonl", [eval_record("Confucius", "en", ["q?"], [0])])
    assert main(["report", str(plain), "--out", str(tmp_path / "r.md")]) == 2
    assert f"{plain}: line 1: not a results file" in one_line_error(capsys.readouterr().err, "report")

    records = results_records("m", 1, n=3)
    records[2]["knowledge_scores"] = records[2]["knowledge_scores"][:-1]
    bad = write_jsonl(tmp_path / "bad.jsonl", records)
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    assert f"{bad}: line 3: field 'knowledge_scores' must be a list of" in one_line_error(capsys.readouterr().err, "report")

    records = results_records("m", 1, n=3)
    del records[1]["rejection_labels"]
    bad = write_jsonl(tmp_path / "bad2.jsonl", records)
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    assert f"{bad}: line 2: missing field 'rejection_labels'" in one_line_error(capsys.readouterr().err, "report")
