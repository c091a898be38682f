// GCC 12's avx512fintrin.h fills the unused source of its unmasked 512-bit intrinsics with
// _mm*_undefined_*(), which -Wmaybe-uninitialized reports wherever they are inlined (GCC bug
// 105593, fixed in GCC 13): a false positive, silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "fully_connected_s8.h"
#include "host_simd.h"

#include "requantize.h"
#include "requantize_fp64.h"

// Accumulator bound. input + input_offset lies in [-255, 255] (input in [-128, 127], offset in
// [-127, 128]) and a weight in [-128, 127], so each product has |p| <= 255 * 128 = 32640. With
// in_features <= 32768 the sum of products has |sum| <= 1,069,547,520 < 2^30, and the check below
// admits a bias only if |bias| <= INT32_MAX - in_features * 32640, so sum + bias never leaves int32.
namespace {

// The checks both variants share: dims, offsets, clamp and the accumulator bound.
inline tlm_status check_common(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                               const int32_t* bias) {
  if (d->batches < 1 || d->in_features < 1 || d->out_features < 1) return TLM_ERR_SHAPE;
  if (d->in_features > TLM_FC_MAX_IN_FEATURES) return TLM_ERR_ACCUMULATOR_RANGE;
  if (p->input_offset < -127 || p->input_offset > 128) return TLM_ERR_BAD_PARAMS;
  if (p->output_offset < -128 || p->output_offset > 127) return TLM_ERR_BAD_PARAMS;
  if (p->activation_min < -128 || p->activation_max > 127 ||
      p->activation_min > p->activation_max)
    return TLM_ERR_BAD_PARAMS;
  if (bias) {
    const int64_t limit = INT32_MAX - int64_t{d->in_features} * 32640;
    for (int32_t o = 0; o < d->out_features; ++o) {
      const int64_t b = bias[o];
      if (b > limit || -b > limit) return TLM_ERR_ACCUMULATOR_RANGE;
    }
  }
  return TLM_OK;
}

}  // namespace

tlm_status tlm_fully_connected_s8_check(const tlm_fully_connected_params* p,
                                        const tlm_fc_dims* d, const int32_t* bias) {
  const tlm_status s = check_common(p, d, bias);
  if (s != TLM_OK) return s;
  if (p->output_multiplier < 0 || p->output_shift < -31 || p->output_shift > 30)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

TLM_HOST_CLONES void tlm_fully_connected_s8(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                            const int8_t* input, const int8_t* weights, const int32_t* bias,
                            int8_t* output) {
  const int32_t in_n = d->in_features;
  const int32_t out_n = d->out_features;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    for (int32_t o = 0; o < out_n; ++o) {
      const int8_t* w = weights + o * in_n;
      int32_t acc = bias ? bias[o] : 0;
      for (int32_t i = 0; i < in_n; ++i) acc += (x[i] + p->input_offset) * w[i];
      output[b * out_n + o] = tlm_detail::fc_requantize(p, acc);
    }
  }
}

namespace {

// A normalized mantissa (2^52 <= m < 2^53, or m == 0 for a zero scale) and an exponent in
// [0, 1100]: a finite non-negative double, as requantize_fp64 requires.
inline bool valid_scale(uint32_t lo, uint32_t hi, int32_t e) {
  const bool zero = lo == 0 && hi == 0;
  return (zero || (hi >= (1u << 20) && hi < (1u << 21))) && e >= 0 && e <= 1100;
}

}  // namespace

tlm_status tlm_fully_connected_ref_s8_check(const tlm_fully_connected_ref_params* p,
                                            const tlm_fc_dims* d, const int32_t* bias,
                                            const int32_t* scales) {
  const tlm_status s = check_common(&p->base, d, bias);
  if (s != TLM_OK) return s;
  if (p->base.output_multiplier != 0 || p->base.output_shift != 0) return TLM_ERR_BAD_PARAMS;
  if (!valid_scale(p->scale_mantissa_lo, p->scale_mantissa_hi, p->scale_exponent))
    return TLM_ERR_BAD_PARAMS;
  if (scales)
    for (int32_t o = 0; o < d->out_features; ++o)
      if (!valid_scale(uint32_t(scales[3 * o]), uint32_t(scales[3 * o + 1]), scales[3 * o + 2]))
        return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

// As tlm_fully_connected_s8 (same accumulator bound), then TFLite's reference requantization:
// round(double(acc) * scale) exactly (in 64 bits), plus the output offset, clamped to the
// activation range.
TLM_HOST_CLONES void tlm_fully_connected_ref_s8(const tlm_fully_connected_ref_params* p, const tlm_fc_dims* d,
                                const int8_t* input, const int8_t* weights, const int32_t* bias,
                                const int32_t* scales, int8_t* output) {
  const int32_t in_n = d->in_features;
  const int32_t out_n = d->out_features;
  const int32_t input_offset = p->base.input_offset;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    for (int32_t o = 0; o < out_n; ++o) {
      const int8_t* w = weights + o * in_n;
      int32_t acc = bias ? bias[o] : 0;
      for (int32_t i = 0; i < in_n; ++i) acc += (x[i] + input_offset) * w[i];
      output[b * out_n + o] = tlm_detail::fc_ref_requantize(p, scales, o, acc);
    }
  }
}

