// Magnitude pruning (tinylearn/train/pruning.h).
#include "tinylearn/train/pruning.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace tinylearn {

void PruningSchedule::validate() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument("pruning schedule: " + what); };
  if (!(final_sparsity >= 0.0f && final_sparsity < 1.0f))
    bad("the target sparsity must be in [0, 1), got " + std::to_string(final_sparsity));
  if (!(initial_sparsity >= 0.0f && initial_sparsity < 1.0f))
    bad("initial_sparsity must be in [0, 1), got " + std::to_string(initial_sparsity));
  if (begin_step < 0) bad("begin_step must be >= 0, got " + std::to_string(begin_step));
  if (end_step != -1 && end_step < begin_step)
    bad("end_step must be -1 or >= begin_step, got " + std::to_string(end_step));
  if (kind == Kind::PolynomialDecay && end_step <= begin_step)
    bad("PolynomialDecay needs end_step > begin_step, got begin " + std::to_string(begin_step) +
        ", end " + std::to_string(end_step));
  if (frequency < 1) bad("frequency must be >= 1, got " + std::to_string(frequency));
  if (!(power > 0.0f)) bad("power must be > 0, got " + std::to_string(power));
}

bool PruningSchedule::prunes_at(std::int64_t step) const {
  if (step < begin_step) return false;
  if (end_step != -1 && step > end_step) return false;
  return (step - begin_step) % frequency == 0;
}

float PruningSchedule::sparsity(std::int64_t step) const {
  if (kind == Kind::Constant) return final_sparsity;
  const double p = std::clamp(double(step - begin_step) / double(end_step - begin_step), 0.0, 1.0);
  return float(final_sparsity + (initial_sparsity - final_sparsity) * std::pow(1.0 - p, double(power)));
}

float magnitude_mask(const float* kernel, std::size_t rows, std::size_t cols, float sparsity,
                     std::size_t block_rows, std::size_t block_cols, float* mask) {
  if (block_rows == 0 || block_cols == 0) throw std::invalid_argument("pruning: block sizes must be >= 1");
  const std::size_t br = (rows + block_rows - 1) / block_rows, bc = (cols + block_cols - 1) / block_cols;
  std::vector<float> mag(br * bc, 0.0f);  // mean |w| of each block (partial blocks: their own count)
  for (std::size_t i = 0; i < br; ++i)
    for (std::size_t j = 0; j < bc; ++j) {
      double sum = 0.0;
      std::size_t count = 0;
      for (std::size_t r = i * block_rows; r < std::min(rows, (i + 1) * block_rows); ++r)
        for (std::size_t c = j * block_cols; c < std::min(cols, (j + 1) * block_cols); ++c, ++count)
          sum += std::fabs(double(kernel[r * cols + c]));
      mag[i * bc + j] = float(sum / double(count));
    }
  const std::size_t prune = std::size_t(std::floor(double(sparsity) * double(mag.size())));
  std::vector<std::size_t> order(mag.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return mag[a] < mag[b]; });
  std::vector<unsigned char> keep(mag.size(), 1);
  for (std::size_t k = 0; k < prune; ++k) keep[order[k]] = 0;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c)
      mask[r * cols + c] = keep[(r / block_rows) * bc + c / block_cols] ? 1.0f : 0.0f;
  return prune ? mag[order[prune - 1]] : 0.0f;
}

void n_of_m_mask(const float* kernel, std::size_t rows, std::size_t cols, int keep, int of, float* mask) {
  if (keep < 1 || of < 2 || keep >= of)
    throw std::invalid_argument("pruning: N:M sparsity keeps 1 <= N < M of every M weights, got " +
                                std::to_string(keep) + ":" + std::to_string(of));
  std::vector<std::size_t> group;
  for (std::size_t c = 0; c < cols; ++c)
    for (std::size_t start = 0; start < rows; start += std::size_t(of)) {
      group.clear();
      for (std::size_t r = start; r < std::min(rows, start + std::size_t(of)); ++r)
        if (mask[r * cols + c] != 0.0f) group.push_back(r);
      if (group.size() <= std::size_t(keep)) continue;
      std::stable_sort(group.begin(), group.end(), [&](std::size_t a, std::size_t b) {
        return std::fabs(kernel[a * cols + c]) > std::fabs(kernel[b * cols + c]);
      });
      for (std::size_t k = std::size_t(keep); k < group.size(); ++k) mask[group[k] * cols + c] = 0.0f;
    }
}

}  // namespace tinylearn
