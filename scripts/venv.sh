#!/usr/bin/env bash
# Make .venv (where missing) and install this package into it, editable, with the extras named
# by $1 if given (comma-separated: test, demo, litert, bench), at the versions of constraints.txt.
# Used by demo.sh, test.sh, .ci/run and the GitHub workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${1:+[$1]}"