// ---- Host fast path (AVX2) ----------------------------------------------------------------------
//
// Weights are packed once (tlm_fully_connected_ref_s8_fast_pack) in blocks of 8 output channels,
// and blocks in groups ("superblocks") of 4, interleaved so that a group's weights are one
// contiguous stream: per 4 input features k .. k+3, 32 bytes for each block of the group in turn
// (the last group may have fewer blocks), each 32 bytes the 4 weights w[j][k .. k+3] of channels
// j = 0..7 (zero past in_features and past out_features). A one-row pass over a group then reads
// its weights front to back, which the prefetchers follow, instead of 4 streams a block apart.
// After the weights: the bias per channel as int32, with input_offset * sum(w) folded in (see
// Sums), and each channel's exact scale as a double (see exact_scale).
//
// Rows: up to kFcChunk rows at a time are prepared in the scratch, zero-padded to a multiple of 4:
// their sign masks and absolute values (see Sums), so every row's input is read before any output
// is written. Rows come in tiles of 4 (4 rows x 16 channels, 8 accumulators), the rest one at a
// time (1 row x 32 channels); with VNNI, rows run by whole superblocks on 512-bit
// vectors instead (see zmm below).
//
// Sums: acc = sum(w * (x + input_offset)) + bias = sum(w * x) + bias', bias' = bias + input_offset
// * sum(w). Per row, m[k] = -1 where x[k] < 0, else 0 (a byte mask), and |x[k]| (unsigned,
// |-128| = 128); their 4 bytes k .. k+3 go to every 32-bit lane. w XOR m is w where x >= 0 and
// ~w = -w - 1 where x < 0, so |x| * (w XOR m) = x * w - [x < 0] * |x|, for every int8 w (the
// complement never wraps, unlike -w for w = -128). _mm256_maddubs_epi16 multiplies |x| in [0, 128]
// by w XOR m in [-128, 127] and adds pairs: a pair sum lies in [2 * 128 * -128, 2 * 128 * 127] =
// [-32768, 32512], inside int16, so it never saturates. _mm256_madd_epi16 by 1 adds the pairs into
// channel j's int32 lane: no horizontal sums, and one weight load serves up to 4 rows. The row's
// correction c = sum over x < 0 of |x| (<= 128 * in_features), the same for every channel, is
// added at the end: sum(w * x) = acc + c. (The XOR runs on any vector port; _mm256_sign_epi8, the
// alternative, competes with the two multiplies for the multiply ports: 1.1-1.7 against 1.4-2.1
// cycles per 32 weights, measured side by side on this project's build machine, AMD EPYC.) Vector
// adds wrap modulo 2^32, and the final acc + c + bias' is the plain kernel's int32 acc (|bias| <=
// INT32_MAX - in_features * 32640 by the check), so the totals are the plain kernel's exactly,
// whatever the partial sums. On CPUs with AVX-512 VNNI (host_simd.h) the row is stored as the
// unsigned bytes x + 128 instead (no masks, no correction) and one _mm256_dpbusd_epi32 of them
// with the weights as they are adds 4 products w * (x + 128) into each lane: acc = sum(w * x) +
// 128 * sum(w), and the packed VNNI bias is bias' - 128 * sum(w), so that acc + it is again the
// plain kernel's sum, modulo 2^32 in every partial sum, exact in the total.
//
// Requantization: the plain kernel computes requantize_fp64(acc, m, e), which is round(double(acc) *
// scale) exactly as IEEE-754 doubles and C's round() give it (saturating at 2^52), scale = m * 2^-e.
// Here the host's own doubles compute it (x86-64 SSE2/AVX: IEEE-754 binary64, no extended
// precision; the default rounding mode, to nearest even, which the emulation fixes):
//   * the scale is built from its bits, exact while it is a normal double (m < 2^53 so it fits in
//     53 bits; m * 2^-e >= 2^-1022 iff e <= 1074) or zero. Larger exponents (subnormal scales)
//     take the integer emulation for that block;
//   * double(acc) is exact (|acc| < 2^31) and the product is IEEE's rounding of acc * m * 2^-e to 53
//     bits, the emulation's q * 2^(d - e). (A product below 2^-1022 would be rounded to fewer bits,
//     but it is far below 0.5, so both round it to 0.) |product| < 2^84, no overflow. It goes
//     through max/min before any addition, so no FMA contraction can fuse it away;
//   * the product is clamped to [activation_min - output_offset, activation_max - output_offset]
//     first, integers of magnitude <= 255: round() is monotone and leaves integers as they are, so
//     this equals clamping round()'s result to them, which, plus the offset, is the activation
//     clamp of round() + offset (also for the emulation's saturated +-2^52, far outside). The int32
//     conversion is exact after it, and the sum with the offset needs no clamp of its own;
//   * round() (halves away from zero) as trunc(x + copysign(h, x)) with h = 0.5 - 2^-54 (the double
//     below 0.5), for |x| <= 1024; by symmetry take x >= 0, x = n + f (n integer, 0 <= f < 1).
//     f >= 0.5: x + h >= n + 1 - 2^-54, which is n + 1 or rounds to it (2^-54 is at most half an ulp
//     there, a tie only at n + 1 = 1, broken to 1.0, the even mantissa), so trunc gives n + 1.
//     f < 0.5: x + h < n + 1, and rounding does not reach n + 1: for x < 1 the largest case,
//     x = 0.5 - 2^-54 (where floor(x + 0.5) would give 1), sums to 1 - 2^-53 exactly; for x >= 1,
//     n + 1 - (0.5 - f) is a multiple of ulp(x) >= 2^-52 in x's binade and the extra -2^-54 is
//     under half of it. So trunc gives n. (tests/cpp/test_host_fast_fc.cpp checks exact ties and
//     their neighbours against the emulation.)
#if TLM_HOST_AVX2
#include <immintrin.h>
#include <string.h>

