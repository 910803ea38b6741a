#pragma once
// Linear layer y = x W^T (+ b), PyTorch layout W [out, in], with the two QLoRA extensions:
//   - the base weight may be frozen NF4 (quantize_base), and
//   - a LoRA adapter may sit beside it (design.md §5, PEFT semantics):
//       y = base(x) + (dropout(x) A^T B^T) * scale,  A [r, in], B [out, r]
// Parameter names: "weight", "bias", "lora_A", "lora_B" (so the adapter of
// "layers.0.mixer.in_proj" is "layers.0.mixer.in_proj.lora_A", design.md §6).
#include <memory>

#include "autograd/module.h"
#include "autograd/rng.h"
#include "model/nf4.h"

namespace mg {

struct LoraSettings {
  int r = 16;
  double alpha = 32.0;
  double dropout = 0.0;
  bool use_rslora = false;
  double scale() const;  // alpha/r, or alpha/sqrt(r) with rsLoRA
};

class Linear : public Module {
 public:
  // meta = shapes only (for counting parameters without allocating).
  Linear(int64_t in_features, int64_t out_features, bool bias, DType dtype, bool meta = false);

  // x (..., in) -> (..., out). `rng` draws the LoRA dropout mask when training.
  Tensor forward(const Tensor& x, Rng* rng = nullptr, bool training = false) const;
  // Same without the bias (Mamba fuses dt_proj's bias into the scan).
  Tensor forward_no_bias(const Tensor& x, Rng* rng = nullptr, bool training = false) const;

  // --- QLoRA ---------------------------------------------------------------------------
  // Replaces the float weight by its NF4 quantization (frozen; frees the float copy). A no-op
  // on an NF4 base or released weights.
  void quantize_base();
  void set_quantized(std::shared_ptr<NF4Weight> q);  // from a checkpoint
  // Back to a float32 weight holding the dequantized values (frozen, as the NF4 one was). A
  // no-op on a float weight.
  void dequantize_base();
  bool is_quantized() const { return quantized_ != nullptr; }
  const std::shared_ptr<NF4Weight>& quantized() const { return quantized_; }

  // Adds a LoRA adapter (A kaiming-uniform(a=sqrt 5) like PEFT, B zeros) drawn from `rng`.
  void add_lora(const LoraSettings& s, Rng& rng);
  bool has_lora() const { return lora_A.defined(); }
  const LoraSettings& lora_settings() const { return lora_; }
  // W += scale * B A (dequantizing an NF4 base to float32 first); forward then skips the
  // adapter, which is kept so unmerge can subtract it again (up to float rounding) and
  // re-enable it.
  // An NF4 base comes back from unmerge as float32 (its dequantized values), not as NF4.
  void merge_lora();
  void unmerge_lora();
  bool merged() const { return merged_; }
  // Forgets a merged adapter: the layer is then a plain (merged) Linear.
  void drop_lora();

  // The base weight as float (dequantized when NF4): [out, in].
  Tensor dense_weight() const;

  // The weights now live elsewhere (streamed MoE experts, model/expert_source.h): the float
  // and NF4 copies are freed and weight/bias become meta tensors (name and shape kept), so
  // checkpoint loading skips them. forward then throws. Refused with a LoRA adapter.
  void release_weights();
  bool weights_released() const { return released_; }

  int64_t in_features, out_features;
  Tensor weight;  // [out, in]; undefined when quantized
  Tensor bias;    // [out] or undefined
  Tensor lora_A;  // [r, in]
  Tensor lora_B;  // [out, r]

 private:
  Tensor adapter_delta(const Tensor& x, Rng* rng, bool training) const;
  std::shared_ptr<NF4Weight> quantized_;
  LoraSettings lora_;
  bool merged_ = false;
  bool lora_registered_ = false;
  bool released_ = false;  // release_weights: the weights live elsewhere  // lora_A/lora_B are in the registry (kept across drop_lora)
};

// PyTorch's default nn.Linear init: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
void init_linear_default(Linear& l, Rng& rng);

}  // namespace mg
