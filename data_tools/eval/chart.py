"""The report's bar chart: one panel per metric, splits along x, one bar per model, 95% intervals as error bars."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = 4


def bar_chart(panels: Sequence, path: str | Path, format: str = "png") -> None:
    """Write a PNG of `panels` (report.Panel) to `path`."""
    rows = max(1, math.ceil(len(panels) / COLUMNS))
    cols = min(COLUMNS, max(1, len(panels)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    try:
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, panel in zip(axes.flat, panels):
            models = list(panel.series)
            width = 0.8 / max(1, len(models))
            for m, model in enumerate(models):
                xs, heights, lows, highs = [], [], [], []
                for g, e in enumerate(panel.series[model]):
                    if e is None or e.value is None:
                        continue
                    xs.append(g - 0.4 + width * (m + 0.5))
                    heights.append(e.value)
                    lo, hi = e.interval or (e.value, e.value)
                    lows.append(max(0.0, e.value - lo))
                    highs.append(max(0.0, hi - e.value))
                ax.bar(xs, heights, width, yerr=[lows, highs], capsize=3, label=model)
            ax.set_xticks(range(len(panel.groups)), panel.groups)
            ax.set_title(panel.title, fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        if panels:
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.savefig(path, dpi=110, format=format)  # the path may be a temporary name without the suffix
    finally:
        plt.close(fig)
