"""The evaluation-file loader: both field placements, both candidate forms, and one-line errors naming line and field."""
from __future__ import annotations

import pytest

from data_tools.eval.cli import main
from data_tools.eval.records import Candidate, load_sessions
from eval_fixtures import eval_record, one_line_error, write_jsonl


def test_both_placements_and_both_candidate_forms_read_the_same(tmp_path):
    prompts, labels = ["Who taught you?", "What is a smartphone?"], [0, 1]
    variants = {
        (place, bracketed): eval_record("Confucius", "en", prompts, labels, place=place, bracketed=bracketed)
        for place in ("top", "meta")
        for bracketed in (True, False)
    }
    loaded = {}
    for (place, bracketed), record in variants.items():
        (session,) = load_sessions(write_jsonl(tmp_path / f"{place}-{bracketed}.jsonl", [record]))
        loaded[(place, bracketed)] = session
        assert session.prompts == tuple(prompts)
        assert session.rejection_labels == (0, 1)
        assert session.evidence == (("Confucius fact 0",), ("Confucius fact 1",))
        assert (session.label, session.lang, session.summary) == ("Confucius", "en", "Confucius is well known.")
        assert [c.name for c in session.candidates] == ["Confucius", "Ada Lovelace", "Sherlock Holmes"]
        assert session.true_candidate.name == "Confucius"
        assert session.candidates[0].description == ("someone called Confucius" if bracketed else "")
    # The placement does not change the session's identity (seeds and report pairing use it).
    assert len({s.key for s in loaded.values()}) == 1


def test_candidate_forms():
    assert Candidate.parse("[Sun Wukong] the Monkey King") == Candidate("Sun Wukong", "the Monkey King")
    assert Candidate.parse("Sun Wukong") == Candidate("Sun Wukong", "")
    assert Candidate.parse("[孙悟空]《西游记》主角") == Candidate("孙悟空", "《西游记》主角")


def test_official_spellings(tmp_path):
    """The official README's "rejection labels" (with a space) and one evidence string per turn are accepted."""
    record = eval_record("Confucius", "zh", ["你是谁？"], [0])
    record["rejection labels"] = record.pop("rejection_labels")
    record["evidence"] = ["- 出生于鲁国\n- 著有《论语》"]
    (session,) = load_sessions(write_jsonl(tmp_path / "e.jsonl", [record]))
    assert session.rejection_labels == (0,) and session.evidence == (("- 出生于鲁国\n- 著有《论语》",),)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("rejection_labels"), "line 2: missing field 'rejection_labels'"),
        (lambda r: r.pop("role_consist_cands"), "line 2: missing field 'role_consist_cands'"),
        (lambda r: r.pop("evidence"), "line 2: missing field 'evidence'"),
        (lambda r: r["meta"].pop("label"), "line 2: missing field 'label'"),
        (lambda r: r.update(rejection_labels=[0]), "line 2: field 'rejection_labels' must be a list of 2 values"),
        (lambda r: r.update(rejection_labels=[0, 2]), "line 2: field 'rejection_labels' must be a list of 2 values, each 0 or 1"),
        (lambda r: r.update(role_consist_cands=["[Ada Lovelace] x", "Confucius"]), "line 2: field 'role_consist_cands' does not name the role 'Sherlock Holmes'"),
        (lambda r: r.update(prompts=[]), "line 2: field 'prompts' must be a non-empty list"),
    ],
)
def test_bad_record_names_line_and_field(tmp_path, capsys, change, message):
    good = eval_record("Confucius", "en", ["Q1?", "Q2?"], [0, 1])
    bad = eval_record("Sherlock Holmes", "en", ["Q1?", "Q2?"], [0, 1])
    change(bad)
    path = write_jsonl(tmp_path / "eval.jsonl", [good, bad])
    code = main(["run", "--eval", str(path), "--endpoint", "http://127.0.0.1:9/v1", "--model-name", "m",
                 "--judge-endpoint", "http://127.0.0.1:9/v1", "--judge-model-name", "j", "--out", str(tmp_path / "r.jsonl")])
    line = one_line_error(capsys.readouterr().err, "run")
    assert code == 2 and f"{path}: {message}" in line


def test_not_json(tmp_path, capsys):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"system": "x"}\nnot json\n', encoding="utf-8")
    code = main(["run", "--eval", str(path), "--model", "smollm2", "--judge", "smollm2", "--out", str(tmp_path / "r.jsonl")])
    assert code == 2 and f"{path}: line 2: not valid JSON" in one_line_error(capsys.readouterr().err, "run")
