// Embedding lookup: out[i, :] = table[ids[i], :];  dtable[ids[i], :] += dout[i, :]
// On the GPU the ids may live on either device: they are checked on the host (as on the CPU)
// and the backward groups them by table row on the host (cuda/embedding.h), so the table
// gradient is summed in token order, deterministically, without atomics.
#include <cstring>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "cuda/embedding.h"

namespace mg::ops {

using namespace mg::detail;

// ids I32 (...), table [V, C] -> (..., C)
Tensor embedding(const Tensor& ids, const Tensor& table) {
  check_float(table, "embedding");
  MG_CHECK(table.ndim() == 2, "[embedding] table must be [V, C], got {}", table.describe());
  const int64_t V = table.dim(0), C = table.dim(1), M = ids.numel();
  const Tensor host_ids = ids.to(Device::CPU);  // the same handle when ids is on the CPU
  check_token_ids(host_ids, V, "embedding");
  const int32_t* id = host_ids.data<int32_t>();
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, table.dtype(), table.device());
  if (table.is_cuda()) {
    const Tensor dev_ids = ids.to(Device::CUDA);
    MG_DISPATCH_FLOAT(table.dtype(), "embedding", [&] {
      cuda::gather_rows<scalar_t>(dev_ids.dev_data<int32_t>(), M, table.dev_data<scalar_t>(),
                                  out.dev_data<scalar_t>(), C);
    });
  } else {
    const size_t row_bytes = static_cast<size_t>(C) * dtype_size(table.dtype());
    const char* src = static_cast<const char*>(table.raw());
    char* dst = static_cast<char*>(out.raw());
    parallel_for(M, [&](int64_t i) { std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes); }, 256);
  }

  if (any_requires_grad({&table})) {
    Node node{"embedding", {nullptr, input_slot(table)}, {make_output_slot(out)}, {host_ids}, nullptr};
    node.backward = [=](Node& nd) {
      Tensor dO = nd.out_grad();
      const int32_t* idp = nd.saved[0].data<int32_t>();
      MG_DISPATCH_FLOAT(dO.dtype(), "embedding backward", [&] {
        if (dO.is_cuda())
          return cuda::scatter_add_rows<scalar_t>(idp, M, dO.dev_data<scalar_t>(), nullptr,
                                                  nd.in_grad(1).dev_data<scalar_t>(), C);
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
