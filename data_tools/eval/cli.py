"""`ditto-eval`: build, run, mtbench, report. Parses options and calls the package's functions.

Every command exits non-zero with one line on bad input. `build`, `run` and
`mtbench` store every LLM call in a call cache (default: beside --out), so a
re-run after a crash or kill repeats no call.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ditto_native import DittoError

PROG = "ditto-eval"


# ---- shared options --------------------------------------------------------------------------


def _http_options(p) -> None:
    g = p.add_argument_group("HTTP")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one reply (default 600)")
    g.add_argument("--max-retries", type=int, default=8, help="retries per call on 429/5xx/connection errors (default 8)")
    g.add_argument("--retry-base-delay", type=float, default=1.0, help="first backoff ceiling in seconds; doubles each retry (default 1)")


def _answer_options(p, max_tokens: int) -> None:
    g = p.add_argument_group("answering")
    g.add_argument("--max-answer-tokens", type=int, default=max_tokens, help=f"token limit per answer (default {max_tokens})")
    g.add_argument("--temperature", type=float, default=0.7, help="answer sampling temperature (default 0.7; 0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0, help="answer nucleus sampling mass (default 1, off)")
    g.add_argument("--model-label", help="the model's name in the results and the report (default: the reference or --model-name)")


def _judge_options(p, samples: int, temperature: float) -> None:
    g = p.add_argument_group("judging")
    g.add_argument("--judge-samples", type=int, default=samples, help=f"independent judge samples per judgement, K (default {samples})")
    g.add_argument("--judge-temperature", type=float, default=temperature, help=f"judge sampling temperature (default {temperature:g})")
    g.add_argument("--judge-top-p", type=float, default=1.0, help="judge nucleus sampling mass (default 1, off)")
    g.add_argument("--judge-max-tokens", type=int, default=256, help="token limit per judgement (default 256; raise it for free-text judges)")
    g.add_argument("--judge-retries", type=int, default=1, help="re-asks of a judgement that does not parse, before it counts as unparsable (default 1)")
    g.add_argument("--judge-free-text", action="store_true", help="do not constrain judge replies with a JSON schema (for prompts that ask for free text, such as the paper's)")


def _common(p) -> None:
    p.add_argument("--out", required=True, type=Path, help="output file (JSON Lines), written atomically at the end")
    p.add_argument("--cache", type=Path, help="call cache (SQLite); default: beside --out, named <out>.calls.sqlite")
    p.add_argument("--seed", type=int, default=0, help="seed for every sampled call and choice (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cache_path(args) -> Path:
    return args.cache or args.out.with_name(args.out.stem + ".calls.sqlite")


# ---- build -----------------------------------------------------------------------------------


def _register_build(sub) -> None:
    from data_tools.eval.backends import add_backend_options

    p = sub.add_parser(
        "build", help="build a WikiRoleEval-style evaluation file from held-out characters",
        description=(
            "One evaluation session per held-out character row: --turns prompts mixing role-specific and contrastive "
            "questions written by the model with the simulation's query prompts, per-turn rejection labels and evidence "
            "facts, and identity candidates (the role and distractors of its language). A character whose character_id "
            "appears in any --exclude-from file, in any language, is left out."
        ),
    )
    p.add_argument("--characters", required=True, type=Path, help="characters.parquet (the characters contract)")
    p.add_argument("--exclude-from", required=True, type=Path, action="append", metavar="DIALOGUES", help="training dialogues (dialogues.parquet or clean.parquet); repeat for several")
    add_backend_options(p, judge=False)
    _common(p)
    p.add_argument("--n", type=int, default=100, help="sessions, one per held-out character row, languages taken in turn (default 100)")
    p.add_argument("--turns", type=int, default=5, help="prompts per session, exactly (default 5)")
    p.add_argument("--questions-per-pair", type=int, default=3, help="questions asked per (character, partner) pair (default 3)")
    p.add_argument("--candidates", type=int, default=4, help="identity candidates per session: the role and distractors (default 4)")
    p.add_argument("--evidence-facts", type=int, default=5, help="profile facts added to each turn's evidence (default 5)")
    p.add_argument("--max-query-tokens", type=int, default=768, help="token limit for a question-writing reply (default 768)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1, off)")
    p.add_argument("--profile-chars", type=int, default=4000, help="profile text shown to the model, in characters (default 4000)")
    p.add_argument("--query-template", type=Path, help="Jinja file replacing the built-in query prompt")
    _http_options(p)
    p.set_defaults(func=_build)


def _build(args) -> int:
    import polars as pl

    from data_tools.eval.backends import check_http_options, open_backends, spec_from_args
    from data_tools.eval.build import BuildSettings, build_sessions, held_out, training_ids
    from data_tools.eval.prompts import EvalPrompts
    from data_tools.eval.records import write_jsonl_atomic
    from data_tools.llm.cache import CallCache
    from data_tools.llm.runner import CallRunner
    from data_tools.simulation.roles import roles_from_table

    settings = BuildSettings(
        n=args.n, turns=args.turns, questions_per_pair=args.questions_per_pair, seed=args.seed,
        max_query_tokens=args.max_query_tokens, temperature=args.temperature, top_p=args.top_p,
        candidates=args.candidates, evidence_facts=args.evidence_facts,
    )
    settings.check()
    settings.simulation()
    if args.profile_chars < 100:
        raise DittoError(f"--profile-chars must be >= 100 (got {args.profile_chars})")
    spec = spec_from_args(args, judge=False)
    retry = check_http_options(args)
    prompts = EvalPrompts({"query": args.query_template})
    prompts.check(["query"])
    try:
        table = pl.read_parquet(args.characters)
    except FileNotFoundError:
        raise
    except Exception as exc:  # polars raises several types for a file that is not Parquet
        raise DittoError(f"{args.characters}: cannot read as Parquet: {' '.join(str(exc).split())[:200]}") from None
    everyone = roles_from_table(table, source=str(args.characters), profile_chars=args.profile_chars)
    trained = training_ids(args.exclude_from)
    chosen = held_out(everyone, trained, settings.n)
    excluded = sum(r.character_id in trained for r in everyone)
    if not chosen:
        raise DittoError(f"{args.characters}: no held-out characters: all {len(everyone)} rows appear in the training dialogues")

    (backend,) = open_backends([spec], timeout_s=args.timeout, retry=retry, seed=args.seed)
    cache_path = _cache_path(args)
    started = time.monotonic()
    with CallCache(cache_path) as cache:
        runner = CallRunner(backend, cache, progress=not args.no_progress, desc="build")
        try:
            records, report = build_sessions(everyone, chosen, runner, prompts, settings)
        finally:
            runner.close()
            backend.close()
    if not records:
        raise DittoError(f"no session could be built ({_reasons(report.dropped)}); see the call cache {cache_path}")
    write_jsonl_atomic(records, args.out)
    langs = {}
    for r in records:
        langs[r["meta"]["lang"]] = langs.get(r["meta"]["lang"], 0) + 1
    print(
        f"ditto-eval build: wrote {len(records)} sessions ({report.turns} turns; "
        f"{', '.join(f'{k} {v}' for k, v in sorted(langs.items()))}) to {args.out} in {time.monotonic() - started:.1f}s\n"
        f"ditto-eval build: {excluded} character rows excluded as trained on, {len(chosen)} chosen, "
        f"{len(report.dropped)} dropped ({_reasons(report.dropped) or 'none'}); calls {runner.stats.calls}, "
        f"cache hits {runner.stats.cache_hits}, query re-asks {report.query_retries}",
        file=sys.stderr,
    )
    transient = [r for r in report.query_failures if r.startswith("call_failed")]
    return 1 if transient else 0


def _reasons(dropped: dict) -> str:
    counts: dict[str, int] = {}
    for reason in dropped.values():
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


# ---- run -------------------------------------------------------------------------------------


def _register_run(sub) -> None:
    from data_tools.eval.answer import SYSTEM_POLICIES
    from data_tools.eval.backends import add_backend_options

    p = sub.add_parser(
        "run", help="answer an evaluation file with a model and score every turn with a judge",
        description=(
            "Answers each session multi-turn with its system intro, then judges every turn for role consistency "
            "(a choice among the candidates), knowledge (1-10, given the evidence) and rejection (0/1), K samples each, "
            "and adds judge-free flags from the clean stage's checks. Judge replies are constrained by a JSON schema "
            "where the judge supports it. Writes one results record per session, in input order. API keys: "
            "DITTO_API_KEY for --endpoint, DITTO_JUDGE_API_KEY for --judge-endpoint (each falls back to OPENAI_API_KEY)."
        ),
    )
    p.add_argument("--eval", required=True, type=Path, help="evaluation file (JSON Lines, WikiRoleEval layout)")
    add_backend_options(p, judge=False)
    add_backend_options(p, judge=True)
    _common(p)
    p.add_argument("--limit", type=int, help="evaluate only the first N sessions")
    _answer_options(p, 512)
    p.add_argument("--system-policy", choices=SYSTEM_POLICIES, default="auto", help="where the system intro goes: auto (the template's own rule in process, a system message over HTTP), native, or fold_into_first_user")
    _judge_options(p, 3, 0.2)
    g = p.add_argument_group("prompts and checks")
    g.add_argument("--consistency-template", type=Path, help="Jinja file replacing the built-in consistency judge prompt")
    g.add_argument("--knowledge-template", type=Path, help="Jinja file replacing the built-in knowledge judge prompt")
    g.add_argument("--rejection-template", type=Path, help="Jinja file replacing the built-in rejection judge prompt")
    g.add_argument("--clean-config", type=Path, help="clean config (TOML/JSON) whose leak, identity and refusal settings the judge-free flags use")
    _http_options(p)
    p.set_defaults(func=_run)


def _judge_settings(args):
    from data_tools.eval.judging import JudgeSettings

    settings = JudgeSettings(
        samples=args.judge_samples, temperature=args.judge_temperature, top_p=args.judge_top_p,
        max_tokens=args.judge_max_tokens, retries=args.judge_retries, constrained=not args.judge_free_text, seed=args.seed,
    )
    settings.check()
    return settings


def _answer_settings(args):
    from data_tools.eval.answer import AnswerSettings

    settings = AnswerSettings(max_tokens=args.max_answer_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    settings.check()
    return settings


def _run(args) -> int:
    from data_tools.cleaning.config import load_config
    from data_tools.eval.answer import template_system_policy
    from data_tools.eval.backends import check_http_options, open_backends, spec_from_args
    from data_tools.eval.prompts import JUDGE_KINDS, EvalPrompts
    from data_tools.eval.records import load_sessions, write_jsonl_atomic
    from data_tools.eval.run import evaluate
    from data_tools.llm.cache import CallCache
    from data_tools.llm.runner import CallRunner

    answer, judge = _answer_settings(args), _judge_settings(args)
    if args.limit is not None and args.limit < 1:
        raise DittoError(f"--limit must be >= 1 (got {args.limit})")
    specs = [spec_from_args(args, judge=False), spec_from_args(args, judge=True)]
    retry = check_http_options(args)
    clean = load_config(args.clean_config)
    prompts = EvalPrompts(
        {"judge_consistency": args.consistency_template, "judge_knowledge": args.knowledge_template, "judge_rejection": args.rejection_template}
    )
    sessions = load_sessions(args.eval)[: args.limit]
    prompts.check(JUDGE_KINDS, sorted({s.lang for s in sessions}))

    model, judge_backend = open_backends(specs, timeout_s=args.timeout, retry=retry, seed=args.seed)
    policy = template_system_policy(model, args.system_policy)
    cache_path = _cache_path(args)
    started = time.monotonic()
    with CallCache(cache_path) as cache:
        model_runner = CallRunner(model, cache, progress=not args.no_progress, desc="answer")
        judge_runner = CallRunner(judge_backend, cache, progress=not args.no_progress, desc="judge")
        try:
            records, report = evaluate(
                sessions, model_runner, judge_runner, prompts, answer=answer, judge=judge, system_policy=policy,
                clean=clean, model_label=args.model_label,
            )
        finally:
            model_runner.close()
            judge_runner.close()
            model.close()
            judge_backend.close()
    write_jsonl_atomic(records, args.out)
    stats = report.judge
    unparsable = ", ".join(f"{k} {v}" for k, v in sorted(stats.unparsable.items())) or "none"
    print(
        f"ditto-eval run: wrote {len(records)} sessions ({report.turns} turns) to {args.out} in {time.monotonic() - started:.1f}s "
        f"(system intro: {policy})\n"
        f"ditto-eval run: answer calls {model_runner.stats.calls}, judge calls {judge_runner.stats.calls}, cache hits "
        f"{model_runner.stats.cache_hits + judge_runner.stats.cache_hits}; judge samples {stats.asked}, re-asked {stats.reasked}, "
        f"unparsable {unparsable}, failed calls {stats.failed_calls}; rejection ties or unparsed {report.reject_nulls}",
        file=sys.stderr,
    )
    return 1 if stats.failed_calls else 0


# ---- mtbench ---------------------------------------------------------------------------------


def _register_mtbench(sub) -> None:
    from data_tools.eval.backends import add_backend_options

    p = sub.add_parser(
        "mtbench", help="MT-Bench roleplay: two-turn answers, single-answer 1-10 grading",
        description=(
            "Answers MT-Bench questions (FastChat's question.jsonl format) as two-turn conversations and has a judge "
            "rate each answer from 1 to 10, the second with both turns in view; a question scores the mean over its "
            "turns. Ratings are read from JSON or FastChat's [[rating]]."
        ),
    )
    p.add_argument("--questions", required=True, type=Path, help="questions in FastChat's format (question_id, category, turns)")
    p.add_argument("--category", default="roleplay", help="category to keep; 'all' keeps every question (default roleplay)")
    add_backend_options(p, judge=False)
    add_backend_options(p, judge=True)
    _common(p)
    p.add_argument("--limit", type=int, help="only the first N questions")
    _answer_options(p, 1024)
    _judge_options(p, 1, 0.0)
    g = p.add_argument_group("prompts")
    g.add_argument("--judge-template", type=Path, help="Jinja file replacing the built-in first-turn judge prompt")
    g.add_argument("--judge-multi-template", type=Path, help="Jinja file replacing the built-in second-turn judge prompt")
    _http_options(p)
    p.set_defaults(func=_mtbench)


def _mtbench(args) -> int:
    from data_tools.eval.backends import check_http_options, open_backends, spec_from_args
    from data_tools.eval.mtbench import load_questions, run_mtbench
    from data_tools.eval.prompts import MTBENCH_KINDS, EvalPrompts
    from data_tools.eval.records import write_jsonl_atomic
    from data_tools.llm.cache import CallCache
    from data_tools.llm.runner import CallRunner

    answer, judge = _answer_settings(args), _judge_settings(args)
    if args.limit is not None and args.limit < 1:
        raise DittoError(f"--limit must be >= 1 (got {args.limit})")
    specs = [spec_from_args(args, judge=False), spec_from_args(args, judge=True)]
    retry = check_http_options(args)
    prompts = EvalPrompts({"mtbench_judge": args.judge_template, "mtbench_judge_multi": args.judge_multi_template})
    prompts.check(MTBENCH_KINDS, ["en"])
    questions = load_questions(args.questions, None if args.category == "all" else args.category)[: args.limit]

    model, judge_backend = open_backends(specs, timeout_s=args.timeout, retry=retry, seed=args.seed)
    started = time.monotonic()
    with CallCache(_cache_path(args)) as cache:
        model_runner = CallRunner(model, cache, progress=not args.no_progress, desc="answer")
        judge_runner = CallRunner(judge_backend, cache, progress=not args.no_progress, desc="judge")
        try:
            records, stats = run_mtbench(questions, model_runner, judge_runner, prompts, answer=answer, judge=judge, model_label=args.model_label)
        finally:
            model_runner.close()
            judge_runner.close()
            model.close()
            judge_backend.close()
    write_jsonl_atomic(records, args.out)
    scored = [r["score"] for r in records if r["score"] is not None]
    mean = f"{sum(scored) / len(scored):.2f}" if scored else "n/a"
    print(
        f"ditto-eval mtbench: wrote {len(records)} questions to {args.out} in {time.monotonic() - started:.1f}s; "
        f"mean score {mean} over {len(scored)} scored questions; judge samples {stats.asked}, unparsable "
        f"{sum(stats.unparsable.values())}, failed calls {stats.failed_calls}",
        file=sys.stderr,
    )
    return 1 if stats.failed_calls else 0


# ---- report ----------------------------------------------------------------------------------


def _register_report(sub) -> None:
    p = sub.add_parser(
        "report", help="compare models: tables with bootstrap intervals and a bar chart",
        description=(
            "Reads results files (from `ditto-eval run` and `ditto-eval mtbench`) and vote files (from `ditto-jax serve "
            "--ui --votes`), recognised by content, and writes "
            "a Markdown report with All/en/zh x metric tables, judge-based and judge-free, per model, differences "
            "against the first model, and 95% bootstrap intervals over sessions; beside it a JSON file with every "
            "number and a PNG bar chart. Model names come from the files."
        ),
    )
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results and vote files; the first results file's model is the baseline")
    p.add_argument("--out", required=True, type=Path, help="report.md (report.json and report.png go beside it)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from data_tools.eval.report import build_report, write_report

    if args.out.suffix.lower() in (".json", ".png"):
        raise DittoError(f"--out {args.out}: the report is Markdown; its .json and .png are written beside it")
    written = write_report(build_report(args.results, seed=args.seed, resamples=args.resamples), args.out)
    print(f"ditto-eval report: wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0


# ---- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="WikiRoleEval-style role-play evaluation: build a benchmark from held-out characters, run a model and an LLM judge, MT-Bench roleplay, and compare models in a report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (_register_build, _register_run, _register_mtbench, _register_report):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (DittoError, FileNotFoundError, PermissionError) as exc:
        print(f"{PROG} {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
