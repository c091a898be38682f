// Follows TFLite's reference_integer_ops::DepthwiseConvPerChannel
// (tensorflow/lite/kernels/internal/reference/integer_ops/depthwise_conv.h), the kernel
// depthwise_conv.cc runs for int8 under kReference. TFLite walks the input channels in chunks of
// 32 with one accumulator each; per output channel that is the same int32 sum over the filter
// window of filter * (input + input_offset) (positions outside the input omitted), then + bias,
// MultiplyByQuantizedMultiplier with the channel's multiplier and shift, + output_offset, clamp.
//
// Accumulator bound. Each product has |p| <= 255 * 128 = 32640 and a channel sums at most
// filter_h * filter_w <= 32768 of them: |sum| < 2^30, and the check bounds the bias by
// INT32_MAX - filter_h * filter_w * 32640, so sum + bias stays in int32.
#include "depthwise_conv2d_s8.h"
#include "host_simd.h"

#include "requantize.h"

tlm_status tlm_depthwise_conv2d_s8_check(const tlm_depthwise_conv2d_params* p,
                                         const tlm_conv_dims* d, const int32_t* multipliers,
                                         const int32_t* shifts, const int32_t* bias) {
  if (d->batches < 1 || d->input_c < 1 || d->output_c < 1) return TLM_ERR_SHAPE;
  if (p->depth_multiplier < 1) return TLM_ERR_BAD_PARAMS;
  if (int64_t{d->input_c} * p->depth_multiplier != d->output_c) return TLM_ERR_SHAPE;
  tlm_status s;
  if ((s = tlm_detail::check_window(d->input_h, d->output_h, d->filter_h, p->stride_h,
                                    p->dilation_h, p->pad_top)) != TLM_OK ||
      (s = tlm_detail::check_window(d->input_w, d->output_w, d->filter_w, p->stride_w,
                                    p->dilation_w, p->pad_left)) != TLM_OK)
    return s;
  const int64_t depth = int64_t{d->filter_h} * d->filter_w;
  return tlm_detail::check_conv_common(p, depth, d->output_c, multipliers, shifts, bias);
}

TLM_HOST_CLONES void tlm_depthwise_conv2d_s8(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                             const int32_t* multipliers, const int32_t* shifts,
                             const int8_t* input, const int8_t* filter, const int32_t* bias,
                             int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w;
  const int32_t out_c = d->output_c, dm = p->depth_multiplier;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        int8_t* y = output + ((b * d->output_h + out_y) * d->output_w + out_x) * out_c;
        if (dm == 1 && p->dilation_h == 1 && p->dilation_w == 1) {
          // Depth multiplier 1, no dilation: the taps inside the input are rows [y0, y1) and
          // columns [x0, x1) of the filter; channels innermost, kBlock at a time, so each tap's
          // input and filter bytes are contiguous. Same products, same int32 sums.
          const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
          const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
          const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
          const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
          constexpr int32_t kBlock = 8;
          for (int32_t c0 = 0; c0 < in_c; c0 += kBlock) {
            const int32_t n = in_c - c0 < kBlock ? in_c - c0 : kBlock;
            int32_t acc[kBlock] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int32_t f_y = y0; f_y < y1; ++f_y)
              for (int32_t f_x = x0; f_x < x1; ++f_x) {
                const int8_t* x =
                    input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + f_x) * in_c + c0;
                const int8_t* w = filter + (f_y * f_w + f_x) * out_c + c0;
                for (int32_t j = 0; j < n; ++j) acc[j] += w[j] * (x[j] + p->input_offset);
              }
            for (int32_t j = 0; j < n; ++j) {
              const int32_t o = c0 + j;
              int32_t a = acc[j] + (bias ? bias[o] : 0);
              a = tlm_detail::multiply_by_quantized_multiplier(a, multipliers[o], shifts[o]);
              int64_t out = int64_t{a} + p->output_offset;  // 64 bits: see conv2d_s8.cpp
              if (out < p->activation_min) out = p->activation_min;
              if (out > p->activation_max) out = p->activation_max;
              y[o] = static_cast<int8_t>(out);
            }
          }
          continue;
        }
        for (int32_t c = 0; c < in_c; ++c) {
          for (int32_t m = 0; m < dm; ++m) {
            const int32_t o = c * dm + m;
            int32_t acc = 0;
            for (int32_t f_y = 0; f_y < f_h; ++f_y) {
              const int32_t in_y = in_y_origin + p->dilation_h * f_y;
              if (in_y < 0 || in_y >= in_h) continue;  // zero padding: the position is omitted
              for (int32_t f_x = 0; f_x < f_w; ++f_x) {
                const int32_t in_x = in_x_origin + p->dilation_w * f_x;
                if (in_x < 0 || in_x >= in_w) continue;
                const int32_t x = input[((b * in_h + in_y) * in_w + in_x) * in_c + c];
                acc += filter[(f_y * f_w + f_x) * out_c + o] * (x + p->input_offset);
              }
            }
            if (bias) acc += bias[o];
            acc = tlm_detail::multiply_by_quantized_multiplier(acc, multipliers[o], shifts[o]);
            int64_t out = int64_t{acc} + p->output_offset;  // 64 bits: see conv2d_s8.cpp
            if (out < p->activation_min) out = p->activation_min;
            if (out > p->activation_max) out = p->activation_max;
            y[o] = static_cast<int8_t>(out);
          }
        }
      }
    }
  }
}

