// Training kernels beyond dense/relu/mse (ops.h): pooling, batch normalization, activations,
// losses, metrics and dropout, as forward/backward pairs on raw float pointers (row-major).
//
// Conventions (the same as ops.h):
//   * activations are NHWC; every pointer carries a shape comment;
//   * forward functions OVERWRITE their outputs; backward functions ACCUMULATE (+=) into their
//     gradient outputs, so the caller zeroes gradient buffers once per step;
//   * innermost loops run over the contiguous last (channel) dimension;
//   * semantics are Keras 3's (TensorFlow backend), so weights and results carry over.
// Shape-dependent preconditions are checked by pool2d_geometry and check_sparse_labels (which
// throw std::invalid_argument); the kernels themselves trust their arguments, except that the
// sparse losses validate their labels (an out-of-range label would read out of bounds).
#ifndef TINYLEARN_TRAIN_NN_OPS_H
#define TINYLEARN_TRAIN_NN_OPS_H

#include <cstddef>
#include <cstdint>

#include "tinylearn/train/conv_ops.h"  // Padding, parse_padding (shared with the convolutions)
#include "tinylearn/train/random.h"

namespace tinylearn::ops {

// ---------------------------------------------------------------------------------------------
// Pooling (NHWC). Padding and parse_padding("valid" / "same") come from conv_ops.h.

// Geometry of a 2-D pooling window as TensorFlow computes it:
//   valid: OH = floor((H - PH) / SH) + 1 (needs H >= PH), pad_top = 0;
//   same:  OH = ceil(H / SH), pad_total = max((OH - 1) * SH + PH - H, 0), pad_top = pad_total / 2
//          (the extra padded row, if any, goes at the bottom); likewise for the width.
// Padded cells are never read: max pooling takes the max over the real cells of a window, and
// average pooling divides by the number of real cells (TensorFlow's behaviour).
struct Pool2dGeometry {
  std::size_t N, H, W, C;     // input (N, H, W, C)
  std::size_t PH, PW;         // pool window
  std::size_t SH, SW;         // strides
  std::size_t OH, OW;         // output (N, OH, OW, C)
  std::size_t pad_top, pad_left;
  std::size_t in_size() const { return N * H * W * C; }
  std::size_t out_size() const { return N * OH * OW * C; }
};

// Throws std::invalid_argument (naming the offending values) when a dimension, pool size or
// stride is zero, when "valid" pooling has a window larger than the input, or when H * W does
// not fit the int32 argmax indices.
Pool2dGeometry pool2d_geometry(std::size_t N, std::size_t H, std::size_t W, std::size_t C,
                               std::size_t PH, std::size_t PW, std::size_t SH, std::size_t SW,
                               Padding padding);

//   out:    (N, OH, OW, C)
//   argmax: (N, OH, OW, C) or null; receives, per output value, the spatial index ih * W + iw
//           of the selected input cell within its image and channel (the first maximum in
//           row-major window scan order on ties, as TensorFlow's MaxPoolGrad)
//   inp:    (N, H, W, C)
void max_pool2d_forward(float* out, std::int32_t* argmax, const float* inp, const Pool2dGeometry& g);

// Routes each output gradient to the input cell that was the window's maximum.
//   dinp:   (N, H, W, C)
//   dout:   (N, OH, OW, C)
//   inp:    (N, H, W, C); only read when argmax is null (the argmax is then recomputed)
//   argmax: (N, OH, OW, C) from max_pool2d_forward, or null
void max_pool2d_backward(float* dinp, const float* dout, const float* inp,
                         const std::int32_t* argmax, const Pool2dGeometry& g);

//   out: (N, OH, OW, C) = mean of the real (unpadded) cells of each window
//   inp: (N, H, W, C)
void avg_pool2d_forward(float* out, const float* inp, const Pool2dGeometry& g);
//   dinp: (N, H, W, C)
//   dout: (N, OH, OW, C)
void avg_pool2d_backward(float* dinp, const float* dout, const Pool2dGeometry& g);

//   out: (N, C) = mean over H, W
//   inp: (N, H, W, C)
void global_avg_pool2d_forward(float* out, const float* inp, std::size_t N, std::size_t H,
                               std::size_t W, std::size_t C);
//   dinp: (N, H, W, C)
//   dout: (N, C)
void global_avg_pool2d_backward(float* dinp, const float* dout, std::size_t N, std::size_t H,
                                std::size_t W, std::size_t C);

// ---------------------------------------------------------------------------------------------
// Batch normalization over the rows of an (M, C) view: M = N * H * W for NHWC activations,
// M = N for (N, C). gamma null means scale=False (gamma = 1), beta null means center=False.
//
// Keras 3's BatchNormalization: the training forward normalizes with the batch mean and the
// BIASED batch variance (ops.moments), y = gamma * (x - mean) / sqrt(var + epsilon) + beta, and
// updates the moving statistics with that same biased variance:
//   moving = moving * momentum + batch * (1 - momentum).
// (TF-Keras 2's fused kernel used the unbiased variance for the moving average; Keras 3 does not.)

//   out:         (M, C); may alias inp (but backward then needs a copy of the input)
//   mean:        (C) output, the batch mean (saved for backward)
//   inv_std:     (C) output, 1 / sqrt(batch_var + epsilon) (saved for backward)
//   moving_mean: (C) updated in place, or null to skip the update
//   moving_var:  (C) updated in place, or null to skip the update
//   inp:         (M, C)
//   gamma, beta: (C) or null
void batch_norm_forward_train(float* out, float* mean, float* inv_std, float* moving_mean,
                              float* moving_var, const float* inp, const float* gamma,
                              const float* beta, std::size_t M, std::size_t C,
                              float momentum = 0.99f, float epsilon = 1e-3f);

// Inference: y = gamma * (x - moving_mean) / sqrt(moving_var + epsilon) + beta.
//   out: (M, C), may alias inp;  inp: (M, C);  gamma, beta: (C) or null;  moving_*: (C)
void batch_norm_forward_inference(float* out, const float* inp, const float* gamma,
                                  const float* beta, const float* moving_mean,
                                  const float* moving_var, std::size_t M, std::size_t C,
                                  float epsilon = 1e-3f);

// Backward of batch_norm_forward_train (the batch statistics depend on the input).
//   dinp:    (M, C) or null
//   dgamma:  (C) or null
//   dbeta:   (C) or null
//   dout:    (M, C)
//   inp:     (M, C), the forward input
//   mean, inv_std: (C) saved by batch_norm_forward_train
//   gamma:   (C) or null (= 1)
void batch_norm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                         const float* inp, const float* mean, const float* inv_std,
                         const float* gamma, std::size_t M, std::size_t C);

