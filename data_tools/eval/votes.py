"""Blind human votes (`ditto-jax serve --ui --votes FILE`): win rates per model pair and Bradley–Terry scores.

A vote file has one JSON object per line (see ditto_jax/playground/votes.py):
`model_a` (shown left), `model_b` (shown right), `choice` (`a`, `b` or `tie`),
`turn`, `timestamp`, and `character`, `character_id`, `language`,
`conversation` (null when not known). Several files are pooled.

- **Win rate** of a pair (first model in name order against the second): wins
  plus half the ties, over the pair's votes; the side a model was shown on
  does not matter.
- **Interval**: 95% percentile bootstrap with the report's procedure
  (`bootstrap`: `default_rng([seed, crc32(split)])`, split `votes:<first> vs
  <second>`). The resampling unit is the conversation, as turns of one session
  are for the judged metrics: votes in one chat are not independent. A vote
  without a conversation id is a unit of its own.
- **Bradley–Terry** (more than two models): P(i beats j) = p_i / (p_i + p_j),
  fitted by Hunter's (2004) minorise-maximise iteration with ties as half a
  win each way. Every model also gets one virtual tie against a fixed
  reference of strength 1, so a model that never wins (or never loses) keeps
  a finite score. Scores are on the Elo scale: 1000 + 400·log10(p_i), so the
  reference sits at 1000 and a 400-point gap means odds of 10 to 1.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ditto_native import DittoError

from data_tools.eval import bootstrap

CHOICES = ("a", "b", "tie")
BT_PRIOR_TIES = 1.0  # virtual ties of each model against the reference (weight in votes)
ELO_BASE, ELO_SCALE = 1000.0, 400.0


def is_vote_record(record: dict[str, Any]) -> bool:
    """Whether a file's first record looks like a vote (how `ditto-eval report` recognises vote files)."""
    return "choice" in record and "model_a" in record and "model_b" in record


@dataclasses.dataclass(frozen=True)
class Vote:
    model_a: str  # shown on the left
    model_b: str  # shown on the right
    choice: str  # a | b | tie
    conversation: str  # the bootstrap unit: the conversation id, or file:line when none was recorded
    language: str | None

    def score(self, model: str) -> float:
        """1 for a win of `model`, 0.5 for a tie, 0 for a loss."""
        if self.choice == "tie":
            return 0.5
        winner = self.model_a if self.choice == "a" else self.model_b
        return 1.0 if winner == model else 0.0


@dataclasses.dataclass(frozen=True)
class VoteFile:
    path: Path
    votes: list[Vote]


def load_votes(path: Path, rows: Sequence[tuple[int, dict[str, Any]]]) -> VoteFile:
    """The votes of one file, checked; raises DittoError naming the file, line and field."""
    votes = []
    for line, record in rows:
        where = f"{path}: line {line}"
        for field in ("model_a", "model_b"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DittoError(f"{where}: field {field!r} must be a model name (expected `ditto-jax serve --votes` records)")
        if record["model_a"] == record["model_b"]:
            raise DittoError(f"{where}: field 'model_b' names the same model as 'model_a'")
        choice = record.get("choice")
        if choice not in CHOICES:
            raise DittoError(f"{where}: field 'choice' must be one of {', '.join(CHOICES)} (got {choice!r})")
        conversation = record.get("conversation")
        if conversation is not None and not isinstance(conversation, str):
            raise DittoError(f"{where}: field 'conversation' must be a string or null")
        language = record.get("language")
        votes.append(Vote(record["model_a"], record["model_b"], choice,
                          conversation or f"{path}:{line}", language if isinstance(language, str) else None))
    return VoteFile(path, votes)


# ---- win rates -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WinRate:
    """One pair's result; `value` and `interval` are the first model's win rate (ties count half)."""

    first: str
    second: str
    votes: int
    first_wins: int
    second_wins: int
    ties: int
    conversations: int
    value: float
    interval: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.interval or (None, None)
        return {
            "first": self.first, "second": self.second, "votes": self.votes, "first_wins": self.first_wins,
            "second_wins": self.second_wins, "ties": self.ties, "conversations": self.conversations,
            "win_rate": self.value, "lo": lo, "hi": hi,
        }


def pair_split(first: str, second: str) -> str:
    """The bootstrap split name of a pair (it seeds the pair's resample indices)."""
    return f"votes:{first} vs {second}"


def win_rates(votes: Sequence[Vote], *, seed: int = 0, resamples: int = bootstrap.RESAMPLES) -> list[WinRate]:
    """Every pair that has votes, in name order, with its bootstrap interval."""
    by_pair: dict[tuple[str, str], list[Vote]] = {}
    for vote in votes:
        by_pair.setdefault(tuple(sorted((vote.model_a, vote.model_b))), []).append(vote)
    out = []
    for (first, second), pair_votes in sorted(by_pair.items()):
        units: dict[str, list[float]] = {}  # conversation -> the first model's scores, in file order
        for vote in pair_votes:
            units.setdefault(vote.conversation, []).append(vote.score(first))
        sums = np.array([sum(s) for s in units.values()])
        counts = np.array([float(len(s)) for s in units.values()])
        idx = bootstrap.resample_indices(len(units), pair_split(first, second), seed=seed, resamples=resamples)
        scores = [vote.score(first) for vote in pair_votes]
        out.append(WinRate(
            first, second, len(pair_votes), scores.count(1.0), scores.count(0.0), scores.count(0.5), len(units),
            float(sum(scores) / len(scores)), bootstrap.interval(bootstrap.resampled(sums, counts, idx)),
        ))
    return out


# ---- Bradley–Terry ---------------------------------------------------------------------------------


def bradley_terry(votes: Sequence[Vote], *, prior_ties: float = BT_PRIOR_TIES, tol: float = 1e-12, max_iter: int = 100_000) -> dict[str, float]:
    """Strength p_i of each model (reference = 1), by MM iteration; see the module doc.

    The fixed point solves, for every model i,
        W_i + prior/2 = sum_j N_ij p_i / (p_i + p_j) + prior p_i / (p_i + 1),
    where W_i is i's wins plus half its ties and N_ij the votes between i and j.
    """
    models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
    pos = {m: i for i, m in enumerate(models)}
    k = len(models)
    wins = np.zeros(k)
    games = np.zeros((k, k))
    for vote in votes:
        a, b = pos[vote.model_a], pos[vote.model_b]
        games[a, b] += 1
        games[b, a] += 1
        wins[a] += vote.score(vote.model_a)
        wins[b] += vote.score(vote.model_b)
    p = np.ones(k)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1) + prior_ties / (p + 1.0)
        new = (wins + prior_ties / 2) / denom
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    return {m: float(p[pos[m]]) for m in models}


