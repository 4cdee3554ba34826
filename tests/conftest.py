"""Session-wide test settings and shared fixtures."""
from __future__ import annotations

import os
from pathlib import Path

# Compile once per machine, not once per test session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"../shared not found beside the repo at {SHARED}"
    return SHARED


# ---- generation engines, shared by the generation and CLI tests --------------------------------
# (`smollm2` -- the session's SmolLM2 (model, bundle) -- is defined with the weights tests.)


@pytest.fixture(scope="session")
def smollm2_engine(smollm2):
    """A batched engine over the session's SmolLM2."""
    from ditto_jax.generation import Engine

    model, bundle = smollm2
    return Engine(model, bundle, max_batch=16)
