// Shape ops: reshape (a view), slice/concat along the last dim, transpose of the last two
// dims, and the row gather / weighted scatter-add that MoE dispatch is built from.
// On the GPU (cuda/shape.h, cuda/embedding.h) row indices may live on either device: they are
// checked on the host, and scatters group them by destination row there, so repeated rows
// are summed in index order, deterministically, without atomics.
#include <cstring>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/elementwise.h"
#include "cuda/embedding.h"
#include "cuda/shape.h"

namespace mg::ops {

using namespace mg::detail;

namespace {
// dst[i] += src[i] for n elements of the tensor's float type.
void accumulate(Tensor dst, const Tensor& src) {
  const int64_t n = src.numel();
  MG_DISPATCH_FLOAT(src.dtype(), "accumulate", [&] {
    if (src.is_cuda())
      return cuda::accumulate_scaled<scalar_t>(src.dev_data<scalar_t>(), dst.dev_data<scalar_t>(), n, scalar_t(1));
    scalar_t* d = dst.data<scalar_t>();
    const scalar_t* s = src.data<scalar_t>();
    parallel_for(n, [&](int64_t i) { d[i] += s[i]; });
  });
}
}  // namespace

// Same storage, new shape; the gradient flows back unchanged (flat).
Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor out = x.view(shape);
  if (any_requires_grad({&x})) {
    Node node{"reshape", {input_slot(x)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [](Node& nd) { accumulate(nd.in_grad(0), nd.out_grad()); };
    current_tape().record(std::move(node));
  }
  return out;
}

// x (..., W) -> (..., len) = x[..., start:start+len]
Tensor slice_last(const Tensor& x, int64_t start, int64_t len) {
  const int64_t W = x.dim(-1), M = x.numel() / (W ? W : 1);
  MG_CHECK(start >= 0 && len >= 0 && start + len <= W, "[slice_last] [{}, {}) out of range for {}",
           start, start + len, x.describe());
  Shape shape = x.shape();
  shape.back() = len;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  if (x.is_cuda()) {
    MG_DISPATCH_FLOAT(x.dtype(), "slice_last", [&] {
      cuda::copy_columns<scalar_t>(x.dev_data<scalar_t>(), W, start, out.dev_data<scalar_t>(), len, 0, M, len, false);
    });
  } else {
    const size_t es = dtype_size(x.dtype());
    const char* src = static_cast<const char*>(x.raw());
    char* dst = static_cast<char*>(out.raw());
    parallel_for(M, [&](int64_t i) { std::memcpy(dst + i * len * es, src + (i * W + start) * es, len * es); }, 256);
  }
  if (any_requires_grad({&x})) {
    Node node{"slice_last", {input_slot(x)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "slice_last backward", [&] {
        if (dO.is_cuda())
          return cuda::copy_columns<scalar_t>(dO.dev_data<scalar_t>(), len, 0, nd.in_grad(0).dev_data<scalar_t>(), W,
                                              start, M, len, true);
        const scalar_t* g = dO.data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        parallel_for(M, [&](int64_t i) {
          for (int64_t j = 0; j < len; ++j) dx[i * W + start + j] += g[i * len + j];
        }, 256);
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// xs[k] (..., W_k) -> (..., sum W_k)
Tensor concat_last(const std::vector<Tensor>& xs) {
  MG_CHECK(!xs.empty(), "[concat_last] nothing to concatenate");
  const int64_t M = xs[0].numel() / (xs[0].dim(-1) ? xs[0].dim(-1) : 1);
  std::vector<int64_t> widths, offsets;
  int64_t W = 0;
  for (const Tensor& t : xs) {
    check_float(t, "concat_last");
    check_same_dtype(t, xs[0], "concat_last");
    MG_CHECK(t.ndim() == xs[0].ndim() && t.numel() / (t.dim(-1) ? t.dim(-1) : 1) == M,
             "[concat_last] {} does not match {}", t.describe(), xs[0].describe());
    offsets.push_back(W);
    widths.push_back(t.dim(-1));
    W += t.dim(-1);
  }
  Shape shape = xs[0].shape();
  shape.back() = W;
  Tensor out = Tensor::empty(shape, xs[0].dtype(), xs[0].device());
  if (out.is_cuda()) {
    MG_DISPATCH_FLOAT(out.dtype(), "concat_last", [&] {
      for (size_t k = 0; k < xs.size(); ++k)
        cuda::copy_columns<scalar_t>(xs[k].dev_data<scalar_t>(), widths[k], 0, out.dev_data<scalar_t>(), W,
                                     offsets[k], M, widths[k], false);
    });
  } else {
    const size_t es = dtype_size(out.dtype());
    char* dst = static_cast<char*>(out.raw());
    for (size_t k = 0; k < xs.size(); ++k) {
      const char* src = static_cast<const char*>(xs[k].raw());
      parallel_for(M, [&](int64_t i) {
        std::memcpy(dst + (i * W + offsets[k]) * es, src + i * widths[k] * es, widths[k] * es);
      }, 256);
    }
  }
  bool any = false;
  for (const Tensor& t : xs) any = any || any_requires_grad({&t});
  if (any) {
    Node node{"concat_last", {}, {make_output_slot(out)}, {}, nullptr};
    for (const Tensor& t : xs) node.in.push_back(input_slot(t));
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "concat_last backward", [&] {
        if (dO.is_cuda()) {
          for (size_t k = 0; k < nd.in.size(); ++k)
            if (nd.needs(k))
              cuda::copy_columns<scalar_t>(dO.dev_data<scalar_t>(), W, offsets[k], nd.in_grad(k).dev_data<scalar_t>(),
                                           widths[k], 0, M, widths[k], true);
          return;
        }
        const scalar_t* g = dO.data<scalar_t>();
        for (size_t k = 0; k < nd.in.size(); ++k) {
          if (!nd.needs(k)) continue;
          scalar_t* dx = nd.in_grad(k).data<scalar_t>();
          const int64_t w = widths[k], off = offsets[k];
          parallel_for(M, [&](int64_t i) {
            for (int64_t j = 0; j < w; ++j) dx[i * w + j] += g[i * W + off + j];
          }, 256);
        }
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// x (..., R, S) -> (..., S, R)
Tensor transpose(const Tensor& x) {
  check_float(x, "transpose");
  MG_CHECK(x.ndim() >= 2, "[transpose] needs >= 2-d input, got {}", x.describe());
  const int64_t R = x.dim(-2), S = x.dim(-1), nb = R * S > 0 ? x.numel() / (R * S) : 0;
  Shape shape = x.shape();
  std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  MG_DISPATCH_FLOAT(x.dtype(), "transpose", [&] {
    if (x.is_cuda())
      return cuda::transpose_last2<scalar_t>(x.dev_data<scalar_t>(), out.dev_data<scalar_t>(), nb, R, S, false);
    const scalar_t* in = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s) o[b * R * S + s * R + r] = in[b * R * S + r * S + s];
  });
  if (any_requires_grad({&x})) {
    Node node{"transpose", {input_slot(x)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), "transpose backward", [&] {
        if (dO.is_cuda())  // dx (nb, R, S) += transpose of dO (nb, S, R)
          return cuda::transpose_last2<scalar_t>(dO.dev_data<scalar_t>(), nd.in_grad(0).dev_data<scalar_t>(), nb, S, R,
                                                 true);
        const scalar_t* g = dO.data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        for (int64_t b = 0; b < nb; ++b)
          for (int64_t r = 0; r < R; ++r)
            for (int64_t s = 0; s < S; ++s) dx[b * R * S + r * S + s] += g[b * R * S + s * R + r];
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// x (M, C), rows I32 (n) -> (n, C);  dx[rows[i]] += dout[i]
Tensor gather_rows(const Tensor& x, const Tensor& rows) {
  check_float(x, "gather_rows");
  MG_CHECK(rows.dtype() == DType::I32, "[gather_rows] rows must be i32, got {}", rows.describe());
  const int64_t C = x.dim(-1), M = x.numel() / (C ? C : 1), n = rows.numel();
  const Tensor host_rows = rows.to(Device::CPU);  // the same handle when on the CPU
  const int32_t* r = host_rows.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    MG_CHECK(r[i] >= 0 && r[i] < M, "[gather_rows] row {} outside [0, {})", r[i], M);
  Tensor out = Tensor::empty({n, C}, x.dtype(), x.device());
  if (x.is_cuda()) {
    const Tensor dev_rows = rows.to(Device::CUDA);
    MG_DISPATCH_FLOAT(x.dtype(), "gather_rows", [&] {
      cuda::gather_rows<scalar_t>(dev_rows.dev_data<int32_t>(), n, x.dev_data<scalar_t>(), out.dev_data<scalar_t>(), C);
    });
  } else {
    const size_t rb = static_cast<size_t>(C) * dtype_size(x.dtype());
    const char* src = static_cast<const char*>(x.raw());
    char* dst = static_cast<char*>(out.raw());
    parallel_for(n, [&](int64_t i) { std::memcpy(dst + i * rb, src + r[i] * rb, rb); }, 256);
  }
  if (any_requires_grad({&x})) {
    Node node{"gather_rows", {input_slot(x), nullptr}, {make_output_slot(out)}, {host_rows}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      const int32_t* rp = nd.saved[0].data<int32_t>();
      MG_DISPATCH_FLOAT(dO.dtype(), "gather_rows backward", [&] {
        if (dO.is_cuda())
          return cuda::scatter_add_rows<scalar_t>(rp, n, dO.dev_data<scalar_t>(), nullptr,
                                                  nd.in_grad(0).dev_data<scalar_t>(), C);
        const scalar_t* g = dO.data<scalar_t>();
        scalar_t* dx = nd.in_grad(0).data<scalar_t>();
        for (int64_t i = 0; i < n; ++i)  // serial: rows may repeat
          for (int64_t c = 0; c < C; ++c) dx[rp[i] * C + c] += g[i * C + c];
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

// out (M, C) = base (or 0);  out[rows[i]] += w[i] * src[i]
//   dbase += dout;  dsrc[i] += w[i] dout[rows[i]];  dw[i] += <dout[rows[i]], src[i]>
Tensor scatter_add_rows(const Tensor& base, const Tensor& src, const Tensor& rows,
                        const Tensor& weights, int64_t M) {
  check_float(src, "scatter_add_rows");
  MG_CHECK(rows.dtype() == DType::I32, "[scatter_add_rows] rows must be i32, got {}", rows.describe());
  const int64_t C = src.dim(-1), n = rows.numel();
  MG_CHECK(src.numel() == n * C, "[scatter_add_rows] src {} for {} rows", src.describe(), n);
  if (weights.defined()) {
    check_same_dtype(src, weights, "scatter_add_rows");
    MG_CHECK(weights.numel() == n, "[scatter_add_rows] {} weights for {} rows", weights.numel(), n);
  }
  if (base.defined()) {
    check_same_dtype(src, base, "scatter_add_rows");
    MG_CHECK(base.numel() == M * C, "[scatter_add_rows] base {} is not ({}, {})", base.describe(), M, C);
  }
  const Tensor host_rows = rows.to(Device::CPU);  // the same handle when on the CPU
  const int32_t* r = host_rows.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    MG_CHECK(r[i] >= 0 && r[i] < M, "[scatter_add_rows] row {} outside [0, {})", r[i], M);
  Tensor out = base.defined() ? base.detach().clone().view({M, C}) : Tensor::zeros({M, C}, src.dtype(), src.device());
  // The backward gathers by row: on the GPU it needs the rows there.
  const Tensor saved_rows = src.is_cuda() ? rows.to(Device::CUDA) : host_rows;
  MG_DISPATCH_FLOAT(src.dtype(), "scatter_add_rows", [&] {
    if (src.is_cuda())
      return cuda::scatter_add_rows<scalar_t>(r, n, src.dev_data<scalar_t>(),
                                              weights.defined() ? weights.dev_data<scalar_t>() : nullptr,
                                              out.dev_data<scalar_t>(), C);
    const scalar_t* s = src.data<scalar_t>();
    const scalar_t* w = weights.defined() ? weights.data<scalar_t>() : nullptr;
    scalar_t* o = out.data<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {  // serial: rows repeat (a token goes to k experts)
      const scalar_t wi = w ? w[i] : scalar_t(1);
      for (int64_t c = 0; c < C; ++c) o[r[i] * C + c] += wi * s[i * C + c];
    }
  });
  if (any_requires_grad({&base, &src, &weights})) {
    Node node{"scatter_add_rows",
              {input_slot(base), input_slot(src), nullptr, input_slot(weights)},
              {make_output_slot(out)},
              {src.detach(), saved_rows, weights.defined() ? weights.detach() : Tensor()},
              nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      if (dO.is_cuda()) {
        MG_DISPATCH_FLOAT(dO.dtype(), "scatter_add_rows backward", [&] {
          const scalar_t* g = dO.dev_data<scalar_t>();
          const int32_t* rp = nd.saved[1].dev_data<int32_t>();
          const scalar_t* w = nd.saved[2].defined() ? nd.saved[2].dev_data<scalar_t>() : nullptr;
          if (nd.needs(0)) accumulate(nd.in_grad(0), dO);
          if (nd.needs(1)) cuda::gather_rows_accumulate<scalar_t>(rp, n, g, w, nd.in_grad(1).dev_data<scalar_t>(), C);
          if (nd.needs(3))
            cuda::gathered_row_dot<scalar_t>(rp, n, g, nd.saved[0].dev_data<scalar_t>(),
                                             nd.in_grad(3).dev_data<scalar_t>(), C);
        });
        return;
      }
      const int32_t* rp = nd.saved[1].data<int32_t>();
      MG_DISPATCH_FLOAT(dO.dtype(), "scatter_add_rows backward", [&] {
        const scalar_t* g = dO.data<scalar_t>();
        const scalar_t* s = nd.saved[0].data<scalar_t>();
        const scalar_t* w = nd.saved[2].defined() ? nd.saved[2].data<scalar_t>() : nullptr;
        if (nd.needs(0)) accumulate(nd.in_grad(0), dO);
        if (nd.needs(1)) {
          scalar_t* ds = nd.in_grad(1).data<scalar_t>();
          parallel_for(n, [&](int64_t i) {
            const scalar_t wi = w ? w[i] : scalar_t(1);
            for (int64_t c = 0; c < C; ++c) ds[i * C + c] += wi * g[rp[i] * C + c];
          }, 64);
        }
        if (nd.needs(3)) {
          scalar_t* dw = nd.in_grad(3).data<scalar_t>();
          parallel_for(n, [&](int64_t i) {
            scalar_t dot = 0;
            for (int64_t c = 0; c < C; ++c) dot += g[rp[i] * C + c] * s[i * C + c];
            dw[i] += dot;
          }, 64);
        }
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

}  // namespace mg::ops
