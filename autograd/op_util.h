#pragma once
// Internal helpers shared by the op implementations (not part of the public API).
#include <omp.h>

#include <cstdint>

#include "autograd/tape.h"
#include "autograd/tensor.h"

namespace mg::detail {

// Elementwise loops go parallel only when there is enough work to pay for the fork.
constexpr int64_t kParallelGrain = 1 << 15;

template <class F>
inline void parallel_for(int64_t n, F&& f, int64_t grain = kParallelGrain) {
#pragma omp parallel for schedule(static) if (n > grain)
  for (int64_t i = 0; i < n; ++i) f(i);
}

inline void check_float(const Tensor& t, const char* op) {
  MG_CHECK(t.defined(), "[{}] input is undefined", op);
  MG_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, "[{}] {} must be f32 or f64", op,
           t.describe());
}

inline void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  MG_CHECK(a.dtype() == b.dtype(), "[{}] dtype mismatch: {} vs {}", op, a.describe(), b.describe());
}

}  // namespace mg::detail
