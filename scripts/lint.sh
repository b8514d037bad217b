#!/usr/bin/env bash
# The lint and type checks CI runs: ruff (pyproject.toml [tool.ruff]) over the whole tree and mypy
# ([tool.mypy]) over pipeline/.  Needs the lint extra (scripts/venv.sh test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
