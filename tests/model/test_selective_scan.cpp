// Selective scan (model/selective_scan.h) against independent references written here:
// a plain sequential float64 loop that stores every state, its textbook reverse pass, and
// central finite differences in float64.
#include "model/selective_scan.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "autograd/error.h"
#include "model/selective_scan_lanes.h"

namespace mg {
namespace {

using Vec = std::vector<double>;

// One problem instance, values stored in double but exactly representable in float, so the
// float kernel and the float64 reference see the same inputs.
struct Problem {
  ScanShape s;
  bool gated = true;
  Vec u, dt, dt_bias, A_log, Bm, Cm, Dskip, z, dout;  // shapes as in selective_scan.h
};

Problem make_problem(ScanShape s, bool gated, uint32_t seed, double dt_spread = 0.5) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unif(0.f, 1.f);
  auto fill = [&](int64_t count, auto gen) {
    Vec v(count);
    for (auto& x : v) x = double(float(gen()));
    return v;
  };
  Problem p;
  p.s = s;
  p.gated = gated;
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N;
  p.u = fill(btd, [&] { return normal(rng); });
  p.dt = fill(btd, [&] { return dt_spread * normal(rng); });
  // Biases around mamba's init range (softplus^-1 of 1e-3..0.1) up to delta ~ 1.
  p.dt_bias = fill(s.D, [&] { return -4.f + 4.5f * unif(rng); });
  p.A_log.resize(s.D * s.N);
  for (int64_t d = 0; d < s.D; ++d)
    for (int64_t n = 0; n < s.N; ++n)  // mamba's init log(1..N), perturbed
      p.A_log[d * s.N + n] = double(float(std::log(double(n + 1)) + 0.1 * normal(rng)));
  p.Bm = fill(btn, [&] { return normal(rng); });
  p.Cm = fill(btn, [&] { return normal(rng); });
  p.Dskip = fill(s.D, [&] { return 0.5f + unif(rng); });
  if (gated) p.z = fill(btd, [&] { return normal(rng); });
  p.dout = fill(btd, [&] { return normal(rng); });
  return p;
}

// ---------------------------------------------------------------------------------------
// Reference: sequential float64 loop over (b, d, t, n), every state stored (B,T,D,N).
// ---------------------------------------------------------------------------------------
double ref_softplus(double x) { return x <= 20.0 ? std::log1p(std::exp(x)) : x; }
double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct RefForward {
  Vec out;     // (B,T,D)
  Vec states;  // (B,T,D,N): h_t after step t
  Vec y;       // (B,T,D): before gating
};

RefForward ref_forward(const Problem& p) {
  const auto [B, T, D, N, chunk] = p.s;
  RefForward r{Vec(B * T * D), Vec(B * T * D * N), Vec(B * T * D)};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      Vec h(N, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * D + d;
        const double delta = ref_softplus(p.dt[i] + p.dt_bias[d]);
        double y = p.Dskip[d] * p.u[i];
        for (int64_t n = 0; n < N; ++n) {
          const double A = -std::exp(p.A_log[d * N + n]);
          h[n] = std::exp(delta * A) * h[n] + delta * p.Bm[(b * T + t) * N + n] * p.u[i];
          r.states[i * N + n] = h[n];
          y += h[n] * p.Cm[(b * T + t) * N + n];
        }
        r.y[i] = y;
        r.out[i] = p.gated ? y * p.z[i] * ref_sigmoid(p.z[i]) : y;
      }
    }
  return r;
}

struct Grads {
  Vec du, ddt, ddt_bias, dA_log, dBm, dCm, dDskip, dz;
};

Grads zero_grads(const ScanShape& s) {
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N;
  return Grads{Vec(btd), Vec(btd), Vec(s.D), Vec(s.D * s.N), Vec(btn), Vec(btn), Vec(s.D), Vec(btd)};
}

