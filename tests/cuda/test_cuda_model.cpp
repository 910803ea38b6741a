// The whole hybrid model on the GPU against the same model on the CPU: loss terms and every
// parameter's gradient, in float32 (GPU GEMMs in full FP32, not TF32) and float64, with and
// without gradient checkpointing; a CPU <-> GPU checkpoint round trip of the weights.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "cuda/runtime.h"
#include "model/hybrid_lm.h"

namespace mg {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << cuda::unavailable_reason()

ModelConfig small_config() {
  ModelConfig c;
  c.d_model = 48;
  c.vocab_size = 97;
  c.layer_pattern = "MEME";
  c.d_state = 16;
  c.d_conv = 4;
  c.expand = 2;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_hidden = 40;
  c.aux_loss_coef = 0.1;
  c.z_loss_coef = 0.01;
  return c;
}

Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(B * T);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(V));
  return Tensor::from_ids(v, {B, T});
}

// max |a - b| / max |b| over all elements (b the CPU reference).
double rel_err(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return num / den;
}

struct StepResult {
  double loss, ce, aux, z;
  std::vector<std::pair<std::string, Tensor>> grads;  // on the CPU
};

StepResult forward_backward(HybridLM& model, const Tensor& tokens, const Tensor& targets, GradCheckpointing ckpt) {
  model.zero_grad();
  ForwardOptions o{.training = true, .want_logits = false, .checkpointing = ckpt};
  const Device dev = model.device();
  LmOutput out = model.forward(tokens.to(dev), targets.to(dev), o);
  StepResult r{out.loss.item(), out.ce_loss.item(), out.aux_loss.item(), out.z_loss.item(), {}};
  current_tape().backward(out.loss);
  for (auto& [name, p] : model.named_parameters())
    r.grads.emplace_back(name, p.grad().defined() ? p.grad().to(Device::CPU) : Tensor());
  return r;
}

void expect_gpu_matches_cpu(DType dtype, GradCheckpointing ckpt, double tol) {
  const ModelConfig cfg = small_config();
  HybridLM cpu(cfg, dtype), gpu(cfg, dtype);
  cpu.init(7);
  gpu.init(7);
  gpu.to(Device::CUDA);
  ASSERT_EQ(gpu.device(), Device::CUDA);
  const Tensor tokens = random_ids(3, 37, cfg.vocab_size, 1), targets = random_ids(3, 37, cfg.vocab_size, 2);
  const StepResult a = forward_backward(cpu, tokens, targets, ckpt);
  const StepResult b = forward_backward(gpu, tokens, targets, ckpt);
  EXPECT_NEAR(b.loss, a.loss, tol * std::abs(a.loss));
  EXPECT_NEAR(b.ce, a.ce, tol * std::abs(a.ce));
  EXPECT_NEAR(b.aux, a.aux, tol * std::abs(a.aux) + 1e-12);
  EXPECT_NEAR(b.z, a.z, tol * std::abs(a.z) + 1e-12);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  int compared = 0;
  for (size_t i = 0; i < a.grads.size(); ++i) {
    ASSERT_EQ(a.grads[i].first, b.grads[i].first);
    ASSERT_EQ(a.grads[i].second.defined(), b.grads[i].second.defined()) << a.grads[i].first;
    if (!a.grads[i].second.defined()) continue;
    EXPECT_LE(rel_err(b.grads[i].second, a.grads[i].second), tol) << a.grads[i].first;
    ++compared;
  }
  EXPECT_GT(compared, 20);
}

// Tolerances: float32 1e-4 relative to each tensor's largest element (the bound;
// cuBLAS and the CPU BLAS sum in different orders), float64 1e-10.
TEST(CudaModel, Float32LossAndEveryGradientMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  expect_gpu_matches_cpu(DType::F32, GradCheckpointing::None, 1e-4);
}

TEST(CudaModel, Float64LossAndEveryGradientMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  expect_gpu_matches_cpu(DType::F64, GradCheckpointing::None, 1e-10);
}

TEST(CudaModel, GradientCheckpointingMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  expect_gpu_matches_cpu(DType::F32, GradCheckpointing::EveryLayer, 1e-4);
}

TEST(CudaModel, BackwardIsBitReproducible) {
  SKIP_WITHOUT_GPU();
  const ModelConfig cfg = small_config();
  HybridLM gpu(cfg, DType::F32);
  gpu.init(3);
  gpu.to(Device::CUDA);
  const Tensor tokens = random_ids(2, 65, cfg.vocab_size, 5), targets = random_ids(2, 65, cfg.vocab_size, 6);
  const StepResult a = forward_backward(gpu, tokens, targets, GradCheckpointing::None);
  const StepResult b = forward_backward(gpu, tokens, targets, GradCheckpointing::None);
  EXPECT_EQ(a.loss, b.loss);
  for (size_t i = 0; i < a.grads.size(); ++i) {
    if (!a.grads[i].second.defined()) continue;
    EXPECT_EQ(rel_err(a.grads[i].second, b.grads[i].second), 0.0) << a.grads[i].first;
  }
}

TEST(CudaModel, MovingToTheGpuAndBackKeepsEveryWeight) {
  SKIP_WITHOUT_GPU();
  HybridLM m(small_config(), DType::F32);
  m.init(11);
  std::vector<std::vector<double>> before;
  for (auto& [_, p] : m.named_parameters()) before.push_back(p.to_double_vector());
  m.to(Device::CUDA);
  for (auto& [name, p] : m.named_parameters()) {
    EXPECT_TRUE(p.is_cuda()) << name;
    EXPECT_TRUE(p.requires_grad()) << name;
  }
  m.to(Device::CPU);
  size_t i = 0;
  for (auto& [name, p] : m.named_parameters()) EXPECT_EQ(p.to_double_vector(), before[i++]) << name;
}

}  // namespace
}  // namespace mg
