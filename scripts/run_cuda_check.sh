#!/usr/bin/env bash
# tests/models/test_gpu_cuda.py on a GPU machine that has TVM's runtime only (docs/cuda.md).
# The packages are built where TVM's compiler is (no GPU needed) and travel to the GPU
# machine in chunks small enough for one device call each (64 MiB a call, working tree included).
#
#   Here:            scripts/run_cuda_check.sh stage DIR [--skip-270m] [--speculative]
#                    (DIR in the repo, git-ignored; the options go to scripts/cuda_check_packages.py)
#                    or stage DIR --vulkan: Gemma 3 270M with cuda and vulkan libraries and the CPU
#                    build's greedy tokens (scripts/vulkan_check.py build), TVM's Vulkan runtime
#                    plugin and the Vulkan loader's debs (docs/vulkan.md)
#                    -> DIR/pkgs (built), DIR/pN/ (one chunk each; carry one per call)
#   GPU, each call:  scripts/run_cuda_check.sh receive DIR/pN
#   GPU, last call:  scripts/run_cuda_check.sh check [pytest args]   (after receiving every chunk)
#                    after a stage with --speculative, results in OUTDIR:
#                    scripts/run_cuda_check.sh speed OUTDIR    scripts/gpu_speed.py (gpu_speed.json)
#                    scripts/run_cuda_check.sh profile OUTDIR  one decode step (and a 4-token verify) under ncu
#                    scripts/run_cuda_check.sh peer OUTDIR     scripts/gpu_torch_peer.py (gpu_torch_peer.json)
#                    after a stage with --vulkan (chunks gathered in another CUDA_CHECK_WORK):
#                    scripts/run_cuda_check.sh vulkan OUTDIR   scripts/vulkan_check.py check (vulkan_check.json)
#
# On the GPU machine: python3 is 3.12 with numpy, tokenizers, pyyaml, safetensors, ml_dtypes,
# cuda-bindings and the CUDA toolkit (NVRTC's headers); carried: TVM's Python package and its
# runtime libraries (not libtvm_compiler.so), cp312 wheels of apache-tvm-ffi and jsonschema's
# stack.  TVM_USE_RUNTIME_LIB=1; scripts/cuda_runtime_only.py replaces TVM's load-time CUDA
# compile callback.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${CUDA_CHECK_WORK:-/tmp/cuda-check}   # where chunks gather on the GPU machine
CHUNK=${CUDA_CHECK_CHUNK:-47M}             # leaves room for the working tree (~14 MB) in a 64 MiB call
PY=${PYTHON:-python3}
HERE_PY=${HERE_PYTHON:-$ROOT/.venv/bin/python}   # where the packages are built (TVM with its compiler)
WHEELS=(apache-tvm-ffi==0.1.13.post2 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
        referencing==0.37.0 rpds-py==2026.9.1)

stage() {
    local dir=$1 site
    [[ -n $dir ]] || { echo "usage: $0 stage DIR [--skip-270m] [--speculative] | stage DIR --vulkan" >&2; exit 2; }
    shift
    rm -rf "$dir/pkgs" "$dir/bundle" "$dir"/p[0-9]*
    mkdir -p "$dir/bundle/whl"
    if [[ ${1:-} == --vulkan ]]; then
        stage_vulkan "$dir"
    else
        nice "$HERE_PY" "$ROOT/scripts/cuda_check_packages.py" "$dir/pkgs" "$@"
    fi
    for spec in "${WHEELS[@]}"; do
        "$HERE_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir/bundle/whl" "$spec"
    done
    site=$("$HERE_PY" -c "import tvm, pathlib; print(pathlib.Path(tvm.__file__).parents[1])")
    tar -C "$site" --exclude=__pycache__ --exclude=tvm/3rdparty --exclude=tvm/src --exclude=tvm/include \
        --exclude=tvm/lib/libtvm_compiler.so -czf "$dir/bundle/tvm-runtime.tgz" tvm
    (cd "$ROOT" && git log -1 --format='%H %s' && git status --short) > "$dir/bundle/built-at.txt"
    tar -C "$dir" -cf - bundle pkgs | gzip -1 | split -b "$CHUNK" -d - "$dir/chunk."
    (cd "$dir" && sha256sum chunk.* > SHA256SUMS)
    local i=1
    for chunk in "$dir"/chunk.*; do
        mkdir -p "$dir/p$i" && mv "$chunk" "$dir/p$i/" && cp "$dir/SHA256SUMS" "$dir/p$i/"
        i=$((i + 1))
    done
    du -sh "$dir"/p[0-9]*
}

