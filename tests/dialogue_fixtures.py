"""Made-up sessions in the dialogues contract, for the tokenize/pack/stats tests."""
from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARED_TOKENIZERS = Path(__file__).resolve().parents[2] / "shared" / "tokenizers"
TOKENIZER_FOLDERS = ("qwen2.5-instruct", "llama3-instruct", "mistral-instruct", "qwen3")
# Llama 3's template writes today's date unless this is set.
TEMPLATE_VARS = {"date_string": "26 Jul 2024"}

TEXTS = [
    "Hello!",
    "What is your name, and where were you born?",
    "Ünïcödé façade — naïve café, jalapeño, Øresund.",
    "你好，世界！我是谁？请用中文回答。",
    "Emoji 🎉🧪👩‍🔬🏳️‍🌈 and flags 🇯🇵 mixed in.",
    "  leading and trailing spaces  ",
    "line one\nline two\n\nline four\n",
    "tabs\tand\r\nCRLF endings",
    "1234567890 3.14159 -42 1e10",
    "Code: `def f(x):\n    return x ** 2`",
    "Русский текст и ещё немного.",
    "مرحبا بالعالم",
    "",
]

MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def long_text(rng: random.Random) -> str:
    words = "the detective examined every clue with patient care before naming the culprit".split()
    return " ".join(rng.choice(words) for _ in range(rng.randint(300, 700))) + "."


def make_session(rng: random.Random, index: int, *, system: bool | None = None, turns: int | None = None) -> dict:
    """One session: optional system prompt, 1-8 user/assistant turns of varied text."""
    turns = turns if turns is not None else rng.randint(1, 8)
    has_system = system if system is not None else rng.random() < 0.6
    messages = []
    for t in range(turns):
        for role in ("user", "assistant"):
            text = long_text(rng) if rng.random() < 0.08 else rng.choice(TEXTS)
            messages.append({"role": role, "content": text})
    return {
        "session_id": f"sess-{index:05d}",
        "character_id": f"Q{1000 + index}",
        "lang": "zh" if index % 5 == 0 else "en",
        "system": f"You are Character {index}, a figure of test {index % 7}." if has_system else None,
        "messages": messages,
    }


def make_sessions(n: int, seed: int = 0, **kw) -> list[dict]:
    rng = random.Random(seed)
    return [make_session(rng, i, **kw) for i in range(n)]


def sessions_table(sessions: list[dict]) -> pa.Table:
    """The dialogues contract (the columns tokenize and stats read, plus per-turn labels)."""
    turns = [len(s["messages"]) // 2 for s in sessions]
    sessions = [{"character_id": f"Q{i}", "lang": "en", **s} for i, s in enumerate(sessions)]
    return pa.table(
        {
            "session_id": pa.array([s["session_id"] for s in sessions], pa.string()),
            "character_id": pa.array([s["character_id"] for s in sessions], pa.string()),
            "lang": pa.array([s["lang"] for s in sessions], pa.string()),
            "system": pa.array([s["system"] for s in sessions], pa.string()),
            "messages": pa.array([s["messages"] for s in sessions], MESSAGES_TYPE),
            "turn_types": pa.array([["role_specific" if i % 2 == 0 else "contrastive" for i in range(n)] for n in turns], pa.list_(pa.string())),
            "rejection_labels": pa.array([[i % 2 for i in range(n)] for n in turns], pa.list_(pa.int8())),
            "simulator": pa.array(["test"] * len(sessions), pa.string()),
            "seed": pa.array([0] * len(sessions), pa.int64()),
        }
    )


def write_sessions(path: Path, sessions: list[dict]) -> Path:
    pq.write_table(sessions_table(sessions), path)
    return path


def chat_messages(session: dict, system_policy: str) -> list[dict]:
    """The messages a chat template sees, with the system policy applied."""
    msgs = [dict(m) for m in session["messages"]]
    system = session["system"]
    if system:
        if system_policy == "native":
            msgs.insert(0, {"role": "system", "content": system})
        else:
            msgs[0]["content"] = f"{system}\n\n{msgs[0]['content']}"
    return msgs
