// Runs a test body once per instruction set the host fast paths have on this CPU: AVX2, then
// AVX-512 VNNI where the CPU has it (host_simd.h), so that both versions of the inner loops are
// compared with the plain kernels. The body gets the set's name (a std::string).
#ifndef TINYLEARN_TESTS_HOST_ISAS_H
#define TINYLEARN_TESTS_HOST_ISAS_H

#include <doctest/doctest.h>

#include <string>

#include "host_simd.h"

template <class Body>
void for_each_host_isa(Body&& body) {
  const int saved = tlm_host_vnni_allowed();
  tlm_host_vnni_allowed() = 0;
  body(std::string("avx2"));
  tlm_host_vnni_allowed() = 1;
  if (tlm_host_vnni())
    body(std::string("avx512-vnni"));
  else
    MESSAGE("this CPU has no AVX-512 VNNI: only the AVX2 inner loops were compared");
  tlm_host_vnni_allowed() = saved;
}

#endif  // TINYLEARN_TESTS_HOST_ISAS_H
