#pragma once
// OpenBLAS's CBLAS interface. The wheels link PyPI's scipy-openblas32 (the OpenBLAS NumPy and SciPy
// ship), whose header and library prefix every symbol with `scipy_`; the source keeps the plain names.
#include <cblas.h>

#ifdef TINYLEARN_SCIPY_OPENBLAS
#define cblas_sgemm scipy_cblas_sgemm
#define openblas_set_num_threads scipy_openblas_set_num_threads
#endif
