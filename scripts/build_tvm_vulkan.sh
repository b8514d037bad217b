#!/usr/bin/env bash
# Build TVM's Vulkan backend (SPIR-V code generator + Vulkan runtime) for the installed TVM wheel.
#
# PyPI's apache-tvm 0.26.0 is built with USE_VULKAN=OFF: it has no `target.build.vulkan` and no
# Vulkan runtime.  This script compiles TVM's own Vulkan sources (src/backend/vulkan/{codegen,runtime})
# from the source tag that matches the installed wheel (v<tvm.__version__>, i.e. v0.26.0) into two
# plugin libraries that link against the wheel's libtvm_compiler.so / libtvm_runtime.so:
#
#   libtvm_runtime_vulkan.so    the Vulkan device API and module loader (what USE_VULKAN=ON puts
#                               beside libtvm_runtime.so under the same name)
#   libtvm_compiler_vulkan.so   the SPIR-V code generator (`target.build.vulkan`) and the SPIR-V
#                               intrinsic lowering rules, plus a small shim (written here) for the
#                               five helpers the wheel builds with hidden visibility
#
# pipeline/compile/vulkan.py loads them from $MLC_MTP_TVM_VULKAN_LIB (default ~/.cache/mlc-mtp-vulkan/lib),
# after checking build-info.json (written here) names the installed TVM version.
# A TVM built in full with USE_VULKAN=ON needs none of this: the same code then finds the backend
# already registered and loads nothing.
#
# Usage: scripts/build_tvm_vulkan.sh [TVM_SOURCE_DIR]
#   TVM_SOURCE_DIR  a checkout of apache/tvm at tag v<version of the installed TVM>; without it the
#                   tag is cloned from https://github.com/apache/tvm (shallow, no submodules: the
#                   tvm-ffi headers come from the installed apache-tvm-ffi package).
# Environment: PYTHON (default .venv/bin/python), MLC_MTP_TVM_VULKAN_LIB (output folder, default
#   ~/.cache/mlc-mtp-vulkan/lib), JOBS (parallel compiles, default: number of CPUs).
# Needs g++ (C++20) and Debian's libvulkan-dev, spirv-headers and spirv-tools
#   (apt-get install -y g++ libvulkan-dev spirv-headers spirv-tools); to run kernels without a GPU,
#   Mesa's lavapipe (mesa-vulkan-drivers, 25.x from bookworm-backports).
# Takes about 2 minutes on 2 cores.
#
# CI cannot reach GitHub, so CI does not build this backend: the Vulkan run tests
# (tests/compile/test_vulkan.py) skip there, saying which capability is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${MLC_MTP_TVM_VULKAN_LIB:-$HOME/.cache/mlc-mtp-vulkan/lib}
JOBS=${JOBS:-$(nproc)}
die() { echo "build_tvm_vulkan: $*" >&2; exit 1; }

# The installed TVM: its version (the tag to build), library folders and the tvm-ffi headers.
read -r VERSION TVM_LIB FFI_INC FFI_LIB < <(TVM_DEVICE_BACKEND_AUTOLOAD=0 "$PYTHON" - <<'EOF'
import os, tvm, tvm_ffi
from tvm.base import _LOADED_LIBS
ffi = os.path.dirname(tvm_ffi.__file__)
print(tvm.__version__, os.path.dirname(_LOADED_LIBS["tvm_runtime"]._name), os.path.join(ffi, "include"),
      os.path.join(ffi, "lib"))
EOF
) || die "cannot import tvm with $PYTHON"
TAG=v$VERSION

for need in /usr/include/vulkan/vulkan_core.h /usr/include/spirv/unified1/spirv.hpp \
            /usr/include/spirv-tools/libspirv.h; do
  [ -e "$need" ] || die "$need is missing: apt-get install -y libvulkan-dev spirv-headers spirv-tools"
done
[ -e "$TVM_LIB/libtvm_compiler.so" ] || die "$TVM_LIB/libtvm_compiler.so is missing (a runtime-only TVM cannot compile)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tvm-vulkan.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SRC=${1:-}
if [ -z "$SRC" ]; then
  SRC=$WORK/tvm
  git clone --quiet --depth 1 --branch "$TAG" https://github.com/apache/tvm "$SRC" \
    || die "cannot clone apache/tvm $TAG; pass a source folder of that tag instead"
fi
BACKEND=$SRC/src/backend/vulkan
[ -f "$BACKEND/codegen/codegen_spirv.cc" ] || die "$SRC: no $BACKEND/codegen/codegen_spirv.cc (not TVM $TAG?)"
# A git checkout must sit at the tag; a plain source folder (e.g. `git archive v0.26.0`) is taken
# on trust: the source tree itself names no release version.
if [ -e "$SRC/.git" ] && ! git -C "$SRC" tag --points-at HEAD | grep -qx "$TAG"; then
  die "$SRC is not at tag $TAG (HEAD $(git -C "$SRC" rev-parse --short HEAD)); the plugin must match TVM $VERSION"
