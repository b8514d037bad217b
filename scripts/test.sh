#!/usr/bin/env bash
# The test suite on a fresh machine: make .venv, install with the test extras (transformers,
# CPU torch, llama-cpp-python as references; the litert and demo extras), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh test
exec .venv/bin/python -m pytest -q "$@"
