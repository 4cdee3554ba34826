"""OUT/metrics.jsonl and OUT/loss.png.

One JSON object per logged update: step, loss, lr, grad_norm, tokens_per_s,
mfu, time, plus heldout_loss at evaluation steps. A rerun after a crash
appends; readers take the last record of each step (`read_metrics`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with (Path(run_dir) / METRICS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Records by step, the last one written for a step winning; a torn last line is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(run_dir: Path) -> Path:
    """Train and held-out loss against step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    held = [(r["step"], r["heldout_loss"]) for r in records if r.get("heldout_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1.2)
    if held:
        ax.plot(*zip(*held), "o-", label="held-out", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / target token)")
    ax.grid(alpha=0.3)
    if train or held:
        ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / PLOT_FILE
    tmp = out.with_name(".loss.png.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
