#pragma once
// Error checks for CUDA calls, for code inside cuda/ only (includes the CUDA runtime header).
#include <cuda_runtime.h>

#include "autograd/error.h"

// MG_CUDA_CHECK(cudaCall(...), "what was being done"): throws mg::Error with CUDA's message.
#define MG_CUDA_CHECK(call, what)                                                          \
  do {                                                                                     \
    cudaError_t mg_cuda_err_ = (call);                                                     \
    if (mg_cuda_err_ != cudaSuccess)                                                       \
      throw ::mg::Error(::fmt::format("[cuda] {} failed: {} ({})", what,                   \
                                      cudaGetErrorString(mg_cuda_err_),                    \
                                      cudaGetErrorName(mg_cuda_err_)));                    \
  } while (0)

// After a kernel launch: a bad launch configuration shows up here, a fault in the kernel at
// the next synchronizing call (cuda::synchronize names that).
#define MG_CUDA_CHECK_LAUNCH(kernel_name) MG_CUDA_CHECK(cudaGetLastError(), "launch of " kernel_name)
