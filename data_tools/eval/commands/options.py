"""Options shared by the `ditto-eval` subcommands, and the settings built from them."""
from __future__ import annotations

from pathlib import Path


def http_options(p) -> None:
    g = p.add_argument_group("HTTP")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one reply (default 600)")
    g.add_argument("--max-retries", type=int, default=8, help="retries per call on 429/5xx/connection errors (default 8)")
    g.add_argument("--retry-base-delay", type=float, default=1.0, help="first backoff ceiling in seconds; doubles each retry (default 1)")


def answer_options(p, max_tokens: int) -> None:
    g = p.add_argument_group("answering")
    # Names: ditto_jax.cli_common's table; the old names stay as aliases with the same dest.
    g.add_argument("--max-new-tokens", "--max-answer-tokens", dest="max_answer_tokens", type=int, default=max_tokens, metavar="N",
                   help=f"token limit per answer (default {max_tokens})")
    g.add_argument("--temperature", type=float, default=0.7, help="answer sampling temperature (default 0.7; 0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0, help="answer nucleus sampling mass (default 1, off)")
    g.add_argument("--model-label", help="the model's name in the results and the report (default: the reference or --model-name)")


def judge_options(p, samples: int, temperature: float) -> None:
    g = p.add_argument_group("judging")
    g.add_argument("--judge-samples", type=int, default=samples, help=f"independent judge samples per judgement, K (default {samples})")
    g.add_argument("--judge-temperature", type=float, default=temperature, help=f"judge sampling temperature (default {temperature:g})")
    g.add_argument("--judge-top-p", type=float, default=1.0, help="judge nucleus sampling mass (default 1, off)")
    g.add_argument("--judge-max-new-tokens", "--judge-max-tokens", dest="judge_max_tokens", type=int, default=256, metavar="N", help="token limit per judgement (default 256; raise it for free-text judges)")
    g.add_argument("--judge-retries", type=int, default=1, help="re-asks of a judgement that does not parse, before it counts as unparsable (default 1)")
    g.add_argument("--judge-free-text", action="store_true", help="do not constrain judge replies with a JSON schema (for prompts that ask for free text, such as the paper's)")


def common(p) -> None:
    p.add_argument("--out", required=True, type=Path, help="output file (JSON Lines), written atomically at the end")
    p.add_argument("--cache", type=Path, help="call cache (SQLite); default: beside --out, named <out>.calls.sqlite")
    p.add_argument("--seed", type=int, default=0, help="seed for every sampled call and choice (default 0)")


def cache_path(args) -> Path:
    return args.cache or args.out.with_name(args.out.stem + ".calls.sqlite")


def judge_settings(args):
    from data_tools.eval.judging import JudgeSettings

    settings = JudgeSettings(
        samples=args.judge_samples, temperature=args.judge_temperature, top_p=args.judge_top_p,
        max_tokens=args.judge_max_tokens, retries=args.judge_retries, constrained=not args.judge_free_text, seed=args.seed,
    )
    settings.check()
    return settings


def answer_settings(args):
    from data_tools.eval.answer import AnswerSettings

    settings = AnswerSettings(max_tokens=args.max_answer_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    settings.check()
    return settings
