// Convolution kernels (conv2d, depthwise_conv2d; NHWC, Keras/TensorFlow semantics) against
// independent references: naive double-precision loops over an explicitly zero-padded input,
// TensorFlow's output-size/padding rules, hand-computed TensorFlow results, and central finite
// differences. Everything random is seeded.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "tinylearn/train/conv_ops.h"
#include "tl_reference.h"

namespace {

namespace ops = tinylearn::ops;
using ops::Padding;
using std::size_t;

std::vector<float> random_floats(tlref::Rng& rng, size_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.uniform(lo, hi));
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

using tlref::check_close;

// One spatial dimension, TensorFlow's rules, computed by counting window positions:
//   valid: window starts i * s with i * s + k <= in;   same: window starts i * s with i * s < in,
//   then total padding max((out - 1) * s + k - in, 0), before = total / 2, after = the rest.
struct TfDim {
  size_t out, before, after;
};
TfDim tf_dim(size_t in, size_t k, size_t s, Padding p) {
  size_t out = 0;
  if (p == Padding::Valid) {
    while (out * s + k <= in) ++out;
    return {out, 0, 0};
  }
  while (out * s < in) ++out;
  const long long total = std::max(0LL, (long long)((out - 1) * s + k) - (long long)in);
  return {out, size_t(total / 2), size_t(total - total / 2)};
}

// A convolution case; `F` is the filter count for conv2d and the depth multiplier for depthwise.
struct Case {
  size_t N, H, W, C, KH, KW, F, SH, SW;
  Padding pad;
};

std::string describe(const Case& c) {
  return "N=" + std::to_string(c.N) + " H=" + std::to_string(c.H) + " W=" + std::to_string(c.W) +
         " C=" + std::to_string(c.C) + " K=" + std::to_string(c.KH) + "x" + std::to_string(c.KW) +
         " F=" + std::to_string(c.F) + " S=" + std::to_string(c.SH) + "x" + std::to_string(c.SW) +
         " " + ops::padding_name(c.pad);
}

// The test's own view of the geometry (from tf_dim, not from the code under test).
struct RefGeo {
  size_t OH, OW, pt, pb, pl, pr;
};
RefGeo ref_geo(const Case& c) {
  const TfDim h = tf_dim(c.H, c.KH, c.SH, c.pad), w = tf_dim(c.W, c.KW, c.SW, c.pad);
  return {h.out, w.out, h.before, h.after, w.before, w.after};
}

// x (N, H, W, C) copied into an explicitly zero-padded (N, H + pt + pb, W + pl + pr, C) tensor.
std::vector<double> zero_pad(const std::vector<double>& x, const Case& c, const RefGeo& r) {
  const size_t Hp = c.H + r.pt + r.pb, Wp = c.W + r.pl + r.pr;
  std::vector<double> xp(c.N * Hp * Wp * c.C, 0.0);
  for (size_t n = 0; n < c.N; ++n)
    for (size_t h = 0; h < c.H; ++h)
      for (size_t w = 0; w < c.W; ++w)
        for (size_t ch = 0; ch < c.C; ++ch)
          xp[((n * Hp + h + r.pt) * Wp + w + r.pl) * c.C + ch] = x[((n * c.H + h) * c.W + w) * c.C + ch];
  return xp;
}

// Conv2D from the definition: out[n,oh,ow,o] = b[o] + sum_{kh,kw,c} xp[n, oh*SH+kh, ow*SW+kw, c] * k[kh,kw,c,o].
std::vector<double> conv2d_ref(const std::vector<double>& x, const std::vector<double>& k,
                               const std::vector<double>* b, const Case& c) {
  const RefGeo r = ref_geo(c);
  const size_t Hp = c.H + r.pt + r.pb, Wp = c.W + r.pl + r.pr, OC = c.F;
  REQUIRE((r.OH - 1) * c.SH + c.KH <= Hp);
  REQUIRE((r.OW - 1) * c.SW + c.KW <= Wp);
  const std::vector<double> xp = zero_pad(x, c, r);
  std::vector<double> out(c.N * r.OH * r.OW * OC);
  for (size_t n = 0; n < c.N; ++n)
    for (size_t oh = 0; oh < r.OH; ++oh)
      for (size_t ow = 0; ow < r.OW; ++ow)
        for (size_t o = 0; o < OC; ++o) {
          double s = b ? (*b)[o] : 0.0;
          for (size_t kh = 0; kh < c.KH; ++kh)
            for (size_t kw = 0; kw < c.KW; ++kw)
              for (size_t ch = 0; ch < c.C; ++ch)
                s += xp[((n * Hp + oh * c.SH + kh) * Wp + ow * c.SW + kw) * c.C + ch] *
                     k[((kh * c.KW + kw) * c.C + ch) * OC + o];
          out[((n * r.OH + oh) * r.OW + ow) * OC + o] = s;
        }
  return out;
}

// DepthwiseConv2D from the definition:
// out[n,oh,ow,ch*M+m] = b[ch*M+m] + sum_{kh,kw} xp[n, oh*SH+kh, ow*SW+kw, ch] * k[kh,kw,ch,m].
std::vector<double> depthwise_ref(const std::vector<double>& x, const std::vector<double>& k,
                                  const std::vector<double>* b, const Case& c) {
  const RefGeo r = ref_geo(c);
  const size_t Hp = c.H + r.pt + r.pb, Wp = c.W + r.pl + r.pr, M = c.F, OC = c.C * M;
  REQUIRE((r.OH - 1) * c.SH + c.KH <= Hp);
  REQUIRE((r.OW - 1) * c.SW + c.KW <= Wp);
  const std::vector<double> xp = zero_pad(x, c, r);
  std::vector<double> out(c.N * r.OH * r.OW * OC);
  for (size_t n = 0; n < c.N; ++n)
    for (size_t oh = 0; oh < r.OH; ++oh)
      for (size_t ow = 0; ow < r.OW; ++ow)
        for (size_t ch = 0; ch < c.C; ++ch)
          for (size_t m = 0; m < M; ++m) {
            double s = b ? (*b)[ch * M + m] : 0.0;
            for (size_t kh = 0; kh < c.KH; ++kh)
              for (size_t kw = 0; kw < c.KW; ++kw)
                s += xp[((n * Hp + oh * c.SH + kh) * Wp + ow * c.SW + kw) * c.C + ch] *
                     k[((kh * c.KW + kw) * c.C + ch) * M + m];
            out[((n * r.OH + oh) * r.OW + ow) * OC + ch * M + m] = s;
          }
  return out;
}

// Random case: N 1-3, H/W 1-9, C 1-5, F 1-4, kernel 1-4 (<= input for 'valid'), strides 1-3.
Case random_case(tlref::Rng& rng, size_t max_n = 3, size_t max_hw = 9, size_t max_c = 5) {
  Case c{};
  c.N = size_t(rng.range(1, std::int64_t(max_n)));
  c.H = size_t(rng.range(1, std::int64_t(max_hw)));
  c.W = size_t(rng.range(1, std::int64_t(max_hw)));
  c.C = size_t(rng.range(1, std::int64_t(max_c)));
  c.F = size_t(rng.range(1, 4));
  c.pad = rng.range(0, 1) ? Padding::Same : Padding::Valid;
  const std::int64_t kh_max = c.pad == Padding::Valid ? std::min<std::int64_t>(4, std::int64_t(c.H)) : 4;
  const std::int64_t kw_max = c.pad == Padding::Valid ? std::min<std::int64_t>(4, std::int64_t(c.W)) : 4;
  c.KH = size_t(rng.range(1, kh_max));
  c.KW = size_t(rng.range(1, kw_max));
  c.SH = size_t(rng.range(1, 3));
  c.SW = size_t(rng.range(1, 3));
  return c;
}

// Hand-picked cases that random draws may miss.
std::vector<Case> edge_cases() {
  const Padding V = Padding::Valid, S = Padding::Same;
  return {
      {2, 6, 6, 3, 3, 3, 2, 2, 2, S},  // same, stride 2: pads 0 before / 1 after (asymmetric)
      {1, 4, 5, 2, 2, 2, 3, 1, 1, S},  // even kernel: pads 0 / 1
      {1, 5, 7, 2, 4, 4, 2, 1, 1, S},  // kernel 4: pads 1 / 2
      {2, 8, 7, 2, 3, 2, 2, 3, 2, S},  // mixed strides and kernels, asymmetric pads
      {2, 7, 7, 2, 1, 1, 3, 3, 3, V},  // stride > kernel (1x1, stride 3)
      {1, 9, 8, 3, 2, 2, 2, 3, 3, V},  // stride > kernel (2x2, stride 3): skipped pixels
      {1, 9, 8, 3, 2, 2, 2, 3, 3, S},
      {3, 5, 4, 4, 1, 1, 4, 1, 1, V},  // 1x1 stride 1: pointwise GEMM path
      {3, 5, 4, 4, 1, 1, 4, 1, 1, S},
      {2, 5, 6, 3, 1, 1, 2, 2, 1, S},  // 1x1 with stride: im2col path
      {2, 4, 4, 3, 4, 4, 2, 1, 1, V},  // kernel == input: 1x1 output
      {2, 4, 4, 3, 4, 4, 2, 1, 1, S},  // kernel == input, same: pads 1 / 2
      {1, 2, 3, 2, 4, 4, 2, 1, 2, S},  // kernel > input with same padding
      {1, 1, 1, 1, 1, 1, 1, 1, 1, V},  // the smallest convolution
      {1, 1, 1, 3, 3, 3, 2, 2, 2, S},  // 1x1 input, 3x3 kernel, same
      {2, 9, 9, 5, 3, 3, 4, 1, 1, V},
      {1, 5, 4, 17, 3, 3, 1, 1, 1, S},  // many channels: the depthwise register blocks (16)
      {2, 4, 5, 34, 2, 3, 2, 2, 1, V},
  };
}

ops::Conv2DGeometry conv_geo(const Case& c) {
  return ops::conv2d_geometry(c.N, c.H, c.W, c.C, c.KH, c.KW, c.F, c.SH, c.SW, c.pad);
}
ops::Conv2DGeometry dw_geo(const Case& c) {
  return ops::depthwise_conv2d_geometry(c.N, c.H, c.W, c.C, c.KH, c.KW, c.F, c.SH, c.SW, c.pad);
}

// Checks the geometry against the test's own TensorFlow computation.
void check_geometry(const ops::Conv2DGeometry& g, const Case& c, bool depthwise) {
  const RefGeo r = ref_geo(c);
  CHECK(g.N == c.N);
  CHECK(g.H == c.H);
  CHECK(g.W == c.W);
  CHECK(g.C == c.C);
  CHECK(g.KH == c.KH);
  CHECK(g.KW == c.KW);
  CHECK(g.SH == c.SH);
  CHECK(g.SW == c.SW);
  CHECK(g.OC == (depthwise ? c.C * c.F : c.F));
  CHECK(g.M == (depthwise ? c.F : 0));
  CHECK(g.OH == r.OH);
  CHECK(g.OW == r.OW);
  CHECK(g.pad_top == r.pt);
  CHECK(g.pad_bottom == r.pb);
  CHECK(g.pad_left == r.pl);
  CHECK(g.pad_right == r.pr);
}

// A workspace for conv2d, at random: the recommended size, or room for a random number of output
// pixels (plus a few spare floats) so that the batch is processed in chunks. Null (size 0) when
// no workspace is needed (1x1 stride 1).
struct Workspace {
  std::vector<float> buf;
  float* ptr = nullptr;
  size_t floats = 0;
};
Workspace make_workspace(const ops::Conv2DGeometry& g, tlref::Rng& rng) {
  Workspace w;
  const size_t K = g.KH * g.KW * g.C, P = g.N * g.OH * g.OW;
  const size_t rec = ops::conv2d_workspace_floats(g);
  if (rec == 0 || rng.range(0, 1) == 0) {
    w.floats = rec;
  } else {
    const size_t rows = size_t(rng.range(1, std::int64_t(P)));  // chunks of `rows` pixels
    w.floats = rows * K + size_t(rng.range(0, std::int64_t(K) - 1));
  }
  w.buf.assign(w.floats, std::numeric_limits<float>::quiet_NaN());  // scratch holds garbage
  w.ptr = w.floats ? w.buf.data() : nullptr;
  return w;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central difference of f at x[i] (L is linear in every single parameter, so a large step is
// exact up to rounding).
double central_diff(std::vector<double>& x, size_t i, const std::function<double()>& f) {
  return tlref::central_diff(x, i, 1e-2, f);
}

}  // namespace

TEST_CASE("conv geometry: output sizes and pads follow TensorFlow's valid/same rules") {
  // Hand-checked TensorFlow values: (in, k, stride) -> out, pad_before, pad_after.
  struct Row {
    size_t in, k, s;
    Padding p;
    size_t out, before, after;
  };
  const Padding V = Padding::Valid, S = Padding::Same;
  const Row rows[] = {
      {28, 3, 1, V, 26, 0, 0}, {13, 3, 1, V, 11, 0, 0}, {7, 3, 3, V, 2, 0, 0},
      {5, 5, 1, V, 1, 0, 0},   {9, 2, 3, V, 3, 0, 0},   {28, 3, 1, S, 28, 1, 1},
      {5, 3, 2, S, 3, 1, 1},   {6, 3, 2, S, 3, 0, 1},   {4, 2, 1, S, 4, 0, 1},
      {4, 1, 3, S, 2, 0, 0},   {2, 5, 1, S, 2, 2, 2},   {4, 4, 1, S, 4, 1, 2},
      {1, 3, 2, S, 1, 1, 1},   {7, 1, 3, S, 3, 0, 0},   {10, 4, 3, S, 4, 1, 2},
  };
  for (const Row& r : rows) {
    CAPTURE(r.in);
    CAPTURE(r.k);
    CAPTURE(r.s);
    const ops::ConvDim d = ops::conv_dim(r.in, r.k, r.s, r.p);
    CHECK(d.out == r.out);
    CHECK(d.pad_before == r.before);
    CHECK(d.pad_after == r.after);
  }
  // Exhaustively against the window-counting reference.
  for (size_t in = 1; in <= 20; ++in)
    for (size_t k = 1; k <= 6; ++k)
      for (size_t s = 1; s <= 5; ++s)
        for (Padding p : {V, S}) {
          if (p == V && k > in) {
            CHECK_THROWS_AS(ops::conv_dim(in, k, s, p), std::invalid_argument);
            continue;
          }
          const TfDim t = tf_dim(in, k, s, p);
          const ops::ConvDim d = ops::conv_dim(in, k, s, p);
          CHECK(d.out == t.out);
          CHECK(d.pad_before == t.before);
          CHECK(d.pad_after == t.after);
          if (p == S) {
            CHECK(d.out == (in + s - 1) / s);  // ceil(in / stride)
            CHECK(d.pad_after - d.pad_before <= 1);
          } else {
            CHECK(d.out == (in - k) / s + 1);
          }
        }
  // Full 2-D geometries, random and edge cases.
  tlref::Rng rng(101);
  std::vector<Case> cases = edge_cases();
  for (int i = 0; i < 100; ++i) cases.push_back(random_case(rng));
  for (const Case& c : cases) {
    CAPTURE(describe(c));
    check_geometry(conv_geo(c), c, false);
    check_geometry(dw_geo(c), c, true);
  }
}

TEST_CASE("conv geometry: shapes that do not connect throw std::invalid_argument") {
  const Padding V = Padding::Valid, S = Padding::Same;
  // Kernel larger than the (unpadded) input with valid padding, in either dimension.
  CHECK_THROWS_AS(ops::conv2d_geometry(1, 2, 8, 1, 3, 3, 4, 1, 1, V), std::invalid_argument);
  CHECK_THROWS_AS(ops::conv2d_geometry(1, 8, 2, 1, 3, 3, 4, 1, 1, V), std::invalid_argument);
  CHECK_THROWS_AS(ops::depthwise_conv2d_geometry(1, 3, 3, 2, 4, 1, 1, 1, 1, V), std::invalid_argument);
  // ... while same padding accepts it (TensorFlow does).
  CHECK_NOTHROW(ops::conv2d_geometry(1, 2, 2, 1, 3, 3, 4, 1, 1, S));
  // Zero sizes and strides.
  for (int which = 0; which < 9; ++which) {
    size_t v[9] = {2, 5, 5, 3, 3, 3, 4, 1, 1};  // N H W C KH KW F SH SW
    v[which] = 0;
    CAPTURE(which);
    for (Padding p : {V, S}) {
      CHECK_THROWS_AS(ops::conv2d_geometry(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], p),
                      std::invalid_argument);
      CHECK_THROWS_AS(
          ops::depthwise_conv2d_geometry(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], p),
          std::invalid_argument);
    }
  }
  // Sizes whose tensors would not be addressable.
  const size_t huge = std::numeric_limits<size_t>::max() / 2;
  CHECK_THROWS_AS(ops::conv2d_geometry(huge, 4, 4, 4, 1, 1, 1, 1, 1, S), std::invalid_argument);
  CHECK_THROWS_AS(ops::conv2d_geometry(1, 4, 4, 1, 1, 1, huge, 1, 1, S), std::invalid_argument);
  // The message names the layer and the shapes.
  try {
    ops::conv2d_geometry(1, 2, 8, 1, 3, 3, 4, 1, 1, V);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    CHECK(msg.find("conv2d") != std::string::npos);
    CHECK(msg.find("(1, 2, 8, 1)") != std::string::npos);
    CHECK(msg.find("valid") != std::string::npos);
  }
  // Padding names.
  CHECK(ops::parse_padding("valid") == V);
  CHECK(ops::parse_padding("SAME") == S);
  CHECK_THROWS_AS(ops::parse_padding("full"), std::invalid_argument);
}