fi

# Shim: the wheel hides these symbols (-fvisibility=hidden); the code generator calls them.  Each is
# re-expressed through what the wheel does export.
cat > "$WORK/shim.cc" <<'EOF'
#include <tvm/ffi/function.h>
#include <tvm/ir/op.h>
#include <tvm/ir/transform.h>
#include <tvm/ir/type.h>
#include <tvm/tirx/buffer.h>
#include <tvm/tirx/op.h>
#include <tvm/tirx/op_attr_types.h>
#include <tvm/tirx/stmt.h>

#include <cstdio>
#include <string>
#include <utility>

namespace tvm {
namespace transform {
// Runs through the registered "transform.RunPass" (the exported entry to the same code).
IRModule Pass::operator()(IRModule mod) const {
  static const ffi::Function run = ffi::Function::GetGlobalRequired("transform.RunPass");
  return run(*this, std::move(mod)).cast<IRModule>();
}
}  // namespace transform

namespace tirx {
bool ForNode::HasTrivialStep() const { return !step.has_value() || is_one(step.value()); }

// Storage scope ("global", "shared", ...) carried by the type of a buffer or pointer variable.
ffi::String GetPtrStorageScope(Var buffer_var) {
  if (const auto* buffer = buffer_var->ty.as<BufferTypeNode>()) return buffer->storage_scope;
  const auto* pointer = buffer_var->ty.as<PointerTypeNode>();
  TVM_FFI_ICHECK(pointer) << "variable " << buffer_var << " is neither a buffer nor a pointer";
  return pointer->storage_scope;
}

// Fragment rows x columns of an "M, N, K" matrix-multiply shape: A is MxK, B is KxN, C is MxN.
std::pair<int32_t, int32_t> GetWmmaFragmentDimSize(const std::string& shape, const std::string& scope) {
  int m = 0, n = 0, k = 0;
  TVM_FFI_ICHECK_EQ(std::sscanf(shape.c_str(), "%d, %d, %d", &m, &n, &k), 3) << "bad fragment shape " << shape;
  if (scope == "wmma.matrix_a") return {m, k};
  if (scope == "wmma.matrix_b") return {k, n};
  if (scope == "wmma.accumulator") return {m, n};
  return {0, 0};
}
}  // namespace tirx

namespace codegen {
namespace intrin {
// erf as the wheel lowers it for the other shader targets (its fast-erf rule, registered on tirx.erf).
PrimExpr DispatchFastErf(const PrimExpr& e) {
  static const Op erf = Op::Get("tirx.erf");
  for (const char* attr : {"metal.FLowerIntrinsic", "webgpu.FLowerIntrinsic", "opencl.FLowerIntrinsic"}) {
    if (Op::HasAttrMap(attr)) {
      auto rules = Op::GetAttrMap<tirx::FLowerIntrinsic>(attr);
      if (rules.count(erf)) return rules[erf](e);
    }
  }
  TVM_FFI_THROW(InternalError) << "this TVM has no fast erf rule to lower tirx.erf with";
}
}  // namespace intrin

void RegisterVulkanCodegen();
namespace spirv {
void RegisterVulkanIntrinRules();
}  // namespace spirv
}  // namespace codegen
}  // namespace tvm

// The wheel registers the vulkan target kind; what USE_VULKAN=ON adds to that registration:
TVM_FFI_STATIC_INIT_BLOCK() {
  tvm::codegen::spirv::RegisterVulkanIntrinRules();
  tvm::codegen::RegisterVulkanCodegen();
}
EOF

# One fix to the tag's code generator, compiled from a copy (-iquote finds its neighbours' headers):
# bool elements are stored as a byte type (boolean_storage_type_) in kernel arguments, DeclBuffer and
# loads, but a local or shared buffer of bool was allocated as bool and a bool value stored as bool,
# so any kernel with such a buffer stopped ("Attempted to access buffer X as element type T.int8 ...
# when the element type is T.bool"; TVM's multinomial_from_uniform kernel has three).  The allocation
# gets the byte type, and a scalar bool is converted to it (1 or 0) before it is stored.
"$PYTHON" - "$BACKEND/codegen/codegen_spirv.cc" "$WORK/codegen_spirv.cc" <<'FIX'
import sys
text = open(sys.argv[1]).read()
fixes = [("  spirv::SType etype = builder_->GetSType(op->buffer->dtype);\n",
          "  PrimType storage_type = op->buffer->dtype;\n"
          "  if (storage_type == PrimType::Bool()) {\n"
          "    storage_type = boolean_storage_type_.WithLanes(storage_type.lanes());\n"
          "  }\n"
          "  spirv::SType etype = builder_->GetSType(storage_type);\n"),
         ("  info.SetContentType(op->buffer->dtype, op->buffer.name());\n",
          "  info.SetContentType(storage_type, op->buffer.name());\n"),
         ("  PrimType value_type = op->value.ty();\n",
          "  const bool store_bool = op->value.ty() == PrimType::Bool();\n"
          "  PrimType value_type = store_bool ? boolean_storage_type_ : op->value.ty();\n"),
         ("  spirv::Value value = MakeValue(op->value);\n",
          "  spirv::Value value = MakeValue(op->value);\n"
          "  if (store_bool) value = builder_->Cast(builder_->GetSType(value_type), value);\n")]
