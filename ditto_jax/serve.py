"""`ditto-jax serve`: an OpenAI-compatible chat server (uvicorn + Starlette) with continuous batching.

Any OpenAI client (and role-play chat front ends) can talk to a Ditto model:

- `POST /v1/chat/completions` with messages, temperature, top_p, max_tokens
  (or max_completion_tokens), stop, seed, n, response_format (text,
  json_object, or json_schema through the engine's constrained decoding) and
  stream (server-sent events, each token's text as it is decoded;
  `stream_options.include_usage` adds a usage chunk); vLLM's extras top_k,
  repetition_penalty and min_tokens too.
- `GET /v1/models`; `GET /health` (with the engines' counters).
- Bad requests get a 4xx with an OpenAI-style error body naming the field.

Each `--model` gets its own engine and engine thread, under its
`--served-model-name` (default: the reference). Requests join the running
batch at the next decode step and leave it as soon as they finish
(`--batching static` runs one batch to its end before the next, for
comparison). The pieces live in `ditto_jax.serving`: `api` (request checking,
bodies), `app` (routes), `worker` (engine threads), `server` (uvicorn).

    ditto-jax serve --model smollm2 --port 8000
    ditto-jax serve --model smollm2 --model runs/ditto --served-model-name base --served-model-name ditto
"""
from __future__ import annotations

import argparse
import sys

from ditto_jax.serving.auth import KEY_ENV
from ditto_native import DittoError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="OpenAI-compatible chat server",
        description=(
            "Serve one or more models over an OpenAI-compatible HTTP API: POST /v1/chat/completions (messages, temperature, "
            "top_p, max_tokens, stop, seed, n, response_format json_schema/json_object, stream) and GET /v1/models. "
            "Requests share decode steps (continuous batching); streamed replies arrive token by token. "
            "Prints the listening URL on stderr."
        ),
    )
    p.add_argument("--model", action="append", required=True, metavar="REF",
                   help="model reference: smollm2, a Hugging Face directory, a .gguf file, or a training run or checkpoint (LoRA adapters applied); repeat to serve several")
    p.add_argument("--served-model-name", action="append", metavar="NAME",
                   help="model id clients use, one per --model in the same order (default: the --model reference)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default 8000)")
    # Names: ditto_jax.cli_common's table; the old names stay as aliases with the same dest.
    p.add_argument("--concurrency", "--max-batch", dest="max_batch", type=int, default=16, metavar="N",
                   help="most rows (samples) decoded together per model (default 16)")
    p.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                   help="continuous: requests join and leave the running batch at every step (default); "
                        "static: a batch runs to its end before the next starts")
    p.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="when a model is idle and a request arrives, wait this long for others to start with it (default 10)")
    p.add_argument("--max-new-tokens", "--default-max-tokens", dest="default_max_tokens", type=int, default=512, metavar="N",
                   help="reply limit in tokens for a request that sets no max_tokens (default 512)")
    p.add_argument("--api-key", metavar="KEY",
                   help=f"require this key (Authorization: Bearer KEY) on the API and the page; prefer the environment "
                        f"variable {KEY_ENV}, which is used when this flag is absent (the client key DITTO_API_KEY is not)")
    ui = p.add_argument_group("playground", "a browser page at / to chat with characters and compare models blind")
    ui.add_argument("--ui", action="store_true", help="serve the playground page at / (needs --characters)")
    ui.add_argument("--characters", metavar="FILE", help="characters.parquet to search (label, description, language)")
    ui.add_argument("--votes", metavar="FILE", help="append blind comparison votes to this JSONL file (fsynced per vote)")
    p.set_defaults(func=run_serve)


def served_names(refs: list[str], names: list[str] | None) -> list[str]:
    if names and len(names) != len(refs):
        raise DittoError(f"give one --served-model-name per --model ({len(refs)} models, {len(names)} names)")
    names = names or refs
    if len(set(names)) != len(names):
        raise DittoError(f"served model names must differ (got {', '.join(names)}); set --served-model-name")
    return names


def run_serve(args: argparse.Namespace) -> int:
    from ditto_jax.generation import Engine
    from ditto_jax.loader import resolve_model_ref
    from ditto_jax.serving.app import ServedModel, create_app
    from ditto_jax.serving.auth import ApiKeyGuard, api_key_from
    from ditto_jax.serving.server import listen_socket, serve_forever, url_of
    from ditto_jax.serving.worker import EngineWorker

    if args.max_batch < 1 or args.default_max_tokens < 1 or args.batch_wait_ms < 0:
        raise DittoError("--concurrency and --max-new-tokens must be >= 1, --batch-wait-ms >= 0")
    names = served_names(args.model, args.served_model_name)
    refs = [resolve_model_ref(ref) for ref in args.model]  # a bad reference fails before anything loads
    key = api_key_from(args.api_key)
    playground = playground_from_args(args, names, key)  # a bad characters file fails before loading too
    sock = listen_socket(args.host, args.port)
    models = []
    try:
        for ref, name in zip(refs, names):
            print(f"ditto-jax serve: loading {ref.ref} ...", file=sys.stderr, flush=True)
            model, bundle = ref.load_model()
            engine = Engine(model, bundle, max_batch=args.max_batch, admission=args.batching)
            worker = EngineWorker(engine, batch_wait_s=args.batch_wait_ms / 1000, name=f"engine:{name}")
            models.append(ServedModel(name, worker, default_max_tokens=args.default_max_tokens))
        app = create_app(models, routes=playground.routes() if playground else ())
        if key:
            app.add_middleware(ApiKeyGuard, key=key)
        elif args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"ditto-jax serve: warning: listening on {args.host} without an API key; set {KEY_ENV}", file=sys.stderr, flush=True)
        if playground:
            print(f"ditto-jax serve: playground at {url_of(sock)}/ ({len(playground.characters)} character rows"
                  f"{', votes to ' + str(args.votes) if args.votes else ', votes not kept'})", file=sys.stderr, flush=True)
        print(f"ditto-jax serve: listening on {url_of(sock)}/v1 (model {', '.join(names)})", file=sys.stderr, flush=True)
        serve_forever(app, sock, access_log=args.verbose)
        print("ditto-jax serve: stopped", file=sys.stderr, flush=True)
    finally:
        for served in models:
            served.worker.close()
        if playground and playground.votes:
            playground.votes.close()
        sock.close()
    return 0


def playground_from_args(args: argparse.Namespace, names: list[str], key: str | None):
    """The playground for `--ui` (None without it); checks its flags and files."""
    if not args.ui:
        if args.characters or args.votes:
            raise DittoError("--characters and --votes need --ui")
        return None
    if not args.characters:
        raise DittoError("--ui needs --characters FILE (a characters.parquet)")
    from ditto_jax.playground.characters import CharacterIndex
    from ditto_jax.playground.routes import Playground
    from ditto_jax.playground.votes import VoteLog

    index = CharacterIndex.from_parquet(args.characters)
    votes = VoteLog(args.votes) if args.votes else None
    return Playground(characters=index, models=names, votes=votes, api_key=key)
