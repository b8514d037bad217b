#!/usr/bin/env bash
# Make .venv (where missing) and install this package into it, editable, with the extras named
# by $1 if given (comma-separated: test, demo, litert, bench), at the versions of constraints.txt.
# Used by demo.sh, test.sh, .ci/run and the GitHub workflow.  llama-cpp-python (test, bench) comes
# from a wheel built once (scripts/wheel_cache.sh), not compiled again on every fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
wheels=()
case ",${1:-}," in
  *,test,* | *,bench,*) wheels=(--find-links "$(bash scripts/wheel_cache.sh .venv/bin/python llama-cpp-python)") ;;
esac
.venv/bin/python -m pip install --quiet --prefer-binary -c constraints.txt ${wheels[@]+"${wheels[@]}"} -e ".${1:+[$1]}"
