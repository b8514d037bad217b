// mlc-mtp: NVTX profiler ranges are CUDA-only; in the wasm runtime a range marks nothing.
#ifndef MLC_MTP_TVM_SUPPORT_CUDA_NVTX_H_
#define MLC_MTP_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_TVM_SUPPORT_CUDA_NVTX_H_
