"""README.md for an exported model: what it is, what it was trained on, and how.

Everything in the card is read from files, never assumed:
- the base model is the run's `model` setting (or, for a plain model reference,
  the reference itself);
- the data summary comes from the shard manifest the run's `data` setting
  points at (sessions, tokens, languages, sources);
- the training settings are the run's resolved config.toml;
- evaluation results are a `report.md` beside the run (in its folder or its
  `eval/` folder), included as written.

    card = model_card(ModelCardInputs(name="ditto-smollm2", source="runs/a", ...))
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from ditto_jax.train.run_dir import CHECKPOINTS, RUN_CONFIG
from ditto_native import DittoError

# The Ditto paper, the method this toolkit implements.
CITATION = """@inproceedings{lu-etal-2024-large,
  title = {Large Language Models are Superpositions of All Characters: Attaining Arbitrary Role-play via Self-Alignment},
  author = {Lu, Keming and Yu, Bowen and Zhou, Chang and Zhou, Jingren},
  booktitle = {Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics (ACL)},
  year = {2024},
  eprint = {2401.12474},
  archivePrefix = {arXiv}
}"""

METHOD = """Ditto (Lu et al., 2024) is self-alignment for role-play. An instruction-following model
already knows thousands of characters, so it writes its own training data: characters come
from Wikidata (with their Wikipedia articles as profiles), the model writes questions that one
character can answer and a contrasting character cannot, answers each one in character (refusing,
in character, what lies beyond the role's knowledge), and the turns are joined into multi-turn
sessions. The same model is then fine-tuned on those sessions, with the system message
`You are {label}, {description}` and the loss on assistant turns only."""

REPORT_NAMES = ("report.md", "eval/report.md")  # where an evaluation report is looked for, in the run


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """A training run as the card describes it."""

    root: Path
    step: int | None
    config: dict[str, Any]  # the run's resolved config.toml
    manifest: dict[str, Any] | None  # the shards' manifest.json, when it can be found
    manifest_path: Path | None
    report: str | None  # an evaluation report beside the run (Markdown)
    report_path: Path | None


@dataclasses.dataclass(frozen=True)
class ModelCardInputs:
    name: str  # the exported model's name (the output's)
    source: str  # the model reference exported
    fmt: str  # "hf" or "gguf"
    dtype: str
    architecture: str  # e.g. "LlamaForCausalLM"
    num_params: int
    run: RunInfo | None = None


def find_run(path: Path) -> RunInfo | None:
    """The training run a checkpoint path belongs to: the run root (with config.toml) or
    one of its `checkpoints/<step>` folders. None for anything else."""
    path = Path(path)
    step = None
    root = path
    if path.parent.name == CHECKPOINTS and path.name.isdigit():
        root, step = path.parent.parent, int(path.name)
    config_path = root / RUN_CONFIG
    if not config_path.is_file():
        return None
    try:
        config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DittoError(f"{config_path}: invalid TOML ({exc})") from None
    manifest_path = _find_manifest(root, config.get("data"))
    manifest = None
    if manifest_path is not None:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DittoError(f"{manifest_path}: invalid JSON ({exc})") from None
    report_path = next((root / n for n in REPORT_NAMES if (root / n).is_file()), None)
    report = report_path.read_text(encoding="utf-8") if report_path else None
    return RunInfo(root, step, config, manifest, manifest_path, report, report_path)


def _find_manifest(root: Path, data: Any) -> Path | None:
    """The shards' manifest: `data` is relative to where training ran, which is usually the
    run's parent's working directory; try it as given, then beside the run."""
    if not isinstance(data, str) or not data:
        return None
    data_path = Path(data).expanduser()
    candidates = [data_path] if data_path.is_absolute() else [data_path, root.parent / data_path, root / data_path]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file():
            return candidate / "manifest.json"
    return None


def model_card(inputs: ModelCardInputs) -> str:
    run = inputs.run
    base = str(run.config.get("model")) if run else inputs.source
    languages = list((run.manifest or {}).get("languages", {})) if run else []
    front = ["---", f"library_name: {'transformers' if inputs.fmt == 'hf' else 'gguf'}", "pipeline_tag: text-generation", "tags:"]
    front += ["- ditto", "- role-play", "- text-generation"] + (["- gguf"] if inputs.fmt == "gguf" else [])
    if languages:
        front += ["language:"] + [f"- {lang}" for lang in languages]
    front.append("---")

    lines = [*front, "", f"# {inputs.name}", ""]
    if run:
        step = f" (step {run.step})" if run.step is not None else ""
        lines.append(f"A role-play model fine-tuned from `{base}` with Ditto self-alignment{step}, exported by the Ditto toolkit's `ditto-jax export`.")
    else:
        lines.append(f"`{inputs.source}` exported by the Ditto toolkit's `ditto-jax export`. No Ditto training run is attached to this export.")
    lines += [
        "",
        "## Model",
        "",
        f"- Base model: `{base}`",
        f"- Architecture: {inputs.architecture}, {inputs.num_params / 1e6:,.1f}M parameters",
        f"- Format: {'Hugging Face safetensors' if inputs.fmt == 'hf' else 'GGUF (llama architecture)'}, {inputs.dtype}",
        "",
    ]
    if run:
        lines += _data_section(run) + _settings_section(run)
    lines += ["## Method", "", METHOD, "", "Citation:", "", "```bibtex", CITATION, "```", ""]
    lines += ["## Evaluation", ""]
    if run and run.report:
        lines += [f"From `{run.report_path.name}` beside the run:", "", run.report.strip(), ""]
    else:
        lines += ["No evaluation report was found beside the run." if run else "Not evaluated as part of this export.", ""]
    lines += _usage_section(inputs)
    return "\n".join(lines)


def _data_section(run: RunInfo) -> list[str]:
    lines = ["## Training data", ""]
    m = run.manifest
    if m is None:
        return lines + [f"The shard manifest for `{run.config.get('data')}` was not found, so the data cannot be summarised.", ""]
    splits = m.get("splits", {})
    train, held = splits.get("train", {}), splits.get("heldout", {})
    lines += [
        f"Ditto role-play sessions, tokenized with `{(m.get('tokenizer') or {}).get('name')}` into rows of {m.get('seq_len')} tokens.",
        "",
        "| split | sessions | rows | tokens | loss tokens |",
        "|---|---|---|---|---|",
    ]
    for label, s in (("train", train), ("held-out", held)):
        lines.append(f"| {label} | {s.get('num_segments', 0):,} | {s.get('num_rows', 0):,} | {s.get('real_tokens', 0):,} | {s.get('loss_tokens', 0):,} |")
    lines.append("")
    languages = m.get("languages") or {}
    if languages:
        total = m.get("sessions_in", sum(languages.values()))
        per_language = ", ".join(f"{lang} {n:,}" for lang, n in languages.items())
        lines.append(f"Sessions per language, of the {total:,} sessions tokenized: {per_language}.")
        lines.append("")
    sources = m.get("sources") or {}
    if sources:
        lines += ["Sources (SHA-256):", ""] + [f"- `{Path(f).name}` `{sha}`" for f, sha in sources.items()] + [""]
    dropped = m.get("dropped") or {}
    if dropped:
        lines += ["Dropped while tokenizing: " + ", ".join(f"{k} {v}" for k, v in dropped.items()) + ".", ""]
    return lines


def _settings_section(run: RunInfo) -> list[str]:
    lines = ["## Training settings", "", "From the run's `config.toml`:", "", "| setting | value |", "|---|---|"]
    for key, value in _flatten(run.config):
        lines.append(f"| {key} | `{json.dumps(value) if not isinstance(value, str) else value}` |")
    return lines + [""]


def _flatten(config: dict[str, Any], prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _usage_section(inputs: ModelCardInputs) -> list[str]:
    if inputs.fmt == "hf":
        code = [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("PATH")',
            'model = AutoModelForCausalLM.from_pretrained("PATH")',
            'messages = [{"role": "system", "content": "You are Ada Lovelace, English mathematician"}, {"role": "user", "content": "What are you working on?"}]',
            "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=128)[0][ids.shape[1]:], skip_special_tokens=True))",
            "```",
        ]
    else:
        code = ["```sh", "llama-cli -m MODEL.gguf -cnv -sys \"You are Ada Lovelace, English mathematician\"", "```"]
    return ["## Usage", "", *code, ""]