// Textbook reverse pass over the stored states, one channel at a time.
Grads ref_backward(const Problem& p, const RefForward& f) {
  const auto [B, T, D, N, chunk] = p.s;
  Grads g = zero_grads(p.s);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      Vec dh(N, 0.0);  // dL/dh_t, flowing back from t+1
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t i = (b * T + t) * D + d;
        const double x = p.dt[i] + p.dt_bias[d], delta = ref_softplus(x);
        double dy = p.dout[i];
        if (p.gated) {
          const double sg = ref_sigmoid(p.z[i]);
          dy = p.dout[i] * p.z[i] * sg;
          g.dz[i] = p.dout[i] * f.y[i] * (sg + p.z[i] * sg * (1 - sg));
        }
        g.dDskip[d] += dy * p.u[i];
        double du = dy * p.Dskip[d], ddelta = 0;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t bn = (b * T + t) * N + n;
          const double A = -std::exp(p.A_log[d * N + n]);
          const double decay = std::exp(delta * A);
          const double h_prev = t > 0 ? f.states[((b * T + t - 1) * D + d) * N + n] : 0.0;
          g.dCm[bn] += dy * f.states[i * N + n];
          dh[n] += dy * p.Cm[bn];
          // h = decay*h_prev + delta*B*u
          ddelta += dh[n] * (h_prev * decay * A + p.Bm[bn] * p.u[i]);
          g.dA_log[d * N + n] += dh[n] * h_prev * decay * delta * A;
          g.dBm[bn] += dh[n] * delta * p.u[i];
          du += dh[n] * delta * p.Bm[bn];
          dh[n] *= decay;
        }
        g.du[i] = du;
        g.ddt[i] = ddelta * (x <= 20.0 ? ref_sigmoid(x) : 1.0);
        g.ddt_bias[d] += g.ddt[i];
      }
    }
  return g;
}

