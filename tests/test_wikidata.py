"""The Wikidata dump scan: a fragment written here in the real dump format,
the real records in shared/external, compressed inputs, bad input, and a
scan killed part-way."""
from __future__ import annotations

import bz2
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import ditto_native
import polars as pl
import pytest
from ditto_native import DittoError

from data_tools.characters import CharactersConfig, characters_from_dump, scan_dump, top_per_category
from data_tools.cli import main

REPO = Path(__file__).resolve().parents[1]
PROPS = ("P27", "P106", "P19", "P569", "P570", "P2048", "P1449", "P1441", "P1080", "P170")


# --- building a dump fragment -------------------------------------------------


def item(qid: str) -> dict:
    return {"value": {"entity-type": "item", "numeric-id": int(qid[1:]), "id": qid}, "type": "wikibase-entityid"}


def legacy_item(qid: str) -> dict:
    # 2014-2015 dumps: no "id", only the number.
    return {"value": {"entity-type": "item", "numeric-id": int(qid[1:])}, "type": "wikibase-entityid"}


def time(t: str, precision: int, julian: bool = False) -> dict:
    cal = "Q1985786" if julian else "Q1985727"
    return {
        "value": {"time": t, "timezone": 0, "before": 0, "after": 0, "precision": precision,
                  "calendarmodel": f"http://www.wikidata.org/entity/{cal}"},
        "type": "time",
    }


def st(prop: str, datavalue: dict | None, rank: str = "normal", snaktype: str = "value") -> dict:
    snak = {"snaktype": snaktype, "property": prop}
    if datavalue is not None:
        snak["datavalue"] = datavalue
    return {"mainsnak": snak, "type": "statement", "id": f"Q$x-{prop}", "rank": rank}


def terms(**by_lang: str) -> dict:
    return {lang.replace("_", "-"): {"language": lang.replace("_", "-"), "value": v} for lang, v in by_lang.items()}


def entity(eid: str, labels: dict, claims: dict | None = None, sites: dict | None = None, kind: str = "item",
           descriptions: dict | None = None, aliases: dict | None = None, with_sites: bool = True) -> dict:
    e = {"type": kind, "id": eid, "labels": labels, "descriptions": descriptions or {},
         "aliases": {lang: [{"language": lang, "value": a} for a in vals] for lang, vals in (aliases or {}).items()},
         "claims": {p: stmts for p, stmts in (claims or {}).items()}}
    if with_sites:
        e["sitelinks"] = {s: {"site": s, "title": t, "badges": []} for s, t in (sites or {}).items()}
    return e


def human(*extra: dict) -> list[dict]:
    return [st("P31", item("Q5")), *extra]


