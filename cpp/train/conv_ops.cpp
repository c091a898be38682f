#include "tinylearn/train/conv_ops.h"

#include "parallel.h"

#include "blas.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace tinylearn::ops {

namespace {

using std::ptrdiff_t;
using std::size_t;

// Recommended im2col scratch: the whole batch up to this many floats (8 MiB) ...
constexpr size_t kWorkspaceBudgetFloats = size_t(1) << 21;
// ... but at least this many output pixels per GEMM, so the GEMM stays efficient for deep kernels.
constexpr size_t kMinChunkRows = 256;
// GEMM dimensions are int in the CBLAS interface.
constexpr size_t kMaxGemmDim = size_t(INT_MAX);

// The build targets baseline x86-64 (SSE2). The loops outside the GEMMs (im2col/col2im, bias,
// depthwise) also get an AVX+FMA clone, picked at load time on CPUs that have it (GCC/Clang
// function multiversioning, Linux x86-64 only); results differ from the SSE2 clone by rounding.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define TL_SIMD_CLONES __attribute__((target_clones("fma", "default")))
#endif
#endif
#ifndef TL_SIMD_CLONES
#define TL_SIMD_CLONES
#endif
// Helpers of the cloned functions are inlined into each clone (and so compiled for its target).
#if defined(__GNUC__)
#define TL_ALWAYS_INLINE __attribute__((always_inline))
#else
#define TL_ALWAYS_INLINE
#endif

std::string shape_str(std::initializer_list<size_t> dims) {
  std::string s = "(";
  bool first = true;
  for (size_t d : dims) {
    if (!first) s += ", ";
    s += std::to_string(d);
    first = false;
  }
  return s + ")";
}

// a * b, throwing when it does not fit in size_t.
size_t checked_mul(size_t a, size_t b, const std::string& what) {
  if (a != 0 && b > SIZE_MAX / a)
    throw std::invalid_argument(what + ": tensor too large (size overflow)");
  return a * b;
}

bool is_depthwise(const Conv2DGeometry& g) { return g.M != 0; }

// A 1x1 kernel with stride 1 (no padding then, in both modes): the input is the im2col matrix.
bool is_pointwise(const Conv2DGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.pad_top == 0 && g.pad_left == 0 &&
         g.pad_bottom == 0 && g.pad_right == 0;
}

Conv2DGeometry make_geometry(const char* layer, size_t N, size_t H, size_t W, size_t C,
                             size_t KH, size_t KW, size_t OC, size_t M, size_t SH, size_t SW,
                             Padding padding) {
  const std::string name = layer;
  const std::string where = name + ": input (N, H, W, C) = " + shape_str({N, H, W, C}) +
                            ", kernel " + std::to_string(KH) + "x" + std::to_string(KW) +
                            ", strides " +
                            shape_str({SH, SW}) + ", padding '" + padding_name(padding) + "', " +
                            (M != 0 ? "depth_multiplier " + std::to_string(M)
                                    : "filters " + std::to_string(OC));
  if (N == 0 || H == 0 || W == 0 || C == 0)
    throw std::invalid_argument(where + ": the input has a zero size");
  if (KH == 0 || KW == 0) throw std::invalid_argument(where + ": the kernel size must be >= 1");
  if (M == 0 && OC == 0) throw std::invalid_argument(where + ": filters must be >= 1");
  if (SH == 0 || SW == 0) throw std::invalid_argument(where + ": strides must be >= 1");
  if (padding == Padding::Valid && (KH > H || KW > W))
    throw std::invalid_argument(where +
                                ": the kernel is larger than the input with 'valid' padding "
                                "(use 'same' padding or a smaller kernel)");
  const ConvDim dh = conv_dim(H, KH, SH, padding), dw = conv_dim(W, KW, SW, padding);
  Conv2DGeometry g{};
  g.N = N;
  g.H = H;
  g.W = W;
  g.C = C;
  g.KH = KH;
  g.KW = KW;
  g.M = M;
  g.OC = M != 0 ? checked_mul(C, M, name) : OC;
  g.SH = SH;
  g.SW = SW;
  g.OH = dh.out;
  g.OW = dw.out;
  g.pad_top = dh.pad_before;
  g.pad_bottom = dh.pad_after;
  g.pad_left = dw.pad_before;
  g.pad_right = dw.pad_after;
  // Every tensor (and the padded input) must be addressable; GEMM dimensions must fit in int.
  const size_t Hp = H + g.pad_top + g.pad_bottom, Wp = W + g.pad_left + g.pad_right;
  checked_mul(checked_mul(checked_mul(N, Hp, where), Wp, where), C, where);
  checked_mul(checked_mul(checked_mul(N, g.OH, where), g.OW, where), g.OC, where);
  const size_t K = checked_mul(checked_mul(KH, KW, where), C, where);
  checked_mul(K, M != 0 ? M : g.OC, where);
  if (K > kMaxGemmDim || g.OC > kMaxGemmDim)
    throw std::invalid_argument(where +
                                ": kernel too large (KH * KW * C and the filters must fit in int)");
  checked_mul(kMinChunkRows, K, where);  // the recommended workspace
  return g;
}

void check_conv2d(const Conv2DGeometry& g, const float* workspace, size_t workspace_floats,
                  bool needs_workspace) {
  if (is_depthwise(g))
    throw std::invalid_argument("conv2d: given a depthwise geometry (M != 0); use conv2d_geometry");
  if (!needs_workspace || is_pointwise(g)) return;
  const size_t K = g.KH * g.KW * g.C;
  if (workspace == nullptr || workspace_floats < K)
    throw std::invalid_argument("conv2d: the workspace must hold at least KH * KW * C = " +
                                std::to_string(K) + " floats (got " +
                                std::to_string(workspace ? workspace_floats : 0) +
                                "); size it with conv2d_workspace_floats");
}

void check_depthwise(const Conv2DGeometry& g) {
  if (!is_depthwise(g) || g.OC != g.C * g.M)
    throw std::invalid_argument(
        "depthwise_conv2d: not a depthwise geometry (needs M >= 1 and OC == C * M); use "
        "depthwise_conv2d_geometry");
}

// Output pixels per chunk for a given scratch size.
size_t chunk_rows(const Conv2DGeometry& g, size_t workspace_floats) {
  const size_t P = g.N * g.OH * g.OW;
  if (is_pointwise(g)) return std::min(P, kMaxGemmDim);
  const size_t K = g.KH * g.KW * g.C;
  return std::min({P, workspace_floats / K, kMaxGemmDim});
}

// d[0, n) = s[0, n). Short runs are common (KW * C can be 3): written in fixed-size blocks so
// that the compiler inlines the copy instead of calling memcpy/memmove for every run.
inline void copy_floats(float* __restrict d, const float* __restrict s, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; ++j) d[i + j] = s[i + j];
  if (n - i >= 4) {
    for (size_t j = 0; j < 4; ++j) d[i + j] = s[i + j];
    i += 4;
  }
  if (n - i >= 2) {
    d[i] = s[i];
    d[i + 1] = s[i + 1];
    i += 2;
  }
  if (i < n) d[i] = s[i];
}

