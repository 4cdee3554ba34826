"""The playground in a real browser: headless Chromium (the system package) driven by Selenium.

One `ditto-jax serve --ui` process with two tiny random models and an API key
in DITTO_SERVE_API_KEY. The test signs in, searches a character, chats with
streamed tokens, shows that markup in a message stays text, votes blind in
compare mode, checks the vote file's record, and saves a screenshot of
compare mode (also copied to SCREENSHOT for people to look at).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from playground_fixtures import make_tiny_chat_model, write_characters

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = Path("/tmp/ditto-playground-compare.png")
KEY = "playground-test-key"
WAIT_S = 240  # a shared 2-core machine compiles each model's decode step once


@pytest.fixture(scope="module")
def served(tmp_path_factory, make_tiny_hf):
    """`ditto-jax serve --ui` over two tiny models named seed and tuned; yields (url, votes file, tmp dir)."""
    tmp = tmp_path_factory.mktemp("playground")
    seed_model, tuned_model = make_tiny_chat_model(make_tiny_hf, 1), make_tiny_chat_model(make_tiny_hf, 2)
    characters = write_characters(tmp / "characters.parquet")
    votes = tmp / "votes.jsonl"
    log = tmp / "serve.log"
    command = [
        sys.executable, "-m", "ditto_jax.cli", "serve", "--model", str(seed_model), "--model", str(tuned_model),
        "--served-model-name", "seed", "--served-model-name", "tuned", "--port", "0", "--max-batch", "4",
        "--default-max-tokens", "24", "--ui", "--characters", str(characters), "--votes", str(votes),
    ]
    env = {**os.environ, "DITTO_SERVE_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    deadline = time.monotonic() + 300
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"listening on (http://\S+)/v1", text)
        if found:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ditto-jax serve --ui did not start (exit {process.poll()}): {text[-2000:]}")
        time.sleep(0.2)
    yield found.group(1), votes, tmp
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "install Debian's chromium and chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(flag)
    # A driver path given explicitly: Selenium Manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=WAIT_S, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message=f"timed out waiting for {what}")


def by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver, selector):
    found = by_css(driver, selector)
    assert len(found) == 1, f"{selector}: {len(found)} elements"
    return found[0]


def send(driver, text):
    box = one(driver, "#prompt")
    box.clear()
    driver.execute_script("arguments[0].value = arguments[1];", box, text)  # exact text, no key-by-key typing
    one(driver, "#send").click()


def set_value(driver, selector, value):
    box = one(driver, selector)
    box.clear()
    box.send_keys(value)


def finished_answers(driver, selector, count):
    def done(d):
        nodes = by_css(d, selector)
        return nodes if len(nodes) == count and all(n.get_attribute("data-done") == "true" for n in nodes) else False
    return done


def test_api_needs_the_key(served):
    url, _, _ = served
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/v1/models", timeout=30)
    assert refused.value.code == 401
    refused.value.close()
    request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert [m["id"] for m in json.load(response)["data"]] == ["seed", "tuned"]


def test_playground_in_chromium(served, browser):
    url, votes, tmp = served
    driver = browser

    # Sign in: the page asks for the key once, then works from its session cookie.
    driver.get(url + "/")
    wait_for(driver, lambda d: d.current_url.endswith("/login"), 30, "the login redirect")
    one(driver, "#key").send_keys(KEY)
    one(driver, "#sign-in").click()
    wait_for(driver, lambda d: by_css(d, "#model option"), 60, "the page with its models")
    assert [o.text for o in by_css(driver, "#model option")] == ["seed", "tuned"]

    # Search a character; picking it writes the system message by the training rule.
    one(driver, "#character-search").send_keys("newton")
    wait_for(driver, lambda d: len(by_css(d, "#character-results li")) == 2, 30, "two search results")
    first = by_css(driver, "#character-results li")[0]
    assert first.find_element("css selector", ".label").text == "Isaac Newton"
    first.click()
    assert one(driver, "#system").get_attribute("value") == "You are Isaac Newton, English physicist and mathematician"
    assert "Isaac Newton (en, Q935)" in one(driver, "#character-current").text

    # Greedy and short, so the tiny models answer quickly.
    set_value(driver, "#temperature", "0")
    set_value(driver, "#max-tokens", "12")

    # Chat: the answer arrives as a stream of pieces.
    assert not one(driver, "#vote-bar").is_displayed()
    send(driver, "Who are you?")
    [answer] = wait_for(driver, finished_answers(driver, ".message.assistant", 1), what="the streamed answer")
    text = answer.find_element("css selector", ".text").text
    assert text.strip() and "error" not in answer.get_attribute("class")
    assert int(answer.get_attribute("data-chunks")) >= 2, "the reply came in one piece: not streamed"

    # Markup in a message is text: shown verbatim, never parsed or run.
    markup = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>'
    send(driver, markup)
    wait_for(driver, finished_answers(driver, ".message.assistant", 2), what="the second answer")
    user_texts = [n.find_element("css selector", ".text").get_attribute("textContent") for n in by_css(driver, ".message.user")]
    assert user_texts[-1] == markup
    assert driver.execute_script("return window.__pwned === undefined")
    assert not by_css(driver, "#transcript script") and not by_css(driver, "#transcript img") and not by_css(driver, "#transcript b")

    # Regenerate replaces the last answer.
    one(driver, "#regenerate").click()
    wait_for(driver, finished_answers(driver, ".message.assistant", 2), what="the regenerated answer")

    # Stop ends a long stream early (3,000 tokens would take the tiny model many seconds).
    set_value(driver, "#max-tokens", "3000")
    send(driver, "Tell me a long story.")
    wait_for(driver, lambda d: int(by_css(d, ".message.assistant")[-1].get_attribute("data-chunks") or 0) >= 3, what="a long stream")
    one(driver, "#stop").click()
    *_, stopped = wait_for(driver, finished_answers(driver, ".message.assistant", 3), 30, "the stopped answer")
    assert stopped.get_attribute("data-stopped") == "true"
    assert 3 <= int(stopped.get_attribute("data-chunks")) < 3000
    set_value(driver, "#max-tokens", "12")

    # Compare: two answers side by side, names hidden until the vote.
    one(driver, "#mode-compare").click()
    assert not by_css(driver, ".message")  # a new chat
    send(driver, "Tell me about your work.")
    left, right = wait_for(driver, finished_answers(driver, ".answers .message", 2), what="both compared answers")
    assert (left.get_attribute("data-side"), right.get_attribute("data-side")) == ("left", "right")
    whos = [n.find_element("css selector", ".who").text for n in (left, right)]
    assert whos == ["Left", "Right"]
    assert all(int(n.get_attribute("data-chunks")) >= 2 for n in (left, right))
    assert one(driver, "#vote-bar").is_displayed()
    blind = tmp / "compare-blind.png"
    driver.save_screenshot(str(blind))

    one(driver, "#vote-left").click()
    wait_for(driver, lambda d: by_css(d, ".answers[data-revealed=true]"), 30, "the names after the vote")
    revealed = [n.find_element("css selector", ".who").text for n in (left, right)]
    shown = [w.split(": ", 1)[1] for w in revealed]
    assert revealed[0].startswith("Left: ") and revealed[1].startswith("Right: ") and sorted(shown) == ["seed", "tuned"]
    assert "chosen" in left.get_attribute("class")
    assert not one(driver, "#vote-bar").is_displayed()

    # The vote file holds exactly this vote, with the sides as shown.
    records = [json.loads(line) for line in votes.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1
    record = records[0]
    assert {k: record[k] for k in ("character", "character_id", "language", "turn", "model_a", "model_b", "choice")} == {
        "character": "Isaac Newton", "character_id": "Q935", "language": "en", "turn": 1,
        "model_a": shown[0], "model_b": shown[1], "choice": "a",
    }
    assert re.fullmatch(r"[0-9a-f]{16}", record["conversation"]) and record["timestamp"].endswith("Z")

    # Offline: everything the page loaded came from this server.
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(name.startswith(url + "/") for name in loaded), loaded

    shot = tmp / "compare-voted.png"
    driver.save_screenshot(str(shot))
    for path in (blind, shot):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT)
    shutil.copyfile(blind, SCREENSHOT.with_name("ditto-playground-compare-blind.png"))