def fragment_lines() -> list[bytes]:
    """The entity lines (without the dump's brackets and commas), file order.

    Line numbers in the dump are index + 2 (line 1 is "[")."""
    E = entity
    ents: list[dict | bytes] = [
        E("Q30", terms(en="United States", zh="美国")),  # 2: used by a character further down
        E("P27", terms(en="country of citizenship", zh="国籍"), kind="property"),  # 3
        E("Q100", terms(en="Ada Example", zh="艾达·范例"),  # 4
          descriptions=terms(en="test mathematician", zh="测试数学家"),
          aliases={"en": ["A. Example", "Countess Example"]},
          claims={"P31": human(), "P27": [st("P27", item("Q30"))],
                  "P106": [st("P106", item("Q36180")), st("P106", item("Q82955"), rank="deprecated")],
                  "P569": [st("P569", time("+1815-12-10T00:00:00Z", 11))],
                  "P2048": [st("P2048", {"value": {"amount": "+1.65", "unit": "http://www.wikidata.org/entity/Q11573"}, "type": "quantity"})],
                  "P19": [st("P19", None, snaktype="somevalue")],
                  "P1449": [st("P1449", {"value": {"text": "The Enchantress", "language": "en"}, "type": "monolingualtext"})],
                  "P999": [st("P999", {"value": "not a kept property", "type": "string"})]},
          sites={"enwiki": "Ada Example", "zhwiki": "艾达·范例", "frwiki": "Ada Exemple"}),
        E("Q200", terms(zh="林测试", zh_hant="林測試"),  # 5: in both classes; no English label
          descriptions=terms(zh="测试角色"), aliases={"zh": ["测试"]},
          claims={"P31": [st("P31", item("Q5")), st("P31", item("Q15632617"))], "P1441": [st("P1441", item("Q900"))]},
          sites={"zhwiki": "林测试"}),
        E("Q300", terms(en="Deprecated Person"),  # 6: human only through a deprecated statement
          claims={"P31": [st("P31", item("Q5"), rank="deprecated"), st("P31", item("Q215627"))]}),
        E("Q400", terms(en="Nobody Links"),  # 7: legacy values, no sitelinks at all, no Chinese label
          claims={"P31": [st("P31", legacy_item("Q5"))], "P106": [st("P106", legacy_item("Q36180"))]}, with_sites=False),
        b"this line is not json",  # 8
        E("Q500", terms(mul="Mul Person", en_gb="Mul Person (GB)"),  # 9: only a "mul" label
          claims={"P31": human(), "P569": [st("P569", time("+1876-00-00T00:00:00Z", 8))]},
          sites={"enwiki": "Mul Person", "dewiki": "Mul Person"}),
        b'{"type":"item","id":"Q990","labels":{"en":{"language":"en","value":"\xff\xfe"}},"claims":{}}',  # 10
        E("Q600", terms(en="Hero Six", zh="英雄六"), descriptions=terms(en="test hero"),  # 11
          claims={"P31": [st("P31", item("Q15632617"))], "P1080": [st("P1080", item("Q901"))],
                  "P170": [st("P170", item("Q100"))], "P569": [st("P569", time("+1980-00-00T00:00:00Z", 9))]},
          sites={"enwiki": "Hero Six", "zhwiki": "英雄六", "jawiki": "ヒーロー六"}),
        E("Q700", terms(en="Old Sage", zh="老贤者"),  # 12
          claims={"P31": human(), "P569": [st("P569", time("-0551-00-00T00:00:00Z", 9))],
                  "P570": [st("P570", time("+1642-12-25T00:00:00Z", 11, julian=True))]},
          sites={"enwiki": "Old Sage", "zhwiki": "老贤者", "frwiki": "Vieux sage", "dewiki": "Alter Weiser"}),
        E("Q800", terms(en="Tie Eight", zh="平八"), claims={"P31": human(), "P27": [st("P27", item("Q30"))]},  # 13
          sites={"enwiki": "Tie Eight", "dewiki": "Tie Acht"}),
        E("Q801", terms(en="Tie Eight-One", zh="平八一"), claims={"P31": human(), "P27": [st("P27", item("Q31"))]},  # 14
          sites={"enwiki": "Tie Eight-One", "frwiki": "Égalité"}),
        E("Q980", terms(fr="Personne"), claims={"P31": human()}, sites={"frwiki": "Personne"}),  # 15: no label we want
        # 16: a character whose line is damaged (a comma lost)
        b'{"type":"item","id":"Q998","labels":{"en":{"language":"en","value":"Broken"}} "claims":{"P31":[{"mainsnak":'
        b'{"snaktype":"value","property":"P31","datavalue":{"value":{"id":"Q5"},"type":"wikibase-entityid"}},"rank":"normal"}]}}',
        E("Q36180", terms(en="writer", zh="作家")),  # 17
        E("Q82955", terms(en="politician", zh="政治家")),  # 18: only behind a deprecated statement
        E("Q11573", terms(en="metre", zh="米")),  # 19
        E("Q900", terms(en="Test Novel", zh="测试小说")),  # 20
        E("Q901", terms(en="Test Universe")),  # 21: no Chinese label
        E("P106", terms(en="occupation", zh="职业"), kind="property"),  # 22
        E("P569", terms(en="date of birth", zh="出生日期"), kind="property"),
        E("P570", terms(en="date of death", zh="逝世日期"), kind="property"),
        E("P2048", terms(en="height", zh="身高"), kind="property"),
        E("P19", terms(en="place of birth", zh="出生地"), kind="property"),
        E("P1449", terms(en="nickname"), kind="property"),
        E("P1441", terms(en="present in work", zh="登场作品"), kind="property"),
        E("P1080", terms(en="from narrative universe", zh="来自虚构宇宙"), kind="property"),
        E("P170", terms(en="creator", zh="创作者"), kind="property"),  # 30
    ]
    out = []
    for i, e in enumerate(ents):
        if isinstance(e, bytes):
            out.append(e)
        elif e["id"] == "Q200":  # one line in raw UTF-8, the rest escaped like the real dumps
            out.append(json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode())
        else:
            out.append(json.dumps(e, ensure_ascii=True, separators=(",", ":")).encode())
    return out


