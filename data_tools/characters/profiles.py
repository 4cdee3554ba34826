"""Profiles: the Wikipedia article of a character, or its facts as text, cut
to a character budget at a sentence end. Every step is a Polars expression
over the whole table; the profile is cut here, once, and nowhere later."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from ditto_native import DittoError

from data_tools.sentences import cut_at_sentence, truncate_at_sentence

__all__ = ["attach_profiles", "cut_at_sentence", "facts_as_text", "load_wikipedia", "render_facts", "truncate_at_sentence"]


def _is_chinese() -> pl.Expr:
    return (pl.col("lang") == "zh") | pl.col("lang").str.starts_with("zh-")


def facts_as_text(df: pl.DataFrame, values_per_property: int = 8) -> pl.Series:
    """Each row's facts as sentences (label, description, aliases, claims
    grouped by property in order of first appearance, at most
    `values_per_property` values each), for characters with no article.

    `df` has label, description, aliases, claims and lang; the result has one
    string per row, named `profile`.
    """
    rows = df.select("label", "description", "aliases", "claims", "lang").with_row_index("_row")
    zh = _is_chinese()
    claims = (
        rows.select("_row", zh.alias("_zh"), "claims")
        .explode("claims")
        .drop_nulls("claims")
        .unnest("claims")
        .group_by("_row", "property", maintain_order=True)
        .agg(pl.col("_zh").first(), pl.col("value").head(values_per_property))
        .select(
            "_row",
            pl.when("_zh")
            .then(pl.format("{}：{}。", "property", pl.col("value").list.join("、")))
            .otherwise(
                pl.format(
                    "{}{}: {}.",
                    pl.col("property").str.slice(0, 1).str.to_uppercase(),
                    pl.col("property").str.slice(1),
                    pl.col("value").list.join(", "),
                )
            )
            .alias("_sentence"),
        )
        .group_by("_row", maintain_order=True)
        .agg("_sentence")
    )
    description = pl.col("description").fill_null("")
    has_aliases = pl.col("aliases").list.len().fill_null(0) > 0
    head = (
        pl.when(zh)
        .then(pl.when(description != "").then(pl.format("{}：{}。", "label", description)).otherwise(pl.format("{}。", "label")))
        .otherwise(pl.when(description != "").then(pl.format("{}: {}.", "label", description)).otherwise(pl.format("{}.", "label")))
    )
    aliases = (
        pl.when(~has_aliases)
        .then(pl.lit(None, dtype=pl.String))
        .when(zh)
        .then(pl.format("别名：{}。", pl.col("aliases").list.join("、")))
        .otherwise(pl.format("Also known as {}.", pl.col("aliases").list.join(", ")))
    )
    parts = pl.concat_list(head, aliases, pl.col("_sentence").fill_null(pl.lit([], dtype=pl.List(pl.String)))).list.drop_nulls()
    return (
        rows.join(claims, on="_row", how="left", maintain_order="left")
        .select(pl.when(zh).then(parts.list.join("")).otherwise(parts.list.join(" ")).alias("profile"))
        .to_series()
    )


def render_facts(
    label: str,
    description: str,
    aliases: list[str],
    claims: list[dict],
    lang: str,
    values_per_property: int = 8,
) -> str:
    """`facts_as_text` for one character.

    >>> render_facts("Ada", "mathematician", ["Ada King"], [{"property": "occupation", "value": "writer"}], "en")
    'Ada: mathematician. Also known as Ada King. Occupation: writer.'
    """
    from .schema import CHARACTER_SCHEMA

    one = pl.DataFrame(
        {"label": [label], "description": [description], "aliases": [aliases], "claims": [claims], "lang": [lang]},
        schema={k: CHARACTER_SCHEMA[k] for k in ("label", "description", "aliases", "claims", "lang")},
    )
    return facts_as_text(one, values_per_property).item()


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
    df = df.with_columns(_facts=facts_as_text(df, values_per_property))
    article = pl.col("_article").str.strip_chars()
    text = pl.when(article.str.len_chars().fill_null(0) > 0).then(article).otherwise(pl.col("_facts"))
    return df.with_columns(profile=cut_at_sentence(text, budget)).drop("_article", "_facts")
