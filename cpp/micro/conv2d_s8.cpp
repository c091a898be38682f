// Follows TFLite's reference_integer_ops::ConvPerChannel
// (tensorflow/lite/kernels/internal/reference/integer_ops/conv.h), the kernel conv.cc runs for
// int8 under kReference: for each output position and channel, an int32 sum over the filter
// window of filter * (input + input_offset), skipping window positions outside the input ("zero
// padding by omitting"), then + bias, MultiplyByQuantizedMultiplier with the channel's multiplier
// and shift (double rounding, requantize.h), + output_offset, clamp to the activation range.
// Integer sums are exact, so the loop order does not matter as long as nothing overflows.
//
// Accumulator bound. input + input_offset lies in [-255, 255] and a filter tap in [-128, 127],
// so each product has |p| <= 32640 (TLM_PRODUCT_BOUND). At most filter_h * filter_w * input_c <=
// 32768 products are summed: |sum| <= 1,069,547,520 < 2^30; the check admits a bias only if
// |bias| <= INT32_MAX - depth * 32640, so sum + bias never leaves int32. (TFLite only notes the
// 2^16-products limit in a TODO; a model within these limits gets TFLite's exact result.)
#include "conv2d_s8.h"
#include "host_simd.h"

#include "requantize.h"

tlm_status tlm_conv2d_s8_check(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                               const int32_t* multipliers, const int32_t* shifts,
                               const int32_t* bias) {
  if (d->batches < 1 || d->input_c < 1 || d->output_c < 1) return TLM_ERR_SHAPE;
  tlm_status s;
  if ((s = tlm_detail::check_window(d->input_h, d->output_h, d->filter_h, p->stride_h,
                                    p->dilation_h, p->pad_top)) != TLM_OK ||
      (s = tlm_detail::check_window(d->input_w, d->output_w, d->filter_w, p->stride_w,
                                    p->dilation_w, p->pad_left)) != TLM_OK)
    return s;
  const int64_t depth = int64_t{d->filter_h} * d->filter_w * d->input_c;
  return tlm_detail::check_conv_common(p, depth, d->output_c, multipliers, shifts, bias);
}

namespace {

using tlm_detail::conv2d_requantize;


}  // namespace

