"""`ditto-data simulate`: characters.parquet -> dialogues.parquet through an LLM.

The command only parses options, builds the backend and cache, and writes the
result; the method lives in data_tools.simulation.pipeline.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ditto_native import DittoError

ENV_BASE_URL = "DITTO_BASE_URL"  # comma-separated base URLs, used when neither --endpoint nor --model is given
ENV_MODEL_NAME = "DITTO_MODEL_NAME"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate role-play dialogues for characters with an LLM",
        description=(
            "Ditto dialogue simulation: for every character row, ask the model for questions the character can "
            "answer and a partner cannot (JSON), answer each in character from the character's profile (refusing "
            "in character when a question is beyond it), and join them into one session of exactly --turns turns. "
            "Every finished LLM call is stored in --cache, so a re-run after a crash repeats no call. "
            f"With --endpoint, the API key comes from DITTO_API_KEY (else OPENAI_API_KEY); {ENV_BASE_URL} and "
            f"{ENV_MODEL_NAME} stand in for --endpoint and --model-name. Exits 1 when some calls still failed after "
            "every retry (a re-run fills them in and reuses the rest from the cache)."
        ),
    )
    p.add_argument("--characters", required=True, type=Path, help="characters.parquet (the characters contract)")
    p.add_argument("--out", required=True, type=Path, help="dialogues.parquet to write (atomically)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="in-process model reference: smollm2, a Hugging Face directory or a .gguf file")
    src.add_argument("--endpoint", action="append", metavar="URL", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; repeat to share the load")
    p.add_argument("--model-name", help="model name to request from the endpoint(s)")
    p.add_argument("--limit", type=int, help="simulate only the first N character rows of each language (the same number per language)")
    p.add_argument("--turns", type=int, default=5, help="turns per session, exactly (default 5)")
    p.add_argument("--questions-per-pair", type=int, default=3, help="questions asked per (character, partner) pair (default 3)")
    p.add_argument("--concurrency", type=int, default=8, metavar="N", help="requests in flight (HTTP) or rows decoded together (in process) (default 8)")
    p.add_argument("--cache", type=Path, help="call cache (SQLite); default: beside --out, named <out>.calls.sqlite")
    p.add_argument("--report", type=Path, help="JSON report (per language: pairing, evidence, trimming); default: beside --out, named <out>.report.json")
    p.add_argument("--seed", type=int, default=0, help="seed for partners, turn plans and sampling (default 0)")
    p.add_argument("--max-query-tokens", type=int, default=768, metavar="N", help="token limit for a question-writing reply; a reply cut by it does not parse and is asked for again (default 768)")
    # Names: ditto_jax.cli_common's table; the old name stays as an alias with the same dest (build configs use it).
    p.add_argument("--max-new-tokens", "--max-answer-tokens", dest="max_answer_tokens", type=int, default=256, metavar="N",
                   help="token limit for an in-character answer (default 256)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1, off)")
    p.add_argument("--query-template", type=Path, help="Jinja file replacing the built-in query prompt")
    p.add_argument("--response-template", type=Path, help="Jinja file replacing the built-in response prompt")
    p.add_argument("--timeout", type=float, default=600.0, help="HTTP: seconds to wait for one reply (default 600)")
    p.add_argument("--max-retries", type=int, default=8, help="HTTP: retries per call on 429/5xx/connection errors (default 8)")
    p.add_argument("--retry-base-delay", type=float, default=1.0, help="HTTP: first backoff ceiling in seconds; doubles each retry (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import polars as pl

    from data_tools.llm.cache import CallCache
    from data_tools.llm.runner import CallRunner
    from data_tools.simulation.output import write_parquet_atomic
    from data_tools.simulation.pipeline import SimulationConfig, simulate
    from data_tools.simulation.prompts import PromptTemplates
    from data_tools.simulation.roles import first_per_language, roles_from_table

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    config = SimulationConfig(
        turns=args.turns, questions_per_pair=args.questions_per_pair, seed=args.seed,
        max_query_tokens=args.max_query_tokens, max_answer_tokens=args.max_answer_tokens,
        temperature=args.temperature, top_p=args.top_p,
    )
    config.check()
    if args.limit is not None and args.limit < 1:
        raise DittoError(f"--limit must be >= 1 (got {args.limit})")
    if args.concurrency < 1:
        raise DittoError(f"--concurrency must be >= 1 (got {args.concurrency})")

    templates = PromptTemplates({"query": args.query_template, "response": args.response_template})
    for kind in ("query", "response"):
        templates.source_name(kind, "en")  # an unreadable template fails now, not after the model loads

    try:
        table = pl.read_parquet(args.characters)
    except FileNotFoundError:
        raise
    except Exception as exc:  # polars raises several types for a file that is not Parquet
        raise DittoError(f"{args.characters}: cannot read as Parquet: {' '.join(str(exc).split())[:200]}") from None
    everyone = roles_from_table(table, source=str(args.characters))
    roles = first_per_language(everyone, args.limit) if args.limit else everyone
    if not roles:
        raise DittoError(f"{args.characters}: no character rows")

    backend = _backend(args)
    cache_path = args.cache or args.out.with_name(args.out.stem + ".calls.sqlite")
    started = time.monotonic()
    with CallCache(cache_path) as cache:
        runner = CallRunner(backend, cache, progress=not args.no_progress)
        try:
            frame, report = simulate(roles, runner, templates, config, partner_pool=everyone)
        finally:
            runner.close()
            backend.close()
    write_parquet_atomic(frame, args.out)
    report_path = args.report or args.out.with_name(args.out.stem + ".report.json")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _summary(args, report, runner.stats, backend.retry_counts(), time.monotonic() - started, cache_path)
    transient = [r for r in report.dropped.values() if r.startswith("answer_failed")] + [
        r for r in report.query_failures if r.startswith("call_failed")
    ]
    return 1 if transient else 0


def _backend(args):
    if args.model:
        if args.model_name:
            raise DittoError("--model-name goes with --endpoint, not --model")
        from data_tools.llm.jax_backend import JaxBackend

        print(f"simulate: loading {args.model} ...", file=sys.stderr, flush=True)
        return JaxBackend.load(args.model, max_batch=args.concurrency)
    from data_tools.llm.http_backend import HttpBackend, api_key_from_env
    from data_tools.llm.retry import RetryPolicy

    endpoints = args.endpoint or [u for u in os.environ.get(ENV_BASE_URL, "").split(",") if u.strip()]
    if not endpoints:
        raise DittoError(f"give --model REF, or --endpoint URL (or set {ENV_BASE_URL})")
    model_name = args.model_name or os.environ.get(ENV_MODEL_NAME)
    if not model_name:
        raise DittoError(f"--endpoint needs --model-name (or set {ENV_MODEL_NAME})")
    if args.max_retries < 0 or args.retry_base_delay < 0 or args.timeout <= 0:
        raise DittoError("--max-retries and --retry-base-delay must be >= 0 and --timeout > 0")
    return HttpBackend(
        endpoints, model_name, api_key=api_key_from_env("DITTO_API_KEY"), concurrency=args.concurrency,
        timeout_s=args.timeout, retry=RetryPolicy(max_retries=args.max_retries, base_delay_s=args.retry_base_delay),
        seed=args.seed,
    )


def _summary(args, report, stats, retries: dict[str, int], elapsed: float, cache_path: Path) -> None:
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(retries.items())) or "none"
    failures = {**{f"query {k}": v for k, v in report.query_failures.items()}}
    dropped: dict[str, int] = {}
    for reason in report.dropped.values():
        dropped[reason] = dropped.get(reason, 0) + 1
    failures.update({f"session {k}": v for k, v in dropped.items()})
    fail_text = ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none"
    call_failures = sum(stats.failures.values())
    lines = [
        f"simulate: wrote {report.sessions} sessions ({report.turns} turns) to {args.out} in {elapsed:.1f}s",
        f"simulate: calls {stats.calls}, cache hits {stats.cache_hits}, retries {sum(retries.values())} ({by_reason}), "
        f"failed calls {call_failures}, query re-asks {report.query_retries}",
        f"simulate: failures {report.failures} ({fail_text})",
        f"simulate: tokens prompt {stats.prompt_tokens}, completion {stats.completion_tokens} "
        f"({stats.completion_tokens / max(elapsed, 1e-9):.1f} completion tok/s); cache {cache_path}",
    ]
    for lang, r in sorted(report.by_lang.items()):
        d = r.to_dict()
        share = "n/a" if d["paired_share"] is None else f"{d['paired_share']:.0%}"
        rate = "n/a" if d["evidence_verified_rate"] is None else f"{d['evidence_verified_rate']:.0%}"
        lines.append(
            f"simulate: [{lang}] sessions {r.sessions}, paired contrastive {share} (fallback {r.contrastive_fallback}), "
            f"evidence verified {rate} ({r.evidence_verified}/{r.evidence_checked}; questions with none {r.questions_unverified}), "
            f"answers trimmed {r.answers_trimmed}, left cut {r.answers_cut}, replies at a string cap {r.replies_at_cap}"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)
