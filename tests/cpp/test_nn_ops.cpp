// nn_ops (pooling, batch norm, activations, losses, metrics, dropout) against independent
// double-precision references written from the definitions, and backward passes against
// central finite differences in double. Every random input is seeded.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "tinylearn/train/nn_ops.h"
#include "tinylearn/train/ops.h"
#include "tinylearn/train/random.h"
#include "tl_reference.h"

namespace {

namespace ops = tinylearn::ops;
using Vec = std::vector<double>;

std::vector<float> random_floats(tlref::Rng& rng, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.uniform(lo, hi));
  return v;
}

Vec to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

using tlref::central_diff;

// |got - want| <= abs + rel * |want|
using tlref::check_close;

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks grad (computed by a backward call on a buffer that held `old`) == old + FD gradient of
// f with respect to every entry of x.
void check_grad(const std::vector<float>& grad, const std::vector<float>& old, Vec& x, double eps,
                const std::function<double()>& f, double abs_tol, double rel_tol) {
  REQUIRE(grad.size() == x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    check_close(grad[i], double(old[i]) + central_diff(x, i, eps, f), abs_tol, rel_tol);
}

// ------------------------------------------------------------------------------ pooling refs

struct PoolCase {
  long N, H, W, C, PH, PW, SH, SW;
  bool same;
};

// TensorFlow's output size and leading pad for one dimension, from the documented formulas.
void tf_dim(long in, long p, long s, bool same, long& out, long& pad) {
  if (same) {
    out = long(std::ceil(double(in) / double(s)));
    pad = std::max((out - 1) * s + p - in, 0L) / 2;
  } else {
    out = long(std::floor(double(in - p) / double(s))) + 1;
    pad = 0;
  }
}

// Naive pooling: visit every (kh, kw) of the window, skip the padded cells; max or mean of the
// real ones. `arg` (optional) receives the first maximum's spatial index.
Vec pool_ref(const Vec& x, const PoolCase& c, bool is_max, std::vector<long>* arg = nullptr) {
  long OH, OW, pt, pl;
  tf_dim(c.H, c.PH, c.SH, c.same, OH, pt);
  tf_dim(c.W, c.PW, c.SW, c.same, OW, pl);
  Vec out(std::size_t(c.N * OH * OW * c.C));
  if (arg) arg->assign(out.size(), -1);
  for (long n = 0; n < c.N; ++n)
    for (long oh = 0; oh < OH; ++oh)
      for (long ow = 0; ow < OW; ++ow)
        for (long ch = 0; ch < c.C; ++ch) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0.0;
          long count = 0, best_idx = -1;
          for (long kh = 0; kh < c.PH; ++kh)
            for (long kw = 0; kw < c.PW; ++kw) {
              const long ih = oh * c.SH + kh - pt, iw = ow * c.SW + kw - pl;
              if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
              const double v = x[std::size_t(((n * c.H + ih) * c.W + iw) * c.C + ch)];
              if (v > best) {
                best = v;
                best_idx = ih * c.W + iw;
              }
              sum += v;
              ++count;
            }
          const std::size_t o = std::size_t(((n * OH + oh) * OW + ow) * c.C + ch);
          out[o] = is_max ? best : sum / double(count);
          if (arg) (*arg)[o] = best_idx;
        }
  return out;
}

PoolCase random_pool_case(tlref::Rng& rng, long max_hw, long max_c) {
  PoolCase c{};
  c.N = rng.range(1, 2);
  c.H = rng.range(1, max_hw);
  c.W = rng.range(1, max_hw);
  c.C = rng.range(1, max_c);
  c.PH = rng.range(1, 4);
  c.PW = rng.range(1, 4);
  c.SH = rng.range(1, 5);  // includes stride > pool
  c.SW = rng.range(1, 5);
  c.same = rng.range(0, 1) == 1;
  return c;
}

bool valid_fits(const PoolCase& c) { return c.same || (c.PH <= c.H && c.PW <= c.W); }

ops::Pool2dGeometry geometry(const PoolCase& c) {
  return ops::pool2d_geometry(std::size_t(c.N), std::size_t(c.H), std::size_t(c.W),
                              std::size_t(c.C), std::size_t(c.PH), std::size_t(c.PW),
                              std::size_t(c.SH), std::size_t(c.SW),
                              c.same ? ops::Padding::Same : ops::Padding::Valid);
}

// Distinct values 0.05 apart in a random order: no ties anywhere, and an FD step of 1e-3 never
// changes which cell is a window's maximum.
std::vector<float> tie_free(tlref::Rng& rng, std::size_t n) {
  std::vector<std::size_t> perm(n);
  std::iota(perm.begin(), perm.end(), std::size_t(0));
  for (std::size_t i = n; i > 1; --i) std::swap(perm[i - 1], perm[std::size_t(rng.range(0, long(i) - 1))]);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = float(0.05 * double(perm[i]) - 0.025 * double(n));
  return v;
}

}  // namespace

// =============================================================================== pooling

