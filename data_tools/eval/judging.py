"""LLM-judge requests, lenient parsers and the paper's per-turn scores.

Three judgements per answered turn (WikiRoleEval; Lu et al. 2024), each
asked K times as independent samples:
- consistency: which of the candidate roles gave this answer;
- knowledge: a 1-10 score of the answer's knowledge, given evidence facts;
- rejection: did the answer decline (1) or answer (0).

Where the judge supports it the reply is constrained by a JSON schema: a
choice among the candidate names, an integer 1-10, or 0/1. The parsers stay
lenient, so free-text judges (and the paper's own prompts, via
`--judge-free-text`) count too. A sample that does not parse is asked again
(`retries` times, each a new sample), then counted as unparsable; nothing
here raises on a bad judgement.

Scores, as in the paper:
- consistency: mean over parsed samples of (choice == true role); 0 when none parse;
- knowledge: mean of the parsed scores; None when none parse;
- rejection: majority vote of the parsed 0/1 samples; None on a tie or when none parse.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ditto_native import DittoError, normalize_text

from data_tools.eval.records import Candidate
from data_tools.llm.jsonparse import parse_json_lenient
from data_tools.llm.runner import CallRunner
from data_tools.llm.types import CallFailed, ChatRequest
from data_tools.simulation.seeding import stable_int

SEED_BITS = 31  # per-call seeds fit every engine's int32 seed field
JUDGE_KINDS = ("consistency", "knowledge", "rejection")


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
    samples: int = 3  # K, as in the paper
    temperature: float = 0.2  # the paper's judge temperature
    top_p: float = 1.0
    max_tokens: int = 256  # a constrained reply stops when its JSON closes; free text needs room
    retries: int = 1  # re-asks of a sample that does not parse
    constrained: bool = True  # send the JSON schema (response_format); off for free-text prompts
    seed: int = 0

    def check(self) -> None:
        if self.samples < 1:
            raise DittoError(f"--judge-samples must be >= 1 (got {self.samples})")
        if self.retries < 0:
            raise DittoError(f"--judge-retries must be >= 0 (got {self.retries})")
        if self.max_tokens < 1:
            raise DittoError(f"--judge-max-new-tokens must be >= 1 (got {self.max_tokens})")
        if not self.temperature >= 0:
            raise DittoError(f"--judge-temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise DittoError(f"--judge-top-p must be in (0, 1] (got {self.top_p})")


# ---- schemas ---------------------------------------------------------------------------------


def _object(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: value}, "required": [key], "additionalProperties": False}


def choice_schema(names: Sequence[str]) -> dict[str, Any]:
    return _object("role", {"type": "string", "enum": list(names)})


SCORE_SCHEMA = _object("score", {"type": "integer", "minimum": 1, "maximum": 10})
REFUSAL_SCHEMA = _object("refused", {"type": "integer", "enum": [0, 1]})
RATING_SCHEMA = _object("rating", {"type": "integer", "minimum": 1, "maximum": 10})


# ---- parsers ---------------------------------------------------------------------------------

_CHOICE_KEYS = ("role", "choice", "answer", "name", "candidate")
_SCORE_KEYS = ("score", "rating")
_BINARY_KEYS = ("refused", "refusal", "rejected", "answer", "label")
# The paper's free-text forms: "The most suitable role is [X]" / "最符合的角色为[X]".
_PAPER_CHOICE = re.compile(r"most suitable (?:role|character) is:?\s*\[([^\]\n]+)\]|最符合的角色为\s*[\[【]([^\]】\n]+)[\]】]", re.IGNORECASE)
_DOUBLE_BRACKET = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")  # FastChat's "[[rating]]"
_NUMBER_LINE = re.compile(r"^(?:\**\s*(?:score|rating|评分|分数)\s*[:：]?\s*\**)?\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*[.。]?\s*$", re.IGNORECASE)


def parse_choice(text: str, names: Sequence[str]) -> str | None:
    """The candidate a judge chose, or None (no choice, several, or not a candidate).

    >>> parse_choice('{"role": "Ada Lovelace"}', ["Ada Lovelace", "Confucius"])
    'Ada Lovelace'
    >>> parse_choice("The most suitable role is [Confucius].", ["Ada Lovelace", "Confucius"])
    'Confucius'
    """
    value = parse_json_lenient(text)
    if isinstance(value, dict):
        said = next((value[k] for k in _CHOICE_KEYS if isinstance(value.get(k), str)), None)
        return _match_name(said, names) if said is not None else None
    found = [m.group(1) or m.group(2) for m in _PAPER_CHOICE.finditer(text)]
    if found:
        picks = {_match_name(f, names) for f in found}
        return picks.pop() if len(picks) == 1 else None
    # A reply that mentions exactly one candidate (longest names first: "Holmes" inside "Sherlock Holmes" is not a second one).
    canon = normalize_text(text)
    mentioned: list[str] = []
    for name in sorted(names, key=lambda n: -len(normalize_text(n))):
        key = normalize_text(name)
        if key and key in canon and not any(key in normalize_text(m) for m in mentioned):
            mentioned.append(name)
    return mentioned[0] if len(mentioned) == 1 else None


def _match_name(said: str, names: Sequence[str]) -> str | None:
    """The candidate named by `said`: its bare name, or the candidate's full "[Name] description" text."""
    for form in (said, Candidate.parse(said).name):
        key = normalize_text(form)
        found = next((n for n in names if normalize_text(n) == key), None)
        if found is not None:
            return found
    return None


