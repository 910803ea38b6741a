// Op forwards (float32) against plain naive loops in double, written independently here.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace mg {
namespace {

Tensor randf(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = static_cast<float>(rng.normal() * scale);
  return Tensor::from_vector(v, shape);
}

double max_diff(const Tensor& a, const std::vector<double>& ref) {
  EXPECT_EQ(a.numel(), static_cast<int64_t>(ref.size()));
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.item(i) - ref[i]));
  return m;
}

TEST(OpsForward, LinearMatchesNaiveLoop) {
  const int64_t M = 37, IN = 29, OUT = 13;
  Tensor x = randf({M, IN}, 1), w = randf({OUT, IN}, 2), b = randf({OUT}, 3);
  Tensor y = ops::linear(x, w, b);
  std::vector<double> ref(M * OUT);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < OUT; ++o) {
      double s = b.item(o);
      for (int64_t i = 0; i < IN; ++i) s += x.item(m * IN + i) * w.item(o * IN + i);
      ref[m * OUT + o] = s;
    }
  EXPECT_LT(max_diff(y, ref), 1e-4) << "linear vs naive";
}

TEST(OpsForward, ActivationsMatchFormulas) {
  Tensor x = randf({1000}, 4, 3.0);
  Tensor g = ops::gelu(x), s = ops::silu(x), sp = ops::softplus(x);
  std::vector<double> rg, rs, rsp;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double v = x.item(i);
    rg.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
    rs.push_back(v / (1 + std::exp(-v)));
    rsp.push_back(std::log(1 + std::exp(v)));
  }
  EXPECT_LT(max_diff(g, rg), 1e-5);
  EXPECT_LT(max_diff(s, rs), 1e-5);
  EXPECT_LT(max_diff(sp, rsp), 1e-5);
}

TEST(OpsForward, RmsNormMatchesFormula) {
  const int64_t M = 5, C = 16;
  Tensor x = randf({M, C}, 5), w = randf({C}, 6);
  Tensor y = ops::rmsnorm(x, w, 1e-5);
  std::vector<double> ref;
  for (int64_t m = 0; m < M; ++m) {
    double ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += x.item(m * C + c) * x.item(m * C + c) / C;
    for (int64_t c = 0; c < C; ++c) ref.push_back(x.item(m * C + c) / std::sqrt(ms + 1e-5) * w.item(c));
  }
  EXPECT_LT(max_diff(y, ref), 1e-5);
}

TEST(OpsForward, CrossEntropyMatchesFormulaAndIgnoresMinusOne) {
  Tensor logits = randf({4, 10}, 7, 3.0);
  Tensor t = Tensor::from_ids({3, -1, 9, 0}, {4});
  double ref = 0;
  int counted = 0;
  for (int64_t i = 0; i < 4; ++i) {
    int tg = static_cast<int>(t.item(i));
    if (tg < 0) continue;
    double z = 0;
    for (int64_t j = 0; j < 10; ++j) z += std::exp(logits.item(i * 10 + j));
    ref += std::log(z) - logits.item(i * 10 + tg);
    ++counted;
  }
  EXPECT_NEAR(ops::cross_entropy(logits, t).item(), ref / counted, 1e-5);
  // Uniform logits over V classes give log(V).
  EXPECT_NEAR(ops::cross_entropy(Tensor::zeros({3, 50}), Tensor::from_ids({1, 2, 3}, {3})).item(),
              std::log(50.0), 1e-6);
  // All targets ignored: 0, not NaN.
  EXPECT_EQ(ops::cross_entropy(logits, Tensor::from_ids({-1, -1, -1, -1}, {4})).item(), 0.0);
  EXPECT_THROW(ops::cross_entropy(logits, Tensor::from_ids({10, 0, 0, 0}, {4})), Error);
}

TEST(OpsForward, CausalConv1dMatchesNaiveLoop) {
  const int64_t B = 2, T = 9, D = 70, K = 4;  // D > one channel block
  Tensor x = randf({B, T, D}, 8), w = randf({D, 1, K}, 9), b = randf({D}, 10);
  Tensor y = ops::causal_conv1d(x, w, b);
  std::vector<double> ref;
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) {
        double s = b.item(d);
        for (int64_t j = 0; j < K; ++j) {
          int64_t src = t - (K - 1) + j;
          if (src >= 0) s += w.item(d * K + j) * x.item((bb * T + src) * D + d);
        }
        ref.push_back(s);
      }
  EXPECT_LT(max_diff(y, ref), 1e-5);
}

TEST(OpsForward, SoftmaxRowsSumToOneAndEmbeddingGathers) {
  Tensor p = ops::softmax(randf({3, 11}, 11, 5.0));
  for (int64_t i = 0; i < 3; ++i) {
    double s = 0;
    for (int64_t j = 0; j < 11; ++j) s += p.item(i * 11 + j);
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  Tensor table = randf({6, 3}, 12);
  Tensor e = ops::embedding(Tensor::from_ids({5, 0, 5}, {3}), table);
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_EQ(e.item(0 * 3 + c), table.item(5 * 3 + c));
    EXPECT_EQ(e.item(1 * 3 + c), table.item(0 * 3 + c));
  }
  EXPECT_THROW(ops::embedding(Tensor::from_ids({6}, {1}), table), Error);
}

TEST(OpsForward, DropoutKeepsExpectationAndIsIdentityAtZero) {
  Tensor x = Tensor::full({100000}, 1.0);
  Rng rng(1);
  Tensor y = ops::dropout(x, 0.25, rng);
  double s = 0;
  int zeros = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    s += y.item(i);
    zeros += y.item(i) == 0;
  }
  EXPECT_NEAR(s / y.numel(), 1.0, 0.02);
  EXPECT_NEAR(zeros / 100000.0, 0.25, 0.01);
  EXPECT_TRUE(ops::dropout(x, 0.0, rng).same(x));
}

}  // namespace
}  // namespace mg
