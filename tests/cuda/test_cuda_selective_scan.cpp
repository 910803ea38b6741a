// The GPU selective scan (cuda/selective_scan.h) against the CPU kernels
// (model/selective_scan.h) on the same random inputs, buffer for buffer: forward (out,
// chunk_states, final_state) and backward (all 8 gradient buffers), float and double, odd
// shapes, gated and not; plus run-to-run determinism.
//
// Tolerances, per buffer: max |gpu - cpu| / max |cpu| <= 1e-4 (float forward), 1e-3 (float
// backward: sums over time and channels of products, with hardware ex2 on the GPU and a
// Cephes exp on the CPU), 1e-10 (double, both sides std::exp-exact paths).
//
// Every output buffer is poisoned with NaN bytes (0xFF) before each GPU call, so an element
// the kernels forget to write fails the comparison. The accumulated gradients (ddt_bias,
// dA_log, dDskip) are pre-filled with random values of the gradient's own magnitude; the
// check is (result - prefill) against the CPU gradient, which a kernel that wrote instead of
// accumulating fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/runtime.h"
#include "cuda/selective_scan.h"
#include "model/selective_scan.h"

namespace mg {
namespace {

// Device memory for a test, freed at scope end.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_) p_ = static_cast<T*>(cuda::device_alloc(n_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (p_) cuda::device_free(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    if (n_) cuda::copy_host_to_device(p_, host.data(), n_ * sizeof(T));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_) cuda::copy_device_to_host(host.data(), p_, n_ * sizeof(T));
    return host;
  }
  void poison() {  // all-ones bytes: NaN in float and double
    std::vector<unsigned char> ff(n_ * sizeof(T), 0xFF);
    if (n_) cuda::copy_host_to_device(p_, ff.data(), ff.size());
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

template <class T>
struct Problem {
  ScanShape s;
  bool gated = true;
  std::vector<T> u, dt, dt_bias, A_log, Bm, Cm, Dskip, z, dout;
};

template <class T>
Problem<T> make_problem(ScanShape s, bool gated, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  auto fill = [&](int64_t count, auto gen) {
    std::vector<T> v(count);
    for (auto& x : v) x = T(gen());
    return v;
  };
  Problem<T> p;
  p.s = s;
  p.gated = gated;
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N;
  p.u = fill(btd, [&] { return normal(rng); });
  // delta = softplus(dt + dt_bias) spans ~1e-3 .. ~2; a few values above the threshold 20.
  p.dt = fill(btd, [&] { return unif(rng) < 0.02 ? 21.0 + unif(rng) : 0.5 * normal(rng) - 1.0; });
  p.dt_bias = fill(s.D, [&] { return -3.0 + 3.5 * unif(rng); });
  p.A_log.resize(s.D * s.N);
  for (int64_t d = 0; d < s.D; ++d)
    for (int64_t n = 0; n < s.N; ++n)  // mamba's init log(1..N), perturbed
      p.A_log[d * s.N + n] = T(std::log(double(n + 1)) + 0.1 * normal(rng));
  p.Bm = fill(btn, [&] { return normal(rng); });
  p.Cm = fill(btn, [&] { return normal(rng); });
  p.Dskip = fill(s.D, [&] { return 0.5 + unif(rng); });
  if (gated) p.z = fill(btd, [&] { return normal(rng); });
  p.dout = fill(btd, [&] { return normal(rng); });
  return p;
}

// max |gpu - cpu| / max |cpu| (infinite when gpu holds a NaN or an infinity).
template <class T>
double rel_err(const std::vector<T>& gpu, const std::vector<T>& cpu) {
  EXPECT_EQ(gpu.size(), cpu.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < std::min(gpu.size(), cpu.size()); ++i) {
    if (!std::isfinite(double(gpu[i]))) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::abs(double(gpu[i]) - double(cpu[i])));
    scale = std::max(scale, std::abs(double(cpu[i])));
  }
  return err / std::max(scale, 1e-300);
}

template <class T>
double fwd_tol() { return std::is_same<T, float>::value ? 1e-4 : 1e-10; }
template <class T>
double bwd_tol() { return std::is_same<T, float>::value ? 1e-3 : 1e-10; }

std::string describe(const ScanShape& s, bool gated) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " D=" + std::to_string(s.D) +
         " N=" + std::to_string(s.N) + " chunk=" + std::to_string(s.chunk) +
         (gated ? " gated" : " ungated");
}

