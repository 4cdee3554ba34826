"""`ditto-data build`: the four stages from one config, skipping what is current."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ditto_native import DittoError

from data_tools.build import STAGES, default_config_path, format_summary, language_summary, run_build

DIALOGUE_COLUMNS = {
    "session_id", "character_id", "lang", "system", "messages", "turn_types", "rejection_labels",
    "question_sources", "evidence", "finish_reasons", "simulator", "seed",
}
SHARD_COLUMNS = ["input_ids", "loss_mask", "segment_ids", "positions"]


# Answers capped at a few tokens end with finish_reason "length"; the build test is
# about the pipeline, not SmolLM2's quality, so the checks that would judge that are off.
PERMISSIVE_CLEAN = "truncation_reasons = false\nrefusal_window_chars = false\nidentity_break = false\nmin_script_ratio = false\n"


def _write_config(tmp: Path, *, seq_len: int = 512, clean_config: str | None = None) -> Path:
    if clean_config is None:
        clean_config = str(tmp / "permissive.toml")
        Path(clean_config).write_text(PERMISSIVE_CLEAN)
    clean = f'config = "{clean_config}"'
    text = f"""
out_dir = "{tmp / 'out'}"

[characters]
sample = true
languages = ["en"]
per_category = 1
profile_chars = 400

[simulate]
model = "smollm2"
limit = 2
turns = 2
questions_per_pair = 2
concurrency = 4
seed = 0
max_query_tokens = 96
max_answer_tokens = 24
no_progress = true

[clean]
{clean}

