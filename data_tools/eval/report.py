"""`ditto-eval report`: compare models from their results files.

    ditto-eval report base.results.jsonl ditto.results.jsonl --out report.md

writes `report.md`, `report.json` (every number in the tables, unrounded)
and `report.png` (a bar chart) side by side.

Inputs are recognised by content, each kind by its own section:
- WikiRoleEval results (`ditto-eval run`): All / each language x every
  metric in `metrics`, per model, with the difference against the first
  model;
- MT-Bench results (`ditto-eval mtbench`): the mean score per model;
- blind human votes (`ditto-jax serve --ui --votes`): win rate per model
  pair and Bradley–Terry scores (see `votes`).
Each value carries a 95% percentile-bootstrap interval over sessions (or
questions); see `bootstrap` for the exact, reproducible procedure. A new
kind of input (human votes, say) is one more `InputKind`: a detector, a
loader and a section builder.

Model names come from the files (`model` in every record; the file name
when absent).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ditto_native import DittoError

from data_tools.eval import bootstrap, votes
from data_tools.eval.metrics import METRICS, ResultsFile, load_results
from data_tools.eval.records import read_jsonl

ALL = "All"


# ---- shared pieces ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float | None
    interval: tuple[float, float] | None
    counted: int  # turns (or questions) that entered the mean

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.interval or (None, None)
        return {"value": self.value, "lo": lo, "hi": hi, "counted": self.counted}


@dataclasses.dataclass(frozen=True)
class Panel:
    """One chart panel: groups along x, one bar per model in each."""

    title: str
    groups: list[str]
    series: dict[str, list[Estimate | None]]  # model -> one estimate per group


def estimate(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> tuple[Estimate, np.ndarray]:
    draws = bootstrap.resampled(sums, counts, idx)
    return Estimate(bootstrap.pooled(sums, counts), bootstrap.interval(draws), int(counts.sum())), draws


def delta(mine: tuple[Estimate, np.ndarray], base: tuple[Estimate, np.ndarray], paired: bool) -> Estimate:
    """Difference against the first model; its interval only when both saw the same sessions (paired)."""
    if mine[0].value is None or base[0].value is None:
        return Estimate(None, None, 0)
    interval = bootstrap.interval(mine[1] - base[1]) if paired else None
    return Estimate(mine[0].value - base[0].value, interval, mine[0].counted)


def fmt(e: Estimate | None, decimals: int, signed: bool = False) -> str:
    if e is None or e.value is None:
        return "n/a"
    sign = "+" if signed else ""
    text = f"{e.value:{sign}.{decimals}f}"
    if e.interval is not None:
        lo, hi = e.interval
        text += f" [{lo:{sign}.{decimals}f}, {hi:{sign}.{decimals}f}]"
    return text


def unique_names(names: Sequence[str], paths: Sequence[Path]) -> list[str]:
    """Model names, told apart by file name where two files name the same model."""
    return [f"{n} ({p.name})" if names.count(n) > 1 else n for n, p in zip(names, paths)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---- WikiRoleEval section --------------------------------------------------------------------


def language_splits(files: Sequence[ResultsFile]) -> list[str]:
    langs = {lang for f in files for lang in f.langs()}
    return [ALL] + sorted(langs, key=lambda lang: ({"en": 0, "zh": 1}.get(lang, 2), lang))


@dataclasses.dataclass
class RoleEvalSection:
    files: list[ResultsFile]
    names: list[str]
    seed: int
    resamples: int
    splits: list[str] = dataclasses.field(default_factory=list)
    # split -> metric key -> per model (estimate, delta against the first model or None)
    results: dict[str, dict[str, list[tuple[Estimate, Estimate | None]]]] = dataclasses.field(default_factory=dict)
    counts: dict[str, list[dict[str, int]]] = dataclasses.field(default_factory=dict)

    @classmethod
    def compute(cls, files: Sequence[ResultsFile], *, seed: int, resamples: int) -> RoleEvalSection:
        section = cls(list(files), unique_names([f.model for f in files], [f.path for f in files]), seed, resamples)
        section.splits = language_splits(files)
        for split in section.splits:
            picks = [np.array([i for i, lang in enumerate(f.langs()) if split == ALL or lang == split], dtype=int) for f in files]
            keys = [[f.keys[i] for i in pick] for f, pick in zip(files, picks)]
            idxs = [bootstrap.resample_indices(len(p), split, seed=seed, resamples=resamples) if len(p) else None for p in picks]
            per_metric: dict[str, list[tuple[Estimate, Estimate | None]]] = {}
            for metric in METRICS:
                rows = []
                base = None
                for m, (f, pick, idx) in enumerate(zip(files, picks, idxs)):
                    if idx is None:
                        rows.append((Estimate(None, None, 0), None))
                        continue
                    est = estimate(f.sums[metric.key][pick], f.counts[metric.key][pick], idx)
                    if m == 0:
                        base = est
                        rows.append((est[0], None))
                    else:
                        d = delta(est, base, keys[m] == keys[0]) if base is not None else Estimate(None, None, 0)
                        rows.append((est[0], d))
                per_metric[metric.key] = rows
            section.results[split] = per_metric
            section.counts[split] = [
                {
                    "sessions": int(len(pick)),
                    "turns": int(sum(f.sessions[i].turns for i in pick)),
                    "rejection_null": int(sum(v is None for i in pick for v in f.records[i]["reject_scores"])),
                    "knowledge_null": int(sum(v is None for i in pick for v in f.records[i]["knowledge_scores"])),
                }
                for f, pick in zip(files, picks)
            ]
        return section

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [
                {"name": n, "file": str(f.path), "judge": f.judge, "sessions": len(f.sessions)} for n, f in zip(self.names, self.files)
            ],
            "splits": {
                split: {
                    "metrics": {
                        key: [
                            {"model": n, **e.to_json(), "delta": None if d is None else d.to_json()}
                            for n, (e, d) in zip(self.names, rows)
                        ]
                        for key, rows in per_metric.items()
                    },
                    "counts": [{"model": n, **c} for n, c in zip(self.names, self.counts[split])],
                }
                for split, per_metric in self.results.items()
            },
        }

    def markdown(self) -> str:
        first = self.names[0]
        header = ["metric", "kind", *self.names, *[f"{n} − {first}" for n in self.names[1:]]]
        parts = ["## WikiRoleEval", ""]
        parts.append(
            "Models: " + "; ".join(
                f"**{n}** (`{f.path.name}`, judge {f.judge}, {len(f.sessions)} sessions)" for n, f in zip(self.names, self.files)
            )
        )
        for split in self.splits:
            rows = []
            for metric in METRICS:
                per_model = self.results[split][metric.key]
                rows.append(
                    [metric.title, metric.kind]
                    + [fmt(e, metric.decimals) for e, _ in per_model]
                    + [fmt(d, metric.decimals, signed=True) for _, d in per_model[1:]]
                )
            count_rows = [
                [n, str(c["sessions"]), str(c["turns"]), str(c["rejection_null"]), str(c["knowledge_null"])]
                for n, c in zip(self.names, self.counts[split])
            ]
            parts += [
                "", f"### {split}", "", _table(header, rows), "",
                _table(["model", "sessions", "turns", "rejection null (tie or no parse)", "knowledge null (no parse)"], count_rows),
            ]
        unpaired = any(
            d is not None and d.value is not None and d.interval is None
            for per_metric in self.results.values() for rows in per_metric.values() for _, d in rows
        )
        if unpaired:
            parts += ["", "A difference without an interval compares different sessions: only paired differences get one."]
        return "\n".join(parts)

    def panels(self) -> list[Panel]:
        return [
            Panel(metric.title, self.splits, {n: [self.results[s][metric.key][m][0] for s in self.splits] for m, n in enumerate(self.names)})
            for metric in METRICS
        ]


# ---- MT-Bench section ------------------------------------------------------------------------

MTBENCH_SPLIT = "mtbench"


@dataclasses.dataclass
class MtBenchFile:
    path: Path
    model: str
    judge: str | None
    question_ids: list[str]
    scores: list[float | None]


def load_mtbench_results(path: Path, rows: Sequence[tuple[int, dict[str, Any]]]) -> MtBenchFile:
    models, judges, ids, scores = set(), set(), [], []
    for line, record in rows:
        for field in ("question_id", "score"):
            if field not in record:
                raise DittoError(f"{path}: line {line}: missing field {field!r} (expected `ditto-eval mtbench` output)")
        score = record["score"]
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise DittoError(f"{path}: line {line}: field 'score' must be a number or null")
        ids.append(str(record["question_id"]))
        scores.append(None if score is None else float(score))
        models.add(record.get("model"))
        judges.add(record.get("judge"))
    if len(models) > 1:
        raise DittoError(f"{path}: records name different models; one model per results file")
    return MtBenchFile(path, str(models.pop() or path.stem), ", ".join(sorted(map(str, judges))), ids, scores)


@dataclasses.dataclass
class MtBenchSection:
    files: list[MtBenchFile]
    names: list[str]
    rows: list[tuple[Estimate, Estimate | None]] = dataclasses.field(default_factory=list)

    @classmethod
    def compute(cls, files: Sequence[MtBenchFile], *, seed: int, resamples: int) -> MtBenchSection:
        section = cls(list(files), unique_names([f.model for f in files], [f.path for f in files]))
        base = None
        for m, f in enumerate(files):
            sums = np.array([s or 0.0 for s in f.scores])
            counts = np.array([0.0 if s is None else 1.0 for s in f.scores])
            est = estimate(sums, counts, bootstrap.resample_indices(len(f.scores), MTBENCH_SPLIT, seed=seed, resamples=resamples))
            if m == 0:
                base = est
                section.rows.append((est[0], None))
            else:
                section.rows.append((est[0], delta(est, base, f.question_ids == files[0].question_ids)))
        return section

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [
                {"model": n, "file": str(f.path), "judge": f.judge, "questions": len(f.scores), **e.to_json(),
                 "delta": None if d is None else d.to_json()}
                for n, f, (e, d) in zip(self.names, self.files, self.rows)
            ]
        }

    def markdown(self) -> str:
        first = self.names[0]
        rows = [
            [n, str(len(f.scores)), fmt(e, 2), "" if d is None else fmt(d, 2, signed=True)]
            for n, f, (e, d) in zip(self.names, self.files, self.rows)
        ]
        return "\n".join(["## MT-Bench roleplay", "", _table(["model", "questions", "score (1-10)", f"− {first}"], rows)])

    def panels(self) -> list[Panel]:
        return [Panel("MT-Bench roleplay (1-10)", [ALL], {n: [e] for n, (e, _) in zip(self.names, self.rows)})]


# ---- inputs and the whole report -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputKind:
    name: str
    detect: Callable[[dict[str, Any]], bool]  # on a file's first record
    load: Callable[[Path, Sequence[tuple[int, dict[str, Any]]]], Any]
    section: Callable[..., Any]  # (loaded files, seed=, resamples=) -> a section


INPUT_KINDS: tuple[InputKind, ...] = (
    InputKind("wikiroleeval", lambda r: "consist_scores" in r or "reject_scores" in r, load_results, RoleEvalSection.compute),
    InputKind("mtbench", lambda r: "turn_scores" in r and "question_id" in r, load_mtbench_results, MtBenchSection.compute),
    InputKind("votes", votes.is_vote_record, votes.load_votes, votes.VoteSection.compute),
)


@dataclasses.dataclass
class Report:
    sections: list[Any]
    seed: int
    resamples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "level": bootstrap.LEVEL, "unit": "session"},
            **{kind: s.to_json() for kind, s in self.by_kind().items()},
        }

    def by_kind(self) -> dict[str, Any]:
        return {kind.name: s for kind, s in self.sections}

    def markdown(self, chart_name: str | None) -> str:
        parts = ["# Role-play evaluation report", ""]
        for _, section in self.sections:
            parts += [section.markdown(), ""]
        if chart_name:
            parts += [f"![metrics per model, with 95% intervals]({chart_name})", ""]
        parts.append(
            f"Values are pooled means over counted turns; brackets hold 95% percentile-bootstrap intervals over sessions "
            f"({self.resamples} resamples, seed {self.seed}; per split the indices are "
            f"`numpy.random.default_rng([seed, zlib.crc32(split)]).integers(0, n, (B, n))`). "
            f"Differences are against the first model, paired on the same resamples."
        )
        return "\n".join(parts) + "\n"

    def panels(self) -> list[Panel]:
        return [p for _, s in self.sections for p in s.panels()]


def classify(path: Path) -> tuple[InputKind, list[tuple[int, dict[str, Any]]]]:
    rows = read_jsonl(path)
    if not rows:
        raise DittoError(f"{path}: no records")
    for kind in INPUT_KINDS:
        if kind.detect(rows[0][1]):
            return kind, rows
    line = rows[0][0]
    raise DittoError(f"{path}: line {line}: not a results file (no consist_scores from `ditto-eval run`, no turn_scores from `ditto-eval mtbench`, "
                      "no model_a/model_b/choice from `ditto-jax serve --votes`)")


def build_report(paths: Sequence[str | Path], *, seed: int = 0, resamples: int = bootstrap.RESAMPLES) -> Report:
    if resamples < 1:
        raise DittoError(f"--resamples must be >= 1 (got {resamples})")
    loaded: dict[str, list[Any]] = {}
    for path in map(Path, paths):
        kind, rows = classify(path)
        loaded.setdefault(kind.name, []).append(kind.load(path, rows))
    sections = [(kind, kind.section(loaded[kind.name], seed=seed, resamples=resamples)) for kind in INPUT_KINDS if kind.name in loaded]
    return Report(sections, seed, resamples)


def write_report(report: Report, out: str | Path) -> list[Path]:
    """report.md, report.json and report.png side by side; returns the paths written."""
    import json

    from ditto_jax.atomic_io import atomic_path, write_text_atomic

    from data_tools.eval.chart import bar_chart

    out = Path(out)
    chart = out.with_suffix(".png")
    data = out.with_suffix(".json")
    with atomic_path(chart) as tmp:
        bar_chart(report.panels(), tmp, format="png")
    write_text_atomic(data, json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(out, report.markdown(chart.name))
    return [out, data, chart]