// Backward of batch_norm_forward_inference (a frozen layer: the statistics are constants).
//   dinp: (M, C) or null;  dgamma, dbeta: (C) or null;  dout, inp: (M, C);  gamma: (C) or null
void batch_norm_backward_inference(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                   const float* inp, const float* gamma,
                                   const float* moving_mean, const float* moving_var,
                                   std::size_t M, std::size_t C, float epsilon = 1e-3f);

// ---------------------------------------------------------------------------------------------
// Activations, elementwise over n values (softmax: over the last axis of (B, K)). The forward
// may run in place (out == inp); the backward functions take the forward OUTPUT.

// out = min(max(inp, 0), 6)
void relu6_forward(float* out, const float* inp, std::size_t n);
// dinp += dout * (0 < out < 6)   (TensorFlow's Relu6Grad: zero at both kinks)
void relu6_backward(float* dinp, const float* dout, const float* out, std::size_t n);

// out = 1 / (1 + exp(-inp)), evaluated without overflow for large |inp|
void sigmoid_forward(float* out, const float* inp, std::size_t n);
// dinp += dout * out * (1 - out)
void sigmoid_backward(float* dinp, const float* dout, const float* out, std::size_t n);

void tanh_forward(float* out, const float* inp, std::size_t n);
// dinp += dout * (1 - out^2)
void tanh_backward(float* dinp, const float* dout, const float* out, std::size_t n);

