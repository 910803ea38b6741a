// The fused NF4 linear op and a LoRA adapter on top of it (QLoRA, design.md §5):
//   - forward and input gradient of ops::nf4_linear against ops::linear on the dequantized
//     weight (float32 both sides: only the summation order differs, so tight);
//   - lora_A, lora_B and input gradients through the fused NF4 base (float32, analytic)
//     against central finite differences in float64 of the same model written with plain
//     ops and the dequantized weight held densely in float64;
//   - the NF4 weight itself is not a trainable tensor.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "model/linear.h"
#include "model/nf4_linear_op.h"

namespace mg {
namespace {

std::vector<float> random_floats(int64_t n, double stddev, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(stddev * rng.normal());
  return v;
}

// max |a - b| and max |b| over two tensors of the same size.
struct Diff {
  double max_abs = 0, ref_max = 0;
  double rel() const { return max_abs / std::max(ref_max, 1e-30); }
};
Diff max_diff(const Tensor& a, const Tensor& b) {
  Diff d;
  EXPECT_EQ(a.numel(), b.numel());
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) {
    d.max_abs = std::max(d.max_abs, std::abs(a.item(i) - b.item(i)));
    d.ref_max = std::max(d.ref_max, std::abs(b.item(i)));
  }
  return d;
}

// Loss = sum(proj * y): its gradient wrt y is proj, so dx is exactly dY W with dY = proj.
Tensor projected_sum(const Tensor& y, const Tensor& proj) { return ops::sum(ops::mul(y, proj)); }

TEST(NF4Linear, ForwardAndInputGradMatchDenseLinearOnDequantizedWeight) {
  struct Case { int64_t out, in, M; };
  // M = 3 runs the Direct kernel, M = 5, 33, 40 the tiled sgemm one (nf4.h, kNF4DirectMaxM);
  // in = 72 puts NF4 blocks of 64 across row boundaries, out*in = 37*72 leaves a short block.
  for (Case c : {Case{48, 128, 3}, Case{48, 128, 40}, Case{37, 72, 5}, Case{37, 72, 33}}) {
    SCOPED_TRACE(::testing::Message() << "out " << c.out << " in " << c.in << " M " << c.M);
    auto q = std::make_shared<NF4Weight>(nf4_quantize(random_floats(c.out * c.in, 0.1, 1).data(), c.out, c.in));
    Tensor Wd = Tensor::empty({c.out, c.in});  // [out, in] dequantized, float32
    nf4_dequantize(*q, Wd.data<float>());
    Tensor proj = Tensor::from_vector(random_floats(c.M * c.out, 1.0, 2), {c.M, c.out});
    Tensor x_nf4 = Tensor::from_vector(random_floats(c.M * c.in, 1.0, 3), {c.M, c.in});
    Tensor x_dense = x_nf4.clone();
    x_nf4.set_requires_grad(true, /*is_param=*/true);
    x_dense.set_requires_grad(true, /*is_param=*/true);

    Tensor y_nf4 = ops::nf4_linear(x_nf4, q);
    current_tape().backward(projected_sum(y_nf4, proj));
    Tensor y_dense = ops::linear(x_dense, Wd);
    current_tape().backward(projected_sum(y_dense, proj));

    const Diff dy = max_diff(y_nf4, y_dense), dx = max_diff(x_nf4.grad(), x_dense.grad());
    EXPECT_LT(dy.rel(), 2e-6) << "forward max diff " << dy.max_abs << " of " << dy.ref_max;
    EXPECT_LT(dx.rel(), 2e-6) << "input grad max diff " << dx.max_abs << " of " << dx.ref_max;
    EXPECT_GT(dx.ref_max, 0.1);
  }
}

TEST(NF4Linear, RefusesFloat64InputAndAWrongWidth) {
  auto q = std::make_shared<NF4Weight>(nf4_quantize(random_floats(16 * 64, 0.1, 1).data(), 16, 64));
  EXPECT_THROW(ops::nf4_linear(Tensor::zeros({2, 64}, DType::F64), q), Error);
  EXPECT_THROW(ops::nf4_linear(Tensor::zeros({2, 63}), q), Error);
}

// A Linear quantized to NF4 with an adapter of non-zero B: L = sum(proj * y^2) so the grads of
// A, B and x all depend on each other (a linear loss would make dB independent of B).
TEST(NF4Linear, LoraGradsThroughFusedNF4MatchFloat64FiniteDifferences) {
  const int64_t in = 128, out = 64, M = 20, r = 4;
  Rng rng(11);
  Linear lin(in, out, /*bias=*/false, DType::F32);
  init_linear_default(lin, rng);
  lin.quantize_base();
  LoraSettings s;
  s.r = static_cast<int>(r);
  s.alpha = 8.0;
  lin.add_lora(s, rng);
  for (int64_t i = 0; i < lin.lora_B.numel(); ++i) lin.lora_B.data<float>()[i] = static_cast<float>(0.1 * rng.normal());

  Tensor x = Tensor::from_vector(random_floats(M * in, 1.0, 5), {M, in});
  Tensor proj = Tensor::from_vector(random_floats(M * out, 1.0, 6), {M, out});
  x.set_requires_grad(true, /*is_param=*/true);
  lin.zero_grad();
  current_tape().backward(ops::sum(ops::mul(ops::square(lin.forward(x)), proj)));
  EXPECT_FALSE(lin.weight.requires_grad()) << "the NF4 base must not be a trainable tensor";

  // The float64 reference: plain ops, the dequantized NF4 matrix as a dense f64 weight.
  Tensor W64 = lin.dense_weight().to(DType::F64);                      // [out, in]
  Tensor A64 = lin.lora_A.to(DType::F64), B64 = lin.lora_B.to(DType::F64);  // [r, in], [out, r]
  Tensor x64 = x.to(DType::F64), proj64 = proj.to(DType::F64);        // (M, in), (M, out)
  auto loss64 = [&] {
    NoGradGuard ng;
    Tensor y = ops::add(ops::linear(x64, W64), ops::scale(ops::linear(ops::linear(x64, A64), B64), s.scale()));
    return ops::sum(ops::mul(ops::square(y), proj64)).item();
  };
  auto check = [&](const char* what, Tensor& t64, const Tensor& analytic, int64_t stride) {
    double max_abs = 0, ref_max = 0;
    int64_t worst = -1;
    std::vector<std::pair<double, double>> pairs;
    for (int64_t i = 0; i < t64.numel(); i += stride) {
      double* v = t64.data<double>() + i;
      const double orig = *v, eps = 1e-6;
      *v = orig + eps;
      const double lp = loss64();
      *v = orig - eps;
      const double lm = loss64();
      *v = orig;
      const double numeric = (lp - lm) / (2 * eps), a = analytic.item(i);
      ref_max = std::max(ref_max, std::abs(numeric));
      pairs.emplace_back(a, numeric);
      if (std::abs(a - numeric) > max_abs) max_abs = std::abs(a - numeric), worst = i;
    }
    // f32 analytic vs f64 numeric: relative 1e-3 per element, plus 1e-4 of the largest
    // so that entries near zero are not held to a relative bound they cannot meet.
    int bad = 0;
    for (auto [a, n] : pairs) bad += std::abs(a - n) > 1e-3 * std::abs(n) + 1e-4 * ref_max;
    EXPECT_EQ(bad, 0) << what << ": max |analytic - numeric| " << max_abs << " at [" << worst << "], largest "
                      << ref_max;
    EXPECT_GT(ref_max, 1e-2) << what << " gradient is trivially small";
  };
  check("lora_A", A64, lin.lora_A.grad(), 1);
  check("lora_B", B64, lin.lora_B.grad(), 1);
  check("input", x64, x.grad(), 7);
}

}  // namespace
}  // namespace mg
