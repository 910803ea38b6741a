// The optimizer on the GPU (cuda/optimizer_kernels.h, trainer/optimizer.cpp) against the CPU
// kernels (trainer/adamw.h, trainer/sgd.h): from the same state, every step must give the same
// bits (params, fp32 moments, fp16 codes and block scales); the gradient norm agrees to 1e-12
// relative; an Optimizer on the GPU checkpoints the same datasets as one on the CPU, and each
// device's checkpoint resumes bit-exactly on the other.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "checkpoints/h5_file.h"
#include "cuda/optimizer_kernels.h"
#include "cuda/runtime.h"
#include "experiments/config.h"
#include "trainer/adamw.h"
#include "trainer/optimizer.h"
#include "trainer/sgd.h"

namespace mg {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason()

// ---- host <-> device helpers -------------------------------------------------------------

// A device array that frees itself (tests only).
template <class T>
struct DeviceArray {
  Tensor t;
  explicit DeviceArray(const std::vector<T>& host) {
    Tensor h = Tensor::empty({static_cast<int64_t>(host.size())}, dtype_of<T>());
    if (!host.empty()) std::memcpy(h.raw(), host.data(), host.size() * sizeof(T));
    t = h.to(Device::CUDA);
  }
  T* ptr() { return t.numel() ? t.dev_data<T>() : nullptr; }
  std::vector<T> host() const {
    std::vector<T> out(static_cast<size_t>(t.numel()));
    if (!out.empty()) cuda::copy_device_to_host(out.data(), t.dev_raw(), out.size() * sizeof(T));
    return out;
  }
};

bool is_nan_bits(float x) { return std::isnan(x); }
bool is_nan_bits(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
uint32_t bits_of(uint16_t h) { return h; }

// Bitwise equality, element by element; with nan_equal, any two NaNs count as equal (their
// payloads may differ between x86 and the GPU). Reports the first mismatches.
template <class T>
void expect_same_bits(const std::vector<T>& cpu, const std::vector<T>& gpu, const std::string& what,
                      bool nan_equal = false) {
  ASSERT_EQ(cpu.size(), gpu.size()) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (bits_of(cpu[i]) == bits_of(gpu[i])) continue;
    if (nan_equal && is_nan_bits(cpu[i]) && is_nan_bits(gpu[i])) continue;
    if (++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: cpu " << double(cpu[i]) << " (0x" << std::hex << bits_of(cpu[i])
                    << ") gpu " << std::dec << double(gpu[i]) << " (0x" << std::hex << bits_of(gpu[i]) << ")"
                    << std::dec;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << cpu.size() << " elements differ";
}

// Gradients spanning 1e-6..10 in magnitude, both signs; every third 128-block all zero (the
// state of such a block stays zero), and the second block turns all zero from step 3 on (its
// moments decay and are re-quantised under shrinking scales).
std::vector<float> make_grad(int64_t n, uint64_t seed, int64_t step) {
  std::mt19937_64 rng(seed * 7919 + static_cast<uint64_t>(step));
  std::uniform_real_distribution<double> expo(-6.0, 1.0), sign(-1.0, 1.0);
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / kAdamWFp16Block;
    const bool zero = block % 3 == 2 || (block == 1 && step >= 3);
    const double mag = std::pow(10.0, expo(rng));
    g[i] = zero ? 0.0f : static_cast<float>(sign(rng) < 0 ? -mag : mag);
  }
  return g;
}

std::vector<float> make_params(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> p(static_cast<size_t>(n));
  for (float& x : p) x = u(rng);
  return p;
}

const int64_t kSizes[] = {1, 127, 128, 129, 100003};

// ---- AdamW fp32 --------------------------------------------------------------------------

TEST(CudaOptimizer, AdamWFp32MatchesTheCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : kSizes)
    for (float wd : {0.0f, 0.1f}) {
      SCOPED_TRACE("n = " + std::to_string(n) + ", weight_decay = " + std::to_string(wd));
      std::vector<float> p = make_params(n, 1), m(n, 0.0f), v(n, 0.0f);
      DeviceArray<float> dp(p), dm(m), dv(v);
      for (int64_t step = 1; step <= 6; ++step) {
        const std::vector<float> g = make_grad(n, 2, step);
        DeviceArray<float> dg(g);
        AdamWHyper h{1e-3f * float(step), 0.9f, 0.999f, 1e-8f, wd, step};
        const float grad_scale = step == 4 ? 0.37f : 1.0f;
        adamw_step_fp32(h, grad_scale, n, p.data(), g.data(), m.data(), v.data());
        cuda::adamw_step_fp32({h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step}, grad_scale, n, dp.ptr(),
                              dg.ptr(), dm.ptr(), dv.ptr());
        const std::string at = " after step " + std::to_string(step);
        expect_same_bits(p, dp.host(), "param" + at);
        expect_same_bits(m, dm.host(), "m" + at);
        expect_same_bits(v, dv.host(), "v" + at);
      }
    }
}

// ---- AdamW fp16 --------------------------------------------------------------------------

struct Fp16State {
  std::vector<uint16_t> m_q, v_q;
  std::vector<float> m_scale, v_scale;
  explicit Fp16State(int64_t n) {
    const auto layout = AdamWFp16Layout::for_size(n);
    m_q.assign(n, 0);
    v_q.assign(n, 0);
    m_scale.assign(layout.n_blocks, 0.0f);
    v_scale.assign(layout.n_blocks, 0.0f);
  }
  AdamWFp16State view() { return {m_q.data(), v_q.data(), m_scale.data(), v_scale.data()}; }
};

struct DeviceFp16State {
  DeviceArray<uint16_t> m_q, v_q;
  DeviceArray<float> m_scale, v_scale;
  explicit DeviceFp16State(const Fp16State& s) : m_q(s.m_q), v_q(s.v_q), m_scale(s.m_scale), v_scale(s.v_scale) {}
};

void expect_same_fp16_state(Fp16State& cpu, DeviceFp16State& gpu, const std::string& at, bool nan_equal = false) {
  expect_same_bits(cpu.m_q, gpu.m_q.host(), "m_q" + at, nan_equal);
  expect_same_bits(cpu.v_q, gpu.v_q.host(), "v_sqrt_q" + at, nan_equal);
  expect_same_bits(cpu.m_scale, gpu.m_scale.host(), "m_scale" + at, nan_equal);
  expect_same_bits(cpu.v_scale, gpu.v_scale.host(), "v_sqrt_scale" + at, nan_equal);
}

void fp16_steps(const AdamWHyper& base, float grad_scale, int64_t n, std::vector<float>& p, Fp16State& s,
                DeviceArray<float>& dp, DeviceFp16State& ds, int64_t first_step, int64_t steps, uint64_t seed,
                bool nan_equal = false, std::vector<std::vector<float>>* grads = nullptr) {
  for (int64_t k = 0; k < steps; ++k) {
    AdamWHyper h = base;
    h.step = first_step + k;
    const std::vector<float> g = grads ? (*grads)[k] : make_grad(n, seed, h.step);
    DeviceArray<float> dg(g);
    adamw_step_fp16(h, grad_scale, n, p.data(), g.data(), s.view());
    cuda::adamw_step_fp16({h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step}, grad_scale, n, dp.ptr(),
                          dg.ptr(), ds.m_q.ptr(), ds.v_q.ptr(), ds.m_scale.ptr(), ds.v_scale.ptr());
    const std::string at = " after step " + std::to_string(h.step);
    expect_same_bits(p, dp.host(), "param" + at, nan_equal);
    expect_same_fp16_state(s, ds, at, nan_equal);
  }
}

TEST(CudaOptimizer, AdamWFp16MatchesTheCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : kSizes)
    for (float wd : {0.0f, 0.1f}) {
      SCOPED_TRACE("n = " + std::to_string(n) + ", weight_decay = " + std::to_string(wd));
      std::vector<float> p = make_params(n, 3);
      Fp16State s(n);
      DeviceArray<float> dp(p);
      DeviceFp16State ds(s);
      fp16_steps(AdamWHyper{2e-3f, 0.9f, 0.999f, 1e-8f, wd, 1}, 0.81f, n, p, s, dp, ds, 1, 7, 4);
    }
}

// Late steps (large bias-correction arguments, a step number above 2^32 for the noise key),
// and a state that comes from a long run: the noise and the constants depend on the step.
TEST(CudaOptimizer, AdamWFp16MatchesAtLargeStepNumbers) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 1000;
  for (int64_t first : {int64_t{4000}, (int64_t{1} << 32) + 5}) {
    SCOPED_TRACE("first step " + std::to_string(first));
    std::vector<float> p = make_params(n, 5);
    Fp16State s(n);
    // A state that is not all zero: encode some moments first.
    std::vector<float> m0 = make_grad(n, 6, 1), v0(n);
    for (int64_t i = 0; i < n; ++i) v0[i] = m0[i] * m0[i] * 3.0f;
    adamw_fp16_state_encode(n, m0.data(), v0.data(), s.view());
    DeviceArray<float> dp(p);
    DeviceFp16State ds(s);
    fp16_steps(AdamWHyper{1e-3f, 0.9f, 0.95f, 1e-8f, 0.01f, 1}, 1.0f, n, p, s, dp, ds, first, 5, 7);
  }
}