def parse_score(text: str, low: float = 1, high: float = 10) -> float | None:
    """A 1-10 score from JSON ({"score": 7} / {"rating": 7}), "[[7]]", or a last line such as "Score: 7".

    None when absent, out of range, or when the reply gives several different scores.

    >>> parse_score("Good detail.\\nRating: [[8]]")
    8.0
    >>> parse_score("It is a 7 or an 8") is None
    True
    """
    value = parse_json_lenient(text)
    if isinstance(value, dict):
        said = next((value[k] for k in _SCORE_KEYS if k in value), None)
        return _in_range(_number(said), low, high)
    bracketed = {float(m) for m in _DOUBLE_BRACKET.findall(text)}
    if bracketed:
        return _in_range(bracketed.pop(), low, high) if len(bracketed) == 1 else None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        found = _NUMBER_LINE.match(lines[-1])
        if found:
            return _in_range(float(found.group(1)), low, high)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _in_range(value: float | None, low: float, high: float) -> float | None:
    return value if value is not None and low <= value <= high else None


def parse_binary(text: str) -> int | None:
    """0 or 1 from JSON ({"refused": 1}) or a reply that is just "0" or "1"; otherwise None.

    >>> parse_binary('{"refused": 1}'), parse_binary(" 0. "), parse_binary("0 or 1")
    (1, 0, None)
    """
    value = parse_json_lenient(text)
    if isinstance(value, dict):
        said = next((value[k] for k in _BINARY_KEYS if k in value), None)
        if isinstance(said, bool):
            return int(said)
        number = _number(said)
        return int(number) if number in (0.0, 1.0) else None
    bare = text.strip().rstrip(".。").strip()
    return int(bare) if bare in ("0", "1") else None


# ---- scores ----------------------------------------------------------------------------------


def consistency_score(choices: Sequence[str | None], true_name: str) -> float:
    """Mean over parsed samples of (choice == true role); 0 when none parse (the paper's rule)."""
    parsed = [c for c in choices if c is not None]
    if not parsed:
        return 0.0
    return sum(normalize_text(c) == normalize_text(true_name) for c in parsed) / len(parsed)


def mean_parsed(values: Sequence[float | None]) -> float | None:
    """Mean of the parsed values; None when none parse."""
    parsed = [v for v in values if v is not None]
    return sum(parsed) / len(parsed) if parsed else None


def knowledge_score(scores: Sequence[float | None]) -> float | None:
    """Mean of the parsed 1-10 scores; None when none parse."""
    return mean_parsed(scores)


def rejection_vote(votes: Sequence[int | None]) -> int | None:
    """Majority of the parsed 0/1 votes; None on a tie or when none parse."""
    counts = Counter(v for v in votes if v is not None)
    if counts[0] == counts[1]:
        return None
    return 1 if counts[1] > counts[0] else 0


# ---- asking ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Question:
    """One judgement to ask K times: a rendered prompt, its schema and its parser."""

    ident: tuple  # stable parts of the seed, e.g. ("consistency", session key, turn)
    prompt: str
    schema: dict[str, Any] | None
    parse: Callable[[str], Any]


@dataclasses.dataclass
class JudgeStats:
    asked: int = 0  # samples wanted (questions x K)
    reasked: int = 0  # extra calls for samples that did not parse
    unparsable: Counter = dataclasses.field(default_factory=Counter)  # kind -> samples that never parsed
    failed_calls: int = 0  # calls with no reply after the backend's own retries


def ask_judge(questions: Sequence[Question], runner: CallRunner, settings: JudgeSettings, stats: JudgeStats) -> list[list[Any]]:
    """K parsed values (None where a sample never parsed) per question, in order.

    Every call goes through the runner's cache, keyed by the prompt, schema,
    seed and sample index, so a re-run repeats no call.
    """
    samples = settings.samples
    values: list[list[Any]] = [[None] * samples for _ in questions]
    pending = [(q, j) for q in range(len(questions)) for j in range(samples)]
    stats.asked += len(pending)
    runner.plan(len(pending))
    for attempt in range(settings.retries + 1):
        if attempt:
            stats.reasked += len(pending)
            runner.plan(len(pending))
        requests = [_request(questions[q], j, attempt, settings) for q, j in pending]
        still = []
        for (q, j), result in zip(pending, runner.run(requests)):
            if isinstance(result, CallFailed):
                stats.failed_calls += 1
                still.append((q, j))
                continue
            value = questions[q].parse(result.text)
            if value is None:
                still.append((q, j))
            else:
                values[q][j] = value
        pending = still
        if not pending:
            break
    for q, _ in pending:
        stats.unparsable[questions[q].ident[0]] += 1
    return values


def _request(question: Question, sample: int, attempt: int, settings: JudgeSettings) -> ChatRequest:
    return ChatRequest.chat(
        [{"role": "user", "content": question.prompt}],
        max_tokens=settings.max_tokens, temperature=settings.temperature, top_p=settings.top_p,
        seed=stable_int(settings.seed, "judge", *question.ident, sample, attempt, bits=SEED_BITS),
        json_schema=question.schema if settings.constrained else None,
        sample_index=sample,
    )

