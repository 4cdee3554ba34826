"""`ditto-data build`: characters -> simulate -> clean -> tokenize (-> train -> export -> eval) from one config.

Each stage runs through its own subcommand (so flags, validation and error
messages are exactly the CLI's) and is skipped when its outputs are current:
a stage's key hashes its settings and the content of its input files, and the
state file records the key and the hashes of the outputs it produced. A stage
whose output comes out byte-identical therefore does not force the stages after
it to rerun.

With `[train]`, `[export]` and `[eval]` sections the build goes on through the
model half of the loop (`data_tools.loop`): fine-tune, export, and compare the
seed with the tuned model on held-out characters.

The shipped default (data_tools/configs/default.toml) runs the whole loop on
the built-in sample characters and the embedded SmolLM2 on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from data_tools import loop
from ditto_jax.atomic_io import write_text_atomic
from ditto_native import DittoError

STAGES = ("characters", "simulate", "clean", "tokenize")
STATE_FILE = ".build-state.json"
# Files above this size (a full Wikidata dump, a checkpoint's optimizer state) are
# keyed by size and mtime, not content: hashing gigabytes on every build costs more
# than the rare rerun a touched-but-identical file causes.
_CONTENT_HASH_LIMIT = 64 << 20


@dataclasses.dataclass(frozen=True)
class StagePlan:
    name: str
    argv: list[str]  # the subcommand's arguments
    inputs: list[Path]  # files whose content decides whether the stage is current
    outputs: list[Path]  # what the stage writes (file or directory)
    settings: dict[str, Any]
    tool: str = "ditto-data"  # the command whose subcommand `name` is
    fresh_output: bool = False  # remove an output left by other settings before running (a run dir would be resumed)


@dataclasses.dataclass
class StageResult:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    rows: int | None
    detail: str = ""


def default_config_path() -> Path:
    return Path(str(resources.files("data_tools") / "configs" / "default.toml"))


def load_config(path: Path | None) -> tuple[dict[str, Any], Path]:
    path = path or default_config_path()
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DittoError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise DittoError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(config) - {"out_dir", *STAGES, *loop.MODEL_STAGES}
    if unknown:
        raise DittoError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; expected out_dir, {', '.join(STAGES + loop.MODEL_STAGES)}")
    for stage in STAGES:
        if not isinstance(config.get(stage, {}), dict):
            raise DittoError(f"{path}: [{stage}] must be a table")
    loop.check_sections(config, path)
    return config, path


def _flags(settings: dict[str, Any], *, repeat: dict[str, str] = {}, skip: tuple[str, ...] = ()) -> list[str]:
    """TOML settings -> CLI flags: foo_bar = 1 -> --foo-bar 1; true -> --foo-bar; lists -> comma-joined
    unless named in `repeat` (key -> flag repeated per item); tables -> repeated k=v."""
    argv: list[str] = []
    for key, value in settings.items():
        if key in skip or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):
            for k, v in value.items():
                argv += [repeat.get(key, flag), f"{k}={v}"]
        elif isinstance(value, list):
            if key in repeat:
                for item in value:
                    argv += [repeat[key], str(item)]
            else:
                argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def plan_stages(config: dict[str, Any], config_path: Path) -> list[StagePlan]:
    base = config_path.parent
    out_dir = Path(config.get("out_dir", "out"))
    out_dir = out_dir if out_dir.is_absolute() else (Path.cwd() / out_dir)

    def rel(p: str) -> Path:  # paths in a config are relative to the config file
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    chars = dict(config.get("characters", {}))
    sim = dict(config.get("simulate", {}))
    clean = dict(config.get("clean", {}))
    tok = dict(config.get("tokenize", {}))
    characters_out = out_dir / "characters.parquet"
    dialogues_out = out_dir / "dialogues.parquet"
    simulate_report = out_dir / "dialogues.report.json"
    clean_out, quarantine_out = out_dir / "clean.parquet", out_dir / "quarantine.parquet"
    report_out = out_dir / "clean.report.json"
    shards_out = out_dir / "shards"

    char_inputs = [rel(chars[k]) for k in ("wikidata", "wikipedia") if chars.get(k)]
    for k in ("wikidata", "wikipedia"):
        if chars.get(k):
            chars[k] = str(rel(chars[k]))
    if not chars.get("sample") and not chars.get("wikidata"):
        raise DittoError(f"{config_path}: [characters] needs sample = true or wikidata = \"DUMP\"")
    clean_inputs = [dialogues_out]
    if clean.get("config"):
        clean["config"] = str(rel(clean["config"]))
        clean_inputs.append(Path(clean["config"]))
    for k in ("query_template", "response_template"):
        if sim.get(k):
            sim[k] = str(rel(sim[k]))
    sim_inputs = [characters_out] + [Path(sim[k]) for k in ("query_template", "response_template") if sim.get(k)]
    # A cache beside the output survives settings changes, so a rerun reuses every call it can.
    sim.setdefault("cache", str(out_dir / "dialogues.calls.sqlite"))
    sim_key_settings = {k: v for k, v in sim.items() if k != "cache"}

    model_stages = loop.plan_model_stages(
        config, rel, out_dir, characters=characters_out, dialogues=dialogues_out, shards=shards_out, plan_cls=StagePlan
    )
    return [
        StagePlan("characters", _flags(chars) + ["--out", str(characters_out)], char_inputs, [characters_out], chars),
        StagePlan(
            "simulate",
            ["--characters", str(characters_out), "--out", str(dialogues_out), "--report", str(simulate_report)]
            + _flags(sim, repeat={"endpoint": "--endpoint"}),
            sim_inputs,
            [dialogues_out, simulate_report],
            sim_key_settings,
        ),
        StagePlan(
            "clean",
            ["--in", str(dialogues_out), "--out", str(clean_out), "--quarantine", str(quarantine_out), "--report", str(report_out)] + _flags(clean),
            clean_inputs,
            [clean_out, quarantine_out, report_out],
            clean,
        ),
        StagePlan(
            "tokenize",
            ["--in", str(clean_out), "--out", str(shards_out)] + _flags(tok, repeat={"template_vars": "--template-var"}),
            [clean_out],
            [shards_out],
            tok,
        ),
        *model_stages,
    ]


def file_digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode() + b"\0" + file_digest(child).encode())
        return "dir:" + h.hexdigest()
    st = path.stat()
    if st.st_size > _CONTENT_HASH_LIMIT:
        return f"stat:{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_key(plan: StagePlan) -> str:
    from ditto_native import __version__

    missing = [p for p in plan.inputs if not p.exists()]
    if missing:
        raise DittoError(f"{plan.name}: input {missing[0]} does not exist")
    payload = {
        "stage": plan.name,
        "version": __version__,
        "settings": plan.settings,
        "inputs": {str(p): file_digest(p) for p in plan.inputs},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _read_state(out_dir: Path) -> dict[str, Any]:
    path = out_dir / STATE_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a damaged state only costs a rerun


def _write_state(out_dir: Path, state: dict[str, Any]) -> None:
    write_text_atomic(out_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


def _is_current(plan: StagePlan, key: str, recorded: dict[str, Any] | None) -> bool:
    if not recorded or recorded.get("key") != key:
        return False
    outputs = recorded.get("outputs", {})
    return all(p.exists() and outputs.get(str(p)) == file_digest(p) for p in plan.outputs)


def _count_rows(path: Path) -> int:
    import polars as pl

    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _stage_rows_and_detail(plan: StagePlan) -> tuple[int, str]:
    if plan.name == "train":
        return loop.train_detail(plan.outputs[0])
    if plan.name == "export":
        return loop.export_detail(plan.outputs[0])
    if plan.name == "eval":
        return loop.eval_detail(plan.outputs[0].parent)
    if plan.name == "tokenize":
        manifest = json.loads((plan.outputs[0] / "manifest.json").read_text())
        splits = manifest["splits"]
        rows = sum(s["num_rows"] for s in splits.values())
        real = sum(s["real_tokens"] for s in splits.values())
        loss = sum(s["loss_tokens"] for s in splits.values())
        dropped = ", ".join(f"{k} {v}" for k, v in manifest.get("dropped", {}).items()) or "none"
        eff = splits["train"].get("packing_efficiency", 0.0)
        return rows, f"{rows} rows of {manifest['seq_len']}, {real} real / {loss} loss tokens, packing {eff:.1%}, dropped: {dropped}"
    rows = _count_rows(plan.outputs[0])
    if plan.name == "clean":
        report = json.loads(plan.outputs[2].read_text())
        reasons = ", ".join(f"{r} {c['turns']}" for r, c in report.get("reasons", {}).items()) or "none"
        t = report["turns"]
        return rows, f"{rows} sessions kept, turns {t['clean']}/{t['in']}, dropped turns by reason: {reasons}"
    noun = "character rows" if plan.name == "characters" else "sessions"
    return rows, f"{rows} {noun}"


def run_build(config_path: Path | None, *, run_stage: Callable[[str, list[str]], int] | None = None, log=print) -> list[StageResult]:
    config, config_path = load_config(config_path)
    plans = plan_stages(config, config_path)
    out_dir = plans[0].outputs[0].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(out_dir)
    run_stage = run_stage or _run_subcommand
    results: list[StageResult] = []
    for plan in plans:
        key = stage_key(plan)
        start = time.perf_counter()
        if _is_current(plan, key, state.get(plan.name)):
            status = "skipped"
            log(f"[build] {plan.name}: up to date, skipped", file=sys.stderr)
        else:
            recorded = state.get(plan.name) or {}
            if plan.fresh_output and not (recorded.get("key") == key and recorded.get("status") == "running"):
                for out in plan.outputs:  # a crash under the same settings resumes; other settings start over
                    loop.clear_stale_output(out)
            state[plan.name] = {"key": key, "status": "running"}
            _write_state(out_dir, state)
            if plan.name == "eval":
                log("[build] eval: seed against tuned on held-out characters", file=sys.stderr)
                rc = loop.run_eval_stage(
                    plan.settings, characters=plan.inputs[0], dialogues=plan.inputs[1], tuned=plan.inputs[2],
                    eval_dir=plan.outputs[0].parent, log=lambda m: log(m, file=sys.stderr),
                )
            else:
                log(f"[build] {plan.name}: {plan.tool} {plan.name} {' '.join(plan.argv)}", file=sys.stderr)
                rc = run_stage(plan.name, plan.argv)
            if rc != 0:
                raise DittoError(f"stage {plan.name} failed (exit {rc}); see the message above")
            state[plan.name] = {"key": key, "outputs": {str(p): file_digest(p) for p in plan.outputs}}
            _write_state(out_dir, state)
            status = "ran"
        rows, detail = _stage_rows_and_detail(plan)
        results.append(StageResult(plan.name, status, time.perf_counter() - start, rows, detail))
        if rows == 0:
            log(format_summary(results), file=sys.stderr)
            raise DittoError(f"stage {plan.name} produced 0 rows ({detail}); later stages have nothing to work on")
    return results


def _run_subcommand(name: str, argv: list[str]) -> int:
    if name in ("train", "export"):
        from ditto_jax.cli import main as jax_main

        return jax_main([name, *argv])
    from data_tools.cli import main

    return main([name, *argv])


def format_summary(results: list[StageResult]) -> str:
    lines = ["stage       status     time   result"]
    for r in results:
        lines.append(f"{r.name:<11} {r.status:<8} {r.seconds:>7.1f}s  {r.detail}")
    return "\n".join(lines)


def language_summary(out_dir: Path) -> str:
    """Per language: clean sessions, turns and contrastive turns; the share of the
    simulated contrastive turns that were paired; the verified-evidence rate;
    trimmed answers kept; and dropped turns by reason.

    Pairing and evidence are the simulation's figures (its report): clean may
    keep few contrastive turns, or none, and then has no share of its own.
    """
    import polars as pl

    clean = pl.read_parquet(out_dir / "clean.parquet")
    quarantine = pl.read_parquet(out_dir / "quarantine.parquet")
    report_path = out_dir / "dialogues.report.json"
    simulated = json.loads(report_path.read_text()).get("by_lang", {}) if report_path.exists() else {}
    langs = sorted({*clean["lang"].unique().to_list(), *quarantine["lang"].unique().to_list(), *simulated})

    def share(part: int, whole: int) -> str:
        return f"{part / whole:.0%} ({part}/{whole})" if whole else "n/a"

    lines = ["lang  sessions  turns  contrastive  paired (simulated)  evidence verified  trimmed  dropped turns by reason"]
    for lang in langs:
        c = clean.filter(pl.col("lang") == lang)
        turns = int(c["messages"].list.len().sum() // 2) if c.height else 0
        contrastive = int((c["turn_types"].explode() == "contrastive").sum()) if c.height else 0
        trimmed = int((c["finish_reasons"].explode() == "length_trimmed").sum()) if c.height else 0
        sim = simulated.get(lang, {})
        paired_n = sim.get("contrastive_paired", 0)
        paired = share(paired_n, paired_n + sim.get("contrastive_fallback", 0))
        evidence = share(sim.get("evidence_verified", 0), sim.get("evidence_checked", 0))
        q = quarantine.filter(pl.col("lang") == lang)
        by_reason = (
            q.group_by("reason").agg((pl.col("messages").list.len() // 2).sum().alias("turns")).sort("turns", "reason", descending=[True, False])
            if q.height else pl.DataFrame({"reason": [], "turns": []})
        )
        dropped = ", ".join(f"{r} {t}" for r, t in by_reason.iter_rows()) or "none"
        lines.append(f"{lang:<5} {c.height:>8} {turns:>6} {contrastive:>12} {paired:>19} {evidence:>18} {trimmed:>8}  {dropped}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build",
        help="run characters -> simulate -> clean -> tokenize from one config",
        description="Run the whole data pipeline from one TOML config. Stages whose outputs are current "
        "for their inputs and settings are skipped. Without --config, the shipped default runs the "
        "built-in sample characters through the embedded SmolLM2.",
    )
    p.add_argument("--config", type=Path, help=f"TOML config (default: the shipped {default_config_path().name})")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    results = run_build(args.config)
    print(format_summary(results))
    config, config_path = load_config(args.config)
    out_dir = plan_stages(config, config_path)[0].outputs[0].parent
    print(language_summary(out_dir))
    if any(r.name == "eval" for r in results):
        eval_dir = loop.train_paths(out_dir)["eval"]
        print(f"\nseed against tuned, held-out characters (split All; full table with en/zh and 95% intervals: {eval_dir / 'report.md'})")
        print(loop.comparison_table(eval_dir))
    return 0
