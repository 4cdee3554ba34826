"""The playground's server side: character search, the system-message rule, the vote log, routes and the API key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from ditto_native import DittoError, system_message
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from ditto_jax.playground.characters import CharacterIndex, read_characters
from ditto_jax.playground.routes import Playground
from ditto_jax.playground.votes import VoteError, VoteLog, vote_record
from ditto_jax.serving.auth import COOKIE, ApiKeyGuard, api_key_from
from playground_fixtures import CHARACTERS, write_characters

MODELS = ("seed", "tuned")
KEY = "test-key-1234"


@pytest.fixture(scope="module")
def characters_file(tmp_path_factory):
    return write_characters(tmp_path_factory.mktemp("characters") / "characters.parquet")


@pytest.fixture(scope="module")
def index(characters_file):
    return CharacterIndex.from_parquet(characters_file)


# ---- the system message: one rule in ditto_native, the same one the simulation writes ------------


@pytest.mark.parametrize(
    "label, description, lang, expected",
    [
        ("Isaac Newton", "English physicist", "en", "You are Isaac Newton, English physicist"),
        ("Isaac Newton", "", "en", "You are Isaac Newton."),
        ("艾萨克·牛顿", "英国物理学家", "zh", "你是艾萨克·牛顿，英国物理学家"),
        ("孙悟空", "", "zh", "你是孙悟空。"),
        ("孙悟空", "小说角色", "zh-hant", "你是孙悟空，小说角色"),
        (" Ada Lovelace ", " mathematician ", "en", "You are Ada Lovelace, mathematician"),
    ],
)
def test_system_message_rule(label, description, lang, expected):
    assert system_message(label, description, lang) == expected


def test_simulation_roles_use_the_same_rule(characters_file):
    import polars as pl

    from data_tools.simulation.roles import roles_from_table

    roles = roles_from_table(pl.read_parquet(characters_file), source="characters")
    by_key = {(c.character_id, c.lang): c for c in read_characters(characters_file)}
    for role in roles:
        assert role.system_message() == by_key[(role.character_id, role.lang)].system
    assert {r.system_message() for r in roles} >= {"You are Isaac Newton, English physicist and mathematician", "你是孙悟空。"}


# ---- search ---------------------------------------------------------------------------------------


def test_search_ranks_exact_names_then_prefixes_then_the_rest(index):
    labels = [c["label"] for c in index.search("newton")]
    assert labels == ["Isaac Newton", "Newton Knight"]  # alias "Newton" is exact; "Newton Knight" a word prefix
    assert [c["label"] for c in index.search("NEWT")][:2] == ["Isaac Newton", "Newton Knight"]  # case-folded; more sitelinks first
    assert [c["label"] for c in index.search("mathematician")] == ["Isaac Newton", "Ada Lovelace"]  # descriptions
    assert [c["label"] for c in index.search("augusta")] == ["Ada Lovelace"]  # aliases
    assert [c["label"] for c in index.search("牛顿")] == ["艾萨克·牛顿"]
    assert [c["label"] for c in index.search("齐天大圣")] == ["孙悟空"]
    assert index.search("nobody at all") == []


def test_search_results_carry_the_system_message_and_filter_by_language(index):
    [newton] = index.search("Isaac Newton", lang="en")
    assert newton == {
        "character_id": "Q935", "lang": "en", "label": "Isaac Newton", "description": "English physicist and mathematician",
        "aliases": ["Newton", "Sir Isaac Newton"], "system": "You are Isaac Newton, English physicist and mathematician",
    }
    assert [c["system"] for c in index.search("", lang="zh")] == ["你是艾萨克·牛顿，英国物理学家、数学家", "你是孙悟空。"]
    assert len(index.search("", limit=2)) == 2 and len(index.search("", limit=1000)) == len(CHARACTERS)
    assert index.languages == ["en", "zh"]


def test_bad_characters_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(DittoError, match="no such characters file"):
        read_characters(tmp_path / "missing.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DittoError, match="text.parquet: not a readable parquet file"):
        read_characters(tmp_path / "text.parquet")
    pq.write_table(pa.table({"character_id": ["Q1"], "label": ["A"]}), tmp_path / "nolang.parquet")
    with pytest.raises(DittoError, match=r"nolang.parquet: missing column\(s\) lang"):
        read_characters(tmp_path / "nolang.parquet")
    pq.write_table(pa.table({"character_id": ["Q1", "Q2"], "lang": ["en", "en"], "label": ["A", " "]}), tmp_path / "blank.parquet")
    with pytest.raises(DittoError, match="blank.parquet: row 1: field label is empty"):
        read_characters(tmp_path / "blank.parquet")


# ---- votes ----------------------------------------------------------------------------------------

VOTE = {"character": "Isaac Newton", "character_id": "Q935", "language": "en", "conversation": "c0ffee",
        "turn": 2, "model_a": "tuned", "model_b": "seed", "choice": "b"}


def test_vote_record_keeps_the_contract_fields():
    record = vote_record(VOTE, MODELS)
    assert set(record) == {"timestamp", "character", "character_id", "language", "conversation", "turn", "model_a", "model_b", "choice"}
    assert {k: record[k] for k in VOTE} == VOTE
    assert record["timestamp"].endswith("Z") and record["timestamp"][:2] == "20"
    custom = vote_record({**VOTE, "character": None, "character_id": None, "language": None, "choice": "tie"}, MODELS)
    assert (custom["character"], custom["language"], custom["choice"]) == (None, None, "tie")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"choice": "left"}, "choice"),
        ({"turn": 0}, "turn"),
        ({"turn": True}, "turn"),
        ({"model_a": "gpt-9"}, "model_a"),
        ({"model_b": "tuned"}, "model_b"),
        ({"character": 5}, "character"),
        ({"language": "x" * 501}, "language"),
    ],
)
def test_bad_votes_name_the_field(change, field):
    with pytest.raises(VoteError) as caught:
        vote_record({**VOTE, **change}, MODELS)
    assert caught.value.field == field and field in str(caught.value)


def test_vote_log_appends_whole_lines_from_many_threads(tmp_path):
    log = VoteLog(tmp_path / "votes.jsonl")

    def writer(t):
        for i in range(40):
            log.append(vote_record({**VOTE, "turn": 1 + i, "conversation": f"thread-{t}"}, MODELS))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 240
    assert sorted((r["conversation"], r["turn"]) for r in records) == sorted((f"thread-{t}", 1 + i) for t in range(6) for i in range(40))


def test_a_killed_server_loses_no_acknowledged_vote(tmp_path):
    """The child appends votes, then kills itself with SIGKILL mid-way through the next line's write path."""
    path = tmp_path / "votes.jsonl"
    script = f"""
import os, signal
from ditto_jax.playground.votes import VoteLog, vote_record
log = VoteLog({str(path)!r})
for turn in range(1, 6):
    log.append(vote_record({{**{VOTE!r}, "turn": turn}}, {MODELS!r}))
# a write cut by the crash: half a line after the acknowledged ones
os.write(log._fd, b'{{"timestamp": "2026')
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert path.read_bytes().count(b"\n") == 5 and not path.read_bytes().endswith(b"\n")
    # Reopening trims the unacknowledged half line; the next vote starts on a line of its own.
    log = VoteLog(path)
    log.append(vote_record({**VOTE, "turn": 6}, MODELS))
    log.close()
    assert [json.loads(line)["turn"] for line in path.read_text(encoding="utf-8").splitlines()] == [1, 2, 3, 4, 5, 6]


def test_vote_log_refuses_bad_paths(tmp_path):
    with pytest.raises(DittoError, match="is a directory"):
        VoteLog(tmp_path)
    with pytest.raises(DittoError, match="does not exist"):
        VoteLog(tmp_path / "no" / "votes.jsonl")


# ---- routes and the API key ------------------------------------------------------------------------


def playground_app(index, votes: VoteLog | None, key: str | None) -> Starlette:
    """The playground's routes as serve mounts them, without models (chat goes to /v1, tested elsewhere)."""
    playground = Playground(characters=index, models=MODELS, votes=votes, api_key=key)
    middleware = [Middleware(ApiKeyGuard, key=key)] if key else []
    return Starlette(routes=playground.routes(), middleware=middleware)