TLM_HOST_CLONES void tlm_conv2d_s8(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                   const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                   const int8_t* filter, const int32_t* bias, int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w;
  const int32_t out_c = d->output_c;
  const int32_t input_offset = p->input_offset;
  const int32_t filter_c = f_h * f_w * in_c;  // bytes of one output channel's filter
  const bool dense_window = p->dilation_h == 1 && p->dilation_w == 1;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      // Without dilation, the window's taps inside the input are rows [y0, y1) and columns
      // [x0, x1) of the filter: each row is one contiguous run of (x1 - x0) * in_c bytes in both
      // the input (NHWC) and the filter (OHWI). Same products, same int32 sums (exact whatever
      // the order), fewer loop levels; four output channels share each input load.
      const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
      const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
      for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
        const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
        int8_t* out = output + ((b * d->output_h + out_y) * d->output_w + out_x) * out_c;
        int32_t o = 0;
        if (dense_window) {
          const int32_t run = (x1 - x0) * in_c;
          for (; o + 4 <= out_c; o += 4) {
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int32_t f_y = y0; f_y < y1; ++f_y) {
              const int8_t* x =
                  input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + x0) * in_c;
              const int8_t* w0 = filter + ((o * f_h + f_y) * f_w + x0) * in_c;
              const int8_t *w1 = w0 + filter_c, *w2 = w1 + filter_c, *w3 = w2 + filter_c;
              for (int32_t i = 0; i < run; ++i) {
                const int32_t v = x[i] + input_offset;
                a0 += w0[i] * v;
                a1 += w1[i] * v;
                a2 += w2[i] * v;
                a3 += w3[i] * v;
              }
            }
            const int32_t acc[4] = {a0, a1, a2, a3};
            for (int32_t k = 0; k < 4; ++k)
              out[o + k] = conv2d_requantize(p, acc[k] + (bias ? bias[o + k] : 0),
                                             multipliers[o + k], shifts[o + k]);
          }
          for (; o < out_c; ++o) {
            int32_t acc = 0;
            for (int32_t f_y = y0; f_y < y1; ++f_y) {
              const int8_t* x =
                  input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + x0) * in_c;
              const int8_t* w = filter + ((o * f_h + f_y) * f_w + x0) * in_c;
              for (int32_t i = 0; i < run; ++i) acc += w[i] * (x[i] + input_offset);
            }
            out[o] = conv2d_requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
          }
          continue;
        }
        for (; o < out_c; ++o) {  // dilated windows: tap by tap
          int32_t acc = 0;
          for (int32_t f_y = 0; f_y < f_h; ++f_y) {
            const int32_t in_y = in_y_origin + p->dilation_h * f_y;
            if (in_y < 0 || in_y >= in_h) continue;  // zero padding: the position is omitted
            for (int32_t f_x = 0; f_x < f_w; ++f_x) {
              const int32_t in_x = in_x_origin + p->dilation_w * f_x;
              if (in_x < 0 || in_x >= in_w) continue;
              const int8_t* x = input + ((b * in_h + in_y) * in_w + in_x) * in_c;
              const int8_t* w = filter + ((o * f_h + f_y) * f_w + f_x) * in_c;
              for (int32_t i = 0; i < in_c; ++i) acc += w[i] * (x[i] + input_offset);
            }
          }
          out[o] = conv2d_requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host fast path (host_simd.h). The same sums as above, arranged as a GEMM read in place from a
// padded int16 copy of the input (no im2col). A band of output rows gets the input rows its
// windows cover widened once into `scratch` as (input + input_offset), with zero columns and rows
// where the windows reach outside the input (a product of 0 is the omitted position). In that
// copy the window of an output pixel is filter_h runs of filter_w * input_c consecutive int16,
// one per filter row, `stride` pixels apart from the next pixel's. Each run is read in pairs;
// when its length is odd, the last pair takes one int16 past the run, which meets a zero weight.
// The filter is packed once (tlm_conv2d_s8_fast_pack) as int16 [filter_h][run2 / 2][out_c8][2]
// (run2: the run length rounded up to even): the taps k, k + 1 of channel o side by side, so that
// one _mm256_madd_epi16 of a broadcast input pair (x_k, x_k+1) with 8 channels' pairs adds 2
// exact products to each of 8 channel lanes (|pair| <= 2 * 32640, and every partial sum is a sum
// of a subset of the window's products, so the accumulator bound above holds for it too). The
// accumulators hold whole channels, with no horizontal sums; requantize_avx2.h requantizes 8
// channels at once, lane by lane the arithmetic of requantize.h. Channels past out_c are zero in
// the packing and never stored.
#if TLM_HOST_AVX2
#include <immintrin.h>
#include <string.h>

#include <type_traits>

#include "requantize_avx2.h"

namespace {

constexpr int32_t kTileP = 6;  // output pixels per tile (x 16 channels: 12 accumulators)
// The padded input rows of one band: at most this many bytes, unless filter_h rows need more.
constexpr size_t kBandBytes = 24 * 1024;
constexpr int32_t kSlack = 16;  // int16 after the band, read by the last pixel's odd run

inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

inline int32_t channels8(int32_t out_c) { return (out_c + 7) & ~7; }
// A window run (one filter row) in int16, rounded up to even.
inline int32_t run2(const tlm_conv_dims* d) { return (d->filter_w * d->input_c + 1) & ~1; }
// The same rounded up to a multiple of 4 (VNNI).
inline int32_t run4(const tlm_conv_dims* d) { return (d->filter_w * d->input_c + 3) & ~3; }
// The padded row's width in pixels that the scratch is sized for: the input and a filter width
// of zeros on each side (TFLite pads less than a filter on each side; a wider padding makes
// tlm_conv2d_s8_fast return false).
inline int32_t padded_w_max(const tlm_conv_dims* d) { return d->input_w + 2 * d->filter_w; }
inline size_t row_bytes(const tlm_conv_dims* d) {
  return size_t(padded_w_max(d)) * size_t(d->input_c) * 2;
}
// Padded rows the scratch holds: kBandBytes' worth, at least one window's filter_h.
inline int64_t band_rows(const tlm_conv_dims* d) {
  const int64_t rows = static_cast<int64_t>(kBandBytes / row_bytes(d));
  return rows > d->filter_h ? rows : d->filter_h;
}


// clamp(y0, y1) stored as 16 int8 (channels of y0, then of y1). Saturating to int16 keeps a value
// beyond [-128, 127] beyond it on the same side, so clamping the int16 gives the int32 result.
TLM_AVX2_TARGET inline void store_s8x16(int8_t* out, __m256i y0, __m256i y1, __m256i lo,
                                        __m256i hi) {
  // packs_epi32 interleaves the 128-bit halves (y0 0-3, y1 0-3, y0 4-7, y1 4-7): reorder them.
  __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi32(y0, y1), 0xD8);
  v = _mm256_min_epi16(_mm256_max_epi16(v, lo), hi);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_packs_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}

// clamp(y0) stored as 8 int8 at out0, clamp(y1) at out1 (as store_s8x16, two pixels).
TLM_AVX2_TARGET inline void store_s8x8_pair(int8_t* out0, int8_t* out1, __m256i y0, __m256i y1,
                                            __m256i lo, __m256i hi) {
  __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi32(y0, y1), 0xD8);
  v = _mm256_min_epi16(_mm256_max_epi16(v, lo), hi);
  const __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out0), b);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out1), _mm_unpackhi_epi64(b, b));
}