TEST_CASE("conv2d and depthwise_conv2d reject the other kind of geometry and a too-small workspace") {
  const ops::Conv2DGeometry cg = ops::conv2d_geometry(1, 4, 4, 2, 3, 3, 2, 1, 1, Padding::Same);
  const ops::Conv2DGeometry dg = ops::depthwise_conv2d_geometry(1, 4, 4, 2, 3, 3, 1, 1, 1, Padding::Same);
  std::vector<float> x(32, 0.5f), k(3 * 3 * 2 * 2, 0.5f), out(64), ws(1024);
  CHECK_THROWS_AS(ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, dg, ws.data(), ws.size()),
                  std::invalid_argument);
  CHECK_THROWS_AS(ops::depthwise_conv2d_forward(out.data(), x.data(), k.data(), nullptr, cg),
                  std::invalid_argument);
  CHECK_THROWS_AS(ops::depthwise_conv2d_backward(nullptr, nullptr, out.data(), out.data(), x.data(),
                                                 k.data(), cg),
                  std::invalid_argument);
  // One im2col row is KH * KW * C = 18 floats.
  CHECK_THROWS_AS(ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, cg, ws.data(), 17),
                  std::invalid_argument);
  CHECK_THROWS_AS(ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, cg, nullptr, 1024),
                  std::invalid_argument);
  CHECK_THROWS_AS(ops::conv2d_backward(nullptr, k.data(), nullptr, out.data(), x.data(), k.data(), cg,
                                       ws.data(), 17),
                  std::invalid_argument);
  CHECK_NOTHROW(ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, cg, ws.data(), 18));
  // Only the bias gradient needs no workspace.
  CHECK_NOTHROW(ops::conv2d_backward(nullptr, nullptr, k.data(), out.data(), x.data(), k.data(), cg,
                                     nullptr, 0));
  // A 1x1 stride-1 convolution needs none at all.
  const ops::Conv2DGeometry pw = ops::conv2d_geometry(1, 4, 4, 2, 1, 1, 3, 1, 1, Padding::Valid);
  CHECK(ops::conv2d_workspace_floats(pw) == 0);
  CHECK_NOTHROW(ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, pw, nullptr, 0));
}

