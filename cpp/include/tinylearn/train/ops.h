// Forward/backward pairs of the training core on raw float pointers (row-major).
// Backward functions accumulate (+=) into their gradient outputs.
#ifndef TINYLEARN_TRAIN_OPS_H
#define TINYLEARN_TRAIN_OPS_H

#include <cstddef>

namespace tinylearn::ops {

// out = inp @ weight + bias
//   out:    (B, OC)
//   inp:    (B, C)
//   weight: (C, OC)   (Keras kernel layout)
//   bias:   (OC) or null
void dense_forward(float* out, const float* inp, const float* weight, const float* bias,
                   std::size_t B, std::size_t C, std::size_t OC);

//   dinp:    (B, C), or null when the input needs no gradient
//   dweight: (C, OC) or null (a frozen kernel)
//   dbias:   (OC) or null
//   dout:    (B, OC)
//   inp:     (B, C)
//   weight:  (C, OC)
void dense_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                    const float* inp, const float* weight, std::size_t B, std::size_t C,
                    std::size_t OC);

// out = max(inp, 0), elementwise over n values; in place allowed.
void relu_forward(float* out, const float* inp, std::size_t n);
// dinp += dout * (out > 0); out is the forward output.
void relu_backward(float* dinp, const float* dout, const float* out, std::size_t n);

// Mean squared error over n values: returns mean((pred - target)^2).
float mse_forward(const float* pred, const float* target, std::size_t n);
// dpred += 2 (pred - target) / n
void mse_backward(float* dpred, const float* pred, const float* target, std::size_t n);

// Mean absolute error over n values.
float mae_forward(const float* pred, const float* target, std::size_t n);

}  // namespace tinylearn::ops

#endif  // TINYLEARN_TRAIN_OPS_H
