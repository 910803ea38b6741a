// SGD against torch.optim.SGD's update rule written out in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "autograd/error.h"
#include "trainer/sgd.h"

namespace mg {
namespace {

// torch.optim.SGD (_single_tensor_sgd), element by element, in double.
struct SgdReference {
  std::vector<double> p, buf;
  explicit SgdReference(const std::vector<float>& p0) : p(p0.begin(), p0.end()), buf(p0.size()) {}
  void step(const SgdHyper& h, double grad_scale, const std::vector<float>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad_scale * grad[i];
      if (h.weight_decay != 0) g += double(h.weight_decay) * p[i];  // d_p.add(param, alpha=wd)
      if (h.momentum != 0) {
        buf[i] = h.step == 1 ? g : double(h.momentum) * buf[i] + (1.0 - h.dampening) * g;
        g = h.nesterov ? g + double(h.momentum) * buf[i] : buf[i];
      }
      p[i] -= double(h.lr) * g;  // param.add_(d_p, alpha=-lr)
    }
  }
};

std::vector<float> normal_vector(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (float& e : x) e = scale * normal(rng);
  return x;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<double>& ref, double floor) {
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    worst = std::max(worst, std::fabs(a[i] - ref[i]) / std::max(std::fabs(ref[i]), floor));
  }
  return worst;
}

TEST(Sgd, MatchesPyTorchRuleInDouble) {
  struct Case {
    const char* name;
    float momentum, dampening, weight_decay;
    bool nesterov;
  };
  const Case cases[] = {{"plain", 0.0f, 0.0f, 0.0f, false},
                        {"weight decay", 0.0f, 0.0f, 0.05f, false},
                        {"momentum", 0.9f, 0.0f, 0.0f, false},
                        {"momentum+dampening+wd", 0.9f, 0.3f, 0.01f, false},
                        {"nesterov+wd", 0.8f, 0.0f, 0.02f, true}};
  for (const Case& c : cases) {
    for (int64_t n : {int64_t{5}, int64_t{1001}, c.weight_decay != 0 ? int64_t{40003} : 0}) {
      // ragged sizes; 40003 runs threaded (cases with weight decay cover every branch)
      if (n == 0) continue;
      std::vector<float> param = normal_vector(n, 1.0f, 1);
      std::vector<float> buf(n, 123.0f);  // garbage: step 1 overwrites it
      SgdReference ref(param);
      SgdHyper h{.lr = 0.05f,
                 .momentum = c.momentum,
                 .dampening = c.dampening,
                 .weight_decay = c.weight_decay,
                 .nesterov = c.nesterov,
                 .step = 1};
      for (int64_t t = 1; t <= 10; ++t) {
        h.step = t;
        const std::vector<float> grad = normal_vector(n, 0.5f, 10 + uint32_t(t));
        sgd_step(h, 0.8f, n, param.data(), grad.data(), c.momentum != 0 ? buf.data() : nullptr);
        ref.step(h, 0.8, grad);
      }
      // Params ~N(0, 1): relative to each value, floored at 0.1 (near 0 the error is set by
      // the update size). The buffer sums terms of both signs, so it is compared relative to
      // its largest value, the scale its fp32 rounding errors live on.
      const double dp = max_rel_diff(param, ref.p, 0.1);
      EXPECT_LT(dp, 2e-6) << c.name << " n=" << n << " param max rel diff " << dp;
      if (c.momentum != 0) {
        double buf_max = 0;
        for (double b : ref.buf) buf_max = std::max(buf_max, std::fabs(b));
        const double db = max_rel_diff(buf, ref.buf, buf_max);
        EXPECT_LT(db, 1e-6) << c.name << " n=" << n << " buffer max diff / max|buf| " << db;
      }
    }
  }
}

// PyTorch initialises the buffer to the gradient itself on the first step, undamped.
TEST(Sgd, FirstStepBufferIsTheGradient) {
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, 0.25f}, buf = {7.0f, 7.0f};
  const SgdHyper h{.lr = 0.1f,
                   .momentum = 0.9f,
                   .dampening = 0.5f,
                   .weight_decay = 0.0f,
                   .nesterov = false,
                   .step = 1};
  sgd_step(h, 1.0f, 2, p.data(), g.data(), buf.data());
  EXPECT_EQ(buf[0], 0.5f);
  EXPECT_EQ(buf[1], 0.25f);
  EXPECT_FLOAT_EQ(p[0], 1.0f - 0.1f * 0.5f);
  EXPECT_FLOAT_EQ(p[1], -2.0f - 0.1f * 0.25f);
}

TEST(Sgd, RejectsInvalidSettings) {
  float p = 1, g = 1, buf = 0;
  SgdHyper h{.lr = 0.1f,
             .momentum = 0.9f,
             .dampening = 0.1f,
             .weight_decay = 0.0f,
             .nesterov = true,
             .step = 1};
  EXPECT_THROW(sgd_step(h, 1.0f, 1, &p, &g, &buf), Error);  // nesterov with dampening
  h.dampening = 0.0f;
  EXPECT_THROW(sgd_step(h, 1.0f, 1, &p, &g, nullptr), Error);  // momentum without a buffer
  h.lr = -1.0f;
  EXPECT_THROW(validate_sgd_hyper(h), Error);
  h.lr = 0.1f;
  h.step = 0;
  EXPECT_THROW(validate_sgd_hyper(h), Error);
}

}  // namespace
}  // namespace mg
