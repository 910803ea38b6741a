#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/ops.h"
#include "autograd/rng.h"
#include "autograd/tape.h"

namespace mg {

namespace {

// L = sum_k sum_i r_k[i] * out_k[i], evaluated in double without recording.
double projected(const std::vector<Tensor>& outs, const std::vector<std::vector<double>>& r) {
  double L = 0;
  for (size_t k = 0; k < outs.size(); ++k) {
    const double* o = outs[k].data<double>();
    for (int64_t i = 0; i < outs[k].numel(); ++i) L += r[k][i] * o[i];
  }
  return L;
}

}  // namespace

GradcheckResult gradcheck(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
                          std::vector<Tensor> inputs, const GradcheckOptions& opts) {
  GradcheckResult res;
  for (Tensor& t : inputs)  // private copies: the caller's tensors keep no gradient state
    if (t.dtype() == DType::F64) t = t.clone().set_requires_grad(true, /*is_param=*/true);
    else MG_CHECK(t.dtype() != DType::F32, "[gradcheck] inputs must be f64 (got {}): the check runs in double",
                  t.describe());

  // Analytic gradients: backward of L = sum r * f(x) on a private tape.
  std::vector<std::vector<double>> r;
  Rng rng(opts.seed);
  {
    Tape tape;
    TapeScope scope(tape);
    std::vector<Tensor> outs = f(inputs);
    Tensor L;
    for (const Tensor& o : outs) {
      MG_CHECK(o.dtype() == DType::F64, "[gradcheck] outputs must be f64, got {}", o.describe());
      std::vector<double> rk(static_cast<size_t>(o.numel()));
      for (double& v : rk) v = rng.uniform(-1.0, 1.0);
      Tensor term = ops::sum(ops::mul(o, Tensor::from_vector(rk, o.shape())));
      L = L.defined() ? ops::add(L, term) : term;
      r.push_back(std::move(rk));
    }
    MG_CHECK(L.defined() && L.requires_grad(), "[gradcheck] outputs do not depend on the inputs");
    tape.backward(L);
  }

  // Numeric gradients, element by element (a sample for large inputs).
  NoGradGuard no_grad;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (x.dtype() != DType::F64) continue;
    Tensor analytic = x.grad();
    double in_max_abs = 0, in_max_rel = 0;
    const int64_t n = x.numel();
    const int64_t stride = std::max<int64_t>(1, n / opts.max_checks_per_input);
    for (int64_t i = 0; i < n; i += stride) {
      double* p = x.data<double>() + i;
      const double orig = *p;
      *p = orig + opts.eps;
      const double Lp = projected(f(inputs), r);
      *p = orig - opts.eps;
      const double Lm = projected(f(inputs), r);
      *p = orig;
      const double numeric = (Lp - Lm) / (2 * opts.eps);
      const double a = analytic.defined() ? analytic.data<double>()[i] : 0.0;
      const double err = std::abs(a - numeric);
      const double rel = err / std::max(std::abs(numeric), 1e-12);
      ++res.checked;
      in_max_abs = std::max(in_max_abs, err);
      if (err > opts.atol) in_max_rel = std::max(in_max_rel, rel);
      if (err > opts.atol + opts.rtol * std::abs(numeric)) {
        if (res.ok || err > res.max_abs_err)
          res.worst = fmt::format("input {} ({}) [{}]: analytic {:.10g} numeric {:.10g}", k,
                                  x.describe(), i, a, numeric);
        res.ok = false;
      }
    }
    res.max_abs_err = std::max(res.max_abs_err, in_max_abs);
    res.max_rel_err = std::max(res.max_rel_err, in_max_rel);
    res.report += fmt::format("input {} {}: max abs err {:.3g}, max rel err {:.3g}\n", k, x.describe(),
                              in_max_abs, in_max_rel);
  }
  return res;
}

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          std::vector<Tensor> inputs, const GradcheckOptions& opts) {
  return gradcheck([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in)}; },
                   std::move(inputs), opts);
}

}  // namespace mg