TEST_CASE("conv2d_forward and depthwise_conv2d_forward reproduce hand-computed TensorFlow results") {
  // 3x3 input 1..9, 3x3 kernel of ones, same padding, stride 1: sums of 3x3 neighbourhoods.
  {
    std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9}, k(9, 1.0f), out(9);
    const auto g = ops::conv2d_geometry(1, 3, 3, 1, 3, 3, 1, 1, 1, Padding::Same);
    std::vector<float> ws(ops::conv2d_workspace_floats(g));
    ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, g, ws.data(), ws.size());
    CHECK(out == std::vector<float>{12, 21, 16, 27, 45, 33, 24, 39, 28});
  }
  // 4x4 input 1..16, 3x3 ones, same, stride 2: TensorFlow pads 0 rows/cols before, 1 after.
  {
    std::vector<float> x(16), k(9, 1.0f), out(4), bias{0.5f};
    for (int i = 0; i < 16; ++i) x[size_t(i)] = float(i + 1);
    const auto g = ops::conv2d_geometry(1, 4, 4, 1, 3, 3, 1, 2, 2, Padding::Same);
    std::vector<float> ws(ops::conv2d_workspace_floats(g));
    ops::conv2d_forward(out.data(), x.data(), k.data(), bias.data(), g, ws.data(), ws.size());
    CHECK(out == std::vector<float>{54.5f, 45.5f, 72.5f, 54.5f});
  }
  // Conv2D kernel layout (KH, KW, C_in, C_out): a 1x1 kernel is a (C_in, C_out) matrix.
  {
    std::vector<float> x{1, 2}, k{1, 10, 100, 1000, 10000, 100000}, out(3);  // (1, 1, 2, 3)
    const auto g = ops::conv2d_geometry(1, 1, 1, 2, 1, 1, 3, 1, 1, Padding::Valid);
    ops::conv2d_forward(out.data(), x.data(), k.data(), nullptr, g, nullptr, 0);
    CHECK(out == std::vector<float>{1 + 2 * 1000, 10 + 2 * 10000, 100 + 2 * 100000});
  }
  // Depthwise kernel (KH, KW, C, M): output channel c * M + m.
  {
    std::vector<float> x{2, 3}, k{1, 10, 100, 1000}, bias{0.5f, 0.25f, 0.125f, 1}, out(4);
    const auto g = ops::depthwise_conv2d_geometry(1, 1, 1, 2, 1, 1, 2, 1, 1, Padding::Valid);
    ops::depthwise_conv2d_forward(out.data(), x.data(), k.data(), bias.data(), g);
    CHECK(out == std::vector<float>{2.5f, 20.25f, 300.125f, 3001});
  }
}

