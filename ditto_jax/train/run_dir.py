"""Names in a training run directory, and finding its checkpoints (no Orbax import).

    OUT/config.toml  OUT/metrics.jsonl  OUT/loss.png
    OUT/checkpoints/<step>/{params,opt_state,trainer,model}/
"""
from __future__ import annotations

from pathlib import Path

CHECKPOINTS = "checkpoints"
PARAMS, OPT_STATE, TRAINER, MODEL = "params", "opt_state", "trainer", "model"
CONFIG_FILE = "config.json"  # the HF model config inside MODEL
RUN_CONFIG = "config.toml"  # the resolved training config in OUT


def complete_steps(directory: Path) -> list[int]:
    """Step numbers of finished checkpoints, ascending.

    Orbax writes a step under a temporary name and renames it into place once
    complete, so a bare number with its weights inside is a finished save.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / PARAMS).is_dir())


def is_step_dir(path: Path) -> bool:
    return (Path(path) / PARAMS).is_dir() and (Path(path) / MODEL / CONFIG_FILE).is_file()


def step_dir_of(ref: Path) -> Path | None:
    """The checkpoint a path names: a step directory itself, or a run's newest step."""
    ref = Path(ref)
    if is_step_dir(ref):
        return ref
    steps = complete_steps(ref / CHECKPOINTS)
    return ref / CHECKPOINTS / str(steps[-1]) if steps else None
