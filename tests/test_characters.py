"""The characters stage apart from the dump scan: the built-in sample, profile
truncation and fact rendering, ranking, and the CLI's sample path."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from ditto_native import DittoError
from hypothesis import given
from hypothesis import strategies as st

from data_tools.characters import (
    CHARACTER_SCHEMA,
    CharactersConfig,
    characters_from_sample,
    load_sample,
    render_facts,
    top_per_category,
    truncate_at_sentence,
)
from data_tools.characters.sample import sample_records
from data_tools.cli import main

# --- the built-in sample ------------------------------------------------------


def test_sample_covers_both_languages_and_categories_in_the_contract_schema():
    table = characters_from_sample(CharactersConfig(per_category=None))
    assert table.schema == CHARACTER_SCHEMA
    counts = {(lang, cat): n for lang, cat, n in table.group_by("lang", "category").len().iter_rows()}
    assert set(counts) == {("en", "human"), ("en", "fictional"), ("zh", "human"), ("zh", "fictional")}
    for lang in ("en", "zh"):
        assert counts[(lang, "human")] + counts[(lang, "fictional")] >= 60
        assert min(counts[(lang, "human")], counts[(lang, "fictional")]) >= 25
    assert table.select(pl.struct("character_id", "lang").is_unique().all()).item()
    for r in table.iter_rows(named=True):
        assert r["label"] and r["profile"] and r["claims"], r["character_id"]
        assert r["profile"].count("。" if r["lang"] == "zh" else ". ") >= 2, f"{r['character_id']}: a profile is several sentences"
        assert r["character_id"].startswith(("Q", "sample:"))
    # The examples are all there, in both languages.
    en_labels = set(table.filter(pl.col("lang") == "en")["label"])
    for name in ("Confucius", "Cleopatra", "Isaac Newton", "Marie Curie", "Albert Einstein", "Li Bai", "Sun Wukong",
                 "Sherlock Holmes", "Harry Potter", "Elizabeth Bennet", "Lin Daiyu", "Zhuge Liang", "Hua Mulan",
                 "Frodo Baggins", "Darth Vader", "Hermione Granger"):
        assert name in en_labels, name
    zh_labels = set(table.filter(pl.col("lang") == "zh")["label"])
    assert {"孔子", "李白", "孙悟空", "林黛玉", "诸葛亮", "花木兰"} <= zh_labels


def test_sample_records_are_consistent_across_languages():
    for r in sample_records():
        en, zh = r["langs"]["en"], r["langs"]["zh"]
        assert r["category"] in ("human", "fictional")
        # The same facts in both languages, property by property.
        assert len(en["claims"]) == len(zh["claims"]), r["id"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh["profile"]), r["id"]


def test_sample_respects_languages_and_per_category(tmp_path: Path):
    out = tmp_path / "chars.parquet"
    assert main(["characters", "--sample", "--languages", "zh", "--per-category", "3", "--profile-chars", "60",
                 "--out", str(out)]) == 0
    table = pl.read_parquet(out)
    assert table.schema == CHARACTER_SCHEMA
    assert table["lang"].unique().to_list() == ["zh"]
    assert table.group_by("category").len().sort("category").rows() == [("fictional", 3), ("human", 3)]
    # The three most-linked of each category, in rank order.
    humans = table.filter(pl.col("category") == "human")
    assert humans["sitelinks"].to_list() == sorted(humans["sitelinks"].to_list(), reverse=True)
    assert humans["character_id"][0] == "Q937"  # Einstein has the most sitelinks in the sample
    assert all(len(p) <= 60 and p.endswith(("。", "！", "？")) for p in table["profile"])


def test_sample_rejects_a_language_it_does_not_have(tmp_path: Path, capsys):
    with pytest.raises(DittoError, match="not fr"):
        load_sample(["en", "fr"])
    assert main(["characters", "--sample", "--languages", "fr", "--out", str(tmp_path / "x.parquet")]) == 2
    assert "not fr" in capsys.readouterr().err


# --- profiles -----------------------------------------------------------------


def test_truncation_ends_at_sentences_in_both_scripts():
    text = "He was born in Ulm. He studied in Zurich! Did he? Yes. The end"
    assert truncate_at_sentence(text, 100) == text
    assert truncate_at_sentence(text, 45) == "He was born in Ulm. He studied in Zurich!"
    assert truncate_at_sentence(text, 19) == "He was born in Ulm."
    assert truncate_at_sentence("Mr. X said \"Go.\" Then left.", 18) == 'Mr. X said "Go."'
    zh = "他出生于乌尔姆。他在苏黎世求学！真的吗？是的。"
    assert truncate_at_sentence(zh, 10) == "他出生于乌尔姆。"
    assert truncate_at_sentence(zh, 19) == "他出生于乌尔姆。他在苏黎世求学！"
    # No sentence end within the budget: cut at a space, else at the budget.
    assert truncate_at_sentence("one two three four five six", 15) == "one two three"
    assert truncate_at_sentence("一二三四五六七八九十", 4) == "一二三四"


@given(st.text(alphabet=st.sampled_from(list("ab .!?。！？\n")), max_size=80), st.integers(1, 90))
def test_truncation_is_a_prefix_within_budget(text: str, budget: int):
    out = truncate_at_sentence(text, budget)
    assert len(out) <= budget
    assert text.strip().startswith(out)


def test_facts_render_as_sentences():
    claims = [{"property": "occupation", "value": "physicist"}, {"property": "occupation", "value": "writer"},
              {"property": "date of birth", "value": "14 March 1879"}]
    assert render_facts("Albert Einstein", "physicist", ["Einstein"], claims, "en") == (
        "Albert Einstein: physicist. Also known as Einstein. Occupation: physicist, writer. Date of birth: 14 March 1879."
    )
    zh = [{"property": "职业", "value": "物理学家"}, {"property": "职业", "value": "作家"}]
    assert render_facts("爱因斯坦", "", [], zh, "zh") == "爱因斯坦。职业：物理学家、作家。"
    assert render_facts("X", "", [], [{"property": "p", "value": str(i)} for i in range(5)], "en", values_per_property=2) == "X. P: 0, 1."


# --- ranking ------------------------------------------------------------------


def test_ranking_is_by_sitelinks_then_numeric_id_per_category_and_language():
    rows = [
        ("Q100", "en", "human", 5), ("Q20", "en", "human", 5), ("Q3", "en", "human", 1), ("Q9", "en", "human", 7),
        ("Q1000", "en", "fictional", 2), ("sample:x", "en", "fictional", 2), ("Q7", "zh", "human", 1),
    ]
    df = pl.DataFrame(rows, schema=["character_id", "lang", "category", "sitelinks"], orient="row")
    top = top_per_category(df.sample(fraction=1.0, shuffle=True, seed=3), 2)
    assert top.rows() == [
        ("Q1000", "en", "fictional", 2), ("sample:x", "en", "fictional", 2),
        ("Q9", "en", "human", 7), ("Q20", "en", "human", 5),
        ("Q7", "zh", "human", 1),
    ]


def test_config_rejects_bad_settings():
    with pytest.raises(DittoError, match="per_category"):
        CharactersConfig(per_category=0)
    with pytest.raises(DittoError, match="property"):
        CharactersConfig(properties=("P27", "occupation"))
    with pytest.raises(DittoError, match="class"):
        CharactersConfig(classes=(("5", "human"),))
    with pytest.raises(DittoError, match="distinct"):
        CharactersConfig(languages=("en", "en"))


def test_sample_file_is_package_data():
    import data_tools

    path = Path(data_tools.__file__).parent / "sample" / "characters.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert len(doc["characters"]) >= 60
