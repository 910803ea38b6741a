// The GPU paths of the ops (autograd/ops_*.cpp -> cuda/*.cu) against their CPU paths: each op
// runs on CPU inputs and on GPU copies of them; a loss sum(out * R) with a fixed random R gives
// every output element its own gradient; outputs and every input gradient must agree to
//   f32: max|gpu - cpu| / max|cpu| <= 1e-5 (1e-4 where a test says: reductions over many
//        elements, whose summation order differs), f64: <= 1e-12.
// Then: bit-identical gradients across two GPU runs for the reduction-heavy ops, dropout's
// statistics, and the errors (mixed devices, a bad token id).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "cuda/runtime.h"

namespace mg {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason()

// Normal(0, scale) values, never exactly zero; `shift` added (e.g. positive inputs for log).
Tensor randn(const Shape& shape, uint64_t seed, double scale = 1.0, double shift = 0.0) {
  Rng rng(seed);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = rng.normal() * scale + shift;
  return Tensor::from_vector(v, shape);
}

Tensor random_ids(int64_t n, int64_t V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
  return Tensor::from_ids(v, {n});
}

bool is_float(const Tensor& t) { return t.defined() && (t.dtype() == DType::F32 || t.dtype() == DType::F64); }

// max |a - b| / max(max |b|, 1e-30), both on the CPU
double rel_err(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  EXPECT_EQ(x.size(), y.size());
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return std::isnan(diff) ? INFINITY : diff / scale;
}

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

struct Result {
  Tensor out;                 // on the CPU
  std::vector<Tensor> grads;  // per input, on the CPU (undefined: not a float input / no gradient)
};

// Runs op on copies of `inputs` (float ones converted to dtype, requiring grad) on `device`,
// then backward of sum(out * R).
Result run_on(Device device, DType dtype, const Op& op, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    if (!t.defined()) { xs.push_back(t); continue; }
    Tensor x = (is_float(t) ? t.to(dtype) : t).to(device).clone();
    if (is_float(x)) x.set_requires_grad(true);
    xs.push_back(x);
  }
  Result r;
  Tensor out = op(xs);
  Tensor R = randn(out.shape(), 987).to(dtype).to(device);
  current_tape().backward(ops::sum(ops::mul(out, R)));
  r.out = out.to(Device::CPU);
  for (const Tensor& x : xs) {
    Tensor g = is_float(x) ? x.grad() : Tensor();
    r.grads.push_back(g.defined() ? g.to(Device::CPU) : g);
  }
  return r;
}

// CPU vs GPU in f32 (tolerance f32_tol) and f64 (1e-12).
void expect_gpu_matches_cpu(const std::string& what, const Op& op, const std::vector<Tensor>& inputs,
                            double f32_tol = 1e-5) {
  for (DType dtype : {DType::F32, DType::F64}) {
    const double tol = dtype == DType::F32 ? f32_tol : 1e-12;
    SCOPED_TRACE(what + " " + std::string(dtype_name(dtype)));
    const Result cpu = run_on(Device::CPU, dtype, op, inputs);
    const Result gpu = run_on(Device::CUDA, dtype, op, inputs);
    ASSERT_EQ(gpu.out.shape(), cpu.out.shape());
    EXPECT_LE(rel_err(gpu.out, cpu.out), tol) << "output";
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!cpu.grads[i].defined() && !gpu.grads[i].defined()) continue;
      ASSERT_TRUE(cpu.grads[i].defined() && gpu.grads[i].defined()) << "gradient of input " << i;
      EXPECT_LE(rel_err(gpu.grads[i], cpu.grads[i]), tol) << "gradient of input " << i;
    }
  }
}

