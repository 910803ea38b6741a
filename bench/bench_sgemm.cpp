// SGEMM benchmark: the machine's FMA peak, then float32 GEMM GFLOP/s at model-like shapes for
// OpenBLAS (the OpenMP build the project links), BLIS (loaded at run time if installed) and
// Eigen's own GEMM (1 thread: the project defines EIGEN_DONT_PARALLELIZE). Plain main, prints
// a table:
//   build-x/bench_sgemm [--reps N] [--quick] [--layout nt|nn|tn] [--clock wall|cpu]
// --quick: 2 samples, skinny shapes only (a smoke run). --clock cpu: see Clock below.
// Row-major C[M,N] = op(A) * op(B), counted as 2*M*N*K flops. The default layout "nt" is the
// Linear forward y = x W^T with W stored [out, in] (design.md section 3): A = x [M,K],
// B = W [N,K]. "nn" is the input gradient dx = dy W, "tn" the weight gradient dW = dy^T x.
// Shapes: M = 512 tokens (production3B: batch 1 x seq 512), C = 2048, F = 8192; the skinny
// ones are LoRA products (r = 16). Every library is validated against a naive float64 loop on
// a small odd shape before anything is timed, and every timed product is spot-checked at
// random entries. Times are the best of `reps` samples after a warm-up (the machine is shared;
// the best sample is the least disturbed). Results and interpretation: docs/benchmarks.md.
#include <cblas.h>
#include <dlfcn.h>
#include <immintrin.h>

#include "bench/fma_chains.h"
#include <omp.h>
#include <time.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Clocks. "wall" is the honest figure on a quiet machine. "cpu" divides the process CPU time by
// the thread count: the time each thread actually ran, so other processes sharing the cores do
// not count. It is the load-robust estimate of what the kernels reach when they run, but it
// hides scheduling losses (a 2-thread GEMM waits at barriers for a descheduled thread; libgomp
// spins only briefly, then sleeps, so that wait is mostly not counted).
// ---------------------------------------------------------------------------------------------
enum class Clock { Wall, Cpu };

