"""Multi-turn answers from the model under test.

Every conversation is answered turn by turn: turn t is asked with the system
intro, the earlier prompts and the model's own earlier answers, as the paper
does. Turn t of all conversations goes out as one batch, so the backend can
batch or keep many requests in flight.

System intro: where the model's chat template drops or rejects a system
message, the intro goes into the first user turn, exactly as `ditto-data
tokenize` trains it (the template is probed by the same Rust encoder;
`ChatEncoder.system_policy`). Over HTTP the template is the server's
business, so the intro goes as a system message unless `--system-policy
fold` says otherwise.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ditto_native import DittoError

from data_tools.llm.runner import CallRunner
from data_tools.llm.types import CallFailed, ChatRequest
from data_tools.simulation.seeding import stable_int

NATIVE = "native"
FOLD = "fold_into_first_user"
SYSTEM_POLICIES = ("auto", NATIVE, FOLD)
SEED_BITS = 31


@dataclasses.dataclass(frozen=True)
class AnswerSettings:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if self.max_tokens < 1:
            raise DittoError(f"--max-new-tokens must be >= 1 (got {self.max_tokens})")
        if not self.temperature >= 0:
            raise DittoError(f"--temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise DittoError(f"--top-p must be in (0, 1] (got {self.top_p})")


@dataclasses.dataclass(frozen=True)
class Conversation:
    key: str  # stable identity: part of every seed
    system: str | None
    prompts: tuple[str, ...]


@dataclasses.dataclass
class Answered:
    answers: list[str]
    finish_reasons: list[str]


def template_system_policy(backend, requested: str = "auto") -> str:
    """`native` or `fold_into_first_user` for this backend (see the module docstring)."""
    if requested != "auto":
        return requested
    engine = getattr(backend, "engine", None)
    if engine is None:
        return NATIVE
    from data_tools.tokenize import tokenizer_source_from_bundle

    return tokenizer_source_from_bundle(engine.bundle, f"--model {backend.model_name}").encoder({}).system_policy


def opening(system: str | None, first_prompt: str, policy: str) -> list[dict[str, str]]:
    """The first turn's messages; folding joins intro and prompt as tokenize does ("{system}\\n\\n{prompt}")."""
    if not system:
        return [{"role": "user", "content": first_prompt}]
    if policy == FOLD:
        return [{"role": "user", "content": f"{system}\n\n{first_prompt}"}]
    return [{"role": "system", "content": system}, {"role": "user", "content": first_prompt}]


def answer_conversations(
    conversations: Sequence[Conversation], runner: CallRunner, settings: AnswerSettings, policy: str
) -> list[Answered]:
    """Answers for every turn of every conversation, in order.

    A call that fails after the backend's retries ends its conversation; the
    others are finished (and cached) first, then DittoError says how many
    failed, so a re-run completes them from the cache.
    """
    done = [Answered([], []) for _ in conversations]
    history = [opening(c.system, c.prompts[0], policy) for c in conversations]
    failed: list[str] = []
    alive = set(range(len(conversations)))
    runner.plan(sum(len(c.prompts) for c in conversations))
    for turn in range(max(len(c.prompts) for c in conversations)):
        batch = [i for i in sorted(alive) if turn < len(conversations[i].prompts)]
        if not batch:
            break
        if turn:
            for i in batch:
                history[i].append({"role": "user", "content": conversations[i].prompts[turn]})
        requests = [
            ChatRequest.chat(
                history[i], max_tokens=settings.max_tokens, temperature=settings.temperature, top_p=settings.top_p,
                seed=stable_int(settings.seed, "answer", conversations[i].key, turn, bits=SEED_BITS),
            )
            for i in batch
        ]
        for i, result in zip(batch, runner.run(requests)):
            if isinstance(result, CallFailed):
                failed.append(f"{result.reason}: {result.detail}")
                alive.discard(i)
                runner.plan(-(len(conversations[i].prompts) - turn - 1))
                continue
            text = result.text.strip()
            history[i].append({"role": "assistant", "content": text})
            done[i].answers.append(text)
            done[i].finish_reasons.append(result.finish_reason)
    if failed:
        raise DittoError(
            f"{len(failed)} answer call(s) failed after every retry (first: {' '.join(failed[0].split())[:200]}); "
            "re-run to finish them: finished calls come from the cache"
        )
    return done