TEST_CASE("conv2d_forward matches a naive double loop over random shapes (chunked workspaces too)") {
  tlref::Rng rng(2024);
  std::vector<Case> cases = edge_cases();
  for (int i = 0; i < 250; ++i) cases.push_back(random_case(rng));
  for (const Case& c : cases) {
    CAPTURE(describe(c));
    const ops::Conv2DGeometry g = conv_geo(c);
    const RefGeo r = ref_geo(c);
    const std::vector<float> x = random_floats(rng, c.N * c.H * c.W * c.C),
                             k = random_floats(rng, c.KH * c.KW * c.C * c.F),
                             b = random_floats(rng, c.F);
    const bool with_bias = rng.range(0, 1) == 1;
    Workspace ws = make_workspace(g, rng);
    std::vector<float> out(c.N * r.OH * r.OW * c.F, std::numeric_limits<float>::quiet_NaN());
    ops::conv2d_forward(out.data(), x.data(), k.data(), with_bias ? b.data() : nullptr, g, ws.ptr, ws.floats);
    const std::vector<double> bd = to_double(b);
    const std::vector<double> ref = conv2d_ref(to_double(x), to_double(k), with_bias ? &bd : nullptr, c);
    REQUIRE(ref.size() == out.size());
    for (size_t i = 0; i < out.size(); ++i) check_close(out[i], ref[i], 2e-6, 2e-6);
  }
}