// y[i] += a[i] * b[i]
inline void mul_acc(float* __restrict y, const float* __restrict a, const float* __restrict b,
                    size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a[i] * b[i];
}

// y[i] += a[i]
inline void add_acc(float* __restrict y, const float* __restrict a, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a[i];
}

// Output positions o in [0, out) whose tap k (of a window with stride s and padding pad_before)
// falls inside an input of size in: 0 <= o * s + k - pad_before < in, as a range [lo, hi).
void tap_range(size_t in, size_t out, size_t s, size_t pad_before, size_t k, size_t& lo,
               size_t& hi) {
  const ptrdiff_t off = ptrdiff_t(k) - ptrdiff_t(pad_before);  // input index = o * s + off
  const ptrdiff_t S = ptrdiff_t(s);
  lo = off >= 0 ? 0 : size_t((-off + S - 1) / S);
  const ptrdiff_t room = ptrdiff_t(in) - off;  // o * s < room
  hi = room <= 0 ? 0 : std::min(out, size_t((room + S - 1) / S));
  hi = std::max(hi, lo);
}

// Visits the im2col rows r0 .. r0 + rows - 1 (output pixels) one output row (n, oh) and one
// window row kh at a time, and within it output columns ow in order:
//   interior(dst, src, ow): the whole window row lies inside the input: the KW * C values at src
//                           (contiguous in NHWC) belong at dst;
//   border(dst, src, kw_lo, kw_hi, ow): only taps [kw_lo, kw_hi) are inside (src is tap kw_lo);
//                           src is null when the whole window row is padding.
// dst points at the window row kh of the pixel's im2col row.
template <class Interior, class Border>
TL_ALWAYS_INLINE inline void for_each_window_row(const Conv2DGeometry& g, size_t r0, size_t rows, Interior interior,
                         Border border) {
  const size_t K = g.KH * g.KW * g.C, rowlen = g.KW * g.C, OHW = g.OH * g.OW;
  // Columns whose window row is entirely inside the input: [in_lo, in_hi).
  size_t in_lo, in_hi, unused;
  tap_range(g.W, g.OW, g.SW, g.pad_left, 0, in_lo, unused);
  tap_range(g.W, g.OW, g.SW, g.pad_left, g.KW - 1, unused, in_hi);
  for (size_t r = 0; r < rows;) {
    const size_t pix = r0 + r, n = pix / OHW, oh = (pix / g.OW) % g.OH, ow0 = pix % g.OW;
    const size_t ow1 = std::min(g.OW, ow0 + (rows - r));
    const size_t a = std::min(std::max(ow0, in_lo), ow1), b = std::max(std::min(ow1, in_hi), a);
    for (size_t kh = 0; kh < g.KH; ++kh) {
      // Offset of window row kh in the im2col row of output column ow.
      auto dst = [&](size_t ow) { return (r + (ow - ow0)) * K + kh * rowlen; };
      const ptrdiff_t ih = ptrdiff_t(oh * g.SH + kh) - ptrdiff_t(g.pad_top);
      if (ih < 0 || ih >= ptrdiff_t(g.H)) {
        for (size_t ow = ow0; ow < ow1; ++ow) border(dst(ow), size_t(0), size_t(0), size_t(0), false);
        continue;
      }
      const size_t irow = (n * g.H + size_t(ih)) * g.W * g.C;
      auto edge = [&](size_t ow) {
        const ptrdiff_t iw0 = ptrdiff_t(ow * g.SW) - ptrdiff_t(g.pad_left);
        const size_t kw_lo = iw0 < 0 ? size_t(-iw0) : 0;
        const ptrdiff_t h = std::min(ptrdiff_t(g.KW), ptrdiff_t(g.W) - iw0);
        const size_t kw_hi = std::max(kw_lo, h > 0 ? size_t(h) : 0);
        if (kw_hi == kw_lo)
          border(dst(ow), size_t(0), size_t(0), size_t(0), false);
        else
          border(dst(ow), irow + size_t(iw0 + ptrdiff_t(kw_lo)) * g.C, kw_lo, kw_hi, true);
      };
      for (size_t ow = ow0; ow < a; ++ow) edge(ow);
      for (size_t ow = a; ow < b; ++ow) interior(dst(ow), irow + (ow * g.SW - g.pad_left) * g.C);
      for (size_t ow = b; ow < ow1; ++ow) edge(ow);
    }
    r += ow1 - ow0;
  }
}

