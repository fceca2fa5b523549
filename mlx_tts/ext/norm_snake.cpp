// Snake activation and Kokoro's AdaIN, fused and multithreaded:
//   snake(v)        = v + sin(alpha * v)^2 / alpha                       (alpha per channel)
//   adain(x)        = (x - mean_t(x)) / sqrt(var_t(x) + eps) * (1 + gamma) + beta
//   adain_snake(x)  = snake(adain(x)), the pair that precedes every conv of Kokoro's generator resblocks.
//
// MLX's CPU sin is scalar (~40 ns per element here), which made the generator's 48 Snakes cost more than all
// its convolutions, and its instance norm takes four single-threaded passes over the activations. Here the
// statistics take one pass and the normalization plus Snake a second, both split over threads.
// sin^2 has period pi, so the argument is reduced to [-pi/2, pi/2] (in double) and a degree-11 odd
// polynomial (error < 1e-7 there) gives sin. The loops compile to SIMD code for the CPU they run on.

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "fast_math.h"
#include "cpu_primitive.h"
#include "kernels.h"
#include "norm_snake.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "parallel.h"
#include "simd.h"

namespace mlx_tts {

namespace {

// Elements per chunk of work: these passes are memory-bound (~1 ms for Kokoro's largest activation on one
// core), so only much larger inputs are worth a second thread.
constexpr int kMinChunkElements = 1 << 20;
constexpr int kMaxChunkElements = 1 << 21;

inline __attribute__((always_inline)) float snake_value(float v, float alpha, float inv_alpha) {
  // sin^2 has period pi: the reduced argument's sine, whatever its sign, gives it.
  const double t = static_cast<double>(alpha) * v;
  const double k = (t * (1.0 / kPi) + kRoundMagic) - kRoundMagic;
  const float s = sin_reduced(static_cast<float>(t - k * kPi));
  return v + inv_alpha * s * s;
}

MLX_TTS_SIMD_CLONES
void affine_snake_rows(const float* x, const float* scale, const float* shift, const float* alpha,
                       const float* inv_alpha, float* y, size_t rows, int channels) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * channels;
    float* yr = y + r * channels;
    for (int c = 0; c < channels; ++c) {
      yr[c] = snake_value(xr[c] * scale[c] + shift[c], alpha[c], inv_alpha[c]);
    }
  }
}

MLX_TTS_SIMD_CLONES
void affine_rows(const float* x, const float* scale, const float* shift, float* y, size_t rows, int channels) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * channels;
    float* yr = y + r * channels;
    for (int c = 0; c < channels; ++c) {
      yr[c] = xr[c] * scale[c] + shift[c];
    }
  }
}

// Per-channel sums of x and x^2 over rows, in double (the variance is E[x^2] - E[x]^2).
MLX_TTS_SIMD_CLONES
void channel_sums(const float* x, size_t rows, int channels, double* sum, double* sum_sq) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * channels;
    for (int c = 0; c < channels; ++c) {
      const double v = xr[c];
      sum[c] += v;
      sum_sq[c] += v * v;
    }
  }
}

// Inputs: x [B, T, C]; with `normalize`, gamma and beta [B, C]; with `snake`, alpha [C].
class NormSnake : public CpuPrimitive {
 public:
  NormSnake(mx::Stream stream, bool normalize, bool snake, float eps)
      : CpuPrimitive(stream), normalize_(normalize), snake_(snake), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    mx::array& y = outputs[0];
    auto& encoder = prepare(inputs, y);
    const float* gamma = normalize_ ? inputs[1].data<float>() : nullptr;
    const float* beta = normalize_ ? inputs[2].data<float>() : nullptr;
    const float* alpha = snake_ ? inputs.back().data<float>() : nullptr;
    const int batch = x.ndim() == 3 ? x.shape(0) : 1;
    const int channels = x.shape(-1);
    const int rows = static_cast<int>(x.size() / channels / batch);
    encoder.dispatch([x = x.data<float>(), y = y.data<float>(), gamma, beta, alpha, batch, rows, channels,
                      normalize = normalize_, eps = eps_]() {
      for (int b = 0; b < batch; ++b) {
        const size_t offset = static_cast<size_t>(b) * rows * channels;
        const ChannelTransform transform =
            normalize ? ChannelTransform::adain(x + offset, rows, channels, gamma + b * channels,
                                                beta + b * channels, eps, alpha)
                      : ChannelTransform::snake(channels, alpha);
        const int min_rows = std::max(1, kMinChunkElements / channels);
        const int max_rows = std::max(1, kMaxChunkElements / channels);
        parallel_for(rows, min_rows, max_rows, [&](int r0, int r1) {
          const size_t start = offset + static_cast<size_t>(r0) * channels;
          transform.apply(x + start, y + start, r1 - r0);
        });
      }
    });
  }


  const char* name() const override {
    return normalize_ ? (snake_ ? "AdaInSnake" : "AdaIn") : "Snake";
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const NormSnake&>(other);
    return normalize_ == o.normalize_ && snake_ == o.snake_ && eps_ == o.eps_;
  }

 private:
  bool normalize_, snake_;
  float eps_;
};