// Requantizes 8 channel lanes [o, o + n) of one pixel and stores them (n < 8: the last block).
TLM_AVX2_TARGET inline void store_channels(const tlm_conv2d_params* p, __m256i acc,
                                           const int32_t* multipliers, const int32_t* shifts,
                                           const int32_t* bias, int32_t o, int32_t n,
                                           int8_t* out) {
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  for (int32_t j = 0; j < n; ++j)
    out[o + j] = tlm_detail::conv2d_requantize(p, lanes[j] + (bias ? bias[o + j] : 0),
                                               multipliers[o + j], shifts[o + j]);
}

// Where a tile reads: pixel q's window run for filter row f_y starts at base[q] + f_y * line.
// T: int16_t (AVX2 madd: the band holds input + input_offset) or uint8_t (VNNI: input + 128).
template <typename T>
struct Runs {
  const T* base[kTileP];
  int32_t rows;   // filter_h
  int64_t line;   // elements between padded rows
  int32_t pairs;  // int16: run2 / 2 pairs; uint8: run4 / 4 quads
};

TLM_AVX2_TARGET inline __m256i broadcast_pair(const int16_t* x) {
  int32_t pair;
  memcpy(&pair, x, 4);
  return _mm256_set1_epi32(pair);
}

// The GEMM of a full tile (kTileP pixels) with 16 channels from o: 12 accumulators, named so that
// the compiler keeps them in registers (as an array they were spilled around every madd).
#define TLM_MADD2(acc0, acc1, x)                                            \
  {                                                                         \
    const __m256i a = broadcast_pair(x);                                    \
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a, w0));                \
    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a, w1));                \
  }
TLM_AVX2_TARGET __attribute__((noinline)) void gemm_6x16(const Runs<int16_t>& t,
                                                         const int16_t* packed, int32_t c8,
                                                         int32_t o, __m256i* acc) {
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
  __m256i a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  const int16_t* w = packed + 2 * o;
  for (int32_t f_y = 0; f_y < t.rows; ++f_y) {
    const int64_t at = f_y * t.line;
    const int16_t *x0 = t.base[0] + at, *x1 = t.base[1] + at, *x2 = t.base[2] + at;
    const int16_t *x3 = t.base[3] + at, *x4 = t.base[4] + at, *x5 = t.base[5] + at;
    for (int32_t k = 0; k < 2 * t.pairs; k += 2, w += 2 * c8) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 16));
      TLM_MADD2(a00, a01, x0 + k)
      TLM_MADD2(a10, a11, x1 + k)
      TLM_MADD2(a20, a21, x2 + k)
      TLM_MADD2(a30, a31, x3 + k)
      TLM_MADD2(a40, a41, x4 + k)
      TLM_MADD2(a50, a51, x5 + k)
    }
  }
  acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11, acc[4] = a20, acc[5] = a21;
  acc[6] = a30, acc[7] = a31, acc[8] = a40, acc[9] = a41, acc[10] = a50, acc[11] = a51;
}
#undef TLM_MADD2