def fragment() -> bytes:
    return b"[\n" + b"".join(line + b",\n" for line in fragment_lines()) + b"]\n"


def c(prop: str, value: str) -> dict:
    return {"property": prop, "value": value}


def row(cid, lang, cat, label, desc, aliases, sitelinks, title, claims):
    return {"character_id": cid, "lang": lang, "category": cat, "label": label, "description": desc,
            "aliases": aliases, "sitelinks": sitelinks, "wiki_title": title, "claims": claims}


EXPECTED = [
    row("Q600", "en", "fictional", "Hero Six", "test hero", [], 3, "Hero Six",
        [c("date of birth", "1980"), c("from narrative universe", "Test Universe"), c("creator", "Ada Example")]),
    row("Q700", "en", "human", "Old Sage", "", [], 4, "Old Sage",
        [c("date of birth", "551 BCE"), c("date of death", "25 December 1642 (Julian)")]),
    row("Q100", "en", "human", "Ada Example", "test mathematician", ["A. Example", "Countess Example"], 3, "Ada Example",
        [c("country of citizenship", "United States"), c("occupation", "writer"), c("place of birth", "unknown value"),
         c("date of birth", "10 December 1815"), c("height", "1.65 metre"), c("nickname", "The Enchantress")]),
    row("Q500", "en", "human", "Mul Person", "", [], 2, "Mul Person", [c("date of birth", "1870s")]),
    row("Q800", "en", "human", "Tie Eight", "", [], 2, "Tie Eight", [c("country of citizenship", "United States")]),
    row("Q801", "en", "human", "Tie Eight-One", "", [], 2, "Tie Eight-One", [c("country of citizenship", "Q31")]),
    row("Q400", "en", "human", "Nobody Links", "", [], 0, None, [c("occupation", "writer")]),
    row("Q600", "zh", "fictional", "英雄六", "", [], 3, "英雄六",
        [c("出生日期", "1980年"), c("来自虚构宇宙", "Test Universe"), c("创作者", "艾达·范例")]),
    row("Q200", "zh", "fictional", "林测试", "测试角色", ["测试"], 1, "林测试", [c("登场作品", "测试小说")]),
    row("Q700", "zh", "human", "老贤者", "", [], 4, "老贤者",
        [c("出生日期", "公元前551年"), c("逝世日期", "1642年12月25日（儒略历）")]),
    row("Q100", "zh", "human", "艾达·范例", "测试数学家", [], 3, "艾达·范例",
        [c("国籍", "美国"), c("职业", "作家"), c("出生地", "未知"), c("出生日期", "1815年12月10日"),
         c("身高", "1.65 米"), c("nickname", "The Enchantress")]),
    row("Q500", "zh", "human", "Mul Person", "", [], 2, None, [c("出生日期", "1870年代")]),
    row("Q800", "zh", "human", "平八", "", [], 2, None, [c("国籍", "美国")]),
    row("Q801", "zh", "human", "平八一", "", [], 2, None, [c("国籍", "Q31")]),
]


def config(per_category=None, chunk_bytes=1 << 20, **kw) -> CharactersConfig:
    return CharactersConfig(properties=PROPS, per_category=per_category, chunk_bytes=chunk_bytes, **kw)


