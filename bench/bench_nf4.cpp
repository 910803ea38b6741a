// NF4 benchmark: fused dequantize-matmuls against float32 cblas_sgemm at the same shapes, and
// quantization throughput. Every kernel version is validated against dequantize-then-sgemm
// before it is timed. Plain main, prints figures:
//   build-x/bench_nf4 [--reps N] [--quick] [--only matmul|small|quantize]
// Shapes: M = 512 activation rows (production3B: batch 1 x seq 512), W [2048, 8192] and
// [8192, 2048] (production3B's expert up/down: C = 2048, F = 8192). Times are the best of
// `reps` runs after one warm-up (the machine is shared; the best run is the least disturbed).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "model/nf4.h"

namespace {

double seconds_best_of(int reps, const std::function<void()>& f) {
  f();  // warm-up: page faults, OpenMP/OpenBLAS thread start
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

std::vector<float> normal_vector(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// max |a - b| / max |b|
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

struct Version {
  const char* name;
  mg::NF4MatmulVersion v;
};
const Version kVersions[] = {{"v1 shared-tile", mg::NF4MatmulVersion::SharedTile},
                             {"v2 thread-tile", mg::NF4MatmulVersion::ThreadTile}};

bool bench_matmul(int64_t M, int64_t rows, int64_t cols, int reps) {
  std::printf("\n== W [%lld, %lld], M = %lld: Y = X W^T (forward), dX = dY W (input grad)\n",
              (long long)rows, (long long)cols, (long long)M);
  const std::vector<float> W = normal_vector(rows * cols, 1, 0.02f);
  const mg::NF4Weight q = mg::nf4_quantize(W.data(), rows, cols);
  const std::vector<float> Wd = mg::nf4_dequantize(q);  // the sgemm baseline multiplies this
  const std::vector<float> X = normal_vector(M * cols, 2, 1.0f);
  const std::vector<float> dY = normal_vector(M * rows, 3, 1.0f);
  std::vector<float> Y(M * rows), Yref(M * rows), dX(M * cols), dXref(M * cols);
  const double flop = 2.0 * M * rows * cols;
  std::printf(
      "weight bytes read per product: NF4 %.2f MiB (%.3f bits/param) vs float32 %.2f MiB "
      "(%.2fx less)\n",
      q.bytes() / 1048576.0, q.bits_per_param(), 4.0 * rows * cols / 1048576.0,
      4.0 * rows * cols / q.bytes());

  // Validate every version against dequantize-then-sgemm first.
  set_threads(2);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, rows, cols, 1.0f, X.data(), cols,
              Wd.data(), cols, 0.0f, Yref.data(), rows);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, cols, rows, 1.0f, dY.data(), rows,
              Wd.data(), cols, 0.0f, dXref.data(), cols);
  bool ok = true;
  for (const Version& v : kVersions) {
    for (int threads : {1, 2}) {
      set_threads(threads);
      mg::nf4_matmul(X.data(), q, Y.data(), M, false, v.v);
      mg::nf4_matmul_input_grad(dY.data(), q, dX.data(), M, false, v.v);
      const double ef = max_rel_diff(Y, Yref), eb = max_rel_diff(dX, dXref);
      std::printf("validate %s, %d thread(s): forward max rel diff %.2e, input grad %.2e %s\n",
                  v.name, threads, ef, eb, (ef < 1e-4 && eb < 1e-4) ? "ok" : "FAILED");
      ok = ok && ef < 1e-4 && eb < 1e-4;
    }
  }
  if (!ok) return false;

  std::printf("%-8s %-28s %8s %10s %10s\n", "threads", "kernel", "ms", "GFLOP/s", "vs sgemm");
  for (int threads : {1, 2}) {
    set_threads(threads);
    const double t_fwd = seconds_best_of(reps, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, rows, cols, 1.0f, X.data(), cols,
                  Wd.data(), cols, 0.0f, Yref.data(), rows);
    });
    std::printf("%-8d %-28s %8.1f %10.1f %10s\n", threads, "forward sgemm f32 (baseline)",
                1e3 * t_fwd, flop / t_fwd * 1e-9, "1.00x");
    for (const Version& v : kVersions) {
      const double t =
          seconds_best_of(reps, [&] { mg::nf4_matmul(X.data(), q, Y.data(), M, false, v.v); });
      std::printf("%-8d forward NF4 %-16s %8.1f %10.1f %9.2fx\n", threads, v.name, 1e3 * t,
                  flop / t * 1e-9, t_fwd / t);
    }
    const double t_bwd = seconds_best_of(reps, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, cols, rows, 1.0f, dY.data(), rows,
                  Wd.data(), cols, 0.0f, dXref.data(), cols);
    });
    std::printf("%-8d %-28s %8.1f %10.1f %10s\n", threads, "input grad sgemm f32 (base)",
                1e3 * t_bwd, flop / t_bwd * 1e-9, "1.00x");
    for (const Version& v : kVersions) {
      const double t = seconds_best_of(
          reps, [&] { mg::nf4_matmul_input_grad(dY.data(), q, dX.data(), M, false, v.v); });
      std::printf("%-8d in-grad NF4 %-16s %8.1f %10.1f %9.2fx\n", threads, v.name, 1e3 * t,
                  flop / t * 1e-9, t_bwd / t);
    }
  }
  return true;
}

