// Sparse int8 weights (format.h, TLM_TYPE_INT8_SPARSE): the converter's encoding decodes to the
// dense weights and passes the core's check; the sparse kernels equal the dense kernels bit for
// bit over random shapes (odd channel counts, all-zero channels, gaps over 255 zeros), sparsities
// from 0 to 100% and random parameters; corrupt encodings are rejected, never read past their
// bytes (exactly-sized heap copies, for AddressSanitizer).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <algorithm>
#include <vector>

#include "conv2d_s8.h"
#include "conv2d_s8_sparse.h"
#include "nn_types.h"
#include "fully_connected_s8.h"
#include "fully_connected_s8_sparse.h"
#include "sparse_s8.h"
#include "tinylearn/convert/qgraph.h"
#include "tl_reference.h"

namespace {

using I8 = std::vector<std::int8_t>;
using I32 = std::vector<std::int32_t>;
using Bytes = std::vector<std::uint8_t>;

// Weights with each element zero with probability `sparsity`, some rows all zero.
I8 sparse_weights(tlref::Rng& rng, std::size_t rows, std::size_t cols, double sparsity) {
  I8 w(rows * cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const bool empty = rng.range(0, 5) == 0;
    for (std::size_t c = 0; c < cols; ++c) {
      std::int8_t v = 0;
      if (!empty && rng.uniform() >= sparsity) {
        v = std::int8_t(rng.range(-128, 127));
        if (v == 0) v = -128;
      }
      w[r * cols + c] = v;
    }
  }
  return w;
}

// The dense weights an encoding describes, decoded straight from format.h's text.
I8 decode(const Bytes& e, int rows, int cols) {
  std::uint32_t n;
  std::memcpy(&n, e.data(), 4);
  const std::size_t at_steps = 4 + ((2 * std::size_t(rows) + 3) & ~std::size_t{3});
  const std::size_t at_values = at_steps + ((n + 3) & ~std::size_t{3});
  REQUIRE(e.size() == at_values + ((n + 3) & ~std::size_t{3}));
  I8 w(std::size_t(rows) * cols, 0);
  std::size_t j = 0;
  for (int r = 0; r < rows; ++r) {
    std::uint16_t count;
    std::memcpy(&count, e.data() + 4 + 2 * std::size_t(r), 2);
    long pos = -1;
    for (int k = 0; k < count; ++k, ++j) {
      pos += long(e[at_steps + j]) + 1;
      REQUIRE(pos < cols);
      const std::int8_t v = std::int8_t(e[at_values + j]);
      w[std::size_t(r) * cols + std::size_t(pos)] = v;
    }
  }
  REQUIRE(j == n);
  return w;
}

// tlm_sparse_s8_check on an exactly-sized heap copy (ASan catches any read past it).
tlm_status check_copy(const Bytes& e, int rows, int cols, tlm_sparse_s8* view = nullptr,
                      void** keep = nullptr) {
  void* p = std::malloc(e.size() ? e.size() : 1);
  REQUIRE(p != nullptr);
  if (!e.empty()) std::memcpy(p, e.data(), e.size());
  std::uint32_t bytes = 0;
  const tlm_status s = tlm_sparse_s8_check(static_cast<const std::uint8_t*>(p), e.size(), rows, cols,
                                           &bytes, view);
  if (s == TLM_OK) CHECK(bytes == e.size());
  if (keep) *keep = p;
  else std::free(p);
  return s;
}

std::int32_t rand_multiplier(tlref::Rng& rng) {
  return std::int32_t(rng.range(std::int64_t(1) << 30, INT32_MAX));
}
void rand_activation(tlref::Rng& rng, std::int32_t* lo, std::int32_t* hi) {
  if (rng.range(0, 2) == 0) {
    *lo = -128, *hi = 127;
  } else {
    *lo = std::int32_t(rng.range(-128, 20));
    *hi = std::int32_t(rng.range(*lo, 127));
  }
}
I8 rand_i8(tlref::Rng& rng, std::size_t n) {
  I8 v(n);
  for (auto& e : v) e = std::int8_t(rng.range(-128, 127));
  return v;
}

}  // namespace