// Two GPU runs (f32) give bit-identical outputs and gradients.
void expect_deterministic(const std::string& what, const Op& op, const std::vector<Tensor>& inputs) {
  SCOPED_TRACE(what);
  const Result a = run_on(Device::CUDA, DType::F32, op, inputs);
  const Result b = run_on(Device::CUDA, DType::F32, op, inputs);
  EXPECT_EQ(a.out.to_double_vector(), b.out.to_double_vector()) << "output";
  for (size_t i = 0; i < a.grads.size(); ++i)
    if (a.grads[i].defined()) {
      EXPECT_EQ(a.grads[i].to_double_vector(), b.grads[i].to_double_vector()) << "input " << i;
    }
}

TEST(CudaOps, ElementwiseWithBroadcast) {
  SKIP_WITHOUT_GPU();
  const Op add = [](auto& x) { return ops::add(x[0], x[1]); };
  const Op sub = [](auto& x) { return ops::sub(x[0], x[1]); };
  const Op mul = [](auto& x) { return ops::mul(x[0], x[1]); };
  for (const Shape& as : {Shape{3, 5, 7}, Shape{2, 129, 33}}) {
    Tensor a = randn(as, 1);
    std::vector<Shape> bshapes = {as, {as[1], as[2]}, {as[2]}, {1}};
    for (const Shape& bs : bshapes) {
      Tensor b = randn(bs, 2);
      const std::string tag = shape_str(as) + " op " + shape_str(bs);
      expect_gpu_matches_cpu("add " + tag, add, {a, b});
      expect_gpu_matches_cpu("sub " + tag, sub, {a, b});
      expect_gpu_matches_cpu("mul " + tag, mul, {a, b});
    }
  }
  // Many rows onto a bias: the chunked column reduction (tolerance 1e-4: 4096 rows).
  expect_gpu_matches_cpu("mul bias (4096, 65)", mul, {randn({4096, 65}, 3), randn({65}, 4)}, 1e-4);
  expect_gpu_matches_cpu("add (1, 1)", add, {randn({1, 1}, 5), randn({1}, 6)});
  expect_gpu_matches_cpu("scale", [](auto& x) { return ops::scale(x[0], -2.5); }, {randn({3, 5, 7}, 7)});
  expect_gpu_matches_cpu("add_scalar", [](auto& x) { return ops::add_scalar(x[0], 3.0); }, {randn({3, 5, 7}, 8)});
}

TEST(CudaOps, Activations) {
  SKIP_WITHOUT_GPU();
  Tensor x = randn({2, 129, 33}, 11, 2.0);
  for (auto [name, f] : std::vector<std::pair<std::string, Tensor (*)(const Tensor&)>>{
           {"exp", ops::exp}, {"silu", ops::silu}, {"gelu", ops::gelu}, {"softplus", ops::softplus},
           {"sigmoid", ops::sigmoid}, {"square", ops::square}})
    expect_gpu_matches_cpu(name, [f = f](auto& v) { return f(v[0]); }, {x});
  expect_gpu_matches_cpu("log", [](auto& v) { return ops::log(v[0]); }, {ops::exp(randn({3, 5, 7}, 12))});
  // softplus above PyTorch's threshold 20 is linear.
  expect_gpu_matches_cpu("softplus large", [](auto& v) { return ops::softplus(v[0]); },
                         {Tensor::from_vector(std::vector<double>{25.0, 30.0, -30.0, 19.5, 20.5}, {5})});
}

