// Pointwise activations. Each is a pair (value, derivative); backward computes
// dx += dy * f'(x), reading the saved input (or, for exp, the saved output: e^x is its own
// derivative, so the input need not be kept).
#include <cmath>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/elementwise.h"

namespace mg::ops {

using namespace mg::detail;

namespace {

template <class T> T sigmoid_of(T x) { return T(1) / (T(1) + std::exp(-x)); }

// PyTorch's softplus: linear above threshold 20 (beta = 1), to avoid overflow in exp.
template <class T> T softplus_of(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

enum class Act { Exp, Log, Silu, Gelu, Softplus, Sigmoid, Square };

template <class T> T act_value(Act k, T x) {
  switch (k) {
    case Act::Exp: return std::exp(x);
    case Act::Log: return std::log(x);
    case Act::Silu: return x * sigmoid_of(x);
    case Act::Gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));
    case Act::Softplus: return softplus_of(x);
    case Act::Sigmoid: return sigmoid_of(x);
    case Act::Square: return x * x;
  }
  return 0;
}

// f'(x), given x and y = f(x).
template <class T> T act_derivative(Act k, T x, T y) {
  switch (k) {
    case Act::Exp: return y;
    case Act::Log: return T(1) / x;
    case Act::Silu: { T s = sigmoid_of(x); return s * (T(1) + x * (T(1) - s)); }
    case Act::Gelu:  // Phi(x) + x phi(x)
      return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
    case Act::Softplus: return x > T(20) ? T(1) : sigmoid_of(x);
    case Act::Sigmoid: return y * (T(1) - y);
    case Act::Square: return T(2) * x;
  }
  return 0;
}

// The GPU kernels' name for an activation (cuda/elementwise.h lists them in the same order).
cuda::Activation gpu_act(Act k) { return static_cast<cuda::Activation>(static_cast<int>(k)); }
static_assert(static_cast<int>(Act::Square) == static_cast<int>(cuda::Activation::Square));

Tensor activation(const Tensor& x, Act kind, const char* name) {
  check_float(x, name);
  const int64_t n = x.numel();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  MG_DISPATCH_FLOAT(x.dtype(), name, [&] {
    if (x.is_cuda())
      return cuda::activation_forward<scalar_t>(gpu_act(kind), x.dev_data<scalar_t>(), out.dev_data<scalar_t>(), n);
    const scalar_t* in = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    parallel_for(n, [&](int64_t i) { o[i] = act_value(kind, in[i]); }, 4096);
  });
  if (!any_requires_grad({&x})) return out;

  // exp and sigmoid need only y; the others need x.
  const bool needs_x = !(kind == Act::Exp || kind == Act::Sigmoid);
  Node node{name, {input_slot(x)}, {make_output_slot(out)},
            {needs_x ? x.detach() : out.detach()}, nullptr};
  node.backward = [=](Node& nd) {
    Tensor dO = nd.out_grad();
    MG_DISPATCH_FLOAT(dO.dtype(), name, [&] {
      if (dO.is_cuda())
        return cuda::activation_backward<scalar_t>(gpu_act(kind), dO.dev_data<scalar_t>(),
                                                   nd.saved[0].dev_data<scalar_t>(),
                                                   nd.in_grad(0).dev_data<scalar_t>(), n);
      const scalar_t* g = dO.data<scalar_t>();
      const scalar_t* s = nd.saved[0].data<scalar_t>();
      scalar_t* dx = nd.in_grad(0).data<scalar_t>();
      parallel_for(n, [&](int64_t i) {
        scalar_t xi = needs_x ? s[i] : scalar_t(0);
        scalar_t yi = needs_x ? scalar_t(0) : s[i];
        dx[i] += g[i] * act_derivative(kind, xi, yi);
      }, 4096);
    });
  };
  current_tape().record(std::move(node));
  return out;
}

}  // namespace

Tensor exp(const Tensor& x) { return activation(x, Act::Exp, "exp"); }
Tensor log(const Tensor& x) { return activation(x, Act::Log, "log"); }
Tensor silu(const Tensor& x) { return activation(x, Act::Silu, "silu"); }
Tensor gelu(const Tensor& x) { return activation(x, Act::Gelu, "gelu"); }
Tensor softplus(const Tensor& x) { return activation(x, Act::Softplus, "softplus"); }
Tensor sigmoid(const Tensor& x) { return activation(x, Act::Sigmoid, "sigmoid"); }
Tensor square(const Tensor& x) { return activation(x, Act::Square, "square"); }

}  // namespace mg::ops