// A NaN or an infinity in a block: x86's max is order-dependent with NaNs, and the GPU replays
// the CPU's lane order for such a block. NaN payloads may differ (x86 and the GPU make
// different default NaNs), so any NaN equals any NaN here; everything else is bitwise.
TEST(CudaOptimizer, AdamWFp16NonFiniteGradientsPoisonTheSameBlocks) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 700;  // 6 blocks, the last one 60 elements
  std::vector<std::vector<float>> grads;
  for (int64_t step = 1; step <= 3; ++step) grads.push_back(make_grad(n, 8, step));
  // Step 2. Block 0: the block's largest element, then a NaN in the same CPU lane (element
  // index mod 8), which makes x86's lane maximum forget it: the CPU's scale is then smaller
  // than the true maximum, and a plain tree maximum on the GPU would differ (checked with a
  // host emulation of the kernel). Block 1: a NaN as the last element of lane 7, which
  // survives the horizontal maximum (NaN scale). Block 3: an inf. Block 4: a NaN then a
  // larger value in its lane. The last (short, padded) block: a NaN as its last element.
  grads[1][5] = 10.0f;
  grads[1][13] = std::nanf("");
  grads[1][128 + 127] = std::nanf("");
  grads[1][4 * 128 - 1] = INFINITY;
  grads[1][4 * 128 + 3] = std::nanf("");
  grads[1][4 * 128 + 11] = 9.0f;
  grads[1][n - 1] = std::nanf("");
  std::vector<float> p = make_params(n, 9);
  Fp16State s(n);
  DeviceArray<float> dp(p);
  DeviceFp16State ds(s);
  fp16_steps(AdamWHyper{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1}, 1.0f, n, p, s, dp, ds, 1, 3, 0, true, &grads);
}

