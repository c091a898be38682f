#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"
#include "../micro/sparse_s8.h"

#include <pthread.h>

#include "../train/parallel.h"
#include "host_pool.h"

namespace tinylearn {

Int8Model::Int8Model(const std::uint8_t* blob, std::size_t bytes, bool host_sparse) : bytes_(bytes) {
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
  lock_ = std::make_unique<std::mutex>();
  chooser_ = std::make_unique<SplitChooser>();
  storage_.assign((bytes + 3) / 4, 0);
  std::memcpy(storage_.data(), blob, bytes);
  tlm_status s = tlm_model_init(&model_, storage_.data(), bytes);
  if (s != TLM_OK)
    throw std::invalid_argument(std::string("invalid tinylearn model: ") + tlm_status_str(s) +
                                " (status " + std::to_string(int(s)) + ")");
  if (!host_sparse && unpack_sparse()) {  // the validated blob, its sparse weights unpacked
    s = tlm_model_init(&model_, host_.data(), host_bytes_);
    if (s != TLM_OK)
      throw std::logic_error(std::string("unpacking the sparse weights gave an invalid model: ") +
                             tlm_status_str(s));
  }
  arena_.assign((tlm_arena_bytes(&model_) + 3) / 4 + 1, 0);
  scratch_bytes_ = (tlm_host_scratch_bytes(&model_) + 63) / 64 * 64;
  staging_words_ = (tlm_host_staging_bytes(&model_) + 3) / 4;
  if (const std::uint32_t packed = tlm_host_packed_bytes(&model_)) {
    packed_.assign(packed + 32, 0);
    void* at = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(packed_.data()) + 31) &
                                       ~std::uintptr_t{31});
    if (tlm_host_pack(&model_, at, packed) == TLM_OK) packed_at_ = at;
  }
}

// A copy of the (validated) blob in host_ whose sparse weight tensors (TLM_TYPE_INT8_SPARSE) are
// dense int8 tensors appended at its end: the host's fast kernels take dense weights only, and
// the sparse and dense kernels compute the same bits (tests/cpp/test_sparse_s8.cpp). False, and
// nothing made, when the blob has no sparse tensor.
bool Int8Model::unpack_sparse() {
  const auto* blob = reinterpret_cast<const std::uint8_t*>(storage_.data());
  std::uint16_t tensors;
  std::memcpy(&tensors, blob + 20, 2);
  std::vector<std::uint8_t> out(blob, blob + bytes_);
  bool any = false;
  for (std::uint32_t t = 0; t < tensors; ++t) {
    const std::size_t at = TLM_HEADER_BYTES + std::size_t(t) * TLM_TENSOR_RECORD_BYTES;
    if (blob[at] != TLM_TYPE_INT8_SPARSE) continue;
    any = true;
    const int rank = blob[at + 1];
    std::int32_t dims[4];
    std::uint32_t offset;
    std::memcpy(dims, blob + at + 4, sizeof dims);
    std::memcpy(&offset, blob + at + 20, 4);
    std::int64_t cols = 1;
    for (int d = 1; d < rank; ++d) cols *= dims[d];
    const tlm_sparse_s8 v = tlm_sparse_s8_view(blob + offset, dims[0], std::int32_t(cols));
    out.resize((out.size() + 3) / 4 * 4, 0);
    const std::size_t dense_at = out.size();
    out.resize(dense_at + std::size_t(dims[0]) * std::size_t(cols), 0);
    std::uint32_t e = 0;
    for (std::int32_t r = 0; r < dims[0]; ++r) {
      std::int64_t pos = -1;
      for (std::uint32_t k = 0; k < v.counts[r]; ++k, ++e) {
        pos += std::int64_t(v.steps[e]) + 1;
        out[dense_at + std::size_t(r) * std::size_t(cols) + std::size_t(pos)] = std::uint8_t(v.values[e]);
      }
    }
    out[at] = TLM_TYPE_INT8;
    const auto dense_offset = std::uint32_t(dense_at);
    std::memcpy(out.data() + at + 20, &dense_offset, 4);
  }
  if (!any) return false;
  out.resize((out.size() + 3) / 4 * 4, 0);
  const auto total = std::uint32_t(out.size());
  std::memcpy(out.data() + 8, &total, 4);
  const std::uint32_t crc = crc32(out.data() + 16, out.size() - 16);
  std::memcpy(out.data() + 12, &crc, 4);
  host_.assign(out.size() / 4, 0);
  std::memcpy(host_.data(), out.data(), out.size());
  host_bytes_ = out.size();
  return true;
}

