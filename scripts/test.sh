#!/usr/bin/env bash
# The test suite on a fresh machine: make .venv, install with the test extras (transformers,
# CPU torch, llama-cpp-python as references), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
exec .venv/bin/python -m pytest -q "$@"
