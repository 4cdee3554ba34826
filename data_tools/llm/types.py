"""What a caller asks an LLM backend for, what it gets back, and the backend interface."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    `sample_index` tells apart repeated draws of the same prompt (for example
    the re-tries of a query whose JSON did not parse); together with the model
    name and every other field it forms the call's cache key.
    """

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None  # constrain the reply to this schema where the backend can
    sample_index: int = 0

    @classmethod
    def chat(cls, messages: Sequence[Mapping[str, str]], **kwargs: Any) -> ChatRequest:
        return cls(tuple((m["role"], m["content"]) for m in messages), **kwargs)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def identity(self) -> dict[str, Any]:
        """Every field that changes the reply: the basis of the cache key."""
        return {
            "messages": [list(m) for m in self.messages],
            "max_tokens": int(self.max_tokens),
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "seed": self.seed,
            "stop": list(self.stop),
            "json_schema": self.json_schema,
            "sample_index": int(self.sample_index),
        }


@dataclasses.dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str  # "stop", "length", or whatever the endpoint reports
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CallFailed(Exception):
    """A call that produced no reply after every retry. `reason` is a stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Backend(Protocol):
    """Something that turns chat requests into replies.

    `complete` yields `(index, ChatResult | CallFailed)` for every request, in
    the order they finish, so a caller can store each one as soon as it
    exists. A problem that makes every call hopeless (a bad API key, an
    unknown model) raises DittoError instead.
    """

    model_name: str  # the simulator's name: the `simulator` column and part of every cache key

    def complete(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult | CallFailed]]: ...

    def retry_counts(self) -> dict[str, int]:
        """Retries so far by reason (e.g. "429", "5xx", "connection", "timeout", "bad_body")."""
        ...

    def close(self) -> None: ...
