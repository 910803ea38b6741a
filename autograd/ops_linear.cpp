// matmul and linear: forward and backward, through the tuned BLAS (autograd/blas.h).
#include "autograd/blas.h"
#include "autograd/op_util.h"
#include "autograd/ops.h"

namespace mg::ops {

using namespace mg::detail;

// a (..., M, K) [trans_a: (..., K, M)], b (K, N) [trans_b: (N, K)] or batched like a
// -> out (..., M, N). With C = op(A) op(B):
//   dop(A) = dC op(B)^T      dop(B) = op(A)^T dC
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  check_float(a, "matmul");
  check_float(b, "matmul");
  check_same_dtype(a, b, "matmul");
  MG_CHECK(a.ndim() >= 2 && b.ndim() >= 2, "[matmul] needs >= 2-d operands: {} x {}", a.describe(),
           b.describe());
  const int64_t M = trans_a ? a.dim(-1) : a.dim(-2);
  const int64_t K = trans_a ? a.dim(-2) : a.dim(-1);
  const int64_t Kb = trans_b ? b.dim(-1) : b.dim(-2);
  const int64_t N = trans_b ? b.dim(-2) : b.dim(-1);
  MG_CHECK(K == Kb, "[matmul] inner dims differ: {}{} x {}{}", a.describe(), trans_a ? "^T" : "",
           b.describe(), trans_b ? "^T" : "");
  const int64_t batches = a.numel() / (M * K > 0 ? M * K : 1);
  const bool b_batched = b.ndim() > 2;
  if (b_batched)
    MG_CHECK(b.numel() == batches * K * N, "[matmul] batched b {} does not match a {}",
             b.describe(), a.describe());
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor out = Tensor::empty(out_shape, a.dtype());

  MG_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
    const scalar_t* A = a.data<scalar_t>();
    const scalar_t* Bp = b.data<scalar_t>();
    scalar_t* Cp = out.data<scalar_t>();
    for (int64_t i = 0; i < batches; ++i)
      gemm<scalar_t>(trans_a, trans_b, M, N, K, 1, A + i * M * K, Bp + (b_batched ? i * K * N : 0), 0,
                     Cp + i * M * N);
  });

  if (any_requires_grad({&a, &b})) {
    Node node{"matmul", {input_slot(a), input_slot(b)}, {make_output_slot(out)}, {a, b}, nullptr};
    node.backward = [=](Node& n) {
      const Tensor& A = n.saved[0];
      const Tensor& Bt = n.saved[1];
      Tensor dC = n.out_grad();
      MG_DISPATCH_FLOAT(A.dtype(), "matmul backward", [&] {
        const scalar_t* dc = dC.data<scalar_t>();
        const scalar_t* ap = A.data<scalar_t>();
        const scalar_t* bp = Bt.data<scalar_t>();
        scalar_t* da = n.needs(0) ? n.in_grad(0).data<scalar_t>() : nullptr;
        scalar_t* db = n.needs(1) ? n.in_grad(1).data<scalar_t>() : nullptr;
        for (int64_t i = 0; i < batches; ++i) {
          const scalar_t* dci = dc + i * M * N;
          const scalar_t* ai = ap + i * M * K;
          const scalar_t* bi = bp + (b_batched ? i * K * N : 0);
          if (da) {
            if (!trans_a)  // dA (M,K) += dC (M,N) op(B)^T
              gemm<scalar_t>(false, !trans_b, M, K, N, 1, dci, bi, 1, da + i * M * K);
            else  // A stored (K,M): dA += op(B) dC^T
              gemm<scalar_t>(trans_b, true, K, M, N, 1, bi, dci, 1, da + i * M * K);
          }
          if (db) {
            scalar_t* dbi = db + (b_batched ? i * K * N : 0);
            if (!trans_b)  // dB (K,N) += op(A)^T dC
              gemm<scalar_t>(!trans_a, false, K, N, M, 1, ai, dci, 1, dbi);
            else  // B stored (N,K): dB += dC^T op(A)
              gemm<scalar_t>(true, trans_a, N, K, M, 1, dci, ai, 1, dbi);
          }
        }
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// x (..., in), weight [out, in], bias [out] -> y (..., out) = x W^T + b
//   dx += dy W      dW += dy^T x      db += sum_rows(dy)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_float(x, "linear");
  check_float(weight, "linear");
  check_same_dtype(x, weight, "linear");
  MG_CHECK(weight.ndim() == 2, "[linear] weight must be [out, in], got {}", weight.describe());
  const int64_t in = weight.dim(1), outf = weight.dim(0);
  MG_CHECK(x.ndim() >= 1 && x.dim(-1) == in, "[linear] input {} does not match weight {}",
           x.describe(), weight.describe());
  if (bias.defined())
    MG_CHECK(bias.numel() == outf && bias.dtype() == x.dtype(), "[linear] bias {} for weight {}",
             bias.describe(), weight.describe());
  const int64_t M = x.numel() / in;
  Shape out_shape = x.shape();
  out_shape.back() = outf;
  Tensor out = Tensor::empty(out_shape, x.dtype());

  MG_DISPATCH_FLOAT(x.dtype(), "linear", [&] {
    scalar_t* y = out.data<scalar_t>();
    if (bias.defined()) {
      const scalar_t* b = bias.data<scalar_t>();
      parallel_for(M, [&](int64_t m) {
        for (int64_t o = 0; o < outf; ++o) y[m * outf + o] = b[o];
      }, 256);
    }
    gemm<scalar_t>(false, true, M, outf, in, 1, x.data<scalar_t>(), weight.data<scalar_t>(),
                   bias.defined() ? 1 : 0, y);
  });

  if (any_requires_grad({&x, &weight, &bias})) {
    Node node{"linear", {input_slot(x), input_slot(weight), input_slot(bias)}, {make_output_slot(out)},
              {x, weight}, nullptr};
    node.backward = [=](Node& n) {
      const Tensor& X = n.saved[0];
      const Tensor& W = n.saved[1];
      Tensor dY = n.out_grad();
      MG_DISPATCH_FLOAT(X.dtype(), "linear backward", [&] {
        const scalar_t* dy = dY.data<scalar_t>();
        if (n.needs(0))
          gemm<scalar_t>(false, false, M, in, outf, 1, dy, W.data<scalar_t>(), 1,
                         n.in_grad(0).data<scalar_t>());
        if (n.needs(1))
          gemm<scalar_t>(true, false, outf, in, M, 1, dy, X.data<scalar_t>(), 1,
                         n.in_grad(1).data<scalar_t>());
        if (n.needs(2)) {
          scalar_t* db = n.in_grad(2).data<scalar_t>();
          for (int64_t m = 0; m < M; ++m)  // row-wise: contiguous and vectorizable
            for (int64_t o = 0; o < outf; ++o) db[o] += dy[m * outf + o];
        }
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

}  // namespace mg::ops
