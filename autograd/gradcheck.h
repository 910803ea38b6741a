#pragma once
// Gradient checking by central finite differences in float64.
//
// The function under test runs the same op code instantiated for double (every op supports
// f64), so the finite differences are accurate to ~1e-10 and a tolerance of ~1e-6 catches a
// wrong sign, a missing term or a transposed index, which all give O(1) relative errors.
//
// The scalar checked is L = sum_i r_i * f(x)_i with a fixed random projection r, so every
// output element (and any mixing between them) is exercised, not only their sum.
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace mg {

struct GradcheckOptions {
  double eps = 1e-6;   // finite-difference step
  double atol = 1e-6;  // pass if |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-5;
  uint64_t seed = 7;   // for the output projection r
  int64_t max_checks_per_input = 400;  // sample elements of large inputs (evenly spaced)
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  int64_t checked = 0;
  std::string worst;   // "input 1 [17]: analytic 0.31 numeric -0.31"
  std::string report;  // one line per input: max errors
};

// `inputs`: f64 tensors (those to check; they are set to require grad) and non-float tensors
// (token ids), passed through. `f` must be deterministic and not modify its inputs.
GradcheckResult gradcheck(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
                          std::vector<Tensor> inputs, const GradcheckOptions& opts = {});

// Convenience for single-output functions.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          std::vector<Tensor> inputs, const GradcheckOptions& opts = {});

}  // namespace mg
