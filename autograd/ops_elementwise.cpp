// add, sub, mul, scale, add_scalar with the broadcasting the model needs: b has a's shape,
// a trailing-dims suffix of it (a bias, a norm weight), or a single element.
#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/elementwise.h"

namespace mg::ops {

using namespace mg::detail;

namespace {

// Number of elements of b, after checking that b broadcasts against a.
int64_t broadcast_size(const Tensor& a, const Tensor& b, const char* op) {
  check_float(a, op);
  check_float(b, op);
  check_same_dtype(a, b, op);
  const int64_t nb = b.numel();
  if (nb == a.numel() || nb == 1) return nb;
  bool suffix = b.ndim() <= a.ndim();
  for (int i = 1; suffix && i <= b.ndim(); ++i) suffix = b.dim(-i) == a.dim(-i);
  MG_CHECK(suffix, "[{}] cannot broadcast {} against {}", op, b.describe(), a.describe());
  return nb;
}

// Reduces a gradient of a's shape onto b's (nb elements): db[j] += sum_rows g[r*nb + j] * f(r*nb+j).
template <class T, class F>
void reduce_broadcast(T* db, int64_t n, int64_t nb, F&& g) {
  if (nb == n) {
    parallel_for(n, [&](int64_t i) { db[i] += g(i); });
    return;
  }
  for (int64_t r = 0; r < n / nb; ++r)
    for (int64_t j = 0; j < nb; ++j) db[j] += g(r * nb + j);
}

enum class Binary { Add, Sub, Mul };

cuda::BinaryOp gpu_op(Binary kind) {
  return kind == Binary::Add ? cuda::BinaryOp::Add : kind == Binary::Sub ? cuda::BinaryOp::Sub : cuda::BinaryOp::Mul;
}

Tensor binary(const Tensor& a, const Tensor& b, Binary kind, const char* name) {
  const int64_t nb = broadcast_size(a, b, name);
  const int64_t n = a.numel();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  MG_DISPATCH_FLOAT(a.dtype(), name, [&] {
    if (a.is_cuda())
      return cuda::binary<scalar_t>(gpu_op(kind), a.dev_data<scalar_t>(), b.dev_data<scalar_t>(),
                                    out.dev_data<scalar_t>(), n, nb);
    const scalar_t* x = a.data<scalar_t>();
    const scalar_t* y = b.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    if (nb == n) {
      if (kind == Binary::Add) parallel_for(n, [&](int64_t i) { o[i] = x[i] + y[i]; });
      if (kind == Binary::Sub) parallel_for(n, [&](int64_t i) { o[i] = x[i] - y[i]; });
      if (kind == Binary::Mul) parallel_for(n, [&](int64_t i) { o[i] = x[i] * y[i]; });
    } else {
      parallel_for(n, [&](int64_t i) {
        scalar_t v = y[i % nb];
        o[i] = kind == Binary::Add ? x[i] + v : kind == Binary::Sub ? x[i] - v : x[i] * v;
      });
    }
  });
  if (!any_requires_grad({&a, &b})) return out;

  std::vector<Tensor> saved;
  if (kind == Binary::Mul) saved = {a, b};
  Node node{name, {input_slot(a), input_slot(b)}, {make_output_slot(out)}, saved, nullptr};
  node.backward = [=](Node& nd) {
    Tensor dO = nd.out_grad();
    MG_DISPATCH_FLOAT(dO.dtype(), name, [&] {
      if (dO.is_cuda()) {
        const scalar_t* g = dO.dev_data<scalar_t>();
        const scalar_t* x = kind == Binary::Mul ? nd.saved[0].dev_data<scalar_t>() : nullptr;
        const scalar_t* y = kind == Binary::Mul ? nd.saved[1].dev_data<scalar_t>() : nullptr;
        if (nd.needs(0)) cuda::binary_backward_a<scalar_t>(gpu_op(kind), g, y, nd.in_grad(0).dev_data<scalar_t>(), n, nb);
        if (nd.needs(1)) cuda::binary_backward_b<scalar_t>(gpu_op(kind), g, x, nd.in_grad(1).dev_data<scalar_t>(), n, nb);
        return;
      }
      const scalar_t* g = dO.data<scalar_t>();
      const scalar_t* x = kind == Binary::Mul ? nd.saved[0].data<scalar_t>() : nullptr;
      const scalar_t* y = kind == Binary::Mul ? nd.saved[1].data<scalar_t>() : nullptr;
      if (nd.needs(0)) {  // da = g (add, sub) or g * b (mul)
        scalar_t* da = nd.in_grad(0).data<scalar_t>();
        if (kind == Binary::Mul)
          parallel_for(n, [&](int64_t i) { da[i] += g[i] * y[i % nb]; });
        else
          parallel_for(n, [&](int64_t i) { da[i] += g[i]; });
      }
      if (nd.needs(1)) {  // db = reduce(g), reduce(-g) or reduce(g * a)
        scalar_t* db = nd.in_grad(1).data<scalar_t>();
        if (kind == Binary::Add) reduce_broadcast(db, n, nb, [&](int64_t i) { return g[i]; });
        if (kind == Binary::Sub) reduce_broadcast(db, n, nb, [&](int64_t i) { return -g[i]; });
        if (kind == Binary::Mul) reduce_broadcast(db, n, nb, [&](int64_t i) { return g[i] * x[i]; });
      }
    });
  };
  current_tape().record(std::move(node));
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(a, b, Binary::Add, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(a, b, Binary::Sub, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(a, b, Binary::Mul, "mul"); }

// y = a * s + c (s, c constants): dy/da = s.
static Tensor affine(const Tensor& a, double s, double c, const char* name) {
  check_float(a, name);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  const int64_t n = a.numel();
  MG_DISPATCH_FLOAT(a.dtype(), name, [&] {
    if (a.is_cuda())
      return cuda::affine<scalar_t>(a.dev_data<scalar_t>(), out.dev_data<scalar_t>(), n, static_cast<scalar_t>(s),
                                    static_cast<scalar_t>(c));
    const scalar_t* x = a.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    const scalar_t ss = static_cast<scalar_t>(s), cc = static_cast<scalar_t>(c);
    parallel_for(n, [&](int64_t i) { o[i] = x[i] * ss + cc; });
  });
  if (any_requires_grad({&a})) {
    Node node{name, {input_slot(a)}, {make_output_slot(out)}, {}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      MG_DISPATCH_FLOAT(dO.dtype(), name, [&] {
        if (dO.is_cuda())
          return cuda::accumulate_scaled<scalar_t>(dO.dev_data<scalar_t>(), nd.in_grad(0).dev_data<scalar_t>(), n,
                                                   static_cast<scalar_t>(s));
        const scalar_t* g = dO.data<scalar_t>();
        scalar_t* da = nd.in_grad(0).data<scalar_t>();
        const scalar_t ss = static_cast<scalar_t>(s);
        parallel_for(n, [&](int64_t i) { da[i] += g[i] * ss; });
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

Tensor scale(const Tensor& a, double s) { return affine(a, s, 0.0, "scale"); }
Tensor add_scalar(const Tensor& a, double c) { return affine(a, 1.0, c, "add_scalar"); }

}  // namespace mg::ops