// The same for 8 channels from o: 6 accumulators.
TLM_AVX2_TARGET __attribute__((noinline)) void gemm_6x8(const Runs<int16_t>& t,
                                                        const int16_t* packed, int32_t c8,
                                                        int32_t o, __m256i* acc) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  const int16_t* w = packed + 2 * o;
  for (int32_t f_y = 0; f_y < t.rows; ++f_y) {
    const int64_t at = f_y * t.line;
    const int16_t *x0 = t.base[0] + at, *x1 = t.base[1] + at, *x2 = t.base[2] + at;
    const int16_t *x3 = t.base[3] + at, *x4 = t.base[4] + at, *x5 = t.base[5] + at;
    for (int32_t k = 0; k < 2 * t.pairs; k += 2, w += 2 * c8) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(broadcast_pair(x0 + k), w0));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(broadcast_pair(x1 + k), w0));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(broadcast_pair(x2 + k), w0));
      a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(broadcast_pair(x3 + k), w0));
      a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(broadcast_pair(x4 + k), w0));
      a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(broadcast_pair(x5 + k), w0));
    }
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3, acc[4] = a4, acc[5] = a5;
}

// AVX-512 VNNI (host_simd.h): the same GEMM on a band of unsigned bytes u = input + 128 (padding:
// u = 128 - input_offset, the input's zero point + 128) with the filter packed as int8
// [filter_h][run4 / 4][c8][4] (run4: the run rounded up to a multiple of 4). vpdpbusd adds the 4
// products u_k * w_k .. u_k+3 * w_k+3 into each channel lane: sum(w * u) over the window, and
// since u - (128 - input_offset) is input + input_offset at an input position and 0 at a padded
// one, sum(w * (input + input_offset)) = sum(w * u) - (128 - input_offset) * sum(w). The
// accumulators start at that correction (`init`, per channel). vpdpbusd and the int32 adds wrap
// modulo 2^32 and the exact sum lies inside int32 (the check), so the totals are exact whatever
// the partial sums. Runs' odd bytes past run4's end meet zero weights. (Written out beside
// gemm_6x16 rather than as a template of it: the target attribute that allows vpdpbusd cannot
// vary with a template argument.)
TLM_VNNI_TARGET inline __m256i broadcast_quad(const uint8_t* x) {
  int32_t quad;
  memcpy(&quad, x, 4);
  return _mm256_set1_epi32(quad);
}

#define TLM_DOT4X2(acc0, acc1, x)                     \
  {                                                   \
    const __m256i a = broadcast_quad(x);              \
    acc0 = _mm256_dpbusd_epi32(acc0, a, w0);          \
    acc1 = _mm256_dpbusd_epi32(acc1, a, w1);          \
  }
TLM_VNNI_TARGET __attribute__((noinline)) void gemm_6x16_vnni(const Runs<uint8_t>& t,
                                                              const int8_t* packed, int32_t c8,
                                                              int32_t o, const __m256i* init,
                                                              __m256i* acc) {
  __m256i a00 = init[0], a01 = init[1], a10 = a00, a11 = a01, a20 = a00, a21 = a01;
  __m256i a30 = a00, a31 = a01, a40 = a00, a41 = a01, a50 = a00, a51 = a01;
  const int8_t* w = packed + 4 * o;
  for (int32_t f_y = 0; f_y < t.rows; ++f_y) {
    const int64_t at = f_y * t.line;
    const uint8_t *x0 = t.base[0] + at, *x1 = t.base[1] + at, *x2 = t.base[2] + at;
    const uint8_t *x3 = t.base[3] + at, *x4 = t.base[4] + at, *x5 = t.base[5] + at;
    for (int32_t k = 0; k < 4 * t.pairs; k += 4, w += 4 * c8) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
      TLM_DOT4X2(a00, a01, x0 + k)
      TLM_DOT4X2(a10, a11, x1 + k)
      TLM_DOT4X2(a20, a21, x2 + k)
      TLM_DOT4X2(a30, a31, x3 + k)
      TLM_DOT4X2(a40, a41, x4 + k)
      TLM_DOT4X2(a50, a51, x5 + k)
    }
  }
  acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11, acc[4] = a20, acc[5] = a21;
  acc[6] = a30, acc[7] = a31, acc[8] = a40, acc[9] = a41, acc[10] = a50, acc[11] = a51;
}
#undef TLM_DOT4X2

