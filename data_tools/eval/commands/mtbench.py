"""`ditto-eval mtbench`: options and the summary; the work is `data_tools.eval.mtbench`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ditto_native import DittoError

from data_tools.eval.commands.options import answer_options, answer_settings, cache_path, common, http_options, judge_options, judge_settings


def register(sub) -> None:
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
    common(p)
    p.add_argument("--limit", type=int, help="only the first N questions")
    answer_options(p, 1024)
    judge_options(p, 1, 0.0)
    g = p.add_argument_group("prompts")
    g.add_argument("--judge-template", type=Path, help="Jinja file replacing the built-in first-turn judge prompt")
    g.add_argument("--judge-multi-template", type=Path, help="Jinja file replacing the built-in second-turn judge prompt")
    http_options(p)
    p.set_defaults(func=_mtbench)


def _mtbench(args) -> int:
    from data_tools.eval.backends import check_http_options, open_backends, spec_from_args
    from data_tools.eval.mtbench import load_questions, run_mtbench
    from data_tools.eval.prompts import MTBENCH_KINDS, EvalPrompts
    from data_tools.eval.records import write_jsonl_atomic
    from data_tools.llm.cache import CallCache
    from data_tools.llm.runner import CallRunner

    answer, judge = answer_settings(args), judge_settings(args)
    if args.limit is not None and args.limit < 1:
        raise DittoError(f"--limit must be >= 1 (got {args.limit})")
    specs = [spec_from_args(args, judge=False), spec_from_args(args, judge=True)]
    retry = check_http_options(args)
    prompts = EvalPrompts({"mtbench_judge": args.judge_template, "mtbench_judge_multi": args.judge_multi_template})
    prompts.check(MTBENCH_KINDS, ["en"])
    questions = load_questions(args.questions, None if args.category == "all" else args.category)[: args.limit]

    model, judge_backend = open_backends(specs, timeout_s=args.timeout, retry=retry, seed=args.seed)
    started = time.monotonic()
    with CallCache(cache_path(args)) as cache:
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