// col (rows, KH * KW * C) <- the input windows of output pixels r0 .. r0 + rows - 1 (zero padded).
TL_SIMD_CLONES void im2col(float* col, const float* inp, const Conv2DGeometry& g, size_t r0,
                           size_t rows) {
  const size_t rowlen = g.KW * g.C, C = g.C;
  for_each_window_row(
      g, r0, rows, [&](size_t d, size_t s) { copy_floats(col + d, inp + s, rowlen); },
      [&](size_t d, size_t s, size_t kw_lo, size_t kw_hi, bool any) {
        float* dst = col + d;
        if (!any) {
          std::fill(dst, dst + rowlen, 0.0f);
          return;
        }
        std::fill(dst, dst + kw_lo * C, 0.0f);
        copy_floats(dst + kw_lo * C, inp + s, (kw_hi - kw_lo) * C);
        std::fill(dst + kw_hi * C, dst + rowlen, 0.0f);
      });
}

// dinp += col2im(dcol): the transpose of im2col (padding positions are dropped).
TL_SIMD_CLONES void col2im_add(float* dinp, const float* dcol, const Conv2DGeometry& g, size_t r0,
                               size_t rows) {
  const size_t rowlen = g.KW * g.C, C = g.C;
  for_each_window_row(
      g, r0, rows, [&](size_t d, size_t s) { add_acc(dinp + s, dcol + d, rowlen); },
      [&](size_t d, size_t s, size_t kw_lo, size_t kw_hi, bool any) {
        if (any) add_acc(dinp + s, dcol + d + kw_lo * C, (kw_hi - kw_lo) * C);
      });
}