#include "requantize_avx2.h"

namespace {

constexpr int32_t kFcChunk = 8;  // rows copied into the scratch at a time
// How far ahead of a one-row pass its weights are prefetched into L1 (bytes). The FC autoencoder,
// one core, best of 50-call batches over 15 runs in the VM's fast spells: 6.2-6.3 us with 512,
// 6.3-6.5 without. (Prefetches past the packed weights are harmless: they never fault.)
constexpr int32_t kFcPrefetch = 512;

// Two cache lines, kFcPrefetch bytes ahead of a step's 128 bytes at w.
TLM_AVX2_TARGET inline void prefetch_step(const int8_t* w) {
  _mm_prefetch(reinterpret_cast<const char*>(w) + kFcPrefetch, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(w) + kFcPrefetch + 64, _MM_HINT_T0);
}

inline int32_t fc_depth4(const tlm_fc_dims* d) { return (d->in_features + 3) & ~3; }
inline int32_t fc_blocks(const tlm_fc_dims* d) { return (d->out_features + 7) / 8; }
// Bytes of one block's weights: 8 channels x depth4.
inline size_t fc_block_bytes(const tlm_fc_dims* d) { return size_t(8) * fc_depth4(d); }
// Blocks in the superblock (group of 4) holding block blk.
inline int32_t fc_group_blocks(int32_t blocks, int32_t blk) {
  const int32_t first = blk / 4 * 4;
  return blocks - first < 4 ? blocks - first : 4;
}

// A channel's scale m * 2^-e as a double, exact; -1 when it is not a normal double or 0 (then that
// channel is requantized with requantize_fp64). m is normalized (the check), 2^52 <= m < 2^53, or 0.
inline double exact_scale(uint64_t m, int32_t e) {
  if (m == 0) return 0.0;
  if (e > 1074) return -1.0;
  const uint64_t bits = (uint64_t(1023 + 52 - e) << 52) | (m & ((uint64_t{1} << 52) - 1));
  double s;
  memcpy(&s, &bits, sizeof s);
  return s;
}

inline void channel_scale(const tlm_fully_connected_ref_params* p, const int32_t* scales,
                          int32_t o, uint64_t* m, int32_t* e) {
  if (scales) {
    *m = uint64_t(uint32_t(scales[3 * o])) | (uint64_t(uint32_t(scales[3 * o + 1])) << 32);
    *e = scales[3 * o + 2];
  } else {
    *m = uint64_t(p->scale_mantissa_lo) | (uint64_t(p->scale_mantissa_hi) << 32);
    *e = p->scale_exponent;
  }
}

// The row's sign masks (-1 where x < 0, else 0; zero-padded to k4) at dst, its absolute values
// at dst + k4 (|-128| is 128 as an unsigned byte). Returns the correction c = sum over x < 0 of
// |x| (see Sums).
TLM_AVX2_TARGET inline int32_t prep_row(const int8_t* src, int32_t n, int32_t k4, int8_t* dst) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i sums = zero;  // 4 x 64-bit sums of |x| over x < 0
  int32_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i m = _mm256_cmpgt_epi8(zero, v), a = _mm256_abs_epi8(v);  // |-128|: 0x80
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), m);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k4 + i), a);
    sums = _mm256_add_epi64(sums, _mm256_sad_epu8(_mm256_and_si256(a, m), zero));
  }
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sums);
  int64_t c = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < k4; ++i) {  // the tail, then zeros to k4
    const int32_t x = i < n ? src[i] : 0;
    dst[i] = static_cast<int8_t>(x < 0 ? -1 : 0);
    dst[k4 + i] = static_cast<int8_t>(x < 0 ? -x : x);  // 128 wraps to the byte 0x80
    c += x < 0 ? -x : 0;
  }
  return static_cast<int32_t>(c);  // <= 128 * in_features
}

// VNNI: the row as unsigned bytes x + 128 at dst + k4, where the tiles read the absolute values
// (the sign masks' half is not read); past in_features, 128 (x = 0), which meets zero weights.
// vpdpbusd then sums w * (x + 128) directly, and the packed VNNI bias takes the 128 * sum(w) off
// (see Sums). The correction is 0.
TLM_AVX2_TARGET inline int32_t prep_row_vnni(const int8_t* src, int32_t n, int32_t k4,
                                             int8_t* dst) {
  uint8_t* u = reinterpret_cast<uint8_t*>(dst + k4);
  tlm_avx2::flip_s8(src, n, u);
  for (int32_t i = n; i < k4; ++i) u[i] = 0x80;
  return 0;
}