// Decoding shapes: few activation rows, where the tiled path's per-tile dequantize is not
// hidden behind 2*M flops per weight; Direct reads each 4-bit weight once instead.
bool bench_small_m(int64_t rows, int64_t cols, int reps) {
  std::printf("\n== small M (decoding), W [%lld, %lld], 2 threads; ms per product\n",
              (long long)rows, (long long)cols);
  const std::vector<float> W = normal_vector(rows * cols, 5, 0.02f);
  const mg::NF4Weight q = mg::nf4_quantize(W.data(), rows, cols);
  const std::vector<float> Wd = mg::nf4_dequantize(q);
  const Version versions[] = {{"v2 thread-tile", mg::NF4MatmulVersion::ThreadTile},
                              {"v3 direct", mg::NF4MatmulVersion::Direct}};
  set_threads(2);
  std::printf("%-4s %-10s %12s %12s %12s\n", "M", "product", "sgemm f32", versions[0].name,
              versions[1].name);
  bool ok = true;
  for (int64_t M : {1, 4, 8, 16, 32}) {
    const std::vector<float> X = normal_vector(M * cols, 6, 1.0f);
    const std::vector<float> dY = normal_vector(M * rows, 7, 1.0f);
    std::vector<float> Y(M * rows), Yref(M * rows), dX(M * cols), dXref(M * cols);
    auto fwd_ref = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, rows, cols, 1.0f, X.data(), cols,
                  Wd.data(), cols, 0.0f, Yref.data(), rows);
    };
    auto bwd_ref = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, cols, rows, 1.0f, dY.data(), rows,
                  Wd.data(), cols, 0.0f, dXref.data(), cols);
    };
    fwd_ref();
    bwd_ref();
    double tf[2], tb[2];
    for (int i = 0; i < 2; ++i) {
      mg::nf4_matmul(X.data(), q, Y.data(), M, false, versions[i].v);
      mg::nf4_matmul_input_grad(dY.data(), q, dX.data(), M, false, versions[i].v);
      const double ef = max_rel_diff(Y, Yref), eb = max_rel_diff(dX, dXref);
      if (ef > 1e-4 || eb > 1e-4) {
        std::printf("validate %s M=%lld: forward %.2e input grad %.2e FAILED\n", versions[i].name,
                    (long long)M, ef, eb);
        ok = false;
      }
      tf[i] = seconds_best_of(
          reps, [&] { mg::nf4_matmul(X.data(), q, Y.data(), M, false, versions[i].v); });
      tb[i] = seconds_best_of(reps, [&] {
        mg::nf4_matmul_input_grad(dY.data(), q, dX.data(), M, false, versions[i].v);
      });
    }
    const double sf = seconds_best_of(reps, fwd_ref), sb = seconds_best_of(reps, bwd_ref);
    std::printf("%-4lld %-10s %12.2f %12.2f %12.2f\n", (long long)M, "forward", 1e3 * sf,
                1e3 * tf[0], 1e3 * tf[1]);
    std::printf("%-4lld %-10s %12.2f %12.2f %12.2f\n", (long long)M, "input grad", 1e3 * sb,
                1e3 * tb[0], 1e3 * tb[1]);
  }
  std::printf("(all validated against dequantize-then-sgemm: %s)\n", ok ? "ok" : "FAILED");
  return ok;
}

