#!/usr/bin/env bash
# The test command: set up (if needed), then the Rust unit tests and the pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
export JAX_PLATFORMS=cpu
cargo test --manifest-path rust/Cargo.toml --quiet
.venv/bin/python -m pytest -q "$@"