// ---- SGD ---------------------------------------------------------------------------------

TEST(CudaOptimizer, SgdMatchesTheCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  struct Case {
    float momentum, dampening;
    bool nesterov;
  };
  const Case cases[] = {{0.0f, 0.0f, false}, {0.9f, 0.0f, false}, {0.9f, 0.0f, true}, {0.8f, 0.1f, false}};
  for (int64_t n : kSizes)
    for (float wd : {0.0f, 1e-2f})
      for (const Case& c : cases) {
        SCOPED_TRACE("n = " + std::to_string(n) + ", wd = " + std::to_string(wd) + ", momentum = " +
                     std::to_string(c.momentum) + ", dampening = " + std::to_string(c.dampening) +
                     (c.nesterov ? ", nesterov" : ""));
        std::vector<float> p = make_params(n, 10), buf(n, 0.0f);
        DeviceArray<float> dp(p), dbuf(buf);
        for (int64_t step = 1; step <= 6; ++step) {
          const std::vector<float> g = make_grad(n, 11, step);
          DeviceArray<float> dg(g);
          SgdHyper h{0.05f, c.momentum, c.dampening, wd, c.nesterov, step};
          const float grad_scale = step == 2 ? 0.5f : 1.0f;
          float* host_buf = c.momentum > 0 ? buf.data() : nullptr;
          float* dev_buf = c.momentum > 0 ? dbuf.ptr() : nullptr;
          sgd_step(h, grad_scale, n, p.data(), g.data(), host_buf);
          cuda::sgd_step({h.lr, h.momentum, h.dampening, h.weight_decay, h.nesterov, h.step}, grad_scale, n,
                         dp.ptr(), dg.ptr(), dev_buf);
          const std::string at = " after step " + std::to_string(step);
          expect_same_bits(p, dp.host(), "param" + at);
          if (c.momentum > 0) expect_same_bits(buf, dbuf.host(), "momentum buffer" + at);
        }
      }
}

// ---- gradient norm -----------------------------------------------------------------------

