// sum, mean, sum_rows, softmax and logsumexp over the last dim.
#include <cmath>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/reduce.h"

namespace mg::ops {

using namespace mg::detail;

namespace {
// Scalar reduction with weight w per element: out = w * sum(x); dx += w * dout.
Tensor weighted_sum(const Tensor& x, double w, const char* name) {
  check_float(x, name);
  const int64_t n = x.numel();
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
  MG_DISPATCH_FLOAT(x.dtype(), name, [&] {
    if (x.is_cuda()) return cuda::sum_all<scalar_t>(x.dev_data<scalar_t>(), n, w, out.dev_data<scalar_t>());
    const scalar_t* in = x.data<scalar_t>();
    // double accumulation: losses are sums of many terms
    const double s = deterministic_sum(n, [&](int64_t i) { return static_cast<double>(in[i]); });
    out.data<scalar_t>()[0] = static_cast<scalar_t>(s * w);
  });
  if (any_requires_grad({&x})) {
    Node node{name, {input_slot(x)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), name, [&] {
        if (dO.is_cuda())
          return cuda::sum_all_backward<scalar_t>(dO.dev_data<scalar_t>(), w, nd.in_grad(0).dev_data<scalar_t>(), n);
        const scalar_t g = dO.data<scalar_t>()[0] * static_cast<scalar_t>(w);
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(n, [&](int64_t i) { dx[i] += g; });
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}
}  // namespace

Tensor sum(const Tensor& x) { return weighted_sum(x, 1.0, "sum"); }
Tensor mean(const Tensor& x) {
  MG_CHECK(x.numel() > 0, "[mean] of an empty tensor {}", x.describe());
  return weighted_sum(x, 1.0 / static_cast<double>(x.numel()), "mean");
}

// x (M, N) -> (N): out[j] = sum_i x[i, j];   dx[i, j] += dout[j]
Tensor sum_rows(const Tensor& x) {
  check_float(x, "sum_rows");
  MG_CHECK(x.ndim() >= 1, "[sum_rows] needs >= 1-d input");
  const int64_t N = x.dim(-1), M = x.numel() / (N ? N : 1);
  Tensor out = Tensor::zeros({N}, x.dtype(), x.device());
  MG_DISPATCH_FLOAT(x.dtype(), "sum_rows", [&] {
    if (x.is_cuda()) return cuda::sum_rows<scalar_t>(x.dev_data<scalar_t>(), M, N, out.dev_data<scalar_t>());
    const scalar_t* in = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) o[j] += in[i * N + j];
  });
  if (any_requires_grad({&x})) {
    Node node{"sum_rows", {input_slot(x)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "sum_rows", [&] {
        if (dO.is_cuda())
          return cuda::sum_rows_backward<scalar_t>(dO.dev_data<scalar_t>(), M, N, nd.in_grad(0).dev_data<scalar_t>());
        const scalar_t* g = dO.data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(M, [&](int64_t i) {
          for (int64_t j = 0; j < N; ++j) dx[i * N + j] += g[j];
        }, 64);
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// y = softmax(x) over the last dim;  dx = y * (dy - sum(dy * y))
Tensor softmax(const Tensor& x) {
  check_float(x, "softmax");
  const int64_t N = x.dim(-1), M = x.numel() / (N ? N : 1);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  MG_DISPATCH_FLOAT(x.dtype(), "softmax", [&] {
    if (x.is_cuda()) return cuda::softmax_forward<scalar_t>(x.dev_data<scalar_t>(), out.dev_data<scalar_t>(), M, N);
    const scalar_t* in = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    parallel_for(M, [&](int64_t i) {
      const scalar_t* r = in + i * N;
      scalar_t mx = r[0];
      for (int64_t j = 1; j < N; ++j) mx = std::max(mx, r[j]);
      scalar_t s = 0;
      for (int64_t j = 0; j < N; ++j) s += (o[i * N + j] = std::exp(r[j] - mx));
      for (int64_t j = 0; j < N; ++j) o[i * N + j] /= s;
    }, 64);
  });
  if (any_requires_grad({&x})) {
    Node node{"softmax", {input_slot(x)}, {make_output_slot(out)}, {out.detach()}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "softmax", [&] {
        if (dO.is_cuda())
          return cuda::softmax_backward<scalar_t>(dO.dev_data<scalar_t>(), nd.saved[0].dev_data<scalar_t>(),
                                                  nd.in_grad(0).dev_data<scalar_t>(), M, N);
        const scalar_t* g = dO.data<scalar_t>();
        const scalar_t* y = nd.saved[0].data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(M, [&](int64_t i) {
          scalar_t dot = 0;
          for (int64_t j = 0; j < N; ++j) dot += g[i * N + j] * y[i * N + j];
          for (int64_t j = 0; j < N; ++j) dx[i * N + j] += y[i * N + j] * (g[i * N + j] - dot);
        }, 64);
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// (..., N) -> (...): log sum_j exp(x_j);   dx_j += dy * softmax(x)_j
Tensor logsumexp(const Tensor& x) {
  check_float(x, "logsumexp");
  const int64_t N = x.dim(-1), M = x.numel() / (N ? N : 1);
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  MG_DISPATCH_FLOAT(x.dtype(), "logsumexp", [&] {
    if (x.is_cuda()) return cuda::logsumexp_forward<scalar_t>(x.dev_data<scalar_t>(), out.dev_data<scalar_t>(), M, N);
    const scalar_t* in = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    parallel_for(M, [&](int64_t i) {
      const scalar_t* r = in + i * N;
      scalar_t mx = r[0];
      for (int64_t j = 1; j < N; ++j) mx = std::max(mx, r[j]);
      scalar_t s = 0;
      for (int64_t j = 0; j < N; ++j) s += std::exp(r[j] - mx);
      o[i] = mx + std::log(s);
    }, 64);
  });
  if (any_requires_grad({&x})) {
    Node node{"logsumexp", {input_slot(x)}, {make_output_slot(out)}, {x.detach(), out.detach()}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "logsumexp", [&] {
        if (dO.is_cuda())
          return cuda::logsumexp_backward<scalar_t>(dO.dev_data<scalar_t>(), nd.saved[0].dev_data<scalar_t>(),
                                                    nd.saved[1].dev_data<scalar_t>(),
                                                    nd.in_grad(0).dev_data<scalar_t>(), M, N);
        const scalar_t* g = dO.data<scalar_t>();
        const scalar_t* in = nd.saved[0].data<scalar_t>();
        const scalar_t* lse = nd.saved[1].data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(M, [&](int64_t i) {
          for (int64_t j = 0; j < N; ++j) dx[i * N + j] += g[i] * std::exp(in[i * N + j] - lse[i]);
        }, 64);
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

}  // namespace mg::ops
