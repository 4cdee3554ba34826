"""The model under test and the judge: each in process (`--model REF`) or over HTTP (`--endpoint URL… --model-name NAME`).

Both reuse the toolkit's backends (`data_tools.llm`). When the model and the
judge are the same in-process reference, the weights are loaded once and
shared. Endpoints are checked for a listening socket before any work, so an
unreachable one fails in one line instead of after every retry.

API keys: DITTO_API_KEY for `--endpoint`, DITTO_JUDGE_API_KEY for
`--judge-endpoint`; each falls back to OPENAI_API_KEY.
"""
from __future__ import annotations

import dataclasses
import sys

from ditto_native import DittoError

from data_tools.llm.retry import RetryPolicy


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    ref_option: str  # "--model" or "--judge": names the options in errors
    endpoint_option: str
    name_option: str
    ref: str | None
    endpoints: tuple[str, ...]
    model_name: str | None
    api_key_env: str
    concurrency: int


def add_backend_options(parser, *, judge: bool, required: bool = True) -> None:
    p = "judge-" if judge else ""
    what = "the judge" if judge else "the model under test"
    group = parser.add_argument_group(f"{what} (in process, or over HTTP)")
    group.add_argument(f"--{'judge' if judge else 'model'}", metavar="REF", help=f"{what}, in process: smollm2, a Hugging Face folder, a .gguf file or a training checkpoint")
    group.add_argument(f"--{p}endpoint", action="append", metavar="URL", help=f"{what}, over HTTP: an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1; repeat to share the load")
    group.add_argument(f"--{p}model-name", metavar="NAME", help=f"the model name to request from --{p}endpoint")
    group.add_argument(f"--{p}concurrency", type=int, default=8, help="requests in flight (HTTP) or batch size (in process) (default 8)")


def spec_from_args(args, *, judge: bool) -> BackendSpec:
    p = "judge_" if judge else ""
    ref_option = "--judge" if judge else "--model"
    endpoint_option = f"--{p.replace('_', '-')}endpoint"
    name_option = f"--{p.replace('_', '-')}model-name"
    ref = getattr(args, "judge" if judge else "model")
    endpoints = tuple(getattr(args, f"{p}endpoint") or ())
    model_name = getattr(args, f"{p}model_name")
    concurrency = getattr(args, f"{p}concurrency")
    if ref and endpoints:
        raise DittoError(f"give {ref_option} or {endpoint_option}, not both")
    if ref and model_name:
        raise DittoError(f"{name_option} goes with {endpoint_option}, not {ref_option}")
    if not ref and not endpoints:
        raise DittoError(f"give {ref_option} REF, or {endpoint_option} URL with {name_option} NAME")
    if endpoints and not model_name:
        raise DittoError(f"{endpoint_option} needs {name_option}")
    if concurrency < 1:
        raise DittoError(f"--{p.replace('_', '-')}concurrency must be >= 1 (got {concurrency})")
    return BackendSpec(
        ref_option, endpoint_option, name_option, ref, endpoints, model_name,
        "DITTO_JUDGE_API_KEY" if judge else "DITTO_API_KEY", concurrency,
    )


def check_http_options(args) -> RetryPolicy:
    if args.max_retries < 0 or args.retry_base_delay < 0 or args.timeout <= 0:
        raise DittoError("--max-retries and --retry-base-delay must be >= 0 and --timeout > 0")
    return RetryPolicy(max_retries=args.max_retries, base_delay_s=args.retry_base_delay)


def open_backends(specs: list[BackendSpec], *, timeout_s: float, retry: RetryPolicy, seed: int) -> list:
    """One backend per spec, HTTP ones checked first; in-process ones sharing a reference share one model."""
    from data_tools.llm.http_backend import HttpBackend, api_key_from_env

    opened: list = [None] * len(specs)
    for i, spec in enumerate(specs):
        if spec.endpoints:
            backend = HttpBackend(
                list(spec.endpoints), spec.model_name, api_key=api_key_from_env(spec.api_key_env),
                concurrency=spec.concurrency, timeout_s=timeout_s, retry=retry, seed=seed,
            )
            backend.check_reachable(spec.endpoint_option)
            opened[i] = backend
    loaded: dict[str, object] = {}
    for i, spec in enumerate(specs):
        if spec.ref:
            if spec.ref not in loaded:
                from data_tools.llm.jax_backend import JaxBackend

                print(f"ditto-eval: loading {spec.ref} ...", file=sys.stderr, flush=True)
                loaded[spec.ref] = JaxBackend.load(spec.ref, max_batch=spec.concurrency)
            opened[i] = loaded[spec.ref]
    return opened