for old, new in fixes:
    if text.count(old) != 1:
        sys.exit(f"build_tvm_vulkan: {sys.argv[1]}: expected once: {old.strip()!r} (not TVM v0.26.0?)")
    text = text.replace(old, new)
open(sys.argv[2], "w").write(text)
FIX

FLAGS=(-std=c++20 -O2 -fPIC -faligned-new -fvisibility=hidden -DTVM_ENABLE_SPIRV=1 -D_MACH_I32=int
       -iquote "$BACKEND/codegen" -I"$SRC/include" -I"$FFI_INC" -I"$SRC/src" -I/usr/include/spirv/unified1 -I/usr/include/spirv-tools)
CODEGEN=(build_vulkan codegen_spirv intrin_rule_spirv ir_builder spirv_support spirv_utils vulkan_fallback_module)
echo "build_tvm_vulkan: compiling TVM $TAG's Vulkan backend ($SRC) for $TVM_LIB with $JOBS jobs"
mkdir -p "$WORK/obj"
compile() { nice g++ "${FLAGS[@]}" -c "$1" -o "$WORK/obj/$2.o" 2>>"$WORK/errors.log"; }
UNITS=()
for f in "${CODEGEN[@]}"; do
  [[ $f == codegen_spirv ]] && UNITS+=("$WORK/codegen_spirv.cc" "cg_$f") || UNITS+=("$BACKEND/codegen/$f.cc" "cg_$f")
done
for f in "$BACKEND"/runtime/*.cc; do UNITS+=("$f" "rt_$(basename "$f" .cc)"); done
UNITS+=("$WORK/shim.cc" cg_shim)
failed=0
for ((i = 0; i < ${#UNITS[@]}; i += 2)); do
  compile "${UNITS[i]}" "${UNITS[i + 1]}" &
  if (( $(jobs -rp | wc -l) >= JOBS )); then wait -n || failed=1; fi
done
while (( $(jobs -rp | wc -l) > 0 )); do wait -n || failed=1; done
wait || failed=1
(( failed == 0 )) || { grep -m 20 -B2 -A3 "error" "$WORK/errors.log" >&2; die "compilation failed"; }

LINK=(-shared -Wl,--no-undefined -Wl,-rpath,"$TVM_LIB" -Wl,-rpath,"$FFI_LIB" -L"$TVM_LIB" -L"$FFI_LIB")
mkdir -p "$WORK/lib"
g++ "${LINK[@]}" -o "$WORK/lib/libtvm_runtime_vulkan.so" "$WORK"/obj/rt_*.o -ltvm_runtime -ltvm_ffi -lvulkan
g++ "${LINK[@]}" -o "$WORK/lib/libtvm_compiler_vulkan.so" "$WORK"/obj/cg_*.o \
  -Wl,--exclude-libs,ALL -lSPIRV-Tools -ltvm_compiler -ltvm_runtime -ltvm_ffi
COMMIT=$( [ -e "$SRC/.git" ] && git -C "$SRC" rev-parse HEAD || echo unknown)
# What pipeline/compile/vulkan.py checks before loading: the TVM version these were built for.
"$PYTHON" -c 'import json, sys; print(json.dumps(dict(zip(["tvm_version", "tag", "commit", "source", "tvm_lib"], sys.argv[1:])), indent=1))' \
  "$VERSION" "$TAG" "$COMMIT" "$SRC" "$TVM_LIB" > "$WORK/lib/build-info.json"

mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT.new" && mv "$WORK/lib" "$OUT.new" && rm -rf "$OUT" && mv "$OUT.new" "$OUT"
echo "build_tvm_vulkan: wrote $OUT"
cd "$ROOT" && MLC_MTP_TVM_VULKAN_LIB=$OUT "$PYTHON" -c 'from pipeline.compile import vulkan; print(vulkan.describe())'
