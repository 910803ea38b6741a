// Regression: a parameter whose gradient stays zero for many steps (an MoE expert that gets
// no tokens) used to drive its fp16 block scale to 32768 / tiny = inf and put NaN into the
// state and the weights after ~675 steps. The state must stay finite and the weights must
// only decay.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "trainer/adamw.h"

namespace mg {
namespace {

TEST(AdamWFp16, ZeroGradientsForThousandsOfStepsStayFinite) {
  const int64_t n = 300;  // three blocks, the last one short
  auto layout = AdamWFp16Layout::for_size(n);
  std::vector<float> p(n, 0.5f), g(n, 0.0f), m(n), v(n);
  std::vector<uint16_t> mq(n, 0), vq(n, 0);
  std::vector<float> ms(layout.n_blocks, 0.0f), vs(layout.n_blocks, 0.0f);
  AdamWFp16State st{mq.data(), vq.data(), ms.data(), vs.data()};
  AdamWHyper h;
  h.lr = 1e-3f;
  h.weight_decay = 0.0f;
  // A few real gradients first, then 3000 steps of exact zeros.
  for (int64_t step = 1; step <= 3010; ++step) {
    h.step = step;
    for (int64_t i = 0; i < n; ++i) g[i] = step <= 10 ? 1e-3f * static_cast<float>((i % 7) - 3) : 0.0f;
    adamw_step_fp16(h, 1.0f, n, p.data(), g.data(), st);
  }
  adamw_fp16_state_decode(n, st, m.data(), v.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(p[i])) << "param " << i;
    ASSERT_TRUE(std::isfinite(m[i]) && std::isfinite(v[i])) << "state " << i;
  }
  for (float s : ms) EXPECT_TRUE(std::isfinite(s));
  for (float s : vs) EXPECT_TRUE(std::isfinite(s));
}

}  // namespace
}  // namespace mg
