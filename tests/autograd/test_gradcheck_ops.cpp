// Every op's backward against central finite differences in float64 (autograd/gradcheck.h).
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

namespace mg {
namespace {

Tensor randn(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = rng.normal() * scale;
  return Tensor::from_vector(v, shape);
}

Tensor ids(const std::vector<int32_t>& v) {
  return Tensor::from_ids(v, {static_cast<int64_t>(v.size())});
}

#define EXPECT_GRADCHECK(result)                                                  \
  do {                                                                            \
    auto _r = (result);                                                           \
    EXPECT_TRUE(_r.ok) << "worst: " << _r.worst << "\n" << _r.report;             \
    EXPECT_GT(_r.checked, 0);                                                     \
  } while (0)

using In = const std::vector<Tensor>&;

TEST(Gradcheck, Matmul) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = randn(ta ? Shape{2, 4, 3} : Shape{2, 3, 4}, 1);
      Tensor b = randn(tb ? Shape{5, 4} : Shape{4, 5}, 2);
      EXPECT_GRADCHECK(gradcheck([=](In x) { return ops::matmul(x[0], x[1], ta, tb); }, {a, b}));
      Tensor bb = randn(tb ? Shape{2, 5, 4} : Shape{2, 4, 5}, 3);  // batched b
      EXPECT_GRADCHECK(gradcheck([=](In x) { return ops::matmul(x[0], x[1], ta, tb); }, {a, bb}));
    }
}

TEST(Gradcheck, Linear) {
  EXPECT_GRADCHECK(gradcheck([](In x) { return ops::linear(x[0], x[1], x[2]); },
                             {randn({2, 3, 6}, 1), randn({4, 6}, 2), randn({4}, 3)}));
  EXPECT_GRADCHECK(gradcheck([](In x) { return ops::linear(x[0], x[1]); },
                             {randn({5, 6}, 4), randn({3, 6}, 5)}));
}

TEST(Gradcheck, ElementwiseWithBroadcast) {
  Tensor a = randn({2, 3, 4}, 1);
  for (const Shape& bs : {Shape{2, 3, 4}, Shape{3, 4}, Shape{4}, Shape{1}}) {
    Tensor b = randn(bs, 2);
    EXPECT_GRADCHECK(gradcheck([](In x) { return ops::add(x[0], x[1]); }, {a, b}));
    EXPECT_GRADCHECK(gradcheck([](In x) { return ops::sub(x[0], x[1]); }, {a, b}));
    EXPECT_GRADCHECK(gradcheck([](In x) { return ops::mul(x[0], x[1]); }, {a, b}));
  }
  EXPECT_GRADCHECK(gradcheck([](In x) { return ops::scale(x[0], -2.5); }, {a}));
  EXPECT_GRADCHECK(gradcheck([](In x) { return ops::add_scalar(x[0], 3.0); }, {a}));
}

TEST(Gradcheck, Activations) {
  Tensor x = randn({3, 7}, 11, 2.0);
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::exp(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::silu(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::gelu(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::softplus(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::sigmoid(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::square(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::log(ops::add_scalar(ops::square(v[0]), 0.5)); }, {x}));
  // softplus above PyTorch's threshold 20 is linear.
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::softplus(v[0]); },
                             {Tensor::from_vector(std::vector<double>{25.0, 30.0, -30.0}, {3})}));
}

TEST(Gradcheck, Reductions) {
  Tensor x = randn({4, 5}, 3);
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::sum(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::mean(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::sum_rows(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::softmax(v[0]); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::logsumexp(v[0]); }, {x}));
}

TEST(Gradcheck, RmsNorm) {
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::rmsnorm(v[0], v[1], 1e-5); },
                             {randn({2, 3, 8}, 5), randn({8}, 6)}));
}

TEST(Gradcheck, EmbeddingAndCrossEntropy) {
  Tensor table = randn({7, 4}, 8);
  Tensor tok = Tensor::from_ids({1, 3, 3, 6, 0, 1}, {2, 3});  // repeats exercise accumulation
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::embedding(v[0], v[1]); }, {tok, table}));
  Tensor logits = randn({5, 6}, 9, 2.0);
  Tensor targets = ids({2, -1, 5, 0, -1});  // -1 rows are ignored
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::cross_entropy(v[0], v[1]); }, {logits, targets}));
}

TEST(Gradcheck, ShapeOps) {
  Tensor x = randn({2, 3, 6}, 10);
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::mul(ops::reshape(v[0], {6, 6}), ops::reshape(v[0], {6, 6})); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::slice_last(v[0], 2, 3); }, {x}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::concat_last({v[0], ops::square(v[1])}); },
                             {x, randn({2, 3, 2}, 11)}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::transpose(v[0]); }, {x}));
  Tensor rows = ids({4, 0, 4, 2});
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::gather_rows(v[0], v[1]); }, {randn({5, 3}, 12), rows}));
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::scatter_add_rows(v[0], v[1], v[2], v[3], 5); },
                             {randn({5, 3}, 13), randn({4, 3}, 14), rows, randn({4}, 15)}));
}

TEST(Gradcheck, CausalConv1d) {
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::causal_conv1d(v[0], v[1], v[2]); },
                             {randn({2, 5, 3}, 16), randn({3, 1, 4}, 17), randn({3}, 18)}));
  // T shorter than the kernel.
  EXPECT_GRADCHECK(gradcheck([](In v) { return ops::causal_conv1d(v[0], v[1], v[2]); },
                             {randn({1, 2, 3}, 19), randn({3, 1, 4}, 20), randn({3}, 21)}));
}

TEST(Gradcheck, Dropout) {
  // The mask must be the same in every evaluation: reseed the generator inside f.
  EXPECT_GRADCHECK(gradcheck([](In v) { Rng r(3); return ops::dropout(v[0], 0.3, r); }, {randn({4, 5}, 22)}));
}

}  // namespace
}  // namespace mg
