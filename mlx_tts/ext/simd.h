// The x86 code paths of the CPU kernels, and the switch that leaves them out.
//
// On x86-64 (GCC or Clang) the AVX-512 kernels are compiled with a target attribute and chosen at run time
// for CPUs that have AVX-512F (the quantized matrix-vector kernel also has an AVX2 + FMA version); plain loops
// get AVX-512, AVX2 and baseline clones. Every such kernel has a portable version, which is all that other
// architectures (aarch64, ...) get, and all that a build with MLX_TTS_PORTABLE defined gets
// (MLX_TTS_EXT=portable: how the portable code is tested on x86). MLX_TTS_EXT=avx2 keeps the hand-written
// kernels at AVX2 on an AVX-512 CPU (how the AVX2 ones are tested there).

#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MLX_TTS_PORTABLE)
#define MLX_TTS_X86 1
#define MLX_TTS_AVX512 __attribute__((target("avx512f")))
#define MLX_TTS_AVX2 __attribute__((target("avx2,fma")))
#else
#define MLX_TTS_X86 0
#endif

#if MLX_TTS_X86 && defined(__ELF__)
// Function clones for AVX-512 / AVX2 / baseline x86-64, chosen at load time (an ifunc: ELF only).
#define MLX_TTS_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define MLX_TTS_SIMD_CLONES
#endif

namespace mlx_tts {

// Whether this build has the AVX-512 kernels and the CPU can run them (and MLX_TTS_EXT=avx2 does not hold
// them back).
inline bool cpu_has_avx512() {
#if MLX_TTS_X86
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          !(std::getenv("MLX_TTS_EXT") && std::strcmp(std::getenv("MLX_TTS_EXT"), "avx2") == 0);
  return has;
#else
  return false;
#endif
}

// Whether this build has the AVX2 + FMA kernels and the CPU can run them.
inline bool cpu_has_avx2_fma() {
#if MLX_TTS_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace mlx_tts
