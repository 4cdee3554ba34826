"""The in-process backend: ditto_jax's continuous-batching Engine, no HTTP in between.

Up to `max_batch` requests are in the engine at once; as each one finishes,
its reply is yielded (so the caller can store it) and the next request takes
its place at the next decode step, so one long reply never holds up the rest.
Prompts are encoded by the engine with the same injection-safe chat encoder as
`ditto-data tokenize`. ditto_jax is imported only here, and only when this
backend is built (data_tools never needs it otherwise).
"""
from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

from ditto_native import DittoError

from data_tools.llm.types import CallFailed, ChatRequest, ChatResult


class JaxBackend:
    """`complete(requests)` on a model loaded in this process.

    >>> backend = JaxBackend.load("smollm2", max_batch=16)  # doctest: +SKIP
    """

    def __init__(self, engine, model_name: str, *, max_batch: int = 16):
        if max_batch < 1:
            raise DittoError(f"--concurrency must be >= 1 (got {max_batch})")
        self.engine = engine
        self.model_name = model_name
        self.max_batch = max_batch

    @classmethod
    def load(cls, model_ref: str, *, max_batch: int = 16) -> JaxBackend:
        from ditto_jax.generation import Engine
        from ditto_jax.loader import load_model

        model, bundle = load_model(model_ref)
        return cls(Engine(model, bundle, max_batch=max_batch), model_ref, max_batch=max_batch)

    def complete(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult | CallFailed]]:
        waiting = collections.deque(range(len(requests)))
        running: dict[int, object] = {}  # request index -> engine ticket
        try:
            while waiting or running:
                while waiting and len(running) < self.max_batch:
                    i = waiting.popleft()
                    try:
                        running[i] = self.engine.submit(self._generation_request(requests[i]), where=f"request {i}")
                    except DittoError as exc:  # a bad request fails alone
                        yield i, CallFailed("invalid_request", str(exc))
                if not running:
                    continue
                self.engine.step()
                for i in [i for i, ticket in running.items() if ticket.done]:
                    try:
                        completion = running.pop(i).wait(0)[0]
                    except DittoError as exc:  # the engine ended it (see Engine.fail_all)
                        yield i, CallFailed("engine_error", str(exc))
                        continue
                    yield i, ChatResult(completion.text, completion.finish_reason, completion.prompt_tokens, completion.completion_tokens)
        finally:
            for ticket in running.values():  # the caller stopped early: free the engine's rows
                ticket.cancel()
            if running:
                self.engine.step()

    @staticmethod
    def _generation_request(r: ChatRequest):
        from ditto_jax.generation import GenerationRequest

        return GenerationRequest(
            messages=r.message_dicts(), max_new_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
            stop=r.stop, seed=r.seed, json_schema=r.json_schema,
        )

    def retry_counts(self) -> dict[str, int]:
        return {}  # nothing between us and the engine can fail transiently

    def close(self) -> None:
        pass