def ranked(path: Path, cfg: CharactersConfig) -> list[dict]:
    scan = scan_dump(path, cfg, progress=False)
    return top_per_category(scan.rows, cfg.per_category).to_dicts()


@pytest.fixture()
def dump(tmp_path: Path) -> Path:
    p = tmp_path / "fragment.json"
    p.write_bytes(fragment())
    return p


# --- the table ---------------------------------------------------------------


def test_fragment_gives_the_expected_table(dump: Path):
    scan = scan_dump(dump, config(), progress=False)
    assert top_per_category(scan.rows, None).to_dicts() == EXPECTED
    s = scan.stats
    assert (s["lines"], s["entities"], s["matched"], s["rows"]) == (31, 26, 9, 14)
    assert s["malformed"] == {"count": 2, "first_lines": [8, 16]}
    assert s["invalid_utf8"] == {"count": 1, "first_lines": [10]}
    assert s["missing_label"] == {"en": {"count": 2, "first_lines": [5, 15]}, "zh": {"count": 2, "first_lines": [7, 15]}}
    assert s["no_label"] == {"count": 1, "first_lines": [15]}
    assert s["unresolved"] == 1  # Q31
    assert s["label_store_bytes"] > 0
    assert s["stream_error"] is None and not s["missing_close"]


def test_top_n_breaks_sitelink_ties_by_numeric_id(dump: Path):
    got = ranked(dump, config(per_category=4))
    en_humans = [r["character_id"] for r in got if r["lang"] == "en" and r["category"] == "human"]
    assert en_humans == ["Q700", "Q100", "Q500", "Q800"]  # Q801 ties with Q800 on 2 sitelinks and loses
    # The Rust-side cut (a memory bound) and the Polars ranking agree with ranking the full table.
    full = pl.DataFrame(EXPECTED, schema=scan_dump(dump, config(), progress=False).rows.schema)
    assert got == top_per_category(full, 4).to_dicts()