// Inputs of a problem on the device.
template <class T>
struct DeviceInputs {
  explicit DeviceInputs(const Problem<T>& p)
      : u(p.u), dt(p.dt), dt_bias(p.dt_bias), A_log(p.A_log), Bm(p.Bm), Cm(p.Cm), Dskip(p.Dskip),
        z(p.z), dout(p.dout) {}
  DeviceBuffer<T> u, dt, dt_bias, A_log, Bm, Cm, Dskip, z, dout;
  const T* zp(const Problem<T>& p) const { return p.gated ? z.get() : nullptr; }
};

template <class T>
void check_scan(ScanShape s, bool gated, uint32_t seed) {
  SCOPED_TRACE(describe(s, gated) + (std::is_same<T, float>::value ? " float" : " double"));
  const Problem<T> p = make_problem<T>(s, gated, seed);
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N;
  const int64_t n_states = scan_saved_state_elems(s), dn = s.D * s.N;
  const T* zc = gated ? p.z.data() : nullptr;

  // --- CPU reference -------------------------------------------------------------------
  std::vector<T> out(btd), states(n_states), final_state(s.B * dn);
  selective_scan_forward<T>(s, p.u.data(), p.dt.data(), p.dt_bias.data(), p.A_log.data(),
                            p.Bm.data(), p.Cm.data(), p.Dskip.data(), zc, out.data(),
                            states.data(), final_state.data());
  std::vector<T> du(btd), ddt(btd), dz(gated ? btd : 0), dBm(btn), dCm(btn);
  std::vector<T> ddt_bias(s.D, T(0)), dA_log(dn, T(0)), dDskip(s.D, T(0));
  selective_scan_backward<T>(s, p.u.data(), p.dt.data(), p.dt_bias.data(), p.A_log.data(),
                             p.Bm.data(), p.Cm.data(), p.Dskip.data(), zc, states.data(),
                             p.dout.data(), du.data(), ddt.data(), ddt_bias.data(), dA_log.data(),
                             dBm.data(), dCm.data(), dDskip.data(), gated ? dz.data() : nullptr);

  // --- GPU forward ---------------------------------------------------------------------
  DeviceInputs<T> in(p);
  DeviceBuffer<T> g_out(btd), g_states(n_states), g_final(s.B * dn);
  g_out.poison();
  g_states.poison();
  g_final.poison();
  cuda::selective_scan_forward<T>(s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(),
                                  in.Bm.get(), in.Cm.get(), in.Dskip.get(), in.zp(p), g_out.get(),
                                  g_states.get(), g_final.get());
  cuda::synchronize();
  const std::vector<T> out_gpu = g_out.download();
  EXPECT_LE(rel_err(out_gpu, out), fwd_tol<T>()) << "out";
  EXPECT_LE(rel_err(g_states.download(), states), fwd_tol<T>()) << "chunk_states";
  EXPECT_LE(rel_err(g_final.download(), final_state), fwd_tol<T>()) << "final_state";

  // Without the saved states: the same `out`, bit for bit.
  g_out.poison();
  cuda::selective_scan_forward<T>(s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(),
                                  in.Bm.get(), in.Cm.get(), in.Dskip.get(), in.zp(p), g_out.get(),
                                  nullptr, nullptr);
  cuda::synchronize();
  const std::vector<T> out_gpu2 = g_out.download();
  EXPECT_EQ(0, std::memcmp(out_gpu.data(), out_gpu2.data(), out_gpu.size() * sizeof(T)))
      << "out differs when chunk_states/final_state are null";

  // --- GPU backward, from the CPU's saved states ------------------------------------------
  // Pre-fill of the accumulated grads: random, of each gradient's own magnitude.
  std::mt19937 rng(seed + 1000);
  std::uniform_real_distribution<double> unif(1.0, 2.0);
  auto prefill_like = [&](const std::vector<T>& g) {
    double m = 0;
    for (T x : g) m = std::max(m, std::abs(double(x)));
    if (m == 0) m = 1;
    std::vector<T> v(g.size());
    for (auto& x : v) x = T((unif(rng) - 1.5 > 0 ? 1 : -1) * unif(rng) * m);
    return v;
  };
  const std::vector<T> pre_bias = prefill_like(ddt_bias), pre_A = prefill_like(dA_log),
                       pre_D = prefill_like(dDskip);
  DeviceBuffer<T> g_cpu_states(states);
  DeviceBuffer<T> g_du(btd), g_ddt(btd), g_dz(gated ? btd : 0), g_dBm(btn), g_dCm(btn);
  DeviceBuffer<T> g_dbias(pre_bias), g_dA(pre_A), g_dD(pre_D);
  for (auto* b : {&g_du, &g_ddt, &g_dz, &g_dBm, &g_dCm}) b->poison();
  cuda::selective_scan_backward<T>(
      s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(), in.Bm.get(), in.Cm.get(),
      in.Dskip.get(), in.zp(p), g_cpu_states.get(), in.dout.get(), g_du.get(), g_ddt.get(),
      g_dbias.get(), g_dA.get(), g_dBm.get(), g_dCm.get(), g_dD.get(), gated ? g_dz.get() : nullptr);
  cuda::synchronize();
  auto minus = [](std::vector<T> a, const std::vector<T>& b) {
    for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
    return a;
  };
  EXPECT_LE(rel_err(g_du.download(), du), bwd_tol<T>()) << "du";
  EXPECT_LE(rel_err(g_ddt.download(), ddt), bwd_tol<T>()) << "ddt";
  EXPECT_LE(rel_err(g_dBm.download(), dBm), bwd_tol<T>()) << "dBm";
  EXPECT_LE(rel_err(g_dCm.download(), dCm), bwd_tol<T>()) << "dCm";
  if (gated) {
    EXPECT_LE(rel_err(g_dz.download(), dz), bwd_tol<T>()) << "dz";
  }
  EXPECT_LE(rel_err(minus(g_dbias.download(), pre_bias), ddt_bias), bwd_tol<T>()) << "ddt_bias (+=)";
  EXPECT_LE(rel_err(minus(g_dA.download(), pre_A), dA_log), bwd_tol<T>()) << "dA_log (+=)";
  EXPECT_LE(rel_err(minus(g_dD.download(), pre_D), dDskip), bwd_tol<T>()) << "dDskip (+=)";

  // --- GPU backward from the GPU's own saved states: the same results -------------------
  g_dbias.upload(pre_bias);
  g_dA.upload(pre_A);
  g_dD.upload(pre_D);
  for (auto* b : {&g_du, &g_ddt, &g_dz, &g_dBm, &g_dCm}) b->poison();
  cuda::selective_scan_backward<T>(
      s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(), in.Bm.get(), in.Cm.get(),
      in.Dskip.get(), in.zp(p), g_states.get(), in.dout.get(), g_du.get(), g_ddt.get(),
      g_dbias.get(), g_dA.get(), g_dBm.get(), g_dCm.get(), g_dD.get(), gated ? g_dz.get() : nullptr);
  cuda::synchronize();
  EXPECT_LE(rel_err(g_du.download(), du), bwd_tol<T>()) << "du (GPU states)";
  EXPECT_LE(rel_err(g_dBm.download(), dBm), bwd_tol<T>()) << "dBm (GPU states)";
  EXPECT_LE(rel_err(minus(g_dA.download(), pre_A), dA_log), bwd_tol<T>()) << "dA_log (GPU states)";
}

