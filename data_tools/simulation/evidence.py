"""Evidence checks: is a fact the model says it copied really in the role's material?

The rule, the same for every language:
- Text is normalised (NFKC, case folded) and cut into content tokens: words
  for alphabetic scripts, minus a short list of English function words, and
  overlapping character bigrams for Chinese, within the runs left after
  cutting at function characters (的, 是, 了, 他, ...; a lone character is one
  token). Bigrams rather than single characters, because common characters
  occur in almost every Chinese text; function characters cut the runs so
  that "孔子是鲁国人" matches "孔子……鲁国人" as "Confucius was from Lu"
  matches "Confucius came from Lu".
- An evidence string is verified when at least VERIFY_THRESHOLD (half) of its
  distinct content tokens occur together in one window of the material (the
  role's profile and its facts, as one token sequence), the window being
  twice the evidence's token count (at least WINDOW_MIN tokens).
The window keeps a string from verifying on words spread over a whole
article; the threshold leaves room for the light paraphrase a model makes when
it copies ("He was born in Lu" against "Confucius was born in the state of
Lu"). Invented facts share next to no content tokens with the material.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

VERIFY_THRESHOLD = 0.5  # share of the evidence's distinct content tokens found in one window
WINDOW_FACTOR = 2  # window length, in tokens, per evidence token
WINDOW_MIN = 8  # tokens

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_HAN}]+|(?:(?![{_HAN}])[^\W_])+")
_HAN_RUN = re.compile(rf"[{_HAN}]")
_HAN_STOP = re.compile("[的了是在和与及他她它我你们这那也都就而被把之其于着过]")
_STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or but as is was were be been being are am it its he she him her "
    "his hers they them their i me my we our you your this that these those there here which who whom what when where "
    "how not no so do did does has have had will would can could also into than then".split()
)


def content_tokens(text: str) -> list[str]:
    """Content tokens of `text`, in order.

    >>> content_tokens("He was born in Lu, in 551 BCE.")
    ['born', 'lu', '551', 'bce']
    >>> content_tokens("孔子是鲁国人")
    ['孔子', '鲁国', '国人']
    """
    out: list[str] = []
    for run in _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()):
        if _HAN_RUN.match(run):
            for part in filter(None, _HAN_STOP.split(run)):
                out.extend([part] if len(part) == 1 else [part[i : i + 2] for i in range(len(part) - 1)])
        elif run not in _STOPWORDS:
            out.append(run)
    return out


class Material:
    """A role's profile and facts as one token sequence, to check evidence against.

    >>> m = Material("Confucius was born in the state of Lu.", ["occupation: teacher"])
    >>> m.verifies("He was born in Lu"), m.verifies("He built the first steam engine")
    (True, False)
    """

    def __init__(self, profile: str, facts: Sequence[str] = ()):
        tokens = content_tokens("\n".join([profile, *facts]))
        self._ids: dict[str, int] = {}
        self._seq = np.array([self._ids.setdefault(t, len(self._ids)) for t in tokens], dtype=np.int64)

    def score(self, evidence: str) -> float:
        """The largest share of the evidence's distinct content tokens found in one window."""
        wanted = list(dict.fromkeys(content_tokens(evidence)))
        if not wanted:
            return 0.0
        ids = np.array([self._ids.get(t, -1) for t in wanted], dtype=np.int64)
        present = ids[ids >= 0]
        if present.size == 0 or self._seq.size == 0:
            return 0.0
        window = min(max(WINDOW_FACTOR * len(wanted), WINDOW_MIN), self._seq.size)
        hits = (self._seq[None, :] == present[:, None]).astype(np.int32)  # (tokens wanted, material length)
        counts = np.concatenate([np.zeros((present.size, 1), np.int32), np.cumsum(hits, axis=1)], axis=1)
        in_window = (counts[:, window:] - counts[:, :-window]) > 0  # (tokens, window starts)
        return float(in_window.sum(axis=0).max()) / len(wanted)

    def verifies(self, evidence: str) -> bool:
        return self.score(evidence) >= VERIFY_THRESHOLD
