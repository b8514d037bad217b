// mlc-mtp: the byte stream interface TVM's runtime sources serialize through.
// A Stream moves raw bytes; the typed Read/Write/ReadArray/WriteArray members dispatch to
// Serializer<T> (specializations in serializer.h and in the runtime's own headers).
#ifndef MLC_MTP_TVM_SUPPORT_IO_H_
#define MLC_MTP_TVM_SUPPORT_IO_H_

#include <cstddef>

namespace tvm {
namespace support {

class Stream;

// Specialize with: static constexpr bool enabled = true;
//                  static void Write(Stream*, const T&); static bool Read(Stream*, T*);
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

class Stream {
 public:
  virtual ~Stream() = default;
  // Raw bytes; each returns how many bytes were moved.
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  bool Read(T* value) {
    static_assert(Serializer<T>::enabled, "type has no Serializer");
    return Serializer<T>::Read(this, value);
  }
  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "type has no Serializer");
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Read(values + i)) return false;
    }
    return true;
  }
  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) Write(values[i]);
  }
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_TVM_SUPPORT_IO_H_