struct Case {
  ScanShape s;
  bool gated;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {{1, 1, 1, 1, 64}, true},       // the smallest
      {{1, 1, 1, 1, 64}, false},
      {{2, 67, 37, 5, 16}, true},     // odd everything, several chunks, last one partial
      {{2, 67, 37, 5, 16}, false},
      {{3, 130, 130, 16, 64}, true},  // the N = 16 fast path, a partial channel group
      {{3, 130, 130, 16, 64}, false},
      {{2, 50, 9, 64, 7}, true},      // N = 64, chunk not a multiple of 4
      {{1, 41, 19, 33, 5}, true},     // N = 33 (padded states)
      {{2, 19, 11, 8, 1}, true},      // chunk 1
      {{2, 300, 40, 16, 128}, true},  // chunk > 64: the backward re-chunks
      {{1, 70, 3, 3, 70}, false},     // chunk = T > 64: one chunk, re-chunked
      {{2, 33, 20, 16, 100}, true},   // a single chunk longer than T
  };
  return c;
}

TEST(CudaSelectiveScan, MatchesCpuFloat) {
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason();
  uint32_t seed = 1;
  for (const Case& c : cases()) check_scan<float>(c.s, c.gated, seed++);
}

TEST(CudaSelectiveScan, MatchesCpuDouble) {
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason();
  uint32_t seed = 100;
  for (const Case& c : cases()) check_scan<double>(c.s, c.gated, seed++);
}

