// Converter + freestanding core end to end on the host, checked against an independent parser of
// the blob format (format.h) and an int64 reference; then robustness of tlm_model_init against
// truncated, corrupted and hostile blobs. Blobs and arenas live in exactly-sized heap blocks so
// that AddressSanitizer reports any access outside them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "tinylearn/convert/convert.h"
#include "tinylearn/convert/qgraph.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"
#include "tinylearn/train/model.h"
#include "tl_reference.h"

namespace {

using tinylearn::Matrix;
using Bytes = std::vector<std::uint8_t>;

template <class T>
T rd(const Bytes& b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
template <class T>
void wr(Bytes& b, std::size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}

// ---- An independent reader of the blob format, written from format.h -------------------------

struct PTensor {
  std::uint8_t type, rank, storage, reserved;
  std::int32_t dims[4];
  std::uint32_t offset;
  float scale;
  std::int32_t zero_point;
  std::uint64_t count() const {
    std::uint64_t n = 1;
    for (int k = 0; k < rank; ++k) n *= std::uint64_t(dims[k]);
    return n;
  }
  std::uint64_t bytes() const { return count() * (type == TLM_TYPE_INT32 ? 4 : 1); }
};
struct POp {
  std::uint16_t opcode;
  std::uint8_t n_in, n_out;
  std::uint16_t inputs[6], outputs[2];
  std::uint32_t params, params_bytes, reserved;
};
struct Parsed {
  char magic[4];
  std::uint16_t version, header_bytes;
  std::uint32_t total, crc, arena, flags;
  std::uint16_t tensor_count, op_count, input, output;
  std::vector<PTensor> tensors;
  std::vector<POp> ops;
};

Parsed parse(const Bytes& b) {
  Parsed p;
  REQUIRE(b.size() >= 32);
  std::memcpy(p.magic, b.data(), 4);
  p.version = rd<std::uint16_t>(b, 4);
  p.header_bytes = rd<std::uint16_t>(b, 6);
  p.total = rd<std::uint32_t>(b, 8);
  p.crc = rd<std::uint32_t>(b, 12);
  p.arena = rd<std::uint32_t>(b, 16);
  p.tensor_count = rd<std::uint16_t>(b, 20);
  p.op_count = rd<std::uint16_t>(b, 22);
  p.input = rd<std::uint16_t>(b, 24);
  p.output = rd<std::uint16_t>(b, 26);
  p.flags = rd<std::uint32_t>(b, 28);
  REQUIRE(b.size() >= 32 + 32 * std::size_t(p.tensor_count + p.op_count));
  for (std::size_t i = 0; i < p.tensor_count; ++i) {
    const std::size_t r = 32 + 32 * i;
    PTensor t;
    t.type = b[r];
    t.rank = b[r + 1];
    t.storage = b[r + 2];
    t.reserved = b[r + 3];
    for (int k = 0; k < 4; ++k) t.dims[k] = rd<std::int32_t>(b, r + 4 + 4 * std::size_t(k));
    t.offset = rd<std::uint32_t>(b, r + 20);
    t.scale = rd<float>(b, r + 24);
    t.zero_point = rd<std::int32_t>(b, r + 28);
    p.tensors.push_back(t);
  }
  for (std::size_t i = 0; i < p.op_count; ++i) {
    const std::size_t r = 32 + 32 * (p.tensor_count + i);
    POp o;
    o.opcode = rd<std::uint16_t>(b, r);
    o.n_in = b[r + 2];
    o.n_out = b[r + 3];
    for (int k = 0; k < 6; ++k) o.inputs[k] = rd<std::uint16_t>(b, r + 4 + 2 * std::size_t(k));
    for (int k = 0; k < 2; ++k) o.outputs[k] = rd<std::uint16_t>(b, r + 16 + 2 * std::size_t(k));
    o.params = rd<std::uint32_t>(b, r + 20);
    o.params_bytes = rd<std::uint32_t>(b, r + 24);
    o.reserved = rd<std::uint32_t>(b, r + 28);
    p.ops.push_back(o);
  }
  return p;
}

std::size_t tensor_field(std::size_t i, std::size_t field) { return 32 + 32 * i + field; }
std::size_t op_field(const Parsed& p, std::size_t i, std::size_t field) {
  return 32 + 32 * (p.tensor_count + i) + field;
}

// Runs the FULLY_CONNECTED chain of a parsed blob on one int8 input, with values kept per tensor
// (no arena, no planner), through the int64 reference.
std::vector<std::int8_t> reference_run(const Bytes& b, const Parsed& p, const std::vector<std::int8_t>& in) {
  std::map<std::uint16_t, std::vector<std::int8_t>> values;
  values[p.input] = in;
  for (const POp& op : p.ops) {
    REQUIRE(op.opcode == TLM_OP_FULLY_CONNECTED);
    REQUIRE(op.params_bytes == 36);
    const std::int32_t in_off = rd<std::int32_t>(b, op.params), out_off = rd<std::int32_t>(b, op.params + 4);
    const std::int32_t act_min = rd<std::int32_t>(b, op.params + 16), act_max = rd<std::int32_t>(b, op.params + 20);
    // TFLite's reference requantization, in the host's double arithmetic.
    const double scale = std::ldexp(double(std::uint64_t(rd<std::uint32_t>(b, op.params + 24)) |
                                           (std::uint64_t(rd<std::uint32_t>(b, op.params + 28)) << 32)),
                                    -rd<std::int32_t>(b, op.params + 32));
    const PTensor& w = p.tensors.at(op.inputs[1]);
    const int out = w.dims[0], inn = w.dims[1];
    std::vector<std::int32_t> bias(std::size_t(out), 0);
    if (op.inputs[2] != TLM_NO_TENSOR) {
      const PTensor& bt = p.tensors.at(op.inputs[2]);
      std::memcpy(bias.data(), b.data() + bt.offset, 4 * std::size_t(out));
    }
    const std::vector<std::int8_t>& x = values.at(op.inputs[0]);
    const int batches = int(x.size()) / inn;
    std::vector<std::int8_t> y(std::size_t(batches) * out);
    for (int n = 0; n < batches; ++n)
      for (int o = 0; o < out; ++o) {
        std::int64_t acc = bias[std::size_t(o)];
        for (int i = 0; i < inn; ++i)
          acc += std::int64_t(x[std::size_t(n * inn + i)] + in_off) * std::int8_t(b[w.offset + std::size_t(o * inn + i)]);
        const double v = std::round(double(acc) * scale) + out_off;
        y[std::size_t(n * out + o)] = std::int8_t(std::min<double>(act_max, std::max<double>(act_min, v)));
      }
    values[op.outputs[0]] = y;
  }
  return values.at(p.output);
}

// ---- The model under test -----------------------------------------------------------------

struct Converted {
  std::unique_ptr<tinylearn::Sequential> model;
  Matrix calib;
  Bytes blob;
};

// 3 -> 8 (ReLU) -> 6 (ReLU) -> 2, random Glorot weights from build(seed) and random biases.
Converted make_converted(std::uint64_t seed) {
  using namespace tinylearn;
  Converted c;
  c.model = std::make_unique<Sequential>();
  c.model->add(std::make_unique<Dense>(8, Activation::ReLU));
  c.model->add(std::make_unique<Dense>(6, Activation::ReLU));
  c.model->add(std::make_unique<Dense>(2));
  c.model->build(3, seed);
  tlref::Rng rng(seed + 1000);
  for (std::size_t l = 0; l < 3; ++l)
    for (float& b : dynamic_cast<Dense&>(c.model->layer(l)).bias) b = float(rng.uniform(-0.5, 0.5));
  c.calib = Matrix({256, 3});
  for (float& v : c.calib) v = float(rng.uniform(-2, 3));
  c.blob = convert(*c.model, c.calib);
  return c;
}

const Converted& shared_model() {
  static const Converted c = make_converted(4);
  return c;
}

// ---- Exactly-sized heap blocks and a guarded run -------------------------------------------

struct HeapBlock {
  void* p;
  explicit HeapBlock(std::size_t n) : p(std::malloc(n == 0 ? 0 : n)) {}  // malloc: 16-aligned
  ~HeapBlock() { std::free(p); }
  HeapBlock(const HeapBlock&) = delete;
  HeapBlock& operator=(const HeapBlock&) = delete;
};

struct RunStats {
  std::map<int, int> status_counts;
  int invoked = 0;
};

// tlm_model_init on an exact copy of `bytes`; when it accepts the blob, every tensor is described
// and tlm_invoke runs on an arena of exactly tlm_arena_bytes() bytes. ASan checks the rest.
tlm_status guarded_run(const Bytes& bytes, tlref::Rng& rng, RunStats* stats = nullptr) {
  HeapBlock blob(bytes.size());
  REQUIRE((bytes.empty() || blob.p != nullptr));
  if (!bytes.empty()) std::memcpy(blob.p, bytes.data(), bytes.size());
  tlm_model m;
  const tlm_status s = tlm_model_init(&m, blob.p ? blob.p : &m, bytes.size());
  if (stats) stats->status_counts[int(s)]++;
  if (s != TLM_OK) {
    // A rejected model stays unusable.
    std::uint32_t dummy[4] = {0, 0, 0, 0};
    CHECK(tlm_invoke(&m, dummy, sizeof dummy) == TLM_ERR_NULL);
    return s;
  }
  CHECK(m.blob == blob.p);
  for (std::uint32_t i = 0; i < m.tensor_count; ++i) {
    tlm_tensor_info info;
    REQUIRE(tlm_tensor(&m, i, &info) == TLM_OK);
    CHECK((info.rank >= 1 && info.rank <= 4));
  }
  tlm_tensor_info dummy_info;
  CHECK(tlm_tensor(&m, m.tensor_count, &dummy_info) == TLM_ERR_BAD_TENSOR);
  const std::uint32_t need = tlm_arena_bytes(&m);
  if (need > (64u << 20)) {  // a (corrupted) header asking for more than we care to allocate
    std::uint32_t small[16];
    CHECK(tlm_invoke(&m, small, sizeof small) == TLM_ERR_ARENA_TOO_SMALL);
    return s;
  }
  HeapBlock arena(need);
  REQUIRE((need == 0 || arena.p != nullptr));
  void* a = arena.p ? arena.p : static_cast<void*>(&m);  // never dereferenced when need == 0
  if (need) std::memset(arena.p, 0, need);
  tlm_tensor_info in_info;
  REQUIRE(tlm_tensor(&m, m.input_tensor, &in_info) == TLM_OK);
  std::int8_t* in = tlm_input(&m, a);
  REQUIRE(in != nullptr);
  for (std::uint32_t i = 0; i < in_info.bytes; ++i) in[i] = std::int8_t(rng.range(-128, 127));
  CHECK(tlm_invoke(&m, a, need) == TLM_OK);
  volatile std::int8_t sink = tlm_output(&m, a)[0];  // the output is readable inside the arena
  (void)sink;
  if (need > 0) CHECK(tlm_invoke(&m, a, need - 1) == TLM_ERR_ARENA_TOO_SMALL);
  if (stats) stats->invoked++;
  return s;
}

// Rewrites the CRC over [16, total) when the header's total is usable, so that corruption gets
// past the checksum to the structural checks.
void fix_crc(Bytes& b) {
  if (b.size() < 16) return;
  const std::uint32_t total = rd<std::uint32_t>(b, 8);
  if (total >= 16 && total <= b.size()) wr<std::uint32_t>(b, 12, tlref::crc32(b.data() + 16, total - 16));
}

}  // namespace

TEST_CASE("CRC-32 reference: standard check value, and agreement with tinylearn::crc32 (zlib)") {
  const char* s = "123456789";
  const auto* p = reinterpret_cast<const std::uint8_t*>(s);
  CHECK(tlref::crc32(p, 9) == 0xCBF43926u);
  CHECK(tinylearn::crc32(p, 9) == 0xCBF43926u);
  CHECK(tlref::crc32(p, 0) == 0u);
  tlref::Rng rng(1);
  for (int n : {1, 3, 64, 1000}) {
    Bytes b(static_cast<std::size_t>(n), 0);
    for (auto& v : b) v = std::uint8_t(rng.u64());
    CHECK(tinylearn::crc32(b.data(), b.size()) == tlref::crc32(b.data(), b.size()));
  }
}

TEST_CASE("Converted blob: header and records follow format.h") {
  const Converted& c = shared_model();
  const Bytes& b = c.blob;
  const Parsed p = parse(b);
  CHECK(std::memcmp(p.magic, "TLMB", 4) == 0);
  CHECK(p.version == 1);
  CHECK(p.header_bytes == 32);
  CHECK(p.total == b.size());
  CHECK(b.size() % 4 == 0);
  CHECK(p.crc == tlref::crc32(b.data() + 16, p.total - 16));
  CHECK(p.flags == 0);
  CHECK(p.tensor_count == 1 + 3 * 3);  // input, then weights, bias, output per layer
  CHECK(p.op_count == 3);
  // The arena of a 3-8-6-2 chain: at each op its input and output are live (4-byte aligned):
  // max(4 + 8, 8 + 8, 8 + 4) = 16, and the planner must reach that bound.
  CHECK(p.arena == 16);

  const std::uint32_t payload = 32 + 32 * std::uint32_t(p.tensor_count + p.op_count);
  std::uint64_t arena_end = 0;
  for (const PTensor& t : p.tensors) {
    CHECK(t.reserved == 0);
    CHECK((t.rank >= 1 && t.rank <= 4));
    for (int k = t.rank; k < 4; ++k) CHECK(t.dims[k] == 1);
    CHECK(t.offset % 4 == 0);
    if (t.storage == TLM_STORAGE_BLOB) {
      CHECK(t.offset >= payload);
      CHECK(t.offset + t.bytes() <= p.total);
    } else {
      REQUIRE(t.storage == TLM_STORAGE_ARENA);
      CHECK(t.type == TLM_TYPE_INT8);
      arena_end = std::max(arena_end, t.offset + t.bytes());
    }
  }
  CHECK(arena_end <= p.arena);
  CHECK(p.tensors[p.input].storage == TLM_STORAGE_ARENA);
  CHECK(p.tensors[p.output].storage == TLM_STORAGE_ARENA);

  // Operators: a chain input -> ... -> output, with the quantization the converter promises.
  std::uint16_t current = p.input;
  for (std::size_t l = 0; l < 3; ++l) {
    const POp& op = p.ops[l];
    const auto& d = dynamic_cast<const tinylearn::Dense&>(c.model->layer(l));
    CHECK(op.opcode == TLM_OP_FULLY_CONNECTED);
    CHECK(op.n_in == 3);
    CHECK(op.n_out == 1);
    CHECK(op.inputs[0] == current);
    for (int k = 3; k < 6; ++k) CHECK(op.inputs[k] == TLM_NO_TENSOR);
    CHECK(op.outputs[1] == TLM_NO_TENSOR);
    CHECK(op.params % 4 == 0);
    CHECK(op.params >= payload);
    CHECK(op.params_bytes == 36);  // tlm_fully_connected_ref_params: TFLite's reference requantization
    CHECK(op.reserved == 0);
    const PTensor &in = p.tensors[op.inputs[0]], &w = p.tensors[op.inputs[1]],
                  &bias = p.tensors[op.inputs[2]], &out = p.tensors[op.outputs[0]];
    // Weights: [out, in], symmetric per tensor, scale max|w| / 127.
    REQUIRE(w.rank == 2);
    REQUIRE(w.dims[0] == std::int32_t(d.units()));
    REQUIRE(w.dims[1] == std::int32_t(d.input_features()));
    CHECK(w.zero_point == 0);
    double wmax = 0;
    for (float v : d.kernel) wmax = std::max(wmax, std::fabs(double(v)));
    CHECK(std::fabs(double(w.scale) - wmax / 127.0) <= 1e-6 * wmax);
    for (std::size_t o = 0; o < d.units(); ++o)
      for (std::size_t i = 0; i < d.input_features(); ++i) {
        const auto q = std::int8_t(b[w.offset + o * d.input_features() + i]);
        const double exact = double(d.kernel(i, o)) / double(w.scale);
        CHECK(std::fabs(double(q) - exact) <= 0.5 + 1e-4);
        CHECK(std::abs(int(q)) <= 127);
      }
    // Bias: int32, scale s_in * s_w, zero point 0.
    REQUIRE(bias.type == TLM_TYPE_INT32);
    CHECK(bias.zero_point == 0);
    CHECK(std::fabs(double(bias.scale) - double(in.scale) * double(w.scale)) <=
          1e-6 * double(in.scale) * double(w.scale));
    for (std::size_t o = 0; o < d.units(); ++o) {
      const auto q = rd<std::int32_t>(b, bias.offset + 4 * o);
      CHECK(std::fabs(double(q) - double(d.bias(o)) / double(bias.scale)) <= 0.5 + 1e-3);
    }
    // Params: offsets from the zero points, multiplier ~ s_in s_w / s_out, ReLU clamp at the zero point.
    const std::int32_t in_off = rd<std::int32_t>(b, op.params), out_off = rd<std::int32_t>(b, op.params + 4);
    const std::int32_t mult = rd<std::int32_t>(b, op.params + 8), shift = rd<std::int32_t>(b, op.params + 12);
    const std::int32_t amin = rd<std::int32_t>(b, op.params + 16), amax = rd<std::int32_t>(b, op.params + 20);
    CHECK(in_off == -in.zero_point);
    CHECK(out_off == out.zero_point);
    CHECK(mult == 0);
    CHECK(shift == 0);
    // The scale as mantissa * 2^-exponent: exactly the double s_in * s_w / s_out.
    const std::uint64_t mant = std::uint64_t(rd<std::uint32_t>(b, op.params + 24)) |
                               (std::uint64_t(rd<std::uint32_t>(b, op.params + 28)) << 32);
    const std::int32_t expo = rd<std::int32_t>(b, op.params + 32);
    const double real = double(in.scale) * double(w.scale) / double(out.scale);
    CHECK(mant < (std::uint64_t(1) << 53));
    CHECK(std::ldexp(double(mant), -expo) == real);
    CHECK(amax == 127);
    CHECK(amin == (d.activation() == tinylearn::Activation::ReLU ? std::max(-128, out.zero_point) : -128));
    current = op.outputs[0];
  }
  CHECK(current == p.output);

  // The input's quantization comes from the calibration range (widened to hold 0).
  const auto [lo, hi] = std::minmax_element(c.calib.begin(), c.calib.end());
  const double wlo = std::min(double(*lo), 0.0), whi = std::max(double(*hi), 0.0);
  CHECK(std::fabs(double(p.tensors[p.input].scale) - (whi - wlo) / 255.0) <= 1e-6 * (whi - wlo));
}

TEST_CASE("Int8Model runs the blob bit-exactly like an independent int64 reference") {
  for (std::uint64_t seed : {4u, 5u, 6u}) {
    const Converted c = make_converted(seed);
    const Parsed p = parse(c.blob);
    tinylearn::Int8Model q(c.blob.data(), c.blob.size());
    CHECK(q.input_size() == 3);
    CHECK(q.output_size() == 2);
    CHECK(q.blob() == c.blob);
    tlref::Rng rng(seed);
    const std::size_t n = 500;
    std::vector<std::int8_t> in(n * 3), out(n * 2);
    for (auto& v : in) v = std::int8_t(rng.range(-128, 127));
    q.invoke(in.data(), out.data(), n);
    std::set<int> distinct;
    for (std::size_t i = 0; i < n; ++i) {
      const std::vector<std::int8_t> x(in.begin() + std::ptrdiff_t(3 * i), in.begin() + std::ptrdiff_t(3 * i + 3));
      const std::vector<std::int8_t> want = reference_run(c.blob, p, x);
      REQUIRE(want.size() == 2);
      CAPTURE(i);
      CHECK(out[2 * i] == want[0]);
      CHECK(out[2 * i + 1] == want[1]);
      distinct.insert(out[2 * i]);
    }
    CHECK(distinct.size() > 20);  // the outputs really vary with the input

    // Float in / float out approximates the float model (int8 error: a few output steps). On the
    // calibration inputs every activation lies inside its calibrated range; elsewhere int8
    // saturation (clamping at the range ends) is expected and would dominate the error.
    Matrix xs({200, 3});
    std::copy(c.calib.begin(), c.calib.begin() + 600, xs.begin());
    const Matrix ref = c.model->predict(xs);
    std::vector<float> got(400);
    q.predict(xs.data(), got.data(), 200);
    const PTensor& o = p.tensors[p.output];
    // Rounding of the input, weights, biases and two hidden activations, each at most half a
    // step of its own scale, propagates to a few output steps; 5 steps bounds it.
    const double tol = 5.0 * double(o.scale);
    for (std::size_t i = 0; i < 400; ++i) CHECK(std::fabs(double(got[i]) - double(ref.data()[i])) <= tol);
    // predict dequantizes exactly: scale * (q - zero_point).
    std::vector<std::int8_t> qi(3), qo(2);
    for (int k = 0; k < 3; ++k) qi[std::size_t(k)] = tinylearn::quantize_value(xs(0, std::size_t(k)), {p.tensors[p.input].scale, p.tensors[p.input].zero_point});
    q.invoke(qi.data(), qo.data(), 1);
    CHECK(got[0] == float(double(o.scale) * double(int(qo[0]) - o.zero_point)));
  }
}

TEST_CASE("Int8Model runs weights of -128 exactly") {
  // The spec's symmetric range excludes -128, but a blob may hold it; the host's fast fully
  // connected path multiplies by ~w where x < 0, which is 127 for it (an edge of its pair sums).
  Bytes b = shared_model().blob;
  const Parsed p0 = parse(b);
  tlref::Rng rng(12);
  for (const POp& op : p0.ops) {
    const PTensor& w = p0.tensors.at(op.inputs[1]);
    for (int k = 0; k < 3; ++k) b[w.offset + std::size_t(rng.range(0, std::int64_t(w.count()) - 1))] = 0x80;
  }
  fix_crc(b);
  const Parsed p = parse(b);
  tinylearn::Int8Model q(b.data(), b.size());
  const std::size_t n = 300;
  std::vector<std::int8_t> in(n * 3), out(n * 2);
  for (auto& v : in) v = std::int8_t(rng.range(-128, 127));
  q.invoke(in.data(), out.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::vector<std::int8_t> want =
        reference_run(b, p, std::vector<std::int8_t>(in.begin() + std::ptrdiff_t(3 * i), in.begin() + std::ptrdiff_t(3 * i + 3)));
    CAPTURE(i);
    CHECK(out[2 * i] == want[0]);
    CHECK(out[2 * i + 1] == want[1]);
  }
}

TEST_CASE("The C API: arena too small, misaligned blob or arena, null pointers") {
  const Bytes& b = shared_model().blob;
  HeapBlock blob(b.size() + 8);
  std::memcpy(blob.p, b.data(), b.size());
  tlm_model m;
  REQUIRE(tlm_model_init(&m, blob.p, b.size()) == TLM_OK);
  const std::uint32_t need = tlm_arena_bytes(&m);
  CHECK(need == 16);
  CHECK(m.blob_bytes == b.size());

  HeapBlock arena(need + 4);
  std::memset(arena.p, 0, need + 4);
  CHECK(tlm_invoke(&m, arena.p, need - 1) == TLM_ERR_ARENA_TOO_SMALL);
  CHECK(tlm_invoke(&m, arena.p, 0) == TLM_ERR_ARENA_TOO_SMALL);
  CHECK(tlm_invoke(&m, arena.p, need) == TLM_OK);
  CHECK(tlm_invoke(&m, static_cast<std::uint8_t*>(arena.p) + 2, need) == TLM_ERR_ALIGNMENT);
  CHECK(tlm_invoke(&m, nullptr, need) == TLM_ERR_NULL);
  CHECK(tlm_invoke(nullptr, arena.p, need) == TLM_ERR_NULL);
  // tlm_invoke_host_samples: each arena at least `need`, strides a multiple of 4, samples >= 1;
  // three arenas end with the bytes tlm_invoke leaves in each.
  {
    tlm_host host{};  // with the packed weights and scratch of the fast paths, where there are
    host.workers = 1;
    std::vector<std::uint8_t> scratch(tlm_host_scratch_bytes(&m) + 1);
    host.scratch = scratch.data();
    host.scratch_bytes = scratch.size();
    HeapBlock packed(tlm_host_packed_bytes(&m) + 64);
    void* packed_at = reinterpret_cast<void*>(
        (reinterpret_cast<std::uintptr_t>(packed.p) + 31) & ~std::uintptr_t{31});
    REQUIRE(tlm_host_pack(&m, packed_at, tlm_host_packed_bytes(&m)) == TLM_OK);
    host.packed = packed_at;
    HeapBlock arenas(3 * need);
    auto* a3 = static_cast<std::uint8_t*>(arenas.p);
    CHECK(tlm_invoke_host_samples(&m, arenas.p, need, 0, &host) == TLM_ERR_SHAPE);
    CHECK(tlm_invoke_host_samples(&m, arenas.p, need - 4, 2, &host) == TLM_ERR_ARENA_TOO_SMALL);
    CHECK(tlm_invoke_host_samples(&m, arenas.p, need + 2, 1, &host) == TLM_ERR_ALIGNMENT);
    CHECK(tlm_invoke_host_samples(&m, a3 + 2, need, 1, &host) == TLM_ERR_ALIGNMENT);
    CHECK(tlm_invoke_host_samples(&m, nullptr, need, 1, &host) == TLM_ERR_NULL);
    std::vector<std::uint8_t> want(3 * need);
    for (std::uint32_t k = 0; k < 3; ++k) {
      std::memset(arena.p, 0, need);
      for (int i = 0; i < 3; ++i)
        tlm_input(&m, arena.p)[i] = std::int8_t(40 * int(k) - 50 + 17 * i);
      REQUIRE(tlm_invoke(&m, arena.p, need) == TLM_OK);
      std::memcpy(want.data() + k * need, arena.p, need);
      std::memset(a3 + k * need, 0, need);
      for (int i = 0; i < 3; ++i)
        tlm_input(&m, a3 + k * need)[i] = std::int8_t(40 * int(k) - 50 + 17 * i);
    }
    std::vector<std::uint8_t> inputs(a3, a3 + 3 * need);
    REQUIRE(tlm_invoke_host_samples(&m, arenas.p, need, 3, &host) == TLM_OK);
    CHECK(std::memcmp(a3, want.data(), 3 * need) == 0);
    std::memcpy(a3, inputs.data(), 3 * need);  // again without a host: tlm_invoke on each
    REQUIRE(tlm_invoke_host_samples(&m, arenas.p, need, 3, nullptr) == TLM_OK);
    CHECK(std::memcmp(a3, want.data(), 3 * need) == 0);
    std::memset(arena.p, 0, need + 4);
  }
  // Input and output tensors lie inside the arena.
  const auto* a = static_cast<std::int8_t*>(arena.p);
  tlm_tensor_info ii, oi;
  REQUIRE(tlm_tensor(&m, m.input_tensor, &ii) == TLM_OK);
  REQUIRE(tlm_tensor(&m, m.output_tensor, &oi) == TLM_OK);
  CHECK(ii.bytes == 3);
  CHECK(oi.bytes == 2);
  CHECK(tlm_input(&m, arena.p) >= a);
  CHECK(tlm_input(&m, arena.p) + ii.bytes <= a + need);
  CHECK(tlm_output(&m, arena.p) >= a);
  CHECK(tlm_output(&m, arena.p) + oi.bytes <= a + need);
  CHECK(tlm_input(&m, nullptr) == nullptr);
  CHECK(tlm_output(nullptr, arena.p) == nullptr);
  CHECK(tlm_tensor(&m, 0, nullptr) == TLM_ERR_NULL);
  CHECK(tlm_tensor(nullptr, 0, &ii) == TLM_ERR_NULL);
  CHECK(tlm_arena_bytes(nullptr) == 0);

  tlm_model m2;
  CHECK(tlm_model_init(nullptr, blob.p, b.size()) == TLM_ERR_NULL);
  CHECK(tlm_model_init(&m2, nullptr, b.size()) == TLM_ERR_NULL);
  // Misaligned blob: a copy one byte into the block.
  auto* shifted = static_cast<std::uint8_t*>(blob.p) + 1;
  std::memmove(shifted, b.data(), b.size());
  CHECK(tlm_model_init(&m2, shifted, b.size()) == TLM_ERR_ALIGNMENT);
  // A failed init leaves the (previously valid) model unusable.
  m2 = m;
  CHECK(tlm_model_init(&m2, shifted, b.size()) == TLM_ERR_ALIGNMENT);
  CHECK(tlm_invoke(&m2, arena.p, need) == TLM_ERR_NULL);

  // Every status has a distinct, non-empty name.
  std::set<std::string> names;
  for (int s = TLM_OK; s <= TLM_ERR_UNUSED_TENSOR; ++s) {
    const char* n = tlm_status_str(tlm_status(s));
    REQUIRE(n != nullptr);
    CHECK(std::strlen(n) > 0);
    names.insert(n);
  }
  CHECK(names.size() == std::size_t(TLM_ERR_UNUSED_TENSOR) + 1);
  // Int8Model reports a rejected blob as invalid_argument.
  Bytes bad = b;
  bad[40] ^= 1;
  CHECK_THROWS_AS(tinylearn::Int8Model(bad.data(), bad.size()), std::invalid_argument);
  Bytes newer = b;
  wr<std::uint16_t>(newer, 4, 2);
  CHECK_THROWS_AS(tinylearn::Int8Model(newer.data(), newer.size()), std::invalid_argument);
}

TEST_CASE("tlm_model_init rejects every truncation of a valid blob") {
  const Bytes& b = shared_model().blob;
  tlref::Rng rng(3);
  for (std::size_t len = 0; len < b.size(); ++len) {
    const Bytes cut(b.begin(), b.begin() + std::ptrdiff_t(len));
    CAPTURE(len);
    CHECK(guarded_run(cut, rng) == TLM_ERR_TRUNCATED);
  }
  CHECK(guarded_run(b, rng) == TLM_OK);
  // Trailing bytes after `total` are ignored (the blob may sit in a larger flash region).
  Bytes longer = b;
  longer.resize(b.size() + 7, 0xAB);
  CHECK(guarded_run(longer, rng) == TLM_OK);
}

TEST_CASE("tlm_model_init survives random corruption, with and without a recomputed CRC") {
  const Bytes& b = shared_model().blob;
  tlref::Rng rng(99);
  RunStats with_crc, without_crc;
  const std::uint32_t interesting[] = {0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000,
                                       0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu, 0xFFFFFFFCu,
                                       std::uint32_t(b.size()), std::uint32_t(b.size()) + 4};
  for (int trial = 0; trial < 12000; ++trial) {
    Bytes m = b;
    switch (rng.range(0, 4)) {
      case 0:  // one bit
        m[std::size_t(rng.range(0, std::int64_t(m.size()) - 1))] ^= std::uint8_t(1u << rng.range(0, 7));
        break;
      case 1:  // several bits
        for (int k = int(rng.range(2, 8)); k-- > 0;)
          m[std::size_t(rng.range(0, std::int64_t(m.size()) - 1))] ^= std::uint8_t(1u << rng.range(0, 7));
        break;
      case 2:  // a random byte value
        m[std::size_t(rng.range(0, std::int64_t(m.size()) - 1))] = std::uint8_t(rng.u64());
        break;
      case 3: {  // an interesting 32-bit value at an aligned position
        const std::size_t at = 4 * std::size_t(rng.range(0, std::int64_t(m.size() / 4) - 1));
        wr<std::uint32_t>(m, at, interesting[rng.range(0, std::size(interesting) - 1)]);
        break;
      }
      default: {  // an interesting 16-bit value at an even position
        const std::size_t at = 2 * std::size_t(rng.range(0, std::int64_t(m.size() / 2) - 1));
        wr<std::uint16_t>(m, at, std::uint16_t(interesting[rng.range(0, std::size(interesting) - 1)]));
        break;
      }
    }
    const bool recompute = trial % 4 != 0;
    if (recompute) fix_crc(m);
    guarded_run(m, rng, recompute ? &with_crc : &without_crc);
  }
  // The mutations must reach deep checks and sometimes produce runnable models.
  MESSAGE("statuses with CRC fixed: " << with_crc.status_counts.size() << " kinds, invoked "
                                      << with_crc.invoked);
  CHECK(with_crc.status_counts.size() >= 8);
  CHECK(with_crc.invoked > 500);
  CHECK(without_crc.status_counts[TLM_ERR_CHECKSUM] > 1000);
  for (int s : {TLM_ERR_BAD_TENSOR, TLM_ERR_BAD_OP, TLM_ERR_BAD_HEADER, TLM_ERR_SHAPE})
    CHECK(with_crc.status_counts[s] > 0);
}

TEST_CASE("tlm_model_init: hostile values in every header, tensor and operator field") {
  const Bytes& b = shared_model().blob;
  const Parsed p = parse(b);
  tlref::Rng rng(7);
  const auto total = std::uint32_t(b.size());

  // Part 1: every field, many hostile values, with and without a fixed CRC: never unsafe.
  struct Field { std::size_t at, width; };
  std::vector<Field> fields;
  // Header: magic, version, header bytes, total, CRC, arena, counts, io tensors, flags.
  for (const Field f : {Field{0, 4}, Field{4, 2}, Field{6, 2}, Field{8, 4}, Field{12, 4}, Field{16, 4},
                        Field{20, 2}, Field{22, 2}, Field{24, 2}, Field{26, 2}, Field{28, 4}})
    fields.push_back(f);
  for (std::size_t i = 0; i < p.tensor_count; ++i) {
    for (std::size_t f : {0, 1, 2, 3}) fields.push_back({tensor_field(i, f), 1});
    for (std::size_t f : {4, 8, 12, 16, 20, 24, 28}) fields.push_back({tensor_field(i, f), 4});
  }
  for (std::size_t i = 0; i < p.op_count; ++i) {
    fields.push_back({op_field(p, i, 0), 2});
    fields.push_back({op_field(p, i, 2), 1});
    fields.push_back({op_field(p, i, 3), 1});
    for (std::size_t f = 4; f < 20; f += 2) fields.push_back({op_field(p, i, f), 2});
    for (std::size_t f : {20, 24, 28}) fields.push_back({op_field(p, i, f), 4});
    // The operator's parameters in the payload.
    for (std::size_t f = 0; f < 24; f += 4) fields.push_back({p.ops[i].params + f, 4});
  }
  const std::vector<std::uint32_t> values{
      0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFE, 0xFF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x10000,
      TLM_MAX_TENSORS, TLM_MAX_TENSORS + 1, p.tensor_count, p.tensor_count - 1u, 0x10000000,
      0x10000001, 0x7FFFFFFF, 0x80000000u, 0xFFFFFFF0u, 0xFFFFFFFCu, 0xFFFFFFFFu, total,
      total - 4, total + 4, p.arena, p.arena - 4, p.arena + 4, 0xFFFFFF80u /* -128 */,
      0xFFFFFF7Fu /* -129 */, 128, 129, 30, 31, 0xFFFFFFE1u /* -31 */, 0xFFFFFFE0u /* -32 */};
  RunStats stats;
  for (const Field& f : fields)
    for (std::uint32_t v : values)
      for (bool recompute : {true, false}) {
        Bytes m = b;
        if (f.width == 1) m[f.at] = std::uint8_t(v);
        if (f.width == 2) wr<std::uint16_t>(m, f.at, std::uint16_t(v));
        if (f.width == 4) wr<std::uint32_t>(m, f.at, v);
        if (recompute) fix_crc(m);
        CAPTURE(f.at);
        CAPTURE(v);
        guarded_run(m, rng, &stats);
      }
  MESSAGE("hostile fields: " << fields.size() << " fields, " << stats.invoked << " runnable variants");
  CHECK(stats.invoked > 0);

  // Part 2: specific hostile values and the status each must give (CRC recomputed).
  const POp& op0 = p.ops[0];
  const std::uint16_t w0 = op0.inputs[1], b0 = op0.inputs[2], out0 = op0.outputs[0];
  struct Case { const char* what; std::function<void(Bytes&)> patch; tlm_status want; };
  const std::vector<Case> cases{
      {"magic", [](Bytes& m) { m[3] = 'C'; }, TLM_ERR_MAGIC},
      {"version 2", [](Bytes& m) { wr<std::uint16_t>(m, 4, 2); }, TLM_ERR_VERSION},
      {"version 0", [](Bytes& m) { wr<std::uint16_t>(m, 4, 0); }, TLM_ERR_VERSION},
      {"header bytes", [](Bytes& m) { wr<std::uint16_t>(m, 6, 64); }, TLM_ERR_BAD_HEADER},
      {"total beyond the buffer", [&](Bytes& m) { wr<std::uint32_t>(m, 8, total + 4); }, TLM_ERR_TRUNCATED},
      {"total 0xFFFFFFFF", [](Bytes& m) { wr<std::uint32_t>(m, 8, 0xFFFFFFFFu); }, TLM_ERR_TRUNCATED},
      {"total below the header", [](Bytes& m) { wr<std::uint32_t>(m, 8, 16); }, TLM_ERR_BAD_HEADER},
      {"tensor count 0", [](Bytes& m) { wr<std::uint16_t>(m, 20, 0); }, TLM_ERR_BAD_HEADER},
      {"tensor count > max", [](Bytes& m) { wr<std::uint16_t>(m, 20, TLM_MAX_TENSORS + 1); }, TLM_ERR_BAD_HEADER},
      {"op count > max", [](Bytes& m) { wr<std::uint16_t>(m, 22, TLM_MAX_OPS + 1); }, TLM_ERR_BAD_HEADER},
      {"records past the end", [](Bytes& m) { wr<std::uint16_t>(m, 22, 1000); }, TLM_ERR_BAD_HEADER},
      {"input index out of range", [&](Bytes& m) { wr<std::uint16_t>(m, 24, p.tensor_count); }, TLM_ERR_BAD_HEADER},
      {"output index 0xFFFF", [](Bytes& m) { wr<std::uint16_t>(m, 26, 0xFFFF); }, TLM_ERR_BAD_HEADER},
      {"input is a constant", [&](Bytes& m) { wr<std::uint16_t>(m, 24, w0); }, TLM_ERR_BAD_HEADER},
      {"output is int32", [&](Bytes& m) { wr<std::uint16_t>(m, 26, b0); }, TLM_ERR_BAD_HEADER},
      {"flags", [](Bytes& m) { wr<std::uint32_t>(m, 28, 1); }, TLM_ERR_BAD_HEADER},
      {"tensor type", [&](Bytes& m) { m[tensor_field(w0, 0)] = 3; }, TLM_ERR_BAD_TENSOR},
      {"tensor rank 0", [&](Bytes& m) { m[tensor_field(w0, 1)] = 0; }, TLM_ERR_BAD_TENSOR},
      {"tensor rank 5", [&](Bytes& m) { m[tensor_field(w0, 1)] = 5; }, TLM_ERR_BAD_TENSOR},
      {"tensor storage", [&](Bytes& m) { m[tensor_field(w0, 2)] = 0; }, TLM_ERR_BAD_TENSOR},
      {"tensor reserved", [&](Bytes& m) { m[tensor_field(w0, 3)] = 1; }, TLM_ERR_BAD_TENSOR},
      {"dim 0", [&](Bytes& m) { wr<std::int32_t>(m, tensor_field(w0, 4), 0); }, TLM_ERR_BAD_TENSOR},
      {"dim -1", [&](Bytes& m) { wr<std::int32_t>(m, tensor_field(w0, 8), -1); }, TLM_ERR_BAD_TENSOR},
      {"dim past the rank", [&](Bytes& m) { wr<std::int32_t>(m, tensor_field(w0, 12), 2); }, TLM_ERR_BAD_TENSOR},
      {"huge dims", [&](Bytes& m) { wr<std::int32_t>(m, tensor_field(w0, 4), 0x7FFFFFFF); }, TLM_ERR_BAD_TENSOR},
      {"dims whose product overflows 32 bits",
       [&](Bytes& m) {
         m[tensor_field(w0, 1)] = 4;
         for (std::size_t k = 0; k < 4; ++k) wr<std::int32_t>(m, tensor_field(w0, 4 + 4 * k), 0x100);
       },
       TLM_ERR_BAD_TENSOR},
      {"const offset misaligned", [&](Bytes& m) { wr<std::uint32_t>(m, tensor_field(w0, 20), p.tensors[w0].offset + 2); }, TLM_ERR_BAD_TENSOR},
      {"const offset past the end", [&](Bytes& m) { wr<std::uint32_t>(m, tensor_field(w0, 20), total); }, TLM_ERR_BAD_TENSOR},
      {"const offset + bytes wraps 32 bits", [&](Bytes& m) { wr<std::uint32_t>(m, tensor_field(w0, 20), 0xFFFFFFFCu); }, TLM_ERR_BAD_TENSOR},
      {"const offset inside the records", [&](Bytes& m) { wr<std::uint32_t>(m, tensor_field(w0, 20), 32); }, TLM_ERR_BAD_TENSOR},
      {"arena offset past the arena", [&](Bytes& m) { wr<std::uint32_t>(m, tensor_field(out0, 20), p.arena); }, TLM_ERR_BAD_TENSOR},
      {"arena offset + bytes wraps 32 bits",
       [&](Bytes& m) {
         wr<std::uint32_t>(m, 16, 0xFFFFFFFFu);  // a header arena size that admits any 32-bit end
         wr<std::uint32_t>(m, tensor_field(out0, 20), 0xFFFFFFFCu);
       },
       TLM_ERR_BAD_TENSOR},
      {"unknown opcode", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 1, 0), 2); }, TLM_ERR_UNKNOWN_OP},
      {"opcode 0", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 0), 0); }, TLM_ERR_UNKNOWN_OP},
      {"op input count", [&](Bytes& m) { m[op_field(p, 0, 2)] = 2; }, TLM_ERR_BAD_OP},
      {"op output count", [&](Bytes& m) { m[op_field(p, 0, 3)] = 2; }, TLM_ERR_BAD_OP},
      {"op input index out of range", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 4), p.tensor_count); }, TLM_ERR_BAD_OP},
      {"op weights index 0xFFFF", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 6), 0xFFFF); }, TLM_ERR_BAD_OP},
      {"op output index out of range", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 2, 16), 0x8000); }, TLM_ERR_BAD_OP},
      {"params misaligned", [&](Bytes& m) { wr<std::uint32_t>(m, op_field(p, 0, 20), op0.params + 2); }, TLM_ERR_BAD_OP},
      {"params past the end", [&](Bytes& m) { wr<std::uint32_t>(m, op_field(p, 0, 20), total - 20); }, TLM_ERR_BAD_OP},
      {"params offset + bytes wraps 32 bits", [&](Bytes& m) { wr<std::uint32_t>(m, op_field(p, 0, 20), 0xFFFFFFF0u); }, TLM_ERR_BAD_OP},
      {"params bytes huge", [&](Bytes& m) { wr<std::uint32_t>(m, op_field(p, 0, 24), 0xFFFFFFFFu); }, TLM_ERR_BAD_OP},
      {"params bytes wrong", [&](Bytes& m) { wr<std::uint32_t>(m, op_field(p, 0, 24), 20); }, TLM_ERR_BAD_OP},
      {"op reserved", [&](Bytes& m) { wr<std::uint32_t>(m, op_field(p, 0, 28), 1); }, TLM_ERR_BAD_OP},
      {"op output is its own input (wrong width)", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 16), op0.inputs[0]); }, TLM_ERR_SHAPE},
      {"op output overlaps its input in the arena",
       [&](Bytes& m) { wr<std::uint32_t>(m, tensor_field(out0, 20), p.tensors[op0.inputs[0]].offset); },
       TLM_ERR_BAD_OP},
      {"weights in the arena", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 6), op0.inputs[0]); }, TLM_ERR_SHAPE},
      {"bias is int8", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 8), w0); }, TLM_ERR_SHAPE},
      {"weights of another layer", [&](Bytes& m) { wr<std::uint16_t>(m, op_field(p, 0, 6), p.ops[1].inputs[1]); }, TLM_ERR_SHAPE},
      {"input_offset out of range", [&](Bytes& m) { wr<std::int32_t>(m, op0.params, 1000); }, TLM_ERR_BAD_PARAMS},
      {"output_shift out of range", [&](Bytes& m) { wr<std::int32_t>(m, op0.params + 12, 31); }, TLM_ERR_BAD_PARAMS},
      {"negative multiplier", [&](Bytes& m) { wr<std::int32_t>(m, op0.params + 8, -5); }, TLM_ERR_BAD_PARAMS},
      {"activation min > max", [&](Bytes& m) { wr<std::int32_t>(m, op0.params + 16, 127); wr<std::int32_t>(m, op0.params + 20, 0); }, TLM_ERR_BAD_PARAMS},
      {"bias beyond the accumulator bound", [&](Bytes& m) { wr<std::int32_t>(m, p.tensors[b0].offset, INT32_MAX); }, TLM_ERR_ACCUMULATOR_RANGE},
  };
  // The overlap case needs room for the 8-byte output at the input's offset.
  REQUIRE(p.tensors[op0.inputs[0]].offset + 8 <= p.arena);
  for (const Case& c : cases) {
    Bytes m = b;
    c.patch(m);
    fix_crc(m);
    CAPTURE(c.what);
    CHECK(guarded_run(m, rng) == c.want);
  }
  // Without the recomputed CRC, a change confined to bytes [16, total) is a checksum error.
  for (const Case& c : cases) {
    Bytes m = b;
    c.patch(m);
    bool header_only_after_16 = true;
    for (std::size_t i = 0; i < 16; ++i) header_only_after_16 = header_only_after_16 && m[i] == b[i];
    CAPTURE(c.what);
    const tlm_status s = guarded_run(m, rng);
    CHECK(s != TLM_OK);
    if (header_only_after_16) CHECK(s == TLM_ERR_CHECKSUM);
  }
}