// The 4 bytes x[k..k+3] in every 32-bit lane.
TLM_AVX2_TARGET inline __m256i quad(const int8_t* x) {
  int32_t v;
  memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

TLM_AVX2_TARGET inline __m256i ldw(const int8_t* w) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
}

// acc + per channel the products of 4 features with the block's 32 packed bytes at w (8 channels
// x 4 features): |x| * (w XOR m) = x * w - [x < 0] * |x| (see Sums).
namespace avx2 {
// The pair sums of vpmaddubsw lie in [-32768, 32512] and never saturate; vpmaddwd by 1 adds the
// pairs into int32.
TLM_AVX2_TARGET inline __m256i dot4(__m256i acc, __m256i m4, __m256i a4, __m256i w) {
  const __m256i p = _mm256_maddubs_epi16(a4, _mm256_xor_si256(w, m4));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
#define TLM_FC_TILE_TARGET TLM_AVX2_TARGET
#include "fully_connected_s8_tiles.inc"
#undef TLM_FC_TILE_TARGET
}  // namespace avx2

namespace vnni {
// a4: 4 bytes x + 128 (prep_row_vnni; m4 is not used, and its loads are dropped). vpdpbusd adds
// the 4 products w * (x + 128) of each lane into it, without saturation and modulo 2^32 (see
// Sums).
TLM_VNNI_TARGET inline __m256i dot4(__m256i acc, __m256i /*m4*/, __m256i a4, __m256i w) {
  return _mm256_dpbusd_epi32(acc, a4, w);
}
#define TLM_FC_TILE_TARGET TLM_VNNI_TARGET
#include "fully_connected_s8_tiles.inc"
#undef TLM_FC_TILE_TARGET
}  // namespace vnni

// The tiles fc_fast runs: one of the two sets above.
struct FcTiles {
  void (*t1x32)(const int8_t*, int32_t, const int8_t*, int32_t, __m256i*);
  void (*t1x8)(const int8_t*, int32_t, const int8_t*, size_t, int32_t, __m256i*);
  void (*t4x16)(const int8_t*, size_t, int32_t, const int8_t*, size_t, int32_t, __m256i*);
  void (*t4x8)(const int8_t*, size_t, int32_t, const int8_t*, size_t, int32_t, __m256i*);
};
constexpr FcTiles kAvx2Tiles{avx2::fc_1x32, avx2::fc_1x8, avx2::fc_4x16, avx2::fc_4x8};
constexpr FcTiles kVnniTiles{vnni::fc_1x32, vnni::fc_1x8, vnni::fc_4x16, vnni::fc_4x8};

// The output offset and the activation clamp less the offset, in vectors (made once: the int8
// output stores may alias the params, so the compiler would reload them after every store).
struct OutputClamp {
  __m128i offset;
  __m256d lo, hi;  // activation_min - output_offset, activation_max - output_offset
};

// clamp(round(double(acc) * scale) + output_offset) per lane (see the notes above); every scale
// exact (>= 0).
TLM_AVX2_TARGET inline __m128i requantize4(__m128i acc, __m256d scale, const OutputClamp& c) {
  __m256d x = _mm256_mul_pd(_mm256_cvtepi32_pd(acc), scale);
  x = _mm256_min_pd(_mm256_max_pd(x, c.lo), c.hi);
  // round() as trunc(x + copysign(h, x)), h = 0.5 - 2^-54 (see the notes above).
  const __m256d h = _mm256_or_pd(_mm256_set1_pd(0.49999999999999994),
                                 _mm256_and_pd(_mm256_set1_pd(-0.0), x));
  return _mm_add_epi32(_mm256_cvttpd_epi32(_mm256_add_pd(x, h)), c.offset);
}

struct FcFast {
  const tlm_fully_connected_ref_params* p;
  const int32_t* scales;  // the blob's, for the emulation (subnormal scales)
  const int32_t* bias;    // packed: [blocks * 8]
  const double* scale;    // packed: [blocks * 8], -1 where not exact
  OutputClamp clamp;
  int32_t out_n;
  bool exact;  // every scale of the call's blocks exact (none is -1)
};

// Block `blk` of one row: acc (bias not yet added) requantized into y[8 * blk ...], only the
// channels below out_features.
TLM_AVX2_TARGET inline void store_block(const FcFast& f, int32_t blk, __m256i acc, int8_t* y) {
  const int32_t o = 8 * blk, n = f.out_n - o < 8 ? f.out_n - o : 8;
  acc = _mm256_add_epi32(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(f.bias + o)));
  const __m256d s0 = _mm256_load_pd(f.scale + o), s1 = _mm256_load_pd(f.scale + o + 4);
  if (f.exact || _mm256_movemask_pd(_mm256_or_pd(s0, s1)) == 0) {  // every scale exact
    const __m128i lo = requantize4(_mm256_castsi256_si128(acc), s0, f.clamp);
    const __m128i hi = requantize4(_mm256_extracti128_si256(acc, 1), s1, f.clamp);
    // In [-128, 127]: the packs are exact.
    const __m128i v = _mm_packs_epi16(_mm_packs_epi32(lo, hi), _mm_setzero_si128());
    if (n == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(y + o), v);  // straight from the register
    } else {
      alignas(16) int8_t bytes[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(bytes), v);
      memcpy(y + o, bytes, size_t(n));
    }
    return;
  }
  // A subnormal scale in the block: the integer emulation, channel by channel.
  alignas(32) int32_t a[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(a), acc);
  for (int32_t r = 0; r < n; ++r) {
    uint64_t m;
    int32_t e;
    channel_scale(f.p, f.scales, o + r, &m, &e);
    int64_t out = tlm_detail::requantize_fp64(a[r], m, e) + f.p->base.output_offset;
    if (out < f.p->base.activation_min) out = f.p->base.activation_min;
    if (out > f.p->base.activation_max) out = f.p->base.activation_max;
    y[o + r] = static_cast<int8_t>(out);
  }
}

