// mlc-mtp: scratch memory for the RPC endpoint: allocate_<T>(n) hands out storage for n trivial
// values that stays valid until RecycleAll().
#ifndef MLC_MTP_SUPPORT_ARENA_H_
#define MLC_MTP_SUPPORT_ARENA_H_

#include <cstddef>
#include <memory>
#include <type_traits>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  template <typename T>
  T* allocate_(size_t count = 1) {
    static_assert(std::is_trivial<T>::value, "the arena holds trivial types only");
    static_assert(alignof(T) <= alignof(std::max_align_t), "over-aligned type");
    size_t units = (sizeof(T) * count + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    blocks_.emplace_back(new std::max_align_t[units == 0 ? 1 : units]);
    return reinterpret_cast<T*>(blocks_.back().get());
  }
  void RecycleAll() { blocks_.clear(); }

 private:
  std::vector<std::unique_ptr<std::max_align_t[]>> blocks_;
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_SUPPORT_ARENA_H_
