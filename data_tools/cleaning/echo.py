"""`prompt_echo`: text that repeats the simulation prompts' own scaffolding.

A small simulator sometimes copies its instructions ("Stay in this role from
the first word to the last") or a format description into a question, an
answer or an evidence string. Such text is no role-play. The scaffolding is
read from the built-in prompt templates themselves: their literal text
between Jinja tags, cut at punctuation into phrases, and the phrases long
enough to be unmistakable (SCAFFOLD_MIN_CHARS, or SCAFFOLD_MIN_CJK Han
characters) are searched for, case-insensitively and with white space
collapsed. Placeholders of earlier built-in prompts are searched for too, so
dialogues simulated with them are still caught.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import resources

import polars as pl

SCAFFOLD_MIN_CHARS = 24  # "in your own voice and era" is 25; shorter phrases occur in honest answers
SCAFFOLD_MIN_CJK = 6

# Placeholders that earlier built-in query prompts put in their JSON example, and models copied.
EARLIER_PLACEHOLDERS = (
    "<a question for",
    "<a supporting fact from the material>",
    "<向",
    "<资料中支持答案的事实>",
)

_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_CUT = re.compile(r"""[\n:：;；。!?！？,，()（）"“”「」]|(?<=\.)\s|^\s*-\s""")
_HAN = re.compile(r"[\u3400-\u9fff]")


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def normalised(expr: pl.Expr) -> pl.Expr:
    """`normalise` as a Polars expression."""
    return expr.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def scaffolding_phrases(templates: Iterable[str]) -> list[str]:
    """The unmistakable literal phrases of Jinja prompt templates, normalised, sorted."""
    phrases: set[str] = set()
    for source in templates:
        for literal in _TAG.split(_COMMENT.sub("", source)):
            for piece in _CUT.split(literal):
                piece = normalise(piece.strip(" -.'\""))
                if len(piece) >= SCAFFOLD_MIN_CHARS or len(_HAN.findall(piece)) >= SCAFFOLD_MIN_CJK:
                    phrases.add(piece)
    return sorted(phrases)


@functools.cache
def builtin_phrases() -> tuple[str, ...]:
    """Scaffolding of every built-in prompt template, plus the earlier placeholders."""
    folder = resources.files("data_tools").joinpath("prompts")
    sources = [entry.read_text(encoding="utf-8") for entry in folder.iterdir() if entry.name.endswith(".jinja")]
    return tuple(sorted({*scaffolding_phrases(sources), *(normalise(p) for p in EARLIER_PLACEHOLDERS)}))


def echo_detail(turns: pl.DataFrame, phrases: tuple[str, ...]) -> pl.Series:
    """Per turn, a detail naming what repeats the scaffolding (question, answer or evidence), else null.

    `turns` has `question`, `answer` and `evidence` (list of strings).
    """
    nothing = pl.Series("detail", [None] * turns.height, dtype=pl.String)
    if not phrases:
        return nothing
    patterns = list(phrases)
    # Perf: collapsing white space with a regex over every text was 3/4 of this check
    # (0.25 of 0.33 s CPU on 27k session-length turns). A phrase found in the normalised
    # text has each of its space-free pieces verbatim in the lower-cased text (only white
    # space runs change), so turns whose lower-cased texts hold no phrase's longest piece
    # cannot match and skip the normalising; the rest get the exact expression below.
    keys = sorted({max(p.split(" "), key=len) for p in patterns})
    if all(keys):
        def maybe(expr: pl.Expr) -> pl.Expr:
            return expr.str.to_lowercase().str.contains_any(keys)

        candidate = turns.select(
            (maybe(pl.col("question")) | maybe(pl.col("answer")) | pl.col("evidence").list.eval(maybe(pl.element())).list.any())
            .fill_null(False)
        ).to_series()
        if not candidate.any():
            return nothing
        return nothing.scatter(candidate.arg_true(), _detail(turns.filter(candidate), patterns))
    return _detail(turns, patterns)


def _detail(turns: pl.DataFrame, patterns: list[str]) -> pl.Series:
    """The detail of every row of `turns`, from the normalised texts."""

    def found(expr: pl.Expr) -> pl.Expr:
        return normalised(expr).str.extract_many(patterns).list.first()

    evidence = pl.col("evidence").list.eval(found(pl.element())).list.drop_nulls().list.first()
    detail = pl.coalesce(
        pl.format("question repeats prompt text '{}'", found(pl.col("question"))),
        pl.format("answer repeats prompt text '{}'", found(pl.col("answer"))),
        pl.format("evidence repeats prompt text '{}'", evidence),
    )
    return turns.select(detail.alias("detail")).to_series()
