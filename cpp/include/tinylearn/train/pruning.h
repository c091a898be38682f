// Magnitude pruning in the training core (tfmot.sparsity.keras's prune_low_magnitude): a mask
// per pruned kernel, updated on the schedule's steps and applied after every optimizer step, so
// that pruned weights stay exactly zero through training, saving, loading and resuming.
//
// Usage (what tl.optimize.prune_low_magnitude sets up):
//
//   auto p = std::make_shared<Pruning>();
//   p->schedule = {PruningSchedule::Kind::PolynomialDecay, 0.0f, 0.8f, 0, 1000, 3.0f, 100};
//   dense->pruning = p;      // before Model::build; fit then prunes it
//
// At the start of each training step s of a pruned layer: if the schedule prunes at s, the mask
// is recomputed from the kernel's magnitudes for sparsity(s) and the kernel is masked; after each
// optimizer step, the kernel is masked again. The layer's step counter is saved with its state.
#ifndef TINYLEARN_TRAIN_PRUNING_H
#define TINYLEARN_TRAIN_PRUNING_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tinylearn {

// tfmot's ConstantSparsity and PolynomialDecay, with their formulas:
//   prunes at step s when begin_step <= s, (s <= end_step or end_step == -1) and
//   (s - begin_step) % frequency == 0;
//   ConstantSparsity: final_sparsity (the target) at every such step;
//   PolynomialDecay: p = clamp((s - begin) / (end - begin), 0, 1),
//                    final + (initial - final) * (1 - p)^power.
struct PruningSchedule {
  enum class Kind { Constant, PolynomialDecay };
  Kind kind = Kind::Constant;
  float initial_sparsity = 0.0f;  // PolynomialDecay only
  float final_sparsity = 0.5f;    // Constant: target_sparsity
  std::int64_t begin_step = 0;
  std::int64_t end_step = -1;     // -1: no end (Constant only)
  float power = 3.0f;
  std::int64_t frequency = 100;
  // Throws std::invalid_argument for sparsities outside [0, 1), steps out of order, frequency < 1.
  void validate() const;
  bool prunes_at(std::int64_t step) const;
  float sparsity(std::int64_t step) const;
};

// One pruned kernel (Dense, Conv2D, DepthwiseConv2D). The kernel is seen as a matrix of
// (inputs, outputs): Dense (in, units), Conv2D (KH * KW * C, OC), DepthwiseConv2D (KH * KW, C * M).
struct Pruning {
  PruningSchedule schedule;
  // Blocks of (rows, cols) of that matrix pruned together, ranked by their mean magnitude
  // (tfmot's block_size with block_pooling_type AVG); partial blocks at the edges count too.
  std::size_t block_rows = 1, block_cols = 1;
  // N:M sparsity: of every m_of_n[1] consecutive weights along the input axis (per output), at
  // most m_of_n[0] stay (the largest); {0, 0}: none. Applied at every mask update, on top of
  // the magnitude mask (2:4 alone: give sparsity 0).
  int keep_m = 0, of_n = 0;
  // Ranked together with every other global pruned layer of the model (one threshold for all,
  // the first global layer's schedule), instead of each layer alone.
  bool global = false;

  // State, saved with the weights: the mask (kernel-sized, 0 or 1), the threshold of the last
  // update and the training steps taken (floats: exact up to 2^24 steps).
  std::vector<float> mask;
  float threshold = 0.0f;
  float step = 0.0f;
};

// Computes `mask` (n values, 1 keep / 0 prune) so that the kernel of `rows` x `cols` (row-major:
// element r * cols + c) loses the fraction `sparsity` of its weights (rounded down, counted in
// blocks) with the smallest block magnitudes; ties resolved by index order. Returns the threshold
// (the largest pruned block magnitude, 0 if none).
float magnitude_mask(const float* kernel, std::size_t rows, std::size_t cols, float sparsity,
                     std::size_t block_rows, std::size_t block_cols, float* mask);
// Keeps at most `keep` of every `of` consecutive rows of each column (the largest magnitudes
// among those the mask keeps), zeroing the rest of the mask.
void n_of_m_mask(const float* kernel, std::size_t rows, std::size_t cols, int keep, int of, float* mask);

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_PRUNING_H