TEST_CASE("tlm_model_init says which operator or tensor it rejects, and refuses unused tensors") {
  const Bytes& b = shared_model().blob;
  const Parsed p = parse(b);
  REQUIRE(p.op_count >= 2);
  auto init = [](const Bytes& m, tlm_model* model) {
    HeapBlock blob(m.size());
    std::memcpy(blob.p, m.data(), m.size());
    return tlm_model_init(model, blob.p, m.size());
  };
  tlm_model model;
  REQUIRE(init(b, &model) == TLM_OK);
  CHECK(model.error_op == TLM_NO_INDEX);
  CHECK(model.error_tensor == TLM_NO_INDEX);

  // Operator 1 reading operator 0's weights (of another shape): operator 1 is named.
  Bytes m = b;
  wr<std::uint16_t>(m, op_field(p, 1, 6), p.ops[0].inputs[1]);
  fix_crc(m);
  CHECK(init(m, &model) == TLM_ERR_SHAPE);
  CHECK(model.error_op == 1);
  CHECK(model.error_tensor == TLM_NO_INDEX);

  // An invalid tensor record: the tensor is named.
  const std::uint16_t w1 = p.ops[1].inputs[1];
  m = b;
  m[tensor_field(w1, 1)] = 5;  // rank 5
  fix_crc(m);
  CHECK(init(m, &model) == TLM_ERR_BAD_TENSOR);
  CHECK(model.error_op == TLM_NO_INDEX);
  CHECK(model.error_tensor == w1);

  // Operator 1 without its (optional) bias: a valid operator, but the bias tensor is then used
  // by nothing.
  const std::uint16_t b1 = p.ops[1].inputs[2];
  REQUIRE(b1 != TLM_NO_TENSOR);
  m = b;
  wr<std::uint16_t>(m, op_field(p, 1, 8), TLM_NO_TENSOR);
  fix_crc(m);
  CHECK(init(m, &model) == TLM_ERR_UNUSED_TENSOR);
  CHECK(model.error_op == TLM_NO_INDEX);
  CHECK(model.error_tensor == b1);
}