// ---- Host fast path (AVX2) ----------------------------------------------------------------------
//
// Depth multiplier 1 without dilation: the plain kernel's first branch, its int32 sums arranged so
// that each _mm256_madd_epi16 adds two filter rows' products to each of 8 channel lanes.
//
// Layout. A band of output rows gets the input rows its windows cover widened once into `scratch`,
// two rows at a time, as "pair rows". Let X(i, j) be pixel j of padded row i of the band (row i is
// input row r0 * stride_h - pad_top + i, pixel j input column j - pad_left): the int16 input x, or
// -input_offset where the window reaches outside the input. Then X + input_offset is the plain
// kernel's factor, or 0 at the positions it omits, and the window's sum of w * (X + input_offset)
// is sum(w * X) + input_offset * sum(w): the second term, over all filter taps, is a constant per
// channel, added to the bias (bias') once per band. Pair row v holds rows 2v and 2v + 1
// interleaved: at pixel j, per channel c, the int16 pair (X(2v, j)[c], X(2v + 1, j)[c]), channels
// padded to c8 (a multiple of 8): int16 [j][c8][2]. Each input pixel is widened once, whatever
// the strides.
// Output row r of the band starts its window at band row r * stride_h, of parity p: its filter
// rows lie in pair rows (r * stride_h - p) / 2 + t, t < (p + filter_h + 1) / 2, filter row 2t - p
// first in pair t, 2t + 1 - p second. The filter is rearranged alike once per call (into the
// scratch), for each parity that occurs (only p = 0 for an even stride_h): per channel the weight
// pair (filter row 2t - p, filter row 2t + 1 - p), a zero weight for a row outside the filter
// (whatever X holds there). One madd of pixel j of a pair row (8 channels) with its weight pairs
// adds two products per channel, and the window of output pixel (r, ox) is (p + filter_h + 1) / 2
// * filter_w of them, at pixel j = ox * stride_w + f_x of each of its pair rows.
//
// Channel blocks: 16 channels while they fit in c8, then 8. At a pixel, a block of 16 is stored as
// unpacklo and unpackhi of its two rows' 16 int16, that is in two groups of 8 lanes: channels
// {0-3, 8-11} and {4-7, 12-15}; packing the two groups' int32 results (packs_epi32) restores the
// channel order, so they are stored with no shuffle. A block of 8 is in order. Blocks are the
// outer loop over a band's pixels, so that their requantization constants are made once per band;
// the pixels go two at a time, sharing the weight loads. The last block, when in_c is not a
// multiple of 8, is requantized with requantize.h channel by channel.
//
// Numerics. X is in [-128, 127] and a weight in [-128, 127]: int16 lanes, and a madd lane (two
// products) has |.| <= 2 * 2^14, no overflow. The accumulators add the window's w * X in some
// order to bias' = bias + input_offset * sum(w) (|.| <= |bias| + 2^14 * depth: int32 by the check's
// bias bound |bias| <= INT32_MAX - depth * 32640), or to 0 where FastRequant adds bias'. The final
// value is the plain kernel's acc + bias, an int32; vector adds wrap modulo 2^32, so it is exact
// whatever the partial sums. Requantization: FastRequant below where its bounds hold, else
// requantize_avx2.h's, lane by lane requantize.h.
//
// Outputs trailing their input. Bands run in raster order and each band widens its input rows
// before writing any output; the bytes it reads lie at or after the first input position of the
// band's first window, which, with the output trailing the input by window_lead (nn_types.h), no
// earlier output pixel overwrites. So that layout stays exact for calls in row order.
#if TLM_HOST_AVX2
#include <immintrin.h>
#include <string.h>

#include "requantize_avx2.h"