//   out: (B, K) = exp(inp - max) / sum(exp(inp - max)) per row;  inp: (B, K)
void softmax_forward(float* out, const float* inp, std::size_t B, std::size_t K);
//   dinp += out * (dout - sum_k(dout * out)) per row;  dinp, dout, out: (B, K)
void softmax_backward(float* dinp, const float* dout, const float* out, std::size_t B,
                      std::size_t K);

// ---------------------------------------------------------------------------------------------
// Losses. pred, target: (B, K), one row per sample (for outputs of higher rank, B is the product
// of the leading dimensions, as Keras's "sum_over_batch_size" reduction divides by it).
// sample_weight: (B) or null (all 1); class_weight is applied by passing w_i = class_weight[y_i].
// Each forward returns Keras's reduction: sum_i(w_i * l_i) / B, where l_i is the per-sample loss
// (Keras divides by B, not by sum(w)). Each backward ACCUMULATES dL/dpred into dpred (B, K).
// Probability inputs are clipped to [eps, 1 - eps], eps = 1e-7 (Keras's backend.epsilon());
// the clip's gradient is zero outside that interval (tf.clip_by_value).

// l_i = mean_k bce_ik;
//   probabilities: bce = -(y log(c) + (1 - y) log(1 - c)), c = clip(p)  (Keras 3: no extra +eps)
//   from_logits:   bce = max(z, 0) - z y + log(1 + exp(-|z|))
float binary_crossentropy_forward(const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K,
                                  bool from_logits);
void binary_crossentropy_backward(float* dpred, const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K,
                                  bool from_logits);

//   probabilities: q = p / sum_k(p), l_i = -sum_k y log(clip(q))
//   from_logits:   l_i = -sum_k y log_softmax(z)_k
float categorical_crossentropy_forward(const float* pred, const float* target,
                                       const float* sample_weight, std::size_t B,
                                       std::size_t K, bool from_logits);
void categorical_crossentropy_backward(float* dpred, const float* pred, const float* target,
                                       const float* sample_weight, std::size_t B,
                                       std::size_t K, bool from_logits);

// Integer labels are int32 (Keras also accepts float labels; convert them first).
//   labels: (B), each in [0, K); validated with check_sparse_labels (throws std::invalid_argument)
//   probabilities: exactly the TensorFlow backend: c = clip(p), l_i = -log_softmax(log c)[y_i]
//                  = log(sum_k c_k) - log(c_{y_i})  (= -log p_y for normalized, unclipped p)
//   from_logits:   l_i = -log_softmax(z)[y_i]
float sparse_categorical_crossentropy_forward(const float* pred, const std::int32_t* labels,
                                              const float* sample_weight, std::size_t B,
                                              std::size_t K, bool from_logits);
void sparse_categorical_crossentropy_backward(float* dpred, const float* pred,
                                              const std::int32_t* labels,
                                              const float* sample_weight, std::size_t B,
                                              std::size_t K, bool from_logits);

// Throws std::invalid_argument naming the first label outside [0, K), its position and the
// valid range.
void check_sparse_labels(const std::int32_t* labels, std::size_t B, std::size_t K);

// Complement of ops.h's mae_forward(pred, target, n) = mean |pred - target|:
// dpred += sign(pred - target) / n, with the subgradient 0 where pred == target.
void mae_backward(float* dpred, const float* pred, const float* target, std::size_t n);