// ---- AVX-512 VNNI on 512-bit vectors: rows by a whole superblock
//
// On CPUs with VNNI, rows run by whole superblocks (4 blocks, 32 channels) on 512-bit vectors. A
// superblock's step (4 features) is 128 bytes: blocks 0 and 1 (channels 0-15, 4 weights per
// channel) and blocks 2 and 3 (channels 16-31), two 512-bit loads whose 16 lanes are 16 channels
// in order. Per row, two accumulators; per step, the row's 4 bytes x + 128 in every lane
// (prep_row_vnni) and one vpdpbusd per accumulator: the same sums as the 256-bit tiles (see
// Sums). Up to 8 rows share each weight load (16 accumulators of the 32 registers). Requantization
// as store_block, 8 lanes of doubles at a time, exact scales only (a block with a subnormal scale
// goes through store_block). The FC autoencoder on one core of this project's build machine (AMD
// EPYC Zen 4), best of 50-call batches: in chunks of 8 samples 1.8-1.9 us per sample against
// 2.7-2.8 with the 256-bit tiles, about a quarter of it the requantization; one sample 3.55 us
// against 3.7.
namespace zmm {

TLM_VNNI_TARGET inline __m512i quad(const int8_t* x) {
  int32_t v;
  memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

// R rows (x + 128 bytes at u, xstride apart) x the superblock at w (128 bytes per step); c[r][h]:
// channels 16h .. 16h + 15 of row r, without bias. The accumulators are named (an array of them
// had GCC copy each vpdpbusd result back into place, two extra instructions per multiply).
#define TLM_FC_ROW(r, c0, c1)                                           \
  if constexpr (R > r) {                                                \
    const __m512i a = quad(u + r * xstride + k);                        \
    c0 = _mm512_dpbusd_epi32(c0, a, w0);                                \
    c1 = _mm512_dpbusd_epi32(c1, a, w1);                                \
  }
template <int R>
TLM_VNNI_TARGET inline void tile(const int8_t* u, size_t xstride, const int8_t* w, int32_t steps,
                                 __m512i (&c)[R][2]) {
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  __m512i c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
  for (int32_t s = 0; s < steps; ++s, w += 128) {
    const size_t k = 4 * size_t(s);
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
    TLM_FC_ROW(0, c00, c01)
    TLM_FC_ROW(1, c10, c11)
    TLM_FC_ROW(2, c20, c21)
    TLM_FC_ROW(3, c30, c31)
    TLM_FC_ROW(4, c40, c41)
    TLM_FC_ROW(5, c50, c51)
    TLM_FC_ROW(6, c60, c61)
    TLM_FC_ROW(7, c70, c71)
  }
  const __m512i all[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                             {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
  for (int r = 0; r < R; ++r) c[r][0] = all[r][0], c[r][1] = all[r][1];
}
#undef TLM_FC_ROW

// One row: tile<1> with each accumulator split in two chains (even and odd steps), so that the
// vpdpbusd latency does not bound a pass that streams the weights (from L2 for a large layer,
// prefetched ahead as in the 256-bit fc_1x32).
template <>
TLM_VNNI_TARGET inline void tile<1>(const int8_t* u, size_t, const int8_t* w, int32_t steps,
                                    __m512i (&c)[1][2]) {
  const __m512i z = _mm512_setzero_si512();
  __m512i c0 = z, c1 = z, d0 = z, d1 = z;
  int32_t s = 0;
  for (; s + 2 <= steps; s += 2, w += 256, u += 8) {
    prefetch_step(w);
    prefetch_step(w + 128);
    const __m512i a = quad(u), b = quad(u + 4);
    c0 = _mm512_dpbusd_epi32(c0, a, _mm512_loadu_si512(w));
    c1 = _mm512_dpbusd_epi32(c1, a, _mm512_loadu_si512(w + 64));
    d0 = _mm512_dpbusd_epi32(d0, b, _mm512_loadu_si512(w + 128));
    d1 = _mm512_dpbusd_epi32(d1, b, _mm512_loadu_si512(w + 192));
  }
  if (s < steps) {
    const __m512i a = quad(u);
    c0 = _mm512_dpbusd_epi32(c0, a, _mm512_loadu_si512(w));
    c1 = _mm512_dpbusd_epi32(c1, a, _mm512_loadu_si512(w + 64));
  }
  c[0][0] = _mm512_add_epi32(c0, d0);
  c[0][1] = _mm512_add_epi32(c1, d1);
}

// The output clamp and offset as store_block's, in 512-bit vectors.
struct Clamp {
  __m512d lo, hi;
  __m512i half, sign, offset;  // half: 0.5 - 2^-54; sign: the sign bit of each double
};

// 8 lanes (bias added) times their exact scales, clamped and rounded as store_block's
// requantize4.
TLM_VNNI_TARGET inline __m256i requantize8(__m256i acc, const double* scale, const Clamp& z) {
  __m512d x = _mm512_mul_pd(_mm512_cvtepi32_pd(acc), _mm512_loadu_pd(scale));
  x = _mm512_min_pd(_mm512_max_pd(x, z.lo), z.hi);
  // copysign(h, x) = h | (sign bit & x): ternary logic 0xF8 is a | (b & c).
  const __m512d h = _mm512_castsi512_pd(
      _mm512_ternarylogic_epi64(z.half, z.sign, _mm512_castpd_si512(x), 0xF8));
  return _mm512_cvttpd_epi32(_mm512_add_pd(x, h));
}

// Channels o .. o + 15 of one row: acc (no bias) plus the packed bias, times the exact scales,
// clamped, rounded halves away from zero, plus the offset (store_block's steps, on 8 doubles at a
// time), stored below out_n.
TLM_VNNI_TARGET inline void store16(const FcFast& f, const Clamp& z, int32_t o, __m512i acc,
                                    int8_t* y) {
  acc = _mm512_add_epi32(acc, _mm512_loadu_si512(f.bias + o));
  const __m256i r0 = requantize8(_mm512_extracti64x4_epi64(acc, 0), f.scale + o, z);
  const __m256i r1 = requantize8(_mm512_extracti64x4_epi64(acc, 1), f.scale + o + 8, z);
  const __m512i v =
      _mm512_add_epi32(_mm512_inserti64x4(_mm512_castsi256_si512(r0), r1, 1), z.offset);
  const int32_t n = f.out_n - o;  // > 0
  // In [-128, 127] after the clamp: truncating each lane to its low byte is exact.
  _mm_mask_storeu_epi8(y + o, n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1),
                       _mm512_cvtepi32_epi8(v));
}

// Whether the 16 scales from o are all exact (none is -1).
TLM_VNNI_TARGET inline bool exact16(const FcFast& f, int32_t o) {
  const __m512d zero = _mm512_setzero_pd();
  return f.exact || (_mm512_cmplt_pd_mask(_mm512_loadu_pd(f.scale + o), zero) == 0 &&
                     _mm512_cmplt_pd_mask(_mm512_loadu_pd(f.scale + o + 8), zero) == 0);
}

// Rows [r0, r0 + R) of the chunk by the superblock of blocks blk .. blk + 3 (all below blocks, so
// every one has a channel below out_n).
template <int R>
TLM_VNNI_TARGET void rows(const FcFast& f, const Clamp& z, int32_t blk, const int8_t* xs,
                          size_t xstride, int32_t k4, const int8_t* wb, int32_t steps, int32_t r0,
                          int8_t* const* out_rows) {
  __m512i c[R][2];
  tile<R>(xs + size_t(r0) * xstride + k4, xstride, wb, steps, c);
  const bool exact[2] = {exact16(f, 8 * blk), exact16(f, 8 * blk + 16)};
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) {
      int8_t* y = out_rows[r0 + r];
      if (exact[h]) {
        store16(f, z, 8 * blk + 16 * h, c[r][h], y);
      } else {  // a subnormal scale: store_block, block by block
        store_block(f, blk + 2 * h, _mm512_extracti64x4_epi64(c[r][h], 0), y);
        store_block(f, blk + 2 * h + 1, _mm512_extracti64x4_epi64(c[r][h], 1), y);
      }
    }
}

// The chunk's n rows by the superblock of blocks blk .. blk + 3: 8 rows at a time, then 4, 2, 1.
TLM_VNNI_TARGET __attribute__((noinline)) void superblock(const FcFast& f, int32_t blk,
                                                          const int8_t* xs, size_t xstride,
                                                          int32_t k4, const int8_t* wb,
                                                          int32_t steps, int32_t n,
                                                          int8_t* const* out_rows) {
  Clamp z;
  z.lo = _mm512_set1_pd(f.p->base.activation_min - f.p->base.output_offset);
  z.hi = _mm512_set1_pd(f.p->base.activation_max - f.p->base.output_offset);
  z.half = _mm512_castpd_si512(_mm512_set1_pd(0.49999999999999994));
  z.sign = _mm512_castpd_si512(_mm512_set1_pd(-0.0));
  z.offset = _mm512_set1_epi32(f.p->base.output_offset);
  int32_t r = 0;
  for (; r + 8 <= n; r += 8) rows<8>(f, z, blk, xs, xstride, k4, wb, steps, r, out_rows);
  if (r + 4 <= n) rows<4>(f, z, blk, xs, xstride, k4, wb, steps, r, out_rows), r += 4;
  if (r + 2 <= n) rows<2>(f, z, blk, xs, xstride, k4, wb, steps, r, out_rows), r += 2;
  if (r < n) rows<1>(f, z, blk, xs, xstride, k4, wb, steps, r, out_rows);
}

}  // namespace zmm

TLM_AVX2_TARGET void fc_fast(const tlm_fully_connected_ref_params* p, const tlm_fc_dims* d,
                             const int8_t* input, const void* packed, const int32_t* scales,
                             int32_t samples, size_t sample_stride, int32_t block_begin,
                             int32_t block_end, void* scratch, int8_t* output) {
  const bool vnni = tlm_host_vnni();
  const FcTiles& tiles = vnni ? kVnniTiles : kAvx2Tiles;
  const int32_t in_n = d->in_features, out_n = d->out_features, k4 = fc_depth4(d);
  const int32_t steps = k4 / 4, blocks = fc_blocks(d);
  const size_t bstride = fc_block_bytes(d);
  const int8_t* w = static_cast<const int8_t*>(packed);
  FcFast f;
  f.p = p;
  f.scales = scales;
  const int32_t* bias_avx2 = reinterpret_cast<const int32_t*>(w + size_t(blocks) * bstride);
  f.scale = reinterpret_cast<const double*>(bias_avx2 + 8 * blocks);
  f.bias = vnni ? reinterpret_cast<const int32_t*>(f.scale + 8 * blocks) : bias_avx2;
  f.clamp = OutputClamp{_mm_set1_epi32(p->base.output_offset),
                        _mm256_set1_pd(double(p->base.activation_min - p->base.output_offset)),
                        _mm256_set1_pd(double(p->base.activation_max - p->base.output_offset))};
  f.out_n = out_n;
  __m256d signs = _mm256_setzero_pd();  // the sign bits of the call's scales (-1: not exact)
  for (int32_t o = 8 * block_begin; o < 8 * block_end; o += 4)
    signs = _mm256_or_pd(signs, _mm256_load_pd(f.scale + o));
  f.exact = _mm256_movemask_pd(signs) == 0;
  int8_t* xs = reinterpret_cast<int8_t*>(
      (reinterpret_cast<uintptr_t>(scratch) + 31) & ~uintptr_t{31});
  const size_t xstride = 2 * size_t(k4);
  const int32_t rows = samples * d->batches;
  const int8_t* in_rows[kFcChunk];
  int8_t* out_rows[kFcChunk];
  alignas(32) __m256i acc[8];
  __m256i corr[kFcChunk];  // per row: its correction c in every lane (see Sums)
  for (int32_t j0 = 0; j0 < rows; j0 += kFcChunk) {
    const int32_t n = rows - j0 < kFcChunk ? rows - j0 : kFcChunk;
    for (int32_t r = 0; r < n; ++r) {
      const int32_t s = (j0 + r) / d->batches, b = (j0 + r) % d->batches;
      in_rows[r] = input + s * sample_stride + size_t(b) * in_n;
      out_rows[r] = output + s * sample_stride + size_t(b) * out_n;
      int8_t* x = xs + size_t(r) * xstride;
      corr[r] = _mm256_set1_epi32(vnni ? prep_row_vnni(in_rows[r], in_n, k4, x)
                                       : prep_row(in_rows[r], in_n, k4, x));
    }
    for (int32_t sb = block_begin / 4; 4 * sb < block_end; ++sb) {
      const int32_t lo = block_begin > 4 * sb ? block_begin : 4 * sb;
      const int32_t hi = block_end < 4 * sb + 4 ? block_end : 4 * sb + 4;
      const size_t step = size_t(fc_group_blocks(blocks, 4 * sb)) * 32;  // bytes per 4 features
      const int8_t* wb = w + size_t(4 * sb) * bstride + size_t(lo - 4 * sb) * 32;
      if (vnni && lo == 4 * sb && hi == 4 * sb + 4) {  // see zmm
        zmm::superblock(f, lo, xs, xstride, k4, wb, steps, n, out_rows);
        continue;
      }
      int32_t r = 0;
      for (; r + 4 <= n; r += 4) {  // tiles of 4 rows
        const int8_t* x = xs + size_t(r) * xstride;
        int32_t blk = lo;
        for (; blk + 2 <= hi; blk += 2) {
          tiles.t4x16(x, xstride, k4, wb + size_t(blk - lo) * 32, step, steps, acc);
          for (int32_t i = 0; i < 4; ++i) {
            store_block(f, blk, _mm256_add_epi32(acc[2 * i], corr[r + i]), out_rows[r + i]);
            store_block(f, blk + 1, _mm256_add_epi32(acc[2 * i + 1], corr[r + i]), out_rows[r + i]);
          }
        }
        if (blk < hi) {
          tiles.t4x8(x, xstride, k4, wb + size_t(blk - lo) * 32, step, steps, acc);
          for (int32_t i = 0; i < 4; ++i)
            store_block(f, blk, _mm256_add_epi32(acc[i], corr[r + i]), out_rows[r + i]);
        }
      }
      for (; r < n; ++r) {  // the rest, one row at a time
        const int8_t* x = xs + size_t(r) * xstride;
        if (hi - lo == 4) {
          tiles.t1x32(x, k4, wb, steps, acc);
          for (int32_t i = 0; i < 4; ++i)
            store_block(f, lo + i, _mm256_add_epi32(acc[i], corr[r]), out_rows[r]);
        } else {
          for (int32_t blk = lo; blk < hi; ++blk) {
            tiles.t1x8(x, k4, wb + size_t(blk - lo) * 32, step, steps, acc);
            store_block(f, blk, _mm256_add_epi32(acc[0], corr[r]), out_rows[r]);
          }
        }
      }
    }
  }
}

}  // namespace