TLM_VNNI_TARGET __attribute__((noinline)) void gemm_6x8_vnni(const Runs<uint8_t>& t,
                                                             const int8_t* packed, int32_t c8,
                                                             int32_t o, const __m256i* init,
                                                             __m256i* acc) {
  __m256i a0 = init[0], a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  const int8_t* w = packed + 4 * o;
  for (int32_t f_y = 0; f_y < t.rows; ++f_y) {
    const int64_t at = f_y * t.line;
    const uint8_t *x0 = t.base[0] + at, *x1 = t.base[1] + at, *x2 = t.base[2] + at;
    const uint8_t *x3 = t.base[3] + at, *x4 = t.base[4] + at, *x5 = t.base[5] + at;
    for (int32_t k = 0; k < 4 * t.pairs; k += 4, w += 4 * c8) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      a0 = _mm256_dpbusd_epi32(a0, broadcast_quad(x0 + k), w0);
      a1 = _mm256_dpbusd_epi32(a1, broadcast_quad(x1 + k), w0);
      a2 = _mm256_dpbusd_epi32(a2, broadcast_quad(x2 + k), w0);
      a3 = _mm256_dpbusd_epi32(a3, broadcast_quad(x3 + k), w0);
      a4 = _mm256_dpbusd_epi32(a4, broadcast_quad(x4 + k), w0);
      a5 = _mm256_dpbusd_epi32(a5, broadcast_quad(x5 + k), w0);
    }
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3, acc[4] = a4, acc[5] = a5;
}