TEST(CudaSelectiveScan, MatchesCpuFloatLargeN) {
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason();
  check_scan<float>({2, 45, 6, 128, 16}, true, 7);  // float supports N up to 128
  check_scan<float>({2, 45, 21, 32, 16}, false, 8);
}

// Same inputs twice: bit-identical outputs (no atomics, fixed-order reductions).
template <class T>
void check_deterministic(ScanShape s) {
  const Problem<T> p = make_problem<T>(s, true, 42);
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N;
  DeviceInputs<T> in(p);
  DeviceBuffer<T> states(scan_saved_state_elems(s)), out(btd), fin(s.B * s.D * s.N);
  std::vector<std::vector<T>> runs[2];
  for (int run = 0; run < 2; ++run) {
    out.poison();
    states.poison();
    fin.poison();
    cuda::selective_scan_forward<T>(s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(),
                                    in.Bm.get(), in.Cm.get(), in.Dskip.get(), in.z.get(), out.get(),
                                    states.get(), fin.get());
    DeviceBuffer<T> du(btd), ddt(btd), dz(btd), dBm(btn), dCm(btn);
    DeviceBuffer<T> dbias(std::vector<T>(s.D, T(0.25))), dA(std::vector<T>(s.D * s.N, T(-0.5))),
        dD(std::vector<T>(s.D, T(1)));
    for (auto* b : {&du, &ddt, &dz, &dBm, &dCm}) b->poison();
    cuda::selective_scan_backward<T>(s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(),
                                     in.Bm.get(), in.Cm.get(), in.Dskip.get(), in.z.get(),
                                     states.get(), in.dout.get(), du.get(), ddt.get(), dbias.get(),
                                     dA.get(), dBm.get(), dCm.get(), dD.get(), dz.get());
    cuda::synchronize();
    for (const DeviceBuffer<T>* b : {&out, &states, &fin, &du, &ddt, &dz, &dBm, &dCm, &dbias, &dA, &dD})
      runs[run].push_back(b->download());
  }
  const char* names[] = {"out", "chunk_states", "final_state", "du", "ddt", "dz",
                         "dBm", "dCm", "ddt_bias", "dA_log", "dDskip"};
  for (size_t i = 0; i < runs[0].size(); ++i) {
    ASSERT_EQ(runs[0][i].size(), runs[1][i].size());
    for (T x : runs[0][i]) ASSERT_TRUE(std::isfinite(double(x))) << names[i] << " not finite";
    EXPECT_EQ(0, std::memcmp(runs[0][i].data(), runs[1][i].data(), runs[0][i].size() * sizeof(T)))
        << names[i] << " differs between two identical runs";
  }
}

