"""Judge-free role metrics: the clean stage's own checks on the evaluated answers.

The clean stage records one reason per turn (its first failing check), so a
rambling answer that also refuses would be counted only as "repetition".
Here each check runs on its own, over every answered turn, with every other
check switched off: the same Rust code (`ditto_native.check_turns`) with a
config that enables one check at a time. Per turn:

- `leak_flags`: the answer speaks as an AI assistant (the built-in en/zh
  phrases, plus the answering model's own name);
- `identity_break_flags`: the answer claims to be someone other than the role;
- `refusal_flags`: the answer refuses for lack of knowledge. The clean
  stage's rule: a contrastive turn (label 1) refuses when a refusal phrase
  appears anywhere; a role-specific turn (label 0) counts as refusing when
  one appears in its opening `refusal_window_chars`.

An empty answer raises none of the flags.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ditto_native
import polars as pl

from data_tools.cleaning import native
from data_tools.cleaning.config import CleanConfig

FLAG_FIELDS = ("leak_flags", "identity_break_flags", "refusal_flags")

# Every check of the turn filter, off.
_ALL_OFF = dict(
    min_question_chars=None, max_question_chars=None, min_answer_chars=None, max_answer_chars=None,
    dup_line_frac=None, dup_line_char_frac=None, top_ngram_char_frac=None, dup_ngram_char_frac=None,
    leak_phrases=None, identity_break=None, refusal_window_chars=None, min_script_ratio=None,
    truncation_reasons=None,
)


@dataclasses.dataclass(frozen=True)
class FlagSession:
    label: str
    description: str
    lang: str
    questions: Sequence[str]
    answers: Sequence[str]
    rejection_labels: Sequence[int]


def only(check: str, cfg: CleanConfig) -> CleanConfig:
    """`cfg` with every turn check off except `check` (its threshold kept from `cfg`)."""
    keep = {
        "leak": ("leak_phrases",),
        "identity_break": ("identity_break",),
        "refusal": ("refusal_window_chars",),
    }[check]
    settings = {k: v for k, v in _ALL_OFF.items() if k not in keep}
    for k in keep:  # a check the user's config switched off still runs here: the metric needs it
        if getattr(cfg, k) is None:
            settings[k] = getattr(CleanConfig(), k)
    return dataclasses.replace(cfg, **settings)


def judge_free_flags(sessions: Sequence[FlagSession], model_name: str, cfg: CleanConfig | None = None) -> list[dict[str, list[bool]]]:
    """Per session, the three per-turn flag lists (see the module docstring)."""
    cfg = cfg or CleanConfig()
    frame_sessions = pl.DataFrame(
        {
            "lang": [s.lang for s in sessions],
            # The role's name comes from the SFT system line, the form the identity check reads.
            "system": [_system_line(s) for s in sessions],
            "simulator": [model_name] * len(sessions),
        },
        schema={"lang": pl.String, "system": pl.String, "simulator": pl.String},
    )
    turns = pl.DataFrame(
        {
            "_sid": [i for i, s in enumerate(sessions) for _ in s.answers],
            "question": [q for s in sessions for q in s.questions[: len(s.answers)]],
            "answer": [a for s in sessions for a in s.answers],
            "rejection_labels": [label for s in sessions for label in s.rejection_labels[: len(s.answers)]],
            "finish_reasons": ["stop" for s in sessions for _ in s.answers],
        },
        schema={"_sid": pl.UInt32, "question": pl.String, "answer": pl.String, "rejection_labels": pl.Int8, "finish_reasons": pl.String},
    )
    answered = [bool(a.strip()) for a in turns["answer"].to_list()]
    labels = turns["rejection_labels"].to_list()
    reasons = {}
    for check in ("leak", "identity_break", "refusal"):
        if turns.height:
            reason, _ = native.check_turns(turns, frame_sessions, only(check, cfg))
            reasons[check] = reason.to_list()
        else:
            reasons[check] = []
    leak = [r == "assistant_leak" for r in reasons["leak"]]
    identity = [r == "identity_break" for r in reasons["identity_break"]]
    # label 1 passes the refusal check by refusing; label 0 fails it by refusing early.
    refusal = [
        ok and ((r is None) if label == 1 else (r == "label_mismatch"))
        for ok, label, r in zip(answered, labels, reasons["refusal"])
    ]
    out = []
    start = 0
    for s in sessions:
        end = start + len(s.answers)
        out.append({"leak_flags": leak[start:end], "identity_break_flags": identity[start:end], "refusal_flags": refusal[start:end]})
        start = end
    return out


def _system_line(s: FlagSession) -> str:
    return ditto_native.system_message(s.label, s.description, s.lang)