TEST_CASE("depthwise_conv2d_forward matches a naive double loop over random shapes") {
  tlref::Rng rng(4048);
  std::vector<Case> cases = edge_cases();
  for (int i = 0; i < 250; ++i) cases.push_back(random_case(rng));
  for (const Case& c : cases) {
    CAPTURE(describe(c));
    const ops::Conv2DGeometry g = dw_geo(c);
    const RefGeo r = ref_geo(c);
    const std::vector<float> x = random_floats(rng, c.N * c.H * c.W * c.C),
                             k = random_floats(rng, c.KH * c.KW * c.C * c.F),
                             b = random_floats(rng, c.C * c.F);
    const bool with_bias = rng.range(0, 1) == 1;
    std::vector<float> out(c.N * r.OH * r.OW * c.C * c.F, std::numeric_limits<float>::quiet_NaN());
    ops::depthwise_conv2d_forward(out.data(), x.data(), k.data(), with_bias ? b.data() : nullptr, g);
    const std::vector<double> bd = to_double(b);
    const std::vector<double> ref = depthwise_ref(to_double(x), to_double(k), with_bias ? &bd : nullptr, c);
    REQUIRE(ref.size() == out.size());
    for (size_t i = 0; i < out.size(); ++i) check_close(out[i], ref[i], 1e-6, 1e-6);
  }
}

