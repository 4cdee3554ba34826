"""The whole Ditto loop from one `ditto-data build` config: data stages, then train -> export -> eval.

Tiny settings on the embedded SmolLM2 (a few characters, short generations, 2
training updates, 1 judge sample, a permissive clean config): the point is that
every stage is real, every artifact meets its contract, and a rerun skips all.
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from data_tools.build import STAGES, load_config, plan_stages, run_build
from data_tools.loop import MODEL_STAGES, comparison_table
from ditto_native import DittoError

from test_build import PERMISSIVE_CLEAN

RESULT_FIELDS = {"messages", "consist_scores", "knowledge_scores", "reject_scores"}


def _loop_config(tmp: Path) -> Path:
    # SmolLM2 at a few tokens repeats itself; repetition checks off too, so rows survive to training.
    repetition_off = "dup_line_frac = false\ndup_line_char_frac = false\ntop_ngram_char_frac = false\ndup_ngram_char_frac = false\n"
    (tmp / "permissive.toml").write_text(PERMISSIVE_CLEAN + repetition_off)
    text = f"""
out_dir = "{tmp / 'out'}"

[characters]
sample = true
languages = ["en"]
per_category = 3
profile_chars = 400

[simulate]
model = "smollm2"
limit = 4
turns = 2
questions_per_pair = 2
concurrency = 4
seed = 0
max_query_tokens = 160
max_answer_tokens = 24
no_progress = true

[clean]
config = "permissive.toml"

[tokenize]
tokenizer = "smollm2"
seq_len = 256
heldout_fraction = 0.2

[train]
config = "cpu-demo"
set = {{ steps = 2, global_batch = 1, micro_batch = 1, save_every = 1, eval_every = 2, keep = 1, lr = 1e-4 }}

[export]
format = "hf"

[eval]
n = 2
turns = 2
judge_samples = 1
max_answer_tokens = 16
max_query_tokens = 160
judge_max_tokens = 24
"""
    path = tmp / "loop.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    config = _loop_config(tmp)
    first = run_build(config, log=lambda *a, **k: None)
    return tmp / "out", config, first


def test_every_stage_runs_and_meets_its_contract(looped):
    out, _, first = looped
    assert [r.name for r in first] == [*STAGES, *MODEL_STAGES]
    assert all(r.status == "ran" for r in first)
    # train: the run directory contract
    run = out / "train"
    assert (run / "config.toml").is_file() and (run / "loss.png").stat().st_size > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == [1, 2]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "time"):
        assert all(key in r for r in records), key
    assert (run / "checkpoints" / "2").is_dir()
    # export: an HF directory transformers can load
    model = out / "model"
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (model / name).is_file(), name
    assert list(model.glob("*.safetensors"))
    # eval: held-out sessions, both models' results, the report
    eval_dir = out / "eval"
    sessions = [json.loads(line) for line in (eval_dir / "eval.jsonl").read_text().splitlines()]
    trained = set(pl.read_parquet(out / "dialogues.parquet")["character_id"].to_list())
    assert sessions and all(s["meta"]["character_id"] not in trained for s in sessions)
    for label in ("seed", "tuned"):
        results = [json.loads(line) for line in (eval_dir / f"results-{label}.jsonl").read_text().splitlines()]
        assert len(results) == len(sessions)
        for r, s in zip(results, sessions):
            assert RESULT_FIELDS <= set(r)
            assert len(r["consist_scores"]) == len(s["prompts"])
    report = json.loads((eval_dir / "report.json").read_text())
    assert [m["name"] for m in report["wikiroleeval"]["models"]] == ["seed", "tuned"]
    assert (eval_dir / "report.png").stat().st_size > 0
    table = comparison_table(eval_dir)
    assert "consistency" in table and "assistant-leak rate" in table


def test_the_tuned_weights_differ_from_the_seed(looped):
    from ditto_jax.loader import load_model

    out, _, _ = looped
    seed, _ = load_model("smollm2")
    tuned, _ = load_model(str(out / "model"))
    import numpy as np

    a = np.asarray(seed.layers.wq_ldh[...])
    b = np.asarray(tuned.layers.wq_ldh[...])
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_second_run_skips_every_stage(looped):
    _, config, _ = looped
    second = run_build(config, log=lambda *a, **k: None)
    assert {r.name: r.status for r in second} == {s: "skipped" for s in (*STAGES, *MODEL_STAGES)}


def test_bad_model_sections_are_one_line(tmp_path):
    base = "out_dir = 'o'\n[characters]\nsample = true\n"
    cases = {
        "[train]\nconfg = 'cpu-demo'\n": "[train] unknown key(s) confg",
        "[export]\nformat = 'hf'\n": "[export] needs a [train] section",
        "[train]\n[export]\n[eval]\nn = 1\njudge_sampels = 2\n": "[eval] unknown key(s) judge_sampels",
    }
    for extra, message in cases.items():
        path = tmp_path / "c.toml"
        path.write_text(base + extra)
        with pytest.raises(DittoError) as exc:
            config, p = load_config(path)
            plan_stages(config, p)
        assert message in str(exc.value) and "\n" not in str(exc.value)
