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

// acc (the window's sum) + bias, requantized per channel, plus the output offset, clamped.
// TFLite adds the offset in int32; |acc| <= 2^31 - 1 can only wrap there for absurd scales
// (undefined behaviour in TFLite): in 64 bits the clamp stays exact.
inline int8_t requantize(const tlm_conv2d_params* p, int32_t acc, int32_t multiplier,
                         int32_t shift) {
  acc = tlm_detail::multiply_by_quantized_multiplier(acc, multiplier, shift);
  int64_t out = int64_t{acc} + p->output_offset;
  if (out < p->activation_min) out = p->activation_min;
  if (out > p->activation_max) out = p->activation_max;
  return static_cast<int8_t>(out);
}

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
              out[o + k] = requantize(p, acc[k] + (bias ? bias[o + k] : 0), multipliers[o + k],
                                      shifts[o + k]);
          }
          for (; o < out_c; ++o) {
            int32_t acc = 0;
            for (int32_t f_y = y0; f_y < y1; ++f_y) {
              const int8_t* x =
                  input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + x0) * in_c;
              const int8_t* w = filter + ((o * f_h + f_y) * f_w + x0) * in_c;
              for (int32_t i = 0; i < run; ++i) acc += w[i] * (x[i] + input_offset);
            }
            out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
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
          out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host fast path (host_simd.h). The same sums as above, arranged as a GEMM: a tile of kTileP
// output pixels has its windows written as int16 rows (im2col) of (input + input_offset), 0 at
// positions outside the input (a product of 0 is the omitted position), padded to an even
// length. The filter is packed once (tlm_conv2d_s8_fast_pack) as int16 [k2 / 2][out_c8][2]: the
// taps k, k + 1 of channel o side by side, so that one _mm256_madd_epi16 of a broadcast im2col
// pair (x_k, x_k+1) with 8 channels' pairs adds 2 exact products to each of 8 channel lanes
// (|pair| <= 2 * 32640, and every partial sum is a sum of a subset of the window's products, so
// the accumulator bound above holds for it too). The accumulators hold whole channels, with no
// horizontal sums; requantize_avx2.h requantizes 8 channels at once, lane by lane the arithmetic
// of requantize.h. Channels past out_c are zero in the packing and never stored.
#if TLM_HOST_AVX2
#include <immintrin.h>
#include <string.h>

#include "requantize_avx2.h"

namespace {

constexpr int32_t kTileP = 6;  // output pixels per tile (x 16 channels: 12 accumulators)

inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// One im2col buffer: kTileP rows of k2 int16, and 16 int16 of slack for widen_run.
inline size_t tile_rows_bytes(int32_t k2) { return round_up(size_t{kTileP} * k2 * 2 + 32, 32); }

// dst[i] = src[i] + offset for i < n (int16: |.| <= 255).
TLM_AVX2_TARGET inline void widen(const int8_t* src, int32_t n, int32_t offset, int16_t* dst) {
  const __m256i off = _mm256_set1_epi16(static_cast<int16_t>(offset));
  int32_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_add_epi16(tlm_avx2::load_s8x16_epi16(src + i), off));
  if (i + 8 <= n) {
    const __m128i x = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_add_epi16(x, _mm256_castsi256_si128(off)));
    i += 8;
  }
  for (; i < n; ++i) dst[i] = static_cast<int16_t>(src[i] + offset);
}

// widen() of a short run (n <= 16) in one vector when 16 bytes from src are inside the input
// (before src_end): dst[n..15] get values of the bytes after the run, which the caller overwrites
// (the next segment of the row, the zero tail) or never reads (the scratch's slack).
TLM_AVX2_TARGET inline void widen_run(const int8_t* src, int32_t n, int32_t offset, int16_t* dst,
                                      const int8_t* src_end) {
  if (n <= 16 && src_end - src >= 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                        _mm256_add_epi16(tlm_avx2::load_s8x16_epi16(src),
                                         _mm256_set1_epi16(static_cast<int16_t>(offset))));
    return;
  }
  widen(src, n, offset, dst);
}

