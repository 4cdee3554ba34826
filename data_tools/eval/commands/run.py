"""`ditto-eval run`: options and the summary; the work is `data_tools.eval.run`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ditto_native import DittoError

from data_tools.eval.commands.options import answer_options, answer_settings, cache_path, common, http_options, judge_options, judge_settings


def register(sub) -> None:
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
    common(p)
    p.add_argument("--limit", type=int, help="evaluate only the first N sessions")
    answer_options(p, 512)
    p.add_argument("--system-policy", choices=SYSTEM_POLICIES, default="auto", help="where the system intro goes: auto (the template's own rule in process, a system message over HTTP), native, or fold_into_first_user")
    judge_options(p, 3, 0.2)
    g = p.add_argument_group("prompts and checks")
    g.add_argument("--consistency-template", type=Path, help="Jinja file replacing the built-in consistency judge prompt")
    g.add_argument("--knowledge-template", type=Path, help="Jinja file replacing the built-in knowledge judge prompt")
    g.add_argument("--rejection-template", type=Path, help="Jinja file replacing the built-in rejection judge prompt")
    g.add_argument("--clean-config", type=Path, help="clean config (TOML/JSON) whose leak, identity and refusal settings the judge-free flags use")
    http_options(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from data_tools.cleaning.config import load_config
    from data_tools.eval.answer import template_system_policy
    from data_tools.eval.backends import check_http_options, open_backends, spec_from_args
    from data_tools.eval.prompts import JUDGE_KINDS, EvalPrompts
    from data_tools.eval.records import load_sessions, write_jsonl_atomic
    from data_tools.eval.run import evaluate
    from data_tools.llm.cache import CallCache
    from data_tools.llm.runner import CallRunner

    answer, judge = answer_settings(args), judge_settings(args)
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
    cache_file = cache_path(args)
    started = time.monotonic()
    with CallCache(cache_file) as cache:
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
    print(f"ditto-eval run: {_headline(args.out, records)}", file=sys.stderr)
    return 1 if stats.failed_calls else 0


def _headline(path: Path, records: list) -> str:
    """Every metric pooled over all turns; splits and intervals are `ditto-eval report`'s job."""
    from data_tools.eval import bootstrap
    from data_tools.eval.metrics import METRICS, load_results

    results = load_results(path, list(enumerate(records, start=1)))
    parts = []
    for metric in METRICS:
        value = bootstrap.pooled(results.sums[metric.key], results.counts[metric.key])
        parts.append(f"{metric.title} {'n/a' if value is None else f'{value:.{metric.decimals}f}'}")
    return "; ".join(parts)