TEST_CASE("tlm_model_init rejects a fully connected op whose batches * out wraps 32 bits") {
  // in = 1, out = 65536, input [65537, 1]: batches * out = 2^32 + 65536, which equals the output
  // tensor's 65536 bytes modulo 2^32. The kernel would write 2^32 + 65536 bytes into the arena.
  tinylearn::BlobBuilder builder;
  const std::uint16_t in = builder.add_arena_tensor(TLM_TYPE_INT8, {65537, 1}, {1.0f, 0});
  std::vector<std::int8_t> w(65536, 1);
  const std::uint16_t wt = builder.add_const_tensor(TLM_TYPE_INT8, {65536, 1}, w.data(), {1.0f, 0});
  const std::uint16_t out = builder.add_arena_tensor(TLM_TYPE_INT8, {1, 65536}, {1.0f, 0});
  tlm_fully_connected_params params{0, 0, 1 << 30, 0, -128, 127};
  builder.add_op(TLM_OP_FULLY_CONNECTED, {in, wt, TLM_NO_TENSOR}, {out}, &params, sizeof params);
  const Bytes blob = builder.finish(in, out);
  HeapBlock copy(blob.size());
  std::memcpy(copy.p, blob.data(), blob.size());
  tlm_model m;
  CHECK(tlm_model_init(&m, copy.p, blob.size()) == TLM_ERR_SHAPE);

  // The same op with consistent shapes is accepted and runs in an exactly-sized arena.
  tinylearn::BlobBuilder ok;
  const std::uint16_t in2 = ok.add_arena_tensor(TLM_TYPE_INT8, {3, 1}, {1.0f, 0});
  const std::uint16_t wt2 = ok.add_const_tensor(TLM_TYPE_INT8, {65536, 1}, w.data(), {1.0f, 0});
  const std::uint16_t out2 = ok.add_arena_tensor(TLM_TYPE_INT8, {3, 65536}, {1.0f, 0});
  ok.add_op(TLM_OP_FULLY_CONNECTED, {in2, wt2, TLM_NO_TENSOR}, {out2}, &params, sizeof params);
  tlref::Rng rng(1);
  CHECK(guarded_run(ok.finish(in2, out2), rng) == TLM_OK);
}