// The im2col row of output pixel (b, out_y, out_x): filter order (f_y, f_x, c), as OHWI.
__attribute__((always_inline)) TLM_AVX2_TARGET inline void window_row(
    const tlm_conv2d_params* p, const tlm_conv_dims* d, const int8_t* input, int32_t b,
    int32_t out_y, int32_t out_x, int32_t length, int16_t* row) {
  const int8_t* input_end = input + int64_t{d->batches} * d->input_h * d->input_w * d->input_c;
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w;
  const int32_t y_origin = out_y * p->stride_h - p->pad_top;
  const int32_t x_origin = out_x * p->stride_w - p->pad_left;
  const int32_t x0 = x_origin < 0 ? -x_origin : 0;
  const int32_t x1 = in_w - x_origin < f_w ? in_w - x_origin : f_w;
  const int32_t line = f_w * in_c;
  int16_t* r = row;
  for (int32_t f_y = 0; f_y < f_h; ++f_y, r += line) {
    const int32_t in_y = y_origin + f_y;
    if (in_y < 0 || in_y >= in_h) {
      memset(r, 0, sizeof(int16_t) * line);
      continue;
    }
    widen_run(input + ((b * in_h + in_y) * in_w + x_origin + x0) * in_c, (x1 - x0) * in_c,
              p->input_offset, r + x0 * in_c, input_end);
    if (x0 > 0) memset(r, 0, sizeof(int16_t) * x0 * in_c);
    if (x1 < f_w) memset(r + x1 * in_c, 0, sizeof(int16_t) * (f_w - x1) * in_c);
  }
  for (int32_t k = f_h * line; k < length; ++k) row[k] = 0;
}

inline int32_t channels8(int32_t out_c) { return (out_c + 7) & ~7; }
inline int32_t depth2(const tlm_conv_dims* d) {
  return (d->filter_h * d->filter_w * d->input_c + 1) & ~1;
}

// Requantizes 8 channel lanes [o, o + n) of one pixel and stores them (n < 8: the last block).
TLM_AVX2_TARGET inline void store_channels(const tlm_conv2d_params* p, __m256i acc,
                                           const int32_t* multipliers, const int32_t* shifts,
                                           const int32_t* bias, int32_t o, int32_t n,
                                           int8_t* out) {
  if (n == 8) {
    if (bias) acc = _mm256_add_epi32(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + o)));
    acc = tlm_avx2::multiply_by_quantized_multiplier(
        acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(multipliers + o)),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shifts + o)));
    tlm_avx2::store_s8x8(out + o, tlm_avx2::offset_clamp(acc, p->output_offset,
                                                         p->activation_min, p->activation_max));
    return;
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  for (int32_t j = 0; j < n; ++j)
    out[o + j] = requantize(p, lanes[j] + (bias ? bias[o + j] : 0), multipliers[o + j],
                            shifts[o + j]);
}

// NP pixels (im2col rows `rows`, k2 int16 apart) x 8 * NV channels from o.
template <int NP, int NV>
TLM_AVX2_TARGET inline void packed_tile(const tlm_conv2d_params* p, const int16_t* rows,
                                        int32_t k2, const int16_t* packed, int32_t c8,
                                        int32_t o, int32_t out_c, const int32_t* multipliers,
                                        const int32_t* shifts, const int32_t* bias,
                                        int8_t* out) {
  __m256i acc[NP][NV];
  for (int q = 0; q < NP; ++q)
    for (int v = 0; v < NV; ++v) acc[q][v] = _mm256_setzero_si256();
  const int16_t* w = packed + 2 * o;
  for (int32_t k = 0; k < k2; k += 2, w += 2 * c8) {
    __m256i wv[NV];
    for (int v = 0; v < NV; ++v)
      wv[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 16 * v));
    for (int q = 0; q < NP; ++q) {
      int32_t pair;
      memcpy(&pair, rows + q * k2 + k, 4);
      const __m256i a = _mm256_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[q][v] = _mm256_add_epi32(acc[q][v], _mm256_madd_epi16(a, wv[v]));
    }
  }
  for (int v = 0; v < NV; ++v) {
    const int32_t ov = o + 8 * v;
    if (ov + 8 <= out_c) {  // 8 whole channels: their constants once for the NP pixels
      const tlm_avx2::Requant8 c = tlm_avx2::requant8(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(multipliers + ov)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shifts + ov)));
      const __m256i b = bias ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + ov))
                             : _mm256_setzero_si256();
      for (int q = 0; q < NP; ++q) {
        const __m256i y =
            tlm_avx2::multiply_by_quantized_multiplier(_mm256_add_epi32(acc[q][v], b), c);
        tlm_avx2::store_s8x8(out + q * out_c + ov,
                             tlm_avx2::offset_clamp(y, p->output_offset, p->activation_min,
                                                    p->activation_max));
      }
    } else if (ov < out_c) {
      for (int q = 0; q < NP; ++q)
        store_channels(p, acc[q][v], multipliers, shifts, bias, ov, out_c - ov, out + q * out_c);
    }
  }
}


// The im2col rows (k2 apart) of the tile of pixels [q0, min(q0 + kTileP, q_end)).
TLM_AVX2_TARGET void build_tile(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                                const int8_t* input, bool pointwise, int64_t q0, int64_t q_end,
                                int32_t k2, int16_t* buf) {
  const int32_t out_h = d->output_h, out_w = d->output_w;
  const int32_t np = q_end - q0 < kTileP ? static_cast<int32_t>(q_end - q0) : kTileP;
  if (pointwise) {
    widen(input + q0 * k2, np * k2, p->input_offset, buf);
    return;
  }
  for (int32_t j = 0; j < np; ++j) {
    const int64_t q = q0 + j;
    const int32_t b = static_cast<int32_t>(q / (int64_t{out_h} * out_w));
    const int32_t rem = static_cast<int32_t>(q - int64_t{b} * out_h * out_w);
    window_row(p, d, input, b, rem / out_w, rem % out_w, k2, buf + j * k2);
  }
}