namespace {

// The pair rows of one band: at most this many bytes, unless one output row's window needs more.
constexpr size_t kBandBytes = 32 * 1024;

inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
inline int32_t channels8(int32_t c) { return (c + 7) & ~7; }
// Channels of the block starting at channel o: 16 while they fit in c8, then 8.
inline int32_t block_width(int32_t o, int32_t c8) { return o + 16 <= c8 ? 16 : 8; }
// Pair rows of a window starting at parity p.
inline int32_t window_pairs(int32_t filter_h, int32_t p) { return (p + filter_h + 1) / 2; }
// The packed filter, both parities: (pairs(0) + pairs(1)) * filter_w * c8 int16 pairs.
inline size_t weight_bytes(const tlm_conv_dims* d) {
  const size_t taps = size_t(window_pairs(d->filter_h, 0) + window_pairs(d->filter_h, 1)) *
                      size_t(d->filter_w);
  return taps * size_t(channels8(d->output_c)) * 4;
}
// A pair row as the scratch is sized for: the padded row (the input and less than a filter width
// of zeros on each side: the check's windows) is shorter than input_w + 2 * filter_w pixels.
inline size_t pair_row_bytes(const tlm_conv_dims* d) {
  return (size_t(d->input_w) + 2 * size_t(d->filter_w)) * size_t(channels8(d->input_c)) * 4;
}
// Pair rows the scratch holds: kBandBytes' worth, at least one window's (filter_h / 2 + 1).
inline size_t band_pairs(const tlm_conv_dims* d) {
  const size_t least = size_t(d->filter_h) / 2 + 1, rows = kBandBytes / pair_row_bytes(d);
  return rows > least ? rows : least;
}

// Where the windows are, in int16 units.
struct Geometry {
  int32_t c8;         // channels rounded up to 8
  int32_t positions;  // pixels per padded row: (output_w - 1) * stride_w + filter_w
  int64_t position;   // one pair position: c8 * 2
  int64_t line;       // one pair row: positions * position
  int64_t pixel;      // between the windows of neighbouring output pixels: stride_w positions
  int32_t taps0;      // tap pairs of the parity-0 window: window_pairs(filter_h, 0) * filter_w
  int32_t taps;       // per channel of the packed filter: taps0, and parity 1's for an odd stride_h
};

// ---- Widening: pair rows and the packed filter

// n channels (at most 16, or 8) from x as int16, in order, the lanes past n 0; for a null x
// (padding), `pad`.
TLM_AVX2_TARGET inline __m256i widen16(const int8_t* x, int32_t n, __m256i pad) {
  if (!x) return pad;
  int8_t part[16];
  if (n < 16) {  // no read past x[n - 1]
    memset(part, 0, sizeof part);
    x = static_cast<const int8_t*>(memcpy(part, x, size_t(n > 0 ? n : 0)));
  }
  return tlm_avx2::load_s8x16_epi16(x);
}
TLM_AVX2_TARGET inline __m128i widen8(const int8_t* x, int32_t n, __m128i pad) {
  if (!x) return pad;
  int8_t part[8];
  if (n < 8) {
    memset(part, 0, sizeof part);
    x = static_cast<const int8_t*>(memcpy(part, x, size_t(n > 0 ? n : 0)));
  }
  return _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x)));
}

// A block's pairs from its two rows' channels a and b: 16 channels as group 0 (channels 0-3 and
// 8-11: unpacklo) then group 1 (4-7 and 12-15: unpackhi); 8 channels in order.
TLM_AVX2_TARGET inline void store_pairs16(int16_t* out, __m256i a, __m256i b) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_unpacklo_epi16(a, b));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_unpackhi_epi16(a, b));
}
TLM_AVX2_TARGET inline void store_pairs8(int16_t* out, __m128i a, __m128i b) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi16(a, b));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8), _mm_unpackhi_epi16(a, b));
}

// Pixels [0, count) of one block of kWidth channels (n of them present) of a pair row, from input
// rows a and b (null: a row outside the input, `pad`) at their channel o, in_c apart.
template <int kWidth>
TLM_AVX2_TARGET void widen_block(const int8_t* a, const int8_t* b, int64_t in_c, int32_t n,
                                 int32_t count, int64_t position, __m256i pad, int16_t* out) {
  const __m128i pad8 = _mm256_castsi256_si128(pad);
  int64_t at = 0;  // pixel j's offset in the rows
  if (n == kWidth) {  // whole blocks: no partial loads
    for (int32_t j = 0; j < count; ++j, at += in_c, out += position) {
      if (kWidth == 16)
        store_pairs16(out, a ? tlm_avx2::load_s8x16_epi16(a + at) : pad,
                      b ? tlm_avx2::load_s8x16_epi16(b + at) : pad);
      else
        store_pairs8(out, a ? widen8(a + at, 8, pad8) : pad8, b ? widen8(b + at, 8, pad8) : pad8);
    }
    return;
  }
  for (int32_t j = 0; j < count; ++j, at += in_c, out += position) {
    const int8_t* x0 = a ? a + at : nullptr;
    const int8_t* x1 = b ? b + at : nullptr;
    if (kWidth == 16)
      store_pairs16(out, widen16(x0, n, pad), widen16(x1, n, pad));
    else
      store_pairs8(out, widen8(x0, n, pad8), widen8(x1, n, pad8));
  }
}