// ---- Sparse weights (format.h, TLM_TYPE_INT8_SPARSE) ----------------------------------------

namespace {

// 40 -> 32 (ReLU) -> 10, each kernel with about 80% of its weights set to zero, quantized, and
// lowered with the given weight encoding.
struct PrunedGraph {
  tinylearn::QGraph graph;
  Bytes dense, sparse, automatic;
};

const PrunedGraph& pruned_graph() {
  static const PrunedGraph pg = [] {
    using namespace tinylearn;
    Sequential model;
    model.add(std::make_unique<Dense>(32, Activation::ReLU));
    model.add(std::make_unique<Dense>(10));
    model.build(40, 7);
    tlref::Rng rng(8);
    for (std::size_t l = 0; l < 2; ++l) {
      Dense& d = dynamic_cast<Dense&>(model.layer(l));
      for (float& w : d.kernel) w = rng.uniform() < 0.8 ? 0.0f : w;
      for (float& b : d.bias) b = float(rng.uniform(-0.3, 0.3));
    }
    Matrix calib({256, 40});
    for (float& v : calib) v = float(rng.uniform(-2, 2));
    PrunedGraph r;
    r.graph = quantize(model, calib);
    r.dense = lower(r.graph, WeightEncoding::Dense);
    r.sparse = lower(r.graph, WeightEncoding::Sparse);
    r.automatic = lower(r.graph, WeightEncoding::Auto);
    return r;
  }();
  return pg;
}

// Indices of the blob's sparse tensors.
std::vector<std::size_t> sparse_tensors(const Parsed& p) {
  std::vector<std::size_t> r;
  for (std::size_t i = 0; i < p.tensors.size(); ++i)
    if (p.tensors[i].type == TLM_TYPE_INT8_SPARSE) r.push_back(i);
  return r;
}

// n invocations of a blob through the host runner and through tlm_invoke, outputs appended.
std::vector<std::int8_t> run_both(const Bytes& blob, const std::vector<std::int8_t>& in,
                                  std::size_t n) {
  tinylearn::Int8Model q(blob.data(), blob.size());
  const std::size_t out_n = q.output_size();
  std::vector<std::int8_t> host(n * out_n), plain(n * out_n);
  q.invoke(in.data(), host.data(), n);
  HeapBlock copy(blob.size());
  std::memcpy(copy.p, blob.data(), blob.size());
  tlm_model m;
  REQUIRE(tlm_model_init(&m, copy.p, blob.size()) == TLM_OK);
  HeapBlock arena(tlm_arena_bytes(&m));
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(tlm_input(&m, arena.p), in.data() + i * q.input_size(), q.input_size());
    REQUIRE(tlm_invoke(&m, arena.p, tlm_arena_bytes(&m)) == TLM_OK);
    std::memcpy(plain.data() + i * out_n, tlm_output(&m, arena.p), out_n);
  }
  CHECK(host == plain);
  return host;
}

}  // namespace

