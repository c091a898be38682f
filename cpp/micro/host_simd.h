// Wider vector code for the host's copy of the core, without changing a single result.
//
// The kernels are plain integer loops, which the compiler vectorizes; on the host (x86-64 Linux,
// GCC or Clang) the hot ones are also compiled for AVX2 and picked at load time on CPUs that have
// it (function multiversioning), since the baseline x86-64 ISA (SSE2) widens int8 to int32 slowly.
// Integer sums are exact in any order, so every clone computes the same outputs bit for bit. On
// the firmware (and anywhere else) the macro is empty: one source, one behaviour.
//
// The heaviest kernels also have a host fast path (`*_fast`, written with AVX2 intrinsics, in the
// kernel's own file under TLM_HOST_AVX2): GEMM tiles for conv2d, channel vectors for depthwise
// conv, add and fully connected. The inner loops of conv2d and fully connected also exist for
// AVX-512 VNNI (TLM_VNNI_TARGET), picked at run time where the CPU has it (tlm_host_vnni()). They compute the same integer sums and the same requantization
// (requantize_avx2.h reproduces requantize.h lane by lane), so their outputs equal the plain
// loops' bit for bit; tests/cpp/test_host_fast_*.cpp compare the two on random shapes. Where
// TLM_HOST_AVX2 is 0 (the firmware, other hosts) the fast paths do not exist and
// tlm_host_avx2() is false.
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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(TLM_NO_HOST_FAST)
#define TLM_HOST_AVX2 1
#define TLM_AVX2_TARGET __attribute__((target("avx2,fma")))
// The inner loops of conv2d and fully connected also come in a version for AVX-512 VNNI
// (vpdpbusd: 4 products of unsigned by signed bytes added into each int32 lane, exactly, in one
// instruction), mostly on 256-bit vectors so that the rest of the code stays AVX2; fully connected
// on several rows at once runs on 512-bit vectors.
#define TLM_VNNI_TARGET __attribute__((target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")))
#else
#define TLM_HOST_AVX2 0
#endif

// True when this build has the AVX2 fast paths and the CPU runs them.
inline bool tlm_host_avx2() {
#if TLM_HOST_AVX2
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

// Whether the fast paths may use VNNI where the CPU has it (1, the default) or must keep to AVX2
// (0): tests run both. Read when a model is packed and when a kernel runs; set it before either.
inline int& tlm_host_vnni_allowed() {
  static int allowed = 1;  // constant-initialized: no constructor runs
  return allowed;
}

// True when this build has the AVX2 fast paths, the CPU runs AVX-512 (F, BW, VL) with VNNI, and
// tlm_host_vnni_allowed() is set.
inline bool tlm_host_vnni() {
#if TLM_HOST_AVX2
  return tlm_host_vnni_allowed() && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

#endif  // TINYLEARN_MICRO_HOST_SIMD_H
