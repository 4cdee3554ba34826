"""`ditto-eval report` with vote files: win rates, intervals and Bradley–Terry scores recomputed here, independently."""
from __future__ import annotations

import json
import math
import random
import zlib

import numpy as np
import pytest

from data_tools.eval.cli import main
from eval_fixtures import one_line_error, write_jsonl

B = 300
SEED = 7
STRENGTH = {"seed": 1.0, "tuned": 2.5, "other": 0.6}  # true Bradley–Terry strengths of the simulated voters


def simulated_votes(n_conversations: int, models: list[str], rng: random.Random, *, tie_rate: float = 0.2) -> list[dict]:
    """Votes as the page writes them: conversations of 1-4 turns, sides in random order."""
    records = []
    for c in range(n_conversations):
        a, b = rng.sample(models, 2)
        for turn in range(1, rng.randint(1, 4) + 1):
            left, right = (a, b) if rng.random() < 0.5 else (b, a)
            if rng.random() < tie_rate:
                choice = "tie"
            else:
                p_left = STRENGTH[left] / (STRENGTH[left] + STRENGTH[right])
                choice = "a" if rng.random() < p_left else "b"
            records.append({
                "timestamp": f"2026-12-03T18:{c % 60:02d}:00.000Z", "character": "Isaac Newton", "character_id": "Q935",
                "language": "en" if c % 2 else "zh", "conversation": f"c{c}", "turn": turn,
                "model_a": left, "model_b": right, "choice": choice,
            })
    return records


def first_score(record: dict, first: str) -> float:
    """The first model's score in one vote, written out from the definition."""
    if record["choice"] == "tie":
        return 0.5
    shown = record["model_a"] if record["choice"] == "a" else record["model_b"]
    return 1.0 if shown == first else 0.0


def percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, by hand."""
    s = sorted(values)
    h = (len(s) - 1) * q / 100
    lo = math.floor(h)
    return s[lo] + (h - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])


def expected_pair(records: list[dict], first: str, second: str) -> dict:
    mine = [r for r in records if {r["model_a"], r["model_b"]} == {first, second}]
    scores = [first_score(r, first) for r in mine]
    conversations: dict[str, list[float]] = {}
    for r, s in zip(mine, scores):
        conversations.setdefault(r["conversation"], []).append(s)
    units = list(conversations.values())
    rng = np.random.default_rng([SEED, zlib.crc32(f"votes:{first} vs {second}".encode())])
    idx = rng.integers(0, len(units), size=(B, len(units)))
    draws = []
    for row in idx:
        picked = [s for i in row for s in units[i]]
        draws.append(sum(picked) / len(picked))
    return {
        "votes": len(mine), "first_wins": scores.count(1.0), "second_wins": scores.count(0.0), "ties": scores.count(0.5),
        "conversations": len(units), "win_rate": sum(scores) / len(scores),
        "lo": percentile(draws, 2.5), "hi": percentile(draws, 97.5),
    }


def run_report(tmp_path, *paths, resamples=B):
    out = tmp_path / "report.md"
    assert main(["report", *map(str, paths), "--out", str(out), "--seed", str(SEED), "--resamples", str(resamples)]) == 0
    return json.loads(out.with_suffix(".json").read_text()), out.read_text(), out


def test_two_models_win_rate_and_interval(tmp_path):
    records = simulated_votes(60, ["seed", "tuned"], random.Random(1))
    # Split over two files: the report pools them.
    files = [write_jsonl(tmp_path / "votes1.jsonl", records[:70]), write_jsonl(tmp_path / "votes2.jsonl", records[70:])]
    data, text, out = run_report(tmp_path, *files)
    section = data["votes"]
    assert section["votes"] == len(records) and section["bradley_terry"] is None  # two models: no BT table
    [pair] = section["pairs"]
    assert (pair["first"], pair["second"]) == ("seed", "tuned")
    want = expected_pair(records, "seed", "tuned")
    for key in ("votes", "first_wins", "second_wins", "ties", "conversations"):
        assert pair[key] == want[key], key
    for key in ("win_rate", "lo", "hi"):
        assert pair[key] == pytest.approx(want[key], abs=1e-12), key
    assert pair["lo"] <= pair["win_rate"] <= pair["hi"]
    # tuned is 2.5x as strong: seed's win rate is well below a half.
    assert pair["hi"] < 0.5
    assert f"{pair['win_rate']:.3f} [{pair['lo']:.3f}, {pair['hi']:.3f}]" in text
    assert "## Blind human votes" in text
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_interval_width_matches_the_normal_approximation(tmp_path):
    """With one vote per conversation the bootstrap is the plain one: width ~ 2 * 1.96 * sd / sqrt(n)."""
    rng = random.Random(3)
    records = [
        {"model_a": "x", "model_b": "y", "choice": rng.choice(["a", "a", "b", "tie"]), "turn": 1, "conversation": f"c{i}"}
        for i in range(400)
    ]
    data, _, _ = run_report(tmp_path, write_jsonl(tmp_path / "v.jsonl", records), resamples=2000)
    [pair] = data["votes"]["pairs"]
    scores = [first_score(r, "x") for r in records]
    mean = sum(scores) / len(scores)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    assert pair["hi"] - pair["lo"] == pytest.approx(2 * 1.96 * sd / math.sqrt(len(scores)), rel=0.12)


def test_three_models_bradley_terry(tmp_path):
    records = simulated_votes(400, list(STRENGTH), random.Random(2))
    data, text, _ = run_report(tmp_path, write_jsonl(tmp_path / "votes.jsonl", records))
    section = data["votes"]
    assert [(p["first"], p["second"]) for p in section["pairs"]] == [("other", "seed"), ("other", "tuned"), ("seed", "tuned")]
    for pair in section["pairs"]:
        want = expected_pair(records, pair["first"], pair["second"])
        assert pair["win_rate"] == pytest.approx(want["win_rate"], abs=1e-12)
        assert [pair["lo"], pair["hi"]] == pytest.approx([want["lo"], want["hi"]], abs=1e-12)

    bt = {row["model"]: row for row in section["bradley_terry"]}
    assert [row["model"] for row in section["bradley_terry"]] == ["tuned", "seed", "other"]  # the true order
    p = {m: row["strength"] for m, row in bt.items()}
    # The fitted strengths solve the likelihood equations (ties half a win each way, one virtual tie
    # with a reference of strength 1 per model), written out here from the model.
    for m in p:
        games = [r for r in records if m in (r["model_a"], r["model_b"])]
        won = sum(first_score(r, m) for r in games) + 0.5
        expected = sum(p[m] / (p[m] + p[r["model_b"] if r["model_a"] == m else r["model_a"]]) for r in games) + p[m] / (p[m] + 1)
        assert won == pytest.approx(expected, rel=1e-9), m
        assert bt[m]["elo"] == pytest.approx(1000 + 400 * math.log10(p[m]))
        assert bt[m]["votes"] == len(games)
    # 400 conversations recover the true strength ratios roughly.
    assert p["tuned"] / p["seed"] == pytest.approx(STRENGTH["tuned"] / STRENGTH["seed"], rel=0.35)
    assert p["seed"] / p["other"] == pytest.approx(STRENGTH["seed"] / STRENGTH["other"], rel=0.35)
    assert "Bradley–Terry" in text and f"| tuned | {bt['tuned']['elo']:.0f} |" in text


def test_a_model_that_never_wins_keeps_a_finite_score(tmp_path):
    records = [{"model_a": "good", "model_b": "bad", "choice": "a", "turn": 1, "conversation": None}] * 5
    records += [{"model_a": "good", "model_b": "mid", "choice": "tie", "turn": 1}] * 3
    data, _, _ = run_report(tmp_path, write_jsonl(tmp_path / "v.jsonl", records))
    elo = {row["model"]: row["elo"] for row in data["votes"]["bradley_terry"]}
    assert all(math.isfinite(v) for v in elo.values())
    assert elo["good"] > elo["mid"] > elo["bad"]
    pair = next(p for p in data["votes"]["pairs"] if p["second"] == "good")
    assert (pair["first"], pair["win_rate"], pair["conversations"]) == ("bad", 0.0, 5)  # no id: each vote its own unit


def test_votes_beside_results_files(tmp_path):
    from test_eval_report import results_records

    results = write_jsonl(tmp_path / "base.jsonl", results_records("base-model", 1, n=4))
    records = simulated_votes(5, ["seed", "tuned"], random.Random(4))
    for r in records:  # the results file's model is one of the voted ones
        r["model_a"], r["model_b"] = (("base-model" if m == "seed" else m) for m in (r["model_a"], r["model_b"]))
    votes = write_jsonl(tmp_path / "votes.jsonl", records)
    data, text, _ = run_report(tmp_path, results, votes)
    assert set(data) >= {"wikiroleeval", "votes"}
    assert text.index("## WikiRoleEval") < text.index("## Blind human votes")


@pytest.mark.parametrize(
    "record, message",
    [
        ({"model_a": "x", "model_b": "y", "choice": "left"}, "line 2: field 'choice' must be one of a, b, tie"),
        ({"model_a": "x", "model_b": "x", "choice": "a"}, "line 2: field 'model_b' names the same model as 'model_a'"),
        ({"model_a": "x", "model_b": 3, "choice": "a"}, "line 2: field 'model_b' must be a model name"),
        ({"model_a": "x", "model_b": "y", "choice": "a", "conversation": 5}, "line 2: field 'conversation' must be a string"),
    ],
)
def test_bad_vote_files(tmp_path, capsys, record, message):
    path = write_jsonl(tmp_path / "votes.jsonl", [{"model_a": "x", "model_b": "y", "choice": "tie"}, record])
    assert main(["report", str(path), "--out", str(tmp_path / "r.md")]) == 2
    assert f"{path}: {message}" in one_line_error(capsys.readouterr().err, "report")
