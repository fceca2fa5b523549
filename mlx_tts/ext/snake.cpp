// Snake activation, x + sin(alpha * x)^2 / alpha with a per-channel alpha, in one multithreaded pass.
//
// MLX's CPU sin is scalar (~40 ns per element here), which made the 48 Snakes of Kokoro's generator cost
// more than all its convolutions. sin^2 has period pi, so the argument is reduced to [-pi/2, pi/2] and a
// degree-11 odd polynomial (error < 1e-7 there) gives sin; the loop compiles to SIMD code for the CPU it
// runs on (function clones for AVX-512 / AVX2 / baseline x86-64).

#include <stdexcept>
#include <vector>

#include "kernels.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "parallel.h"

namespace mlx_tts {

namespace {

constexpr double kPi = 3.14159265358979323846;
// Adding and subtracting 1.5 * 2^52 rounds a double to the nearest integer (for |v| < 2^51), in SIMD.
constexpr double kRoundMagic = 6755399441055744.0;
// Elements per chunk of work: enough to outweigh the handoff, few enough to balance the threads.
constexpr int kMinChunkElements = 1 << 14;
constexpr int kMaxChunkElements = 1 << 17;

#if defined(__x86_64__) && defined(__GNUC__)
#define MLX_TTS_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define MLX_TTS_SIMD_CLONES
#endif

MLX_TTS_SIMD_CLONES
void snake_rows(const float* x, const float* alpha, const float* inv_alpha, float* y, size_t rows, int channels) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * channels;
    float* yr = y + r * channels;
    for (int c = 0; c < channels; ++c) {
      const double t = static_cast<double>(alpha[c]) * xr[c];
      const double k = (t * (1.0 / kPi) + kRoundMagic) - kRoundMagic;
      const float u = static_cast<float>(t - k * kPi);
      const float u2 = u * u;
      const float s =
          u * (1.0f + u2 * (-1.6666667e-1f +
                            u2 * (8.3333333e-3f + u2 * (-1.9841270e-4f + u2 * (2.7557319e-6f + u2 * -2.5052108e-8f)))));
      yr[c] = xr[c] + inv_alpha[c] * s * s;
    }
  }
}

class Snake : public mx::Primitive {
 public:
  explicit Snake(mx::Stream stream) : mx::Primitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    const mx::array& alpha = inputs[1];
    mx::array& y = outputs[0];
    y.set_data(mx::allocator::malloc(y.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(x);
    encoder.set_input_array(alpha);
    encoder.set_output_array(y);
    const int channels = alpha.shape(0);
    const size_t rows = x.size() / channels;
    encoder.dispatch([x = x.data<float>(), alpha = alpha.data<float>(), y = y.data<float>(), channels, rows]() {
      std::vector<float> inv_alpha(channels);
      for (int c = 0; c < channels; ++c) {
        inv_alpha[c] = 1.0f / alpha[c];
      }
      parallel_for(static_cast<int>(rows), kMinChunkElements / channels, kMaxChunkElements / channels,
                   [&](int r0, int r1) {
        const size_t offset = static_cast<size_t>(r0) * channels;
        snake_rows(x + offset, alpha, inv_alpha.data(), y + offset, r1 - r0, channels);
      });
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("mlx_tts snake kernel runs on the CPU only");
  }

  const char* name() const override {
    return "Snake";
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }

  bool is_equivalent(const mx::Primitive&) const override {
    return true;
  }
};

}  // namespace

mx::array snake(const mx::array& x, const mx::array& alpha) {
  if (x.dtype() != mx::float32 || alpha.dtype() != mx::float32) {
    throw std::invalid_argument("snake: only float32 is supported");
  }
  if (alpha.ndim() != 1 || x.ndim() == 0 || x.shape(-1) != alpha.shape(0)) {
    throw std::invalid_argument("snake: alpha must have shape [C] with C the last axis of x");
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(x.shape(), mx::float32, std::make_shared<Snake>(stream),
                   {mx::contiguous(x, false, stream), mx::contiguous(alpha, false, stream)});
}

}  // namespace mlx_tts
