// Softmax over the last axis, the tanh-approximated GELU, sin, cos and exp, on fast_math.h's vectorized
// functions.
//
// ALBERT's 12 layers each run a softmax over [heads, N, N] attention scores and a GELU over [N, 2048]; with
// MLX's scalar exp and tanh these took ~70% of the encoder's time on the CPU, its matmuls the rest. Kokoro's
// harmonic source takes the sine of 9 phases per output sample (~6M for 27 s of audio, ~90 ms with MLX's sin)
// and its inverse STFT an exp, a sin and a cos per bin.

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "fast_math.h"
#include "cpu_primitive.h"
#include "kernels.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "parallel.h"
#include "simd.h"

namespace mlx_tts {

namespace {

// Lanes of the partial maxima and sums: one AVX-512 register.
constexpr int kLanes = 16;
constexpr int kMinChunkElements = 1 << 16, kMaxChunkElements = 1 << 19;
// sqrt(2 / pi), the tanh GELU's input scale, and its cubic coefficient.
constexpr float kGeluScale = 0.7978845608028654f, kGeluCubic = 0.044715f;

MLX_TTS_SIMD_CLONES
void softmax_rows(const float* x, float* y, size_t rows, int width) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    float* yr = y + r * width;
    float lane_max[kLanes];
    std::fill(lane_max, lane_max + kLanes, -std::numeric_limits<float>::infinity());
    int i = 0;
    for (; i + kLanes <= width; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        lane_max[j] = std::max(lane_max[j], xr[i + j]);
      }
    }
    float row_max = *std::max_element(lane_max, lane_max + kLanes);
    for (; i < width; ++i) {
      row_max = std::max(row_max, xr[i]);
    }
    float lane_sum[kLanes] = {};
    i = 0;
    for (; i + kLanes <= width; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const float e = fast_exp(xr[i + j] - row_max);
        yr[i + j] = e;
        lane_sum[j] += e;
      }
    }
    float sum = 0.0f;
    for (int j = 0; j < kLanes; ++j) {
      sum += lane_sum[j];
    }
    for (; i < width; ++i) {
      yr[i] = fast_exp(xr[i] - row_max);
      sum += yr[i];
    }
    const float inv_sum = 1.0f / sum;
    for (i = 0; i < width; ++i) {
      yr[i] *= inv_sum;
    }
  }
}

// 0.5 x (1 + tanh(z)) = x * sigmoid(2z), z = sqrt(2 / pi) (x + 0.044715 x^3): no cancellation near 0.
MLX_TTS_SIMD_CLONES
void gelu_tanh_values(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float z = kGeluScale * (v + kGeluCubic * v * v * v);
    y[i] = v / (1.0f + fast_exp(-2.0f * z));
  }
}

// Elementwise: y = f(x).
MLX_TTS_SIMD_CLONES
void sin_values(const float* x, float* y, size_t n, double shift) {
  for (size_t i = 0; i < n; ++i) {
    y[i] = fast_sin(static_cast<double>(x[i]) + shift);
  }
}

MLX_TTS_SIMD_CLONES
void exp_values(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    y[i] = fast_exp(x[i]);
  }
}

enum class PointwiseOp { kSoftmax, kGeluTanh, kSin, kCos, kExp };

class Pointwise : public CpuPrimitive {
 public:
  Pointwise(mx::Stream stream, PointwiseOp op) : CpuPrimitive(stream), op_(op) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    mx::array& y = outputs[0];
    auto& encoder = prepare(inputs, y);
    // Softmax works on whole rows; the others on rows of one element.
    const int width = op_ == PointwiseOp::kSoftmax ? x.shape(-1) : 1;
    if (x.size() == 0) {
      return;
    }
    const int rows = static_cast<int>(x.size() / width);
    encoder.dispatch([x = x.data<float>(), y = y.data<float>(), rows, width, op = op_]() {
      const int min_rows = std::max(1, kMinChunkElements / width);
      const int max_rows = std::max(1, kMaxChunkElements / width);
      parallel_for(rows, min_rows, max_rows, [&](int r0, int r1) {
        const size_t offset = static_cast<size_t>(r0) * width;
        switch (op) {
          case PointwiseOp::kSoftmax: softmax_rows(x + offset, y + offset, r1 - r0, width); break;
          case PointwiseOp::kGeluTanh: gelu_tanh_values(x + offset, y + offset, r1 - r0); break;
          case PointwiseOp::kSin: sin_values(x + offset, y + offset, r1 - r0, 0.0); break;
          case PointwiseOp::kCos: sin_values(x + offset, y + offset, r1 - r0, kPi / 2); break;
          case PointwiseOp::kExp: exp_values(x + offset, y + offset, r1 - r0); break;
        }
      });
    });
  }


  const char* name() const override {
    switch (op_) {
      case PointwiseOp::kSoftmax: return "FastSoftmax";
      case PointwiseOp::kGeluTanh: return "GeluTanh";
      case PointwiseOp::kSin: return "FastSin";
      case PointwiseOp::kCos: return "FastCos";
      default: return "FastExp";
    }
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    return op_ == static_cast<const Pointwise&>(other).op_;
  }

 private:
  PointwiseOp op_;
};

mx::array pointwise(const char* name, const mx::array& x, PointwiseOp op) {
  if (x.dtype() != mx::float32) {
    throw std::invalid_argument(std::string(name) + ": only float32 is supported");
  }
  if (x.ndim() == 0) {
    throw std::invalid_argument(std::string(name) + ": x must have at least one axis");
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(x.shape(), mx::float32, std::make_shared<Pointwise>(stream, op),
                   {mx::contiguous(x, false, stream)});
}

}  // namespace

mx::array softmax(const mx::array& x) {
  return pointwise("softmax", x, PointwiseOp::kSoftmax);
}

mx::array gelu_tanh(const mx::array& x) {
  return pointwise("gelu_tanh", x, PointwiseOp::kGeluTanh);
}

mx::array sin(const mx::array& x) {
  return pointwise("sin", x, PointwiseOp::kSin);
}

mx::array cos(const mx::array& x) {
  return pointwise("cos", x, PointwiseOp::kCos);
}

mx::array exp(const mx::array& x) {
  return pointwise("exp", x, PointwiseOp::kExp);
}

}  // namespace mlx_tts