TEST_CASE("Sparse weights: lowered sparse, a pruned model runs exactly as lowered dense") {
  const PrunedGraph& pg = pruned_graph();
  const Parsed pd = parse(pg.dense), ps = parse(pg.sparse), pa = parse(pg.automatic);
  CHECK(sparse_tensors(pd).empty());
  CHECK(sparse_tensors(ps).size() == 2);
  CHECK(sparse_tensors(pa).size() == 2);  // at ~80% zeros the encoding is the smaller
  CHECK(pg.sparse.size() < pg.dense.size());
  for (std::size_t i : sparse_tensors(ps)) {
    // The record keeps the dense dims; the encoding decodes to the dense tensor's bytes.
    const PTensor& t = ps.tensors[i];
    CHECK(t.storage == TLM_STORAGE_BLOB);
    CHECK(t.rank == 2);
  }
  tlref::Rng rng(9);
  const std::size_t n = 300;
  std::vector<std::int8_t> in(n * 40);
  for (auto& v : in) v = std::int8_t(rng.range(-128, 127));
  const std::vector<std::int8_t> want = run_both(pg.dense, in, n);
  CHECK(run_both(pg.sparse, in, n) == want);
  CHECK(run_both(pg.automatic, in, n) == want);
  CHECK(std::set<std::int8_t>(want.begin(), want.end()).size() > 20);
}