[tokenize]
tokenizer = "smollm2"
seq_len = {seq_len}
heldout_fraction = 0.5
"""
    path = tmp / "ditto.toml"
    path.write_text(text)
    return path


def _statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    config = _write_config(tmp)
    first = run_build(config, log=lambda *a, **k: None)
    return tmp, config, first


def test_first_run_produces_every_contract(built):
    tmp, _, first = built
    out = tmp / "out"
    assert _statuses(first) == {s: "ran" for s in STAGES}

    chars = pl.read_parquet(out / "characters.parquet")
    assert chars.height == 2 and set(chars["category"]) == {"human", "fictional"} and set(chars["lang"]) == {"en"}

    dialogues = pl.read_parquet(out / "dialogues.parquet")
    assert DIALOGUE_COLUMNS <= set(dialogues.columns)
    assert dialogues.height == 2
    for row in dialogues.iter_rows(named=True):
        assert len(row["messages"]) == 4  # 2 turns exactly
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * 2
        assert len(row["turn_types"]) == len(row["rejection_labels"]) == len(row["finish_reasons"]) == 2
        assert row["system"].startswith("You are ")

    clean = pl.read_parquet(out / "clean.parquet")
    quarantine = pl.read_parquet(out / "quarantine.parquet")
    report = json.loads((out / "clean.report.json").read_text())
    assert report["sessions"]["in"] == 2
    assert report["sessions"]["clean"] == clean.height
    assert report["turns"]["in"] == report["turns"]["clean"] + report["turns"]["quarantined"]
    assert {"reason", "level", "turn_index", "detail"} <= set(quarantine.columns)

    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest["seq_len"] == 512
    rows = 0
    for split in ("train", "heldout"):
        files = sorted((out / "shards" / split).glob("*.parquet"))
        if files:
            table = pl.concat([pl.read_parquet(f) for f in files])
            assert table.columns == SHARD_COLUMNS
            rows += table.height
        rows_in_manifest = manifest["splits"][split]["num_rows"]
        assert (table.height if files else 0) == rows_in_manifest
    assert rows >= 1
    assert first[-1].rows == rows
    summary = format_summary(first)
    for stage in STAGES:
        assert stage in summary


def test_language_summary(built):
    tmp, _, _ = built
    out = tmp / "out"
    text = language_summary(out)
    header, *rows = text.splitlines()
    for column in ("sessions", "turns", "contrastive", "paired (simulated)", "evidence verified", "trimmed", "dropped turns by reason"):
        assert column in header
    [en] = rows
    clean = pl.read_parquet(out / "clean.parquet")
    report = json.loads((out / "dialogues.report.json").read_text())["by_lang"]["en"]
    fields = en.split()
    assert fields[0] == "en" and int(fields[1]) == clean.height
    assert int(fields[2]) == int(clean["messages"].list.len().sum()) // 2
    assert int(fields[3]) == int((clean["turn_types"].explode() == "contrastive").sum())
    contrastive = report["contrastive_paired"] + report["contrastive_fallback"]
    assert contrastive > 0 and f"({report['contrastive_paired']}/{contrastive})" in en
    assert f"({report['evidence_verified']}/{report['evidence_checked']})" in en


def _toml(config: dict) -> str:
    """The few TOML shapes a build config uses: strings, numbers, booleans, lists, inline tables."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    lines = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines += [f"[{section}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(3600)  # a real SmolLM2 build of 4 characters: ~5 minutes on 2 idle cores, far more on a loaded machine
def test_the_shipped_default_yields_english_and_chinese(tmp_path):
    """The shipped default build (smaller: 2 characters per language, 2 turns) cleans sessions in both languages."""
    import tomllib

    shipped_path = default_config_path()
    config = tomllib.loads(shipped_path.read_text())
    config["out_dir"] = str(tmp_path / "out")
    for model_stage in ("train", "export", "eval"):  # the whole loop is tests/test_loop.py's
        config.pop(model_stage, None)
    config["simulate"].update(limit=2, turns=2, no_progress=True)
    config["clean"]["config"] = str(shipped_path.parent / config["clean"]["config"])
    path = tmp_path / "ditto.toml"
    path.write_text(_toml(config))
    run_build(path, log=lambda *a, **k: None)
    dialogues = pl.read_parquet(tmp_path / "out" / "dialogues.parquet")
    # A character whose query replies never parse has no session (no_questions); both languages still have some.
    simulated = dict(dialogues.group_by("lang").len().rows())
    assert set(simulated) == {"en", "zh"} and all(1 <= n <= 2 for n in simulated.values())
    clean = pl.read_parquet(tmp_path / "out" / "clean.parquet")
    assert set(clean["lang"]) == {"en", "zh"}
    assert "length" not in clean["finish_reasons"].explode().to_list()  # cut answers are trimmed or dropped


def test_second_run_skips_everything(built):
    _, config, _ = built
    again = run_build(config, log=lambda *a, **k: None)
    assert _statuses(again) == {s: "skipped" for s in STAGES}


def test_settings_change_reruns_only_later_stages(built):
    tmp, _, first = built
    config = _write_config(tmp, seq_len=1024)
    changed = run_build(config, log=lambda *a, **k: None)
    assert _statuses(changed) == {"characters": "skipped", "simulate": "skipped", "clean": "skipped", "tokenize": "ran"}
    manifest = json.loads((tmp / "out" / "shards" / "manifest.json").read_text())
    assert manifest["seq_len"] == 1024


def test_zero_rows_gives_a_clear_message(built):
    tmp, _, _ = built
    strict = tmp / "strict.toml"
    # Every answer is "too short" under this threshold, so clean keeps nothing.
    strict.write_text(PERMISSIVE_CLEAN + "min_answer_chars = 100000\n")
    config = _write_config(tmp, clean_config=str(strict))
    with pytest.raises(DittoError, match=r"stage clean produced 0 rows"):
        run_build(config, log=lambda *a, **k: None)


def test_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[characters]\nsample = true\n[nonsense]\nx = 1\n")
    with pytest.raises(DittoError, match="unknown section"):
        run_build(bad, log=lambda *a, **k: None)
    bad.write_text("[characters\n")
    with pytest.raises(DittoError, match="invalid TOML"):
        run_build(bad, log=lambda *a, **k: None)
