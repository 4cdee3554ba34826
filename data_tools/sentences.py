"""Sentence ends, the one definition used to cut profiles and to trim answers.

A sentence ends at . ! ? followed by white space (closing quotes and brackets
stay with the sentence), or at Chinese 。！？ (also ．), which need no space.
The same rule is written twice: as a Polars expression, for cutting a whole
column of profiles at once, and as a Python pattern, for one reply at a time.
"""
from __future__ import annotations

import re

import polars as pl

_LATIN_STOP = r"""[.!?]['"’”)\]]*"""
_CJK_STOP = r"[。！？．][”’」』）)]*"

# Python: a Latin stop counts before white space or at the end of the text.
_SENTENCE_END = re.compile(rf"{_LATIN_STOP}(?=\s|$)|{_CJK_STOP}")


def cut_at_sentence(text: pl.Expr, budget: int) -> pl.Expr:
    """`text` cut to at most `budget` characters, ending at the last sentence
    end that fits; a text with no sentence end that fits is cut at its last
    space in the second half of the budget, or at the budget. Stripped; null
    stays null.

    >>> pl.select(cut_at_sentence(pl.lit("One. Two three. Four"), 17)).item()
    'One. Two three.'
    """
    text = text.str.strip_chars()
    # One character past the budget, so that "…end. Next" can see the space after "end.".
    latin = text.str.slice(0, budget + 1).str.extract(rf"^((?s:.*){_LATIN_STOP})\s", 1)
    cjk = text.str.slice(0, budget).str.extract(rf"^((?s:.*){_CJK_STOP})", 1)
    head = text.str.slice(0, budget)
    before_space = head.str.extract(r"^((?s:.*)) ", 1)
    longest = (
        pl.when(latin.str.len_chars().fill_null(0) >= cjk.str.len_chars().fill_null(0)).then(latin).otherwise(cjk)
    )
    fallback = pl.when(before_space.str.len_chars() > budget // 2).then(before_space).otherwise(head)
    cut = pl.coalesce(longest, fallback).str.strip_chars_end()
    return pl.when(text.str.len_chars() <= budget).then(text).otherwise(cut)


def truncate_at_sentence(text: str, budget: int) -> str:
    """`cut_at_sentence` on one string.

    >>> truncate_at_sentence("他来了。她走了。", 5)
    '他来了。'
    """
    return pl.select(cut_at_sentence(pl.lit(text, dtype=pl.String), budget)).item()


def trim_to_last_sentence(text: str) -> str:
    """`text` up to the end of its last complete sentence; "" when it has none.

    For a reply cut at a token limit: what follows the last sentence end is a
    sentence cut short.

    >>> trim_to_last_sentence("I was born in Lu. Later I trav")
    'I was born in Lu.'
    >>> trim_to_last_sentence("我生于鲁国。后来我")
    '我生于鲁国。'
    """
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""
