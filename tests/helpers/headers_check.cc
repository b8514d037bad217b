// Exercises pipeline/compile/wasm_headers on the host (g++), for tests/compile/test_webgpu_headers.py.
// Prints, one per line:
//   serial <hex of the serialized values>       (the Python side rebuilds the bytes with struct)
//   roundtrip ok | roundtrip FAIL <what>
//   truncated ok | truncated FAIL
//   b64 <hex input> <encoded>                   (for each input)
//   unb64 <hex decoded>                         (of a whitespace-broken encoding of bytes 0..255)
//   ring ok | ring FAIL <step>
//   arena ok | arena FAIL
//   starts <0|1> x3
//   f16 <hex float32 bits>                      (for each of the 65536 float16 bit patterns)
#include <builtin_fp16.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>
#include <tvm/support/cuda/nvtx.h>
#include <tvm/support/serializer.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "src/support/arena.h"
#include "src/support/base64.h"
#include "src/support/bytes_io.h"
#include "src/support/ring_buffer.h"
#include "src/support/utils.h"

using namespace tvm;

enum class Kind : int16_t { kA = 5 };

static std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

struct Values {
  uint8_t u8 = 7;
  int32_t i32 = -2;
  uint64_t u64 = uint64_t{1} << 40;
  double f64 = 1.5;
  Kind kind = Kind::kA;
  std::string str = "abc";
  std::vector<int64_t> ints{1, -2};
  std::vector<std::string> strs{"x", ""};
  std::pair<int32_t, std::string> pair{9, "p"};
  std::unordered_map<std::string, std::string> umap{{"k", "v"}};
  ffi::String fstr = "h\xc3\xa9llo";
  ffi::Array<ffi::String> farr{"a", "bc"};
  ffi::Map<ffi::String, ffi::String> fmap{{"key", "val"}};
  DLDataType dtype{2, 32, 1};
  DLDevice device{kDLWebGPU, 3};

  template <typename F>
  void Each(F f) {
    f(u8); f(i32); f(u64); f(f64); f(kind); f(str); f(ints); f(strs); f(pair); f(umap);
    f(fstr); f(farr); f(fmap); f(dtype); f(device);
  }
};

static const char* Compare(const Values& a, const Values& b) {
  if (a.u8 != b.u8 || a.i32 != b.i32 || a.u64 != b.u64 || a.f64 != b.f64 || a.kind != b.kind) return "scalars";
  if (a.str != b.str || a.ints != b.ints || a.strs != b.strs || a.pair != b.pair || a.umap != b.umap) {
    return "std containers";
  }
  if (a.fstr != b.fstr || a.farr.size() != b.farr.size() || a.farr[1] != b.farr[1]) return "ffi string/array";
  if (b.fmap.size() != 1 || b.fmap.at("key") != "val") return "ffi map";
  if (a.dtype.code != b.dtype.code || a.dtype.bits != b.dtype.bits || a.dtype.lanes != b.dtype.lanes) return "dtype";
  if (a.device.device_type != b.device.device_type || a.device.device_id != b.device.device_id) return "device";
  return nullptr;
}

static void CheckSerializer() {
  Values written;
  std::string bytes;
  support::BytesOutStream out(&bytes);
  written.Each([&](const auto& v) { out.Write(v); });
  std::printf("serial %s\n", Hex(bytes).c_str());

  Values read;
  read.u8 = 0; read.i32 = 0; read.u64 = 0; read.f64 = 0; read.str.clear(); read.ints.clear();
  read.strs.clear(); read.umap.clear(); read.fstr = ""; read.farr = {}; read.fmap = {};
  read.dtype = DLDataType{0, 0, 0}; read.device = DLDevice{kDLCPU, 0};
  support::BytesInStream in(bytes);
  bool ok = true;
  read.Each([&](auto& v) { ok = ok && in.Read(&v); });
  const char* diff = ok ? Compare(written, read) : "a Read returned false";
  std::printf(diff ? "roundtrip FAIL %s\n" : "roundtrip ok\n", diff);

  std::string cut = bytes.substr(0, 20);  // inside the string "abc"'s count
  support::BytesInStream short_in(cut);
  Values partial;
  bool all = true;
  partial.Each([&](auto& v) { all = all && short_in.Read(&v); });
  std::printf(all ? "truncated FAIL\n" : "truncated ok\n");
}