// out (rows, OC) = A (rows, K) @ B (K, OC) [+ bias], all row-major.
TL_SIMD_CLONES void gemm_bias(float* out, const float* A, const float* B, const float* bias,
                              size_t rows, size_t K, size_t OC) {
  if (bias)
    for (size_t r = 0; r < rows; ++r) copy_floats(out + r * OC, bias, OC);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(OC), int(K), 1.0f, A,
              int(K), B, int(OC), bias ? 1.0f : 0.0f, out, int(OC));
}

// dbias[o] += sum over the P rows of dout (P, OC).
TL_SIMD_CLONES void bias_grad(float* dbias, const float* dout, size_t P, size_t OC) {
  std::vector<float> acc(OC, 0.0f);
  for (size_t r = 0; r < P; ++r) add_acc(acc.data(), dout + r * OC, OC);
  add_acc(dbias, acc.data(), OC);
}

// Depthwise loops, one output row (n, oh) at a time, taps (kh, kw) outer and output columns
// inner: the accumulations of consecutive columns are independent, and the innermost loop runs
// over the contiguous channels.
TL_SIMD_CLONES void depthwise_forward_impl(float* out, const float* inp, const float* kernel,
                                           const float* bias, const Conv2DGeometry& g, size_t n0,
                                           size_t n1) {
  const size_t C = g.C, M = g.M, OC = g.OC, rowlen = g.OW * OC;
  for (size_t n = n0; n < n1; ++n)
    for (size_t oh = 0; oh < g.OH; ++oh) {
      float* orow = out + (n * g.OH + oh) * rowlen;
      if (bias)
        for (size_t ow = 0; ow < g.OW; ++ow) copy_floats(orow + ow * OC, bias, OC);
      else
        std::fill(orow, orow + rowlen, 0.0f);
      for (size_t kh = 0; kh < g.KH; ++kh) {
        const ptrdiff_t ih = ptrdiff_t(oh * g.SH + kh) - ptrdiff_t(g.pad_top);
        if (ih < 0 || ih >= ptrdiff_t(g.H)) continue;
        const float* irow = inp + (n * g.H + size_t(ih)) * g.W * C;
        for (size_t kw = 0; kw < g.KW; ++kw) {
          size_t lo, hi;
          tap_range(g.W, g.OW, g.SW, g.pad_left, kw, lo, hi);
          const float* w = kernel + (kh * g.KW + kw) * OC;  // (C, M) slice, index c*M + m
          for (size_t ow = lo; ow < hi; ++ow) {
            const float* x = irow + (ow * g.SW + kw - g.pad_left) * C;
            float* o = orow + ow * OC;
            if (M == 1) {
              mul_acc(o, x, w, C);
            } else {
              for (size_t c = 0; c < C; ++c) {
                const float xc = x[c];
                float* __restrict oc = o + c * M;
                const float* __restrict wc = w + c * M;
                for (size_t m = 0; m < M; ++m) oc[m] += xc * wc[m];
              }
            }
          }
        }
      }
    }
}

// Channels per register block of the depthwise kernel gradient (accumulators in registers).
constexpr size_t kDwBlock = 16;

