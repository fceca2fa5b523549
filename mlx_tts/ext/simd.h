// The x86 code paths of the CPU kernels, and the switch that leaves them out.
//
// On x86-64 (GCC or Clang) the AVX-512 kernels are compiled with a target attribute and chosen at run time
// for CPUs that have AVX-512F; plain loops get AVX-512, AVX2 and baseline clones. Every such kernel has a
// portable version, which is all that other architectures (aarch64, ...) get, and all that a build with
// MLX_TTS_PORTABLE defined gets (MLX_TTS_EXT=portable: how the portable code is tested on x86).

#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MLX_TTS_PORTABLE)
#define MLX_TTS_X86 1
#define MLX_TTS_AVX512 __attribute__((target("avx512f")))
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

// Whether this build has the AVX-512 kernels and the CPU can run them.
inline bool cpu_has_avx512() {
#if MLX_TTS_X86
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

}  // namespace mlx_tts
