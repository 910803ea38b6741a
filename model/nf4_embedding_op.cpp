#include "model/nf4_embedding_op.h"

#include "autograd/op_util.h"

namespace mg::ops {

using namespace mg::detail;

Tensor nf4_embedding(const Tensor& ids, const NF4Weight& table, const float* absmax) {
  MG_CHECK(absmax || table.numel() == 0, "[nf4_embedding] no absmax for the NF4 table");
  const int64_t V = table.rows, C = table.cols, M = ids.numel();
  check_token_ids(ids, V, "nf4_embedding");
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, DType::F32);  // (..., C)
  const int32_t* id = ids.data<int32_t>();
  float* dst = out.data<float>();
  // Each row is its own span of blocks: threads write disjoint rows.
  parallel_for(M, [&](int64_t i) {
    const int64_t begin = static_cast<int64_t>(id[i]) * C;
    nf4_dequantize_range(table, absmax, begin, begin + C, dst + i * C);
  }, /*grain=*/64);
  return out;
}

}  // namespace mg::ops