TL_SIMD_CLONES void depthwise_backward_impl(float* dinp, float* dkernel, const float* dout,
                                            const float* inp, const float* kernel,
                                            const Conv2DGeometry& g, size_t n0, size_t n1) {
  const size_t C = g.C, M = g.M, OC = g.OC, rowlen = g.OW * OC;
  for (size_t n = n0; n < n1; ++n)
    for (size_t oh = 0; oh < g.OH; ++oh) {
      const float* drow = dout + (n * g.OH + oh) * rowlen;
      for (size_t kh = 0; kh < g.KH; ++kh) {
        const ptrdiff_t ih = ptrdiff_t(oh * g.SH + kh) - ptrdiff_t(g.pad_top);
        if (ih < 0 || ih >= ptrdiff_t(g.H)) continue;
        const size_t irow_off = (n * g.H + size_t(ih)) * g.W * C;
        for (size_t kw = 0; kw < g.KW; ++kw) {
          size_t lo, hi;
          tap_range(g.W, g.OW, g.SW, g.pad_left, kw, lo, hi);
          const size_t koff = (kh * g.KW + kw) * OC;
          // Input offset of column ow's tap (ow >= lo keeps ow * SW + kw - pad_left >= 0).
          auto xoff = [&](size_t ow) { return irow_off + (ow * g.SW + kw - g.pad_left) * C; };
          if (dinp) {
            // dinp[c] += sum_m kernel[kh, kw, c, m] * dout[c*M + m]
            const float* w = kernel + koff;
            for (size_t ow = lo; ow < hi; ++ow) {
              float* dx = dinp + xoff(ow);
              const float* d = drow + ow * OC;
              if (M == 1) {
                mul_acc(dx, w, d, C);
              } else {
                for (size_t c = 0; c < C; ++c) {
                  float s = 0.0f;
                  for (size_t m = 0; m < M; ++m) s += w[c * M + m] * d[c * M + m];
                  dx[c] += s;
                }
              }
            }
          }
          if (dkernel) {
            // dkernel[kh, kw, c, m] += sum over the row's columns of x[c] * dout[c*M + m]
            float* dk = dkernel + koff;
            if (M == 1) {
              size_t c0 = 0;
              for (; c0 + kDwBlock <= C; c0 += kDwBlock) {
                float acc[kDwBlock] = {};
                for (size_t ow = lo; ow < hi; ++ow) {
                  const float* x = inp + xoff(ow) + c0;
                  const float* d = drow + ow * OC + c0;
                  for (size_t j = 0; j < kDwBlock; ++j) acc[j] += x[j] * d[j];
                }
                for (size_t j = 0; j < kDwBlock; ++j) dk[c0 + j] += acc[j];
              }
              for (size_t ow = lo; ow < hi && c0 < C; ++ow)
                mul_acc(dk + c0, inp + xoff(ow) + c0, drow + ow * OC + c0, C - c0);
            } else {
              for (size_t ow = lo; ow < hi; ++ow) {
                const float* x = inp + xoff(ow);
                const float* d = drow + ow * OC;
                for (size_t c = 0; c < C; ++c) {
                  const float xc = x[c];
                  float* __restrict dkc = dk + c * M;
                  const float* __restrict dc = d + c * M;
                  for (size_t m = 0; m < M; ++m) dkc[m] += xc * dc[m];
                }
              }
            }
          }
        }
      }
    }
}

}  // namespace

Padding parse_padding(const std::string& s) {
  std::string l = s;
  for (char& ch : l) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (l == "valid") return Padding::Valid;
  if (l == "same") return Padding::Same;
  throw std::invalid_argument("padding must be 'valid' or 'same', got '" + s + "'");
}

const char* padding_name(Padding p) { return p == Padding::Same ? "same" : "valid"; }

