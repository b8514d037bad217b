#!/usr/bin/env bash
# What building and checking each target preset needs beyond `pip install -e ".[test]"`, on Debian 12
# (bookworm) as root.  Used by .ci/run (every target) and by .github/workflows/compile-matrix.yml
# (one target per job), so both run the same commands.
#
# Usage: scripts/install_target_deps.sh TARGET [TARGET ...]
#   cpu, cuda, metal, iphone  nothing (the CUDA checks compile with nvcc where it is on PATH, and
#                             skip, saying so, where it is not)
#   android                   PoCL (OpenCL on the CPU: every OpenCL kernel runs there) and lld
#                             (ld.lld links the aarch64 .so)
#   webgpu                    scripts/setup_webgpu.sh: emscripten, Mesa 25 (lavapipe) from
#                             bookworm-backports, Chromium, web/node_modules, TVM's wasm runtime
#   vulkan                    Mesa 25 (lavapipe), the Vulkan and SPIR-V headers and tools, then
#                             scripts/build_tvm_vulkan.sh (needs the TVM source tag: GitHub, or
#                             TVM_SOURCE_DIR); run it after the venv exists
# A target whose tools cannot be installed prints why and the script goes on: its tests then skip,
# saying what is missing.  Exit status: 2 for an unknown target, else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

apt_install() {  # apt_install [-t RELEASE] PACKAGE...: install, running `apt-get update` only if needed
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

known=" $(ls targets | sed 's/\.yaml$//' | tr '\n' ' ')"
for target in "$@"; do  # refuse an unknown target before installing anything
  case "$known " in
    *" $target "*) ;;
    *) echo "install_target_deps: unknown target '$target'; expected one of:$known" >&2; exit 2 ;;
  esac
done

for target in "$@"; do
  case "$target" in
    cpu|cuda|metal|iphone) ;;
    android)
      command -v apt-get >/dev/null || { echo "$target: no apt-get: install PoCL and lld yourself"; continue; }
      apt_install pocl-opencl-icd ocl-icd-libopencl1 lld \
        || echo "$target: PoCL/lld could not be installed: the OpenCL kernel checks will be skipped" ;;
    webgpu)
      bash scripts/setup_webgpu.sh || echo "$target: the WebGPU toolchain could not be installed: the WebGPU tests will be skipped" ;;
    vulkan)
      command -v apt-get >/dev/null || { echo "$target: no apt-get: install Mesa's lavapipe and the Vulkan SDK yourself"; continue; }
      if [ -z "${TVM_SOURCE_DIR:-}" ] && ! timeout 30 git ls-remote https://github.com/apache/tvm HEAD >/dev/null 2>&1; then
        echo "$target: GitHub is not reachable and TVM_SOURCE_DIR is not set (no TVM source to build the Vulkan" \
             "backend from): the Vulkan tests will be skipped"
        continue
      fi
      bash scripts/install_mesa.sh \
        && apt_install g++ libvulkan-dev spirv-headers spirv-tools \
        && bash scripts/build_tvm_vulkan.sh ${TVM_SOURCE_DIR:+"$TVM_SOURCE_DIR"} \
        || echo "$target: no Vulkan-enabled TVM (see the lines above): the Vulkan tests will be skipped" ;;
    *) echo "$target: a preset without install steps: add them here if it needs any" ;;
  esac
done
exit 0