void check_float32(const char* op, const mx::array& a) {
  if (a.dtype() != mx::float32) {
    throw std::invalid_argument(std::string(op) + ": only float32 is supported");
  }
}

}  // namespace

ChannelTransform ChannelTransform::adain(const float* x, int rows, int channels, const float* gamma,
                                         const float* beta, float eps, const float* alpha) {
  std::vector<double> sum(channels, 0.0), sum_sq(channels, 0.0);
  std::mutex merge;
  const int min_rows = std::max(1, kMinChunkElements / channels);
  const int max_rows = std::max(1, kMaxChunkElements / channels);
  parallel_for(rows, min_rows, max_rows, [&](int r0, int r1) {
    std::vector<double> s(channels, 0.0), s2(channels, 0.0);
    channel_sums(x + static_cast<size_t>(r0) * channels, r1 - r0, channels, s.data(), s2.data());
    std::lock_guard<std::mutex> lock(merge);
    for (int c = 0; c < channels; ++c) {
      sum[c] += s[c];
      sum_sq[c] += s2[c];
    }
  });
  ChannelTransform t = snake(channels, alpha);
  for (int c = 0; c < channels; ++c) {
    const double mean = sum[c] / rows;
    const double var = std::max(sum_sq[c] / rows - mean * mean, 0.0);
    t.scale[c] = static_cast<float>((1.0 + gamma[c]) / std::sqrt(var + eps));
    t.shift[c] = static_cast<float>(beta[c] - mean * t.scale[c]);
  }
  return t;
}

ChannelTransform ChannelTransform::snake(int channels, const float* alpha) {
  ChannelTransform t{std::vector<float>(channels, 1.0f), std::vector<float>(channels, 0.0f), {}, {}};
  if (alpha) {
    t.alpha.assign(alpha, alpha + channels);
    t.inv_alpha.resize(channels);
    for (int c = 0; c < channels; ++c) {
      t.inv_alpha[c] = 1.0f / alpha[c];
    }
  }
  return t;
}

void ChannelTransform::apply(const float* x, float* y, size_t rows) const {
  const int channels = static_cast<int>(scale.size());
  if (alpha.empty()) {
    affine_rows(x, scale.data(), shift.data(), y, rows, channels);
  } else {
    affine_snake_rows(x, scale.data(), shift.data(), alpha.data(), inv_alpha.data(), y, rows, channels);
  }
}

mx::array snake(const mx::array& x, const mx::array& alpha) {
  check_float32("snake", x);
  check_float32("snake", alpha);
  if (alpha.ndim() != 1 || x.ndim() == 0 || x.shape(-1) != alpha.shape(0)) {
    throw std::invalid_argument("snake: alpha must have shape [C] with C the last axis of x");
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(x.shape(), mx::float32, std::make_shared<NormSnake>(stream, false, true, 0.0f),
                   {mx::contiguous(x, false, stream), mx::contiguous(alpha, false, stream)});
}

mx::array adain_snake(const mx::array& x, const mx::array& gamma, const mx::array& beta,
                      const std::optional<mx::array>& alpha, float eps) {
  for (const mx::array* a : {&x, &gamma, &beta}) {
    check_float32("adain_snake", *a);
  }
  if (x.ndim() != 3) {
    throw std::invalid_argument("adain_snake: x must be [B, T, C]");
  }
  const int batch = x.shape(0), channels = x.shape(2);
  if (gamma.size() != static_cast<size_t>(batch) * channels || beta.size() != gamma.size()) {
    throw std::invalid_argument("adain_snake: gamma and beta must hold B x C values ([B, C] or [B, 1, C])");
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  std::vector<mx::array> inputs = {mx::contiguous(x, false, stream), mx::contiguous(gamma, false, stream),
                                   mx::contiguous(beta, false, stream)};
  if (alpha) {
    check_float32("adain_snake", *alpha);
    if (alpha->ndim() != 1 || alpha->shape(0) != channels) {
      throw std::invalid_argument("adain_snake: alpha must have shape [C]");
    }
    inputs.push_back(mx::contiguous(*alpha, false, stream));
  }
  return mx::array(x.shape(), mx::float32, std::make_shared<NormSnake>(stream, true, alpha.has_value(), eps),
                   std::move(inputs));
}

}  // namespace mlx_tts
