// Pooling kernels (NHWC), declared in tinylearn/train/nn_ops.h.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "tinylearn/train/nn_ops.h"

#include "parallel.h"

namespace tinylearn::ops {

namespace {

// Output size and leading padding of one spatial dimension, TensorFlow's rules.
void pool_dim(std::size_t in, std::size_t p, std::size_t s, Padding padding, const char* name,
              std::size_t& out, std::size_t& pad_before) {
  if (padding == Padding::Valid) {
    if (p > in)
      throw std::invalid_argument(std::string("pool2d: pool ") + name + " " + std::to_string(p) +
                                  " is larger than the input " + name + " " + std::to_string(in) +
                                  " with padding 'valid' (use padding 'same' or a smaller pool)");
    out = (in - p) / s + 1;
    pad_before = 0;
  } else {
    out = (in + s - 1) / s;
    const std::size_t span = (out - 1) * s + p;
    pad_before = (span > in ? span - in : 0) / 2;
  }
}

std::string dims(std::size_t a, std::size_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// The window of output row `o`, clipped to the real cells: [lo, hi).
inline void window(std::size_t o, std::size_t s, std::size_t p, std::size_t pad, std::size_t in,
                   std::size_t& lo, std::size_t& hi) {
  const std::size_t start = o * s;  // in padded coordinates
  lo = start > pad ? start - pad : 0;
  hi = std::min(start + p > pad ? start + p - pad : 0, in);
}

}  // namespace

Pool2dGeometry pool2d_geometry(std::size_t N, std::size_t H, std::size_t W, std::size_t C,
                               std::size_t PH, std::size_t PW, std::size_t SH, std::size_t SW,
                               Padding padding) {
  if (N == 0 || H == 0 || W == 0 || C == 0)
    throw std::invalid_argument("pool2d: input shape (N, H, W, C) must be positive, got (" +
                                std::to_string(N) + ", " + std::to_string(H) + ", " +
                                std::to_string(W) + ", " + std::to_string(C) + ")");
  if (PH == 0 || PW == 0)
    throw std::invalid_argument("pool2d: pool_size must be positive, got " + dims(PH, PW));
  if (SH == 0 || SW == 0)
    throw std::invalid_argument("pool2d: strides must be positive, got " + dims(SH, SW));
  if (H * W > std::size_t(std::numeric_limits<std::int32_t>::max()))
    throw std::invalid_argument("pool2d: H * W = " + std::to_string(H * W) +
                                " does not fit the int32 argmax indices");
  Pool2dGeometry g{};
  g.N = N, g.H = H, g.W = W, g.C = C, g.PH = PH, g.PW = PW, g.SH = SH, g.SW = SW;
  pool_dim(H, PH, SH, padding, "height", g.OH, g.pad_top);
  pool_dim(W, PW, SW, padding, "width", g.OW, g.pad_left);
  return g;
}

void max_pool2d_forward(float* out, std::int32_t* argmax, const float* inp,
                        const Pool2dGeometry& g) {
  const std::size_t C = g.C;
  // Samples split over the cores; each part has its own argmax scratch when none is kept.
  const std::size_t parts = par::parts_for(g.N, double(g.N * g.H * g.W * C));
  std::vector<std::int32_t> scratch(argmax ? 0 : parts * C);
  par::for_parts(g.N, parts, [&](std::size_t k, std::size_t n0, std::size_t n1) {
    for (std::size_t n = n0; n < n1; ++n) {
      const float* x = inp + n * g.H * g.W * C;
      for (std::size_t oh = 0; oh < g.OH; ++oh) {
        std::size_t h0, h1;
        window(oh, g.SH, g.PH, g.pad_top, g.H, h0, h1);
        for (std::size_t ow = 0; ow < g.OW; ++ow) {
          std::size_t w0, w1;
          window(ow, g.SW, g.PW, g.pad_left, g.W, w0, w1);
          const std::size_t o_off = ((n * g.OH + oh) * g.OW + ow) * C;
          float* o = out + o_off;
          std::int32_t* a = argmax ? argmax + o_off : scratch.data() + k * C;
          // Start from the first real cell; later cells replace it only when strictly greater,
          // so ties keep the first maximum in scan order.
          {
            const float* xc = x + (h0 * g.W + w0) * C;
            const std::int32_t idx = std::int32_t(h0 * g.W + w0);
            for (std::size_t c = 0; c < C; ++c) {
              o[c] = xc[c];
              a[c] = idx;
            }
          }
          for (std::size_t ih = h0; ih < h1; ++ih)
            for (std::size_t iw = (ih == h0 ? w0 + 1 : w0); iw < w1; ++iw) {
              const float* xc = x + (ih * g.W + iw) * C;
              const std::int32_t idx = std::int32_t(ih * g.W + iw);
              for (std::size_t c = 0; c < C; ++c) {  // branch-free select (vectorizes)
                const float v = xc[c], cur = o[c];
                const std::int32_t take = -std::int32_t(v > cur);  // all ones when v > cur
                o[c] = v > cur ? v : cur;
                a[c] = (idx & take) | (a[c] & ~take);
              }
            }
        }
      }
    }
  });
}

void max_pool2d_backward(float* dinp, const float* dout, const float* inp,
                         const std::int32_t* argmax, const Pool2dGeometry& g) {
  const std::size_t C = g.C;
  std::vector<std::int32_t> recomputed;
  if (!argmax) {
    recomputed.resize(g.out_size());
    std::vector<float> out(g.out_size());
    max_pool2d_forward(out.data(), recomputed.data(), inp, g);
    argmax = recomputed.data();
  }
  const std::size_t parts = par::parts_for(g.N, double(g.out_size()));
  par::for_parts(g.N, parts, [&](std::size_t, std::size_t n0, std::size_t n1) {
    for (std::size_t n = n0; n < n1; ++n) {
      float* dx = dinp + n * g.H * g.W * C;
      const std::size_t o_begin = n * g.OH * g.OW * C;
      for (std::size_t p = 0; p < g.OH * g.OW; ++p) {
        const float* d = dout + o_begin + p * C;
        const std::int32_t* a = argmax + o_begin + p * C;
        for (std::size_t c = 0; c < C; ++c) dx[std::size_t(a[c]) * C + c] += d[c];
      }
    }
  });
}

void avg_pool2d_forward(float* out, const float* inp, const Pool2dGeometry& g) {
  const std::size_t C = g.C;
  for (std::size_t n = 0; n < g.N; ++n) {
    const float* x = inp + n * g.H * g.W * C;
    for (std::size_t oh = 0; oh < g.OH; ++oh) {
      std::size_t h0, h1;
      window(oh, g.SH, g.PH, g.pad_top, g.H, h0, h1);
      for (std::size_t ow = 0; ow < g.OW; ++ow) {
        std::size_t w0, w1;
        window(ow, g.SW, g.PW, g.pad_left, g.W, w0, w1);
        float* o = out + ((n * g.OH + oh) * g.OW + ow) * C;
        for (std::size_t c = 0; c < C; ++c) o[c] = 0.0f;
        for (std::size_t ih = h0; ih < h1; ++ih)
          for (std::size_t iw = w0; iw < w1; ++iw) {
            const float* xc = x + (ih * g.W + iw) * C;
            for (std::size_t c = 0; c < C; ++c) o[c] += xc[c];
          }
        const float inv = 1.0f / float((h1 - h0) * (w1 - w0));  // real cells only
        for (std::size_t c = 0; c < C; ++c) o[c] *= inv;
      }
    }
  }
}

void avg_pool2d_backward(float* dinp, const float* dout, const Pool2dGeometry& g) {
  const std::size_t C = g.C;
  const std::size_t parts = par::parts_for(g.N, double(g.out_size()));
  par::for_parts(g.N, parts, [&](std::size_t, std::size_t n0, std::size_t n1) {
    for (std::size_t n = n0; n < n1; ++n) {
      float* dx = dinp + n * g.H * g.W * C;
      for (std::size_t oh = 0; oh < g.OH; ++oh) {
        std::size_t h0, h1;
        window(oh, g.SH, g.PH, g.pad_top, g.H, h0, h1);
        for (std::size_t ow = 0; ow < g.OW; ++ow) {
          std::size_t w0, w1;
          window(ow, g.SW, g.PW, g.pad_left, g.W, w0, w1);
          const float* d = dout + ((n * g.OH + oh) * g.OW + ow) * C;
          const float inv = 1.0f / float((h1 - h0) * (w1 - w0));
          for (std::size_t ih = h0; ih < h1; ++ih)
            for (std::size_t iw = w0; iw < w1; ++iw) {
              float* dxc = dx + (ih * g.W + iw) * C;
              for (std::size_t c = 0; c < C; ++c) dxc[c] += d[c] * inv;
            }
        }
      }
    }
  });
}

void global_avg_pool2d_forward(float* out, const float* inp, std::size_t N, std::size_t H,
                               std::size_t W, std::size_t C) {
  const std::size_t HW = H * W;
  const float inv = HW ? 1.0f / float(HW) : 0.0f;
  for (std::size_t n = 0; n < N; ++n) {
    float* o = out + n * C;
    for (std::size_t c = 0; c < C; ++c) o[c] = 0.0f;
    const float* x = inp + n * HW * C;
    for (std::size_t p = 0; p < HW; ++p)
      for (std::size_t c = 0; c < C; ++c) o[c] += x[p * C + c];
    for (std::size_t c = 0; c < C; ++c) o[c] *= inv;
  }
}

void global_avg_pool2d_backward(float* dinp, const float* dout, std::size_t N, std::size_t H,
                                std::size_t W, std::size_t C) {
  const std::size_t HW = H * W;
  const float inv = HW ? 1.0f / float(HW) : 0.0f;
  for (std::size_t n = 0; n < N; ++n) {
    const float* d = dout + n * C;
    float* dx = dinp + n * HW * C;
    for (std::size_t p = 0; p < HW; ++p)
      for (std::size_t c = 0; c < C; ++c) dx[p * C + c] += d[c] * inv;
  }
}

}  // namespace tinylearn::ops