TEST(CudaOptimizer, GradNormMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t sizes[] = {1, 127, 0, 100003, 65536, 65537, 300000, 128};
  std::vector<std::vector<float>> host;
  std::vector<DeviceArray<float>> dev;
  for (size_t k = 0; k < std::size(sizes); ++k) host.push_back(make_grad(sizes[k], 20 + k, 1));
  for (auto& h : host) dev.emplace_back(h);
  std::vector<std::span<const float>> spans;
  std::vector<cuda::DeviceFloats> arrays;
  for (size_t k = 0; k < host.size(); ++k) {
    spans.emplace_back(host[k].data(), host[k].size());
    arrays.push_back({dev[k].ptr(), static_cast<int64_t>(host[k].size())});
  }
  const double cpu = global_grad_l2_norm(spans);
  const double gpu = cuda::global_grad_l2_norm(arrays);
  EXPECT_NEAR(gpu, cpu, 1e-12 * cpu);
  EXPECT_EQ(cuda::global_grad_l2_norm(arrays), gpu);  // deterministic: the same bits again
  EXPECT_EQ(cuda::global_grad_l2_norm({}), 0.0);
  // One tiny and one huge array alone.
  EXPECT_NEAR(cuda::global_grad_l2_norm({arrays[0]}), global_grad_l2_norm(std::span(spans).first(1)),
              1e-12 * global_grad_l2_norm(std::span(spans).first(1)));
  // A non-finite element gives a non-finite norm, as on the CPU.
  std::vector<float> bad = host[3];
  bad[77] = INFINITY;
  DeviceArray<float> dbad(bad);
  EXPECT_TRUE(std::isinf(cuda::global_grad_l2_norm({{dbad.ptr(), static_cast<int64_t>(bad.size())}})));
}

// ---- Optimizer: CPU vs GPU, checkpoints across devices ----------------------------------

using Params = std::vector<std::pair<std::string, Tensor>>;

const std::pair<const char*, Shape> kParamShapes[] = {
    {"layers.0.mixer.in_proj.weight", {3, 100}},
    {"layers.0.norm.weight", {129}},  // no weight decay (matches "norm")
    {"embedding.weight", {1000, 7}},
    {"layers.1.moe.experts.0.w1", {257}},  // gets no gradient at step 2
};

Params make_model(Device device) {
  Params ps;
  uint64_t seed = 100;
  for (const auto& [name, shape] : kParamShapes) {
    const std::vector<float> v = make_params(shape_numel(shape), seed++);
    Tensor t = Tensor::from_vector(v, shape).to(device);
    t.set_name(name);
    t.set_requires_grad(true, /*is_param=*/true);
    ps.emplace_back(name, t);
  }
  return ps;
}

// The CPU parameters' values as a copy on `device`, requiring gradients.
Params copy_model(const Params& from, Device device) {
  Params ps;
  for (const auto& [name, p] : from) {
    Tensor t = p.detach().to(Device::CPU).clone().to(device);
    t.set_name(name);
    t.set_requires_grad(true, true);
    ps.emplace_back(name, t);
  }
  return ps;
}

void set_grads(Params& ps, int64_t step) {
  uint64_t seed = 200;
  for (auto& [name, p] : ps) {
    ++seed;
    p.zero_grad();
    if (step == 2 && name.find("experts") != std::string::npos) continue;  // no tokens this step
    const Tensor g = Tensor::from_vector(make_grad(p.numel(), seed, step), p.shape());
    slot_grad(*p.slot()).copy_from(g);
  }
}

void expect_same_params(const Params& cpu, const Params& gpu, const std::string& at) {
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    const Tensor a = cpu[i].second.detach().to(Device::CPU), b = gpu[i].second.detach().to(Device::CPU);
    std::vector<float> va(a.data<float>(), a.data<float>() + a.numel());
    std::vector<float> vb(b.data<float>(), b.data<float>() + b.numel());
    expect_same_bits(va, vb, cpu[i].first + at);
  }
}

// Runs steps [first, last] on both optimizers with the same gradients, checking the norm.
void run_steps(Optimizer& a, Params& pa, Optimizer& b, Params& pb, int64_t first, int64_t last) {
  for (int64_t step = first; step <= last; ++step) {
    set_grads(pa, step);
    set_grads(pb, step);
    const double na = a.grad_norm(), nb = b.grad_norm();
    EXPECT_NEAR(nb, na, 1e-12 * na) << "grad norm at step " << step;
    const float scale = clip_coefficient(na, 5.0);  // the same scale for both
    a.step(2e-3, scale);
    b.step(2e-3, scale);
  }
}

