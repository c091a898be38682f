// Convolution forward/backward pairs of the training core on raw float pointers, NHWC.
// Semantics are Keras/TensorFlow's, so weights and results move between tinylearn and Keras:
//   - activations (N, H, W, C), row-major;
//   - Conv2D kernel (KH, KW, C, OC) (Keras HWIO), bias (OC);
//   - DepthwiseConv2D kernel (KH, KW, C, M) (Keras layout), output channel c * M + m, bias (C * M);
//   - strides (SH, SW), padding "valid" or "same" exactly as TensorFlow computes it, dilation 1.
// Backward functions accumulate (+=) into their gradient outputs; a null gradient output is
// skipped (dinp null when the input needs no gradient, dkernel null for a frozen kernel, dbias
// null without bias).
#ifndef TINYLEARN_TRAIN_CONV_OPS_H
#define TINYLEARN_TRAIN_CONV_OPS_H

#include <cstddef>
#include <string>

namespace tinylearn::ops {

enum class Padding { Valid, Same };

// "valid" / "same" (case-insensitive, as Keras); anything else throws std::invalid_argument.
Padding parse_padding(const std::string& s);
const char* padding_name(Padding p);  // "valid" / "same"

// One spatial dimension, as TensorFlow computes it (dilation 1):
//   valid: out = floor((in - k) / stride) + 1, no padding (throws when k > in);
//   same:  out = ceil(in / stride), total = max((out - 1) * stride + k - in, 0),
//          pad_before = total / 2, pad_after = total - pad_before (the extra one goes after).
// Throws std::invalid_argument when in, k or stride is 0.
struct ConvDim {
  std::size_t out, pad_before, pad_after;
};
ConvDim conv_dim(std::size_t in, std::size_t k, std::size_t stride, Padding padding);

// Geometry of a 2-D convolution: input (N, H, W, C) -> output (N, OH, OW, OC).
// For a depthwise convolution M is the depth multiplier and OC == C * M; for a regular
// convolution M == 0 (the kernels check which kind of geometry they are given).
struct Conv2DGeometry {
  std::size_t N, H, W, C;   // input
  std::size_t KH, KW;       // kernel window
  std::size_t OC;           // output channels
  std::size_t M;            // depthwise: depth multiplier; conv2d: 0
  std::size_t SH, SW;       // strides
  std::size_t OH, OW;       // output spatial size
  std::size_t pad_top, pad_left, pad_bottom, pad_right;  // implicit zero padding
};

// Both throw std::invalid_argument (with the layer name and the shapes) when a size or stride is
// 0, when the kernel is larger than the input with "valid" padding, or when a tensor would not
// be addressable (element counts overflow, GEMM dimensions beyond int).
Conv2DGeometry conv2d_geometry(std::size_t N, std::size_t H, std::size_t W, std::size_t C,
                               std::size_t KH, std::size_t KW, std::size_t OC, std::size_t SH,
                               std::size_t SW, Padding padding);
Conv2DGeometry depthwise_conv2d_geometry(std::size_t N, std::size_t H, std::size_t W,
                                         std::size_t C, std::size_t KH, std::size_t KW,
                                         std::size_t M, std::size_t SH, std::size_t SW,
                                         Padding padding);

// ---- Conv2D: im2col + GEMM (OpenBLAS cblas_sgemm) ----
//
// The im2col matrix has one row per output pixel (N * OH * OW rows) and KH * KW * C columns in
// the kernel's (kh, kw, c) order, so the kernel is its (KH * KW * C, OC) right-hand side. The
// caller provides it as scratch: `workspace` of `workspace_floats` floats. The batch is processed
// in chunks of floor(workspace_floats / (KH * KW * C)) output pixels (chunks may cut across
// images), so memory stays bounded whatever N is; any size >= KH * KW * C works, larger is
// faster. conv2d_workspace_floats(g) is the recommended size: the whole batch's im2col matrix up
// to 2^21 floats (8 MiB), at least 256 pixels; it never grows when N shrinks, so a buffer sized
// for the training batch also serves the smaller last batch. It is 0 for a 1x1 kernel with
// stride 1, which is a plain GEMM on the input (workspace may then be null). The workspace
// holds garbage between calls (backward does not reuse forward's im2col).
// Both functions throw std::invalid_argument if g is a depthwise geometry, or if the workspace
// is needed (not 1x1 stride 1; in backward, dinp or dkernel requested) and smaller than one row.
std::size_t conv2d_workspace_floats(const Conv2DGeometry& g);

// out[n, oh, ow, o] = bias[o]
//     + sum_{kh, kw, c} in_padded[n, oh*SH + kh, ow*SW + kw, c] * kernel[kh, kw, c, o]
// (in_padded: the input with pad_top/pad_left/pad_bottom/pad_right rows and columns of zeros)
//   out:       (N, OH, OW, OC)   overwritten
//   inp:       (N, H, W, C)
//   kernel:    (KH, KW, C, OC)
//   bias:      (OC) or null
//   workspace: (workspace_floats) scratch, see above
void conv2d_forward(float* out, const float* inp, const float* kernel, const float* bias,
                    const Conv2DGeometry& g, float* workspace, std::size_t workspace_floats);

// dkernel += im2col(inp)^T @ dout; dbias += column sums of dout;
// dinp += col2im(dout @ kernel^T).
//   dinp:      (N, H, W, C), or null when the input needs no gradient
//   dkernel:   (KH, KW, C, OC) or null
//   dbias:     (OC) or null
//   dout:      (N, OH, OW, OC)
//   inp:       (N, H, W, C)
//   kernel:    (KH, KW, C, OC)
//   workspace: (workspace_floats) scratch, as for conv2d_forward (the same buffer serves both)
void conv2d_backward(float* dinp, float* dkernel, float* dbias, const float* dout,
                     const float* inp, const float* kernel, const Conv2DGeometry& g,
                     float* workspace, std::size_t workspace_floats);

// ---- DepthwiseConv2D: direct loops, inner loop over the contiguous channels ----
//
// out[n, oh, ow, c*M + m] = bias[c*M + m]
//     + sum_{kh, kw} in_padded[n, oh*SH + kh, ow*SW + kw, c] * kernel[kh, kw, c, m]
//   out:    (N, OH, OW, C * M)   overwritten
//   inp:    (N, H, W, C)
//   kernel: (KH, KW, C, M)
//   bias:   (C * M) or null
// Throws std::invalid_argument if g is not a depthwise geometry (M == 0 or OC != C * M).
void depthwise_conv2d_forward(float* out, const float* inp, const float* kernel,
                              const float* bias, const Conv2DGeometry& g);

//   dinp:    (N, H, W, C), or null when the input needs no gradient
//   dkernel: (KH, KW, C, M) or null
//   dbias:   (C * M) or null
//   dout:    (N, OH, OW, C * M)
//   inp:     (N, H, W, C)
//   kernel:  (KH, KW, C, M)
void depthwise_conv2d_backward(float* dinp, float* dkernel, float* dbias, const float* dout,
                               const float* inp, const float* kernel, const Conv2DGeometry& g);

}  // namespace tinylearn::ops

#endif  // TINYLEARN_TRAIN_CONV_OPS_H