size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims* d) {
  return 32 + size_t(kFcChunk) * 2 * static_cast<size_t>(fc_depth4(d));
}

size_t tlm_fully_connected_ref_s8_fast_packed_bytes(const tlm_fc_dims* d) {
  // Weights, then per (padded) channel the int32 bias, the double scale and the int32 bias of the
  // VNNI tiles: all multiples of 32 bytes.
  return size_t(fc_blocks(d)) * (fc_block_bytes(d) + 8 * 4 + 8 * 8 + 8 * 4);
}

int32_t tlm_fully_connected_ref_s8_fast_blocks(const tlm_fc_dims* d) { return fc_blocks(d); }

void tlm_fully_connected_ref_s8_fast_pack(const tlm_fully_connected_ref_params* p,
                                          const tlm_fc_dims* d, const int8_t* weights,
                                          const int32_t* bias, const int32_t* scales,
                                          void* packed) {
  const int32_t in_n = d->in_features, out_n = d->out_features, k4 = fc_depth4(d);
  const int32_t blocks = fc_blocks(d);
  const size_t bstride = fc_block_bytes(d);
  int8_t* w = static_cast<int8_t*>(packed);
  for (int32_t blk = 0; blk < blocks; ++blk) {
    // The groups before blk's are full: its group starts 4 blocks' bytes per group in.
    int8_t* group = w + size_t(blk / 4 * 4) * bstride;
    const size_t step = size_t(fc_group_blocks(blocks, blk)) * 32;
    for (int32_t k = 0; k < k4; k += 4)
      for (int32_t j = 0; j < 8; ++j)
        for (int32_t i = 0; i < 4; ++i) {
          const int32_t o = 8 * blk + j, f = k + i;
          group[size_t(k / 4) * step + size_t(blk % 4) * 32 + 4 * j + i] =
              o < out_n && f < in_n ? weights[size_t(o) * in_n + f] : 0;
        }
  }
  int32_t* b = reinterpret_cast<int32_t*>(w + size_t(blocks) * bstride);
  double* s = reinterpret_cast<double*>(b + 8 * blocks);
  int32_t* bv = reinterpret_cast<int32_t*>(s + 8 * blocks);
  for (int32_t o = 0; o < 8 * blocks; ++o) {
    int64_t sum = 0;  // |.| <= 32768 * 127
    for (int32_t f = 0; o < out_n && f < in_n; ++f) sum += weights[size_t(o) * in_n + f];
    // bias' = bias + input_offset * sum(w), an int32 (see Sums); wraps nothing.
    b[o] = o < out_n ? static_cast<int32_t>((bias ? bias[o] : 0) + p->base.input_offset * sum) : 0;
    // The VNNI tiles sum w * (x + 128): bias' - 128 * sum(w), modulo 2^32 (see Sums).
    bv[o] = static_cast<int32_t>(static_cast<uint32_t>(int64_t{b[o]} - 128 * (o < out_n ? sum : 0)));
    uint64_t m = 0;
    int32_t e = 0;
    if (o < out_n) channel_scale(p, scales, o, &m, &e);
    s[o] = exact_scale(m, e);
  }
}

bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params* p,
                                     const tlm_fc_dims* d, const int8_t* input,
                                     const void* packed, const int32_t* scales, int32_t samples,
                                     size_t sample_stride, int32_t block_begin, int32_t block_end,
                                     void* scratch, int8_t* output) {
  if (!tlm_host_avx2()) return false;
  if (block_begin >= block_end || samples < 1) return true;
  fc_fast(p, d, input, packed, scales, samples, sample_stride, block_begin, block_end, scratch,
          output);
  return true;
}

#else  // no fast path in this build

size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims*) { return 0; }
size_t tlm_fully_connected_ref_s8_fast_packed_bytes(const tlm_fc_dims*) { return 0; }
int32_t tlm_fully_connected_ref_s8_fast_blocks(const tlm_fc_dims*) { return 0; }
void tlm_fully_connected_ref_s8_fast_pack(const tlm_fully_connected_ref_params*,
                                          const tlm_fc_dims*, const int8_t*, const int32_t*,
                                          const int32_t*, void*) {}
bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params*, const tlm_fc_dims*,
                                     const int8_t*, const void*, const int32_t*, int32_t, size_t,
                                     int32_t, int32_t, void*, int8_t*) {
  return false;
}

#endif  // TLM_HOST_AVX2