// count int16 (a multiple of 16) at out set to v's lanes.
TLM_AVX2_TARGET inline void fill(int16_t* out, int64_t count, __m256i v) {
  for (int64_t i = 0; i < count; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), v);
}

// The pair row of input rows a and b ([input_w][input_c]; null: a row outside the input). The
// padding holds `pad_value` (-input_offset).
TLM_AVX2_TARGET void widen_pair_row(const int8_t* a, const int8_t* b, const Geometry& g,
                                    int32_t in_w, int32_t in_c, int32_t pad_left,
                                    int16_t pad_value, int16_t* out) {
  const __m256i pad = _mm256_set1_epi16(pad_value);
  if (!a && !b) {
    fill(out, g.line, pad);
    return;
  }
  // Pixels [begin, end) are input columns; the others, the padding.
  const int32_t begin = pad_left < g.positions ? pad_left : g.positions;
  const int32_t end = pad_left + in_w < g.positions ? pad_left + in_w : g.positions;
  fill(out, begin * g.position, pad);
  fill(out + end * g.position, (g.positions - end) * g.position, pad);
  for (int32_t o = 0, width; o < g.c8; o += width) {
    width = block_width(o, g.c8);
    const int32_t n = in_c - o < width ? in_c - o : width;  // channels present
    const int8_t* ao = a ? a + o : nullptr;
    const int8_t* bo = b ? b + o : nullptr;
    int16_t* p = out + begin * g.position + 2 * o;
    if (width == 16)
      widen_block<16>(ao, bo, in_c, n, end - begin, g.position, pad, p);
    else
      widen_block<8>(ao, bo, in_c, n, end - begin, g.position, pad, p);
  }
}

// The filter [filter_h][filter_w][c] as, per channel block (of `width` channels, at o), for each
// parity p packed, [pairs][filter_w][width][2] int16: pair t holds filter rows 2t - p and
// 2t + 1 - p (0 outside the filter). Block o starts at packed + 2 * o * taps.
TLM_AVX2_TARGET void pack_filter(const tlm_conv_dims* d, const Geometry& g, const int8_t* filter,
                                 int16_t* packed) {
  const int32_t c_n = d->output_c, f_h = d->filter_h, f_w = d->filter_w;
  const int32_t parities = g.taps > g.taps0 ? 2 : 1;
  const __m256i zero = _mm256_setzero_si256();
  for (int32_t o = 0, width; o < g.c8; o += width) {
    width = block_width(o, g.c8);
    const int32_t n = c_n - o < width ? c_n - o : width;
    for (int32_t p = 0; p < parities; ++p)
      for (int32_t t = 0; t < window_pairs(f_h, p); ++t) {
        // Filter rows y0 and y1 at channel o; null outside the filter (zero weights).
        const int32_t y0 = 2 * t - p, y1 = y0 + 1;
        const int8_t* a = y0 >= 0 ? filter + int64_t{y0} * f_w * c_n + o : nullptr;
        const int8_t* b = y1 < f_h ? filter + int64_t{y1} * f_w * c_n + o : nullptr;
        if (width == 16)
          widen_block<16>(a, b, c_n, n, f_w, 2 * width, zero, packed);
        else
          widen_block<8>(a, b, c_n, n, f_w, 2 * width, zero, packed);
        packed += int64_t{f_w} * 2 * width;
      }
  }
}

// ---- Requantization of 8 lanes

using tlm_avx2::fast_ok;
using tlm_avx2::fast_requant;
using tlm_avx2::fast_requantize;
using tlm_avx2::FastRequant;

// One group of 8 lanes: the accumulators' start (the bias, or 0 when FastRequant adds it) and
// the requantization (fast, else requantize_avx2.h's).
struct Group {
  __m256i start;
  bool fast;
  FastRequant f;
  tlm_avx2::Requant8 general;
};

// The per-channel arrays of a call.
struct Channels {
  const int32_t *multipliers, *shifts, *bias;
};

TLM_AVX2_TARGET inline __m128i load_i32x4(const int32_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
// Per-channel values of group `group` of the block of `width` channels at o.
TLM_AVX2_TARGET inline __m256i load_group(const int32_t* v, int32_t o, int32_t width,
                                          int32_t group) {
  if (width == 8) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + o));
  const int32_t at = o + 4 * group;  // channels at..at + 3 and at + 8..at + 11
  return _mm256_set_m128i(load_i32x4(v + at + 8), load_i32x4(v + at));
}

TLM_AVX2_TARGET inline __m256i load_bias(const Channels& ch, int32_t o, int32_t width,
                                          int32_t group) {
  return ch.bias ? load_group(ch.bias, o, width, group) : _mm256_setzero_si256();
}