namespace {
// Forks this process has gone through, counted in each child. (getpid() per invoke cost a system
// call, about 0.2 us here, a few percent of a small model's call.)
std::atomic<long> g_forks{0};
void count_fork() { g_forks.fetch_add(1, std::memory_order_relaxed); }
long fork_generation() {
  static const int registered = pthread_atfork(nullptr, nullptr, count_fork);
  (void)registered;
  return g_forks.load(std::memory_order_relaxed);
}

// In a forked child the pool's threads do not exist: forget the pool (joining them would hang).
void forget_pool_if_forked(std::unique_ptr<HostPool>& pool, long generation) {
  if (pool && generation != fork_generation()) (void)pool.release();
}
}  // namespace

Int8Model::~Int8Model() { forget_pool_if_forked(pool_, pool_fork_); }
Int8Model::Int8Model(Int8Model&&) noexcept = default;
Int8Model& Int8Model::operator=(Int8Model&&) noexcept = default;

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

namespace {
// A batch runs operator by operator over chunks of samples (tlm_invoke_host_samples), so that a
// fully connected operator reads its weights once per chunk, as long as the chunk's arenas stay
// in cache: at most this many bytes of arenas, and at most 8 samples.
constexpr std::size_t kChunkArenaBytes = 65536;
constexpr std::size_t kChunkSamples = 8;
}  // namespace

