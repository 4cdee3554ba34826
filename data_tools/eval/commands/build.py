"""`ditto-eval build`: options and the summary; the work is `data_tools.eval.build`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ditto_native import DittoError

from data_tools.eval.commands.options import cache_path, common, http_options


def register(sub) -> None:
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
    common(p)
    p.add_argument("--n", type=int, default=100, help="sessions, one per held-out character row, languages taken in turn (default 100)")
    p.add_argument("--turns", type=int, default=5, help="prompts per session, exactly (default 5)")
    p.add_argument("--questions-per-pair", type=int, default=3, help="questions asked per (character, partner) pair (default 3)")
    p.add_argument("--candidates", type=int, default=4, help="identity candidates per session: the role and distractors (default 4)")
    p.add_argument("--evidence-facts", type=int, default=5, help="profile facts added to each turn's evidence (default 5)")
    p.add_argument("--max-query-tokens", type=int, default=768, metavar="N", help="token limit for a question-writing reply (default 768)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1, off)")
    p.add_argument("--query-template", type=Path, help="Jinja file replacing the built-in query prompt")
    http_options(p)
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
    everyone = roles_from_table(table, source=str(args.characters))
    trained = training_ids(args.exclude_from)
    chosen = held_out(everyone, trained, settings.n)
    excluded = sum(r.character_id in trained for r in everyone)
    if not chosen:
        raise DittoError(f"{args.characters}: no held-out characters: all {len(everyone)} rows appear in the training dialogues")

    (backend,) = open_backends([spec], timeout_s=args.timeout, retry=retry, seed=args.seed)
    cache_file = cache_path(args)
    started = time.monotonic()
    with CallCache(cache_file) as cache:
        runner = CallRunner(backend, cache, progress=not args.no_progress, desc="build")
        try:
            records, report = build_sessions(everyone, chosen, runner, prompts, settings)
        finally:
            runner.close()
            backend.close()
    if not records:
        raise DittoError(f"no session could be built ({_reasons(report.dropped)}); see the call cache {cache_file}")
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
