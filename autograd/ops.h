#pragma once
// Differentiable ops. Every op works on f32 and f64 tensors (f64 is what gradient checks
// run), records its backward on the current tape when grad mode is on and an input requires
// grad, and lists exactly the tensors its backward reads. Each family lives in its own file,
// forward and backward side by side:
//   ops_linear.cpp      matmul, linear
//   ops_elementwise.cpp add, sub, mul, scale, add_scalar
//   ops_activation.cpp  exp, log, silu, gelu, softplus, sigmoid
//   ops_reduce.cpp      sum, mean, softmax
//   ops_norm.cpp        rmsnorm
//   ops_embedding.cpp   embedding
//   ops_loss.cpp        cross_entropy (fused log-softmax)
//   ops_shape.cpp       reshape, slice_last, concat_last, transpose, gather_rows, scatter_add_rows
//   ops_conv1d.cpp      causal depthwise conv1d
//   ops_dropout.cpp     dropout
// Shape legend: B batch, T sequence, C d_model, V vocab, D d_inner, N d_state, K d_conv.
#include <cstdint>
#include <vector>

#include "autograd/rng.h"
#include "autograd/tensor.h"

namespace mg::ops {

// ---- products -------------------------------------------------------------------------
// a (..., M, K) [or (..., K, M) if trans_a], b (K, N) [or (N, K) if trans_b] -> (..., M, N).
// b may also be batched (..., K, N) with the same leading dims as a.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x (..., in), weight [out, in] (PyTorch layout), bias [out] or undefined -> (..., out)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- elementwise (b may broadcast: same shape, a trailing-dims suffix of a's shape, or 1 element)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double s);       // a * s
Tensor add_scalar(const Tensor& a, double s);  // a + s

// ---- activations ------------------------------------------------------------------------
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor silu(const Tensor& x);      // x * sigmoid(x)
Tensor gelu(const Tensor& x);      // exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
Tensor softplus(const Tensor& x);  // log(1 + e^x), PyTorch's threshold 20 (linear above)
Tensor sigmoid(const Tensor& x);
Tensor square(const Tensor& x);

// ---- reductions -------------------------------------------------------------------------
Tensor sum(const Tensor& x);   // all elements -> [1]
Tensor mean(const Tensor& x);  // all elements -> [1]
Tensor sum_rows(const Tensor& x);  // x (M, N) -> (N): sum over the leading rows
Tensor softmax(const Tensor& x);    // over the last dim
Tensor logsumexp(const Tensor& x);  // over the last dim: (..., n) -> (...)

// ---- normalization ----------------------------------------------------------------------
// x (..., C), weight (C): y = x / sqrt(mean(x^2) + eps) * weight
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps = 1e-5);

// ---- embedding and loss -----------------------------------------------------------------
// ids I32 (...), table [V, C] -> (..., C)
Tensor embedding(const Tensor& ids, const Tensor& table);
// logits (M, V), targets I32 (M) with ignore_index -1 -> [1]: mean over counted targets of
// -log softmax(logits)[target]. With no counted target the loss is 0 (and so is its grad).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

// ---- shape ------------------------------------------------------------------------------
Tensor reshape(const Tensor& x, const Shape& shape);  // shares storage with x
Tensor slice_last(const Tensor& x, int64_t start, int64_t len);  // x[..., start:start+len]
Tensor concat_last(const std::vector<Tensor>& xs);               // along the last dim
Tensor transpose(const Tensor& x);  // swaps the last two dims (copy)
// x (M, C), rows I32 (n) -> (n, C): out[i] = x[rows[i]]
Tensor gather_rows(const Tensor& x, const Tensor& rows);
// base (M, C) (or undefined: zeros), src (n, C), rows I32 (n), weights (n) or undefined
// -> (M, C): out = base; out[rows[i]] += weights[i] * src[i]
Tensor scatter_add_rows(const Tensor& base, const Tensor& src, const Tensor& rows,
                        const Tensor& weights, int64_t M);

// ---- convolution ------------------------------------------------------------------------
// Causal depthwise conv over time: x (B, T, D), weight [D, 1, K], bias [D]
// y[b,t,d] = bias[d] + sum_{j<K} weight[d,0,j] * x[b, t-(K-1)+j, d]   (x at t<0 is 0)
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias);

// ---- regularization ---------------------------------------------------------------------
// Inverted dropout with probability p (identity when p == 0 or grad mode is off and
// `training` is false). The mask is drawn from `rng`. On the GPU one rng.next_u64() per call
// seeds a counter-based hash of the element index (cuda/dropout.h): reproducible from the
// Rng state, but a different mask than the CPU draws from the same state.
Tensor dropout(const Tensor& x, double p, Rng& rng, bool training = true);

}  // namespace mg::ops
