#pragma once
// Embedding lookup in a frozen NF4 table (model/nf4.h): out[i, :] = dequant(table)[ids[i], :],
// dequantizing only the rows looked up (a row is the span [id*C, (id+1)*C) of the flattened
// table; C need not be a multiple of the block size 64). Nothing is recorded on the tape:
// the table is frozen and cannot be made trainable, and ids have no gradient.
#include "autograd/tensor.h"
#include "model/nf4.h"

namespace mg::ops {

// ids I32 (...), table NF4 [V, C], absmax (table.n_blocks()) from nf4_absmax(table)
// -> (..., C) f32
Tensor nf4_embedding(const Tensor& ids, const NF4Weight& table, const float* absmax);

}  // namespace mg::ops