// Reductions over many elements: f32 tolerance 1e-4.
TEST(CudaOps, Reductions) {
  SKIP_WITHOUT_GPU();
  const Op sum = [](auto& v) { return ops::sum(v[0]); };
  const Op mean = [](auto& v) { return ops::mean(v[0]); };
  const Op sum_rows = [](auto& v) { return ops::sum_rows(v[0]); };
  const Op softmax = [](auto& v) { return ops::softmax(v[0]); };
  const Op logsumexp = [](auto& v) { return ops::logsumexp(v[0]); };
  for (const Shape& s : {Shape{1, 1}, Shape{3, 5, 7}, Shape{2, 129, 33}, Shape{1024, 1031}, Shape{3, 2000}}) {
    Tensor x = randn(s, 21, 2.0);
    const std::string tag = shape_str(s);
    expect_gpu_matches_cpu("sum " + tag, sum, {x}, 1e-4);
    expect_gpu_matches_cpu("mean " + tag, mean, {x}, 1e-4);
    expect_gpu_matches_cpu("sum_rows " + tag, sum_rows, {x}, 1e-4);
    expect_gpu_matches_cpu("softmax " + tag, softmax, {x}, 1e-4);
    expect_gpu_matches_cpu("logsumexp " + tag, logsumexp, {x}, 1e-4);
  }
}

// Reduces over C (per row) and over rows (weight grad): f32 tolerance 1e-4.
TEST(CudaOps, RmsNorm) {
  SKIP_WITHOUT_GPU();
  const Op rmsnorm = [](auto& v) { return ops::rmsnorm(v[0], v[1], 1e-5); };
  expect_gpu_matches_cpu("rmsnorm (3,5,7)", rmsnorm, {randn({3, 5, 7}, 31), randn({7}, 32, 0.2, 1.0)}, 1e-4);
  expect_gpu_matches_cpu("rmsnorm (2,129,33)", rmsnorm, {randn({2, 129, 33}, 33), randn({33}, 34, 0.2, 1.0)}, 1e-4);
  expect_gpu_matches_cpu("rmsnorm (3,2000)", rmsnorm, {randn({3, 2000}, 35), randn({2000}, 36, 0.2, 1.0)}, 1e-4);
  expect_gpu_matches_cpu("rmsnorm (1,1)", rmsnorm, {randn({1, 1}, 37), randn({1}, 38, 0.2, 1.0)}, 1e-4);
}

TEST(CudaOps, EmbeddingWithRepeatedIds) {
  SKIP_WITHOUT_GPU();
  Tensor table = randn({50, 33}, 41);
  Tensor ids = random_ids(300, 50, 42).view({3, 100});  // every row repeats
  expect_gpu_matches_cpu("embedding", [](auto& v) { return ops::embedding(v[0], v[1]); }, {ids, table});
  // ids left on the CPU with a GPU table
  expect_gpu_matches_cpu("embedding, host ids",
                         [](auto& v) { return ops::embedding(v[0].to(Device::CPU), v[1]); }, {ids, table});
  expect_gpu_matches_cpu("embedding wide", [](auto& v) { return ops::embedding(v[0], v[1]); },
                         {random_ids(40, 7, 43), randn({7, 1100}, 44)});
}

TEST(CudaOps, EmbeddingRejectsBadIdOnGpu) {
  SKIP_WITHOUT_GPU();
  Tensor table = randn({50, 8}, 45).to(Device::CUDA);
  Tensor ids = Tensor::from_ids({1, 2, 50, 3}, {4}).to(Device::CUDA);
  try {
    ops::embedding(ids, table);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 50 at position 2 is outside the vocabulary [0, 50)"),
              std::string::npos) << e.what();
  }
}

// Logsumexp over V = 1000 per row and a mean over rows: f32 tolerance 1e-4.
TEST(CudaOps, CrossEntropy) {
  SKIP_WITHOUT_GPU();
  const Op ce = [](auto& v) { return ops::cross_entropy(v[0], v[1]); };
  Tensor targets = random_ids(64, 1000, 51);
  for (int i = 0; i < 64; i += 5) targets.data<int32_t>()[i] = -1;  // some ignored
  expect_gpu_matches_cpu("cross_entropy (64, 1000)", ce, {randn({64, 1000}, 52, 3.0), targets}, 1e-4);
  expect_gpu_matches_cpu("cross_entropy, host targets",
                         [](auto& v) { return ops::cross_entropy(v[0], v[1].to(Device::CPU)); },
                         {randn({64, 1000}, 53, 3.0), targets}, 1e-4);
  expect_gpu_matches_cpu("cross_entropy (5, 33)", ce, {randn({5, 33}, 54), random_ids(5, 33, 55)}, 1e-4);
  expect_gpu_matches_cpu("cross_entropy (3, 5000)", ce, {randn({3, 5000}, 56), random_ids(3, 5000, 57)}, 1e-4);
  Tensor none = Tensor::from_ids({-1, -1, -1, -1}, {4});
  expect_gpu_matches_cpu("cross_entropy all ignored", ce, {randn({4, 1000}, 58), none});
}

