// The base of the kernels' MLX primitives: they run on the CPU only, their output gets its memory and the
// operands are registered with the CPU stream's encoder the same way.

#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

namespace mlx_tts {

namespace mx = mlx::core;

class CpuPrimitive : public mx::Primitive {
 public:
  using mx::Primitive::Primitive;

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("mlx_tts: ") + name() + " runs on the CPU only");
  }

 protected:
  // Gives `out` a new buffer unless it already has one (taken over from an input), registers the inputs and
  // `out` with the encoder (which keeps them alive until the task has run) and returns the encoder.
  mx::cpu::CommandEncoder& prepare(const std::vector<mx::array>& inputs, mx::array& out) {
    if (out.data_shared_ptr() == nullptr) {
      out.set_data(mx::allocator::malloc(out.nbytes()));
    }
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) {
      encoder.set_input_array(a);
    }
    encoder.set_output_array(out);
    return encoder;
  }
};

}  // namespace mlx_tts