TEST_CASE("Sparse weights: a CONV_2D with a sparse filter runs as with the dense filter; depthwise "
          "and other operands refuse it") {
  tlref::Rng rng(10);
  const int in_c = 3, out_c = 5, k = 3;
  std::vector<std::int8_t> f(std::size_t(out_c * k * k * in_c));
  for (auto& v : f) v = rng.uniform() < 0.7 ? 0 : std::int8_t(rng.range(-127, 127));
  for (int i = 0; i < k * k * in_c; ++i) f[std::size_t(2 * k * k * in_c + i)] = 0;  // an empty channel
  std::vector<std::int32_t> mult(out_c, 1 << 30), shift(out_c, -7), bias(out_c);
  for (auto& b : bias) b = std::int32_t(rng.range(-2000, 2000));
  auto build = [&](bool sparse, std::uint16_t opcode) {
    tinylearn::BlobBuilder b;
    const std::uint16_t in = b.add_arena_tensor(TLM_TYPE_INT8, {1, 7, 6, in_c}, {0.5f, 3});
    const std::uint16_t w =
        sparse ? b.add_sparse_tensor({out_c, k, k, in_c},
                                     tinylearn::encode_sparse_s8(f.data(), out_c, k * k * in_c), {0.0f, 0})
               : b.add_const_tensor(TLM_TYPE_INT8, {out_c, k, k, in_c}, f.data(), {0.0f, 0});
    const std::uint16_t bi = b.add_const_tensor(TLM_TYPE_INT32, {out_c}, bias.data(), {0.0f, 0});
    const std::uint16_t mu = b.add_const_tensor(TLM_TYPE_INT32, {out_c}, mult.data(), {0.0f, 0});
    const std::uint16_t sh = b.add_const_tensor(TLM_TYPE_INT32, {out_c}, shift.data(), {0.0f, 0});
    // SAME padding, stride 1: border windows and inner ones.
    const std::uint16_t out = b.add_arena_tensor(TLM_TYPE_INT8, {1, 7, 6, out_c}, {0.25f, -2});
    const tlm_conv2d_params p{-3, -2, 1, 1, 1, 1, 1, 1, -128, 127};
    b.add_op(opcode, {in, w, bi, mu, sh}, {out}, &p, sizeof p);
    return b.finish(in, out);
  };
  const Bytes dense = build(false, TLM_OP_CONV_2D), sparse = build(true, TLM_OP_CONV_2D);
  CHECK(sparse.size() < dense.size());
  const std::size_t n = 20;
  std::vector<std::int8_t> in(n * 7 * 6 * in_c);
  for (auto& v : in) v = std::int8_t(rng.range(-128, 127));
  const std::vector<std::int8_t> want = run_both(dense, in, n);
  CHECK(run_both(sparse, in, n) == want);
  CHECK(std::set<std::int8_t>(want.begin(), want.end()).size() > 20);
  // A sparse depthwise filter is an operand of the wrong type.
  const tlm_depthwise_conv2d_params dp{-3, -2, 1, 1, 1, 1, 1, 1, 1, -128, 127};
  tinylearn::BlobBuilder b;
  const std::uint16_t in_t = b.add_arena_tensor(TLM_TYPE_INT8, {1, 7, 6, 5}, {0.5f, 3});
  const std::uint16_t w = b.add_sparse_tensor({1, k, k, 5}, tinylearn::encode_sparse_s8(f.data(), 1, k * k * 5),
                                              {0.0f, 0});
  const std::uint16_t mu = b.add_const_tensor(TLM_TYPE_INT32, {5}, mult.data(), {0.0f, 0});
  const std::uint16_t sh = b.add_const_tensor(TLM_TYPE_INT32, {5}, shift.data(), {0.0f, 0});
  const std::uint16_t out = b.add_arena_tensor(TLM_TYPE_INT8, {1, 7, 6, 5}, {0.25f, -2});
  b.add_op(TLM_OP_DEPTHWISE_CONV_2D, {in_t, w, TLM_NO_TENSOR, mu, sh}, {out}, &dp, sizeof dp);
  tlref::Rng r2(1);
  CHECK(guarded_run(b.finish(in_t, out), r2) == TLM_ERR_SHAPE);
}

