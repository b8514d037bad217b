// mlc-mtp: widening of one IEEE-754 binary format to a wider one, as the runtime's sort kernels
// call it for float16 keys: __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(bits).
// Exact for every input (zeros, subnormals, infinities, NaN payloads); never rounds.
#ifndef MLC_MTP_BUILTIN_FP16_H_
#define MLC_MTP_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

template <typename SrcT, typename SrcBits, int kSrcSig, typename DstT, typename DstBits, int kDstSig>
DstT __extendXfYf2__(SrcT value) {
  static_assert(sizeof(SrcT) == sizeof(SrcBits) && sizeof(DstT) == sizeof(DstBits), "sizes");
  constexpr int kSrcWidth = 8 * sizeof(SrcBits);
  constexpr int kDstWidth = 8 * sizeof(DstBits);
  constexpr int kSrcExpBits = kSrcWidth - kSrcSig - 1;
  constexpr int kDstExpBits = kDstWidth - kDstSig - 1;
  constexpr int64_t kSrcBias = (int64_t{1} << (kSrcExpBits - 1)) - 1;
  constexpr int64_t kDstBias = (int64_t{1} << (kDstExpBits - 1)) - 1;
  constexpr uint64_t kSrcExpMax = (uint64_t{1} << kSrcExpBits) - 1;
  constexpr uint64_t kDstExpMax = (uint64_t{1} << kDstExpBits) - 1;
  constexpr uint64_t kSrcSigMask = (uint64_t{1} << kSrcSig) - 1;

  SrcBits src_bits;
  std::memcpy(&src_bits, &value, sizeof(src_bits));
  uint64_t bits = static_cast<uint64_t>(src_bits);
  uint64_t sign = bits >> (kSrcWidth - 1);
  uint64_t exponent = (bits >> kSrcSig) & kSrcExpMax;
  uint64_t significand = bits & kSrcSigMask;

  uint64_t out_exponent = 0;
  if (exponent == kSrcExpMax) {  // infinity or NaN
    out_exponent = kDstExpMax;
  } else if (exponent != 0) {  // normal
    out_exponent = static_cast<uint64_t>(static_cast<int64_t>(exponent) - kSrcBias + kDstBias);
  } else if (significand != 0) {  // subnormal: normalize (the wider format has the range)
    int64_t e = 1 - kSrcBias;
    while ((significand & (uint64_t{1} << kSrcSig)) == 0) {
      significand <<= 1;
      --e;
    }
    significand &= kSrcSigMask;
    out_exponent = static_cast<uint64_t>(e + kDstBias);
  }
  uint64_t out = (sign << (kDstWidth - 1)) | (out_exponent << kDstSig) |
                 (significand << (kDstSig - kSrcSig));
  DstBits dst_bits = static_cast<DstBits>(out);
  DstT result;
  std::memcpy(&result, &dst_bits, sizeof(result));
  return result;
}

#endif  // MLC_MTP_BUILTIN_FP16_H_