// Sample-weighted forms of MSE and MAE: l_i = mean_k (pred - target)^2 (resp. |pred - target|).
// With sample_weight null they equal mse_forward / mae_forward over n = B * K.
float mean_squared_error_forward(const float* pred, const float* target,
                                 const float* sample_weight, std::size_t B, std::size_t K);
void mean_squared_error_backward(float* dpred, const float* pred, const float* target,
                                 const float* sample_weight, std::size_t B, std::size_t K);
float mean_absolute_error_forward(const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K);
void mean_absolute_error_backward(float* dpred, const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K);

// Huber loss (Keras's huber), e = pred - target:
//   l_i = mean_k h(e_ik), h(e) = e^2 / 2 where |e| <= delta, else delta * (|e| - delta / 2);
//   dh/de = e where |e| <= delta, else delta * sign(e).  delta must be > 0.
float huber_forward(const float* pred, const float* target, const float* sample_weight,
                    std::size_t B, std::size_t K, float delta = 1.0f);
void huber_backward(float* dpred, const float* pred, const float* target,
                    const float* sample_weight, std::size_t B, std::size_t K, float delta = 1.0f);

// Knowledge distillation's soft-target term (Hinton et al. 2015, the Keras example), without its
// T^2 factor: p = softmax(t / T), q = softmax(s / T) per row, where t, s are the teacher's and the
// student's logits, or log(clip(outputs)) (clip to [eps, 1 - eps]) for outputs that are
// probabilities (*_from_logits false); l_i = sum_k P_k log(P_k / Q_k), P = clip(p), Q = clip(q)
// to [eps, 1] (Keras's KLDivergence). The forward returns sum_i w_i l_i / B; the backward
// ACCUMULATES scale * dL/dstudent into dstudent (the gradient of a clip is zero outside it).
float kl_distillation_forward(const float* student, const float* teacher,
                              const float* sample_weight, std::size_t B, std::size_t K,
                              float temperature, bool student_from_logits,
                              bool teacher_from_logits);
void kl_distillation_backward(float* dstudent, const float* student, const float* teacher,
                              const float* sample_weight, std::size_t B, std::size_t K,
                              float temperature, bool student_from_logits,
                              bool teacher_from_logits, float scale);

// ---------------------------------------------------------------------------------------------
// Metrics: the fraction of correct samples in the batch, in [0, 1] (0 for an empty batch).
// argmax takes the first maximum on ties (as ops.argmax).

//   pred: (B, K);  labels: (B); a label outside [0, K) counts as wrong
float sparse_categorical_accuracy(const float* pred, const std::int32_t* labels, std::size_t B,
                                  std::size_t K);
//   pred, target: (B, K); correct when argmax(pred) == argmax(target)
float categorical_accuracy(const float* pred, const float* target, std::size_t B, std::size_t K);
//   pred, target: (n) probabilities and 0/1 labels; correct when
//   (pred > threshold) == (target > 0.5). For from_logits models pass probabilities (or logits
//   with threshold 0).
float binary_accuracy(const float* pred, const float* target, std::size_t n,
                      float threshold = 0.5f);

// ---------------------------------------------------------------------------------------------
// Inverted dropout (training mode): each value is kept with probability 1 - rate (drawn as
// rng.uniform() >= rate, in index order) and kept values are scaled by 1 / (1 - rate).
//   out:  (n), may alias inp
//   mask: (n) output, the per-value factor: 0 or 1 / (1 - rate)
//   inp:  (n)
// rate must be in [0, 1) (std::invalid_argument otherwise); rate 0 is the identity, writes a
// mask of ones and draws nothing from rng (as Keras skips dropout for rate 0).
void dropout_forward(float* out, float* mask, const float* inp, std::size_t n, float rate,
                     Random& rng);
// dinp += dout * mask
void dropout_backward(float* dinp, const float* dout, const float* mask, std::size_t n);

}  // namespace tinylearn::ops

#endif  // TINYLEARN_TRAIN_NN_OPS_H