TEST(CudaOps, ShapeOps) {
  SKIP_WITHOUT_GPU();
  Tensor x = randn({3, 5, 7}, 61);
  expect_gpu_matches_cpu("slice_last", [](auto& v) { return ops::slice_last(v[0], 2, 3); }, {x});
  expect_gpu_matches_cpu("slice_last all", [](auto& v) { return ops::slice_last(v[0], 0, 7); }, {x});
  expect_gpu_matches_cpu("concat_last", [](auto& v) { return ops::concat_last({v[0], v[1], v[2]}); },
                         {randn({3, 5, 2}, 62), randn({3, 5, 7}, 63), randn({3, 5, 1}, 64)});
  const Op transpose = [](auto& v) { return ops::transpose(v[0]); };
  expect_gpu_matches_cpu("transpose (3,5,7)", transpose, {x});
  expect_gpu_matches_cpu("transpose (2,129,33)", transpose, {randn({2, 129, 33}, 65)});
  expect_gpu_matches_cpu("transpose (1,1)", transpose, {randn({1, 1}, 66)});
  expect_gpu_matches_cpu("reshape", [](auto& v) { return ops::reshape(v[0], {15, 7}); }, {x});
}

TEST(CudaOps, GatherAndScatterRowsWithRepeats) {
  SKIP_WITHOUT_GPU();
  Tensor rows = random_ids(50, 20, 71);  // 50 picks of 20 rows: repeats
  expect_gpu_matches_cpu("gather_rows", [](auto& v) { return ops::gather_rows(v[0], v[1]); },
                         {randn({20, 33}, 72), rows});
  const Op scatter = [](auto& v) { return ops::scatter_add_rows(v[0], v[1], v[2], v[3], 20); };
  expect_gpu_matches_cpu("scatter_add_rows base + weights", scatter,
                         {randn({20, 33}, 73), randn({50, 33}, 74), rows, randn({50}, 75)});
  expect_gpu_matches_cpu("scatter_add_rows plain", scatter, {Tensor(), randn({50, 33}, 76), rows, Tensor()});
  expect_gpu_matches_cpu("scatter_add_rows wide", scatter,
                         {randn({20, 1500}, 77), randn({50, 1500}, 78), rows, randn({50}, 79)});
}

// dw and dbias reduce over (b, t): f32 tolerance 1e-4.
TEST(CudaOps, CausalConv1d) {
  SKIP_WITHOUT_GPU();
  const Op conv = [](auto& v) { return ops::causal_conv1d(v[0], v[1], v[2]); };
  expect_gpu_matches_cpu("conv (3,5,7) K4", conv, {randn({3, 5, 7}, 81), randn({7, 1, 4}, 82), randn({7}, 83)}, 1e-4);
  expect_gpu_matches_cpu("conv (2,129,33) K4", conv,
                         {randn({2, 129, 33}, 84), randn({33, 1, 4}, 85), randn({33}, 86)}, 1e-4);
  expect_gpu_matches_cpu("conv K > T", conv, {randn({2, 3, 5}, 87), randn({5, 1, 6}, 88), randn({5}, 89)}, 1e-4);
  expect_gpu_matches_cpu("conv (1,1,1) K1", conv, {randn({1, 1, 1}, 90), randn({1, 1, 1}, 91), randn({1}, 92)});
}

