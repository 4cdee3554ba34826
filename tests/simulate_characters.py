"""A small characters table in the characters.parquet contract, for simulation tests.

Six characters, real and fictional, from different eras and fields, so that
partner choice has contrasts to prefer. Profiles are short on purpose: the
tests run SmolLM2 on two CPU cores.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

CLAIM = pl.Struct({"property": pl.String, "value": pl.String})
CHARACTER_SCHEMA = pl.Schema(
    {
        "character_id": pl.String, "lang": pl.String, "category": pl.String, "label": pl.String,
        "description": pl.String, "aliases": pl.List(pl.String), "sitelinks": pl.Int64, "wiki_title": pl.String,
        "claims": pl.List(CLAIM), "profile": pl.String,
    }
)

_ROWS = [
    ("Q4604", "human", "Confucius", "Chinese philosopher of the Spring and Autumn period", 205,
     [("occupation", "philosopher"), ("occupation", "teacher"), ("date of birth", "551 BCE"), ("notable work", "Analects")],
     "Confucius taught in the state of Lu that good government rests on personal virtue and respect within the family. "
     "His students collected his sayings in the Analects."),
    ("Q7259", "human", "Ada Lovelace", "English mathematician and writer", 150,
     [("occupation", "mathematician"), ("date of birth", "10 December 1815"), ("field of work", "computing")],
     "Ada Lovelace worked with Charles Babbage on his Analytical Engine and wrote notes that include the first "
     "published algorithm meant for a machine."),
    ("Q4653", "fictional", "Sherlock Holmes", "fictional detective created by Arthur Conan Doyle", 140,
     [("occupation", "detective"), ("present in work", "A Study in Scarlet"), ("residence", "221B Baker Street")],
     "Sherlock Holmes is a consulting detective in London who solves crimes by close observation and deduction, "
     "helped by his friend Dr John Watson."),
    ("Q937", "human", "Albert Einstein", "German-born theoretical physicist", 260,
     [("occupation", "physicist"), ("date of birth", "14 March 1879"), ("field of work", "physics")],
     "Albert Einstein developed the theories of special and general relativity and received the 1921 Nobel Prize "
     "in Physics for explaining the photoelectric effect."),
    ("Q1048", "human", "Julius Caesar", "Roman general and statesman", 230,
     [("occupation", "military leader"), ("occupation", "politician"), ("date of birth", "100 BC")],
     "Julius Caesar conquered Gaul, crossed the Rubicon with his army, and became dictator of Rome before he was "
     "killed in the Senate in 44 BC."),
    ("sample:wukong", "fictional", "Sun Wukong", "the Monkey King of Journey to the West", 90,
     [("present in work", "Journey to the West"), ("occupation", "pilgrim guardian")],
     "Sun Wukong is a monkey born from a stone who learns magic, rebels against Heaven, and later guards the monk "
     "Tang Sanzang on his journey to fetch scriptures."),
]


def characters_frame() -> pl.DataFrame:
    rows = [
        {
            "character_id": cid, "lang": "en", "category": category, "label": label, "description": description,
            "aliases": [], "sitelinks": sitelinks, "wiki_title": label,
            "claims": [{"property": p, "value": v} for p, v in claims], "profile": profile,
        }
        for cid, category, label, description, sitelinks, claims, profile in _ROWS
    ]
    return pl.DataFrame(rows, schema=CHARACTER_SCHEMA)


def write_characters(path: Path) -> Path:
    characters_frame().write_parquet(path)
    return path
