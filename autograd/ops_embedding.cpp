// Embedding lookup: out[i, :] = table[ids[i], :];  dtable[ids[i], :] += dout[i, :]
#include <cstring>

#include "autograd/op_util.h"
#include "autograd/ops.h"

namespace mg::ops {

using namespace mg::detail;

// ids I32 (...), table [V, C] -> (..., C)
Tensor embedding(const Tensor& ids, const Tensor& table) {
  check_float(table, "embedding");
  MG_CHECK(table.ndim() == 2, "[embedding] table must be [V, C], got {}", table.describe());
  const int64_t V = table.dim(0), C = table.dim(1), M = ids.numel();
  check_token_ids(ids, V, "embedding");
  const int32_t* id = ids.data<int32_t>();
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, table.dtype());
  const size_t row_bytes = static_cast<size_t>(C) * dtype_size(table.dtype());
  const char* src = static_cast<const char*>(table.raw());
  char* dst = static_cast<char*>(out.raw());
  parallel_for(M, [&](int64_t i) { std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes); }, 256);

  if (any_requires_grad({&table})) {
    Node node{"embedding", {nullptr, input_slot(table)}, {make_output_slot(out)}, {ids}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      const int32_t* idp = nd.saved[0].data<int32_t>();
      MG_DISPATCH_FLOAT(dO.dtype(), "embedding backward", [&] {
        const scalar_t* g = dO.data<scalar_t>();
        scalar_t* dt = nd.in_grad(1).data<scalar_t>();
        // Serial over tokens (rows may repeat), vectorized over C.
        for (int64_t i = 0; i < M; ++i) {
          scalar_t* row = dt + static_cast<int64_t>(idp[i]) * C;
          for (int64_t c = 0; c < C; ++c) row[c] += g[i * C + c];
        }
      });
    };
    current_tape().record(std::move(node));
  }
  return out;
}

}  // namespace mg::ops