// Whether FastRequant serves group `group` of the (whole) block of `width` channels at o.
TLM_AVX2_TARGET inline bool group_fast(const Channels& ch, int32_t o, int32_t width, int32_t group,
                                       int64_t bound) {
  return fast_ok(load_group(ch.shifts, o, width, group), load_bias(ch, o, width, group), bound);
}

// Group `group` of the (whole) block of `width` channels at o, whose packed weights are at w
// (taps0 taps of parity 0: each filter tap once), with FastRequant when `fast` (group_fast).
TLM_AVX2_TARGET inline Group make_group(const Channels& ch, const int16_t* w, int32_t taps0,
                                        int32_t o, int32_t width, int32_t group, bool fast,
                                        int32_t input_offset, int32_t output_offset) {
  Group r;
  __m256i bias = load_bias(ch, o, width, group);
  const __m256i multiplier = load_group(ch.multipliers, o, width, group);
  const __m256i shift = load_group(ch.shifts, o, width, group);
  r.fast = fast;
  // bias' = bias + input_offset * sum(w) (see Numerics).
  __m256i sum = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int32_t t = 0; t < taps0; ++t, w += 2 * width)
    sum = _mm256_add_epi32(
        sum, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16 * group)),
                               ones));
  bias = _mm256_add_epi32(bias, _mm256_mullo_epi32(sum, _mm256_set1_epi32(input_offset)));
  if (r.fast) r.f = fast_requant(multiplier, shift, bias, output_offset);
  r.start = r.fast ? _mm256_setzero_si256() : bias;
  if (!r.fast) r.general = tlm_avx2::requant8(multiplier, shift);
  return r;
}

// Output clamps: in int32 for the general requantization, in int16 for the stores.
struct Clamps {
  tlm_avx2::Clamp8 c32;
  __m256i lo, hi;
};

// acc requantized plus the output offset (the general one also clamped).
template <bool kFast>
TLM_AVX2_TARGET inline __m256i requantize8(__m256i acc, const Group& gr, const Clamps& c) {
  if (kFast) return fast_requantize(acc, gr.f);
  return tlm_avx2::offset_clamp(tlm_avx2::multiply_by_quantized_multiplier(acc, gr.general), c.c32);
}

// clamp(y) stored as int8, 16 channels from groups y0, y1 (packs_epi32 restores their channel
// order) or 8 in order. Saturating to int16 and then int8 keeps a value beyond [-128, 127] beyond
// it on the same side, so the clamp gives the int32 result.
TLM_AVX2_TARGET inline void store16(int8_t* out, __m256i y0, __m256i y1, const Clamps& c) {
  const __m256i v = _mm256_min_epi16(_mm256_max_epi16(_mm256_packs_epi32(y0, y1), c.lo), c.hi);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_packs_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}
TLM_AVX2_TARGET inline void store8(int8_t* out, __m256i y, const Clamps& c) {
  __m128i v = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
  v = _mm_min_epi16(_mm_max_epi16(v, _mm256_castsi256_si128(c.lo)), _mm256_castsi256_si128(c.hi));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(v, v));
}

// ---- A band's pixels

// One band: `rows` output rows of out_w pixels, the pair rows at x, the outputs at out.
struct Band {
  const int16_t* x;
  int32_t rows, out_w, c_n, filter_h, filter_w, stride_h;
  int8_t* out;
};

// acc plus the madd of the 16 int16 at x with w (two products per int32 lane).
TLM_AVX2_TARGET inline __m256i madd(__m256i acc, const int16_t* x, __m256i w) {
  return _mm256_add_epi32(
      acc, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)), w));
}
TLM_AVX2_TARGET inline __m256i madd(__m256i acc, const int16_t* x, const int16_t* w) {
  return madd(acc, x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}

// The window sums of one pixel, for a block of 16 (acc[0], acc[1]) or 8 (acc[0]) channels: pair
// rows from x (line apart; pixels `position` apart), weights from w (one tap after the other).
// kPairs, kCols: the window's pair rows and filter_w when fixed at compile time (0: pairs, cols).
template <int kWidth, int kPairs, int kCols>
TLM_AVX2_TARGET inline void window(const int16_t* x, const int16_t* w, int64_t line,
                                   int64_t position, int32_t pairs, int32_t cols, __m256i* acc) {
  const int32_t n_pairs = kPairs ? kPairs : pairs, n_cols = kCols ? kCols : cols;
  __m256i a0 = acc[0], a1 = acc[1];
  for (int32_t t = 0; t < n_pairs; ++t, x += line)
    for (int32_t f_x = 0; f_x < n_cols; ++f_x, w += 2 * kWidth) {
      a0 = madd(a0, x + f_x * position, w);
      if (kWidth == 16) a1 = madd(a1, x + f_x * position + 16, w + 16);
    }
  acc[0] = a0, acc[1] = a1;
}

// The window sums of one group of 8 lanes of two pixels (`pixel` apart: a, b), sharing the weight
// loads; x and w at the group's lanes, otherwise as window().
template <int kWidth, int kPairs, int kCols>
TLM_AVX2_TARGET inline void window2(const int16_t* x, const int16_t* w, int64_t line,
                                    int64_t position, int64_t pixel, int32_t pairs, int32_t cols,
                                    __m256i* a, __m256i* b) {
  const int32_t n_pairs = kPairs ? kPairs : pairs, n_cols = kCols ? kCols : cols;
  __m256i sa = *a, sb = *b;
  for (int32_t t = 0; t < n_pairs; ++t, x += line)
    for (int32_t f_x = 0; f_x < n_cols; ++f_x, w += 2 * kWidth) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
      const int16_t* xa = x + f_x * position;
      sa = madd(sa, xa, wv);
      sb = madd(sb, xa + pixel, wv);
    }
  *a = sa, *b = sb;
}

