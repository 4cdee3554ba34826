"""`ditto-data simulate` rejects bad input with one line and a non-zero exit, before any model loads."""
from __future__ import annotations

import pytest

from data_tools.cli import main
from simulate_characters import characters_frame, write_characters


@pytest.fixture
def chars(tmp_path):
    return write_characters(tmp_path / "characters.parquet")


def run(capsys, *args) -> tuple[int, str]:
    code = main(["simulate", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ditto-data simulate: error: ")
    return lines[0]


def test_missing_and_unreadable_inputs(capsys, tmp_path, chars):
    code, err = run(capsys, "--characters", tmp_path / "nope.parquet", "--out", tmp_path / "d.parquet", "--model", "smollm2")
    assert code == 2 and "nope.parquet" in one_line_error(err)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    code, err = run(capsys, "--characters", junk, "--out", tmp_path / "d.parquet", "--model", "smollm2")
    assert code == 2 and "junk.parquet: cannot read as Parquet" in one_line_error(err)
    no_label = tmp_path / "no_label.parquet"
    characters_frame().drop("label").write_parquet(no_label)
    code, err = run(capsys, "--characters", no_label, "--out", tmp_path / "d.parquet", "--model", "smollm2")
    assert code == 2 and "no_label.parquet: missing column(s) label" in one_line_error(err)
    empty = tmp_path / "empty.parquet"
    characters_frame().head(0).write_parquet(empty)
    code, err = run(capsys, "--characters", empty, "--out", tmp_path / "d.parquet", "--model", "smollm2")
    assert code == 2 and "no character rows" in one_line_error(err)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--turns", "0"], "--turns must be >= 1"),
        (["--max-answer-tokens", "0"], "--max-new-tokens must be >= 1"),  # an old name's error names the new one
        (["--questions-per-pair", "0"], "--questions-per-pair must be >= 1"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--endpoint", "http://127.0.0.1:9/v1"], "--endpoint needs --model-name"),
        (["--endpoint", "ftp://x", "--model-name", "m"], "--endpoint 'ftp://x'"),
        ([], "give --model REF, or --endpoint URL"),
        (["--model", "smollm2", "--model-name", "x"], "--model-name goes with --endpoint"),
    ],
)
def test_bad_options(capsys, tmp_path, chars, monkeypatch, extra, message):
    monkeypatch.delenv("DITTO_BASE_URL", raising=False)
    monkeypatch.delenv("DITTO_MODEL_NAME", raising=False)
    code, err = run(capsys, "--characters", chars, "--out", tmp_path / "d.parquet", *extra)
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "d.parquet").exists()


def test_bad_template_fails_before_the_model_loads(capsys, tmp_path, chars):
    code, err = run(capsys, "--characters", chars, "--out", tmp_path / "d.parquet", "--model", "smollm2",
                    "--query-template", tmp_path / "missing.jinja")
    assert code == 2 and "missing.jinja: cannot read query template" in one_line_error(err)


def test_endpoint_from_environment(capsys, tmp_path, chars, monkeypatch):
    monkeypatch.setenv("DITTO_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("DITTO_MODEL_NAME", raising=False)
    code, err = run(capsys, "--characters", chars, "--out", tmp_path / "d.parquet")
    assert code == 2 and "set DITTO_MODEL_NAME" in one_line_error(err)


def test_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--characters", "--out", "--model", "--endpoint", "--model-name", "--limit", "--turns",
                   "--questions-per-pair", "--concurrency", "--cache", "--seed", "DITTO_API_KEY"):
        assert option in text