def test_page_search_and_votes_without_a_key(index, tmp_path):
    client = TestClient(playground_app(index, VoteLog(tmp_path / "votes.jsonl"), None))
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "app.css", "login.js"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../routes.py").status_code == 404
    config = client.get("/ui/api/config").json()
    assert config == {"models": list(MODELS), "languages": ["en", "zh"], "characters": len(CHARACTERS), "votes": True, "login": False}
    found = client.get("/ui/api/characters", params={"q": "newton", "lang": "en", "limit": "1"}).json()["data"]
    assert [c["system"] for c in found] == ["You are Isaac Newton, English physicist and mathematician"]
    assert client.get("/ui/api/characters", params={"limit": "many"}).status_code == 400
    created = client.post("/ui/api/votes", json=VOTE)
    assert created.status_code == 201
    stored = json.loads((tmp_path / "votes.jsonl").read_text(encoding="utf-8"))
    assert stored == created.json()["record"] and stored["choice"] == "b"
    bad = client.post("/ui/api/votes", json={**VOTE, "model_b": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model_b"
    assert client.post("/ui/api/votes", content=b"{oops").status_code == 400
    assert client.get("/login", follow_redirects=False).status_code == 303  # no key: no login page


def test_votes_are_refused_when_not_kept(index):
    client = TestClient(playground_app(index, None, None))
    response = client.post("/ui/api/votes", json=VOTE)
    assert response.status_code == 409 and "--votes" in response.json()["error"]["message"]


def test_the_key_guards_page_api_and_votes(index, tmp_path):
    client = TestClient(playground_app(index, VoteLog(tmp_path / "votes.jsonl"), KEY))
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/login").status_code == 200
    assert client.get("/static/login.js").status_code == 200  # the login page's own script is public
    for method, path in (("GET", "/static/app.js"), ("GET", "/ui/api/config"), ("GET", "/ui/api/characters"), ("POST", "/ui/api/votes")):
        response = client.request(method, path)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key", path
    assert client.get("/ui/api/config", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/ui/api/config", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200

    assert client.post("/ui/login", json={"key": "wrong"}).status_code == 401
    assert COOKIE not in client.cookies
    signed_in = client.post("/ui/login", json={"key": KEY})
    assert signed_in.status_code == 204
    cookie = signed_in.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and KEY not in cookie
    assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
    assert client.post("/ui/api/votes", json=VOTE).status_code == 201
    # A cookie alone does not carry a form post (what a cross-site page could send).
    form = client.post("/ui/api/votes", content=json.dumps(VOTE), headers={"Content-Type": "text/plain"})
    assert form.status_code == 401
    client.post("/ui/logout", headers={"Content-Type": "application/json"})
    assert client.get("/ui/api/config").status_code == 401


def test_the_key_comes_from_the_flag_or_the_serve_variable(monkeypatch):
    monkeypatch.delenv("DITTO_SERVE_API_KEY", raising=False)
    monkeypatch.setenv("DITTO_API_KEY", "client-key")  # the client's key is not the server's
    assert api_key_from(None) is None
    monkeypatch.setenv("DITTO_SERVE_API_KEY", "from-env")
    assert api_key_from(None) == "from-env" and api_key_from("from-flag") == "from-flag"
    with pytest.raises(DittoError, match="--api-key: the API key must be printable ASCII"):
        api_key_from("kéy")
    monkeypatch.setenv("DITTO_SERVE_API_KEY", " padded ")
    with pytest.raises(DittoError, match="DITTO_SERVE_API_KEY: the API key must be printable ASCII"):
        api_key_from(None)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ui"], "--ui needs --characters FILE"),
        (["--characters", "x.parquet"], "--characters and --votes need --ui"),
        (["--ui", "--characters", "{tmp}/missing.parquet"], "missing.parquet: no such characters file"),
        (["--ui", "--characters", "{characters}", "--votes", "{tmp}/no/votes.jsonl"], "does not exist"),
    ],
)
def test_serve_playground_flags(flags, message, tmp_path, characters_file, capsys):
    from ditto_jax.cli import main

    flags = [f.format(tmp=tmp_path, characters=characters_file) for f in flags]
    assert main(["serve", "--model", "smollm2", "--port", "0", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ditto-jax serve: error: ") and message in err[0]