// ---------------------------------------------------------------------------------------
// Running the kernel in T = float or double.
// ---------------------------------------------------------------------------------------
template <class T>
std::vector<T> cast(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <class T>
Vec widen(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

template <class T>
struct KernelRun {
  std::vector<T> out, chunk_states, final_state;
  Grads g;
};

template <class T>
KernelRun<T> run_kernel(const Problem& p, bool backward = true) {
  const ScanShape& s = p.s;
  auto u = cast<T>(p.u), dt = cast<T>(p.dt), bias = cast<T>(p.dt_bias), A_log = cast<T>(p.A_log);
  auto Bm = cast<T>(p.Bm), Cm = cast<T>(p.Cm), Dskip = cast<T>(p.Dskip), z = cast<T>(p.z);
  auto dout = cast<T>(p.dout);
  const T* zp = p.gated ? z.data() : nullptr;
  KernelRun<T> r;
  r.out.assign(s.B * s.T * s.D, T(0));
  r.chunk_states.assign(scan_saved_state_elems(s), T(0));
  r.final_state.assign(s.B * s.D * s.N, T(0));
  selective_scan_forward<T>(s, u.data(), dt.data(), bias.data(), A_log.data(), Bm.data(),
                            Cm.data(), Dskip.data(), zp, r.out.data(), r.chunk_states.data(),
                            r.final_state.data());
  if (!backward) return r;
  const int64_t btd = s.B * s.T * s.D, btn = s.B * s.T * s.N;
  // Activation grads start as NaN: the kernel must overwrite every element.
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> du(btd, nan), ddt(btd, nan), dBm(btn, nan), dCm(btn, nan), dz(btd, nan);
  std::vector<T> ddt_bias(s.D, T(0)), dA_log(s.D * s.N, T(0)), dDskip(s.D, T(0));
  selective_scan_backward<T>(s, u.data(), dt.data(), bias.data(), A_log.data(), Bm.data(),
                             Cm.data(), Dskip.data(), zp, r.chunk_states.data(), dout.data(),
                             du.data(), ddt.data(), ddt_bias.data(), dA_log.data(), dBm.data(),
                             dCm.data(), dDskip.data(), p.gated ? dz.data() : nullptr);
  r.g = Grads{widen(du), widen(ddt), widen(ddt_bias), widen(dA_log), widen(dBm),
              widen(dCm), widen(dDskip), p.gated ? widen(dz) : Vec(btd)};
  return r;
}

// max |got - want| / max(1, max |want|), NaN counted as infinite.
double scaled_max_diff(const Vec& got, const Vec& want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::abs(got[i] - want[i]);
    diff = std::isnan(e) ? INFINITY : std::max(diff, e);
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / scale;
}

#define EXPECT_CLOSE(got, want, tol, what)                                           \
  do {                                                                               \
    const double md_ = scaled_max_diff(got, want);                                   \
    EXPECT_LE(md_, tol) << what << ": scaled max diff " << md_ << " (tol " << tol << ")"; \
  } while (0)

// Chunk-boundary states from the reference's full state list: (B, n_chunks, D, N).
Vec ref_chunk_states(const Problem& p, const RefForward& f) {
  const auto [B, T, D, N, chunk] = p.s;
  const int64_t nc = scan_num_chunks(p.s);
  Vec cs(B * nc * D * N, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 1; c < nc; ++c)
      for (int64_t dn = 0; dn < D * N; ++dn)
        cs[(b * nc + c) * D * N + dn] = f.states[(b * T + c * chunk - 1) * D * N + dn];
  return cs;
}

Vec ref_final_state(const Problem& p, const RefForward& f) {
  const auto [B, T, D, N, chunk] = p.s;
  Vec fs(B * D * N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t dn = 0; dn < D * N; ++dn) fs[b * D * N + dn] = f.states[(b * T + T - 1) * D * N + dn];
  return fs;
}

template <class T>
void check_against_reference(const Problem& p, double tol) {
  const RefForward f = ref_forward(p);
  const Grads want = ref_backward(p, f);
  const KernelRun<T> k = run_kernel<T>(p);
  EXPECT_CLOSE(widen(k.out), f.out, tol, "out");
  EXPECT_CLOSE(widen(k.chunk_states), ref_chunk_states(p, f), tol, "chunk_states");
  EXPECT_CLOSE(widen(k.final_state), ref_final_state(p, f), tol, "final_state");
  EXPECT_CLOSE(k.g.du, want.du, tol, "du");
  EXPECT_CLOSE(k.g.ddt, want.ddt, tol, "ddt");
  EXPECT_CLOSE(k.g.ddt_bias, want.ddt_bias, tol, "ddt_bias");
  EXPECT_CLOSE(k.g.dA_log, want.dA_log, tol, "dA_log");
  EXPECT_CLOSE(k.g.dBm, want.dBm, tol, "dBm");
  EXPECT_CLOSE(k.g.dCm, want.dCm, tol, "dCm");
  EXPECT_CLOSE(k.g.dDskip, want.dDskip, tol, "dDskip");
  if (p.gated) EXPECT_CLOSE(k.g.dz, want.dz, tol, "dz");
}

struct Case {
  ScanShape s;
  bool gated;
};

const Case kCases[] = {
    {{1, 1, 5, 3, 4}, true},       // T = 1, D < 8
    {{2, 37, 19, 16, 8}, true},    // T not a multiple of chunk, D not a multiple of 8, B > 1
    {{1, 10, 8, 4, 64}, true},     // T < chunk
    {{3, 64, 24, 16, 16}, false},  // no gate, T a multiple of chunk
    {{1, 130, 16, 5, 64}, true},   // default chunk, odd N
    {{2, 50, 300, 7, 13}, false},  // more blocks than backward groups
};

TEST(SelectiveScan, FloatMatchesFloat64Reference) {
  uint32_t seed = 1;
  for (const Case& c : kCases) {
    SCOPED_TRACE("B=" + std::to_string(c.s.B) + " T=" + std::to_string(c.s.T) +
                 " D=" + std::to_string(c.s.D) + " N=" + std::to_string(c.s.N) +
                 " chunk=" + std::to_string(c.s.chunk) + (c.gated ? " gated" : " no z"));
    check_against_reference<float>(make_problem(c.s, c.gated, seed++), 5e-6);
  }
}

TEST(SelectiveScan, FloatWideDeltaRange) {
  // dt + bias from about -30 (softplus ~ 1e-13, the log1p path) past the threshold 20.
  const Problem p = make_problem({2, 40, 13, 8, 16}, true, 99, 12.0);
  check_against_reference<float>(p, 5e-6);
}

TEST(SelectiveScan, DoubleMatchesFloat64Reference) {
  uint32_t seed = 11;
  for (const Case& c : kCases) {
    SCOPED_TRACE("D=" + std::to_string(c.s.D) + " T=" + std::to_string(c.s.T));
    check_against_reference<double>(make_problem(c.s, c.gated, seed++), 1e-12);
  }
}

// loss = sum(out * dout) in float64 through the double kernel's forward.
double loss_of(const Problem& p) {
  const KernelRun<double> r = run_kernel<double>(p, /*backward=*/false);
  double l = 0;
  for (size_t i = 0; i < r.out.size(); ++i) l += r.out[i] * p.dout[i];
  return l;
}

// Central differences for every element of one input, compared with the analytic grad.
void check_finite_differences(Problem p, Vec Problem::*field, const Vec& analytic,
                              const char* name) {
  Vec& x = p.*field;
  Vec numeric(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i], h = 1e-5 * std::max(1.0, std::abs(x0));
    x[i] = x0 + h;
    const double lp = loss_of(p);
    x[i] = x0 - h;
    const double lm = loss_of(p);
    x[i] = x0;
    numeric[i] = (lp - lm) / (2 * h);
  }
  double diff = 0, scale = 1e-3;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(numeric[i] - analytic[i]));
    scale = std::max(scale, std::abs(numeric[i]));
  }
  EXPECT_LE(diff / scale, 1e-8) << name << ": max |fd - analytic| = " << diff
                                << " relative to max |grad| = " << scale;
}

