// mlc-mtp: base64 (RFC 4648 alphabet, '=' padding) layered on another Stream; the runtime uses it
// to put tensors into JSON. Base64OutStream needs Finish() after the last Write; Base64InStream
// skips whitespace and stops at padding or at the end of its source.
#ifndef MLC_MTP_SUPPORT_BASE64_H_
#define MLC_MTP_SUPPORT_BASE64_H_

#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>

namespace tvm {
namespace support {

namespace base64 {
inline char Digit(uint32_t v) {
  static const char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  return kDigits[v & 63];
}
inline int Value(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64

class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit Base64OutStream(Stream* out) : out_(out) {}

  size_t Read(void*, size_t) final { return 0; }
  size_t Write(const void* ptr, size_t size) final {
    const uint8_t* bytes = static_cast<const uint8_t*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_ = (group_ << 8) | bytes[i];
      if (++count_ == 3) Emit(4);
    }
    return size;
  }
  // Writes the last partial group with padding.
  void Finish() {
    if (count_ == 0) return;
    int digits = count_ + 1;
    group_ <<= 8 * (3 - count_);
    Emit(digits);
    for (int i = digits; i < 4; ++i) Put('=');
  }

 private:
  void Emit(int digits) {
    for (int i = 0; i < digits; ++i) Put(base64::Digit(group_ >> (18 - 6 * i)));
    group_ = 0;
    count_ = 0;
  }
  void Put(char c) { out_->Write(static_cast<const void*>(&c), 1); }

  Stream* out_;
  uint32_t group_ = 0;
  int count_ = 0;
};

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;
  explicit Base64InStream(Stream* in) : in_(in) {}

  // Nothing to skip ahead of: whitespace is skipped wherever it occurs.
  void InitPosition() {}

  size_t Read(void* ptr, size_t size) final {
    uint8_t* out = static_cast<uint8_t*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (pending_ == 0 && !Refill()) break;
      out[n++] = static_cast<uint8_t>(bits_ >> (8 * (pending_ - 1)));
      --pending_;
    }
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }

 private:
  // Decodes the next group of up to four digits into bits_ / pending_.
  bool Refill() {
    if (done_) return false;
    uint32_t bits = 0;
    int digits = 0;
    while (digits < 4) {
      char c;
      if (in_->Read(static_cast<void*>(&c), 1) != 1 || c == '=') {
        done_ = true;
        break;
      }
      if (std::isspace(static_cast<unsigned char>(c))) continue;
      int v = base64::Value(c);
      if (v < 0) {
        done_ = true;
        break;
      }
      bits = (bits << 6) | static_cast<uint32_t>(v);
      ++digits;
    }
    if (digits < 2) return false;
    pending_ = digits - 1;  // 2 digits -> 1 byte, 3 -> 2, 4 -> 3
    bits_ = bits >> ((6 * digits) - 8 * pending_);  // drop the pad bits of a short group
    return true;
  }

  Stream* in_;
  uint32_t bits_ = 0;
  int pending_ = 0;
  bool done_ = false;
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_SUPPORT_BASE64_H_
