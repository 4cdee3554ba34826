"""The model half of `ditto-data build`: train -> export -> eval, after the data stages.

A build config with `[train]`, `[export]` and `[eval]` sections runs the whole
Ditto loop; without them the build stops after tokenize. Each stage is one of
the project's own commands run in process (`ditto-jax train`, `ditto-jax
export`, `ditto-eval build/run/report`), so flags, checks and one-line errors
are exactly the CLIs'.

    [train]   config = "cpu-demo"        # shipped name or a TOML path
              set = { steps = 4 }        # any trainer key (`--set`)
    [export]  format = "hf"              # hf or gguf; dtype = "float32", ...
    [eval]    n = 4, turns = 3           # held-out characters, prompts each
              judge = "smollm2"          # --judge REF (or judge_endpoint + judge_model_name)
              judge_samples = 1

Where things go, under the build's out_dir: `train/` (the run directory),
`model/` (the export), `eval/` (eval.jsonl, results-seed.jsonl,
results-tuned.jsonl, report.md/.json/.png). The seed model is the trainer's
`model`, so the table compares the seed with its Ditto-tuned self.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from ditto_native import DittoError

MODEL_STAGES = ("train", "export", "eval")

# Settings each model stage accepts, so a typo is a one-line error, not a silent default.
_KEYS = {
    "train": {"config", "model", "set"},
    "export": {"format", "dtype", "max_shard_size"},
    "eval": {
        "n", "turns", "seed_model", "judge", "judge_endpoint", "judge_model_name", "judge_samples",
        "max_answer_tokens", "max_query_tokens", "judge_max_tokens", "temperature", "seed", "questions_per_pair",
    },
}


def check_sections(config: dict[str, Any], path: Path) -> None:
    for stage in MODEL_STAGES:
        section = config.get(stage)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise DittoError(f"{path}: [{stage}] must be a table")
        unknown = sorted(set(section) - _KEYS[stage])
        if unknown:
            raise DittoError(f"{path}: [{stage}] unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(_KEYS[stage]))}")
    if "export" in config and "train" not in config:
        raise DittoError(f"{path}: [export] needs a [train] section (it exports the trained model)")
    if "eval" in config and "export" not in config:
        raise DittoError(f"{path}: [eval] needs [train] and [export] (it evaluates the exported model)")


def train_paths(out_dir: Path) -> dict[str, Path]:
    return {"train": out_dir / "train", "model": out_dir / "model", "eval": out_dir / "eval"}


def _trainer_config(train: dict[str, Any], rel: Callable[[str], Path]) -> str:
    name = str(train.get("config", "cpu-demo"))
    if name.endswith(".toml") or "/" in name:
        return str(rel(name))
    return name


def _set_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def plan_model_stages(config: dict[str, Any], rel: Callable[[str], Path], out_dir: Path, *, characters: Path, dialogues: Path, shards: Path, plan_cls) -> list:
    """StagePlans for the sections present, in order train, export, eval."""
    plans = []
    paths = train_paths(out_dir)
    train = config.get("train")
    if train is None:
        return plans
    trainer_config = _trainer_config(train, rel)
    overrides = dict(train.get("set", {}))
    if not isinstance(overrides, dict):
        raise DittoError("[train] set must be a table of trainer keys, e.g. set = { steps = 4 }")
    for key in ("data", "out"):
        if key in overrides:
            raise DittoError(f"[train] set.{key}: the build chooses it ({key} = {shards if key == 'data' else paths['train']})")
    if train.get("model"):
        overrides["model"] = train["model"]
    argv = ["--config", trainer_config, "--set", f"data={shards}", "--set", f"out={paths['train']}"]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={_set_value(value)}"]
    train_inputs = [shards] + ([Path(trainer_config)] if Path(trainer_config).suffix == ".toml" else [])
    plans.append(plan_cls("train", argv, train_inputs, [paths["train"]], {"config": trainer_config, "set": overrides}, tool="ditto-jax", fresh_output=True))

    export = config.get("export")
    if export is None:
        return plans
    export = dict(export)
    argv = ["--model", str(paths["train"]), "--out", str(paths["model"]), "--force", "--format", str(export.get("format", "hf"))]
    if export.get("dtype"):
        argv += ["--dtype", str(export["dtype"])]
    if export.get("max_shard_size"):
        argv += ["--max-shard-size", str(export["max_shard_size"])]
    if export.get("format", "hf") != "hf" and "eval" in config:
        raise DittoError("[eval] evaluates the exported Hugging Face directory: keep [export] format = \"hf\"")
    plans.append(plan_cls("export", argv, [paths["train"]], [paths["model"]], export, tool="ditto-jax"))

    ev = config.get("eval")
    if ev is None:
        return plans
    ev = dict(ev)
    ev.setdefault("seed_model", str(overrides.get("model") or _trainer_model(trainer_config)))
    ev.setdefault("judge", None if ev.get("judge_endpoint") else ev["seed_model"])
    settings = {k: v for k, v in ev.items()}
    eval_dir = paths["eval"]
    outputs = [eval_dir / "eval.jsonl", eval_dir / "results-seed.jsonl", eval_dir / "results-tuned.jsonl", eval_dir / "report.md"]
    plans.append(plan_cls("eval", [], [characters, dialogues, paths["model"]], outputs, settings, tool="ditto-eval"))
    return plans


def _trainer_model(trainer_config: str) -> str:
    """The `model` a trainer config names (the seed that the tuned model is compared with)."""
    from ditto_jax.train.config import load_train_config

    return str(load_train_config(trainer_config, []).model)


def eval_commands(settings: dict[str, Any], *, characters: Path, dialogues: Path, tuned: Path, eval_dir: Path) -> list[list[str]]:
    """The `ditto-eval` command lines of the eval stage: build, run seed, run tuned, report."""
    s = dict(settings)
    seed_model = str(s["seed_model"])
    common_seed = ["--seed", str(s.get("seed", 0))]
    build = ["build", "--characters", str(characters), "--exclude-from", str(dialogues), "--model", seed_model,
             "--out", str(eval_dir / "eval.jsonl"), "--n", str(s.get("n", 4)), "--turns", str(s.get("turns", 3)), *common_seed]
    for key, flag in (("max_query_tokens", "--max-query-tokens"), ("questions_per_pair", "--questions-per-pair")):
        if s.get(key) is not None:
            build += [flag, str(s[key])]
    if s.get("judge_endpoint"):
        judge = ["--judge-endpoint", str(s["judge_endpoint"]), "--judge-model-name", str(s.get("judge_model_name", ""))]
    else:
        judge = ["--judge", str(s["judge"])]
    judge += ["--judge-samples", str(s.get("judge_samples", 1))]
    if s.get("judge_max_tokens") is not None:
        judge += ["--judge-max-new-tokens", str(s["judge_max_tokens"])]
    answer = ["--max-new-tokens", str(s.get("max_answer_tokens", 128))]
    if s.get("temperature") is not None:
        answer += ["--temperature", str(s["temperature"])]
    runs = [
        ["run", "--eval", str(eval_dir / "eval.jsonl"), "--model", model, "--model-label", label, *judge, *answer, *common_seed,
         "--out", str(eval_dir / f"results-{label}.jsonl")]
        for label, model in (("seed", seed_model), ("tuned", str(tuned)))
    ]
    report = ["report", str(eval_dir / "results-seed.jsonl"), str(eval_dir / "results-tuned.jsonl"), "--out", str(eval_dir / "report.md")]
    return [build, *runs, report]


def run_eval_stage(settings: dict[str, Any], *, characters: Path, dialogues: Path, tuned: Path, eval_dir: Path, log) -> int:
    from data_tools.eval.cli import main as eval_main

    eval_dir.mkdir(parents=True, exist_ok=True)
    for argv in eval_commands(settings, characters=characters, dialogues=dialogues, tuned=tuned, eval_dir=eval_dir):
        log(f"[build] eval: ditto-eval {' '.join(argv)}")
        rc = eval_main(argv)
        if rc != 0:
            return rc
    return 0


def clear_stale_output(path: Path) -> None:
    """A run directory left by other settings would be resumed by the trainer: remove it first."""
    if path.is_dir():
        shutil.rmtree(path)


# ---- what the summary says about each model stage ---------------------------------------------


def train_detail(run_dir: Path) -> tuple[int, str]:
    """(updates done, final train / held-out loss and the plot's path) from metrics.jsonl."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise DittoError(f"{run_dir}: the trainer wrote no metrics.jsonl")
    by_step: dict[int, dict[str, Any]] = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step.setdefault(int(record["step"]), {}).update(record)  # the last record for a step wins
    if not by_step:
        return 0, "no update logged"
    last = by_step[max(by_step)]
    heldout = [r["heldout_loss"] for _, r in sorted(by_step.items()) if r.get("heldout_loss") is not None]
    first_heldout = f"{heldout[0]:.4f} -> " if len(heldout) > 1 else ""
    held = f"held-out loss {first_heldout}{heldout[-1]:.4f}" if heldout else "no held-out evaluation"
    return max(by_step), f"{max(by_step)} updates, train loss {last['loss']:.4f}, {held}; plot {run_dir / 'loss.png'}"


def export_detail(model_dir: Path) -> tuple[int, str]:
    files = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) if model_dir.is_dir() else 0
    return len(files), f"{model_dir} ({size / 2**20:.0f} MiB of safetensors, {len(files)} files)"


def eval_detail(eval_dir: Path) -> tuple[int, str]:
    sessions = sum(1 for line in (eval_dir / "eval.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    return sessions, f"{sessions} held-out sessions; report {eval_dir / 'report.md'}"


def comparison_table(eval_dir: Path) -> str:
    """The seed-against-tuned table (split All), judge-based and judge-free metrics side by side."""
    data = json.loads((eval_dir / "report.json").read_text(encoding="utf-8"))
    section = data.get("wikiroleeval")
    if not section:
        return "(no WikiRoleEval section in the report)"
    names = [m["name"] for m in section["models"]]
    split = section["splits"].get("All") or next(iter(section["splits"].values()))
    lines = [f"{'metric':<38} {'kind':<11} " + " ".join(f"{n:>8}" for n in names) + "   delta"]
    from data_tools.eval.metrics import METRICS

    for metric in METRICS:
        rows = split["metrics"].get(metric.key)
        if not rows:
            continue
        values = " ".join(f"{_fmt(r['value']):>8}" for r in rows)
        delta = rows[-1].get("delta") or {}
        lines.append(f"{metric.title:<38} {metric.kind:<11} {values}   {_fmt(delta.get('value'), signed=True)}")
    return "\n".join(lines)


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
