"""Benchmark: the Rust Wikidata dump filter against a plain Python filter
(`json.loads` on every line) that produces the same rows.

Generates a synthetic dump in the real format (default 220 MB: humans,
fictional characters, places, works and concepts, with labels in many
languages, external ids, references and sitelinks) and compresses it with
gzip and with bzip2 (one stream, and 8 streams as parallel compressors write).
Then it times:

  - the kernel: the Rust scan called in-process on the plain file (all cores,
    with its per-chunk checkpoint and label store, as a user runs it), against
    the Python filter (one pass; it keeps every entity's labels in a dict to
    name claim values at the end);
  - the whole command: `ditto-data characters` as a fresh process (start-up,
    scan, ranking, profiles, Parquet), against the same Python filter;
  - the scan of the .gz and .bz2 files, the Rust decoders alone (bzip2 both
    across blocks in parallel and on one thread), and `gzip -dc | cat` and
    `bzip2 -dc | cat`, the command-line floors.

It checks that every scan and the Python filter give identical rows and
prints MB/s (of decompressed text) and entities/s for each, and the ratios.
Targets: kernel >= 10x, whole command >= 5x the Python filter.

    .venv/bin/python bench/wikidata.py [--mb 220] [--dir /tmp/ditto-bench-wikidata] [--quick]
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import ditto_native

from data_tools.characters.dump import remove_checkpoint

LANGUAGES = ("en", "zh")
CLASSES = (("Q15632617", "fictional"), ("Q5", "human"))
PROPERTIES = ("P21", "P27", "P106", "P569", "P19", "P570", "P20", "P39", "P800", "P108", "P463", "P69",
              "P166", "P22", "P25", "P26", "P40", "P1080", "P1441", "P170", "P175", "P2048", "P1449")
ZH_VARIANTS = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh-hant", "zh-tw", "zh-hk", "zh-mo")

# --- the synthetic dump ---------------------------------------------------------------

LANG_POOL = ("en", "de", "fr", "es", "it", "nl", "pl", "ru", "ja", "zh", "zh-hans", "zh-hant", "pt", "sv", "uk",
             "ar", "fa", "he", "ko", "tr", "cs", "fi", "hu", "no", "da", "ro", "ca", "eo", "el", "bg", "sr", "hr",
             "id", "vi", "th", "hi", "bn", "ta", "ms", "et", "lt", "lv", "sk", "sl", "gl", "eu", "cy", "ga",
             "is", "af", "sq", "hy", "ka", "az", "be", "kk", "uz", "mul", "en-gb", "en-ca", "zh-tw", "zh-hk")
SCRIPTS = {"ru": (0x430, 0x44F), "uk": (0x430, 0x44F), "bg": (0x430, 0x44F), "el": (0x3B1, 0x3C9),
           "ar": (0x627, 0x64A), "fa": (0x627, 0x64A), "he": (0x5D0, 0x5EA), "ja": (0x30A2, 0x30F3),
           "ko": (0xAC00, 0xAFFF), "zh": (0x4E00, 0x62FF), "zh-hans": (0x4E00, 0x62FF), "zh-hant": (0x4E00, 0x62FF),
           "zh-tw": (0x4E00, 0x62FF), "zh-hk": (0x4E00, 0x62FF), "hi": (0x915, 0x939), "th": (0xE01, 0xE2E),
           "ka": (0x10D0, 0x10F0), "hy": (0x561, 0x586)}
EXTERNAL_IDS = ("P214", "P227", "P244", "P213", "P268", "P269", "P349", "P646", "P1006", "P2163", "P1207",
                "P691", "P950", "P906", "P7859", "P1015", "P3430", "P5034", "P8189", "P1053", "P2002", "P4342")


def word(rng: random.Random, lang: str) -> str:
    lo_hi = SCRIPTS.get(lang)
    if lo_hi:
        return "".join(chr(rng.randint(*lo_hi)) for _ in range(rng.randint(2, 6)))
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))).capitalize()


def name(rng: random.Random, lang: str) -> str:
    return " ".join(word(rng, lang) for _ in range(rng.randint(1, 3)))


def snak(prop: str, datavalue: dict, datatype: str) -> dict:
    return {"snaktype": "value", "property": prop, "hash": "%040x" % random.getrandbits(160),
            "datavalue": datavalue, "datatype": datatype}


def statement(eid: str, rng: random.Random, prop: str, datavalue: dict, datatype: str, rank: str = "normal") -> dict:
    s = {"mainsnak": snak(prop, datavalue, datatype), "type": "statement",
         "id": f"{eid}${rng.getrandbits(64):016X}", "rank": rank}
    if rng.random() < 0.6:
        s["references"] = [{"hash": "%040x" % rng.getrandbits(160),
                            "snaks": {"P248": [snak("P248", item(f"Q{rng.randint(1, 5000)}"), "wikibase-item")],
                                      "P813": [snak("P813", time_value(f"+20{rng.randint(10, 24)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T00:00:00Z", 11), "time")]},
                            "snaks-order": ["P248", "P813"]}]
    return s


def item(qid: str) -> dict:
    return {"value": {"entity-type": "item", "numeric-id": int(qid[1:]), "id": qid}, "type": "wikibase-entityid"}


def time_value(t: str, precision: int, julian: bool = False) -> dict:
    cal = "Q1985786" if julian else "Q1985727"
    return {"value": {"time": t, "timezone": 0, "before": 0, "after": 0, "precision": precision,
                      "calendarmodel": f"http://www.wikidata.org/entity/{cal}"}, "type": "time"}


def make_entity(rng: random.Random, n: int, kind: str, n_items: int) -> dict:
    eid = f"Q{n}"
    popular = rng.random() < 0.1
    n_labels = rng.randint(15, 60) if popular else rng.randint(1, 12)
    langs = rng.sample(LANG_POOL, min(n_labels, len(LANG_POOL)))
    labels = {l: {"language": l, "value": name(rng, l)} for l in langs}
    descriptions = {l: {"language": l, "value": " ".join(word(rng, l) for _ in range(rng.randint(2, 7)))}
                    for l in langs if rng.random() < 0.7}
    aliases = {l: [{"language": l, "value": name(rng, l)} for _ in range(rng.randint(1, 3))]
               for l in langs if rng.random() < 0.3}
    def ref() -> str:
        # Characters point mostly at a small, popular set (occupations, countries,
        # big cities), Zipf-like, and sometimes at any item.
        if rng.random() < 0.85:
            return f"Q{int(min(n_items, 3000) ** rng.random())}"
        return f"Q{rng.randint(1, n_items)}"

    claims: dict[str, list] = {}

    def add(prop, dv, dt, rank="normal"):
        claims.setdefault(prop, []).append(statement(eid, rng, prop, dv, dt, rank))

    if kind in ("human", "fictional", "both"):
        if kind in ("human", "both"):
            add("P31", item("Q5"), "wikibase-item")
        if kind in ("fictional", "both"):
            add("P31", item("Q15632617"), "wikibase-item")
        if rng.random() < 0.05:
            add("P31", item("Q215627"), "wikibase-item", rank="deprecated")
        add("P21", item(rng.choice(("Q6581097", "Q6581072"))), "wikibase-item")
        for _ in range(rng.randint(1, 3)):
            add("P106", item(ref()), "wikibase-item", rank="deprecated" if rng.random() < 0.05 else "normal")
        if kind == "human":
            add("P27", item(ref()), "wikibase-item")
            y = rng.randint(-800, 1990)
            p = rng.choice((7, 9, 9, 10, 11, 11, 11))
            t = f"{'-' if y < 0 else '+'}{abs(y):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
            add("P569", time_value(t, p, julian=y < 1582 and rng.random() < 0.5), "time")
            add("P19", item(ref()), "wikibase-item")
            if rng.random() < 0.7:
                add("P570", time_value(f"+{abs(y) + rng.randint(20, 90):04d}-00-00T00:00:00Z", 9), "time")
            if rng.random() < 0.3:
                add("P2048", {"value": {"amount": f"+{rng.randint(150, 200) / 100}", "unit": "http://www.wikidata.org/entity/Q11573"}, "type": "quantity"}, "quantity")
            if rng.random() < 0.2:
                add("P39", item(ref()), "wikibase-item")
            if rng.random() < 0.3:
                add("P800", item(ref()), "wikibase-item")
            if rng.random() < 0.1:
                claims.setdefault("P19", []).append({"mainsnak": {"snaktype": "somevalue", "property": "P19", "hash": "0" * 40, "datatype": "wikibase-item"},
                                                     "type": "statement", "id": f"{eid}$sv", "rank": "normal"})
            for prop in rng.sample(EXTERNAL_IDS, rng.randint(3, len(EXTERNAL_IDS) if popular else 8)):
                add(prop, {"value": str(rng.randint(10**6, 10**9)), "type": "string"}, "external-id")
        else:
            add("P1441", item(ref()), "wikibase-item")
            add("P170", item(ref()), "wikibase-item")
            if rng.random() < 0.5:
                add("P1080", item(ref()), "wikibase-item")
            if rng.random() < 0.4:
                add("P1449", {"value": {"text": name(rng, "en"), "language": "en"}, "type": "monolingualtext"}, "monolingualtext")
    else:
        cls = {"place": "Q515", "work": "Q7725634", "concept": "Q151885", "article": "Q13442814"}[kind]
        add("P31", item(cls), "wikibase-item")
        if kind == "place":
            add("P17", item(ref()), "wikibase-item")
            add("P625", {"value": {"latitude": rng.uniform(-80, 80), "longitude": rng.uniform(-170, 170), "altitude": None,
                                   "precision": 0.0001, "globe": "http://www.wikidata.org/entity/Q2"}, "type": "globecoordinate"}, "globe-coordinate")
            add("P1082", {"value": {"amount": f"+{rng.randint(100, 10**7)}", "unit": "1"}, "type": "quantity"}, "quantity")
        elif kind == "article":
            for _ in range(rng.randint(5, 25)):
                add("P2860", item(ref()), "wikibase-item")  # cites work
            add("P356", {"value": f"10.{rng.randint(1000, 9999)}/{rng.getrandbits(40):x}", "type": "string"}, "external-id")
        else:
            add("P50", item(ref()), "wikibase-item")
            add("P577", time_value(f"+{rng.randint(1500, 2020)}-00-00T00:00:00Z", 9), "time")
        for prop in rng.sample(EXTERNAL_IDS, rng.randint(0, 6)):
            add(prop, {"value": str(rng.randint(10**6, 10**9)), "type": "string"}, "external-id")
    n_sites = rng.randint(20, 150) if popular else rng.randint(0, 8)
    site_langs = rng.sample(LANG_POOL, min(n_sites, len(LANG_POOL)))
    sites = {f"{l.replace('-', '_')}wiki": {"site": f"{l.replace('-', '_')}wiki", "title": labels.get(l, {"value": name(rng, l)})["value"], "badges": []}
             for l in site_langs}
    for i in range(max(0, n_sites - len(site_langs))):
        s = f"x{i}wikisource"
        sites[s] = {"site": s, "title": name(rng, "en"), "badges": []}
    return {"type": "item", "id": eid, "labels": labels, "descriptions": descriptions, "aliases": aliases,
            "claims": claims, "sitelinks": sites, "lastrevid": rng.randint(10**8, 2 * 10**9)}


def generate(path: Path, target_mb: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    random.seed(seed)
    target = target_mb * 1_000_000
    kinds = ("human",) * 12 + ("fictional",) * 2 + ("both",) + ("place",) * 20 + ("work",) * 15 + ("concept",) * 20 + ("article",) * 30
    # Size the id range from a sample, so that nearly every referenced id is in the file.
    probe = random.Random(seed + 1)
    avg = sum(len(json.dumps(make_entity(probe, i, probe.choice(kinds), 1000), separators=(",", ":"))) for i in range(1, 301)) / 300
    n_items = int(target / (avg + 2) * 1.02)
    unit = 11573  # metre: written once, at the end
    order = [n for n in range(1, n_items + 1) if n != unit]
    rng.shuffle(order)  # references point both ways, as in the real dump
    with open(path, "w", encoding="ascii") as f:
        f.write("[\n")
        for n in order:
            f.write(json.dumps(make_entity(rng, n, rng.choice(kinds), n_items), separators=(",", ":")) + ",\n")
        units = [{"type": "item", "id": "Q11573", "labels": {"en": {"language": "en", "value": "metre"}, "zh": {"language": "zh", "value": "米"}}, "claims": {}, "sitelinks": {}}]
        props = [{"type": "property", "datatype": "wikibase-item", "id": p,
                  "labels": {"en": {"language": "en", "value": f"property {p}"}, "zh": {"language": "zh", "value": f"属性{p}"}}, "claims": {}}
                 for p in PROPERTIES]
        for e in units + props:
            f.write(json.dumps(e, separators=(",", ":")) + ",\n")
        f.write("]\n")


# --- the Python baseline --------------------------------------------------------------


def _chains(lang: str) -> tuple[list[str], list[str]]:
    own = [lang] + (list(ZH_VARIANTS) if lang == "zh" else [])
    if "mul" not in own:
        own.append("mul")
    names = own + ([] if "en" in own else ["en"])
    return own, names


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def render_time(t: str, precision: int, julian: bool, lang: str) -> str:
    bce = t.startswith("-")
    date = t.lstrip("+-").split("T")[0].split("-")
    year, month, day = (int(x) if x.isdigit() else 0 for x in (date + ["0", "0", "0"])[:3])
    if precision >= 10 and month == 0:
        precision = 9
    elif precision >= 11 and day == 0:
        precision = 10
    zh = lang == "zh" or lang.startswith("zh-")
    if zh:
        era = "公元前" if bce else ""
        text = (f"{era}{year}年{month}月{day}日" if precision >= 11 else f"{era}{year}年{month}月" if precision == 10
                else f"{era}{year // 10 * 10}年代" if precision == 8 else f"{era}{(max(year, 1) - 1) // 100 + 1}世纪" if precision == 7
                else f"{era}第{(max(year, 1) - 1) // 1000 + 1}个千年" if precision == 6 else f"{era}{year}年")
    elif lang == "en" or lang.startswith("en-"):
        era = " BCE" if bce else ""
        mname = MONTHS[month - 1] if 1 <= month <= 12 else ""
        text = (f"{day} {mname} {year}{era}" if precision >= 11 else f"{mname} {year}{era}" if precision == 10
                else f"{year // 10 * 10}s{era}" if precision == 8 else f"{_ordinal((max(year, 1) - 1) // 100 + 1)} century{era}" if precision == 7
                else f"{_ordinal((max(year, 1) - 1) // 1000 + 1)} millennium{era}" if precision == 6 else f"{year}{era}")
    else:
        sign = "-" if bce else ""
        text = (f"{sign}{year:04d}-{month:02d}-{day:02d}" if precision >= 11 else f"{sign}{year:04d}-{month:02d}" if precision == 10 else f"{sign}{year}")
    if julian and precision >= 10:
        text += "（儒略历）" if zh else " (Julian)"
    return text


def _entity_id(v: dict) -> str | None:
    if isinstance(v.get("id"), str):
        return v["id"]
    prefix = {"item": "Q", "property": "P", "lexeme": "L"}.get(v.get("entity-type", "item"))
    return f"{prefix}{v['numeric-id']}" if prefix and "numeric-id" in v else None


def _raw_value(snak: dict):
    kind = snak.get("snaktype")
    if kind == "somevalue":
        return ("unknown",)
    if kind == "novalue":
        return ("novalue",)
    dv = snak.get("datavalue")
    if not dv:
        return None
    v, t = dv["value"], dv["type"]
    if t == "wikibase-entityid":
        eid = _entity_id(v)
        return ("entity", eid) if eid else None
    if t == "time":
        return ("time", v["time"], min(v.get("precision", 11), 14), str(v.get("calendarmodel", "")).endswith("Q1985786"))
    if t == "quantity":
        unit = v.get("unit")
        return ("quantity", v["amount"], None if unit in (None, "1") else unit.rsplit("/", 1)[-1])
    if t == "monolingualtext":
        return ("text", v["text"])
    if t == "globecoordinate":
        return ("coord", v["latitude"], v["longitude"])
    return ("text", v) if isinstance(v, str) else None


def python_filter(path: Path) -> tuple[list[dict], int]:
    """The same rows as the Rust filter, with `json.loads` on every line."""
    chain_langs = {l for lang in LANGUAGES for l in _chains(lang)[1]}
    labels_of: dict[str, dict[str, str]] = {}
    candidates: dict[str, dict] = {}
    entities = 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip()
            if line.endswith(b","):
                line = line[:-1].rstrip()
            if line in (b"", b"[", b"]"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            entities += 1
            labels = e.get("labels") or {}
            labels_of[e["id"]] = {l: t["value"] for l, t in labels.items() if l in chain_langs}
            if e.get("type") != "item":
                continue
            claims = e.get("claims") or {}
            p31 = {_entity_id(s["mainsnak"].get("datavalue", {}).get("value", {})) for s in claims.get("P31", [])
                   if s.get("rank") != "deprecated" and s["mainsnak"].get("snaktype") == "value"}
            category = next((cat for cls, cat in CLASSES if cls in p31), None)
            if category is None or e["id"] in candidates:
                continue
            kept = []
            for p in PROPERTIES:
                values = []
                for s in claims.get(p, []):
                    if s.get("rank") == "deprecated":
                        continue
                    v = _raw_value(s["mainsnak"])
                    if v is not None and v not in values:
                        values.append(v)
                kept += [(p, v) for v in values]
            sitelinks = e.get("sitelinks") or {}
            candidates[e["id"]] = {"id": e["id"], "category": category, "labels": labels,
                                   "descriptions": e.get("descriptions") or {}, "aliases": e.get("aliases") or {},
                                   "sitelinks": sitelinks if isinstance(sitelinks, dict) else {}, "claims": kept}
    rows = []
    for lang in LANGUAGES:
        own, names = _chains(lang)

        def name(eid: str) -> str:
            found = labels_of.get(eid, {})
            return next((found[l] for l in names if l in found), eid)

        zh = lang == "zh" or lang.startswith("zh-")
        for c in candidates.values():
            label = next((c["labels"][l]["value"] for l in own if l in c["labels"]), None)
            if label is None:
                continue
            desc = next((c["descriptions"][l]["value"] for l in own if l in c["descriptions"]), "")
            aliases: list[str] = []
            for l in own:
                for a in c["aliases"].get(l, []):
                    if a["value"] != label and a["value"] not in aliases:
                        aliases.append(a["value"])
            site = c["sitelinks"].get(f"{lang.replace('-', '_')}wiki")
            claims = []
            for p, v in c["claims"]:
                if v[0] == "entity":
                    text = name(v[1])
                elif v[0] == "time":
                    text = render_time(v[1], v[2], v[3], lang)
                elif v[0] == "quantity":
                    amount = v[1][1:] if v[1].startswith("+") else v[1]
                    text = f"{amount} {name(v[2])}" if v[2] else amount
                elif v[0] == "coord":
                    text = f"{v[1]:.4f}, {v[2]:.4f}"
                elif v[0] == "unknown":
                    text = "未知" if zh else "unknown value"
                elif v[0] == "novalue":
                    text = "无" if zh else "no value"
                else:
                    text = v[1]
                claim = {"property": name(p), "value": text}
                if claim not in claims:
                    claims.append(claim)
            rows.append({"character_id": c["id"], "lang": lang, "category": c["category"], "label": label,
                         "description": desc, "aliases": aliases, "sitelinks": len(c["sitelinks"]),
                         "wiki_title": site["title"] if site else None, "claims": claims})
    return rows, entities


# --- running ------------------------------------------------------------------------


def rust_filter(path: Path, workdir: Path) -> tuple[bytes, dict]:
    """The rows as the filter returns them (JSON Lines, which Polars reads)."""
    checkpoint = workdir / f"{path.name}.ckpt"
    remove_checkpoint(checkpoint)
    rows, stats = ditto_native.wikidata_scan(
        str(path), languages=list(LANGUAGES), classes=list(CLASSES), properties=list(PROPERTIES),
        keep_top=None, chunk_bytes=16 << 20, checkpoint=str(checkpoint))
    remove_checkpoint(checkpoint)
    return rows, json.loads(stats)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def timed_cpu(fn, *args):
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    c0 = time.process_time()
    out, wall = timed(fn, *args)
    return out, wall, time.process_time() - c0


def timed_shell(cmd: str) -> tuple[float, float]:
    """(wall, CPU seconds of the children) of a shell pipeline."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def characters_command(dump: Path, workdir: Path) -> tuple[float, float]:
    """`ditto-data characters` as a fresh process (start-up, scan, profiles, Parquet)."""
    out = workdir / "characters.parquet"
    cmd = [sys.executable, "-m", "data_tools.cli", "characters", "--wikidata", str(dump), "--per-category", "0",
           "--out", str(out), "--no-progress"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"ditto-data characters failed: {done.stderr.strip()}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _make(path: Path, build) -> None:
    if not path.exists():
        print(f"writing {path} ...", file=sys.stderr)
        tmp = path.with_suffix(".tmp")
        build(tmp)
        os.replace(tmp, path)


def _compress(plain: Path, opener, parts: int = 1):
    """Writes `plain` compressed with `opener`, as `parts` concatenated streams
    (parallel compressors such as pbzip2 and pigz write many)."""
    def build(tmp: Path) -> None:
        size = plain.stat().st_size
        step = -(-size // parts)
        with open(plain, "rb") as src, open(tmp, "wb") as raw:
            for _ in range(parts):
                with opener(raw) as dst:
                    left = step
                    while left > 0:
                        block = src.read(min(left, 1 << 20))
                        if not block:
                            break
                        dst.write(block)
                        left -= len(block)
    return build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=220, help="size of the generated dump in MB (default 220)")
    ap.add_argument("--dir", default="/tmp/ditto-bench-wikidata", help="where the dump is generated and kept")
    ap.add_argument("--quick", action="store_true", help="a small run (8 MB) to check the bench works")
    args = ap.parse_args()
    if args.quick:
        args.mb = min(args.mb, 8)
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    plain = workdir / f"dump-{args.mb}mb.json"
    _make(plain, lambda tmp: generate(tmp, args.mb))
    gz = workdir / f"dump-{args.mb}mb.json.gz"
    _make(gz, _compress(plain, lambda raw: gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)))
    bz = workdir / f"dump-{args.mb}mb.json.bz2"
    _make(bz, _compress(plain, lambda raw: bz2.BZ2File(raw, "wb", compresslevel=9)))
    bz_multi = workdir / f"dump-{args.mb}mb.multi.json.bz2"
    _make(bz_multi, _compress(plain, lambda raw: bz2.BZ2File(raw, "wb", compresslevel=9), parts=8))
    size = plain.stat().st_size
    mb = size / 1e6
    print(f"dump: {mb:.1f} MB plain, {gz.stat().st_size / 1e6:.1f} MB gzip, {bz.stat().st_size / 1e6:.1f} MB bzip2 "
          f"(one stream; and 8 streams); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)

    # Kernel: the scan called in-process, against the Python filter.
    (rust_rows, stats), t_rust, c_rust = timed_cpu(rust_filter, plain, workdir)
    (py_rows, entities), t_py, c_py = timed_cpu(python_filter, plain)
    # Whole command, start-up and Parquet included.
    t_cmd, c_cmd = characters_command(plain, workdir)
    # Compressed dumps: the scan, the decoders alone, and the command-line tools.
    scans = {}
    for label, path in (("gz", gz), ("bz2", bz), ("bz2, 8 streams", bz_multi)):
        (rows, _), t, c = timed_cpu(rust_filter, path, workdir)
        scans[label] = ([json.loads(line) for line in rows.splitlines()], t, c)
    decode = {}
    for label, path, parallel in (("gz", gz, True), ("bz2", bz, True), ("bz2", bz, False), ("bz2, 8 streams", bz_multi, True)):
        n, t, c = timed_cpu(lambda p, par: ditto_native.wikidata_decompressed_len(str(p), parallel=par), path, parallel)
        assert n == size, (label, n, size)
        decode[(label, parallel)] = (t, c)
    t_gzip, c_gzip = timed_shell(f"gzip -dc '{gz}' | cat > /dev/null")
    t_bzip2, c_bzip2 = timed_shell(f"bzip2 -dc '{bz}' | cat > /dev/null")

    key = lambda r: (r["lang"], r["character_id"])  # noqa: E731
    rust_rows = [json.loads(line) for line in rust_rows.splitlines()]
    want = sorted(py_rows, key=key)
    same = sorted(rust_rows, key=key) == want and all(sorted(r, key=key) == want for r, _, _ in scans.values())
    print(f"entities: {entities}, characters: {stats['matched']}, rows: {len(rust_rows)}, label store: "
          f"{stats['label_store_bytes'] / 1e6:.1f} MB; rows identical (Rust plain, gz, bz2, bz2 8 streams, Python): {same}")
    print(f"{'path':<46}{'seconds':>9}{'MB/s':>9}{'entities/s':>13}{'CPU s':>8}")
    table = [
        ("Python json.loads filter (kernel baseline)", t_py, c_py),
        ("Rust scan, plain (kernel)", t_rust, c_rust),
        ("ditto-data characters, plain (whole command)", t_cmd, c_cmd),
        ("Rust scan, .gz", scans["gz"][1], scans["gz"][2]),
        ("  Rust gzip decoder alone", *decode[("gz", True)]),
        ("  gzip -dc | cat", t_gzip, c_gzip),
        ("Rust scan, .bz2 (parallel blocks)", scans["bz2"][1], scans["bz2"][2]),
        ("Rust scan, .bz2 8 streams", scans["bz2, 8 streams"][1], scans["bz2, 8 streams"][2]),
        ("  Rust bzip2 decoder, parallel blocks", *decode[("bz2", True)]),
        ("  Rust bzip2 decoder, 8 streams", *decode[("bz2, 8 streams", True)]),
        ("  Rust bzip2 decoder, one thread", *decode[("bz2", False)]),
        ("  bzip2 -dc | cat", t_bzip2, c_bzip2),
    ]
    for label, t, c in table:
        print(f"{label:<46}{t:>9.2f}{mb / t:>9.1f}{entities / t:>13,.0f}{c:>8.2f}")
    print(f"kernel ratio, Python / Rust scan (plain): {t_py / t_rust:.1f}x wall (target >= 10x); {c_py / c_rust:.1f}x CPU time")
    print(f"whole-command ratio, Python / ditto-data characters (plain): {t_py / t_cmd:.1f}x wall (target >= 5x)")
    print(f".gz scan: {t_gzip / scans['gz'][1]:.2f}x the speed of gzip -dc | cat (the floor for one gzip member)")
    print(f".bz2 scan: {t_bzip2 / scans['bz2'][1]:.2f}x the speed of bzip2 -dc | cat; parallel decoder "
          f"{decode[('bz2', False)][0] / decode[('bz2', True)][0]:.2f}x the one-thread decoder")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
