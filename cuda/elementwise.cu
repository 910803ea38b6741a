// Elementwise kernels (cuda/elementwise.h): grid-stride loops; the broadcast backward onto b
// is a deterministic column (or whole-tensor) reduction from cuda/kernel_util.cuh.
#include "cuda/elementwise.h"
#include "cuda/kernel_util.cuh"

namespace mg::cuda {

using namespace detail;

namespace {

template <BinaryOp OP, class T>
__device__ __forceinline__ T apply(T x, T y) {
  if constexpr (OP == BinaryOp::Add) return x + y;
  else if constexpr (OP == BinaryOp::Sub) return x - y;
  else return x * y;
}

template <BinaryOp OP, class T>
__global__ void binary_kernel(const T* a, const T* b, T* out, int64_t n, int64_t nb) {
  if (nb == n) {
    MG_GRID_STRIDE(i, n) out[i] = apply<OP>(a[i], b[i]);
  } else if (nb == 1) {
    const T y = b[0];
    MG_GRID_STRIDE(i, n) out[i] = apply<OP>(a[i], y);
  } else {
    MG_GRID_STRIDE(i, n) out[i] = apply<OP>(a[i], b[i % nb]);
  }
}

template <class T>
__global__ void accumulate_kernel(const T* g, T* da, int64_t n) {
  MG_GRID_STRIDE(i, n) da[i] += g[i];
}

template <class T>
__global__ void accumulate_mul_kernel(const T* g, const T* b, T* da, int64_t n, int64_t nb) {
  if (nb == n) {
    MG_GRID_STRIDE(i, n) da[i] += g[i] * b[i];
  } else {
    MG_GRID_STRIDE(i, n) da[i] += g[i] * b[i % nb];
  }
}

// The per-element term of db: g, -g or g * a.
template <BinaryOp OP, class T>
struct GradB {
  const T* g;
  const T* a;
  __device__ __forceinline__ T operator()(int64_t i) const {
    if constexpr (OP == BinaryOp::Add) return g[i];
    else if constexpr (OP == BinaryOp::Sub) return -g[i];
    else return g[i] * a[i];
  }
  __device__ __forceinline__ T operator()(int64_t r, int64_t j) const { return (*this)(r * nb + j); }
  int64_t nb;
};

template <BinaryOp OP, class T>
__global__ void grad_b_same_shape_kernel(GradB<OP, T> f, T* db, int64_t n) {
  MG_GRID_STRIDE(i, n) db[i] += f(i);
}

template <class T>
struct AddToFirst {  // db[0] += v
  T* db;
  template <class Acc> __device__ void operator()(Acc v) const { db[0] += static_cast<T>(v); }
};

template <BinaryOp OP, class T>
void binary_backward_b_impl(const T* g, const T* a, T* db, int64_t n, int64_t nb) {
  const GradB<OP, T> f{g, a, nb};
  if (nb == n) {
    grad_b_same_shape_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(f, db, n);
    MG_CUDA_CHECK_LAUNCH("grad_b_same_shape_kernel");
  } else if (nb == 1) {
    full_sum<T>(n, f, AddToFirst<T>{db});
  } else {
    colsum<T>(n / nb, nb, f, AddToIndex<T>{db});
  }
}

template <class T>
__global__ void affine_kernel(const T* x, T* out, int64_t n, T s, T c) {
  MG_GRID_STRIDE(i, n) out[i] = x[i] * s + c;
}

template <class T>
__global__ void accumulate_scaled_kernel(const T* src, T* dst, int64_t n, T s) {
  MG_GRID_STRIDE(i, n) dst[i] += src[i] * s;
}

// --- activations: the same formulas as autograd/ops_activation.cpp ----------------------
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <class T> __device__ __forceinline__ T sigmoid_of(T x) { return T(1) / (T(1) + d_exp(-x)); }

template <Activation F, class T>
__device__ __forceinline__ T act_value(T x) {
  if constexpr (F == Activation::Exp) return d_exp(x);
  else if constexpr (F == Activation::Log) return d_log(x);
  else if constexpr (F == Activation::Silu) return x * sigmoid_of(x);
  else if constexpr (F == Activation::Gelu) return T(0.5) * x * (T(1) + d_erf(x * T(kInvSqrt2)));
  else if constexpr (F == Activation::Softplus) return x > T(20) ? x : d_log1p(d_exp(x));
  else if constexpr (F == Activation::Sigmoid) return sigmoid_of(x);
  else return x * x;
}

// f'(x) from s = y (Exp, Sigmoid) or s = x (the others)
template <Activation F, class T>
__device__ __forceinline__ T act_derivative(T s) {
  if constexpr (F == Activation::Exp) return s;
  else if constexpr (F == Activation::Log) return T(1) / s;
  else if constexpr (F == Activation::Silu) { const T sg = sigmoid_of(s); return sg * (T(1) + s * (T(1) - sg)); }
  else if constexpr (F == Activation::Gelu)
    return T(0.5) * (T(1) + d_erf(s * T(kInvSqrt2))) + s * T(kInvSqrt2Pi) * d_exp(T(-0.5) * s * s);
  else if constexpr (F == Activation::Softplus) return s > T(20) ? T(1) : sigmoid_of(s);
  else if constexpr (F == Activation::Sigmoid) return s * (T(1) - s);
  else return T(2) * s;
}

template <Activation F, class T>
__global__ void activation_forward_kernel(const T* x, T* y, int64_t n) {
  MG_GRID_STRIDE(i, n) y[i] = act_value<F>(x[i]);
}

template <Activation F, class T>
__global__ void activation_backward_kernel(const T* g, const T* s, T* dx, int64_t n) {
  MG_GRID_STRIDE(i, n) dx[i] += g[i] * act_derivative<F>(s[i]);
}

// Calls f(std::integral_constant<BinaryOp, op>{}).
template <class F>
void with_binary(BinaryOp op, F&& f) {
  switch (op) {
    case BinaryOp::Add: return f(std::integral_constant<BinaryOp, BinaryOp::Add>{});
    case BinaryOp::Sub: return f(std::integral_constant<BinaryOp, BinaryOp::Sub>{});
    case BinaryOp::Mul: return f(std::integral_constant<BinaryOp, BinaryOp::Mul>{});
  }
}

template <class F>
void with_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::Exp: return f(std::integral_constant<Activation, Activation::Exp>{});
    case Activation::Log: return f(std::integral_constant<Activation, Activation::Log>{});
    case Activation::Silu: return f(std::integral_constant<Activation, Activation::Silu>{});
    case Activation::Gelu: return f(std::integral_constant<Activation, Activation::Gelu>{});
    case Activation::Softplus: return f(std::integral_constant<Activation, Activation::Softplus>{});
    case Activation::Sigmoid: return f(std::integral_constant<Activation, Activation::Sigmoid>{});
    case Activation::Square: return f(std::integral_constant<Activation, Activation::Square>{});
  }
}

}  // namespace