namespace {

// Gradients of L = sum(out * R) from the kernel under test, from zero-initialized buffers.
struct Grads {
  std::vector<float> dx, dk, db;
};

// Checks grads against central differences of the double reference.
void check_fd(const Case& c, bool depthwise, const std::vector<float>& x, const std::vector<float>& k,
              const std::vector<float>& b, const std::vector<float>& R, const Grads& g) {
  std::vector<double> xd = to_double(x), kd = to_double(k), bd = to_double(b);
  const std::vector<double> Rd = to_double(R);
  auto loss = [&]() {
    return dot(depthwise ? depthwise_ref(xd, kd, &bd, c) : conv2d_ref(xd, kd, &bd, c), Rd);
  };
  for (size_t i = 0; i < xd.size(); ++i) check_close(g.dx[i], central_diff(xd, i, loss), 1e-5, 1e-5);
  for (size_t i = 0; i < kd.size(); ++i) check_close(g.dk[i], central_diff(kd, i, loss), 1e-5, 1e-5);
  for (size_t i = 0; i < bd.size(); ++i) check_close(g.db[i], central_diff(bd, i, loss), 1e-5, 1e-5);
}

std::vector<Case> fd_cases(tlref::Rng& rng) {
  const Padding V = Padding::Valid, S = Padding::Same;
  std::vector<Case> cases = {
      {2, 6, 5, 2, 3, 3, 2, 2, 2, S},  // asymmetric same padding
      {1, 7, 6, 2, 2, 2, 2, 3, 3, V},  // stride > kernel
      {2, 4, 3, 3, 1, 1, 3, 1, 1, S},  // pointwise path
      {1, 5, 4, 2, 1, 1, 2, 2, 2, V},  // 1x1 strided
      {1, 4, 4, 2, 4, 4, 2, 1, 1, S},  // kernel == input, same
      {2, 3, 4, 2, 3, 4, 2, 1, 1, V},  // kernel == input, valid
      {1, 5, 4, 17, 3, 3, 1, 1, 1, S},  // many channels (depthwise register blocks of 16)
      {2, 4, 5, 34, 2, 3, 1, 2, 1, V},
  };
  for (int i = 0; i < 10; ++i) cases.push_back(random_case(rng, 2, 7, 4));
  return cases;
}

}  // namespace