TEST_CASE("pool2d_geometry follows TensorFlow's valid/same formulas and rejects bad shapes") {
  using ops::Padding;
  // same, H = 5, pool 2, stride 2: OH = 3, pad_total = 1 -> top 0 (the extra row at the bottom).
  auto g = ops::pool2d_geometry(1, 5, 4, 1, 2, 3, 2, 1, Padding::Same);
  CHECK(g.OH == 3);
  CHECK(g.pad_top == 0);
  CHECK(g.OW == 4);  // ceil(4 / 1); pad_total = 3 + 3 - 4 = 2 -> left 1
  CHECK(g.pad_left == 1);
  g = ops::pool2d_geometry(2, 1, 1, 3, 5, 5, 1, 1, Padding::Same);  // pool larger than input
  CHECK(g.OH == 1);
  CHECK(g.pad_top == 2);
  g = ops::pool2d_geometry(1, 5, 7, 1, 2, 3, 3, 4, Padding::Valid);
  CHECK(g.OH == 2);  // floor((5 - 2) / 3) + 1
  CHECK(g.OW == 2);  // floor((7 - 3) / 4) + 1
  CHECK(g.pad_top == 0);
  CHECK(g.pad_left == 0);
  CHECK(g.in_size() == 35);
  CHECK(g.out_size() == 4);

  CHECK_THROWS_WITH_AS(ops::pool2d_geometry(1, 2, 5, 1, 3, 3, 1, 1, Padding::Valid),
                       doctest::Contains("larger than the input height 2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ops::pool2d_geometry(1, 5, 2, 1, 2, 3, 1, 1, Padding::Valid),
                       doctest::Contains("width"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ops::pool2d_geometry(1, 4, 4, 1, 2, 2, 0, 1, Padding::Same),
                       doctest::Contains("strides must be positive"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(ops::pool2d_geometry(1, 4, 4, 1, 0, 2, 1, 1, Padding::Same),
                       doctest::Contains("pool_size must be positive"), std::invalid_argument);
  CHECK_THROWS_AS(ops::pool2d_geometry(0, 4, 4, 1, 2, 2, 1, 1, Padding::Same), std::invalid_argument);
  CHECK_THROWS_AS(ops::pool2d_geometry(1, 4, 4, 0, 2, 2, 1, 1, Padding::Same), std::invalid_argument);
}

TEST_CASE("avg/max pool of a 3x3 image, 2x2 stride 2 'same': TensorFlow's known result") {
  const std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto g = ops::pool2d_geometry(1, 3, 3, 1, 2, 2, 2, 2, ops::Padding::Same);
  std::vector<float> out(g.out_size());
  ops::avg_pool2d_forward(out.data(), x.data(), g);
  // The average divides by the real cells only: (1+2+4+5)/4, (3+6)/2, (7+8)/2, 9/1.
  CHECK(out == std::vector<float>{3.0f, 4.5f, 7.5f, 9.0f});
  std::vector<std::int32_t> arg(g.out_size());
  ops::max_pool2d_forward(out.data(), arg.data(), x.data(), g);
  CHECK(out == std::vector<float>{5, 6, 8, 9});
  CHECK(arg == std::vector<std::int32_t>{4, 5, 7, 8});
}

TEST_CASE("max/avg pool forward match a naive double reference over random shapes and strides") {
  int checked = 0;
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    tlref::Rng rng(seed);
    const PoolCase c = random_pool_case(rng, 9, 5);
    CAPTURE(seed);
    if (!valid_fits(c)) {
      CHECK_THROWS_AS(geometry(c), std::invalid_argument);
      continue;
    }
    const auto g = geometry(c);
    long OH, OW, pt, pl;
    tf_dim(c.H, c.PH, c.SH, c.same, OH, pt);
    tf_dim(c.W, c.PW, c.SW, c.same, OW, pl);
    REQUIRE(g.OH == std::size_t(OH));
    REQUIRE(g.OW == std::size_t(OW));
    CHECK(g.pad_top == std::size_t(pt));
    CHECK(g.pad_left == std::size_t(pl));

    const std::vector<float> x = random_floats(rng, g.in_size(), -3, 3);
    std::vector<long> ref_arg;
    const Vec ref_max = pool_ref(to_double(x), c, true, &ref_arg), ref_avg = pool_ref(to_double(x), c, false);
    std::vector<float> out(g.out_size(), 99.0f);
    std::vector<std::int32_t> arg(g.out_size(), -7);
    ops::max_pool2d_forward(out.data(), arg.data(), x.data(), g);
    for (std::size_t i = 0; i < out.size(); ++i) {
      CHECK(double(out[i]) == ref_max[i]);
      CHECK(long(arg[i]) == ref_arg[i]);
    }
    ops::max_pool2d_forward(out.data(), nullptr, x.data(), g);  // no argmax buffer
    for (std::size_t i = 0; i < out.size(); ++i) CHECK(double(out[i]) == ref_max[i]);
    std::fill(out.begin(), out.end(), 99.0f);
    ops::avg_pool2d_forward(out.data(), x.data(), g);
    for (std::size_t i = 0; i < out.size(); ++i) check_close(out[i], ref_avg[i], 1e-6, 1e-6);
    ++checked;
  }
  CHECK(checked >= 30);
}

TEST_CASE("max/avg pool backward match finite differences and accumulate") {
  int checked = 0;
  for (std::uint64_t seed = 100; seed < 124; ++seed) {
    tlref::Rng rng(seed);
    const PoolCase c = random_pool_case(rng, 6, 3);
    if (!valid_fits(c)) continue;
    CAPTURE(seed);
    const auto g = geometry(c);
    const std::vector<float> x = tie_free(rng, g.in_size()), R = random_floats(rng, g.out_size()),
                             old = random_floats(rng, g.in_size(), -2, 2);
    Vec xd = to_double(x);
    const Vec Rd = to_double(R);
    for (bool is_max : {true, false}) {
      std::vector<float> dx = old;
      if (is_max) {
        std::vector<float> out(g.out_size());
        std::vector<std::int32_t> arg(g.out_size());
        ops::max_pool2d_forward(out.data(), arg.data(), x.data(), g);
        ops::max_pool2d_backward(dx.data(), R.data(), nullptr, arg.data(), g);
        // Without the argmax buffer the backward recomputes it from the input: same result.
        std::vector<float> dx2 = old;
        ops::max_pool2d_backward(dx2.data(), R.data(), x.data(), nullptr, g);
        CHECK(dx2 == dx);
      } else {
        ops::avg_pool2d_backward(dx.data(), R.data(), g);
      }
      check_grad(dx, old, xd, 1e-3, [&]() { return dot(pool_ref(xd, c, is_max), Rd); }, 1e-5, 1e-5);
    }
    ++checked;
  }
  CHECK(checked >= 10);
}

TEST_CASE("max pool ties: the gradient goes to the first maximum in scan order") {
  // A constant image with 'same' padding (pad_top = pad_left = 1): every window's first real
  // cell in row-major order receives its gradient.
  const auto g = ops::pool2d_geometry(1, 4, 4, 2, 3, 3, 2, 2, ops::Padding::Same);
  REQUIRE(g.pad_top == 0);  // OH = 2, pad_total = 2 + 3 - 4 = 1 -> top 0
  const auto g2 = ops::pool2d_geometry(1, 4, 4, 2, 3, 3, 1, 1, ops::Padding::Same);
  REQUIRE(g2.pad_top == 1);
  for (const auto& geo : {g, g2}) {
    const std::vector<float> x(geo.in_size(), 0.5f);
    std::vector<float> out(geo.out_size());
    std::vector<std::int32_t> arg(geo.out_size());
    ops::max_pool2d_forward(out.data(), arg.data(), x.data(), geo);
    PoolCase c{1, 4, 4, 2, 3, 3, long(geo.SH), long(geo.SW), true};
    std::vector<long> ref_arg;
    pool_ref(to_double(x), c, true, &ref_arg);
    for (std::size_t i = 0; i < arg.size(); ++i) CHECK(long(arg[i]) == ref_arg[i]);
    std::vector<float> dx(geo.in_size(), 0.0f), dx2(geo.in_size(), 0.0f);
    const std::vector<float> ones(geo.out_size(), 1.0f);
    ops::max_pool2d_backward(dx.data(), ones.data(), nullptr, arg.data(), geo);
    ops::max_pool2d_backward(dx2.data(), ones.data(), x.data(), nullptr, geo);
    CHECK(dx == dx2);
    std::vector<float> want(geo.in_size(), 0.0f);
    for (std::size_t i = 0; i < arg.size(); ++i) want[std::size_t(ref_arg[i]) * 2 + i % 2] += 1.0f;
    CHECK(dx == want);
  }
  // stride 1, pad 1: output (0, 0)'s window starts at the padded (-1, -1): first real cell (0, 0).
  std::vector<float> out(g2.out_size());
  std::vector<std::int32_t> arg(g2.out_size());
  const std::vector<float> x(g2.in_size(), -1.0f);
  ops::max_pool2d_forward(out.data(), arg.data(), x.data(), g2);
  CHECK(arg[0] == 0);
  CHECK(arg[(1 * 4 + 2) * 2] == 0 * 4 + 1);  // output (1, 2): window rows 0..2, cols 1..3
  CHECK(out[0] == -1.0f);  // padding never enters the max (no 0 from padded cells)
}

TEST_CASE("global_avg_pool2d forward/backward match the definition and accumulate") {
  tlref::Rng rng(7);
  const std::size_t N = 2, H = 3, W = 5, C = 4;
  const std::vector<float> x = random_floats(rng, N * H * W * C), R = random_floats(rng, N * C),
                           old = random_floats(rng, N * H * W * C);
  std::vector<float> out(N * C, 99.0f);
  ops::global_avg_pool2d_forward(out.data(), x.data(), N, H, W, C);
  Vec xd = to_double(x);
  auto ref = [&]() {
    Vec o(N * C, 0.0);
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t p = 0; p < H * W; ++p)
        for (std::size_t c = 0; c < C; ++c) o[n * C + c] += xd[(n * H * W + p) * C + c] / double(H * W);
    return o;
  };
  const Vec want = ref();
  for (std::size_t i = 0; i < out.size(); ++i) check_close(out[i], want[i], 1e-6, 1e-6);
  std::vector<float> dx = old;
  ops::global_avg_pool2d_backward(dx.data(), R.data(), N, H, W, C);
  const Vec Rd = to_double(R);
  check_grad(dx, old, xd, 1e-3, [&]() { return dot(ref(), Rd); }, 1e-6, 1e-5);
}

// =============================================================================== batch norm

namespace {

struct BnRef {
  Vec out, mean, var;
};

// Batch norm of an (M, C) view in double, from the definition: biased batch variance.
BnRef bn_train_ref(const Vec& x, const Vec* gamma, const Vec* beta, std::size_t M, std::size_t C,
                   double eps) {
  BnRef r{Vec(M * C), Vec(C, 0.0), Vec(C, 0.0)};
  for (std::size_t c = 0; c < C; ++c) {
    for (std::size_t m = 0; m < M; ++m) r.mean[c] += x[m * C + c];
    r.mean[c] /= double(M);
    for (std::size_t m = 0; m < M; ++m) r.var[c] += (x[m * C + c] - r.mean[c]) * (x[m * C + c] - r.mean[c]);
    r.var[c] /= double(M);
    for (std::size_t m = 0; m < M; ++m) {
      const double xhat = (x[m * C + c] - r.mean[c]) / std::sqrt(r.var[c] + eps);
      r.out[m * C + c] = (gamma ? (*gamma)[c] : 1.0) * xhat + (beta ? (*beta)[c] : 0.0);
    }
  }
  return r;
}

Vec bn_infer_ref(const Vec& x, const Vec& gamma, const Vec& beta, const Vec& mm, const Vec& mv,
                 std::size_t M, std::size_t C, double eps) {
  Vec out(M * C);
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t c = 0; c < C; ++c)
      out[m * C + c] = gamma[c] * (x[m * C + c] - mm[c]) / std::sqrt(mv[c] + eps) + beta[c];
  return out;
}

}  // namespace

TEST_CASE("batch_norm training forward: batch statistics, biased variance, Keras moving update") {
  // NHWC (N=3, H=2, W=3, C=4) -> M = 18 rows; and a (N=5, C=3) dense activation.
  struct Shape { std::size_t M, C; };
  for (const Shape s : {Shape{3 * 2 * 3, 4}, Shape{5, 3}})
    for (float momentum : {0.99f, 0.9f}) {
      tlref::Rng rng(s.M * 10 + s.C);
      const std::size_t M = s.M, C = s.C;
      std::vector<float> x = random_floats(rng, M * C, -2, 2);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += 5.0f * float(i % C);  // channel offsets
      const std::vector<float> gamma = random_floats(rng, C, 0.5, 2), beta = random_floats(rng, C),
                               mm0 = random_floats(rng, C), mv0 = random_floats(rng, C, 0.5, 2);
      std::vector<float> out(M * C), mean(C), inv_std(C), mm = mm0, mv = mv0;
      if (momentum == 0.99f)  // the defaults are Keras's: momentum 0.99, epsilon 1e-3
        ops::batch_norm_forward_train(out.data(), mean.data(), inv_std.data(), mm.data(), mv.data(),
                                      x.data(), gamma.data(), beta.data(), M, C);
      else
        ops::batch_norm_forward_train(out.data(), mean.data(), inv_std.data(), mm.data(), mv.data(),
                                      x.data(), gamma.data(), beta.data(), M, C, momentum, 1e-3f);
      const Vec gd = to_double(gamma), bd = to_double(beta);
      const BnRef r = bn_train_ref(to_double(x), &gd, &bd, M, C, 1e-3);
      for (std::size_t i = 0; i < out.size(); ++i) check_close(out[i], r.out[i], 2e-5, 2e-5);
      for (std::size_t c = 0; c < C; ++c) {
        check_close(mean[c], r.mean[c], 1e-6, 1e-6);
        check_close(inv_std[c], 1.0 / std::sqrt(r.var[c] + 1e-3), 1e-6, 1e-5);
        const double m = double(momentum);
        check_close(mm[c], double(mm0[c]) * m + r.mean[c] * (1.0 - m), 1e-6, 1e-5);
        check_close(mv[c], double(mv0[c]) * m + r.var[c] * (1.0 - m), 1e-6, 1e-5);  // biased var
      }
      // Null moving buffers skip the update; gamma/beta null mean scale=False / center=False.
      std::vector<float> out2(M * C);
      ops::batch_norm_forward_train(out2.data(), mean.data(), inv_std.data(), nullptr, nullptr,
                                    x.data(), nullptr, nullptr, M, C);
      const BnRef r2 = bn_train_ref(to_double(x), nullptr, nullptr, M, C, 1e-3);
      for (std::size_t i = 0; i < out2.size(); ++i) check_close(out2[i], r2.out[i], 2e-5, 2e-5);
      // In place.
      std::vector<float> inplace = x;
      ops::batch_norm_forward_train(inplace.data(), mean.data(), inv_std.data(), nullptr, nullptr,
                                    inplace.data(), gamma.data(), beta.data(), M, C);
      for (std::size_t i = 0; i < out.size(); ++i) CHECK(inplace[i] == out[i]);
    }
}

TEST_CASE("batch_norm moving statistics converge to the data's mean and biased variance") {
  // Repeated training steps on the same batch: moving = batch * (1 - 0.99^t) + init * 0.99^t.
  const std::size_t M = 4, C = 1;
  const std::vector<float> x{1, 2, 3, 6};  // mean 3, biased var 3.5 (unbiased would be 14/3)
  std::vector<float> out(M), mean(C), inv_std(C), mm{0.0f}, mv{1.0f};
  for (int t = 0; t < 100; ++t)
    ops::batch_norm_forward_train(out.data(), mean.data(), inv_std.data(), mm.data(), mv.data(),
                                  x.data(), nullptr, nullptr, M, C);
  const double decay = std::pow(0.99, 100);
  check_close(mm[0], 3.0 * (1 - decay), 1e-5, 1e-4);
  check_close(mv[0], 3.5 * (1 - decay) + decay, 1e-5, 1e-4);
}

TEST_CASE("batch_norm inference forward uses the moving statistics") {
  tlref::Rng rng(3);
  const std::size_t M = 12, C = 5;
  const std::vector<float> x = random_floats(rng, M * C, -3, 3), gamma = random_floats(rng, C),
                           beta = random_floats(rng, C), mm = random_floats(rng, C),
                           mv = random_floats(rng, C, 0.1, 3);
  std::vector<float> out(M * C);
  ops::batch_norm_forward_inference(out.data(), x.data(), gamma.data(), beta.data(), mm.data(),
                                    mv.data(), M, C);
  const Vec want = bn_infer_ref(to_double(x), to_double(gamma), to_double(beta), to_double(mm),
                                to_double(mv), M, C, 1e-3);
  for (std::size_t i = 0; i < out.size(); ++i) check_close(out[i], want[i], 1e-5, 1e-5);
  // gamma/beta null == ones/zeros
  ops::batch_norm_forward_inference(out.data(), x.data(), nullptr, nullptr, mm.data(), mv.data(), M, C);
  const Vec want2 = bn_infer_ref(to_double(x), Vec(C, 1.0), Vec(C, 0.0), to_double(mm),
                                 to_double(mv), M, C, 1e-3);
  for (std::size_t i = 0; i < out.size(); ++i) check_close(out[i], want2[i], 1e-5, 1e-5);
}

TEST_CASE("batch_norm training backward (dx through the batch statistics, dgamma, dbeta) matches FD") {
  struct Shape { std::size_t M, C; };
  for (const Shape s : {Shape{2 * 3 * 2, 3}, Shape{6, 2}}) {
    tlref::Rng rng(s.M + 100 * s.C);
    const std::size_t M = s.M, C = s.C;
    const std::vector<float> x = random_floats(rng, M * C, -2, 2), gamma = random_floats(rng, C, 0.5, 2),
                             beta = random_floats(rng, C), R = random_floats(rng, M * C);
    std::vector<float> out(M * C), mean(C), inv_std(C);
    ops::batch_norm_forward_train(out.data(), mean.data(), inv_std.data(), nullptr, nullptr, x.data(),
                                  gamma.data(), beta.data(), M, C);
    const std::vector<float> old_x = random_floats(rng, M * C), old_g = random_floats(rng, C),
                             old_b = random_floats(rng, C);
    std::vector<float> dx = old_x, dg = old_g, db = old_b;
    ops::batch_norm_backward(dx.data(), dg.data(), db.data(), R.data(), x.data(), mean.data(),
                             inv_std.data(), gamma.data(), M, C);
    Vec xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
    const Vec Rd = to_double(R);
    auto loss = [&]() { return dot(bn_train_ref(xd, &gd, &bd, M, C, 1e-3).out, Rd); };
    check_grad(dx, old_x, xd, 1e-4, loss, 1e-4, 1e-3);
    check_grad(dg, old_g, gd, 1e-4, loss, 1e-5, 1e-4);
    check_grad(db, old_b, bd, 1e-4, loss, 1e-5, 1e-4);

    // scale=False, center=False, and only dx requested.
    std::vector<float> dx2(M * C, 0.0f);
    ops::batch_norm_forward_train(out.data(), mean.data(), inv_std.data(), nullptr, nullptr, x.data(),
                                  nullptr, nullptr, M, C);
    ops::batch_norm_backward(dx2.data(), nullptr, nullptr, R.data(), x.data(), mean.data(),
                             inv_std.data(), nullptr, M, C);
    auto loss2 = [&]() { return dot(bn_train_ref(xd, nullptr, nullptr, M, C, 1e-3).out, Rd); };
    check_grad(dx2, std::vector<float>(M * C, 0.0f), xd, 1e-4, loss2, 1e-4, 1e-3);
    // The gradient through the batch statistics sums to zero per channel.
    for (std::size_t c = 0; c < C; ++c) {
      double col = 0.0;
      for (std::size_t m = 0; m < M; ++m) col += dx2[m * C + c];
      CHECK(std::fabs(col) < 1e-4);
    }
  }
}

TEST_CASE("batch_norm inference backward (frozen statistics) matches FD and accumulates") {
  tlref::Rng rng(77);
  const std::size_t M = 7, C = 3;
  const std::vector<float> x = random_floats(rng, M * C, -2, 2), gamma = random_floats(rng, C),
                           beta = random_floats(rng, C), mm = random_floats(rng, C),
                           mv = random_floats(rng, C, 0.2, 2), R = random_floats(rng, M * C);
  const std::vector<float> old_x = random_floats(rng, M * C), old_g = random_floats(rng, C),
                           old_b = random_floats(rng, C);
  std::vector<float> dx = old_x, dg = old_g, db = old_b;
  ops::batch_norm_backward_inference(dx.data(), dg.data(), db.data(), R.data(), x.data(),
                                     gamma.data(), mm.data(), mv.data(), M, C);
  Vec xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
  const Vec Rd = to_double(R), mmd = to_double(mm), mvd = to_double(mv);
  auto loss = [&]() { return dot(bn_infer_ref(xd, gd, bd, mmd, mvd, M, C, 1e-3), Rd); };
  check_grad(dx, old_x, xd, 1e-4, loss, 1e-5, 1e-4);
  check_grad(dg, old_g, gd, 1e-4, loss, 1e-5, 1e-4);
  check_grad(db, old_b, bd, 1e-4, loss, 1e-5, 1e-4);
}

// =============================================================================== activations

TEST_CASE("relu6, sigmoid, tanh: forward vs the definitions, backward vs FD, accumulation, in place") {
  tlref::Rng rng(5);
  const std::size_t n = 200;
  std::vector<float> x(n);
  for (float& v : x) {  // stay 0.05 away from relu6's kinks at 0 and 6
    do v = float(rng.uniform(-3, 9)); while (std::fabs(v) < 0.05f || std::fabs(v - 6.0f) < 0.05f);
  }
  const std::vector<float> R = random_floats(rng, n), old = random_floats(rng, n);
  using Fwd = void (*)(float*, const float*, std::size_t);
  using Bwd = void (*)(float*, const float*, const float*, std::size_t);
  struct Act {
    const char* name;
    Fwd fwd;
    Bwd bwd;
    double (*ref)(double);
  };
  const Act acts[] = {
      {"relu6", ops::relu6_forward, ops::relu6_backward, [](double v) { return std::min(std::max(v, 0.0), 6.0); }},
      {"sigmoid", ops::sigmoid_forward, ops::sigmoid_backward, [](double v) { return 1.0 / (1.0 + std::exp(-v)); }},
      {"tanh", ops::tanh_forward, ops::tanh_backward, [](double v) { return std::tanh(v); }},
  };
  for (const Act& a : acts) {
    CAPTURE(a.name);
    std::vector<float> out(n);
    a.fwd(out.data(), x.data(), n);
    for (std::size_t i = 0; i < n; ++i) check_close(out[i], a.ref(x[i]), 1e-6, 1e-6);
    std::vector<float> dx = old;
    a.bwd(dx.data(), R.data(), out.data(), n);
    Vec xd = to_double(x);
    const Vec Rd = to_double(R);
    check_grad(dx, old, xd, 1e-4, [&]() {
      double s = 0.0;
      for (std::size_t i = 0; i < n; ++i) s += a.ref(xd[i]) * Rd[i];
      return s;
    }, 1e-5, 1e-4);
    std::vector<float> inplace = x;
    a.fwd(inplace.data(), inplace.data(), n);
    CHECK(inplace == out);
  }
  // Saturation: finite and exact limits, no overflow for large |x|.
  const std::vector<float> big{-1e4f, -100.0f, -20.0f, 20.0f, 100.0f, 1e4f};
  std::vector<float> s(big.size());
  ops::sigmoid_forward(s.data(), big.data(), big.size());
  for (std::size_t i = 0; i < big.size(); ++i) {
    CHECK(std::isfinite(s[i]));
    check_close(s[i], 1.0 / (1.0 + std::exp(-double(big[i]))), 1e-30, 1e-6);
  }
  CHECK(s[0] == 0.0f);
  CHECK(s[5] == 1.0f);
  ops::relu6_forward(s.data(), big.data(), big.size());
  CHECK(s == std::vector<float>{0, 0, 0, 6, 6, 6});
}

TEST_CASE("softmax: rows sum to 1, matches the definition, stable for logits of 1e4, backward FD") {
  tlref::Rng rng(9);
  const std::size_t B = 6, K = 7;
  const std::vector<float> z = random_floats(rng, B * K, -4, 4), R = random_floats(rng, B * K),
                           old = random_floats(rng, B * K);
  auto ref = [&](const Vec& zz) {
    Vec y(B * K);
    for (std::size_t b = 0; b < B; ++b) {
      double s = 0.0;
      for (std::size_t k = 0; k < K; ++k) s += std::exp(zz[b * K + k]);
      for (std::size_t k = 0; k < K; ++k) y[b * K + k] = std::exp(zz[b * K + k]) / s;
    }
    return y;
  };
  std::vector<float> y(B * K);
  ops::softmax_forward(y.data(), z.data(), B, K);
  const Vec want = ref(to_double(z));
  for (std::size_t b = 0; b < B; ++b) {
    double s = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      check_close(y[b * K + k], want[b * K + k], 1e-7, 1e-5);
      s += y[b * K + k];
    }
    check_close(s, 1.0, 1e-6, 0);
  }
  std::vector<float> dz = old;
  ops::softmax_backward(dz.data(), R.data(), y.data(), B, K);
  Vec zd = to_double(z);
  const Vec Rd = to_double(R);
  check_grad(dz, old, zd, 1e-4, [&]() { return dot(ref(zd), Rd); }, 1e-6, 1e-4);

  // Huge logits: exp(1e4) overflows without the max subtraction.
  const std::vector<float> huge{1e4f, 1e4f - 1.0f, -1e4f, 0.0f, 1e4f, 1e4f, 1e4f, 1e4f};
  std::vector<float> h(huge.size());
  ops::softmax_forward(h.data(), huge.data(), 2, 4);
  for (float v : h) CHECK(std::isfinite(v));
  const double e1 = std::exp(-1.0);
  check_close(h[0], 1.0 / (1.0 + e1), 1e-7, 1e-6);
  check_close(h[1], e1 / (1.0 + e1), 1e-7, 1e-6);
  CHECK(h[2] == 0.0f);
  CHECK(h[3] == 0.0f);
  for (std::size_t k = 4; k < 8; ++k) check_close(h[k], 0.25, 1e-7, 0);
  // In place.
  std::vector<float> inplace = z;
  ops::softmax_forward(inplace.data(), inplace.data(), B, K);
  CHECK(inplace == y);
}