def test_compressed_dumps_give_the_same_table(tmp_path: Path):
    text = fragment()
    half = text.index(b"\n", len(text) // 2) + 1
    # Multi-member gzip and multi-stream bzip2, as parallel compressors write them.
    gz = tmp_path / "f.json.gz"
    gz.write_bytes(gzip.compress(text[:half]) + gzip.compress(text[half:]))
    bz = tmp_path / "f.json.bz2"
    bz.write_bytes(bz2.compress(text[:half]) + bz2.compress(text[half:]))
    for path in (gz, bz):
        assert ranked(path, config(chunk_bytes=700)) == EXPECTED, path.name


def test_real_records_smoke(shared_dir: Path):
    path = shared_dir / "external" / "wikidata_entities.jsonl"
    scan = scan_dump(path, CharactersConfig(per_category=None), progress=False)
    s = scan.stats
    assert s["matched"] == 14 and s["malformed"]["count"] == 0 and s["invalid_utf8"]["count"] == 0
    rows = {(r["character_id"], r["lang"]): r for r in scan.rows.to_dicts()}
    assert sum(1 for k in rows if k[1] == "en") == 14
    # Q42 has no "en" label any more, only "mul".
    assert rows[("Q42", "en")]["label"] == "Douglas Adams"
    assert rows[("Q42", "zh")]["label"] == "道格拉斯·亞當斯"
    # Values pointing back to records earlier in the file are named too.
    assert {"property": "P27", "value": "United Kingdom"} in rows[("Q42", "en")]["claims"]
    assert {"property": "P27", "value": "丹麦"} in rows[("Q646148", "zh")]["claims"]
    # Legacy entity values with only "numeric-id" still read as ids.
    assert {"property": "P27", "value": "Q30"} in rows[("Q328212", "en")]["claims"]
    assert {"property": "P569", "value": "19 August 1988"} in rows[("Q328212", "en")]["claims"]
    assert rows[("Q23", "en")]["sitelinks"] == 202 and rows[("Q23", "en")]["wiki_title"] == "George Washington"
    assert "Q1299" not in {k[0] for k in rows}  # The Beatles: a group, not a human


# --- bad input ----------------------------------------------------------------


def test_truncated_compressed_streams_keep_what_was_read(tmp_path: Path):
    text = fragment()
    whole_gz = gzip.compress(text)
    # bzip2 decodes whole blocks only, so a cut file keeps the streams (or blocks) before the cut.
    lines = text.splitlines(keepends=True)
    whole_bz = b"".join(bz2.compress(b"".join(lines[i : i + 4])) for i in range(0, len(lines), 4))
    for name, data in (("cut.json.gz", whole_gz[: len(whole_gz) * 2 // 3]), ("cut.json.bz2", whole_bz[: len(whole_bz) * 2 // 3])):
        p = tmp_path / name
        p.write_bytes(data)
        scan = scan_dump(p, config(chunk_bytes=1000), progress=False)
        err = scan.stats["stream_error"]
        assert err is not None and err["line"] > 2, name
        # The characters read before the cut are kept as they are in the whole
        # table (only claims naming entities after the cut may read as ids).
        got = top_per_category(scan.rows, None).to_dicts()
        expected = {(r["character_id"], r["lang"]): r for r in EXPECTED}
        assert {r["character_id"] for r in got} >= {"Q100", "Q200", "Q400"}, name
        for r in got:
            want = expected[(r["character_id"], r["lang"])]
            assert {k: v for k, v in r.items() if k != "claims"} == {k: v for k, v in want.items() if k != "claims"}
            assert len(r["claims"]) == len(want["claims"])
        lines_read = scan.stats["lines"]
        assert lines_read < 31 and err["line"] == lines_read + 1, (name, lines_read, err)


def test_plain_dump_cut_mid_line_reports_the_broken_line(tmp_path: Path):
    text = fragment()
    cut_at = text.index(b'"id":"Q700"') + 40  # inside line 12
    p = tmp_path / "cut.json"
    p.write_bytes(text[:cut_at])
    scan = scan_dump(p, config(), progress=False)
    assert scan.stats["missing_close"]
    assert scan.stats["malformed"]["first_lines"] == [8, 12]
    assert {r["character_id"] for r in scan.rows.to_dicts()} == {"Q100", "Q200", "Q400", "Q500", "Q600"}


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("table.csv", b"id,label\nQ1,Ann\n", "line 1 starts with"),
        ("empty.json", b"", "empty"),
        ("object.json", b'{"hello": "world"}\n', 'not an entity object with "id" and "type"'),
        ("numbers.json", b"[\n1,\n2\n]\n", "line 2 starts with"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 1 starts with"),
        ("data.json.zst", b"\x28\xb5\x2f\xfd\x00\x00", "zstd compression is not supported"),
    ],
)
def test_not_a_dump_fails_at_once_with_one_line(tmp_path: Path, capsys, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DittoError, match=reason):
        scan_dump(p, config(), progress=False)
    assert main(["characters", "--wikidata", str(p), "--out", str(tmp_path / "out.parquet"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ditto-data characters: error:") and "\n" not in err and str(p) in err
    assert not (tmp_path / "out.parquet").exists()


def test_cli_reports_bad_lines_and_writes_the_rest(dump: Path, tmp_path: Path, capsys):
    out = tmp_path / "chars.parquet"
    props = ",".join(PROPS)
    assert main(["characters", "--wikidata", str(dump), "--out", str(out), "--per-category", "0",
                 "--properties", props, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "malformed lines skipped: 2 (lines 8, 16)" in err
    assert "lines that are not UTF-8 skipped: 1 (line 10)" in err
    assert "characters without a en label (no en row): 2 (lines 5, 15)" in err
    assert "characters with no label in any requested language, dropped: 1 (line 15)" in err
    table = pl.read_parquet(out)
    assert table.drop("profile").to_dicts() == EXPECTED
    assert not list(tmp_path.glob("chars.parquet.scan-checkpoint*"))
    # Facts become the profile when there is no article.
    profiles = dict(zip(zip(table["character_id"], table["lang"]), table["profile"]))
    assert profiles[("Q700", "en")] == "Old Sage. Date of birth: 551 BCE. Date of death: 25 December 1642 (Julian)."
    assert profiles[("Q700", "zh")] == "老贤者。出生日期：公元前551年。逝世日期：1642年12月25日（儒略历）。"


def test_wikipedia_articles_become_profiles(dump: Path, tmp_path: Path):
    wiki = tmp_path / "wiki.jsonl"
    articles = [
        {"lang": "en", "title": "Ada Example", "text": "Ada Example was a test. She wrote tests. " + "More words here. " * 20},
        {"lang": "zh", "title": "艾达·范例", "text": "艾达·范例是一个测试人物。她写测试！她还写了很多很多很多的测试。"},
        {"lang": "zh", "title": "Ada Example", "text": "wrong language: must not be joined to an English row"},
        {"lang": "en", "title": "Somebody Else", "text": "not in the table"},
    ]
    wiki.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in articles), encoding="utf-8")
    table, _ = characters_from_dump(dump, config(profile_chars=25), wikipedia=wiki, progress=False)
    profiles = dict(zip(zip(table["character_id"], table["lang"]), table["profile"]))
    assert profiles[("Q100", "en")] == "Ada Example was a test."
    assert profiles[("Q100", "zh")] == "艾达·范例是一个测试人物。她写测试！"
    assert profiles[("Q800", "en")] == "Tie Eight."  # no article: the facts, cut at a sentence end
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "x", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(DittoError, match="no 'title' column"):
        characters_from_dump(dump, config(), wikipedia=bad, progress=False)


# --- a scan killed part-way ---------------------------------------------------


def _cli(args: list[str], kill_after: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DITTO_TEST_KILL_AFTER_CHUNKS", None)
    if kill_after is not None:
        env["DITTO_TEST_KILL_AFTER_CHUNKS"] = str(kill_after)
    return subprocess.run([sys.executable, "-m", "data_tools.cli", "characters", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("codec", ["plain", "gz"])
def test_killed_scan_resumes_to_the_same_table(tmp_path: Path, codec: str):
    text = fragment()
    if codec == "gz":
        third = len(text) // 3
        cuts = [0, text.index(b"\n", third) + 1, text.index(b"\n", 2 * third) + 1, len(text)]
        path = tmp_path / "dump.json.gz"
        path.write_bytes(b"".join(gzip.compress(text[a:b]) for a, b in zip(cuts, cuts[1:])))
    else:
        path = tmp_path / "dump.json"
        path.write_bytes(text)
    chunk = 1200
    calls: list[int] = []
    cfg = config(chunk_bytes=chunk)
    ditto_native.wikidata_scan(str(path), languages=list(cfg.languages), classes=list(cfg.classes),
                               properties=list(cfg.properties), keep_top=None, chunk_bytes=chunk,
                               progress=lambda done, *_: calls.append(done))
    chunks = len(calls)
    assert chunks >= 6
    common = ["--wikidata", str(path), "--per-category", "0", "--properties", ",".join(PROPS),
              "--chunk-bytes", str(chunk), "--no-progress"]
    reference = tmp_path / "reference.parquet"
    assert main(["characters", *common, "--out", str(reference)]) == 0

    out = tmp_path / "resumed.parquet"
    checkpoint = Path(str(out) + ".scan-checkpoint")
    # Killed twice: after 2 chunks, then after 2 more; then run to the end.
    first = _cli([*common, "--out", str(out)], kill_after=2)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert checkpoint.exists() and not out.exists()
    second = _cli([*common, "--out", str(out)], kill_after=2)
    assert second.returncode == -signal.SIGKILL, second.stderr
    third = _cli([*common, "--out", str(out)])
    assert third.returncode == 0, third.stderr
    assert "resumed from a checkpoint at line" in third.stderr
    resumed_line = int(third.stderr.split("resumed from a checkpoint at line ")[1].split()[0])
    assert resumed_line > 1  # it did not start over
    assert not list(tmp_path.glob("resumed.parquet.scan-checkpoint*"))
    assert pl.read_parquet(out).equals(pl.read_parquet(reference))
