"""Settings of the clean stage: one frozen dataclass, loadable from TOML or JSON.

Every check has its threshold here; `None` turns that check off (JSON: null;
TOML has no null, so `false` does it there, and JSON accepts `false` too). Defaults follow the Gopher rules (Rae et al., 2021) for
repetition and err towards keeping data for the role-play checks.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from ditto_native import DittoError

TURN_FAILURE_POLICIES = ("drop_turn", "drop_session")


@dataclass(frozen=True)
class CleanConfig:
    # --- turn checks: lengths in characters of the stripped text ---
    min_question_chars: int | None = 4
    max_question_chars: int | None = 2000
    min_answer_chars: int | None = 8  # "I see." is not a role-play answer
    max_answer_chars: int | None = 8000
    # --- repetition (Gopher table A1), on the answer ---
    dup_line_frac: float | None = 0.30  # lines repeating an earlier line
    dup_line_char_frac: float | None = 0.20  # characters in repeated lines
    top_ngram_char_frac: tuple[float, ...] | None = (0.20, 0.18, 0.16)  # n = 2, 3, 4
    dup_ngram_char_frac: tuple[float, ...] | None = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)  # n = 5..10
    repetition_min_words: int = 12  # n-gram fractions of fewer words are noise
    # --- role-play checks ---
    leak_phrases: tuple[str, ...] | None = ()  # added to the built-in en/zh list; None = off
    identity_break: bool | None = True
    refusal_window_chars: int | None = 150  # a role-specific answer may not refuse in its opening
    min_script_ratio: float | None = 0.5  # share of words in the session language's script
    script_min_words: int = 3  # fewer words are not judged
    truncation_reasons: tuple[str, ...] | None = ("length",)  # length_trimmed ends at a sentence: kept
    prompt_echo: bool | None = True  # question, answer or evidence repeating the simulation prompts' scaffolding
    echo_phrases: tuple[str, ...] = ()  # added to the phrases read from the built-in prompts (e.g. your own templates')
    # Contrastive turns whose question was not written with this role as the
    # partner (`pairings` = fallback) carry a label no prompt judged: drop them
    # (as label_mismatch) while at least `min_turns` other turns remain.
    drop_fallback_turns: bool | None = True
    # --- dedupe ---
    exact_dedupe_sessions: bool | None = True
    exact_dedupe_questions: bool | None = True  # within one character_id
    session_near_dup_threshold: float | None = 0.8  # Jaccard of session shingle sets
    question_near_dup_threshold: float | None = 0.8  # within one character_id
    word_ngram: int = 3
    cjk_char_ngram: int = 3
    num_perm: int = 128
    bands: int = 32  # bands * rows <= num_perm; (1/bands)^(1/rows) ~ 0.42 = LSH S-curve midpoint
    rows: int = 4
    lsh_seed: int = 1
    max_bucket_window: int = 64  # compare a bucket member with at most this many before it
    # --- what a failed turn costs ---
    # drop_turn: drop only the failed turns while at least `min_turns` remain,
    # else quarantine the whole session; drop_session: any failure drops it.
    turn_failure: str = "drop_turn"
    min_turns: int = 2
    # --- running ---
    threads: int | None = None  # None = all cores; results never depend on it
    report_examples: int = 3  # examples per reason in the report

    def __post_init__(self) -> None:
        if self.turn_failure not in TURN_FAILURE_POLICIES:
            raise DittoError(f"turn_failure must be one of {', '.join(TURN_FAILURE_POLICIES)}, got {self.turn_failure!r}")
        if self.min_turns < 1:
            raise DittoError(f"min_turns must be at least 1, got {self.min_turns}")
        if self.bands * self.rows > self.num_perm:
            raise DittoError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")

    # The subset the Rust turn checks read, as their JSON config.
    def filter_settings(self) -> dict[str, object]:
        keys = (
            "min_question_chars max_question_chars min_answer_chars max_answer_chars dup_line_frac "
            "dup_line_char_frac top_ngram_char_frac dup_ngram_char_frac repetition_min_words leak_phrases "
            "identity_break refusal_window_chars min_script_ratio script_min_words truncation_reasons"
        ).split()
        return {k: getattr(self, k) for k in keys}

    def lsh_settings(self) -> dict[str, object]:
        return {
            "word_ngram": self.word_ngram,
            "cjk_char_ngram": self.cjk_char_ngram,
            "num_perm": self.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "seed": self.lsh_seed,
            "max_bucket_window": self.max_bucket_window,
        }


def _coerce(source: str, name: str, value: object, hint: object) -> object:
    """Checks one setting against its annotation; lists become tuples."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is False and type(None) in options and bool not in options:
        value = None  # TOML's way to say "off"
    if value is None:
        if type(None) in options:
            return None
        raise DittoError(f"{source}: setting {name!r} may not be null")
    for option in options:
        origin = typing.get_origin(option)
        if origin is tuple and isinstance(value, list | tuple):
            (item,) = {a for a in typing.get_args(option) if a is not Ellipsis}
            if all(isinstance(v, item) or (item is float and isinstance(v, int) and not isinstance(v, bool)) for v in value):
                return tuple(float(v) if item is float else v for v in value)
        elif option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        elif option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif option in (str, bool) and isinstance(value, option):
            return value
    raise DittoError(f"{source}: setting {name!r} has the wrong type ({type(value).__name__}); expected {hint}")


def config_from_mapping(data: dict[str, object], source: str = "config") -> CleanConfig:
    """A CleanConfig from a mapping; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(CleanConfig)
    fields = {f.name for f in dataclasses.fields(CleanConfig)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise DittoError(f"{source}: unknown clean setting {unknown[0]!r}")
    return CleanConfig(**{k: _coerce(source, k, v, hints[k]) for k, v in data.items()})


def load_config(path: str | Path | None) -> CleanConfig:
    """Reads a TOML or JSON file; settings may sit at the top or under `clean`."""
    if path is None:
        return CleanConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DittoError(f"{path}: cannot parse config: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DittoError(f"{path}: config must be a table of settings")
    if isinstance(data.get("clean"), dict):
        data = data["clean"]
    return config_from_mapping(data, str(path))
