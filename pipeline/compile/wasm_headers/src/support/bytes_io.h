// mlc-mtp: streams over bytes held in memory. BytesInStream reads a buffer it does not own (the
// caller keeps it alive); BytesOutStream appends to a std::string.
#ifndef MLC_MTP_SUPPORT_BYTES_IO_H_
#define MLC_MTP_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/serializer.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  BytesInStream(const char* data, size_t size) : data_(data), size_(size) {}
  explicit BytesInStream(const std::string& bytes) : BytesInStream(bytes.data(), bytes.size()) {}
  explicit BytesInStream(const ffi::Bytes& bytes) : BytesInStream(bytes.data(), bytes.size()) {}

  size_t Read(void* ptr, size_t size) final {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }  // read-only

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit BytesOutStream(std::string* out) : out_(out) {}

  size_t Read(void*, size_t) final { return 0; }  // write-only
  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_SUPPORT_BYTES_IO_H_
