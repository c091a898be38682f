// tinylearn conversion: post-training int8 quantization (TFLite int8 spec), memory planning and
// serialization into the blob format of tinylearn/micro/format.h, plus a host-side runner.
//
// Usage:
//   tinylearn::Sequential model = ...;                         // trained
//   std::vector<uint8_t> blob = tinylearn::convert(model, x_calibration);
//   tinylearn::Int8Model q(blob.data(), blob.size());         // validates (throws on bad blobs)
//   xt::xtensor<float, 2> y = q.predict(x_test);
#ifndef TINYLEARN_CONVERT_CONVERT_H
#define TINYLEARN_CONVERT_CONVERT_H

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"
#include "tinylearn/train/fake_quant.h"
#include "tinylearn/train/model.h"

namespace tinylearn {

// QuantParams and choose_activation_params: tinylearn/train/fake_quant.h (training simulates them).

// TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31).
struct QuantizedMultiplier {
  std::int32_t multiplier;
  int shift;
};
QuantizedMultiplier quantize_multiplier(double real);

// TFLite's rounding (half away from zero) of x / scale + zero point, clamped to int8.
std::int8_t quantize_value(float x, QuantParams p);

// Arena planning. A buffer is live from the operator that writes it to the last that reads it
// (inclusive); two buffers may share bytes only when their lifetimes are disjoint.
struct PlanBuffer {
  std::uint32_t bytes;
  int first_op;
  int last_op;
};
struct MemoryPlan {
  std::vector<std::uint32_t> offsets;
  std::uint32_t arena_bytes;
};
// Greedy placement (each buffer at the lowest aligned offset free over its lifetime) in several
// orders (largest first, first use, longest lifetime, size x lifetime); the smallest arena wins.
MemoryPlan plan_memory(const std::vector<PlanBuffer>& buffers, std::uint32_t alignment = 4);

// Writes a model blob: tensors, operators and payload; plans the arena and sets the checksum.
class BlobBuilder {
 public:
  // Returns the tensor index. `data` (bytes of the tensor, little-endian) only for constants.
  std::uint16_t add_arena_tensor(std::uint8_t type, const std::vector<std::int32_t>& dims,
                                 QuantParams q);
  std::uint16_t add_const_tensor(std::uint8_t type, const std::vector<std::int32_t>& dims,
                                 const void* data, QuantParams q);
  // A TLM_TYPE_INT8_SPARSE constant of (dense) `dims` stored as `encoding` (encode_sparse_s8).
  std::uint16_t add_sparse_tensor(const std::vector<std::int32_t>& dims,
                                  std::vector<std::uint8_t> encoding, QuantParams q);
  // Places arena tensor `b` at `a`'s offset plus `delta` (a multiple of 4; 0: the same bytes),
  // overlapping it: a reshape's output, an operator computed in place, or a window operator
  // whose output trails its input. The caller guarantees that this is exact (the kernel allows
  // it, and no other reader of `a` runs after `b` is written).
  void share_arena(std::uint16_t a, std::uint16_t b, std::int32_t delta = 0);
  void add_op(std::uint16_t opcode, const std::vector<std::uint16_t>& inputs,
              const std::vector<std::uint16_t>& outputs, const void* params,
              std::uint32_t params_bytes);
  std::vector<std::uint8_t> finish(std::uint16_t input, std::uint16_t output) const;

