"""Profiles: the Wikipedia article of a character, or its facts as text, cut
to a character budget at a sentence end."""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from ditto_native import DittoError

# A sentence ends at . ! ? followed by a space (closing quotes and brackets
# stay with the sentence), or at Chinese 。！？ (also ．), which need no space.
_SENTENCE_END = re.compile(r"""[.!?]['"’”)\]]*(?=\s)|[。！？．][”’」』）)]*""")


def truncate_at_sentence(text: str, budget: int) -> str:
    """`text` cut to at most `budget` characters, ending at the last sentence
    end that fits; a text with no sentence end that fits is cut at the last
    space in its second half, or at the budget.

    >>> truncate_at_sentence("One. Two three. Four", 17)
    'One. Two three.'
    >>> truncate_at_sentence("他来了。她走了。", 5)
    '他来了。'
    """
    text = text.strip()
    if len(text) <= budget:
        return text
    # One character past the budget, so "…end. Next" can see the space after "end.".
    window = text[: budget + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= budget]
    if ends:
        return text[: ends[-1]].rstrip()
    cut = text[:budget]
    space = cut.rfind(" ")
    if space > budget // 2:
        cut = cut[:space]
    return cut.rstrip()


def _is_chinese(lang: str) -> bool:
    return lang == "zh" or lang.startswith("zh-")


def render_facts(
    label: str,
    description: str,
    aliases: list[str],
    claims: list[dict],
    lang: str,
    values_per_property: int = 8,
) -> str:
    """The facts of a row as sentences, for a character with no article.

    >>> render_facts("Ada", "mathematician", ["Ada King"], [{"property": "occupation", "value": "writer"}], "en")
    'Ada: mathematician. Also known as Ada King. Occupation: writer.'
    """
    zh = _is_chinese(lang)
    grouped: dict[str, list[str]] = {}
    for claim in claims:
        grouped.setdefault(claim["property"], []).append(claim["value"])
    if zh:
        parts = [f"{label}：{description}。" if description else f"{label}。"]
        if aliases:
            parts.append(f"别名：{'、'.join(aliases)}。")
        parts += [f"{prop}：{'、'.join(values[:values_per_property])}。" for prop, values in grouped.items()]
        return "".join(parts)
    parts = [f"{label}: {description}." if description else f"{label}."]
    if aliases:
        parts.append(f"Also known as {', '.join(aliases)}.")
    for prop, values in grouped.items():
        parts.append(f"{prop[:1].upper()}{prop[1:]}: {', '.join(values[:values_per_property])}.")
    return " ".join(parts)


def load_wikipedia(path: str | Path, titles: set[str]) -> pl.DataFrame:
    """Articles from a Parquet or JSON Lines table with `title` and `text`
    columns (and, optionally, `lang`), limited to `titles`.

    Only the wanted titles are read into memory, so the table may be a whole
    Wikipedia.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            lf = pl.scan_parquet(path)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            lf = pl.scan_ndjson(path, infer_schema_length=1000)
        else:
            raise DittoError(f"{path}: Wikipedia table must be .parquet or .jsonl")
        columns = lf.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise DittoError(f"{path}: cannot read Wikipedia table ({str(exc).splitlines()[0]})") from None
    for need in ("title", "text"):
        if need not in columns:
            raise DittoError(f"{path}: Wikipedia table has no {need!r} column (columns: {', '.join(columns)})")
    keys = ["lang", "title"] if "lang" in columns else ["title"]
    try:
        wiki = (
            lf.select([*keys, "text"])
            .filter(pl.col("title").is_in(sorted(titles)))
            .with_columns(pl.col("text").cast(pl.String))
            .collect()
        )
    except pl.exceptions.PolarsError as exc:
        raise DittoError(f"{path}: cannot read Wikipedia table ({str(exc).splitlines()[0]})") from None
    return wiki.unique(subset=keys, keep="first", maintain_order=True)


def attach_profiles(
    df: pl.DataFrame,
    wiki: pl.DataFrame | None,
    budget: int,
    values_per_property: int = 8,
) -> pl.DataFrame:
    """Adds `profile`: the row's article from `wiki` (joined on its
    language's Wikipedia title, and on `lang` when `wiki` has it), else its facts
    as text; either cut to `budget` characters at a sentence end.
    """
    if wiki is not None and wiki.height:
        keys = ["lang", "title"] if "lang" in wiki.columns else ["title"]
        left = ["lang", "wiki_title"] if "lang" in keys else ["wiki_title"]
        df = df.join(wiki.rename({"text": "_article"}), left_on=left, right_on=keys, how="left", maintain_order="left")
    else:
        df = df.with_columns(_article=pl.lit(None, dtype=pl.String))
    profiles = []
    for row in df.select("label", "description", "aliases", "claims", "lang", "_article").iter_rows(named=True):
        article = (row["_article"] or "").strip()
        text = article or render_facts(
            row["label"], row["description"], row["aliases"], row["claims"], row["lang"], values_per_property
        )
        profiles.append(truncate_at_sentence(text, budget))
    return df.drop("_article").with_columns(profile=pl.Series(profiles, dtype=pl.String))
