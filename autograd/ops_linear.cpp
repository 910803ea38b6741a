// matmul and linear: forward and backward, through the tuned BLAS (autograd/blas.h) on the
// CPU and cuBLAS (cuda/gemm.h) on the GPU: the same row-major gemm calls on either.
#include "autograd/blas.h"
#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/gemm.h"

namespace mg::ops {

using namespace mg::detail;

namespace {

// C = alpha op(A) op(B) + beta C on the device that holds the operands: `batch` products at
// the given element strides (0: shared by every product).
template <class T>
void gemm_on(Device dev, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
             const T* B, T beta, T* C, int64_t batch = 1, int64_t sa = 0, int64_t sb = 0, int64_t sc = 0) {
  if (dev == Device::CUDA) return cuda::gemm<T>(ta, tb, M, N, K, alpha, A, B, beta, C, batch, sa, sb, sc);
  for (int64_t i = 0; i < batch; ++i)
    gemm<T>(ta, tb, M, N, K, alpha, A + i * sa, B + i * sb, beta, C + i * sc);
}

}  // namespace

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
  const Device dev = a.device();
  Tensor out = Tensor::empty(out_shape, a.dtype(), dev);

  MG_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
    gemm_on<scalar_t>(dev, trans_a, trans_b, M, N, K, 1, a.dev_data<scalar_t>(), b.dev_data<scalar_t>(), 0,
                      out.dev_data<scalar_t>(), batches, M * K, b_batched ? K * N : 0, M * N);
  });

  if (any_requires_grad({&a, &b})) {
    Node node{"matmul", {input_slot(a), input_slot(b)}, {make_output_slot(out)}, {a, b}, nullptr};
    node.backward = [=](Node& n) {
      const Tensor& A = n.saved[0];
      const Tensor& Bt = n.saved[1];
      Tensor dC = n.out_grad();
      const Device dev = A.device();
      MG_DISPATCH_FLOAT(A.dtype(), "matmul backward", [&] {
        const scalar_t* dc = dC.dev_data<scalar_t>();
        const scalar_t* ap = A.dev_data<scalar_t>();
        const scalar_t* bp = Bt.dev_data<scalar_t>();
        const int64_t sb = b_batched ? K * N : 0;
        if (n.needs(0)) {
          scalar_t* da = n.in_grad(0).dev_data<scalar_t>();
          if (!trans_a)  // dA (M,K) += dC (M,N) op(B)^T
            gemm_on<scalar_t>(dev, false, !trans_b, M, K, N, 1, dc, bp, 1, da, batches, M * N, sb, M * K);
          else  // A stored (K,M): dA += op(B) dC^T
            gemm_on<scalar_t>(dev, trans_b, true, K, M, N, 1, bp, dc, 1, da, batches, sb, M * N, M * K);
        }
        if (n.needs(1)) {
          scalar_t* db = n.in_grad(1).dev_data<scalar_t>();
          // A shared b sums its gradient over the batch: products run one after another into
          // the same dB (beta = 1), in batch order. On the GPU, when A is not transposed the
          // batch is one product over batches*M rows instead (one launch, not `batches`).
          int64_t Mr = M, runs = b_batched ? 1 : batches, per_run = b_batched ? batches : 1;
          if (dev == Device::CUDA && !b_batched && !trans_a) Mr = M * batches, runs = 1;
          for (int64_t r = 0; r < runs; ++r) {
            const scalar_t* ar = ap + r * M * K;
            const scalar_t* dcr = dc + r * M * N;
            if (!trans_b)  // dB (K,N) += op(A)^T dC
              gemm_on<scalar_t>(dev, !trans_a, false, K, N, Mr, 1, ar, dcr, 1, db, per_run, M * K, M * N, sb);
            else  // B stored (N,K): dB += dC^T op(A)
              gemm_on<scalar_t>(dev, true, trans_a, N, K, Mr, 1, dcr, ar, 1, db, per_run, M * N, M * K, sb);
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
  const Device dev = x.device();
  Tensor out = Tensor::empty(out_shape, x.dtype(), dev);

  MG_DISPATCH_FLOAT(x.dtype(), "linear", [&] {
    if (dev == Device::CUDA) {
      scalar_t* y = out.dev_data<scalar_t>();
      if (bias.defined()) cuda::broadcast_rows<scalar_t>(bias.dev_data<scalar_t>(), M, outf, y);
      cuda::gemm<scalar_t>(false, true, M, outf, in, 1, x.dev_data<scalar_t>(), weight.dev_data<scalar_t>(),
                           bias.defined() ? 1 : 0, y);
      return;
    }
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
      const Device dev = X.device();
      MG_DISPATCH_FLOAT(X.dtype(), "linear backward", [&] {
        const scalar_t* dy = dY.dev_data<scalar_t>();
        if (n.needs(0))
          gemm_on<scalar_t>(dev, false, false, M, in, outf, 1, dy, W.dev_data<scalar_t>(), 1,
                            n.in_grad(0).dev_data<scalar_t>());
        if (n.needs(1))
          gemm_on<scalar_t>(dev, true, false, outf, in, M, 1, dy, X.dev_data<scalar_t>(), 1,
                            n.in_grad(1).dev_data<scalar_t>());
        if (n.needs(2) && dev == Device::CUDA) {
          cuda::add_column_sums<scalar_t>(dy, M, outf, n.in_grad(2).dev_data<scalar_t>());
        } else if (n.needs(2)) {
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
