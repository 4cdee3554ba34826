"""`ditto-eval build`: held-out characters only, right labels, evidence and identity candidates."""
from __future__ import annotations

import json
import re

import polars as pl
import pytest

from data_tools.characters.sample import load_sample
from data_tools.eval.build import BuildSettings, build_sessions, held_out, training_ids
from data_tools.eval.cli import main
from data_tools.eval.prompts import EvalPrompts
from data_tools.eval.records import Candidate, session_from_record
from data_tools.llm.cache import CallCache
from data_tools.llm.runner import CallRunner
from data_tools.simulation.roles import roles_from_table
from eval_fixtures import ScriptedBackend, one_line_error

IDS = ["Q4604", "Q1048", "Q7259", "Q937", "Q692", "sample:sun-wukong", "Q635", "Q913"]
TRAINED = ["Q692", "Q913"]  # in the training dialogues in English only: their Chinese rows go too


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return load_sample(["en", "zh"]).filter(pl.col("character_id").is_in(IDS))


def question_writer(request) -> str:
    """Valid query JSON naming the role the prompt is about, so each question's origin can be checked.

    Question k cites the role's k-th fact as its evidence, copied from the prompt, so it verifies against the material.
    """
    prompt = request.messages[-1][1]
    label = re.search(r"Material about (.+?)(?: \(|:)|关于(.+?)(?:（|的资料)", prompt)
    name = label.group(1) or label.group(2)
    facts = [line[2:].strip() for line in prompt.splitlines() if line.startswith("- ")]
    return json.dumps({"questions": [{"question": f"Tell me, {name}, about your life {k}?", "evidence": [facts[k]]} for k in range(3)]})


def test_builder_excludes_training_characters_and_labels_turns(table, tmp_path):
    train = tmp_path / "dialogues.parquet"
    pl.DataFrame({"character_id": TRAINED, "lang": ["en", "en"]}).write_parquet(train)
    everyone = roles_from_table(table, source="characters")
    chosen = held_out(everyone, training_ids([train]), 6)
    assert not {r.character_id for r in chosen} & set(TRAINED)
    assert sorted(r.lang for r in chosen) == ["en"] * 3 + ["zh"] * 3  # languages taken in turn

    settings = BuildSettings(n=6, turns=4, questions_per_pair=3, seed=3)
    backend = ScriptedBackend(question_writer, "writer")
    with CallCache(tmp_path / "calls.sqlite") as cache:
        records, report = build_sessions(everyone, chosen, CallRunner(backend, cache), EvalPrompts(), settings)
        again, _ = build_sessions(everyone, chosen, CallRunner(backend, cache), EvalPrompts(), settings)
    assert again == records  # seeded and cached: the same file twice
    assert len(records) == 6 and not report.dropped
    by_id = {(r.character_id, r.lang): r for r in everyone}
    for n, record in enumerate(records):
        session = session_from_record(record, "built", n + 1)  # the loader accepts what the builder writes
        meta = record["meta"]
        role = by_id[(meta["character_id"], meta["lang"])]
        assert record["system"] == role.system_message()
        assert len(record["prompts"]) == 4 and set(meta["turn_types"]) == {"role_specific", "contrastive"}
        facts = list(role.facts[:5])
        for kind, label, source, prompt, evidence in zip(
            meta["turn_types"], record["rejection_labels"], meta["question_sources"], record["prompts"], record["evidence"]
        ):
            writer = re.search(r"Tell me, (.+?), about", prompt).group(1)
            if kind == "role_specific":
                assert (label, source, writer) == (0, role.character_id, role.label)
                cited = role.facts[int(prompt[-2])]  # the question's own evidence first, then the profile facts
                assert evidence == [cited] + [f for f in facts if f != cited]
            else:
                other = by_id[(source, role.lang)]
                assert (label, writer) == (1, other.label) and source != role.character_id
                assert evidence == facts
        assert all(p in ("paired", "fallback") for p, k in zip(meta["pairings"], meta["turn_types"]) if k == "contrastive")
        # 4 candidates: the role and 3 distractors of its language, none trained on or not, all distinct
        cands = [Candidate.parse(c) for c in record["role_consist_cands"]]
        assert len(cands) == 4 and len({c.name for c in cands}) == 4
        assert Candidate(role.label, role.description) in cands and session.true_candidate.name == role.label
        same_lang = {(r.label, r.description) for r in everyone if r.lang == role.lang and r.character_id != role.character_id}
        assert all((c.name, c.description) in same_lang for c in cands if c.name != role.label)
        assert meta["summary"] and role.profile.startswith(meta["summary"][:50])
    # The true role does not always sit in the same place.
    positions = {[Candidate.parse(c).name for c in r["role_consist_cands"]].index(r["meta"]["label"]) for r in records}
    assert len(positions) > 1


def test_build_rejects_bad_input(table, tmp_path, capsys):
    chars = tmp_path / "characters.parquet"
    table.write_parquet(chars)
    everything = tmp_path / "all.parquet"
    pl.DataFrame({"character_id": IDS}).write_parquet(everything)
    no_id = tmp_path / "no_id.parquet"
    pl.DataFrame({"session": ["x"]}).write_parquet(no_id)
    base = ["build", "--characters", str(chars), "--model", "smollm2", "--out", str(tmp_path / "e.jsonl")]
    cases = [
        (["--exclude-from", str(everything)], "no held-out characters"),
        (["--exclude-from", str(no_id)], f"{no_id}: missing column 'character_id'"),
        (["--exclude-from", str(tmp_path / "missing.parquet")], "missing.parquet"),
        (["--exclude-from", str(everything), "--n", "0"], "--n must be >= 1"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        assert message in one_line_error(capsys.readouterr().err, "build")
    few = tmp_path / "few.parquet"
    table.filter(pl.col("lang") == "en").head(3).write_parquet(few)
    settings = BuildSettings(n=3, turns=2)
    everyone = roles_from_table(pl.read_parquet(few), source="few")
    with CallCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(Exception, match="language en: only 2 other characters"):
            build_sessions(everyone, everyone, CallRunner(ScriptedBackend(question_writer), cache), EvalPrompts(), settings)
