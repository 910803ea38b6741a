#include "model/init.h"

#include <cmath>

namespace mg {

namespace {
template <class F>
void fill_with(Tensor& t, F&& draw) {
  if (t.is_meta()) return;
  MG_DISPATCH_FLOAT(t.dtype(), "init", [&] {
    scalar_t* p = t.data<scalar_t>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<scalar_t>(draw());
  });
}
}  // namespace

void fill_uniform(Tensor& t, Rng& rng, double lo, double hi) {
  fill_with(t, [&] { return rng.uniform(lo, hi); });
}

void fill_normal(Tensor& t, Rng& rng, double mean, double std) {
  fill_with(t, [&] { return mean + std * rng.normal(); });
}

void fill_kaiming_uniform_a_sqrt5(Tensor& t, Rng& rng, int64_t fan_in) {
  // gain = sqrt(2 / (1 + a^2)) = sqrt(1/3); bound = gain * sqrt(3 / fan_in) = 1/sqrt(fan_in)
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  fill_uniform(t, rng, -bound, bound);
}

}  // namespace mg