TEST_CASE("encode_sparse_s8 decodes to the weights, passes the check, and bridges long gaps") {
  tlref::Rng rng(17);
  for (int trial = 0; trial < 300; ++trial) {
    const int rows = int(rng.range(1, 9));
    const int cols = int(trial % 10 == 0 ? rng.range(300, 2000) : rng.range(1, 70));
    const double sparsity = trial % 7 == 0 ? 1.0 : trial % 7 == 1 ? 0.0 : rng.uniform(0.0, 1.0);
    const I8 w = sparse_weights(rng, std::size_t(rows), std::size_t(cols),
                                trial % 10 == 0 ? 0.995 : sparsity);
    const Bytes e = tinylearn::encode_sparse_s8(w.data(), rows, cols);
    CAPTURE(trial);
    CHECK(e.size() % 4 == 0);
    CHECK(decode(e, rows, cols) == w);
    tlm_sparse_s8 view;
    CHECK(check_copy(e, rows, cols, &view) == TLM_OK);
  }
  // A row with one weight at the end of 1000 zeros: 3 fillers (3 x 256) + 1 entry (step 231).
  I8 w(1000, 0);
  w[999] = 5;
  const Bytes e = tinylearn::encode_sparse_s8(w.data(), 1, 1000);
  std::uint32_t n;
  std::memcpy(&n, e.data(), 4);
  CHECK(n == 4);
  CHECK(e[8] == 255);
  CHECK(e[11] == 231);
  CHECK(decode(e, 1, 1000) == w);
  CHECK_THROWS_AS(tinylearn::encode_sparse_s8(w.data(), 1, 65536), std::invalid_argument);
}

TEST_CASE("tlm_sparse_s8_check rejects corrupt encodings without reading past them") {
  tlref::Rng rng(18);
  const int rows = 5, cols = 40;
  const I8 w = sparse_weights(rng, rows, cols, 0.6);
  const Bytes good = tinylearn::encode_sparse_s8(w.data(), rows, cols);
  REQUIRE(check_copy(good, rows, cols) == TLM_OK);
  std::uint32_t n;
  std::memcpy(&n, good.data(), 4);
  REQUIRE(n > 4);
  const std::size_t at_steps = 4 + 12;  // align4(2 * 5)
  // Every truncation.
  for (std::size_t k = 0; k < good.size(); ++k)
    CHECK(check_copy(Bytes(good.begin(), good.begin() + long(k)), rows, cols) == TLM_ERR_BAD_TENSOR);
  auto with = [&](auto edit) {
    Bytes b = good;
    edit(b);
    return check_copy(b, rows, cols);
  };
  auto count_of = [&](const Bytes& b, int r) {
    std::uint16_t c;
    std::memcpy(&c, b.data() + 4 + 2 * r, 2);
    return c;
  };
  auto set_count = [](Bytes& b, int r, std::uint16_t c) { std::memcpy(b.data() + 4 + 2 * r, &c, 2); };
  // n larger than the bytes hold, larger than rows * cols, or not the sum of the counts.
  CHECK(with([&](Bytes& b) { const std::uint32_t v = n + 4; std::memcpy(b.data(), &v, 4); }) == TLM_ERR_BAD_TENSOR);
  CHECK(with([&](Bytes& b) { const std::uint32_t v = 0xFFFFFFFFu; std::memcpy(b.data(), &v, 4); }) == TLM_ERR_BAD_TENSOR);
  CHECK(with([&](Bytes& b) { const std::uint32_t v = n - 1; std::memcpy(b.data(), &v, 4); }) == TLM_ERR_BAD_TENSOR);
  // A count over the row, counts not adding up to n (both ways).
  CHECK(with([&](Bytes& b) { set_count(b, 0, cols + 1); }) == TLM_ERR_BAD_TENSOR);
  CHECK(with([&](Bytes& b) { set_count(b, 2, std::uint16_t(count_of(b, 2) + 1)); }) == TLM_ERR_BAD_TENSOR);
  CHECK(with([&](Bytes& b) { set_count(b, 4, 0xFFFF); }) == TLM_ERR_BAD_TENSOR);
  // A step that moves a row's last position to cols or beyond.
  CHECK(with([&](Bytes& b) { b[at_steps + n - 1] = 255; }) == TLM_ERR_BAD_TENSOR);
  // Dims that do not match the encoding: more rows than its bytes hold (a wider counts section),
  // or fewer columns than its positions reach.
  CHECK(check_copy(good, rows * 4, cols) == TLM_ERR_BAD_TENSOR);
  CHECK(check_copy(good, rows, 1) == TLM_ERR_BAD_TENSOR);
  CHECK(check_copy(good, rows, 0) == TLM_ERR_BAD_TENSOR);
  CHECK(check_copy(good, rows, 65536) == TLM_ERR_BAD_TENSOR);
  // Random corruption: accepted only when it still decodes inside every row.
  for (int trial = 0; trial < 2000; ++trial) {
    Bytes b = good;
    const int edits = int(rng.range(1, 3));
    for (int k = 0; k < edits; ++k) b[std::size_t(rng.range(0, long(b.size()) - 1))] = std::uint8_t(rng.range(0, 255));
    void* keep = nullptr;
    tlm_sparse_s8 view;
    if (check_copy(b, rows, cols, &view, &keep) == TLM_OK) {
      // Every entry's position is inside its row.
      std::uint32_t j = 0;
      for (int r = 0; r < rows; ++r) {
        long pos = -1;
        for (int c = 0; c < view.counts[r]; ++c, ++j) pos += long(view.steps[j]) + 1;
        CHECK(pos < cols);
      }
      CHECK(j == view.entries);
    }
    std::free(keep);
  }
}