TEST(SelectiveScan, DoubleGradientsMatchFiniteDifferences) {
  for (bool gated : {true, false}) {
    SCOPED_TRACE(gated ? "gated" : "no z");
    const Problem p = make_problem({2, 7, 3, 4, 3}, gated, gated ? 5 : 6);
    const Grads g = run_kernel<double>(p).g;
    check_finite_differences(p, &Problem::u, g.du, "du");
    check_finite_differences(p, &Problem::dt, g.ddt, "ddt");
    check_finite_differences(p, &Problem::dt_bias, g.ddt_bias, "ddt_bias");
    check_finite_differences(p, &Problem::A_log, g.dA_log, "dA_log");
    check_finite_differences(p, &Problem::Bm, g.dBm, "dBm");
    check_finite_differences(p, &Problem::Cm, g.dCm, "dCm");
    check_finite_differences(p, &Problem::Dskip, g.dDskip, "dDskip");
    if (gated) check_finite_differences(p, &Problem::z, g.dz, "dz");
  }
}

// step() from h = 0, T times, must give the forward's outputs and final state. The AVX2
// float path runs the same instructions in both, so there it must match bit for bit.
template <class T>
void check_step_matches_forward(const Problem& p) {
  const double tol = std::is_same_v<T, float> && MG_SCAN_AVX2 ? 0.0 : 1e-12;
  const auto [B, Tn, D, N, chunk] = p.s;
  const KernelRun<T> fwd = run_kernel<T>(p, /*backward=*/false);
  auto bias = cast<T>(p.dt_bias), A_log = cast<T>(p.A_log), Dskip = cast<T>(p.Dskip);
  std::vector<T> state(B * D * N, T(0)), out(B * D);
  std::vector<T> u(B * D), dt(B * D), z(B * D), Bm(B * N), Cm(B * N);
  double diff = 0, scale = 1;
  for (int64_t t = 0; t < Tn; ++t) {
    for (int64_t b = 0; b < B; ++b) {  // gather step t of every batch row: (B,D), (B,N)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = (b * Tn + t) * D + d;
        u[b * D + d] = T(p.u[i]);
        dt[b * D + d] = T(p.dt[i]);
        if (p.gated) z[b * D + d] = T(p.z[i]);
      }
      for (int64_t n = 0; n < N; ++n) {
        Bm[b * N + n] = T(p.Bm[(b * Tn + t) * N + n]);
        Cm[b * N + n] = T(p.Cm[(b * Tn + t) * N + n]);
      }
    }
    selective_scan_step<T>(B, D, N, state.data(), u.data(), dt.data(), bias.data(), A_log.data(),
                           Bm.data(), Cm.data(), Dskip.data(), p.gated ? z.data() : nullptr,
                           out.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) {
        const double want = fwd.out[(b * Tn + t) * D + d];
        diff = std::max(diff, std::abs(double(out[b * D + d]) - want));
        scale = std::max(scale, std::abs(want));
      }
  }
  EXPECT_LE(diff / scale, tol) << "step vs forward outputs: scaled max diff " << diff / scale;
  EXPECT_CLOSE(widen(state), widen(fwd.final_state), tol, "step state vs final_state");
}