def elo(strength: float) -> float:
    return ELO_BASE + ELO_SCALE * math.log10(strength)


# ---- the report's section ------------------------------------------------------------------------


@dataclasses.dataclass
class VoteSection:
    files: list[VoteFile]
    seed: int
    resamples: int
    pairs: list[WinRate]
    models: list[str]
    counts: dict[str, int]  # model -> votes it appeared in
    strengths: dict[str, float] | None  # Bradley–Terry, only with more than two models

    @classmethod
    def compute(cls, files: Sequence[VoteFile], *, seed: int, resamples: int) -> VoteSection:
        votes = [v for f in files for v in f.votes]
        models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
        counts = {m: sum(m in (v.model_a, v.model_b) for v in votes) for m in models}
        strengths = bradley_terry(votes) if len(models) > 2 else None
        return cls(list(files), seed, resamples, win_rates(votes, seed=seed, resamples=resamples), models, counts, strengths)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": [str(f.path) for f in self.files],
            "votes": sum(len(f.votes) for f in self.files),
            "bootstrap": {"unit": "conversation", "split": "votes:<first> vs <second>"},
            "pairs": [p.to_json() for p in self.pairs],
            "bradley_terry": None if self.strengths is None else [
                {"model": m, "elo": elo(s), "strength": s, "votes": self.counts[m]} for m, s in self.ranked()
            ],
        }

    def ranked(self) -> list[tuple[str, float]]:
        return sorted((self.strengths or {}).items(), key=lambda kv: (-kv[1], kv[0]))

    def markdown(self) -> str:
        from data_tools.eval.report import _table, fmt  # report imports this module

        total = sum(len(f.votes) for f in self.files)
        parts = [
            "## Blind human votes", "",
            f"{total} votes from " + ", ".join(f"`{f.path.name}`" for f in self.files) + ". "
            "The win rate is the first model's, with ties counted as half a win; brackets hold 95% percentile-bootstrap "
            f"intervals over conversations ({self.resamples} resamples, seed {self.seed}, split `votes:<first> vs <second>`).",
            "",
            _table(
                ["first", "second", "votes", "first wins", "second wins", "ties", "first's win rate"],
                [[p.first, p.second, str(p.votes), str(p.first_wins), str(p.second_wins), str(p.ties), fmt(p, 3)] for p in self.pairs],
            ),
        ]
        if self.strengths is not None:
            parts += [
                "", "Bradley–Terry scores on the Elo scale (1000 = a reference with one virtual tie against each model; "
                "400 points = odds of 10 to 1):", "",
                _table(["model", "score", "votes"], [[m, f"{elo(s):.0f}", str(self.counts[m])] for m, s in self.ranked()]),
            ]
        return "\n".join(parts)

    def panels(self) -> list:
        from data_tools.eval.report import Panel  # report imports this module

        groups = [f"{p.first} vs {p.second}" for p in self.pairs]
        series: dict[str, list[Any]] = {m: [None] * len(self.pairs) for m in self.models}
        for g, p in enumerate(self.pairs):
            series[p.first][g] = p
            lo_hi = None if p.interval is None else (1.0 - p.interval[1], 1.0 - p.interval[0])
            series[p.second][g] = dataclasses.replace(p, value=1.0 - p.value, interval=lo_hi)
        return [Panel("Blind votes: win rate (ties ½)", groups, series)]