TEST_CASE("tlm_fully_connected(_ref)_s8_sparse equal the dense kernels bit for bit") {
  tlref::Rng rng(19);
  for (int trial = 0; trial < 400; ++trial) {
    const int batches = int(rng.range(1, 3));
    const int in_n = int(trial % 20 == 0 ? rng.range(256, 1200) : rng.range(1, 67));
    const int out_n = int(rng.range(1, 13));
    const double sparsity = trial % 11 == 0 ? 1.0 : trial % 11 == 1 ? 0.0 : rng.uniform(0.0, 1.0);
    const I8 w = sparse_weights(rng, std::size_t(out_n), std::size_t(in_n), sparsity);
    const I8 x = rand_i8(rng, std::size_t(batches) * in_n);
    I32 bias(static_cast<std::size_t>(out_n));
    for (auto& b : bias) b = std::int32_t(rng.range(-30000, 30000));
    const std::int32_t* b = trial % 4 == 3 ? nullptr : bias.data();
    const tlm_fc_dims d{batches, in_n, out_n};
    const Bytes e = tinylearn::encode_sparse_s8(w.data(), out_n, in_n);
    void* keep = nullptr;
    tlm_sparse_s8 view;
    REQUIRE(check_copy(e, out_n, in_n, &view, &keep) == TLM_OK);
    CAPTURE(trial);
    // Fixed-point requantization.
    tlm_fully_connected_params p;
    p.input_offset = std::int32_t(rng.range(-127, 128));
    p.output_offset = std::int32_t(rng.range(-128, 127));
    p.output_multiplier = rand_multiplier(rng);
    p.output_shift = std::int32_t(rng.range(-14, -4));
    rand_activation(rng, &p.activation_min, &p.activation_max);
    REQUIRE(tlm_fully_connected_s8_check(&p, &d, b) == TLM_OK);
    I8 dense(std::size_t(batches) * out_n, 0x55), sparse(dense.size(), 0x33);
    tlm_fully_connected_s8(&p, &d, x.data(), w.data(), b, dense.data());
    tlm_fully_connected_s8_sparse(&p, &d, x.data(), &view, b, sparse.data());
    CHECK(sparse == dense);
    // TFLite's reference requantization, per tensor or per channel.
    tlm_fully_connected_ref_params rp{};
    rp.base = p;
    rp.base.output_multiplier = 0, rp.base.output_shift = 0;
    auto scale = [&](std::uint32_t* lo, std::uint32_t* hi, std::int32_t* ex) {
      const std::uint64_t m = (std::uint64_t(1) << 52) | (rng.u64() & ((std::uint64_t(1) << 52) - 1));
      *lo = std::uint32_t(m), *hi = std::uint32_t(m >> 32);
      *ex = std::int32_t(rng.range(60, 70));
    };
    scale(&rp.scale_mantissa_lo, &rp.scale_mantissa_hi, &rp.scale_exponent);
    I32 scales(3 * std::size_t(out_n));
    for (int o = 0; o < out_n; ++o) {
      std::uint32_t lo, hi;
      std::int32_t ex;
      scale(&lo, &hi, &ex);
      scales[3 * std::size_t(o)] = std::int32_t(lo), scales[3 * std::size_t(o) + 1] = std::int32_t(hi);
      scales[3 * std::size_t(o) + 2] = ex;
    }
    const std::int32_t* sc = trial % 2 ? scales.data() : nullptr;
    REQUIRE(tlm_fully_connected_ref_s8_check(&rp, &d, b, sc) == TLM_OK);
    tlm_fully_connected_ref_s8(&rp, &d, x.data(), w.data(), b, sc, dense.data());
    tlm_fully_connected_ref_s8_sparse(&rp, &d, x.data(), &view, b, sc, sparse.data());
    CHECK(sparse == dense);
    std::free(keep);
  }
}