TEST_CASE("tlm_model_init rejects hostile sparse tensors with a status, never reading outside") {
  const Bytes good = pruned_graph().sparse;
  const Parsed p = parse(good);
  const std::vector<std::size_t> sparse = sparse_tensors(p);
  REQUIRE(sparse.size() == 2);
  tlref::Rng rng(11);
  REQUIRE(guarded_run(good, rng) == TLM_OK);
  auto edited = [&](const std::function<void(Bytes&)>& edit) {
    Bytes b = good;
    edit(b);
    fix_crc(b);
    return guarded_run(b, rng);
  };
  const POp& fc0 = p.ops[0];
  for (std::size_t t : sparse) {
    CAPTURE(t);
    const PTensor& ts = p.tensors[t];
    const std::size_t at = ts.offset;
    const int rows = ts.dims[0], cols = ts.dims[1];
    std::uint32_t n;
    std::memcpy(&n, good.data() + at, 4);
    const std::size_t at_steps = at + 4 + ((2 * std::size_t(rows) + 3) & ~std::size_t{3});
    // Entry count too large for the blob, too large for the dims, or not the counts' sum.
    CHECK(edited([&](Bytes& b) { wr<std::uint32_t>(b, at, 0x7FFFFFFFu); }) == TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) { wr<std::uint32_t>(b, at, std::uint32_t(rows * cols + 1)); }) == TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) { wr<std::uint32_t>(b, at, n - 1); }) == TLM_ERR_BAD_TENSOR);
    // A row's count over its width, or counts adding up past n.
    CHECK(edited([&](Bytes& b) { wr<std::uint16_t>(b, at + 4, std::uint16_t(cols + 1)); }) == TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) {
            wr<std::uint16_t>(b, at + 4, std::uint16_t(rd<std::uint16_t>(b, at + 4) + 1));
          }) == TLM_ERR_BAD_TENSOR);
    // A step past the row's end.
    CHECK(edited([&](Bytes& b) { b[at_steps + n - 1] = 255; }) == TLM_ERR_BAD_TENSOR);
    // Dims that disagree with the encoding: a narrower row than its positions reach; a row count
    // whose counts section overruns (the encoding then claims bytes the blob lacks, or its counts
    // do not add up); rank 1.
    CHECK(edited([&](Bytes& b) { wr<std::int32_t>(b, tensor_field(t, 8), 1); }) == TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) { wr<std::int32_t>(b, tensor_field(t, 4), 1 << 20); }) == TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) { b[tensor_field(t, 1)] = 1; wr<std::int32_t>(b, tensor_field(t, 8), 1); }) ==
          TLM_ERR_BAD_TENSOR);
    // The encoding moved to the last word of the blob, or past it; in the arena.
    CHECK(edited([&](Bytes& b) { wr<std::uint32_t>(b, tensor_field(t, 20), std::uint32_t(b.size() - 4)); }) ==
          TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) { wr<std::uint32_t>(b, tensor_field(t, 20), std::uint32_t(b.size())); }) ==
          TLM_ERR_BAD_TENSOR);
    CHECK(edited([&](Bytes& b) { b[tensor_field(t, 2)] = TLM_STORAGE_ARENA; }) == TLM_ERR_BAD_TENSOR);
  }
  // Type 4 on an int32 bias (rank 1) or an arena tensor; a sparse tensor as a bias operand.
  CHECK(edited([&](Bytes& b) { b[tensor_field(fc0.inputs[2], 0)] = TLM_TYPE_INT8_SPARSE; }) == TLM_ERR_BAD_TENSOR);
  CHECK(edited([&](Bytes& b) { b[tensor_field(fc0.inputs[0], 0)] = TLM_TYPE_INT8_SPARSE; }) == TLM_ERR_BAD_TENSOR);
  CHECK(edited([&](Bytes& b) { wr<std::uint16_t>(b, op_field(p, 0, 8), fc0.inputs[1]); }) == TLM_ERR_SHAPE);
  // A dense weight tensor relabelled sparse: its bytes read as an encoding, checked as one.
  const Parsed pd = parse(pruned_graph().dense);
  for (std::size_t k = 0; k < 2; ++k) {
    Bytes b = pruned_graph().dense;
    b[tensor_field(pd.ops[k].inputs[1], 0)] = TLM_TYPE_INT8_SPARSE;
    fix_crc(b);
    CHECK(guarded_run(b, rng) != TLM_OK);
  }
  // Random bytes in the sparse sections (CRC recomputed): a status or a run, nothing outside.
  RunStats stats;
  for (int trial = 0; trial < 3000; ++trial) {
    Bytes b = good;
    const std::size_t t = sparse[std::size_t(trial % 2)];
    const std::size_t begin = p.tensors[t].offset;
    const std::size_t span = t == sparse.back() ? b.size() - begin : std::size_t(64);
    for (int e = int(rng.range(1, 3)); e > 0; --e)
      b[begin + std::size_t(rng.range(0, std::int64_t(std::min<std::size_t>(span, b.size() - begin)) - 1))] =
          std::uint8_t(rng.range(0, 255));
    fix_crc(b);
    guarded_run(b, rng, &stats);
  }
  CHECK(stats.status_counts[TLM_ERR_BAD_TENSOR] > 100);
  CHECK(stats.invoked > 100);
}

