#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"

#include "../train/parallel.h"

namespace tinylearn {

Int8Model::Int8Model(const std::uint8_t* blob, std::size_t bytes) : bytes_(bytes) {
  if (!blob || bytes == 0) throw std::invalid_argument("model blob is empty");
  // Version first, so that a newer file says so rather than "checksum mismatch".
  if (bytes >= 6 && std::memcmp(blob, "TLMB", 4) == 0) {
    std::uint16_t version;
    std::memcpy(&version, blob + 4, 2);
    if (version > TLM_FORMAT_VERSION)
      throw std::invalid_argument("model format version " + std::to_string(version) +
                                  " is newer than this tinylearn reads (version " +
                                  std::to_string(TLM_FORMAT_VERSION) + "): upgrade tinylearn");
  }
  storage_.assign((bytes + 3) / 4, 0);
  std::memcpy(storage_.data(), blob, bytes);
  const tlm_status s = tlm_model_init(&model_, storage_.data(), bytes);
  if (s != TLM_OK)
    throw std::invalid_argument(std::string("invalid tinylearn model: ") + tlm_status_str(s) +
                                " (status " + std::to_string(int(s)) + ")");
  arena_.assign((tlm_arena_bytes(&model_) + 3) / 4 + 1, 0);
}

tlm_tensor_info Int8Model::input_info() const {
  tlm_tensor_info info;
  tlm_tensor(&model_, model_.input_tensor, &info);
  return info;
}

tlm_tensor_info Int8Model::output_info() const {
  tlm_tensor_info info;
  tlm_tensor(&model_, model_.output_tensor, &info);
  return info;
}

void Int8Model::invoke(const std::int8_t* in, std::int8_t* out, std::size_t n) {
  const std::uint32_t in_size = input_size(), out_size = output_size();
  const std::size_t words = (tlm_arena_bytes(&model_) + 3) / 4 + 1;
  // Samples split over the cores, one arena per part (the core itself is single-threaded and
  // keeps no state outside the arena). Small batches of small models stay on one core.
  const std::size_t parts = par::parts_for(n, double(n) * double(bytes_ + words * 4), 262144.0);
  if (arena_.size() < parts * words) arena_.assign(parts * words, 0);
  tlm_status status = TLM_OK;
  par::for_parts(n, parts, [&](std::size_t k, std::size_t b, std::size_t e) {
    void* arena = arena_.data() + k * words;
    std::int8_t* a_in = tlm_input(&model_, arena);
    const std::int8_t* a_out = tlm_output(&model_, arena);
    for (std::size_t i = b; i < e; ++i) {
      std::memcpy(a_in, in + i * in_size, in_size);
      const tlm_status s = tlm_invoke(&model_, arena, words * 4);
      if (s != TLM_OK) {
#pragma omp critical
        status = s;
        return;
      }
      std::memcpy(out + i * out_size, a_out, out_size);
    }
  });
  if (status != TLM_OK) throw std::runtime_error(std::string("invoke failed: ") + tlm_status_str(status));
}

void Int8Model::predict(const float* in, float* out, std::size_t n) {
  const tlm_tensor_info ii = input_info(), oi = output_info();
  const QuantParams iq{ii.scale, ii.zero_point};
  std::vector<std::int8_t> qin(n * ii.bytes), qout(n * oi.bytes);
  for (std::size_t i = 0; i < qin.size(); ++i) {
    if (!std::isfinite(in[i])) throw std::invalid_argument("predict: x contains NaN or infinity");
    qin[i] = quantize_value(in[i], iq);
  }
  invoke(qin.data(), qout.data(), n);
  // TFLite's Dequantize: the product in double, then rounded to float.
  for (std::size_t i = 0; i < qout.size(); ++i)
    out[i] = float(double(oi.scale) * double(std::int32_t(qout[i]) - oi.zero_point));
}

std::vector<std::uint8_t> Int8Model::blob() const {
  const auto* p = reinterpret_cast<const std::uint8_t*>(storage_.data());
  return std::vector<std::uint8_t>(p, p + bytes_);
}

}  // namespace tinylearn
