#!/usr/bin/env bash
# The main job on the embedded default: the whole Ditto loop, `ditto-data build` with
# the shipped config (built-in sample characters -> SmolLM2-135M-Instruct simulation ->
# clean -> tokenize -> train -> export -> seed-against-tuned evaluation, under
# ./ditto-out). Sets up on first use. Extra arguments go to `ditto-data build`
# (e.g. --config my.toml).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
exec .venv/bin/ditto-data build "$@"