TEST_CASE("conv2d_backward: dinp / dkernel / dbias match central finite differences of L = sum(out * R)") {
  tlref::Rng rng(77);
  for (const Case& c : fd_cases(rng)) {
    CAPTURE(describe(c));
    const ops::Conv2DGeometry g = conv_geo(c);
    const RefGeo r = ref_geo(c);
    const std::vector<float> x = random_floats(rng, c.N * c.H * c.W * c.C),
                             k = random_floats(rng, c.KH * c.KW * c.C * c.F),
                             b = random_floats(rng, c.F), R = random_floats(rng, c.N * r.OH * r.OW * c.F);
    Workspace ws = make_workspace(g, rng);
    Grads gr{std::vector<float>(x.size(), 0.0f), std::vector<float>(k.size(), 0.0f),
             std::vector<float>(b.size(), 0.0f)};
    ops::conv2d_backward(gr.dx.data(), gr.dk.data(), gr.db.data(), R.data(), x.data(), k.data(), g,
                         ws.ptr, ws.floats);
    check_fd(c, false, x, k, b, R, gr);
  }
}

TEST_CASE("depthwise_conv2d_backward: dinp / dkernel / dbias match central finite differences of L = sum(out * R)") {
  tlref::Rng rng(78);
  for (const Case& c : fd_cases(rng)) {
    CAPTURE(describe(c));
    const ops::Conv2DGeometry g = dw_geo(c);
    const RefGeo r = ref_geo(c);
    const std::vector<float> x = random_floats(rng, c.N * c.H * c.W * c.C),
                             k = random_floats(rng, c.KH * c.KW * c.C * c.F),
                             b = random_floats(rng, c.C * c.F),
                             R = random_floats(rng, c.N * r.OH * r.OW * c.C * c.F);
    Grads gr{std::vector<float>(x.size(), 0.0f), std::vector<float>(k.size(), 0.0f),
             std::vector<float>(b.size(), 0.0f)};
    ops::depthwise_conv2d_backward(gr.dx.data(), gr.dk.data(), gr.db.data(), R.data(), x.data(),
                                   k.data(), g);
    check_fd(c, true, x, k, b, R, gr);
  }
}