template <class T>
void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n, int64_t nb) {
  if (n <= 0) return;
  with_binary(op, [&](auto k) {
    binary_kernel<decltype(k)::value><<<grid_for(n), kBlock, 0, compute_stream()>>>(a, b, out, n, nb);
  });
  MG_CUDA_CHECK_LAUNCH("binary_kernel");
}

template <class T>
void binary_backward_a(BinaryOp op, const T* g, const T* b, T* da, int64_t n, int64_t nb) {
  if (n <= 0) return;
  if (op == BinaryOp::Mul) accumulate_mul_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(g, b, da, n, nb);
  else accumulate_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(g, da, n);
  MG_CUDA_CHECK_LAUNCH("binary_backward_a");
}

template <class T>
void binary_backward_b(BinaryOp op, const T* g, const T* a, T* db, int64_t n, int64_t nb) {
  if (n <= 0 || nb <= 0) return;
  with_binary(op, [&](auto k) { binary_backward_b_impl<decltype(k)::value>(g, a, db, n, nb); });
}

template <class T>
void affine(const T* x, T* out, int64_t n, T s, T c) {
  if (n <= 0) return;
  affine_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(x, out, n, s, c);
  MG_CUDA_CHECK_LAUNCH("affine_kernel");
}

template <class T>
void accumulate_scaled(const T* src, T* dst, int64_t n, T s) {
  if (n <= 0) return;
  accumulate_scaled_kernel<<<grid_for(n), kBlock, 0, compute_stream()>>>(src, dst, n, s);
  MG_CUDA_CHECK_LAUNCH("accumulate_scaled_kernel");
}

template <class T>
void activation_forward(Activation f, const T* x, T* y, int64_t n) {
  if (n <= 0) return;
  with_activation(f, [&](auto k) {
    activation_forward_kernel<decltype(k)::value><<<grid_for(n), kBlock, 0, compute_stream()>>>(x, y, n);
  });
  MG_CUDA_CHECK_LAUNCH("activation_forward_kernel");
}

template <class T>
void activation_backward(Activation f, const T* g, const T* saved, T* dx, int64_t n) {
  if (n <= 0) return;
  with_activation(f, [&](auto k) {
    activation_backward_kernel<decltype(k)::value><<<grid_for(n), kBlock, 0, compute_stream()>>>(g, saved, dx, n);
  });
  MG_CUDA_CHECK_LAUNCH("activation_backward_kernel");
}

#define MG_INSTANTIATE(T)                                                                      \
  template void binary<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t);                 \
  template void binary_backward_a<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t);      \
  template void binary_backward_b<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t);      \
  template void affine<T>(const T*, T*, int64_t, T, T);                                        \
  template void accumulate_scaled<T>(const T*, T*, int64_t, T);                                \
  template void activation_forward<T>(Activation, const T*, T*, int64_t);                      \
  template void activation_backward<T>(Activation, const T*, const T*, T*, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