// Output rows [r0, r1) of one image (batch b): their input rows widened and padded into `band`
// (rows of `pw` pixels), then the GEMM tiles.
// Vnni: the band holds uint8 and packed the VNNI layout (see gemm_6x16_vnni), with wsum the
// filter's sum per channel; else int16 and the madd layout.
template <bool Vnni>
TLM_AVX2_TARGET void conv_band(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                               const int32_t* multipliers, const int32_t* shifts,
                               const int8_t* input, const void* packed, const int32_t* wsum,
                               const int32_t* bias, int32_t b, int32_t r0, int32_t r1, int32_t pw,
                               void* band_bytes, int8_t* output) {
  using T = typename std::conditional<Vnni, uint8_t, int16_t>::type;
  T* band = static_cast<T*>(band_bytes);
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t out_w = d->output_w, out_c = d->output_c, c8 = channels8(out_c);
  const int64_t line = int64_t{pw} * in_c;
  // Padded row i holds input row y_top + i; its pixel j is input column j - pad_left.
  const int32_t y_top = r0 * p->stride_h - p->pad_top;
  const int32_t rows = (r1 - 1 - r0) * p->stride_h + d->filter_h;
  const int32_t left = p->pad_left;
  const int32_t right = pw - left - in_w;  // >= 0: checked by the caller
  // Padding: int16 0 (input + input_offset where the input is its zero point), or uint8 the zero
  // point + 128 = 128 - input_offset, in [0, 255].
  const int pad = Vnni ? 128 - p->input_offset : 0;
  for (int32_t i = 0; i < rows; ++i) {
    T* row = band + i * line;
    const int32_t y = y_top + i;
    if (y < 0 || y >= in_h) {
      memset(row, pad, sizeof(T) * size_t(line));
      continue;
    }
    memset(row, pad, sizeof(T) * size_t(left) * in_c);
    const int8_t* src = input + ((int64_t{b} * in_h + y) * in_w) * in_c;
    if constexpr (Vnni)
      tlm_avx2::flip_s8(src, in_w * in_c, row + int64_t{left} * in_c);
    else
      tlm_avx2::widen_s8(src, in_w * in_c, p->input_offset, row + int64_t{left} * in_c);
    memset(row + int64_t{left + in_w} * in_c, pad, sizeof(T) * size_t(right) * in_c);
  }
  memset(band + rows * line, pad, sizeof(T) * kSlack);

  Runs<T> t;
  t.rows = d->filter_h;
  t.line = line;
  t.pairs = Vnni ? run4(d) / 4 : run2(d) / 2;
  // VNNI: the accumulators start at -(128 - input_offset) * sum(w) (see gemm_6x16_vnni).
  const __m256i zero_point = _mm256_set1_epi32(128 - p->input_offset);
  const int64_t q_end = int64_t{r1 - r0} * out_w;
  int8_t* out_band = output + (int64_t{b} * d->output_h + r0) * out_w * out_c;
  const tlm_avx2::Clamp8 clamp =
      tlm_avx2::clamp8(p->output_offset, p->activation_min, p->activation_max);
  const __m256i lo32 = _mm256_set1_epi32(p->activation_min);
  const __m256i hi32 = _mm256_set1_epi32(p->activation_max);
  const __m256i lo16 = _mm256_set1_epi16(static_cast<int16_t>(p->activation_min));
  const __m256i hi16 = _mm256_set1_epi16(static_cast<int16_t>(p->activation_max));
  // |sum| of a window: (x + input_offset) in [-255, 255] times weights in [-128, 127].
  const int64_t bound = int64_t{32640} * d->filter_h * d->filter_w * in_c;
  // Channel blocks outer, so that their requantization constants are made once per band.
  for (int32_t o = 0; o < c8; o += 16) {
    const int nv = c8 - o >= 16 ? 2 : 1;
    tlm_avx2::Requant8 rq[2];
    tlm_avx2::FastRequant fq[2];
    __m256i bias8[2];
    bool whole[2], fast[2] = {false, false};
    for (int v = 0; v < nv; ++v) {
      const int32_t ov = o + 8 * v;
      whole[v] = ov + 8 <= out_c;  // else the last block, of out_c % 8 channels
      if (!whole[v]) continue;
      const __m256i multiplier =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(multipliers + ov));
      const __m256i shift = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shifts + ov));
      bias8[v] = bias ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + ov))
                      : _mm256_setzero_si256();
      // The bias and output offset folded into the requantization where its bounds hold
      // (requantize_avx2.h), else the general one.
      fast[v] = tlm_avx2::fast_ok(shift, bias8[v], bound);
      if (fast[v])
        fq[v] = tlm_avx2::fast_requant(multiplier, shift, bias8[v], p->output_offset);
      else
        rq[v] = tlm_avx2::requant8(multiplier, shift);
    }
    const bool fast16 = nv == 2 && fast[0] && fast[1];  // then whole too
    __m256i init[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    if (Vnni)
      for (int v = 0; v < nv; ++v)
        init[v] = _mm256_sub_epi32(
            init[v], _mm256_mullo_epi32(zero_point, _mm256_load_si256(reinterpret_cast<const __m256i*>(
                                                        wsum + o + 8 * v))));
    // The next pixel's window: column ox of the output row whose windows start at `row`.
    const int64_t step_x = int64_t{p->stride_w} * in_c, step_y = int64_t{p->stride_h} * line;
    const T* row = band;
    const T* at = band;
    int32_t ox = 0;
    for (int64_t q0 = 0; q0 < q_end; q0 += kTileP) {
      // A last tile of fewer pixels repeats its last one (computed, not stored).
      const int32_t np = q_end - q0 < kTileP ? static_cast<int32_t>(q_end - q0) : kTileP;
      for (int32_t j = 0; j < np; ++j) {
        t.base[j] = at;
        if (++ox == out_w) {
          ox = 0;
          row += step_y;
          at = row;
        } else {
          at += step_x;
        }
      }
      for (int32_t j = np; j < kTileP; ++j) t.base[j] = t.base[np - 1];
      alignas(32) __m256i acc[kTileP * 2];
      if constexpr (Vnni) {
        if (nv == 2)
          gemm_6x16_vnni(t, static_cast<const int8_t*>(packed), c8, o, init, acc);
        else
          gemm_6x8_vnni(t, static_cast<const int8_t*>(packed), c8, o, init, acc);
      } else if (nv == 2) {
        gemm_6x16(t, static_cast<const int16_t*>(packed), c8, o, acc);
      } else {
        gemm_6x8(t, static_cast<const int16_t*>(packed), c8, o, acc);
      }
      int8_t* out = out_band + q0 * out_c;
      if (fast16) {  // 16 channels of a pixel packed, clamped and stored at once
        for (int32_t j = 0; j < np; ++j) {
          const __m256i y0 = tlm_avx2::fast_requantize(acc[2 * j], fq[0]);
          const __m256i y1 = tlm_avx2::fast_requantize(acc[2 * j + 1], fq[1]);
          store_s8x16(out + j * out_c + o, y0, y1, lo16, hi16);
        }
        continue;
      }
      for (int v = 0; v < nv; ++v) {
        const int32_t ov = o + 8 * v;
        int32_t j = 0;
        if (fast[v]) {  // two pixels' 8 channels packed, clamped and stored at once
          for (; j + 2 <= np; j += 2)
            store_s8x8_pair(out + j * out_c + ov, out + (j + 1) * out_c + ov,
                            tlm_avx2::fast_requantize(acc[j * nv + v], fq[v]),
                            tlm_avx2::fast_requantize(acc[(j + 1) * nv + v], fq[v]), lo16, hi16);
        }
        for (; j < np; ++j) {
          if (fast[v]) {
            const __m256i y = tlm_avx2::fast_requantize(acc[j * nv + v], fq[v]);
            tlm_avx2::store_s8x8(out + j * out_c + ov,
                                 _mm256_min_epi32(_mm256_max_epi32(y, lo32), hi32));
          } else if (whole[v]) {
            const __m256i y = tlm_avx2::multiply_by_quantized_multiplier(
                _mm256_add_epi32(acc[j * nv + v], bias8[v]), rq[v]);
            tlm_avx2::store_s8x8(out + j * out_c + ov, tlm_avx2::offset_clamp(y, clamp));
          } else {
            store_channels(p, acc[j * nv + v], multipliers, shifts, bias, ov, out_c - ov,
                           out + j * out_c);
          }
        }
      }
    }
  }
}