TEST_CASE("conv2d_backward and depthwise_conv2d_backward accumulate (+=) and accept null outputs") {
  const Padding V = Padding::Valid, S = Padding::Same;
  const Case cases[] = {
      {2, 6, 5, 3, 3, 3, 4, 2, 1, S},  // im2col path
      {2, 4, 5, 3, 1, 1, 2, 1, 1, V},  // pointwise path (conv2d)
      {3, 5, 5, 2, 2, 3, 1, 1, 2, V},  // depthwise M == 1
      {3, 5, 5, 2, 2, 3, 3, 1, 2, S},  // depthwise M > 1
      {2, 5, 5, 20, 3, 3, 1, 1, 1, S},  // depthwise register blocks (16) and tail
  };
  tlref::Rng rng(91);
  for (bool depthwise : {false, true})
    for (const Case& c : cases) {
      CAPTURE(describe(c));
      CAPTURE(depthwise);
      const ops::Conv2DGeometry g = depthwise ? dw_geo(c) : conv_geo(c);
      const size_t nx = c.N * c.H * c.W * c.C, nk = c.KH * c.KW * c.C * c.F, nb = g.OC,
                   ny = c.N * g.OH * g.OW * g.OC;
      const std::vector<float> x = random_floats(rng, nx), k = random_floats(rng, nk),
                               R = random_floats(rng, ny);
      Workspace ws = make_workspace(g, rng);
      auto backward = [&](float* dx, float* dk, float* db) {
        if (depthwise)
          ops::depthwise_conv2d_backward(dx, dk, db, R.data(), x.data(), k.data(), g);
        else
          ops::conv2d_backward(dx, dk, db, R.data(), x.data(), k.data(), g, ws.ptr, ws.floats);
      };
      // From zero.
      std::vector<float> g_x(nx, 0.0f), g_k(nk, 0.0f), g_b(nb, 0.0f);
      backward(g_x.data(), g_k.data(), g_b.data());
      // Onto buffers that already hold values: old + gradient.
      const std::vector<float> o_x = random_floats(rng, nx, -3, 3), o_k = random_floats(rng, nk, -3, 3),
                               o_b = random_floats(rng, nb, -3, 3);
      std::vector<float> a_x = o_x, a_k = o_k, a_b = o_b;
      backward(a_x.data(), a_k.data(), a_b.data());
      for (size_t i = 0; i < nx; ++i) check_close(a_x[i], double(o_x[i]) + g_x[i], 1e-5, 1e-6);
      for (size_t i = 0; i < nk; ++i) check_close(a_k[i], double(o_k[i]) + g_k[i], 1e-5, 1e-6);
      for (size_t i = 0; i < nb; ++i) check_close(a_b[i], double(o_b[i]) + g_b[i], 1e-5, 1e-6);
      // Each output alone (the others null) gives the same values; twice doubles them.
      std::vector<float> t_x(nx, 0.0f), t_k(nk, 0.0f), t_b(nb, 0.0f);
      for (int rep = 0; rep < 2; ++rep) {
        backward(t_x.data(), nullptr, nullptr);
        backward(nullptr, t_k.data(), nullptr);
        backward(nullptr, nullptr, t_b.data());
      }
      for (size_t i = 0; i < nx; ++i) check_close(t_x[i], 2.0 * g_x[i], 1e-6, 1e-6);
      for (size_t i = 0; i < nk; ++i) check_close(t_k[i], 2.0 * g_k[i], 1e-6, 1e-6);
      for (size_t i = 0; i < nb; ++i) check_close(t_b[i], 2.0 * g_b[i], 1e-6, 1e-6);
      backward(nullptr, nullptr, nullptr);  // nothing to do, must not crash
    }
}
