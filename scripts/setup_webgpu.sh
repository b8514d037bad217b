#!/usr/bin/env bash
# What building and running WebGPU (.wasm) libraries needs, on Debian 12 (bookworm) as root:
#   - emscripten (Debian's 3.1.6), which links the .wasm;
#   - Mesa's lavapipe Vulkan driver from bookworm-backports (Mesa 25: Dawn rejects bookworm's 22.3),
#     the GPU that Dawn (npm `webgpu`) runs on in Node;
#   - Debian's chromium (WebGPU through SwiftShader); WEBGPU_SKIP_CHROMIUM=1 leaves it out;
#   - web/node_modules (npm ci: esbuild, webgpu, playwright-core, @mlc-ai/web-llm);
#   - with a venv at .venv (or $PYTHON): TVM's wasm runtime and tvmjs, built from the pinned wheels
#     (python -m pipeline.compile.wasm; otherwise the first WebGPU test builds them).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v apt-get >/dev/null || { echo "error: apt-get not found: this script installs Debian packages" >&2; exit 2; }
packages=(emscripten)
[ "${WEBGPU_SKIP_CHROMIUM:-0}" = 1 ] || packages+=(chromium)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
bash scripts/install_mesa.sh

command -v npm >/dev/null || { echo "error: npm not found: install Node.js 20 or newer" >&2; exit 2; }
npm ci --prefix web --no-audit --no-fund --loglevel=error

python=${PYTHON:-.venv/bin/python}
if [ -x "$python" ]; then
  "$python" -m pipeline.compile.wasm
fi