static void CheckBase64() {
  const char* inputs[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  for (const char* input : inputs) {
    std::string encoded;
    support::BytesOutStream sink(&encoded);
    support::Base64OutStream b64(&sink);
    b64.Write(input, std::string(input).size());
    b64.Finish();
    std::printf("b64 %s %s\n", Hex(input).c_str(), encoded.c_str());
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  std::string encoded;
  support::BytesOutStream sink(&encoded);
  support::Base64OutStream b64(&sink);
  b64.Write(all.data(), all.size());
  b64.Finish();
  std::string broken;
  for (size_t i = 0; i < encoded.size(); ++i) broken += (i % 7 == 3 ? std::string("\n ") : "") + encoded[i];
  support::BytesInStream source(broken);
  support::Base64InStream decoder(&source);
  decoder.InitPosition();
  std::string decoded(300, '\0');
  decoded.resize(decoder.Read(&decoded[0], decoded.size()));
  std::printf("unb64 %s\n", Hex(decoded).c_str());
}

static void CheckRingBuffer() {
  support::RingBuffer ring;
  std::deque<char> model;
  uint32_t state = 12345;
  auto next = [&]() { return state = state * 1103515245u + 12345u, (state >> 8) % 97; };
  char counter = 0;
  for (int step = 0; step < 5000; ++step) {
    uint32_t op = next() % 4, n = next();
    char chunk[128];
    if (op == 0) {
      for (uint32_t i = 0; i < n; ++i) model.push_back(chunk[i] = counter++);
      ring.Write(chunk, n);
    } else if (op == 1) {
      n = std::min<uint32_t>(n, model.size());
      ring.Read(chunk, n);
      for (uint32_t i = 0; i < n; ++i, model.pop_front()) {
        if (chunk[i] != model.front()) return (void)std::printf("ring FAIL %d\n", step);
      }
    } else if (op == 2) {
      size_t got = ring.WriteWithCallback([&](void* dst, size_t size) {
        size_t k = std::min<size_t>(size, n / 2);
        for (size_t i = 0; i < k; ++i) model.push_back(static_cast<char*>(dst)[i] = counter++);
        return k;
      }, n);
      if (got != n / 2) return (void)std::printf("ring FAIL %d\n", step);
    } else {
      bool bad = false;
      ring.ReadWithCallback([&](const void* src, size_t size) {
        size_t k = size / 2 + (size & 1);
        for (size_t i = 0; i < k; ++i, model.pop_front()) {
          bad = bad || static_cast<const char*>(src)[i] != model.front();
        }
        return k;
      }, n);
      if (bad) return (void)std::printf("ring FAIL %d\n", step);
    }
    if (ring.bytes_available() != model.size()) return (void)std::printf("ring FAIL %d\n", step);
    if (step % 500 == 0) ring.Reserve(model.size() + 64);
  }
  std::printf("ring ok\n");
}

static void CheckArena() {
  support::Arena arena;
  bool ok = true;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::pair<double*, int>> blocks;
    for (int i = 1; i < 50; ++i) {
      double* p = arena.allocate_<double>(i);
      ok = ok && reinterpret_cast<uintptr_t>(p) % alignof(double) == 0;
      for (int j = 0; j < i; ++j) p[j] = i * 1000 + j;
      blocks.emplace_back(p, i);
    }
    for (auto& [p, i] : blocks) {
      for (int j = 0; j < i; ++j) ok = ok && p[j] == i * 1000 + j;
    }
    arena.RecycleAll();
  }
  std::printf(ok ? "arena ok\n" : "arena FAIL\n");
}

int main() {
  CheckSerializer();
  CheckBase64();
  CheckRingBuffer();
  CheckArena();
  support::NVTXScopedRange range("unused");
  std::printf("starts %d %d %d\n", support::StartsWith(ffi::String("RPCError: x"), "RPCError: "),
              support::StartsWith("RPC", "RPCError: "), support::StartsWith("abc", ""));
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(static_cast<uint16_t>(bits));
    uint32_t out;
    std::memcpy(&out, &f, 4);
    std::printf("f16 %08x\n", out);
  }
  return 0;
}