TEST_CASE("tlm_conv2d_s8_sparse equals tlm_conv2d_s8 bit for bit") {
  tlref::Rng rng(20);
  int inner = 0;
  for (int trial = 0; trial < 500; ++trial) {
    // One spatial axis as TFLite's SAME / VALID padding produces it (dilated now and then).
    struct Axis { int in, filter, stride, dilation, out, pad; };
    auto axis = [&](bool same, bool dilate) {
      for (;;) {
        Axis a;
        a.in = int(rng.range(1, 11));
        a.filter = int(rng.range(1, 5));
        a.stride = int(rng.range(1, 3));
        a.dilation = dilate ? int(rng.range(1, 3)) : 1;
        const int eff = (a.filter - 1) * a.dilation + 1;
        if (!same && eff > a.in) continue;
        a.out = same ? (a.in + a.stride - 1) / a.stride : (a.in - eff) / a.stride + 1;
        a.pad = std::max(0, (a.out - 1) * a.stride + eff - a.in) / 2;
        if (a.pad >= eff) continue;
        return a;
      }
    };
    const bool same = rng.range(0, 1) == 1, dilate = trial % 4 == 0;
    const Axis h = axis(same, dilate), w = axis(same, dilate);
    const int batches = int(rng.range(1, 2));
    const int in_c = int(trial % 25 == 0 ? rng.range(20, 70) : rng.range(1, 7));
    const int out_c = int(rng.range(1, 9));
    const double sparsity = trial % 9 == 0 ? 1.0 : trial % 9 == 1 ? 0.0 : rng.uniform(0.0, 1.0);
    const int cols = h.filter * w.filter * in_c;
    const I8 f = sparse_weights(rng, std::size_t(out_c), std::size_t(cols), sparsity);
    const tlm_conv_dims d{batches, h.in, w.in, in_c, h.filter, w.filter, h.out, w.out, out_c};
    tlm_conv2d_params p;
    p.input_offset = std::int32_t(rng.range(-127, 128));
    p.output_offset = std::int32_t(rng.range(-128, 127));
    p.stride_h = h.stride, p.stride_w = w.stride;
    p.dilation_h = h.dilation, p.dilation_w = w.dilation;
    p.pad_top = h.pad, p.pad_left = w.pad;
    rand_activation(rng, &p.activation_min, &p.activation_max);
    const std::size_t oc = static_cast<std::size_t>(out_c);
    I32 mult(oc), shift(oc), bias(oc);
    for (int o = 0; o < out_c; ++o) {
      mult[std::size_t(o)] = rand_multiplier(rng);
      shift[std::size_t(o)] = std::int32_t(rng.range(-14, -6));
      bias[std::size_t(o)] = std::int32_t(rng.range(-30000, 30000));
    }
    const std::int32_t* b = trial % 5 == 2 ? nullptr : bias.data();
    const I8 x = rand_i8(rng, std::size_t(batches) * h.in * w.in * in_c);
    const Bytes e = tinylearn::encode_sparse_s8(f.data(), out_c, cols);
    void* keep = nullptr;
    tlm_sparse_s8 view;
    REQUIRE(check_copy(e, out_c, cols, &view, &keep) == TLM_OK);
    REQUIRE(tlm_conv2d_s8_check(&p, &d, mult.data(), shift.data(), b) == TLM_OK);
    I8 dense(std::size_t(batches) * h.out * w.out * out_c, 0x55), sparse(dense.size(), 0x33);
    tlm_conv2d_s8(&p, &d, mult.data(), shift.data(), x.data(), f.data(), b, dense.data());
    tlm_conv2d_s8_sparse(&p, &d, mult.data(), shift.data(), x.data(), &view, b, sparse.data());
    CAPTURE(trial);
    CHECK(sparse == dense);
    for (std::int8_t v : dense) inner += v != p.activation_min && v != p.activation_max;
    std::free(keep);
  }
  CHECK(inner > 1000);  // the outputs exercise the requantization, not only the clamps
}

