"""`ditto-jax generate` and `ditto-jax chat`: one reply, or a terminal conversation.

Only the assistant's replies go to stdout, so the output can be piped; every
log line goes to stderr.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    gen = subparsers.add_parser(
        "generate", help="reply to one prompt; prints only the reply",
        description="Generate the assistant's reply to one user prompt. Stdout carries only the reply; logs go to stderr.",
    )
    gen.add_argument("--model", required=True, help="model reference: smollm2, a Hugging Face directory, a .gguf file, or a training run or checkpoint (OUT, OUT/checkpoints/N)")
    gen.add_argument("--system", help="system message")
    gen.add_argument("--prompt", required=True, help="the user message")
    _sampling_args(gen, max_new_tokens=256)
    gen.set_defaults(func=run_generate)

    chat = subparsers.add_parser(
        "chat", help="multi-turn chat on stdin/stdout",
        description="Chat with a model: one user message per input line; /exit or end of input quits. History is kept.",
    )
    chat.add_argument("--model", required=True, help="model reference: smollm2, a Hugging Face directory, a .gguf file, or a training run or checkpoint (OUT, OUT/checkpoints/N)")
    chat.add_argument("--system", help="system message")
    _sampling_args(chat, max_new_tokens=512)
    chat.set_defaults(func=run_chat)


def _sampling_args(parser: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N", help=f"reply length limit in tokens (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default 0.7)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off (default)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 = off (default)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="HF repetition penalty; 1 = off (default)")
    parser.add_argument("--stop", action="append", default=[], metavar="S", help="stop string (repeatable); not included in the reply")
    parser.add_argument("--seed", type=int, help="sampling seed (default: random)")


def _load(args):
    from ditto_jax.generation import Engine
    from ditto_jax.loader import resolve_model_ref

    ref = resolve_model_ref(args.model)  # a bad reference fails here, before any progress line
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    model, bundle = ref.load_model()
    return Engine(model, bundle, max_batch=1)


def _request(args, messages, seed_offset: int = 0):
    from ditto_jax.generation import GenerationRequest

    return GenerationRequest(
        messages=messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, repetition_penalty=args.repetition_penalty, stop=tuple(args.stop),
        seed=None if args.seed is None else args.seed + seed_offset,
    )


def _system(args) -> list[dict]:
    return [{"role": "system", "content": args.system}] if args.system else []


def run_generate(args) -> int:
    request = _request(args, _system(args) + [{"role": "user", "content": args.prompt}])
    request.check("arguments")  # reject bad options before the model loads
    engine = _load(args)
    completion = engine.generate([request])[0]
    sys.stdout.write(completion.text + "\n")
    sys.stdout.flush()
    return 0


def run_chat(args) -> int:
    _request(args, [{"role": "user", "content": "-"}]).check("arguments")
    engine = _load(args)
    interactive = sys.stdin.isatty()
    history = _system(args)
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if text == "/exit":
            break
        if not text:
            continue
        history.append({"role": "user", "content": text})
        # Offset a fixed seed by the turn so turns do not replay the same draws.
        request = _request(args, history, seed_offset=turn)
        reply = engine.generate([request])[0].text
        history.append({"role": "assistant", "content": reply})
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()
        turn += 1
    return 0

