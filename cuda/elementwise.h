#pragma once
// Elementwise kernels for autograd/ops_elementwise.cpp and ops_activation.cpp: binary ops
// with the suffix / single-element broadcast, affine maps, pointwise activations, forward and
// backward. Pointers are device pointers; n counts elements; every call is asynchronous on
// the compute stream (cuda/runtime.h). T is float or double. Backward calls ACCUMULATE (+=)
// into the gradient, as every op backward does (autograd/tape.h).
#include <cstdint>

namespace mg::cuda {

enum class BinaryOp : uint8_t { Add, Sub, Mul };

// out[i] = a[i] op b[i % nb]  (nb == n: same shape; nb | n: b is a suffix of a's shape)
template <class T> void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n, int64_t nb);
// da[i] += g[i] (Add, Sub) or g[i] * b[i % nb] (Mul)
template <class T> void binary_backward_a(BinaryOp op, const T* g, const T* b, T* da, int64_t n, int64_t nb);
// db[j] += sum over i with i % nb == j of g[i] (Add), -g[i] (Sub) or g[i] * a[i] (Mul);
// a reduction in a fixed order when nb < n (deterministic). `a` is read only for Mul.
template <class T> void binary_backward_b(BinaryOp op, const T* g, const T* a, T* db, int64_t n, int64_t nb);

// out[i] = x[i] * s + c
template <class T> void affine(const T* x, T* out, int64_t n, T s, T c);
// dst[i] += src[i] * s
template <class T> void accumulate_scaled(const T* src, T* dst, int64_t n, T s);

enum class Activation : uint8_t { Exp, Log, Silu, Gelu, Softplus, Sigmoid, Square };
// y[i] = f(x[i]), with the definitions of ops.h (softplus linear above 20, exact gelu)
template <class T> void activation_forward(Activation f, const T* x, T* y, int64_t n);
// dx[i] += g[i] * f'(x[i]); `saved` is y = f(x) for Exp and Sigmoid, x for the others
template <class T> void activation_backward(Activation f, const T* g, const T* saved, T* dx, int64_t n);

}  // namespace mg::cuda
