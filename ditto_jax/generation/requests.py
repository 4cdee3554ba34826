"""What a caller asks the engine for, and what it gets back."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Sequence

from ditto_native import DittoError

FinishReason = Literal["stop", "length"]


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One chat conversation to complete.

    Sampling follows Hugging Face `generate` semantics: repetition penalty on the
    raw logits (prompt and generated tokens), then temperature, top-k, top-p.
    `temperature=0` is greedy. At most one of `json_schema` / `choices` may be
    set; either constrains decoding to that grammar.

    >>> GenerationRequest([{"role": "user", "content": "Hi"}], max_new_tokens=32, temperature=0)
    """

    messages: Sequence[Mapping[str, str]]
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; HF: divide positive logits, multiply negative ones
    stop: Sequence[str] = ()  # stop strings, matched on decoded text and cut from the output
    seed: int | None = None  # None: drawn from the engine's generator
    json_schema: Mapping[str, Any] | None = None
    choices: Sequence[str] | None = None  # the reply is exactly one of these strings
    n: int = 1  # independent samples of this conversation
    min_new_tokens: int = 0  # HF: EOS cannot be sampled before this many new tokens

    def check(self, where: str = "request") -> None:
        """Raise DittoError with a one-line reason if a field is out of range."""
        if not self.messages:
            raise DittoError(f"{where}: messages is empty")
        for i, message in enumerate(self.messages):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise DittoError(f"{where}: messages[{i}] needs 'role' and 'content'")
        if isinstance(self.stop, str):
            raise DittoError(f"{where}: stop must be a list of strings, not a string")
        if int(self.max_new_tokens) < 1:
            raise DittoError(f"{where}: max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if not 0 <= int(self.min_new_tokens) <= int(self.max_new_tokens):
            raise DittoError(f"{where}: min_new_tokens must be in [0, max_new_tokens] (got {self.min_new_tokens})")
        if not self.temperature >= 0:
            raise DittoError(f"{where}: temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise DittoError(f"{where}: top_p must be in (0, 1] (got {self.top_p})")
        if int(self.top_k) < 0:
            raise DittoError(f"{where}: top_k must be >= 0 (got {self.top_k})")
        if not self.repetition_penalty > 0:
            raise DittoError(f"{where}: repetition_penalty must be > 0 (got {self.repetition_penalty})")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise DittoError(f"{where}: stop strings must be non-empty strings")
        if self.seed is not None and not 0 <= int(self.seed) < 2**64:
            raise DittoError(f"{where}: seed must be in [0, 2**64) (got {self.seed})")
        if int(self.n) < 1:
            raise DittoError(f"{where}: n must be >= 1 (got {self.n})")
        if self.json_schema is not None and self.choices is not None:
            raise DittoError(f"{where}: set json_schema or choices, not both")
        if self.choices is not None:
            if isinstance(self.choices, str) or not self.choices:
                raise DittoError(f"{where}: choices must be a non-empty list of strings")
            if any(not isinstance(c, str) or not c for c in self.choices):
                raise DittoError(f"{where}: choices must be non-empty strings")

    @property
    def constrained(self) -> bool:
        return self.json_schema is not None or self.choices is not None


@dataclasses.dataclass(frozen=True)
class Completion:
    """One generated reply.

    `token_ids` are the sampled tokens, including a final EOS token when the
    reply ended on one; `text` is their decoding without special tokens, cut
    before the first stop string.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