template <bool Vnni>
TLM_AVX2_TARGET void conv_packed(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                                 const int32_t* multipliers, const int32_t* shifts,
                                 const int8_t* input, const void* packed, const int32_t* wsum,
                                 const int32_t* bias, int32_t row_begin, int32_t row_end,
                                 int32_t pw, void* scratch, int8_t* output) {
  void* band = reinterpret_cast<void*>(round_up(reinterpret_cast<uintptr_t>(scratch), 32));
  const int32_t out_h = d->output_h;
  // Output rows per band: their windows cover (n - 1) * stride + filter_h padded rows.
  const int64_t fit = (band_rows(d) - d->filter_h) / p->stride_h + 1;
  for (int32_t r = row_begin; r < row_end;) {
    const int32_t b = r / out_h, y = r - b * out_h;
    int64_t n = out_h - y;  // to the end of this image
    if (n > row_end - r) n = row_end - r;
    if (n > fit) n = fit;
    conv_band<Vnni>(p, d, multipliers, shifts, input, packed, wsum, bias, b, y,
                    y + static_cast<int32_t>(n), pw, band, output);
    r += static_cast<int32_t>(n);
  }
}

// The packed filter: a 32-byte header whose first int32 names the layout (kLayoutMadd or
// kLayoutVnni, chosen by tlm_conv2d_s8_fast_pack for this CPU), then the filter in that layout:
// int16 [filter_h][run2 / 2][c8][2] (see conv_band), or int8 [filter_h][run4 / 4][c8][4] and the
// int32 sum of each channel's filter [c8] (see gemm_6x16_vnni). A kernel runs the layout it finds.
constexpr int32_t kLayoutMadd = 1, kLayoutVnni = 2;
constexpr size_t kPackHeader = 32;

inline size_t madd_bytes(const tlm_conv_dims* d) {
  return size_t(d->filter_h) * size_t(run2(d)) * size_t(channels8(d->output_c)) * 2;
}
inline size_t vnni_weight_bytes(const tlm_conv_dims* d) {  // a multiple of 32
  return size_t(d->filter_h) * size_t(run4(d)) * size_t(channels8(d->output_c));
}

}  // namespace

size_t tlm_conv2d_s8_fast_packed_bytes(const tlm_conv_dims* d) {
  const size_t vnni = vnni_weight_bytes(d) + 4 * size_t(channels8(d->output_c));
  return kPackHeader + (madd_bytes(d) > vnni ? madd_bytes(d) : vnni);
}