TEST(SelectiveScan, StepMatchesForward) {
  for (bool gated : {true, false}) {
    const Problem p = make_problem({2, 21, 19, 16, 8}, gated, 21);
    check_step_matches_forward<float>(p);
    check_step_matches_forward<double>(p);
  }
}

TEST(SelectiveScan, ParamGradsAccumulateActivationGradsOverwrite) {
  const Problem p = make_problem({2, 9, 11, 4, 4}, true, 31);
  const KernelRun<double> r = run_kernel<double>(p);  // params start at 0, activations NaN
  const ScanShape& s = p.s;
  auto u = p.u, dt = p.dt, bias = p.dt_bias, A_log = p.A_log, Bm = p.Bm, Cm = p.Cm;
  auto Dskip = p.Dskip, z = p.z, dout = p.dout;
  Grads g = zero_grads(s);
  for (auto* v : {&g.du, &g.ddt, &g.dBm, &g.dCm, &g.dz}) std::fill(v->begin(), v->end(), 7.0);
  for (auto* v : {&g.ddt_bias, &g.dA_log, &g.dDskip}) std::fill(v->begin(), v->end(), 0.25);
  selective_scan_backward<double>(s, u.data(), dt.data(), bias.data(), A_log.data(), Bm.data(),
                                  Cm.data(), Dskip.data(), z.data(), r.chunk_states.data(),
                                  dout.data(), g.du.data(), g.ddt.data(), g.ddt_bias.data(),
                                  g.dA_log.data(), g.dBm.data(), g.dCm.data(), g.dDskip.data(),
                                  g.dz.data());
  EXPECT_CLOSE(g.du, r.g.du, 1e-14, "du written");
  EXPECT_CLOSE(g.dBm, r.g.dBm, 1e-14, "dBm written");
  EXPECT_CLOSE(g.dz, r.g.dz, 1e-14, "dz written");
  for (auto [got, want] : {std::pair{&g.ddt_bias, &r.g.ddt_bias}, {&g.dA_log, &r.g.dA_log},
                           {&g.dDskip, &r.g.dDskip}}) {
    Vec shifted = *want;
    for (auto& x : shifted) x += 0.25;
    EXPECT_CLOSE(*got, shifted, 1e-14, "param grad accumulated");
  }
}

TEST(SelectiveScan, DzUntouchedWithoutGate) {
  const Problem p = make_problem({1, 20, 12, 4, 8}, /*gated=*/false, 33);
  const KernelRun<double> r = run_kernel<double>(p);
  auto u = p.u, dt = p.dt, bias = p.dt_bias, A_log = p.A_log, Bm = p.Bm, Cm = p.Cm;
  auto Dskip = p.Dskip, dout = p.dout;
  Grads g = zero_grads(p.s);
  std::fill(g.dz.begin(), g.dz.end(), 7.0);
  selective_scan_backward<double>(p.s, u.data(), dt.data(), bias.data(), A_log.data(), Bm.data(),
                                  Cm.data(), Dskip.data(), nullptr, r.chunk_states.data(),
                                  dout.data(), g.du.data(), g.ddt.data(), g.ddt_bias.data(),
                                  g.dA_log.data(), g.dBm.data(), g.dCm.data(), g.dDskip.data(),
                                  g.dz.data());
  EXPECT_TRUE(std::all_of(g.dz.begin(), g.dz.end(), [](double x) { return x == 7.0; }))
      << "dz was written although z is null";
  EXPECT_CLOSE(g.du, r.g.du, 1e-14, "du");
}

