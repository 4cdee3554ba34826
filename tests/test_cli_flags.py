"""One flag name per idea across `ditto-data`, `ditto-jax` and `ditto-eval`; old names stay as aliases.

Only the argparse parsers are built (no command runs), so this is cheap. The
naming table is in `ditto_jax.cli_common`'s docstring.
"""
from __future__ import annotations

import pytest

from data_tools import cli as data_cli
from data_tools.eval import cli as eval_cli
from ditto_jax import cli as jax_cli

# The flags each command needs before anything else parses.
REQUIRED = {
    (data_cli, "simulate"): ["--characters", "c.parquet", "--out", "d.parquet"],
    (eval_cli, "build"): ["--characters", "c.parquet", "--exclude-from", "d.parquet", "--out", "e.jsonl"],
    (eval_cli, "run"): ["--eval", "e.jsonl", "--out", "r.jsonl"],
    (eval_cli, "mtbench"): ["--questions", "q.jsonl", "--out", "m.jsonl"],
    (jax_cli, "serve"): ["--model", "smollm2"],
    (jax_cli, "generate"): ["--model", "smollm2", "--prompt", "hi"],
    (jax_cli, "chat"): ["--model", "smollm2"],
}

# (cli, command, the one name, old names kept as aliases, dest the code and build configs read)
NAMES = [
    (data_cli, "simulate", "--max-new-tokens", ["--max-answer-tokens"], "max_answer_tokens"),
    (data_cli, "simulate", "--max-query-tokens", [], "max_query_tokens"),
    (data_cli, "simulate", "--concurrency", [], "concurrency"),
    (eval_cli, "build", "--max-query-tokens", [], "max_query_tokens"),
    (eval_cli, "build", "--concurrency", [], "concurrency"),
    *[(eval_cli, cmd, new, old, dest) for cmd in ("run", "mtbench") for new, old, dest in (
        ("--max-new-tokens", ["--max-answer-tokens"], "max_answer_tokens"),
        ("--judge-max-new-tokens", ["--judge-max-tokens"], "judge_max_tokens"),
        ("--concurrency", [], "concurrency"),
        ("--judge-concurrency", [], "judge_concurrency"),
    )],
    (jax_cli, "serve", "--max-new-tokens", ["--default-max-tokens"], "default_max_tokens"),
    (jax_cli, "serve", "--concurrency", ["--max-batch"], "max_batch"),
    (jax_cli, "generate", "--max-new-tokens", [], "max_new_tokens"),
    (jax_cli, "chat", "--max-new-tokens", [], "max_new_tokens"),
]


def _parse(cli, command: str, extra: list[str]):
    argv = [command, *REQUIRED[(cli, command)], *extra]
    return cli.build_parser(argv).parse_args(argv)


def _options(cli, command: str) -> dict[str, object]:
    """Option string -> its action, for one subcommand."""
    parser = cli.build_parser([command])
    (sub_action,) = [a for a in parser._actions if getattr(a, "choices", None) and command in a.choices]
    return dict(sub_action.choices[command]._option_string_actions)


def _id(case) -> str:
    cli, command, new, *_ = case
    return f"{cli.PROG} {command} {new}"


@pytest.mark.parametrize("case", NAMES, ids=_id)
def test_new_name_and_old_aliases_set_the_same_value(case):
    cli, command, new, old, dest = case
    default = getattr(_parse(cli, command, []), dest)
    assert default != 37  # so that 37 below comes from the flag
    for name in (new, *old):
        assert getattr(_parse(cli, command, [name, "37"]), dest) == 37, name


@pytest.mark.parametrize("case", NAMES, ids=_id)
def test_the_one_name_comes_first_in_help(case):
    cli, command, new, old, _ = case
    action = _options(cli, command)[new]
    assert list(action.option_strings) == [new, *old]


def test_the_same_idea_has_the_same_name_in_every_command():
    reply_limit = {(cli.PROG, cmd) for cli, cmd, new, _, _ in NAMES if new == "--max-new-tokens"}
    in_flight = {(cli.PROG, cmd) for cli, cmd, new, _, _ in NAMES if new == "--concurrency"}
    assert reply_limit == {("ditto-data", "simulate"), ("ditto-eval", "run"), ("ditto-eval", "mtbench"),
                           ("ditto-jax", "serve"), ("ditto-jax", "generate"), ("ditto-jax", "chat")}
    assert in_flight == {("ditto-data", "simulate"), ("ditto-eval", "build"), ("ditto-eval", "run"),
                         ("ditto-eval", "mtbench"), ("ditto-jax", "serve")}
    # No command keeps an old spelling as a flag of its own (one that is not an alias of the new name).
    for cli, command in REQUIRED:
        options = _options(cli, command)
        for old in ("--max-answer-tokens", "--default-max-tokens", "--max-batch", "--judge-max-tokens"):
            if old in options:
                assert options[old].option_strings[0] != old, (cli.PROG, command, old)


# The flags of the CLI table in DESIGN.md, which users and outside checks rely on.
DESIGN_TABLE = {
    (data_cli, "characters"): "--wikidata --wikipedia --sample --languages --per-category --out",
    (data_cli, "simulate"): "--characters --out --model --endpoint --model-name --limit --turns --questions-per-pair --concurrency --cache --seed",
    (data_cli, "clean"): "--in --out --quarantine --report --config",
    (data_cli, "tokenize"): "--in --tokenizer --seq-len --out --overlong --heldout-fraction",
    (data_cli, "build"): "--config",
    (jax_cli, "generate"): "--model --system --prompt --max-new-tokens --temperature --top-p --top-k --repetition-penalty --stop --seed",
    (jax_cli, "chat"): "--model --system",
    (jax_cli, "serve"): "--model --host --port --ui --characters --votes --api-key",
    (jax_cli, "train"): "--config --set",
    (jax_cli, "export"): "--model --out --format --dtype --force",
    (eval_cli, "build"): "--characters --exclude-from --model --endpoint --model-name --out --n",
    (eval_cli, "run"): "--eval --model --endpoint --model-name --judge --judge-endpoint --judge-model-name --judge-samples --out",
    (eval_cli, "mtbench"): "--questions --model --endpoint --model-name --judge --judge-endpoint --judge-model-name --out",
    (eval_cli, "report"): "--out",
}


@pytest.mark.parametrize("key", DESIGN_TABLE, ids=lambda key: f"{key[0].PROG} {key[1]}")
def test_design_table_names_keep_working(key):
    cli, command = key
    options = _options(cli, command)
    missing = [flag for flag in DESIGN_TABLE[key].split() if flag not in options]
    assert not missing