// The block of `kWidth` channels at o (groups g0, g1; g1 unused for 8) for every pixel of the
// band; w: the block's packed weights. kRows, kCols: the filter's size when fixed at compile time
// (0: at run time).
template <int kWidth, int kRows, int kCols, bool kFast>
TLM_AVX2_TARGET void run_block(const Band& b, const Geometry& g, const int16_t* w,
                               const Group& g0, const Group& g1, const Clamps& c, int32_t o) {
  const int64_t line = g.line, position = g.position, pixel = g.pixel;
  const int32_t out_w = b.out_w, c_n = b.c_n, stride_h = b.stride_h, taps0 = g.taps0;
  const int32_t f_h = kRows ? kRows : b.filter_h, f_w = kCols ? kCols : b.filter_w;
  const Group r0 = g0, r1 = g1;  // locals: the int8 stores cannot alias them
  const Clamps cl = c;
  for (int32_t r = 0; r < b.rows; ++r) {
    const int32_t top = r * stride_h, p = top & 1;
    const int16_t* x = b.x + (top >> 1) * line + 2 * o;
    const int16_t* wp = w + p * taps0 * 2 * kWidth;
    int8_t* out = b.out + int64_t{r} * out_w * c_n + o;
    const int32_t pairs = window_pairs(f_h, p);
    // With kRows fixed, both parities have the same count of pair rows only for odd kRows.
    constexpr int kPairs = kRows % 2 == 1 ? (kRows + 1) / 2 : 0;
    int32_t ox = 0;
    for (; ox + 2 <= out_w; ox += 2, x += 2 * pixel, out += 2 * c_n) {  // two pixels at a time
      __m256i y0[2], y1[2];  // per group, of the two pixels
      for (int32_t group = 0; group < kWidth / 8; ++group) {
        const Group& rg = group ? r1 : r0;
        __m256i a = rg.start, a_next = rg.start;
        window2<kWidth, kPairs, kCols>(x + 16 * group, wp + 16 * group, line, position, pixel,
                                       pairs, f_w, &a, &a_next);
        y0[group] = requantize8<kFast>(a, rg, cl);
        y1[group] = requantize8<kFast>(a_next, rg, cl);
      }
      if (kWidth == 16) {
        store16(out, y0[0], y0[1], cl);
        store16(out + c_n, y1[0], y1[1], cl);
      } else {
        store8(out, y0[0], cl);
        store8(out + c_n, y1[0], cl);
      }
    }
    for (; ox < out_w; ++ox, x += pixel, out += c_n) {
      __m256i acc[2] = {r0.start, r1.start};
      window<kWidth, kPairs, kCols>(x, wp, line, position, pairs, f_w, acc);
      if (kWidth == 16)
        store16(out, requantize8<kFast>(acc[0], r0, cl), requantize8<kFast>(acc[1], r1, cl), cl);
      else
        store8(out, requantize8<kFast>(acc[0], r0, cl), cl);
    }
  }
}