TEST(CudaSelectiveScan, Deterministic) {
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason();
  check_deterministic<float>({2, 200, 100, 16, 64});
  check_deterministic<float>({3, 97, 70, 5, 16});
  check_deterministic<double>({2, 77, 45, 16, 64});
}

// A shape of the real model (B=2 rows of the benchmark's): float within tolerance.
TEST(CudaSelectiveScan, MatchesCpuModelShape) {
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason();
  check_scan<float>({2, 512, 1536, 16, 64}, true, 9);
}

// Throughput at the benchmark shape (B=8, T=2048, D=1536, N=16, float, gated), against the
// card's device-to-device copy bandwidth, counted over the bytes that must move (each input
// read once, each output written once). Not a pass/fail test: run it with
//   test_cuda --gtest_also_run_disabled_tests --gtest_filter=*Throughput
TEST(CudaSelectiveScan, DISABLED_Throughput) {
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason();
  using T = float;
  const ScanShape s{8, 2048, 1536, 16, 64};
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N, dn = s.D * s.N;
  const int64_t n_states = scan_saved_state_elems(s);
  const Problem<T> p = make_problem<T>(s, true, 3);
  DeviceInputs<T> in(p);
  DeviceBuffer<T> out(btd), states(n_states), du(btd), ddt(btd), dz(btd), dBm(btn), dCm(btn);
  DeviceBuffer<T> dbias{std::vector<T>(s.D)}, dA{std::vector<T>(dn)}, dD{std::vector<T>(s.D)};
  auto fwd = [&] {
    cuda::selective_scan_forward<T>(s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(),
                                    in.Bm.get(), in.Cm.get(), in.Dskip.get(), in.z.get(),
                                    out.get(), states.get(), nullptr);
  };
  auto bwd = [&] {
    cuda::selective_scan_backward<T>(s, in.u.get(), in.dt.get(), in.dt_bias.get(), in.A_log.get(),
                                     in.Bm.get(), in.Cm.get(), in.Dskip.get(), in.z.get(),
                                     states.get(), in.dout.get(), du.get(), ddt.get(), dbias.get(),
                                     dA.get(), dBm.get(), dCm.get(), dD.get(), dz.get());
  };
  auto time_ms = [&](auto&& f, int reps) {
    f();
    cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    cuda::synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
  };
  const double sz = sizeof(T);
  const double params = (2.0 * s.D + dn) * sz;
  const double fwd_bytes = (4.0 * btd + 2.0 * btn + n_states) * sz + params;
  const double bwd_bytes = (7.0 * btd + 4.0 * btn + n_states) * sz + 2 * params;
  const double t_fwd = time_ms(fwd, 20), t_bwd = time_ms(bwd, 20);
  // Copy bandwidth: 1 GiB device to device (read + write counted).
  const size_t copy_bytes = size_t(1) << 30;
  DeviceBuffer<unsigned char> a(copy_bytes), b(copy_bytes);
  const double t_copy = time_ms([&] { cuda::copy_device_to_device(b.get(), a.get(), copy_bytes); }, 10);
  const double copy_bw = 2.0 * copy_bytes / (t_copy * 1e-3);
  const double bw = (fwd_bytes + bwd_bytes) / ((t_fwd + t_bwd) * 1e-3);
  std::printf("[scan throughput] %s\n", cuda::device_description().c_str());
  std::printf("[scan throughput] forward %.3f ms (%.0f GB/s), backward %.3f ms (%.0f GB/s), "
              "fwd+bwd %.0f GB/s = %.0f%% of copy bandwidth %.0f GB/s\n",
              t_fwd, fwd_bytes / (t_fwd * 1e6), t_bwd, bwd_bytes / (t_bwd * 1e6), bw / 1e9,
              100.0 * bw / copy_bw, copy_bw / 1e9);
}

}  // namespace
}  // namespace mg
