"""The evaluation's prompt templates: the simulation's template machinery with the judge kinds added.

Built-ins live beside the simulation's in `data_tools/prompts/` as
`<kind>.<lang>.jinja` (English and Chinese; other languages use English).
Each can be replaced by path (`--consistency-template`, ...), for example
with the paper's own judge prompts; a replacement sees the same variables,
listed at the top of each built-in.
"""
from __future__ import annotations

from pathlib import Path

from data_tools.simulation.prompts import KINDS as SIMULATION_KINDS
from data_tools.simulation.prompts import PromptTemplates

JUDGE_KINDS = ("judge_consistency", "judge_knowledge", "judge_rejection")
MTBENCH_KINDS = ("mtbench_judge", "mtbench_judge_multi")
EVAL_KINDS = (*JUDGE_KINDS, *MTBENCH_KINDS)


class EvalPrompts(PromptTemplates):
    """`render(kind, lang, **variables)` for the simulation kinds and the judge kinds.

    >>> EvalPrompts().source_name("judge_rejection", "zh")
    'builtin:judge_rejection.zh.jinja'
    """

    def __init__(self, overrides: dict[str, str | Path | None] | None = None):
        overrides = dict(overrides or {})
        super().__init__({k: v for k, v in overrides.items() if k in SIMULATION_KINDS})
        for kind, path in overrides.items():
            if kind not in SIMULATION_KINDS and kind not in EVAL_KINDS:
                raise ValueError(f"unknown prompt kind {kind!r}")
            if kind in EVAL_KINDS and path is not None:
                # PromptTemplates keeps its replacements here and checks kinds only in __init__.
                self._overrides[kind] = Path(path)

    def check(self, kinds, langs=("en", "zh")) -> None:
        """Read and compile every template that will be used, so a bad file fails before any model loads."""
        for kind in kinds:
            for lang in langs:
                self._template(kind, lang)