TEST_CASE("tlm_conv2d_s8_sparse writes an output trailing its input exactly as tlm_conv2d_s8") {
  // format.h: a window operator's output may trail its input by window_lead bytes; the sparse
  // kernel then runs pixel by pixel and must read every window before overwriting it.
  tlref::Rng rng(21);
  int trailing = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int in_h = int(rng.range(3, 9)), in_w = int(rng.range(3, 9)), in_c = int(rng.range(1, 5));
    const int f = int(rng.range(1, 3)), stride = int(rng.range(1, 2)), out_c = int(rng.range(1, 8));
    const bool same = rng.range(0, 1) == 1;
    const int out_h = same ? (in_h + stride - 1) / stride : (in_h - f) / stride + 1;
    const int out_w = same ? (in_w + stride - 1) / stride : (in_w - f) / stride + 1;
    const int pad_h = same ? std::max(0, (out_h - 1) * stride + f - in_h) / 2 : 0;
    const int pad_w = same ? std::max(0, (out_w - 1) * stride + f - in_w) / 2 : 0;
    const tlm_conv_dims d{1, in_h, in_w, in_c, f, f, out_h, out_w, out_c};
    const tlm_conv2d_params p{int32_t(rng.range(-127, 128)), int32_t(rng.range(-128, 127)), stride, stride, 1, 1,
                              pad_h, pad_w, -128, 127};
    const std::int64_t lead =
        (tlm_detail::window_lead(1, in_h, in_w, in_c, out_h, out_w, out_c, stride, stride, 1, 1, pad_h, pad_w) + 3) /
        4 * 4;
    const std::size_t in_n = std::size_t(in_h) * in_w * in_c, out_n = std::size_t(out_h) * out_w * out_c;
    if (lead < 0 || std::size_t(lead) + out_n <= 0) continue;
    const std::size_t out_at = 0, in_at = std::size_t(lead);  // output at in_at - lead
    const std::size_t total = std::max(in_at + in_n, out_at + out_n);
    if (in_at >= out_at + out_n) continue;  // no overlap: not this test's case
    ++trailing;
    const std::size_t oc = static_cast<std::size_t>(out_c);
    I32 mult(oc), shift(oc), bias(oc);
    for (std::size_t o = 0; o < oc; ++o) {
      mult[o] = rand_multiplier(rng);
      shift[o] = std::int32_t(rng.range(-12, -6));
      bias[o] = std::int32_t(rng.range(-3000, 3000));
    }
    const int cols = f * f * in_c;
    const I8 w = sparse_weights(rng, oc, std::size_t(cols), rng.uniform(0.0, 1.0));
    const Bytes e = tinylearn::encode_sparse_s8(w.data(), out_c, cols);
    void* keep = nullptr;
    tlm_sparse_s8 view;
    REQUIRE(check_copy(e, out_c, cols, &view, &keep) == TLM_OK);
    REQUIRE(tlm_conv2d_s8_check(&p, &d, mult.data(), shift.data(), bias.data()) == TLM_OK);
    const I8 x = rand_i8(rng, in_n);
    I8 a(total, 0), b(total, 0);
    std::copy(x.begin(), x.end(), a.begin() + long(in_at));
    std::copy(x.begin(), x.end(), b.begin() + long(in_at));
    tlm_conv2d_s8(&p, &d, mult.data(), shift.data(), a.data() + in_at, w.data(), bias.data(), a.data() + out_at);
    tlm_conv2d_s8_sparse(&p, &d, mult.data(), shift.data(), b.data() + in_at, &view, bias.data(), b.data() + out_at);
    // The dense kernel in place equals the dense kernel out of place (the lead is right) ...
    I8 separate(out_n);
    tlm_conv2d_s8(&p, &d, mult.data(), shift.data(), x.data(), w.data(), bias.data(), separate.data());
    CAPTURE(trial);
    REQUIRE(I8(a.begin(), a.begin() + long(out_n)) == separate);
    // ... and so does the sparse one.
    CHECK(I8(b.begin(), b.begin() + long(out_n)) == separate);
    std::free(keep);
  }
  CHECK(trailing > 100);
}
