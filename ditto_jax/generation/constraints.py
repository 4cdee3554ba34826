"""Grammar-constrained decoding with llguidance: JSON schemas and fixed choices.

The host keeps one `LLMatcher` per constrained row. Before each step it writes
the row's allowed-token bitmask (llguidance's packed int32 layout); the device
masks the logits with it before sampling; after the step the sampled token is
fed back to the matcher. Unconstrained rows never touch llguidance.

The llguidance tokenizer is built straight from the `tokenizers.Tokenizer`'s
JSON, so transformers is not needed at run time.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import llguidance
import llguidance.numpy as llg_numpy
import numpy as np

from ditto_native import DittoError

# Compact JSON: with free whitespace a small model can pad forever with newlines.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def build_lltokenizer(tokenizer, vocab_size: int, eos_token_ids: Sequence[int]) -> llguidance.LLTokenizer:
    """An llguidance tokenizer over the model's vocabulary (ids past the tokenizer's are never allowed). ~1 s."""
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise DittoError(
            f"tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens but the model only {vocab_size}; "
            "cannot constrain decoding"
        )
    return llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=vocab_size, eos_token=list(eos_token_ids))


def grammar_for(json_schema: Mapping[str, Any] | None = None, choices: Sequence[str] | None = None) -> str:
    """llguidance grammar text for a JSON schema or an alternation of literal choices."""
    if json_schema is not None:
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(json_schema), defaults=_JSON_OPTIONS)
        except (TypeError, ValueError) as exc:
            raise DittoError(f"json_schema: {str(exc).splitlines()[0]}") from None
    if choices is not None:
        # Lark string literals take JSON escapes; keep non-ASCII text as is.
        return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices))
    raise ValueError("grammar_for needs json_schema or choices")


def new_matcher(lltokenizer: llguidance.LLTokenizer, grammar: str, where: str) -> llguidance.LLMatcher:
    matcher = llguidance.LLMatcher(lltokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise DittoError(f"{where}: invalid constraint: {matcher.get_error().splitlines()[0]}")
    return matcher


class MaskWriter:
    """Fills a batch's bitmask for its constrained rows (in parallel across rows)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self._executor = llguidance.LLExecutor()

    def allocate(self, batch: int) -> np.ndarray:
        return llg_numpy.allocate_token_bitmask(batch, self.vocab_size)  # all bits set: everything allowed

    def fill(self, bitmask: np.ndarray, matchers: list[tuple[llguidance.LLMatcher, int]]) -> None:
        """Write each (matcher, row) mask into `bitmask[row]`; other rows keep what they hold."""
        if len(matchers) == 1:
            llg_numpy.fill_next_token_bitmask(matchers[0][0], bitmask, matchers[0][1])
        elif matchers:
            llg_numpy.fill_next_token_bitmask_par(self._executor, matchers, bitmask)
