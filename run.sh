#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct): sets up on first
# use, then runs. Extra arguments are passed to the command.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
exec .venv/bin/ditto-jax generate --model smollm2 \
  --system "You are Sherlock Holmes, fictional detective created by Arthur Conan Doyle" \
  --prompt "Who is your closest friend, and how did you meet?" --max-new-tokens 96 "$@"