TEST(CudaOps, ReductionHeavyBackwardsAreBitIdentical) {
  SKIP_WITHOUT_GPU();
  expect_deterministic("sum_rows", [](auto& v) { return ops::sum_rows(v[0]); }, {randn({4096, 257}, 101)});
  expect_deterministic("add bias", [](auto& v) { return ops::add(v[0], v[1]); },
                       {randn({4096, 65}, 102), randn({65}, 103)});
  expect_deterministic("embedding", [](auto& v) { return ops::embedding(v[0], v[1]); },
                       {random_ids(20000, 100, 104), randn({100, 64}, 105)});
  expect_deterministic("scatter_add_rows", [](auto& v) { return ops::scatter_add_rows(v[0], v[1], v[2], v[3], 100); },
                       {randn({100, 64}, 106), randn({20000, 64}, 107), random_ids(20000, 100, 108),
                        randn({20000}, 109)});
  expect_deterministic("conv1d", [](auto& v) { return ops::causal_conv1d(v[0], v[1], v[2]); },
                       {randn({4, 1024, 64}, 110), randn({64, 1, 4}, 111), randn({64}, 112)});
  expect_deterministic("rmsnorm", [](auto& v) { return ops::rmsnorm(v[0], v[1], 1e-5); },
                       {randn({4096, 96}, 113), randn({96}, 114, 0.2, 1.0)});
  expect_deterministic("cross_entropy", [](auto& v) { return ops::cross_entropy(v[0], v[1]); },
                       {randn({512, 1000}, 115), random_ids(512, 1000, 116)});
}

TEST(CudaOps, DropoutStatistics) {
  SKIP_WITHOUT_GPU();
  const double p = 0.3;
  const int64_t n = 1 << 20;
  Tensor x = randn({n}, 121).to(DType::F32).to(Device::CUDA);
  x.set_requires_grad(true);
  Rng rng(7), expected_rng(7);
  Tensor y = ops::dropout(x, p, rng);
  expected_rng.next_u64();
  EXPECT_EQ(rng.state(), expected_rng.state()) << "one Rng draw per call";
  Tensor R = randn({n}, 122).to(DType::F32).to(Device::CUDA);
  current_tape().backward(ops::sum(ops::mul(y, R)));

  const std::vector<double> xv = x.to(Device::CPU).to_double_vector(), yv = y.to(Device::CPU).to_double_vector();
  const std::vector<double> rv = R.to(Device::CPU).to_double_vector();
  const std::vector<double> gv = x.grad().to(Device::CPU).to_double_vector();
  const double keep = static_cast<float>(1.0 / (1.0 - p));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (yv[i] != 0) {
      ++kept;
      ASSERT_NEAR(yv[i], xv[i] / (1.0 - p), 1e-6 * std::abs(xv[i]) + 1e-30) << i;
      ASSERT_NEAR(gv[i], rv[i] * keep, 1e-6 * std::abs(rv[i]) + 1e-30) << i;  // the same mask
    } else {
      ASSERT_EQ(gv[i], 0.0) << i;
    }
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 1.0 - p, 0.005);

  // The same Rng state gives the same mask; the next call a different one.
  Rng again(7);
  NoGradGuard no_grad;
  EXPECT_EQ(ops::dropout(x, p, again).to(Device::CPU).to_double_vector(), yv);
  EXPECT_NE(ops::dropout(x, p, again).to(Device::CPU).to_double_vector(), yv);
  // p = 0: the identity.
  EXPECT_EQ(ops::dropout(x, 0.0, again).to(Device::CPU).to_double_vector(), xv);
}

TEST(CudaOps, MixedDevicesThrowNamingBoth) {
  SKIP_WITHOUT_GPU();
  Tensor a = randn({3, 4}, 131), b = randn({3, 4}, 132).to(Device::CUDA);
  try {
    ops::add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cpu"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace mg
