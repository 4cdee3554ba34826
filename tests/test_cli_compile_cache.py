"""The CLIs' persistent XLA compilation cache: a second identical `ditto-jax generate` compiles nothing.

jax's own debug lines (enabled with JAX_DEBUG_LOG_MODULES) say, for every
executable, whether the persistent cache had it and whether it was stored (the wording is
that of the pinned jax; the patterns below match it).
The cache settings under test are the CLI's (ditto_jax.cli_common): every
JAX_PERSISTENT_CACHE_* variable is removed from the children's environment.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from playground_fixtures import make_tiny_chat_model

REPO = Path(__file__).resolve().parents[1]
MISS = re.compile(r"PERSISTENT COMPILATION CACHE MISS for '([^']+)' with key '([^']+)'")
WRITE = re.compile(r"Writing (\S+) to persistent compilation cache with key '([^']+)'")
HIT = re.compile(r"Persistent compilation cache hit for '([^']+)' with key '([^']+)'")
# The engine's own steps: each compiles in well under jax's default 1 s floor for caching.
ENGINE_STEPS = {"jit_prefill_rows", "jit_decode_step"}


@pytest.fixture(scope="module")
def tiny_model(make_tiny_hf) -> Path:
    return make_tiny_chat_model(make_tiny_hf, seed=5)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_PERSISTENT_CACHE_", "JAX_COMPILATION_CACHE_"))}
    env["JAX_DEBUG_LOG_MODULES"] = "jax._src.compiler,jax._src.compilation_cache"
    env.update(extra)
    return env


def _generate(model: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = ["generate", "--model", str(model), "--prompt", "Hello there", "--temperature", "0", "--max-new-tokens", "6"]
    result = subprocess.run([sys.executable, "-m", "ditto_jax.cli", *argv], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _entries(cache: Path) -> set[str]:
    """Cache keys stored in the directory (jax names each entry file KEY-cache)."""
    return {p.name.removesuffix("-cache") for p in cache.glob("*-cache") if p.is_file()}


def test_second_identical_generate_reuses_every_executable(tiny_model, tmp_path):
    cache = tmp_path / "xla"
    env = _env(JAX_COMPILATION_CACHE_DIR=str(cache))

    first = _generate(tiny_model, env)
    missed, written = set(MISS.findall(first.stderr)), set(WRITE.findall(first.stderr))
    assert ENGINE_STEPS <= {name for name, _ in written}
    # Nothing compiled is left out for being fast or small (the CLI's thresholds).
    assert missed == written
    assert _entries(cache) == {key for _, key in written}

    second = _generate(tiny_model, env)
    assert first.stdout.strip() and second.stdout == first.stdout
    assert MISS.findall(second.stderr) == [] and WRITE.findall(second.stderr) == []
    assert set(HIT.findall(second.stderr)) == written
    assert _entries(cache) == {key for _, key in written}


def test_default_cache_dir_is_in_place_before_jax_loads(tiny_model, tmp_path):
    """Without JAX_COMPILATION_CACHE_DIR the CLI's default (under the home directory) is used: jax read it at import."""
    result = _generate(tiny_model, _env(HOME=str(tmp_path)))
    written = {key for _, key in WRITE.findall(result.stderr)}
    assert written and _entries(tmp_path / ".cache" / "ditto-jax" / "xla") == written