// Baseline for quantization: the plain per-element procedure (scalar tree, one thread).
void quantize_scalar_baseline(const float* W, int64_t n, std::vector<uint8_t>& packed,
                              std::vector<float>& absmax) {
  for (int64_t b = 0; b * 64 < n; ++b) {
    const int64_t s = b * 64, len = std::min<int64_t>(64, n - s);
    float amax = 0.0f;
    for (int64_t j = 0; j < len; ++j) amax = std::max(amax, std::fabs(W[s + j]));
    absmax[b] = amax;
    const float inv = 1.0f / amax;
    for (int64_t j = 0; j < len; j += 2) {
      const float second = j + 1 < len ? W[s + j + 1] : 0.0f;
      packed[(s + j) / 2] = static_cast<uint8_t>((mg::nf4_quantize_value(W[s + j] * inv) << 4) |
                                                 mg::nf4_quantize_value(second * inv));
    }
  }
}

bool bench_quantize(int64_t rows, int64_t cols, int reps) {
  std::printf("\n== quantize W [%lld, %lld] (%.1fM params, production3B expert size)\n",
              (long long)rows, (long long)cols, rows * cols / 1e6);
  const int64_t n = rows * cols;
  const std::vector<float> W = normal_vector(n, 4, 0.02f);
  std::vector<uint8_t> packed((n + 1) / 2);
  std::vector<float> absmax((n + 63) / 64);
  set_threads(2);
  const mg::NF4Weight q = mg::nf4_quantize(W.data(), rows, cols);
  quantize_scalar_baseline(W.data(), n, packed, absmax);
  const bool same = packed == q.packed;
  std::printf("validate: NF4 codes equal the scalar per-element procedure: %s\n",
              same ? "ok" : "FAILED");
  if (!same) return false;
  const mg::NF4ErrorStats st = mg::nf4_error_stats(W.data(), q);
  std::printf("error: max abs %.3e, rms %.3e (rms weight %.3e, %.1f%%)\n", st.max_abs_error,
              st.rms_error, st.rms_weight, 100.0 * st.rms_error / st.rms_weight);

  const double params_3b = 3.2e9;
  set_threads(1);
  const double t_base = seconds_best_of(
      std::max(1, reps / 2), [&] { quantize_scalar_baseline(W.data(), n, packed, absmax); });
  std::printf("%-8s %-34s %9s %12s %16s\n", "threads", "kernel", "ms", "Mparams/s",
              "3.2B params (s)");
  std::printf("%-8d %-34s %9.1f %12.1f %16.2f\n", 1, "scalar tree, no double-quant (base)",
              1e3 * t_base, n / t_base * 1e-6, params_3b / (n / t_base));
  for (int threads : {1, 2}) {
    set_threads(threads);
    const double t = seconds_best_of(reps, [&] {
      const mg::NF4Weight r = mg::nf4_quantize(W.data(), rows, cols);
      if (r.packed.size() != q.packed.size()) std::abort();
    });
    std::printf("%-8d %-34s %9.1f %12.1f %16.2f\n", threads, "nf4_quantize (AVX2 + double-quant)",
                1e3 * t, n / t * 1e-6, params_3b / (n / t));
  }
  std::vector<float> out(static_cast<size_t>(n));
  for (int threads : {1, 2}) {
    set_threads(threads);
    const double t = seconds_best_of(reps, [&] { mg::nf4_dequantize(q, out.data()); });
    std::printf("%-8d %-34s %9.1f %12.1f %16.2f\n", threads, "nf4_dequantize (whole, for merge)",
                1e3 * t, n / t * 1e-6, params_3b / (n / t));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  bool quick = false;
  std::string only;  // "", "matmul", "small", "quantize"
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_nf4 [--reps N] [--quick] [--only matmul|small|quantize]\n");
      return 2;
    }
  }
  auto want = [&](const char* s) { return only.empty() || only == s; };
  std::printf("bench_nf4: best of %d runs; OpenMP max threads %d, cores %d\n", reps,
              omp_get_max_threads(), omp_get_num_procs());
  bool ok = true;
  const int64_t M = quick ? 128 : 512;
  if (want("matmul")) ok = bench_matmul(M, 2048, 8192, reps) && ok;
  if (want("matmul")) ok = bench_matmul(M, 8192, 2048, reps) && ok;
  if (want("small")) ok = bench_small_m(8192, 2048, 4 * reps) && ok;
  if (want("quantize")) ok = bench_quantize(8192, 2048, reps) && ok;
  std::printf("\n%s\n", ok ? "all kernels validated" : "VALIDATION FAILED");
  return ok ? 0 : 1;
}