TLM_AVX2_TARGET void conv_packed(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                                 const int32_t* multipliers, const int32_t* shifts,
                                 const int8_t* input, const int16_t* packed, const int32_t* bias,
                                 int32_t row_begin, int32_t row_end, void* scratch,
                                 int8_t* output) {
  const int32_t out_h = d->output_h, out_w = d->output_w, out_c = d->output_c;
  const int32_t k2 = depth2(d), c8 = channels8(out_c);
  // Two im2col buffers: the next tile's rows are written while this tile's are read, so that the
  // GEMM's 4-byte loads do not wait on (or fail to forward from) the stores just made.
  int16_t* rows = reinterpret_cast<int16_t*>(round_up(reinterpret_cast<uintptr_t>(scratch), 32));
  int16_t* next_rows = rows + tile_rows_bytes(k2) / 2;
  const int64_t q_end = int64_t{row_end} * out_w;
  // A 1x1 filter moved by 1 without padding: output pixel q's window is input pixel q, so a
  // tile's im2col rows are consecutive input bytes (when in_c is even, k2 == in_c).
  const bool pointwise = d->filter_h == 1 && d->filter_w == 1 && p->stride_h == 1 &&
                         p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0 &&
                         d->input_h == out_h && d->input_w == out_w && k2 == d->input_c;
  const int64_t q_begin = int64_t{row_begin} * out_w;
  if (q_begin < q_end) build_tile(p, d, input, pointwise, q_begin, q_end, k2, rows);
  for (int64_t q0 = q_begin; q0 < q_end; q0 += kTileP) {
    const int32_t np = q_end - q0 < kTileP ? static_cast<int32_t>(q_end - q0) : kTileP;
    // Reading the next tile's windows before this tile's outputs are written is safe: an output
    // trailing its input overwrites only bytes no later window reads (window_lead).
    if (q0 + kTileP < q_end)
      build_tile(p, d, input, pointwise, q0 + kTileP, q_end, k2, next_rows);
    int8_t* out = output + q0 * out_c;
    for (int32_t o = 0; o < c8; o += 16) {
      const bool two = c8 - o >= 16;
      if (np == kTileP) {
        if (two)
          packed_tile<kTileP, 2>(p, rows, k2, packed, c8, o, out_c, multipliers, shifts, bias, out);
        else
          packed_tile<kTileP, 1>(p, rows, k2, packed, c8, o, out_c, multipliers, shifts, bias, out);
      } else {
        for (int32_t j = 0; j < np; ++j) {
          if (two)
            packed_tile<1, 2>(p, rows + j * k2, k2, packed, c8, o, out_c, multipliers, shifts,
                              bias, out + j * out_c);
          else
            packed_tile<1, 1>(p, rows + j * k2, k2, packed, c8, o, out_c, multipliers, shifts,
                              bias, out + j * out_c);
        }
      }
    }
    int16_t* t = rows;
    rows = next_rows;
    next_rows = t;
  }
}

}  // namespace

size_t tlm_conv2d_s8_fast_packed_bytes(const tlm_conv_dims* d) {
  return size_t(depth2(d)) * channels8(d->output_c) * 2;
}

void tlm_conv2d_s8_fast_pack(const tlm_conv_dims* d, const int8_t* filter, void* packed) {
  const int32_t depth = d->filter_h * d->filter_w * d->input_c, k2 = depth2(d);
  const int32_t c8 = channels8(d->output_c);
  int16_t* w = static_cast<int16_t*>(packed);
  for (int32_t k = 0; k < k2; ++k)
    for (int32_t o = 0; o < c8; ++o)
      w[(k / 2 * c8 + o) * 2 + (k & 1)] =
          o < d->output_c && k < depth ? filter[int64_t{o} * depth + k] : 0;
}

// Scratch: two im2col buffers, 32-byte aligned.
size_t tlm_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims* d) {
  return 32 + 2 * tile_rows_bytes(depth2(d));
}

bool tlm_conv2d_s8_fast(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                        const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                        const void* packed, const int32_t* bias, int32_t row_begin,
                        int32_t row_end, void* scratch, int8_t* output) {
  if (!packed || !tlm_host_avx2() || p->dilation_h != 1 || p->dilation_w != 1) return false;
  if (row_begin < row_end)
    conv_packed(p, d, multipliers, shifts, input, static_cast<const int16_t*>(packed), bias,
                row_begin, row_end, scratch, output);
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