TEST(SelectiveScan, SameBitsForAnyThreadCount) {
  const Problem p = make_problem({2, 45, 200, 16, 16}, true, 41);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const KernelRun<float> one = run_kernel<float>(p);
  omp_set_num_threads(3);
  const KernelRun<float> three = run_kernel<float>(p);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.out, three.out);
  for (auto [a, b] : {std::pair{&one.g.du, &three.g.du}, {&one.g.ddt, &three.g.ddt},
                      {&one.g.dBm, &three.g.dBm}, {&one.g.dCm, &three.g.dCm},
                      {&one.g.dA_log, &three.g.dA_log}, {&one.g.ddt_bias, &three.g.ddt_bias},
                      {&one.g.dDskip, &three.g.dDskip}, {&one.g.dz, &three.g.dz}})
    EXPECT_TRUE(*a == *b) << "a gradient changed with the thread count";
}

TEST(SelectiveScan, MemoryHelpers) {
  const ScanShape s{2, 130, 24, 16, 64};
  EXPECT_EQ(scan_num_chunks(s), 3);
  EXPECT_EQ(scan_saved_state_elems(s), 2 * 3 * 24 * 16);
  EXPECT_EQ(scan_full_state_elems(s), 2 * 130 * 24 * 16);
}

TEST(SelectiveScan, RejectsBadArguments) {
  std::vector<float> buf(64, 0.f);
  float* p = buf.data();
  EXPECT_THROW(selective_scan_forward<float>({1, 0, 2, 2}, p, p, p, p, p, p, p, nullptr, p, p,
                                             nullptr),
               Error);
  EXPECT_THROW(selective_scan_forward<float>({1, 2, 2, 2, 0}, p, p, p, p, p, p, p, nullptr, p,
                                             p, nullptr),
               Error);
  EXPECT_THROW(selective_scan_forward<float>({1, 2, 2, 2}, nullptr, p, p, p, p, p, p, nullptr,
                                             p, p, nullptr),
               Error);
  EXPECT_THROW(selective_scan_backward<float>({1, 2, 2, 2}, p, p, p, p, p, p, p, p, p, p, p, p,
                                              p, p, p, p, p, nullptr),
               Error);  // z given without dz
}

#if MG_SCAN_AVX2
// The vectorized exp/log1p against libm in double, over the ranges the scan uses.
TEST(SelectiveScan, FastExpAndSoftplusAccuracy) {
  using L = scan_detail::Avx2Lanes;
  double exp_err = 0, decay_err = 0, sp_err = 0;
  float xs[8], got[8];
  for (int i = 0; i < 200000; i += 8) {
    for (int l = 0; l < 8; ++l) xs[l] = -87.0f + 175.0f * float(i + l) / 200000.0f;
    L::to_array(L::exp(L::from_array(xs)), got);
    for (int l = 0; l < 8; ++l)
      exp_err = std::max(exp_err, std::abs(got[l] / std::exp(double(xs[l])) - 1));
    // The decay exp(x) = decay_exp(x * kDecayScale) for x <= 0, to where it is ~1e-38.
    for (int l = 0; l < 8; ++l) xs[l] = -86.0f * float(i + l) / 200000.0f;
    float scaled[8];
    for (int l = 0; l < 8; ++l) scaled[l] = float(double(xs[l]) * L::kDecayScale);
    L::to_array(L::decay_exp(L::from_array(scaled)), got);
    for (int l = 0; l < 8; ++l)
      decay_err = std::max(decay_err, std::abs(got[l] / std::exp(double(xs[l])) - 1));
    for (int l = 0; l < 8; ++l) xs[l] = -40.0f + 80.0f * float(i + l) / 200000.0f;
    L::to_array(L::softplus(L::from_array(xs)), got);
    for (int l = 0; l < 8; ++l)
      sp_err = std::max(sp_err, std::abs(got[l] / ref_softplus(double(xs[l])) - 1));
  }
  EXPECT_LE(exp_err, 2e-7) << "max relative error of the vector exp";
  // Rounding x*log2(e) to float costs up to |x| * 2^-24 relative: ~5e-6 at x = -86.
  EXPECT_LE(decay_err, 8e-6) << "max relative error of the decay exp";
  EXPECT_LE(sp_err, 4e-7) << "max relative error of the vector softplus";
}
#endif

}  // namespace
}  // namespace mg
