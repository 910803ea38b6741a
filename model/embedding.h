#pragma once
// Token embedding with one parameter "weight" [V, C], usable as the tied LM head too
// (design.md §3: x = embedding.weight[tokens], logits = h @ embedding.weight^T).
//
// Under QLoRA the table may be frozen NF4, with the same API as Linear's base weight
// (model/linear.h): after quantize() / set_quantized(), `weight` is a meta tensor keeping its
// name and shape, and
//   forward  dequantizes only the rows looked up (ops::nf4_embedding), and
//   attend   is the fused dequantize-matmul ops::nf4_linear (h gets its gradient there).
// Neither gives the table a gradient (frozen; the ids have none either).
#include <memory>
#include <vector>

#include "autograd/module.h"
#include "model/nf4.h"

namespace mg {

class Embedding : public Module {
 public:
  // meta = shapes only (for counting parameters without allocating).
  Embedding(int64_t V, int64_t C, DType dtype, bool meta = false);

  // ids I32 (...) -> (..., C): rows of the table.
  Tensor forward(const Tensor& ids) const;
  // h (..., C) -> (..., V): h @ table^T, the tied head (as flax's nn.Embed.attend).
  Tensor attend(const Tensor& h) const;

  // --- QLoRA ---------------------------------------------------------------------------
  // Replaces the float table by its NF4 quantization (frozen; frees the float copy). No-op
  // when already NF4.
  void quantize();
  void set_quantized(std::shared_ptr<NF4Weight> q);  // from a checkpoint
  bool is_quantized() const { return quantized_ != nullptr; }
  const std::shared_ptr<NF4Weight>& quantized() const { return quantized_; }
  // Back to a float32 table holding the dequantized values, frozen (read_model uses it when
  // a checkpoint holds the table in float32 while the model had quantized its own).
  void dequantize();

  // The table as float (dequantized when NF4): [V, C].
  Tensor dense_weight() const;
  // Resident bytes of an NF4 table [V, C]: the NF4Weight plus the absmax cached for lookups.
  static int64_t nf4_resident_bytes(int64_t V, int64_t C);

  int64_t num_embeddings, embedding_dim;  // V, C
  Tensor weight;  // [V, C]; meta when quantized

 private:
  std::shared_ptr<NF4Weight> quantized_;
  // (n_blocks) the per-block absmax of quantized_ (nf4_absmax), rebuilt once when it is set:
  // a lookup dequantizes a few rows, so rebuilding them per call would dominate it.
  std::vector<float> absmax_;
};

}  // namespace mg
