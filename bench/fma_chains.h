#pragma once
// The FMA-peak kernel shared by the benchmarks that quote a fraction of peak (bench_sgemm,
// bench_train_step), so their MFU figures are against the same loop.
//
// A tight loop of independent 8-wide FMAs. Zen 3 / Haswell-class cores issue 2 FMAs per cycle
// with a 4-5 cycle latency, so >= 10 independent chains are needed to keep both pipes full
// (Agner Fog, "Instruction tables"); 12 chains plus 2 constants fit in the 16 ymm registers.
#include <immintrin.h>

#include <cstdint>

namespace mg::bench {

constexpr int kFmaChains = 12;
constexpr double kFlopsPerIteration = kFmaChains * 8 * 2;  // 8 lanes, multiply + add

// Runs `iterations` rounds of kFmaChains dependent FMA chains; returns a sum so the work is live.
__attribute__((noinline)) inline float fma_chains(int64_t iterations) {
  // acc = acc * 0.999999 + 1e-6 stays near its start: no overflow, no denormals.
  const __m256 scale = _mm256_set1_ps(0.999999f);
  const __m256 bias = _mm256_set1_ps(1e-6f);
  __m256 acc[kFmaChains];
  for (int j = 0; j < kFmaChains; ++j) acc[j] = _mm256_set1_ps(1.0f + 0.01f * j);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kFmaChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], scale, bias);
  }
  __m256 total = acc[0];
  for (int j = 1; j < kFmaChains; ++j) total = _mm256_add_ps(total, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}

}  // namespace mg::bench
