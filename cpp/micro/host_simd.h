// Wider vector code for the host's copy of the core, without changing a single result.
//
// The kernels are plain integer loops, which the compiler vectorizes; on the host (x86-64 Linux,
// GCC or Clang) the hot ones are also compiled for AVX2 and picked at load time on CPUs that have
// it (function multiversioning), since the baseline x86-64 ISA (SSE2) widens int8 to int32 slowly.
// Integer sums are exact in any order, so every clone computes the same outputs bit for bit. On
// the firmware (and anywhere else) the macro is empty: one source, one behaviour.
#ifndef TINYLEARN_MICRO_HOST_SIMD_H
#define TINYLEARN_MICRO_HOST_SIMD_H

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define TLM_HOST_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef TLM_HOST_CLONES
#define TLM_HOST_CLONES
#endif

#endif  // TINYLEARN_MICRO_HOST_SIMD_H
