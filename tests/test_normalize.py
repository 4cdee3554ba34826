"""normalize_text: the dedupe-key normaliser in ditto_native."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ditto_native import normalize_text


@pytest.mark.parametrize(
    "text, want",
    [
        ("  Hello,\tWORLD!!  How are\n\nyou?  ", "hello world how are you"),
        ("Straße", "strasse"),
        ("你好，世界！今天天气怎么样？", "你好世界今天天气怎么样"),
        ("「引用」、《书名》。", "引用书名"),
        ("我爱 Python！", "我爱python"),
        ("ラーメン、ください。", "ラーメンください"),
        ("ＡＢＣ　１２３！", "abc 123"),
        ("안녕하세요,  세계!", "안녕하세요 세계"),
        ("Great job 👍🏽!", "great job 👍🏽"),
        ("a+b=c, $5", "a+b=c $5"),
        ("", ""),
        (" 。！？ ", ""),
    ],
)
def test_examples(text, want):
    assert normalize_text(text) == want


def test_variants_share_a_key():
    variants = ["Hello, World!", "hello world", "HELLO   WORLD", "Ｈｅｌｌｏ，　Ｗｏｒｌｄ！", "hello-world."]
    assert len({normalize_text(v) for v in variants}) == 1


# An alphabet whose every character behaves the same under Python's Unicode
# tables (unicodedata) and the crate's, so the reference below is exact.
ALPHABET = (
    "aZ09 \t\n\u3000\u00a0.,!?'\"-_()[]{}:;/\\@#%&*+=<>$^|~`"
    "ßÉéİıςΣ\u0301\u0308\u3099ﬁ½²"
    "ＡＢ１！，。、「」《》？：（）"
    "你好世界李白あいアイーｱ가한"
    "😀👍🏽\u200d\u200b\u00ad\ufeff\ufe0f"
)
# ｱ widens to ア under NFKC; the combining voiced mark is Japanese by its
# Script_Extensions (Hiragana, Katakana).
CJK = set("你好世界李白あいアイーｱ") | {"ア", "\u3099"}


def reference(text: str) -> str:
    """The documented rules, restated with Python's own Unicode data."""
    s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    out: list[str] = []
    prev, pending = None, False
    for c in s:
        if c.isspace() or unicodedata.category(c) in {"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Cc"}:
            pending = True
            continue
        if c in "\u200b\u2060\ufeff\u00ad":
            continue
        if pending and prev is not None and prev not in CJK and c not in CJK:
            out.append(" ")
        pending = False
        out.append(c)
        prev = c
    return unicodedata.normalize("NFC", "".join(out))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_matches_reference_on_shared_alphabet(text):
    assert normalize_text(text) == reference(text)


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_output_shape(text):
    out = normalize_text(text)
    assert out == out.strip(" ") and "  " not in out
    assert not any(c.isspace() and c != " " for c in out)
    assert not any(unicodedata.category(c).startswith("P") for c in out if ord(c) < 0x30000)