// =============================================================================== losses

namespace {

double sigmoid_d(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double clip_d(double p) { return std::min(std::max(p, double(1e-7f)), double(1.0f - 1e-7f)); }

// Per-sample losses from the definitions (double); the batch loss is sum(w_i l_i) / B.
double weighted_mean(const Vec& l, const std::vector<float>* w) {
  double s = 0.0;
  for (std::size_t i = 0; i < l.size(); ++i) s += (w ? double((*w)[i]) : 1.0) * l[i];
  return s / double(l.size());
}

Vec bce_ref(const Vec& p, const Vec& y, std::size_t B, std::size_t K, bool from_logits) {
  Vec l(B, 0.0);
  for (std::size_t i = 0; i < B; ++i) {
    for (std::size_t k = 0; k < K; ++k) {
      const double q = from_logits ? sigmoid_d(p[i * K + k]) : clip_d(p[i * K + k]);
      const double t = y[i * K + k];
      l[i] -= t * std::log(q) + (1 - t) * std::log(1 - q);
    }
    l[i] /= double(K);
  }
  return l;
}

Vec log_softmax_ref(const double* z, std::size_t K) {
  double s = 0.0;
  for (std::size_t k = 0; k < K; ++k) s += std::exp(z[k]);
  Vec r(K);
  for (std::size_t k = 0; k < K; ++k) r[k] = z[k] - std::log(s);
  return r;
}

Vec cce_ref(const Vec& p, const Vec& y, std::size_t B, std::size_t K, bool from_logits) {
  Vec l(B, 0.0);
  for (std::size_t i = 0; i < B; ++i) {
    if (from_logits) {
      const Vec ls = log_softmax_ref(&p[i * K], K);
      for (std::size_t k = 0; k < K; ++k) l[i] -= y[i * K + k] * ls[k];
    } else {
      double s = 0.0;
      for (std::size_t k = 0; k < K; ++k) s += p[i * K + k];
      for (std::size_t k = 0; k < K; ++k) l[i] -= y[i * K + k] * std::log(clip_d(p[i * K + k] / s));
    }
  }
  return l;
}

// TensorFlow backend: sparse_softmax_cross_entropy_with_logits(labels, log(clip(p))).
Vec scce_ref(const Vec& p, const std::vector<std::int32_t>& y, std::size_t B, std::size_t K,
             bool from_logits) {
  Vec l(B);
  for (std::size_t i = 0; i < B; ++i) {
    Vec z(K);
    for (std::size_t k = 0; k < K; ++k) z[k] = from_logits ? p[i * K + k] : std::log(clip_d(p[i * K + k]));
    l[i] = -log_softmax_ref(z.data(), K)[std::size_t(y[i])];
  }
  return l;
}

std::vector<float> one_hot(const std::vector<std::int32_t>& y, std::size_t K) {
  std::vector<float> t(y.size() * K, 0.0f);
  for (std::size_t i = 0; i < y.size(); ++i) t[i * K + std::size_t(y[i])] = 1.0f;
  return t;
}

std::vector<float> softmax_rows(const std::vector<float>& z, std::size_t B, std::size_t K) {
  std::vector<float> p(B * K);
  ops::softmax_forward(p.data(), z.data(), B, K);
  return p;
}

}  // namespace

TEST_CASE("binary_crossentropy (probabilities and logits): forward, backward FD, weights, accumulation") {
  tlref::Rng rng(11);
  const std::size_t B = 5, K = 3;
  const std::vector<float> probs = random_floats(rng, B * K, 0.05, 0.95),
                           logits = random_floats(rng, B * K, -4, 4),
                           y = random_floats(rng, B * K, 0, 1),  // soft labels are allowed
                           w = random_floats(rng, B, 0.1, 3), old = random_floats(rng, B * K);
  for (bool from_logits : {false, true})
    for (const std::vector<float>* wp : {static_cast<const std::vector<float>*>(nullptr), &w}) {
      CAPTURE(from_logits);
      const std::vector<float>& pred = from_logits ? logits : probs;
      const float* wd = wp ? wp->data() : nullptr;
      Vec p = to_double(pred);
      const Vec yd = to_double(y);
      auto loss = [&]() { return weighted_mean(bce_ref(p, yd, B, K, from_logits), wp); };
      check_close(ops::binary_crossentropy_forward(pred.data(), y.data(), wd, B, K, from_logits),
                  loss(), 1e-6, 1e-5);
      std::vector<float> d = old;
      ops::binary_crossentropy_backward(d.data(), pred.data(), y.data(), wd, B, K, from_logits);
      check_grad(d, old, p, 1e-5, loss, 1e-5, 1e-4);
    }
}

TEST_CASE("binary_crossentropy: probabilities clip to [1e-7, 1 - 1e-7]; logits are stable") {
  const std::vector<float> p{0.0f, 1.0f, 1.0f, 0.0f}, y{1.0f, 0.0f, 1.0f, 0.0f};
  // Per element: -log(1e-7), -log(1 - (1 - 1e-7)), ~0, ~0; the sample loss is their mean.
  const double lo = -std::log(double(1e-7f)), hi = -std::log(1.0 - double(1.0f - 1e-7f));
  const float l = ops::binary_crossentropy_forward(p.data(), y.data(), nullptr, 1, 4, false);
  CHECK(std::isfinite(l));
  check_close(l, (lo + hi + 2 * -std::log(double(1.0f - 1e-7f))) / 4.0, 1e-6, 1e-5);
  std::vector<float> d(4, 0.0f);
  ops::binary_crossentropy_backward(d.data(), p.data(), y.data(), nullptr, 1, 4, false);
  CHECK(d == std::vector<float>(4, 0.0f));  // clipped: zero gradient, as tf.clip_by_value

  const std::vector<float> z{100.0f, -100.0f, 1e4f, -1e4f}, t{0.0f, 1.0f, 1.0f, 0.0f};
  const float lz = ops::binary_crossentropy_forward(z.data(), t.data(), nullptr, 1, 4, true);
  check_close(lz, (100.0 + 100.0 + 0.0 + 0.0) / 4.0, 1e-6, 1e-6);
  ops::binary_crossentropy_backward(d.data(), z.data(), t.data(), nullptr, 1, 4, true);
  for (float v : d) CHECK(std::isfinite(v));
  check_close(d[0], 0.25, 1e-7, 1e-6);
  check_close(d[1], -0.25, 1e-7, 1e-6);
}

TEST_CASE("binary_crossentropy: from_logits on z agrees with probabilities on sigmoid(z)") {
  tlref::Rng rng(12);
  const std::size_t B = 4, K = 2;
  const std::vector<float> z = random_floats(rng, B * K, -5, 5), w = random_floats(rng, B, 0.5, 2);
  std::vector<float> y(B * K);
  for (float& v : y) v = float(rng.range(0, 1));
  std::vector<float> p(B * K);
  ops::sigmoid_forward(p.data(), z.data(), B * K);
  const float l_logits = ops::binary_crossentropy_forward(z.data(), y.data(), w.data(), B, K, true);
  const float l_probs = ops::binary_crossentropy_forward(p.data(), y.data(), w.data(), B, K, false);
  check_close(l_probs, l_logits, 1e-6, 1e-5);
  // Chain rule through the sigmoid gives the logits gradient.
  std::vector<float> dz(B * K, 0.0f), dp(B * K, 0.0f), dz_chain(B * K, 0.0f);
  ops::binary_crossentropy_backward(dz.data(), z.data(), y.data(), w.data(), B, K, true);
  ops::binary_crossentropy_backward(dp.data(), p.data(), y.data(), w.data(), B, K, false);
  ops::sigmoid_backward(dz_chain.data(), dp.data(), p.data(), B * K);
  for (std::size_t i = 0; i < dz.size(); ++i) check_close(dz_chain[i], dz[i], 1e-6, 1e-4);
}

TEST_CASE("categorical_crossentropy (normalized probabilities and logits): forward, FD, weights") {
  tlref::Rng rng(13);
  const std::size_t B = 4, K = 5;
  // Unnormalized probabilities exercise Keras's p / sum(p).
  const std::vector<float> probs = random_floats(rng, B * K, 0.05, 1.0),
                           logits = random_floats(rng, B * K, -3, 3), w = random_floats(rng, B, 0.1, 3),
                           old = random_floats(rng, B * K);
  std::vector<float> y = random_floats(rng, B * K, 0, 1);  // soft labels
  for (std::size_t i = 0; i < B; ++i) {
    float s = 0.0f;
    for (std::size_t k = 0; k < K; ++k) s += y[i * K + k];
    for (std::size_t k = 0; k < K; ++k) y[i * K + k] /= s;
  }
  for (bool from_logits : {false, true})
    for (const std::vector<float>* wp : {static_cast<const std::vector<float>*>(nullptr), &w}) {
      CAPTURE(from_logits);
      const std::vector<float>& pred = from_logits ? logits : probs;
      const float* wd = wp ? wp->data() : nullptr;
      Vec p = to_double(pred);
      const Vec yd = to_double(y);
      auto loss = [&]() { return weighted_mean(cce_ref(p, yd, B, K, from_logits), wp); };
      check_close(ops::categorical_crossentropy_forward(pred.data(), y.data(), wd, B, K, from_logits),
                  loss(), 1e-6, 1e-5);
      std::vector<float> d = old;
      ops::categorical_crossentropy_backward(d.data(), pred.data(), y.data(), wd, B, K, from_logits);
      check_grad(d, old, p, 1e-5, loss, 1e-5, 1e-4);
    }
}

TEST_CASE("sparse_categorical_crossentropy (TF-backend probabilities and logits): forward, FD, weights") {
  tlref::Rng rng(14);
  const std::size_t B = 6, K = 4;
  const std::vector<float> probs = random_floats(rng, B * K, 0.05, 1.0),  // unnormalized on purpose
                           logits = random_floats(rng, B * K, -3, 3), w = random_floats(rng, B, 0.1, 3),
                           old = random_floats(rng, B * K);
  std::vector<std::int32_t> y(B);
  for (auto& v : y) v = std::int32_t(rng.range(0, long(K) - 1));
  for (bool from_logits : {false, true})
    for (const std::vector<float>* wp : {static_cast<const std::vector<float>*>(nullptr), &w}) {
      CAPTURE(from_logits);
      const std::vector<float>& pred = from_logits ? logits : probs;
      const float* wd = wp ? wp->data() : nullptr;
      Vec p = to_double(pred);
      auto loss = [&]() { return weighted_mean(scce_ref(p, y, B, K, from_logits), wp); };
      check_close(ops::sparse_categorical_crossentropy_forward(pred.data(), y.data(), wd, B, K, from_logits),
                  loss(), 1e-6, 1e-5);
      std::vector<float> d = old;
      ops::sparse_categorical_crossentropy_backward(d.data(), pred.data(), y.data(), wd, B, K, from_logits);
      check_grad(d, old, p, 1e-5, loss, 1e-5, 1e-4);
    }
}

TEST_CASE("crossentropies: from_logits and probability variants agree on softmax outputs; sparse == one-hot") {
  tlref::Rng rng(15);
  const std::size_t B = 5, K = 6;
  const std::vector<float> z = random_floats(rng, B * K, -4, 4), w = random_floats(rng, B, 0.2, 2);
  std::vector<std::int32_t> y(B);
  for (auto& v : y) v = std::int32_t(rng.range(0, long(K) - 1));
  const std::vector<float> t = one_hot(y, K), p = softmax_rows(z, B, K);

  const float cce_z = ops::categorical_crossentropy_forward(z.data(), t.data(), w.data(), B, K, true);
  const float cce_p = ops::categorical_crossentropy_forward(p.data(), t.data(), w.data(), B, K, false);
  const float scce_z = ops::sparse_categorical_crossentropy_forward(z.data(), y.data(), w.data(), B, K, true);
  const float scce_p = ops::sparse_categorical_crossentropy_forward(p.data(), y.data(), w.data(), B, K, false);
  check_close(cce_p, cce_z, 1e-6, 1e-5);
  check_close(scce_z, cce_z, 1e-6, 1e-6);
  check_close(scce_p, cce_z, 1e-6, 1e-5);

  // Gradients: the probability gradients chained through softmax_backward equal the logits ones.
  std::vector<float> g_cce_z(B * K, 0.0f), g_scce_z(B * K, 0.0f);
  ops::categorical_crossentropy_backward(g_cce_z.data(), z.data(), t.data(), w.data(), B, K, true);
  ops::sparse_categorical_crossentropy_backward(g_scce_z.data(), z.data(), y.data(), w.data(), B, K, true);
  for (std::size_t i = 0; i < g_cce_z.size(); ++i) check_close(g_scce_z[i], g_cce_z[i], 1e-7, 1e-5);
  for (bool sparse : {false, true}) {
    std::vector<float> dp(B * K, 0.0f), dz(B * K, 0.0f);
    if (sparse)
      ops::sparse_categorical_crossentropy_backward(dp.data(), p.data(), y.data(), w.data(), B, K, false);
    else
      ops::categorical_crossentropy_backward(dp.data(), p.data(), t.data(), w.data(), B, K, false);
    ops::softmax_backward(dz.data(), dp.data(), p.data(), B, K);
    for (std::size_t i = 0; i < dz.size(); ++i) check_close(dz[i], g_cce_z[i], 1e-6, 1e-4);
  }
}

TEST_CASE("crossentropies from probabilities clip at 1e-7; logits are stable for huge values") {
  // A zero probability on the true class: -log(1e-7) instead of infinity.
  const std::vector<float> p{0.0f, 1.0f, 0.0f};
  const std::vector<float> t{1.0f, 0.0f, 0.0f};
  const std::vector<std::int32_t> y{0};
  const double lo = -std::log(double(1e-7f));
  check_close(ops::categorical_crossentropy_forward(p.data(), t.data(), nullptr, 1, 3, false), lo, 1e-5, 1e-6);
  // TF backend sparse: log(sum clip(p)) - log(clip(p_y)) = log(1e-7 + (1 - 1e-7) + 1e-7) - log(1e-7).
  const double S = double(1e-7f) + double(1.0f - 1e-7f) + double(1e-7f);
  check_close(ops::sparse_categorical_crossentropy_forward(p.data(), y.data(), nullptr, 1, 3, false),
              std::log(S) + lo, 1e-5, 1e-6);
  const std::vector<float> z{-1e4f, 1e4f, 0.0f};
  const float lz = ops::categorical_crossentropy_forward(z.data(), t.data(), nullptr, 1, 3, true);
  check_close(lz, 2e4, 1e-2, 1e-6);
  check_close(ops::sparse_categorical_crossentropy_forward(z.data(), y.data(), nullptr, 1, 3, true), 2e4, 1e-2, 1e-6);
  std::vector<float> d(3, 0.0f);
  ops::sparse_categorical_crossentropy_backward(d.data(), z.data(), y.data(), nullptr, 1, 3, true);
  CHECK(d == std::vector<float>{-1.0f, 1.0f, 0.0f});
}

TEST_CASE("sparse labels out of range are rejected with the label and the valid range") {
  const std::vector<float> p(3 * 4, 0.25f);
  const std::vector<std::int32_t> good{0, 3, 1}, bad{0, 4, 1}, negative{-1, 0, 0};
  CHECK_NOTHROW(ops::check_sparse_labels(good.data(), 3, 4));
  CHECK_THROWS_WITH_AS(ops::check_sparse_labels(bad.data(), 3, 4),
                       doctest::Contains("label 4 at sample 1 is outside the valid range [0, 4)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(ops::check_sparse_labels(negative.data(), 3, 4), doctest::Contains("label -1"),
                       std::invalid_argument);
  std::vector<float> d(12, 0.0f);
  for (bool from_logits : {false, true}) {
    CHECK_THROWS_AS(ops::sparse_categorical_crossentropy_forward(p.data(), bad.data(), nullptr, 3, 4, from_logits),
                    std::invalid_argument);
    CHECK_THROWS_AS(ops::sparse_categorical_crossentropy_backward(d.data(), p.data(), negative.data(), nullptr, 3,
                                                                  4, from_logits),
                    std::invalid_argument);
  }
  CHECK(d == std::vector<float>(12, 0.0f));  // nothing written before the check
}

TEST_CASE("class weights: the loss is sum(w_i * l_i) / N, not divided by sum(w)") {
  tlref::Rng rng(16);
  const std::size_t B = 4, K = 3;
  const std::vector<float> z = random_floats(rng, B * K, -2, 2);
  const std::vector<std::int32_t> y{0, 2, 1, 2};
  const std::vector<float> class_weight{1.0f, 3.0f, 0.5f};
  std::vector<float> w(B);
  for (std::size_t i = 0; i < B; ++i) w[i] = class_weight[std::size_t(y[i])];
  double want = 0.0;
  for (std::size_t i = 0; i < B; ++i)  // one-sample calls give l_i
    want += w[i] * ops::sparse_categorical_crossentropy_forward(&z[i * K], &y[i], nullptr, 1, K, true);
  want /= double(B);
  check_close(ops::sparse_categorical_crossentropy_forward(z.data(), y.data(), w.data(), B, K, true), want,
              1e-6, 1e-5);
  // A zero weight removes the sample from the loss and the gradient.
  std::vector<float> w0 = w;
  w0[1] = 0.0f;
  std::vector<float> d(B * K, 0.0f);
  ops::sparse_categorical_crossentropy_backward(d.data(), z.data(), y.data(), w0.data(), B, K, true);
  for (std::size_t k = 0; k < K; ++k) CHECK(d[1 * K + k] == 0.0f);
  // Gradient scales with the weight: sample 0 has w = 1.
  std::vector<float> d1(B * K, 0.0f);
  ops::sparse_categorical_crossentropy_backward(d1.data(), z.data(), y.data(), nullptr, B, K, true);
  for (std::size_t i = 0; i < B; ++i)
    for (std::size_t k = 0; k < K; ++k) check_close(d[i * K + k], double(w0[i]) * d1[i * K + k], 1e-7, 1e-6);
}

TEST_CASE("mae_backward (subgradient 0 at 0) and the sample-weighted MSE/MAE") {
  tlref::Rng rng(17);
  const std::size_t B = 5, K = 3, n = B * K;
  std::vector<float> pred = random_floats(rng, n, -2, 2), target = random_floats(rng, n, -2, 2);
  for (std::size_t i = 0; i < n; ++i)  // keep away from the kink for FD
    if (std::fabs(pred[i] - target[i]) < 0.05f) pred[i] = target[i] + 0.1f;
  pred[4] = target[4];  // one exact zero residual
  const std::vector<float> w = random_floats(rng, B, 0.1, 2), old = random_floats(rng, n);

  std::vector<float> d = old;
  ops::mae_backward(d.data(), pred.data(), target.data(), n);
  CHECK(d[4] == old[4]);  // subgradient 0
  for (std::size_t i = 0; i < n; ++i)
    if (i != 4) check_close(d[i], double(old[i]) + (pred[i] > target[i] ? 1.0 : -1.0) / double(n), 1e-7, 1e-6);

  Vec p = to_double(pred);
  const Vec t = to_double(target);
  for (bool abs_err : {false, true})
    for (const std::vector<float>* wp : {static_cast<const std::vector<float>*>(nullptr), &w}) {
      CAPTURE(abs_err);
      const float* wd = wp ? wp->data() : nullptr;
      auto loss = [&]() {
        Vec l(B, 0.0);
        for (std::size_t i = 0; i < B; ++i) {
          for (std::size_t k = 0; k < K; ++k) {
            const double e = p[i * K + k] - t[i * K + k];
            l[i] += abs_err ? std::fabs(e) : e * e;
          }
          l[i] /= double(K);
        }
        return weighted_mean(l, wp);
      };
      const float f = abs_err ? ops::mean_absolute_error_forward(pred.data(), target.data(), wd, B, K)
                              : ops::mean_squared_error_forward(pred.data(), target.data(), wd, B, K);
      check_close(f, loss(), 1e-6, 1e-5);
      if (!wp)  // equal to ops.h's unweighted forms
        check_close(f, abs_err ? ops::mae_forward(pred.data(), target.data(), n)
                               : ops::mse_forward(pred.data(), target.data(), n), 1e-7, 1e-6);
      std::vector<float> g = old;
      if (abs_err)
        ops::mean_absolute_error_backward(g.data(), pred.data(), target.data(), wd, B, K);
      else
        ops::mean_squared_error_backward(g.data(), pred.data(), target.data(), wd, B, K);
      for (std::size_t i = 0; i < n; ++i) {
        if (abs_err && i == 4) {
          CHECK(g[i] == old[i]);
          continue;
        }
        check_close(g[i], double(old[i]) + central_diff(p, i, 1e-4, loss), 1e-6, 1e-4);
      }
    }
}

// =============================================================================== metrics

TEST_CASE("huber: forward vs Keras's definition, backward vs FD on both sides of delta, weights") {
  tlref::Rng rng(18);
  const std::size_t B = 6, K = 4, n = B * K;
  std::vector<float> pred = random_floats(rng, n, -3, 3), target = random_floats(rng, n, -3, 3);
  const std::vector<float> w = random_floats(rng, B, 0.1, 2), old = random_floats(rng, n);
  for (float delta : {1.0f, 0.4f}) {
    for (std::size_t i = 0; i < n; ++i)  // keep away from the kinks at |e| = delta for FD
      if (std::fabs(std::fabs(pred[i] - target[i]) - delta) < 0.05f) pred[i] += 0.2f;
    Vec p = to_double(pred);
    const Vec t = to_double(target);
    std::size_t inside = 0;
    for (const std::vector<float>* wp : {static_cast<const std::vector<float>*>(nullptr), &w}) {
      CAPTURE(delta);
      const float* wd = wp ? wp->data() : nullptr;
      auto loss = [&]() {
        Vec l(B, 0.0);
        inside = 0;
        for (std::size_t i = 0; i < B; ++i) {
          for (std::size_t k = 0; k < K; ++k) {
            const double e = std::fabs(p[i * K + k] - t[i * K + k]), d = delta;
            inside += e <= d;
            l[i] += e <= d ? 0.5 * e * e : d * e - 0.5 * d * d;
          }
          l[i] /= double(K);
        }
        return weighted_mean(l, wp);
      };
      check_close(ops::huber_forward(pred.data(), target.data(), wd, B, K, delta), loss(), 1e-6, 1e-5);
      CHECK(inside > 0);  // both branches are exercised
      CHECK(inside < n);
      std::vector<float> d = old;
      ops::huber_backward(d.data(), pred.data(), target.data(), wd, B, K, delta);
      check_grad(d, old, p, 1e-4, loss, 1e-6, 1e-4);
    }
  }
}

TEST_CASE("accuracy metrics: sparse, categorical (first max on ties), binary") {
  const std::vector<float> pred{0.1f, 0.7f, 0.2f,   // argmax 1
                                0.5f, 0.5f, 0.0f,   // tie -> 0
                                0.2f, 0.3f, 0.5f,   // 2
                                0.9f, 0.05f, 0.05f};  // 0
  const std::vector<std::int32_t> labels{1, 1, 2, 7};  // 7: out of range counts as wrong
  check_close(ops::sparse_categorical_accuracy(pred.data(), labels.data(), 4, 3), 0.5, 0, 1e-7);
  const std::vector<float> target{0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0};
  check_close(ops::categorical_accuracy(pred.data(), target.data(), 4, 3), 0.75, 0, 1e-7);
  const std::vector<float> bp{0.2f, 0.6f, 0.5f, 0.51f, 0.9f}, by{0, 1, 1, 0, 1};
  // 0.5 is not > 0.5, so it predicts 0.
  check_close(ops::binary_accuracy(bp.data(), by.data(), 5), 0.6, 0, 1e-7);
  const std::vector<float> logits{-1.0f, 0.5f, 0.0f, 0.1f, 2.0f};
  check_close(ops::binary_accuracy(logits.data(), by.data(), 5, 0.0f), 0.6, 0, 1e-7);
  CHECK(ops::binary_accuracy(bp.data(), by.data(), 0) == 0.0f);
}

// =============================================================================== dropout

TEST_CASE("dropout: keeps about 1 - rate, scales by 1 / (1 - rate), seeded masks, backward") {
  const std::size_t n = 20000;
  tlref::Rng data_rng(18);
  const std::vector<float> x = random_floats(data_rng, n, 0.5, 2.0), R = random_floats(data_rng, n),
                           old = random_floats(data_rng, n);
  for (float rate : {0.1f, 0.3f, 0.5f}) {
    CAPTURE(rate);
    tinylearn::Random rng(42);
    std::vector<float> out(n), mask(n);
    ops::dropout_forward(out.data(), mask.data(), x.data(), n, rate, rng);
    const float scale = 1.0f / (1.0f - rate);
    std::size_t kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const bool k = mask[i] != 0.0f;
      kept += k;
      if (k) {
        CHECK(mask[i] == scale);
        CHECK(out[i] == x[i] * scale);
      } else {
        CHECK(out[i] == 0.0f);
      }
    }
    // Binomial(n, 1 - rate): 6 standard deviations is at most 0.021.
    CHECK(std::fabs(double(kept) / double(n) - (1.0 - rate)) < 0.021);

    tinylearn::Random same(42), other(43);
    std::vector<float> out2(n), mask2(n), mask3(n);
    ops::dropout_forward(out2.data(), mask2.data(), x.data(), n, rate, same);
    CHECK(mask2 == mask);
    CHECK(out2 == out);
    ops::dropout_forward(out2.data(), mask3.data(), x.data(), n, rate, other);
    CHECK(mask3 != mask);
    // In place.
    tinylearn::Random again(42);
    std::vector<float> inplace = x;
    ops::dropout_forward(inplace.data(), mask2.data(), inplace.data(), n, rate, again);
    CHECK(inplace == out);

    std::vector<float> d = old;
    ops::dropout_backward(d.data(), R.data(), mask.data(), n);
    for (std::size_t i = 0; i < n; ++i) CHECK(d[i] == old[i] + R[i] * mask[i]);
  }
  // rate 0: identity, a mask of ones, and no numbers drawn.
  tinylearn::Random rng(5), fresh(5);
  std::vector<float> out(n), mask(n);
  ops::dropout_forward(out.data(), mask.data(), x.data(), n, 0.0f, rng);
  CHECK(out == x);
  CHECK(mask == std::vector<float>(n, 1.0f));
  CHECK(rng.uniform() == fresh.uniform());
  for (float bad : {1.0f, -0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()})
    CHECK_THROWS_WITH_AS(ops::dropout_forward(out.data(), mask.data(), x.data(), n, bad, rng),
                         doctest::Contains("rate must be in [0, 1)"), std::invalid_argument);
}