stage_vulkan() {  # the 270M package (cuda + vulkan) and what Vulkan needs there, in DIR/pkgs and DIR/bundle
    local dir=$1 vklib=${MLC_MTP_TVM_VULKAN_LIB:-$HOME/.cache/mlc-mtp-vulkan/lib}
    [[ -f $vklib/libtvm_runtime_vulkan.so ]] || { echo "$vklib: no libtvm_runtime_vulkan.so (scripts/build_tvm_vulkan.sh)" >&2; exit 2; }
    nice "$HERE_PY" "$ROOT/scripts/vulkan_check.py" build "$dir/pkgs"
    rm -f "$dir"/pkgs/gemma3-270m-q4f16_1/lib/*-cpu.so   # its tokens travel as JSON
    mkdir -p "$dir/bundle/vulkan" "$dir/bundle/gl"
    cp "$vklib/libtvm_runtime_vulkan.so" "$vklib/build-info.json" "$dir/bundle/vulkan/"
    # the Vulkan loader and the GL dispatch libraries NVIDIA's ICD needs (device README's list)
    (cd "$dir/bundle/gl" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
}

receive() {
    mkdir -p "$WORK"
    cp "$1"/chunk.* "$1"/SHA256SUMS "$WORK/"
    (cd "$WORK" && ls chunk.* && df -h . | tail -1)
}

unpack() {  # the received chunks -> $WORK/x (once); TVM's runtime on PYTHONPATH (exported)
    if [[ ! -f $WORK/x/.unpacked ]]; then
        (cd "$WORK" && sha256sum -c --quiet SHA256SUMS) || { echo "chunks missing or damaged in $WORK" >&2; exit 1; }
        rm -rf "$WORK/x" && mkdir -p "$WORK/x/site"
        cat "$WORK"/chunk.* | tar -C "$WORK/x" -xzf -
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/x/site" \
            "$WORK"/x/bundle/whl/*.whl
        tar -C "$WORK/x/site" -xzf "$WORK/x/bundle/tvm-runtime.tgz"
        touch "$WORK/x/.unpacked"
    fi
    local cudalib
    cudalib=$($PY -c "import nvidia, pathlib; print(pathlib.Path(list(nvidia.__path__)[0]) / 'cu13' / 'lib')" 2>/dev/null || true)
    export TVM_USE_RUNTIME_LIB=1 MLC_MTP_GPU_PACKAGES="$WORK/x/pkgs" PYTHONUNBUFFERED=1
    export PYTHONPATH="$WORK/x/site:$ROOT:$ROOT/scripts" LD_LIBRARY_PATH="${cudalib}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    echo "packages built at: $(cat "$WORK/x/bundle/built-at.txt")"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvcc --version | tail -2 || true
    $PY -c "import sys, tvm, cuda.bindings; print('python', sys.version.split()[0], '| tvm', tvm.__version__, '| cuda-bindings', cuda.bindings.__version__)"
}

check() {
    unpack
    cd "$ROOT" && $PY -m pytest -p cuda_runtime_only -q -s -p no:cacheprovider tests/models/test_gpu_cuda.py "$@"
}

speed() {
    local out=${1:?usage: $0 speed OUTDIR}
    mkdir -p "$out"
    unpack
    cd "$ROOT"
    $PY scripts/gpu_speed.py "$WORK/x/pkgs" --out "$out/gpu_speed.json" "${@:2}"
}

profile() {  # one decode step's kernels (Nsight Compute; nsys is not on the GPU machine), per context
    local out=${1:?usage: $0 profile OUTDIR}
    mkdir -p "$out"
    unpack
    cd "$ROOT"
    for ctx in 128 1024; do
        ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --log-file "$out/ncu_$ctx.csv" \
            $PY scripts/gpu_speed.py "$WORK/x/pkgs" --profile "$ctx" || echo "ncu at $ctx failed"
    done
    # and one greedy verify of 4 tokens (batch_verify + argmax_logits) at 128
    ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --log-file "$out/ncu_verify4_128.csv" \
        $PY scripts/gpu_speed.py "$WORK/x/pkgs" --profile 128 --verify 4 || echo "ncu of verify failed"
}

vulkan() {  # after stage --vulkan: the Vulkan library on the NVIDIA driver, beside CUDA
    local out=${1:?usage: $0 vulkan OUTDIR} icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json tvmlib
    mkdir -p "$out"
    unpack
    for f in "$WORK"/x/bundle/gl/*.deb; do dpkg -x "$f" /; done   # as the device README says, every call
    ldconfig
    [[ -z ${VK_DRIVER_FILES:-} && -f $icd ]] && export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
    # the plugin's libtvm_runtime.so and libtvm_ffi.so are the carried ones (its RUNPATH is this machine's)
    tvmlib=$($PY -c "import tvm, tvm_ffi, pathlib; print(*(pathlib.Path(m.__file__).parent / 'lib' for m in (tvm, tvm_ffi)), sep=':')")
    export MLC_MTP_TVM_VULKAN_LIB="$WORK/x/bundle/vulkan" LD_LIBRARY_PATH="$tvmlib:$LD_LIBRARY_PATH"
    ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d "$(dirname "$icd")" 2>/dev/null || true
    cd "$ROOT"
    $PY scripts/vulkan_check.py check "$WORK/x/pkgs" --out "$out/vulkan_check.json" "${@:2}"
}

peer() {  # on the machine's own torch and transformers, without TVM's carried packages
    local out=${1:?usage: $0 peer OUTDIR}
    mkdir -p "$out"
    cd "$ROOT"
    env -u PYTHONPATH -u TVM_USE_RUNTIME_LIB $PY scripts/gpu_torch_peer.py "$WORK/x/pkgs/gemma3-270m-mtp-q4f16_1" \
        --out "$out/gpu_torch_peer.json" "${@:2}"
}

cmd=${1:-}; shift || true
case $cmd in
    stage) stage "$@" ;;
    receive) receive "$1" ;;
    check) check "$@" ;;
    speed) speed "$@" ;;
    profile) profile "$@" ;;
    peer) peer "$@" ;;
    vulkan) vulkan "$@" ;;
    *) echo "usage: $0 stage DIR [--skip-270m] [--speculative] | stage DIR --vulkan | receive DIR/pN | check [pytest args] | speed|profile|peer|vulkan OUTDIR" >&2
       exit 2 ;;
esac