ConvDim conv_dim(size_t in, size_t k, size_t stride, Padding padding) {
  if (in == 0 || k == 0 || stride == 0)
    throw std::invalid_argument("conv_dim: input size " + std::to_string(in) + ", kernel size " +
                                std::to_string(k) + " and stride " + std::to_string(stride) +
                                " must all be >= 1");
  if (in > SIZE_MAX / 4 || k > SIZE_MAX / 4)
    throw std::invalid_argument("conv_dim: input size or kernel size too large");
  if (padding == Padding::Valid) {
    if (k > in)
      throw std::invalid_argument("conv_dim: kernel size " + std::to_string(k) +
                                  " is larger than the input size " + std::to_string(in) +
                                  " with 'valid' padding");
    return {(in - k) / stride + 1, 0, 0};
  }
  const size_t out = in / stride + (in % stride != 0);
  const size_t span = (out - 1) * stride + k;  // input extent the windows cover
  const size_t total = span > in ? span - in : 0;
  return {out, total / 2, total - total / 2};
}

Conv2DGeometry conv2d_geometry(size_t N, size_t H, size_t W, size_t C, size_t KH, size_t KW,
                               size_t OC, size_t SH, size_t SW, Padding padding) {
  return make_geometry("conv2d", N, H, W, C, KH, KW, OC, 0, SH, SW, padding);
}

Conv2DGeometry depthwise_conv2d_geometry(size_t N, size_t H, size_t W, size_t C, size_t KH,
                                         size_t KW, size_t M, size_t SH, size_t SW,
                                         Padding padding) {
  if (M == 0)
    throw std::invalid_argument("depthwise_conv2d: depth_multiplier must be >= 1 (got 0)");
  return make_geometry("depthwise_conv2d", N, H, W, C, KH, KW, 0, M, SH, SW, padding);
}

// Samples per part for the cores: the work of one conv pass is about P * K * OC multiply-adds.
size_t conv_parts(const Conv2DGeometry& g) {
  return par::parts_for(g.N, double(g.N * g.OH * g.OW) * double(g.KH * g.KW * g.C) * double(g.OC));
}

// Parts the given workspace allows: each part needs at least one im2col row (K floats).
size_t conv_parts(const Conv2DGeometry& g, size_t workspace_floats) {
  size_t parts = conv_parts(g);
  if (!is_pointwise(g)) parts = std::max<size_t>(1, std::min(parts, workspace_floats / (g.KH * g.KW * g.C)));
  return parts;
}

size_t conv2d_workspace_floats(const Conv2DGeometry& g) {
  if (is_pointwise(g)) return 0;
  // One im2col scratch per part: the part's samples up to the budget, at least kMinChunkRows.
  const size_t parts = conv_parts(g);
  const size_t K = g.KH * g.KW * g.C, P = (g.N + parts - 1) / parts * g.OH * g.OW;
  const size_t rows = std::min(P, std::max(kWorkspaceBudgetFloats / parts / K, kMinChunkRows));
  return parts * rows * K;
}

void conv2d_forward(float* out, const float* inp, const float* kernel, const float* bias,
                    const Conv2DGeometry& g, float* workspace, size_t workspace_floats) {
  check_conv2d(g, workspace, workspace_floats, true);
  par::blas_single_threaded();
  const size_t OHW = g.OH * g.OW, K = g.KH * g.KW * g.C, OC = g.OC;
  const size_t parts = conv_parts(g, workspace_floats);
  const size_t ws_part = workspace_floats / parts;
  const bool direct = is_pointwise(g);
  // Each part convolves its own samples with its own slice of the workspace.
  par::for_parts(g.N, parts, [&](size_t k, size_t n0, size_t n1) {
    float* ws = direct ? nullptr : workspace + k * ws_part;
    const size_t P = n1 * OHW, chunk = direct ? std::min(P, kMaxGemmDim) : chunk_rows(g, ws_part);
    for (size_t r0 = n0 * OHW; r0 < P; r0 += chunk) {
      const size_t rows = std::min(chunk, P - r0);
      const float* A = inp + r0 * g.C;  // pointwise: the input rows are the im2col rows
      if (!direct) {
        im2col(ws, inp, g, r0, rows);
        A = ws;
      }
      gemm_bias(out + r0 * OC, A, kernel, bias, rows, K, OC);
    }
  });
}

