"""The in-process backend: ditto_jax's batched Engine, no HTTP in between.

Requests go to `Engine.generate` in batches of `max_batch`, longest prompts
together (fewer pad tokens), and each batch's replies are yielded as soon as
it ends so the caller can store them. ditto_jax is imported only here, and
only when this backend is built (data_tools never needs it otherwise).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from ditto_native import DittoError

from data_tools.llm.types import CallFailed, ChatRequest, ChatResult

log = logging.getLogger(__name__)


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
        # Similar lengths share a batch; the character count is a cheap stand-in for tokens.
        order = sorted(range(len(requests)), key=lambda i: sum(len(c) for _, c in requests[i].messages))
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            yield from zip(chunk, self._generate([requests[i] for i in chunk]))

    def _generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult | CallFailed]:
        from ditto_jax.generation import GenerationRequest

        gen = [
            GenerationRequest(
                messages=r.message_dicts(), max_new_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                stop=r.stop, seed=r.seed, json_schema=r.json_schema,
            )
            for r in requests
        ]
        try:
            completions = self.engine.generate(gen)
        except DittoError as exc:
            if len(gen) == 1:
                return [CallFailed("invalid_request", str(exc))]
            # One bad request must not sink its batch: find it by running each alone.
            log.warning("batch failed (%s); running its %d requests one by one", exc, len(gen))
            return [result for r in requests for result in self._generate([r])]
        return [
            ChatResult(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in completions
        ]

    def retry_counts(self) -> dict[str, int]:
        return {}  # nothing between us and the engine can fail transiently

    def close(self) -> None:
        pass