void Int8Model::invoke(const std::int8_t* in, std::int8_t* out, std::size_t n) {
  std::lock_guard<std::mutex> guard(*lock_);
  const std::uint32_t in_size = input_size(), out_size = output_size();
  const std::size_t words = (tlm_arena_bytes(&model_) + 3) / 4 + 1;
  // Samples split over the cores, one set of arenas per part (the core itself keeps no state
  // outside the arena). A batch too small to split runs its samples one after another, each
  // operator split over the cores instead (tlm_host.parallel), where it is large enough to pay
  // and where the chooser finds that it does (host_pool.h: it times single samples both ways).
  const std::size_t parts = par::threads_for(n, double(n) * double(bytes_ + words * 4), 262144.0);
  const bool may_split = parts == 1 && par::max_threads() > 1;
  const bool split_ops = may_split && chooser_->split();
  const std::size_t workers = parts > 1 ? parts : split_ops ? par::max_threads() : 1;
  std::size_t chunk = n > 1 ? kChunkArenaBytes / (words * 4) : 1;
  chunk = chunk < 1 ? 1 : chunk > kChunkSamples ? kChunkSamples : chunk;
  if (arena_.size() < parts * chunk * words) arena_.assign(parts * chunk * words, 0);
  if (scratch_.size() < workers * scratch_bytes_) scratch_.assign(workers * scratch_bytes_, 0);
  if (staging_.size() < parts * staging_words_) staging_.assign(parts * staging_words_, 0);
  forget_pool_if_forked(pool_, pool_fork_);
  if (split_ops && (!pool_ || pool_->threads() != int(workers))) {
    pool_.reset();  // its threads end before the new pool's start
    pool_ = std::make_unique<HostPool>(int(workers) - 1);
    pool_fork_ = fork_generation();
  }
  std::atomic<int> status{TLM_OK};
  const bool timed = may_split && n == 1;
  const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  // Each part claims chunks of samples as it goes, so a core that another process slows down
  // takes fewer of them (every sample's outputs are the same whichever part computes it). With
  // two fixed halves, DS-CNN's batch of 256 under a busy loop pinned to the second core took a
  // median of 78.6 us per sample, against 65.9 on one core alone; in a spell where this VM's
  // second vCPU ran slow, run against run: 59-60 us per sample with fixed halves, 35-36 with
  // claims (ResNet-8: 122-155 against 94).
  std::atomic<std::size_t> next{0};
  par::for_parts(parts, parts, [&](std::size_t k, std::size_t, std::size_t) {
    std::uint32_t* arenas = arena_.data() + k * chunk * words;
    tlm_host host{};
    host.scratch = scratch_.data() + (parts > 1 ? k * scratch_bytes_ : 0);
    host.scratch_bytes = scratch_bytes_;
    host.workers = parts > 1 ? 1 : std::int32_t(workers);
    host.parallel = split_ops ? HostPool::parallel : nullptr;
    host.ctx = split_ops ? pool_.get() : nullptr;
    host.packed = packed_at_;
    host.staging = staging_.data() + k * staging_words_;
    host.staging_bytes = staging_words_ * 4;
    for (;;) {
      const std::size_t i = next.fetch_add(chunk, std::memory_order_relaxed);
      if (i >= n) return;
      const std::size_t c = n - i < chunk ? n - i : chunk;
      for (std::size_t j = 0; j < c; ++j)
        std::memcpy(tlm_input(&model_, arenas + j * words), in + (i + j) * in_size, in_size);
      const tlm_status s =
          tlm_invoke_host_samples(&model_, arenas, words * 4, std::int32_t(c), &host);
      if (s != TLM_OK) {
        status.store(s, std::memory_order_relaxed);
        next.store(n, std::memory_order_relaxed);  // the other parts stop at their next claim
        return;
      }
      for (std::size_t j = 0; j < c; ++j)
        std::memcpy(out + (i + j) * out_size, tlm_output(&model_, arenas + j * words), out_size);
    }
  });
  if (status.load() != TLM_OK)
    throw std::runtime_error(std::string("invoke failed: ") + tlm_status_str(tlm_status(status.load())));
  if (timed)
    chooser_->record(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

void Int8Model::predict(const float* in, float* out, std::size_t n) {
  const tlm_tensor_info ii = input_info(), oi = output_info();
  const std::size_t in_count = n * input_elements(), out_count = n * output_elements();
  for (std::size_t i = 0; i < in_count; ++i)
    if (!std::isfinite(in[i])) throw std::invalid_argument("predict: x contains NaN or infinity");
  // A float32 input or output (the model starts with QUANTIZE or ends with DEQUANTIZE) is the
  // model's own: passed as it is.
  const bool float_in = ii.type == TLM_TYPE_FLOAT32, float_out = oi.type == TLM_TYPE_FLOAT32;
  std::vector<std::int8_t> qin(float_in ? 0 : in_count), qout(float_out ? 0 : out_count);
  const QuantParams iq{ii.scale, ii.zero_point};
  for (std::size_t i = 0; i < qin.size(); ++i) qin[i] = quantize_value(in[i], iq);
  invoke(float_in ? reinterpret_cast<const std::int8_t*>(in) : qin.data(),
         float_out ? reinterpret_cast<std::int8_t*>(out) : qout.data(), n);
  // TFLite's Dequantize: the product in double, then rounded to float.
  for (std::size_t i = 0; i < qout.size(); ++i)
    out[i] = float(double(oi.scale) * double(std::int32_t(qout[i]) - oi.zero_point));
}

std::vector<std::uint8_t> Int8Model::blob() const {
  const auto* p = reinterpret_cast<const std::uint8_t*>(storage_.data());
  return std::vector<std::uint8_t>(p, p + bytes_);
}

}  // namespace tinylearn