void conv2d_backward(float* dinp, float* dkernel, float* dbias, const float* dout,
                     const float* inp, const float* kernel, const Conv2DGeometry& g,
                     float* workspace, size_t workspace_floats) {
  check_conv2d(g, workspace, workspace_floats, dinp || dkernel);
  par::blas_single_threaded();
  const size_t OHW = g.OH * g.OW, K = g.KH * g.KW * g.C, OC = g.OC;
  if (dbias) bias_grad(dbias, dout, g.N * OHW, OC);
  if (!dinp && !dkernel) return;
  const size_t parts = conv_parts(g, workspace_floats);
  const size_t ws_part = workspace_floats / parts;
  const bool direct = is_pointwise(g);
  // Kernel gradients of parts 1.. go to their own buffers, added to part 0's in order below.
  std::vector<float> partial(dkernel ? (parts - 1) * K * OC : 0, 0.0f);
  par::for_parts(g.N, parts, [&](size_t k, size_t n0, size_t n1) {
    float* ws = direct ? nullptr : workspace + k * ws_part;
    float* dk = k == 0 ? dkernel : partial.data() + (k - 1) * K * OC;
    const size_t P = n1 * OHW, chunk = direct ? std::min(P, kMaxGemmDim) : chunk_rows(g, ws_part);
    for (size_t r0 = n0 * OHW; r0 < P; r0 += chunk) {
      const size_t rows = std::min(chunk, P - r0);
      const float* d = dout + r0 * OC;
      if (dkernel) {
        // dkernel (K, OC) += im2col^T (K, rows) @ dout (rows, OC)
        const float* A = inp + r0 * g.C;
        if (!direct) {
          im2col(ws, inp, g, r0, rows);
          A = ws;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(K), int(OC), int(rows), 1.0f, A,
                    int(K), d, int(OC), 1.0f, dk, int(OC));
      }
      if (dinp) {
        // dcol (rows, K) = dout (rows, OC) @ kernel^T (OC, K); dinp += col2im(dcol). A part's
        // windows read only its own samples, so the parts write disjoint parts of dinp.
        if (direct) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(K), int(OC), 1.0f,
                      d, int(OC), kernel, int(OC), 1.0f, dinp + r0 * g.C, int(K));
        } else {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(K), int(OC), 1.0f,
                      d, int(OC), kernel, int(OC), 0.0f, ws, int(K));
          col2im_add(dinp, ws, g, r0, rows);
        }
      }
    }
  });
  for (size_t k = 1; k < parts && dkernel; ++k)
    add_acc(dkernel, partial.data() + (k - 1) * K * OC, K * OC);
}

void depthwise_conv2d_forward(float* out, const float* inp, const float* kernel,
                              const float* bias, const Conv2DGeometry& g) {
  check_depthwise(g);
  // Samples split over the cores (each output row depends on its own sample only).
  const double work = double(g.N * g.OH * g.OW) * double(g.KH * g.KW * g.OC);
  par::for_parts(g.N, par::parts_for(g.N, work), [&](size_t, size_t n0, size_t n1) {
    depthwise_forward_impl(out, inp, kernel, bias, g, n0, n1);
  });
}

void depthwise_conv2d_backward(float* dinp, float* dkernel, float* dbias, const float* dout,
                               const float* inp, const float* kernel, const Conv2DGeometry& g) {
  check_depthwise(g);
  if (dbias) bias_grad(dbias, dout, g.N * g.OH * g.OW, g.OC);
  if (!dinp && !dkernel) return;
  // Samples split over the cores; kernel gradients of parts 1.. go to their own buffers, added to
  // part 0's in order (deterministic for a given thread count).
  const size_t K = g.KH * g.KW * g.OC;
  const size_t parts = par::parts_for(g.N, double(g.N * g.OH * g.OW) * double(K));
  std::vector<float> partial(dkernel ? (parts - 1) * K : 0, 0.0f);
  par::for_parts(g.N, parts, [&](size_t k, size_t n0, size_t n1) {
    float* dk = dkernel == nullptr ? nullptr : k == 0 ? dkernel : partial.data() + (k - 1) * K;
    depthwise_backward_impl(dinp, dk, dout, inp, kernel, g, n0, n1);
  });
  for (size_t k = 1; k < parts && dkernel; ++k) add_acc(dkernel, partial.data() + (k - 1) * K, K);
}

}  // namespace tinylearn::ops