double clock_seconds(Clock clock) {
  timespec ts{};
  clock_gettime(clock == Clock::Wall ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Elapsed seconds of `threads` threads between two clock_seconds() readings.
double effective_seconds(Clock clock, double start, double end, int threads) {
  return clock == Clock::Wall ? end - start : (end - start) / threads;
}

// FMA peak: the kernel bench_sgemm and bench_train_step share (bench/fma_chains.h), so their
// fractions of peak are against the same loop.
using mg::bench::fma_chains;
using mg::bench::kFlopsPerIteration;
using mg::bench::kFmaChains;

// GFLOP/s of `threads` threads each running the FMA loop; best of `reps`.
double fma_peak_gflops(Clock clock, int threads, int reps) {
  // ~40 ms per sample at ~100 GFLOP/s: short samples, many of them, so that on a shared
  // machine some sample runs undisturbed.
  const int64_t iterations = 20'000'000;
  volatile float sink = 0;
  double best = 0;
  for (int r = 0; r <= reps; ++r) {  // r = 0 is the warm-up (clock ramp, thread start)
    const double t0 = clock_seconds(clock);
    float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    sum += fma_chains(iterations);
    const double seconds = effective_seconds(clock, t0, clock_seconds(clock), threads);
    sink = sink + sum;
    if (r > 0) best = std::max(best, threads * iterations * kFlopsPerIteration / seconds * 1e-9);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// The GEMM problem and the libraries under test.
// ---------------------------------------------------------------------------------------------
enum class Layout { NT, NN, TN };

struct Problem {
  Layout layout;
  int M, N, K;
  std::vector<float> a;  // (M,K) row-major, or (K,M) for TN
  std::vector<float> b;  // (N,K) row-major for NT, (K,N) for NN/TN
  std::vector<float> c;  // (M,N) row-major
  bool trans_a() const { return layout == Layout::TN; }
  bool trans_b() const { return layout == Layout::NT; }
  int lda() const { return trans_a() ? M : K; }
  int ldb() const { return trans_b() ? K : N; }
  // A(i,k) and B(k,j) of the product as stored, for the references.
  float a_at(int i, int k) const { return trans_a() ? a[size_t(k) * M + i] : a[size_t(i) * K + k]; }
  float b_at(int k, int j) const { return trans_b() ? b[size_t(j) * K + k] : b[size_t(k) * N + j]; }
};

Problem make_problem(Layout layout, int M, int N, int K, uint32_t seed) {
  Problem p{layout, M, N, K, {}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  p.a.resize(size_t(M) * K);
  p.b.resize(size_t(K) * N);
  p.c.assign(size_t(M) * N, 0.0f);
  for (float& x : p.a) x = uniform(rng);
  for (float& x : p.b) x = uniform(rng);
  return p;
}

using CblasSgemm = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, int, int, int, float,
                            const float*, int, const float*, int, float, float*, int);

struct Library {
  std::string name;
  int max_threads;  // Eigen: 1
  std::function<void(int threads)> set_threads;
  std::function<void(Problem& p)> sgemm;  // p.c = op(A) op(B)
};

void call_cblas(CblasSgemm fn, Problem& p) {
  fn(CblasRowMajor, p.trans_a() ? CblasTrans : CblasNoTrans,
     p.trans_b() ? CblasTrans : CblasNoTrans, p.M, p.N, p.K, 1.0f, p.a.data(), p.lda(),
     p.b.data(), p.ldb(), 0.0f, p.c.data(), p.N);
}

Library openblas_library() {
  return {"OpenBLAS", 2,
          [](int n) {
            omp_set_num_threads(n);
            openblas_set_num_threads(n);
          },
          [](Problem& p) { call_cblas(&cblas_sgemm, p); }};
}

// BLIS through dlopen. RTLD_DEEPBIND matters: BLIS's cblas_sgemm calls sgemm_ through its PLT,
// and without DEEPBIND that symbol binds to the sgemm_ of the already loaded OpenBLAS, so the
// "BLIS" column would silently time OpenBLAS (checked with LD_DEBUG=bindings).
struct BlisHandle {
  void* handle = nullptr;
  CblasSgemm sgemm = nullptr;
  void (*set_num_threads)(int64_t) = nullptr;  // bli_thread_set_num_threads(dim_t)
  std::string description;                     // version and sub-configuration, or why not loaded
};

BlisHandle load_blis() {
  BlisHandle blis;
#if defined(__SANITIZE_ADDRESS__)
  blis.description = "skipped under AddressSanitizer (RTLD_DEEPBIND is unsupported there)";
  return blis;
#else
  const char* candidates[] = {"/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4",
                              "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4",
                              "libblis.so.4"};
  for (const char* path : candidates) {
    blis.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (blis.handle) {
      blis.description = path;
      break;
    }
  }
  if (!blis.handle) {
    blis.description = "not installed (apt-get install libblis4-openmp)";
    return blis;
  }
  blis.sgemm = reinterpret_cast<CblasSgemm>(dlsym(blis.handle, "cblas_sgemm"));
  blis.set_num_threads =
      reinterpret_cast<void (*)(int64_t)>(dlsym(blis.handle, "bli_thread_set_num_threads"));
  auto blas_int_size =
      reinterpret_cast<int64_t (*)()>(dlsym(blis.handle, "bli_info_get_blas_int_type_size"));
  auto version = reinterpret_cast<const char* (*)()>(dlsym(blis.handle, "bli_info_get_version_str"));
  auto arch_id = reinterpret_cast<int (*)()>(dlsym(blis.handle, "bli_arch_query_id"));
  auto arch_name = reinterpret_cast<const char* (*)(int)>(dlsym(blis.handle, "bli_arch_string"));
  if (!blis.sgemm) {
    blis.description += ": no cblas_sgemm symbol (BLIS built without CBLAS)";
    return blis;
  }
  // The CBLAS ints are passed as 32-bit `int` above; a 64-bit-integer BLIS (libblis64) would
  // read garbage in the upper halves.
  if (blas_int_size && blas_int_size() != 32) {
    blis.description += ": BLAS integers are " + std::to_string(blas_int_size()) + "-bit, need 32";
    blis.sgemm = nullptr;
    return blis;
  }
  if (version) blis.description += std::string(", version ") + version();
  if (arch_id && arch_name) blis.description += std::string(", kernels ") + arch_name(arch_id());
  return blis;
#endif
}

Library blis_library(const BlisHandle& blis) {
  const CblasSgemm fn = blis.sgemm;
  auto set = blis.set_num_threads;
  return {"BLIS", 2,
          [set](int n) {
            omp_set_num_threads(n);
            if (set) set(n);
          },
          [fn](Problem& p) { call_cblas(fn, p); }};
}

Library eigen_library() {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return {"Eigen", 1, [](int) {},
          [](Problem& p) {
            const int rows_a = p.trans_a() ? p.K : p.M, cols_a = p.trans_a() ? p.M : p.K;
            const int rows_b = p.trans_b() ? p.N : p.K, cols_b = p.trans_b() ? p.K : p.N;
            Eigen::Map<const RowMajor> a(p.a.data(), rows_a, cols_a);
            Eigen::Map<const RowMajor> b(p.b.data(), rows_b, cols_b);
            Eigen::Map<RowMajor> c(p.c.data(), p.M, p.N);
            if (p.layout == Layout::NT) c.noalias() = a * b.transpose();
            else if (p.layout == Layout::NN) c.noalias() = a * b;
            else c.noalias() = a.transpose() * b;
          }};
}

// ---------------------------------------------------------------------------------------------
// Validation and timing.
// ---------------------------------------------------------------------------------------------

// Float64 dot product of row i of op(A) and column j of op(B): the naive reference entry.
double reference_entry(const Problem& p, int i, int j) {
  double sum = 0;
  for (int k = 0; k < p.K; ++k) sum += double(p.a_at(i, k)) * p.b_at(k, j);
  return sum;
}

// max |C - reference| / sqrt(K) over `samples` random entries (all entries when samples <= 0).
// Inputs are U(-1,1), so a float32 sum of K products has error ~ eps * sqrt(K) * |terms|;
// dividing by sqrt(K) makes one threshold serve every K.
double max_scaled_error(const Problem& p, int samples, uint32_t seed) {
  double worst = 0;
  auto check = [&](int i, int j) {
    const double diff = std::fabs(double(p.c[size_t(i) * p.N + j]) - reference_entry(p, i, j));
    worst = std::max(worst, diff / std::sqrt(double(p.K)));
  };
  if (samples <= 0) {
    for (int i = 0; i < p.M; ++i)
      for (int j = 0; j < p.N; ++j) check(i, j);
  } else {
    std::mt19937 rng(seed);
    for (int s = 0; s < samples; ++s) check(int(rng() % p.M), int(rng() % p.N));
  }
  return worst;
}

constexpr double kTolerance = 1e-5;  // float32 eps ~ 1.2e-7; generous for blocked summation

// Best seconds per call over `reps` samples; each sample repeats the call enough times to last
// ~20 ms, so microsecond-sized skinny products are not timer noise.
double seconds_per_call(Clock clock, int threads, int reps, const std::function<void()>& f) {
  double t0 = clock_seconds(clock);
  f();  // warm-up: page faults, thread start, BLAS buffers
  f();
  const double once = effective_seconds(clock, t0, clock_seconds(clock), threads) / 2;
  const int inner = std::max(1, int(std::ceil(0.02 / std::max(once, 1e-9))));
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    t0 = clock_seconds(clock);
    for (int i = 0; i < inner; ++i) f();
    best = std::min(best, effective_seconds(clock, t0, clock_seconds(clock), threads) / inner);
  }
  return best;
}

struct Shape {
  int M, N, K;
  const char* what;
};

const char* layout_name(Layout layout) {
  return layout == Layout::NT ? "nt" : layout == Layout::NN ? "nn" : "tn";
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  bool quick = false;
  Layout layout = Layout::NT;
  Clock clock = Clock::Wall;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg == "--layout" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v == "nt") layout = Layout::NT;
      else if (v == "nn") layout = Layout::NN;
      else if (v == "tn") layout = Layout::TN;
      else {
        std::fprintf(stderr, "[bench_sgemm] unknown --layout '%s'; use nt, nn or tn\n", v.c_str());
        return 2;
      }
    } else if (arg == "--clock" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v == "wall") clock = Clock::Wall;
      else if (v == "cpu") clock = Clock::Cpu;
      else {
        std::fprintf(stderr, "[bench_sgemm] unknown --clock '%s'; use wall or cpu\n", v.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--quick] [--layout nt|nn|tn] [--clock wall|cpu]\n",
                   argv[0]);
      return 2;
    }
  }
  if (quick) reps = std::min(reps, 2);

  std::printf("OpenBLAS: %s (core %s)\n", openblas_get_config(), openblas_get_corename());
  const BlisHandle blis = load_blis();
  std::printf("BLIS: %s\n", blis.description.c_str());
  std::printf("Eigen: %d.%d.%d, 1 thread (EIGEN_DONT_PARALLELIZE)\n", EIGEN_WORLD_VERSION,
              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION);

  std::vector<Library> libraries = {openblas_library()};
  if (blis.sgemm) libraries.push_back(blis_library(blis));
  libraries.push_back(eigen_library());

  // 1. Validate every library, every thread count, against the naive float64 loop on a small
  //    odd shape (edge tiles in every dimension) before anything is timed.
  Problem small = make_problem(layout, 67, 53, 91, 7);
  for (Library& lib : libraries) {
    for (int threads = 1; threads <= lib.max_threads; ++threads) {
      lib.set_threads(threads);
      std::fill(small.c.begin(), small.c.end(), -1.0f);
      lib.sgemm(small);
      const double err = max_scaled_error(small, 0, 0);
      std::printf("validate %-8s %d thr, 67x53x91 %s: max |C - ref|/sqrt(K) = %.2e\n",
                  lib.name.c_str(), threads, layout_name(layout), err);
      if (!(err < kTolerance)) {
        std::fprintf(stderr, "[bench_sgemm] %s gives a wrong product (error %.3e > %.1e)\n",
                     lib.name.c_str(), err, kTolerance);
        return 1;
      }
    }
  }

  // 2. SGEMM at model shapes, bracketed by two FMA-peak measurements: on a shared machine
  //    either may be disturbed, and the larger one is the better estimate of the true peak.
  const int peak_reps = quick ? 3 : 10;
  double peak[3] = {0, fma_peak_gflops(clock, 1, peak_reps), fma_peak_gflops(clock, 2, peak_reps)};
  const std::vector<Shape> shapes = {
      {512, 2048, 8192, "expert down, 512 tok"},  {512, 8192, 2048, "expert up, 512 tok"},
      {4096, 2048, 2048, "in_proj-like, 4096 tok"}, {2048, 2048, 2048, "square 2048"},
      {512, 16, 2048, "LoRA A, r=16"},               {512, 2048, 16, "LoRA B, r=16"},
      {2048, 16, 512, "LoRA A, C=512"}};
  struct Row {
    const Shape* shape;
    int threads;
    std::vector<double> gflops;  // per library; < 0 where the library does not run
  };
  std::vector<Row> rows;
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    if (quick && double(s.M) * s.N * s.K > 2.2e9) continue;
    Problem p = make_problem(layout, s.M, s.N, s.K, seed++);
    const double flops = 2.0 * s.M * s.N * s.K;
    for (int threads = 1; threads <= 2; ++threads) {
      Row row{&s, threads, {}};
      for (Library& lib : libraries) {
        if (threads > lib.max_threads) {
          row.gflops.push_back(-1);
          continue;
        }
        lib.set_threads(threads);
        std::fill(p.c.begin(), p.c.end(), -1.0f);
        const double seconds = seconds_per_call(clock, threads, reps, [&] { lib.sgemm(p); });
        const double err = max_scaled_error(p, 64, seed);
        if (!(err < kTolerance)) {
          std::fprintf(stderr, "[bench_sgemm] %s wrong at %dx%dx%d (error %.3e)\n",
                       lib.name.c_str(), s.M, s.N, s.K, err);
          return 1;
        }
        row.gflops.push_back(flops / seconds * 1e-9);
      }
      rows.push_back(row);
      std::fprintf(stderr, ".");  // progress: the full run takes a few minutes
    }
  }
  std::fprintf(stderr, "\n");
  peak[1] = std::max(peak[1], fma_peak_gflops(clock, 1, peak_reps));
  peak[2] = std::max(peak[2], fma_peak_gflops(clock, 2, peak_reps));
  double load[3] = {0, 0, 0};
  getloadavg(load, 3);

  std::printf("\nFMA peak (%d chains of 8-wide FMA, best of before/after): 1 thread %.1f GFLOP/s, "
              "2 threads %.1f GFLOP/s\n", kFmaChains, peak[1], peak[2]);
  std::printf("load average at the end: %.2f %.2f %.2f (on %d CPUs; > ~0.5 means the figures are "
              "disturbed)\n", load[0], load[1], load[2], omp_get_num_procs());
  std::printf("\nlayout %s (%s), %s clock, GFLOP/s and %% of the FMA peak at that thread count; "
              "best of %d\n",
              layout_name(layout),
              layout == Layout::NT   ? "C = A B^T, Linear forward"
              : layout == Layout::NN ? "C = A B, input gradient"
                                     : "C = A^T B, weight gradient",
              clock == Clock::Wall ? "wall" : "per-thread CPU time", reps);
  std::printf("%-16s %-24s %3s", "M x N x K", "what", "thr");
  for (const Library& lib : libraries) std::printf(" | %8s GF/s  %%peak", lib.name.c_str());
  std::printf("\n");
  bool over_peak = false;
  for (const Row& row : rows) {
    char dims[32];
    std::snprintf(dims, sizeof dims, "%dx%dx%d", row.shape->M, row.shape->N, row.shape->K);
    std::printf("%-16s %-24s %3d", dims, row.shape->what, row.threads);
    for (double g : row.gflops) {
      if (g < 0) {
        std::printf(" | %13s  %5s", "-", "-");
        continue;
      }
      const double fraction = g / peak[row.threads];
      over_peak = over_peak || fraction > 1.0;
      std::printf(" | %13.1f  %4.0f%%", g, 100.0 * fraction);
    }
    std::printf("\n");
  }
  if (over_peak) {
    std::printf("note: a figure above 100%% means both peak measurements were disturbed by other "
                "load; rerun when the machine is quiet\n");
  }
  return 0;
}