// The last block when it has only n < width channels (in_c not a multiple of 8): the sums in
// vectors, then requantize.h channel by channel.
TLM_AVX2_TARGET void run_part(const tlm_depthwise_conv2d_params* p, const Band& b,
                              const Geometry& g, const int16_t* w, const Channels& ch, int32_t o,
                              int32_t width, int32_t n) {
  // Per lane, sum(w) over the filter (the parity-0 taps), for bias' (see Numerics).
  alignas(32) int32_t sum_w[16];
  for (int32_t group = 0; group < width / 8; ++group) {
    __m256i sum = _mm256_setzero_si256();
    const int16_t* wt = w + 16 * group;
    for (int32_t t = 0; t < g.taps0; ++t, wt += 2 * width)
      sum = _mm256_add_epi32(
          sum, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt)),
                                 _mm256_set1_epi16(1)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(sum_w + 8 * group), sum);
  }
  for (int32_t r = 0; r < b.rows; ++r) {
    const int32_t top = r * b.stride_h, parity = top & 1;
    const int16_t* x = b.x + (top >> 1) * g.line + 2 * o;
    const int16_t* wp = w + parity * g.taps0 * 2 * width;
    int8_t* out = b.out + int64_t{r} * b.out_w * b.c_n + o;
    for (int32_t ox = 0; ox < b.out_w; ++ox, x += g.pixel, out += b.c_n) {
      __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      const int32_t pairs = window_pairs(b.filter_h, parity);
      if (width == 16)
        window<16, 0, 0>(x, wp, g.line, g.position, pairs, b.filter_w, acc);
      else
        window<8, 0, 0>(x, wp, g.line, g.position, pairs, b.filter_w, acc);
      alignas(32) int32_t lanes[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8), acc[1]);
      for (int32_t j = 0; j < n; ++j) {
        // Channel j's lane: groups {0-3, 8-11} and {4-7, 12-15} of 16; in order for 8.
        const int32_t lane = width == 8 ? j : (j & 3) + (j & 4 ? 8 : 0) + (j & 8 ? 4 : 0);
        const int32_t bias = (ch.bias ? ch.bias[o + j] : 0) + p->input_offset * sum_w[lane];
        int32_t acc32 = lanes[lane] + bias;
        acc32 = tlm_detail::multiply_by_quantized_multiplier(acc32, ch.multipliers[o + j],
                                                             ch.shifts[o + j]);
        int64_t v = int64_t{acc32} + p->output_offset;
        if (v < p->activation_min) v = p->activation_min;
        if (v > p->activation_max) v = p->activation_max;
        out[j] = static_cast<int8_t>(v);
      }
    }
  }
}

// Every channel block of a band.
template <int kRows, int kCols>
TLM_AVX2_TARGET void band_blocks(const tlm_depthwise_conv2d_params* p, const Band& b,
                                 const Geometry& g, const int16_t* w, const Channels& ch) {
  Clamps c;
  c.c32 = tlm_avx2::clamp8(p->output_offset, p->activation_min, p->activation_max);
  c.lo = _mm256_set1_epi16(static_cast<int16_t>(p->activation_min));
  c.hi = _mm256_set1_epi16(static_cast<int16_t>(p->activation_max));
  const int64_t bound = int64_t{255 * 128} * b.filter_h * b.filter_w;  // >= |window sum|
  const int32_t in_off = p->input_offset, out_off = p->output_offset;
  for (int32_t o = 0, width; o < g.c8; o += width) {
    width = block_width(o, g.c8);
    const int32_t n = b.c_n - o < width ? b.c_n - o : width;
    const int16_t* wb = w + int64_t{2} * o * g.taps;
    if (n < width) {
      run_part(p, b, g, wb, ch, o, width, n);
    } else if (width == 16) {
      // Both groups one way or the other.
      const bool fast = group_fast(ch, o, 16, 0, bound) && group_fast(ch, o, 16, 1, bound);
      const Group g0 = make_group(ch, wb, g.taps0, o, 16, 0, fast, in_off, out_off);
      const Group g1 = make_group(ch, wb, g.taps0, o, 16, 1, fast, in_off, out_off);
      if (fast)
        run_block<16, kRows, kCols, true>(b, g, wb, g0, g1, c, o);
      else
        run_block<16, kRows, kCols, false>(b, g, wb, g0, g1, c, o);
    } else {
      const Group g0 =
          make_group(ch, wb, g.taps0, o, 8, 0, group_fast(ch, o, 8, 0, bound), in_off, out_off);
      if (g0.fast)
        run_block<8, kRows, kCols, true>(b, g, wb, g0, g0, c, o);
      else
        run_block<8, kRows, kCols, false>(b, g, wb, g0, g0, c, o);
    }
  }
}