 private:
  struct Tensor {
    std::uint8_t type, storage;
    std::vector<std::int32_t> dims;
    QuantParams q;
    std::vector<std::uint8_t> data;
    std::uint32_t bytes;
  };
  struct Op {
    std::uint16_t opcode;
    std::vector<std::uint16_t> inputs, outputs;
    std::vector<std::uint8_t> params;
  };
  std::uint16_t add(Tensor t);
  std::uint16_t root(std::uint16_t t, std::int64_t* offset = nullptr) const;
  std::vector<Tensor> tensors_;
  std::vector<std::uint16_t> share_;        // union-find parent of each tensor (arena sharing)
  std::vector<std::int64_t> share_offset_;  // its offset from that parent
  std::vector<Op> ops_;
};

// Quantizes a trained model to int8 with activation ranges calibrated on `representative`
// (N, input_features). Dense kernels: per-tensor symmetric int8; biases: int32. The model must
// be a chain of Dense layers for now (the int8 kernels of other layers come with the converter).
std::vector<std::uint8_t> convert(Model& model, const Tensor& representative);

// The CRC-32 the blob header carries (zlib's), over `n` bytes.
std::uint32_t crc32(const std::uint8_t* data, std::size_t n);

// Runs a blob with the freestanding core on the host. Throws std::invalid_argument with the
// core's status when the blob is rejected.
class HostPool;
class SplitChooser;

class Int8Model {
 public:
  // host_sparse: run sparse weights (TLM_TYPE_INT8_SPARSE) with the sparse reference kernels, as
  // the firmware does; by default they are unpacked once into a dense copy of the blob that the
  // host's fast kernels run (the same outputs, bit for bit). blob() is the given blob either way.
  Int8Model(const std::uint8_t* blob, std::size_t bytes, bool host_sparse = false);
  ~Int8Model();
  Int8Model(Int8Model&&) noexcept;
  Int8Model& operator=(Int8Model&&) noexcept;
  const tlm_model& model() const { return model_; }
  tlm_tensor_info input_info() const;
  tlm_tensor_info output_info() const;
  // Bytes of one sample's input and output tensors (int8: one per element; float32: four).
  std::uint32_t input_size() const { return input_info().bytes; }
  std::uint32_t output_size() const { return output_info().bytes; }
  // Elements of one sample's input and output.
  std::uint32_t input_elements() const { return elements(input_info()); }
  std::uint32_t output_elements() const { return elements(output_info()); }
  // n samples: in (n, input_size) bytes -> out (n, output_size) bytes, each tensor in its own
  // type (int8, or float32 for a model starting with QUANTIZE or ending with DEQUANTIZE).
  // Thread-safe: concurrent calls on one model run one after another (they share its arena).
  void invoke(const std::int8_t* in, std::int8_t* out, std::size_t n);
  // Float in, float out: quantize an int8 input, invoke, dequantize an int8 output (a float32
  // input or output is passed as it is).
  void predict(const float* in, float* out, std::size_t n);
  std::vector<std::uint8_t> blob() const;
  std::size_t blob_bytes() const { return bytes_; }

 private:
  static std::uint32_t elements(const tlm_tensor_info& t) {
    return t.type == TLM_TYPE_FLOAT32 ? t.bytes / 4 : t.bytes;
  }
  bool unpack_sparse();
  std::vector<std::uint32_t> storage_;  // 4-byte aligned copy of the blob
  std::size_t bytes_;
  std::vector<std::uint32_t> host_;     // the blob with its sparse weights unpacked (or empty)
  std::size_t host_bytes_ = 0;
  tlm_model model_;
  std::vector<std::uint32_t> arena_;
  std::size_t scratch_bytes_;          // host fast-path scratch per worker (tlm_host_scratch_bytes)
  std::vector<std::uint8_t> scratch_;  // one slice per worker or batch part
  std::vector<std::uint8_t> packed_;   // tlm_host_pack's weights (+ 32 bytes to align them)
  const void* packed_at_ = nullptr;
  std::size_t staging_words_ = 0;       // tlm_host.staging per part (tlm_host_staging_bytes)
  std::vector<std::uint32_t> staging_;  // one slice per batch part
  std::unique_ptr<std::mutex> lock_;    // held by invoke
  std::unique_ptr<HostPool> pool_;      // single samples' operator parts (made on first use)
  long pool_fork_ = 0;                  // fork generation that made pool_ (a forked child remakes it)
  std::unique_ptr<SplitChooser> chooser_;  // whether single samples split their operators
};

}  // namespace tinylearn

#endif  // TINYLEARN_CONVERT_CONVERT_H
