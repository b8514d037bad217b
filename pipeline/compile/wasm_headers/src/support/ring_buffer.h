// mlc-mtp: the RPC endpoint's byte queue. Bytes are appended at the back (Write,
// WriteWithCallback) and taken from the front (Read, ReadWithCallback); storage is one growing
// vector whose consumed front is reclaimed before it grows.
#ifndef MLC_MTP_SUPPORT_RING_BUFFER_H_
#define MLC_MTP_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  size_t bytes_available() const { return end_ - begin_; }

  // Makes room for at least n queued bytes in total.
  void Reserve(size_t n) { Room(n > bytes_available() ? n - bytes_available() : 0); }

  // Takes exactly size queued bytes.
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_LE(size, bytes_available()) << "RingBuffer: reading more than is queued";
    std::memcpy(data, buf_.data() + begin_, size);
    Consume(size);
  }
  void Write(const void* data, size_t size) {
    Room(size);
    std::memcpy(buf_.data() + end_, data, size);
    end_ += size;
  }
  // Hands up to max_bytes queued bytes to send(const void*, size_t) -> consumed; returns consumed.
  template <typename FSend>
  size_t ReadWithCallback(FSend send, size_t max_bytes) {
    size_t n = send(static_cast<const void*>(buf_.data() + begin_), std::min(max_bytes, bytes_available()));
    Consume(n);
    return n;
  }
  // Lets recv(void*, size_t) -> produced fill up to max_bytes at the back; returns produced.
  template <typename FRecv>
  size_t WriteWithCallback(FRecv recv, size_t max_bytes) {
    Room(max_bytes);
    size_t n = recv(static_cast<void*>(buf_.data() + end_), max_bytes);
    end_ += n;
    return n;
  }

 private:
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Ensures n free bytes after end_.
  void Room(size_t n) {
    if (buf_.size() - end_ >= n) return;
    if (begin_ != 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, bytes_available());
      end_ -= begin_;
      begin_ = 0;
    }
    if (buf_.size() - end_ < n) buf_.resize(std::max(end_ + n, 2 * buf_.size()));
  }

  std::vector<char> buf_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_SUPPORT_RING_BUFFER_H_