TEST_CASE("Sparse weights: the fixed-point FULLY_CONNECTED variant runs them as dense weights") {
  tlref::Rng rng(12);
  const int in_n = 37, out_n = 11;  // odd sizes
  std::vector<std::int8_t> w(std::size_t(in_n * out_n));
  for (auto& v : w) v = rng.uniform() < 0.75 ? 0 : std::int8_t(rng.range(-127, 127));
  for (int i = 0; i < in_n; ++i) w[std::size_t(4 * in_n + i)] = 0;  // an all-zero output channel
  std::vector<std::int32_t> bias(out_n);
  for (auto& b : bias) b = std::int32_t(rng.range(-3000, 3000));
  const tlm_fully_connected_params params{5, -3, 1 << 30, -6, -128, 127};
  auto build = [&](bool sparse) {
    tinylearn::BlobBuilder b;
    const std::uint16_t in = b.add_arena_tensor(TLM_TYPE_INT8, {1, in_n}, {0.5f, -5});
    const std::uint16_t wt =
        sparse ? b.add_sparse_tensor({out_n, in_n}, tinylearn::encode_sparse_s8(w.data(), out_n, in_n), {0.01f, 0})
               : b.add_const_tensor(TLM_TYPE_INT8, {out_n, in_n}, w.data(), {0.01f, 0});
    const std::uint16_t bi = b.add_const_tensor(TLM_TYPE_INT32, {out_n}, bias.data(), {0.0f, 0});
    const std::uint16_t out = b.add_arena_tensor(TLM_TYPE_INT8, {1, out_n}, {0.25f, -3});
    b.add_op(TLM_OP_FULLY_CONNECTED, {in, wt, bi}, {out}, &params, sizeof params);
    return b.finish(in, out);
  };
  const Bytes dense = build(false), sparse = build(true);
  CHECK(parse(sparse).tensors[1].type == TLM_TYPE_INT8_SPARSE);
  const std::size_t n = 50;
  std::vector<std::int8_t> in(n * in_n);
  for (auto& v : in) v = std::int8_t(rng.range(-128, 127));
  const std::vector<std::int8_t> want = run_both(dense, in, n);
  CHECK(run_both(sparse, in, n) == want);
  CHECK(std::set<std::int8_t>(want.begin(), want.end()).size() > 20);
}