// Every dataset and attribute of the two optimizer groups, byte for byte.
void expect_same_checkpoints(const std::string& path_a, const std::string& path_b) {
  H5File a = H5File::open_read(path_a), b = H5File::open_read(path_b);
  EXPECT_EQ(a.string_attr("/optimizer", "name"), b.string_attr("/optimizer", "name"));
  EXPECT_EQ(a.int_attr("/optimizer", "step"), b.int_attr("/optimizer", "step"));
  const std::vector<std::string> groups = a.list("/optimizer");
  ASSERT_EQ(groups, b.list("/optimizer"));
  for (const std::string& g : groups) {
    const std::string path = "/optimizer/" + g;
    const std::vector<std::string> names = a.list(path);
    ASSERT_EQ(names, b.list(path)) << path;
    for (const std::string& d : names) {
      const H5DatasetInfo ia = a.info(path + "/" + d), ib = b.info(path + "/" + d);
      ASSERT_EQ(ia.dtype, ib.dtype) << path << "/" << d;
      ASSERT_EQ(ia.shape, ib.shape) << path << "/" << d;
      std::vector<char> ba(ia.numel() * dtype_size(ia.dtype)), bb(ba.size());
      a.read(path + "/" + d, ia.dtype, ba.data());
      b.read(path + "/" + d, ib.dtype, bb.data());
      EXPECT_EQ(std::memcmp(ba.data(), bb.data(), ba.size()), 0) << path << "/" << d << " differs";
    }
  }
}

void save(const Optimizer& o, const std::string& path) {
  H5File f = H5File::create(path);
  o.save(f, "/optimizer");
  f.close();
}

void optimizer_round_trip(const OptimizerConfig& cfg, const std::string& tag) {
  SCOPED_TRACE(tag);
  Params cpu_params = make_model(Device::CPU), gpu_params = copy_model(cpu_params, Device::CUDA);
  Optimizer cpu(cfg, cpu_params), gpu(cfg, gpu_params);
  EXPECT_EQ(cpu.state_bytes(), gpu.state_bytes());
  run_steps(cpu, cpu_params, gpu, gpu_params, 1, 3);
  expect_same_params(cpu_params, gpu_params, " after 3 steps");

  const std::string dir = ::testing::TempDir();
  const std::string cpu_path = dir + "mg_opt_cpu_" + tag + ".h5", gpu_path = dir + "mg_opt_gpu_" + tag + ".h5";
  save(cpu, cpu_path);
  save(gpu, gpu_path);
  expect_same_checkpoints(cpu_path, gpu_path);

  // The GPU's checkpoint resumes on the CPU, the CPU's on the GPU; both continue as the
  // original CPU optimizer does.
  Params resumed_cpu_params = copy_model(gpu_params, Device::CPU);
  Params resumed_gpu_params = copy_model(cpu_params, Device::CUDA);
  Optimizer resumed_cpu(cfg, resumed_cpu_params), resumed_gpu(cfg, resumed_gpu_params);
  resumed_cpu.load(H5File::open_read(gpu_path), "/optimizer");
  resumed_gpu.load(H5File::open_read(cpu_path), "/optimizer");
  EXPECT_EQ(resumed_cpu.step_count(), 3);
  EXPECT_EQ(resumed_gpu.step_count(), 3);
  run_steps(cpu, cpu_params, resumed_cpu, resumed_cpu_params, 4, 6);
  expect_same_params(cpu_params, resumed_cpu_params, " (GPU checkpoint resumed on the CPU) after 6 steps");
  run_steps(gpu, gpu_params, resumed_gpu, resumed_gpu_params, 4, 6);
  expect_same_params(cpu_params, resumed_gpu_params, " (CPU checkpoint resumed on the GPU) after 6 steps");
  expect_same_params(cpu_params, gpu_params, " (GPU, uninterrupted) after 6 steps");
  std::remove(cpu_path.c_str());
  std::remove(gpu_path.c_str());
}

TEST(CudaOptimizer, OptimizerOnTheGpuMatchesAndCheckpointsAcrossDevices) {
  SKIP_WITHOUT_GPU();
  OptimizerConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.state_dtype = StateDtype::F16;
  optimizer_round_trip(cfg, "adamw_fp16");
  cfg.state_dtype = StateDtype::F32;
  optimizer_round_trip(cfg, "adamw_fp32");
  cfg.name = OptimizerKind::Sgd;
  cfg.momentum = 0.9;
  cfg.nesterov = true;
  optimizer_round_trip(cfg, "sgd_nesterov");
}

TEST(CudaOptimizer, ParametersOnTwoDevicesAreRefused) {
  SKIP_WITHOUT_GPU();
  Params ps = make_model(Device::CPU);
  ps[1].second = ps[1].second.detach().to(Device::CUDA);
  ps[1].second.set_requires_grad(true, true);
  EXPECT_THROW({ Optimizer o(OptimizerConfig{}, ps); }, Error);
}

}  // namespace
}  // namespace mg
