// mlc-mtp: the string helper the runtime sources call.
#ifndef MLC_MTP_SUPPORT_UTILS_H_
#define MLC_MTP_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_SUPPORT_UTILS_H_