void tlm_conv2d_s8_fast_pack(const tlm_conv_dims* d, const int8_t* filter, void* packed) {
  const int32_t run = d->filter_w * d->input_c, c8 = channels8(d->output_c);
  const int32_t depth = d->filter_h * run;
  const bool vnni = tlm_host_vnni();
  int32_t* header = static_cast<int32_t*>(packed);
  memset(header, 0, kPackHeader);
  header[0] = vnni ? kLayoutVnni : kLayoutMadd;
  auto tap = [&](int32_t o, int32_t f_y, int32_t k) -> int8_t {
    return o < d->output_c && k < run ? filter[int64_t{o} * depth + f_y * run + k] : 0;
  };
  if (vnni) {
    const int32_t r4 = run4(d);
    int8_t* w = static_cast<int8_t*>(packed) + kPackHeader;
    for (int32_t f_y = 0; f_y < d->filter_h; ++f_y)
      for (int32_t k = 0; k < r4; ++k)
        for (int32_t o = 0; o < c8; ++o)
          w[((int64_t{f_y} * r4 + k) / 4 * c8 + o) * 4 + (k & 3)] = tap(o, f_y, k);
    int32_t* wsum = reinterpret_cast<int32_t*>(w + vnni_weight_bytes(d));
    for (int32_t o = 0; o < c8; ++o) {
      int32_t sum = 0;  // |sum| <= 128 * depth, inside int32 for any shape the kernel accepts
      for (int32_t k = 0; o < d->output_c && k < depth; ++k) sum += filter[int64_t{o} * depth + k];
      wsum[o] = sum;
    }
    return;
  }
  const int32_t r2 = run2(d);
  int16_t* w = reinterpret_cast<int16_t*>(static_cast<int8_t*>(packed) + kPackHeader);
  for (int32_t f_y = 0; f_y < d->filter_h; ++f_y)
    for (int32_t k = 0; k < r2; ++k)
      for (int32_t o = 0; o < c8; ++o)
        w[((int64_t{f_y} * r2 + k) / 2 * c8 + o) * 2 + (k & 1)] = tap(o, f_y, k);
}

// Scratch: one band of padded input rows (and its slack), 32-byte aligned.
size_t tlm_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims* d) {
  return 32 + size_t(band_rows(d)) * row_bytes(d) + 2 * kSlack;
}

bool tlm_conv2d_s8_fast(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                        const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                        const void* packed, const int32_t* bias, int32_t row_begin,
                        int32_t row_end, void* scratch, int8_t* output) {
  if (!packed || !tlm_host_avx2() || p->dilation_h != 1 || p->dilation_w != 1) return false;
  // The padded row: the input with pad_left zero pixels before it, and after it as many as the
  // last window needs past the input.
  const int32_t reach = (d->output_w - 1) * p->stride_w + d->filter_w - p->pad_left;
  const int32_t pw = p->pad_left + (reach > d->input_w ? reach : d->input_w);
  if (p->pad_left < 0 || p->pad_top < 0 || pw > padded_w_max(d)) return false;
  int32_t layout;
  memcpy(&layout, packed, sizeof layout);
  const int8_t* weights = static_cast<const int8_t*>(packed) + kPackHeader;
  if (layout == kLayoutVnni) {
    // Packed on a CPU with VNNI; this one has it too unless tests switched it off since.
    if (!tlm_host_vnni()) return false;
    if (row_begin < row_end)
      conv_packed<true>(p, d, multipliers, shifts, input, weights,
                        reinterpret_cast<const int32_t*>(weights + vnni_weight_bytes(d)), bias,
                        row_begin, row_end, pw, scratch, output);
    return true;
  }
  if (layout != kLayoutMadd) return false;
  if (row_begin < row_end)
    conv_packed<false>(p, d, multipliers, shifts, input, weights, nullptr, bias, row_begin,
                       row_end, pw, scratch, output);
  return true;
}

#else  // no fast path in this build

size_t tlm_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims*) { return 0; }
size_t tlm_conv2d_s8_fast_packed_bytes(const tlm_conv_dims*) { return 0; }
void tlm_conv2d_s8_fast_pack(const tlm_conv_dims*, const int8_t*, void*) {}

bool tlm_conv2d_s8_fast(const tlm_conv2d_params*, const tlm_conv_dims*, const int32_t*,
                        const int32_t*, const int8_t*, const void*, const int32_t*, int32_t,
                        int32_t, void*, int8_t*) {
  return false;
}

#endif  // TLM_HOST_AVX2
