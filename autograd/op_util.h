#pragma once
// Internal helpers shared by the op implementations (not part of the public API).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

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

// Sum of f(i) for i in [0, n) in double, deterministic for any thread count: fixed chunks
// summed in parallel, partial sums added in chunk order (OpenMP's reduction clause combines
// in arrival order, which would break bit-exact resume with more than two threads).
template <class F>
inline double deterministic_sum(int64_t n, F&& f) {
  constexpr int64_t kChunk = 4096;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  if (nchunks <= 1) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += f(i);
    return s;
  }
  std::vector<double> partial(static_cast<size_t>(nchunks), 0.0);
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t c = 0; c < nchunks; ++c) {
    double s = 0;
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) s += f(i);
    partial[c] = s;
  }
  double s = 0;
  for (double p : partial) s += p;
  return s;
}

inline void check_float(const Tensor& t, const char* op) {
  MG_CHECK(t.defined(), "[{}] input is undefined", op);
  MG_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, "[{}] {} must be f32 or f64", op,
           t.describe());
}

// Token ids I32 (...), each in [0, V): the rows of an embedding table [V, C].
inline void check_token_ids(const Tensor& ids, int64_t V, const char* op) {
  MG_CHECK(ids.dtype() == DType::I32, "[{}] ids must be i32, got {}", op, ids.describe());
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    MG_CHECK(id[i] >= 0 && id[i] < V,
             "[{}] token id {} at position {} is outside the vocabulary [0, {}); check "
             "that the tokenizer and model.vocab_size agree", op, id[i], i, V);
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  MG_CHECK(a.device() == b.device(),
           "[{}] operands on two devices: {} is on {}, {} on {}; move one with .to(device)", op,
           a.describe(), device_name(a.device()), b.describe(), device_name(b.device()));
}

// Same dtype, and (as every op needs) the same device.
inline void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  check_same_device(a, b, op);
  MG_CHECK(a.dtype() == b.dtype(), "[{}] dtype mismatch: {} vs {}", op, a.describe(), b.describe());
}

}  // namespace mg::detail
