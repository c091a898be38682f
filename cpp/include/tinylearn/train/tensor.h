// Tensors of the training core: float arrays of any rank, batch first (NHWC for images).
#ifndef TINYLEARN_TRAIN_TENSOR_H
#define TINYLEARN_TRAIN_TENSOR_H

#include <cstddef>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

namespace tinylearn {

using Tensor = xt::xarray<float>;      // (batch, ...): activations of any rank
using Matrix = xt::xtensor<float, 2>;  // (rows, cols)
using Vector = xt::xtensor<float, 1>;
using Shape = std::vector<std::size_t>;  // the shape of one sample (no batch dimension)

inline std::size_t numel(const Shape& s) {
  std::size_t n = 1;
  for (std::size_t d : s) n *= d;
  return n;
}

inline std::string shape_str(const Shape& s, bool with_batch = false) {
  std::string r = with_batch ? "(None" : "(";
  for (std::size_t i = 0; i < s.size(); ++i)
    r += (i || with_batch ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 && !with_batch ? ",)" : ")");
}

// The shape of one sample of a batched tensor.
template <class T>
Shape sample_shape(const T& t) {
  return Shape(t.shape().begin() + 1, t.shape().end());
}

// A batch of `n` samples of shape `s`.
inline std::vector<std::size_t> batch_shape(std::size_t n, const Shape& s) {
  std::vector<std::size_t> r{n};
  r.insert(r.end(), s.begin(), s.end());
  return r;
}

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_TENSOR_H