// Output rows [r0, r1) of image `batch`: their input rows widened into the band, then computed.
TLM_AVX2_TARGET void run_band(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                              const Geometry& g, const Channels& ch, const int8_t* input,
                              const int16_t* w, int32_t batch, int32_t r0, int32_t r1,
                              int16_t* band, int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, c_n = d->input_c;
  const int32_t y_top = r0 * p->stride_h - p->pad_top;  // input row of band row 0
  // The last window's last row is band row (r1 - 1 - r0) * stride_h + filter_h - 1.
  const int32_t pairs = ((r1 - 1 - r0) * p->stride_h + d->filter_h - 1) / 2 + 1;
  const int8_t* image = input + int64_t{batch} * in_h * in_w * c_n;
  for (int32_t v = 0; v < pairs; ++v) {
    const int32_t y = y_top + 2 * v;
    const int8_t* a = y >= 0 && y < in_h ? image + int64_t{y} * in_w * c_n : nullptr;
    const int8_t* b = y + 1 >= 0 && y + 1 < in_h ? image + int64_t{y + 1} * in_w * c_n : nullptr;
    widen_pair_row(a, b, g, in_w, c_n, p->pad_left, static_cast<int16_t>(-p->input_offset),
                   band + v * g.line);
  }
  Band b;
  b.x = band;
  b.rows = r1 - r0;
  b.out_w = d->output_w;
  b.c_n = c_n;
  b.filter_h = d->filter_h;
  b.filter_w = d->filter_w;
  b.stride_h = p->stride_h;
  b.out = output + (int64_t{batch} * d->output_h + r0) * d->output_w * c_n;
  if (d->filter_h == 3 && d->filter_w == 3)
    band_blocks<3, 3>(p, b, g, w, ch);
  else
    band_blocks<0, 0>(p, b, g, w, ch);
}

TLM_AVX2_TARGET void depthwise_fast(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                                    const Geometry& g, const Channels& ch, const int8_t* input,
                                    const int8_t* filter, int32_t row_begin, int32_t row_end,
                                    void* scratch, int8_t* output) {
  int16_t* w = reinterpret_cast<int16_t*>(round_up(reinterpret_cast<uintptr_t>(scratch), 32));
  int16_t* band = w + round_up(weight_bytes(d), 32) / sizeof(int16_t);
  pack_filter(d, g, filter, w);
  // Output rows per band: n of them need ((n - 1) * stride_h + filter_h - 1) / 2 + 1 pair rows
  // of this call's length (at most the one the scratch is sized for).
  const int64_t capacity =
      static_cast<int64_t>(band_pairs(d) * pair_row_bytes(d) / (sizeof(int16_t) * size_t(g.line)));
  const int64_t fit = (2 * capacity - d->filter_h) / p->stride_h + 1;
  const int32_t out_h = d->output_h;
  for (int32_t r = row_begin; r < row_end;) {
    const int32_t b = r / out_h, y = r - b * out_h;
    int64_t n = out_h - y;  // to the end of this image
    if (n > row_end - r) n = row_end - r;
    if (n > fit) n = fit;
    run_band(p, d, g, ch, input, w, b, y, y + static_cast<int32_t>(n), band, output);
    r += static_cast<int32_t>(n);
  }
}

}  // namespace

// Scratch: the packed filter and one band of pair rows, 32-byte aligned.
size_t tlm_depthwise_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims* d) {
  return 32 + round_up(weight_bytes(d), 32) + band_pairs(d) * pair_row_bytes(d);
}

bool tlm_depthwise_conv2d_s8_fast(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                                  const int32_t* multipliers, const int32_t* shifts,
                                  const int8_t* input, const int8_t* filter, const int32_t* bias,
                                  int32_t row_begin, int32_t row_end, void* scratch,
                                  int8_t* output) {
  if (!tlm_host_avx2() || p->depth_multiplier != 1 || p->dilation_h != 1 || p->dilation_w != 1 ||
      p->pad_left < 0 || p->pad_top < 0 || d->output_c != d->input_c)
    return false;
  // The padded row: pixels up to the last window's end, within the scratch's input_w + 2 * filter_w
  // (a checked window; else no fast path).
  const int64_t positions = int64_t{d->output_w - 1} * p->stride_w + d->filter_w;
  if (positions > int64_t{d->input_w} + 2 * d->filter_w) return false;
  Geometry g;
  g.c8 = channels8(d->input_c);
  g.positions = static_cast<int32_t>(positions);
  g.position = int64_t{g.c8} * 2;
  g.line = g.positions * g.position;
  g.pixel = p->stride_w * g.position;
  g.taps0 = window_pairs(d->filter_h, 0) * d->filter_w;
  g.taps = p->stride_h % 2 == 1 ? g.taps0 + window_pairs(d->filter_h, 1) * d->filter_w : g.taps0;
  if (row_begin < row_end)
    depthwise_fast(p, d, g, Channels{multipliers, shifts, bias}, input, filter, row_begin,
                   row_end, scratch, output);
  return true;
}

#else  // no fast path in this build

size_t tlm_depthwise_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims*) { return 0; }

bool tlm_depthwise_conv2d_s8_fast(const tlm_depthwise_conv2d_params*, const tlm_conv_dims*,
                                  const int32_t*, const int32_t*, const int8_t*, const int8_t*,
                                  const int32_t*, int32_t, int32_t, void*, int8_t*) {
  return false;
}

#endif  // TLM_HOST_AVX2
