// Streaming QLoRA init (HybridLM::init(seed, quantize_linears=true)) against the two-pass
// reference init(seed) + quantize_base on the same Linears apply_lora quantizes (+ quantize()
// on the embedding, unless told not to), and the lazy (mmapped) Storage it relies on to keep a
// large model's float32 weights off the RSS.
#include <gtest/gtest.h>

#include <cstring>

#include "model/hybrid_lm.h"
#include "model/lora.h"

namespace mg {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.d_model = 64;  // several NF4 blocks (64) per row
  c.vocab_size = 37;
  c.layer_pattern = "MEM";
  c.d_state = 4;
  c.d_conv = 4;
  c.expand = 2;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_hidden = 96;
  return c;
}

// First index where two byte/float vectors differ, or -1.
template <class T>
int64_t first_mismatch(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  return -1;
}

// Same NF4 codes, absmax codes, scales and offset (quantization is deterministic, so equal
// inputs give bit-equal outputs).
void expect_same_nf4(const std::string& name, const NF4Weight& qa, const NF4Weight& qb) {
  EXPECT_EQ(first_mismatch(qa.packed, qb.packed), -1) << name << " packed codes differ";
  EXPECT_EQ(first_mismatch(qa.absmax_codes, qb.absmax_codes), -1) << name << " absmax codes differ";
  EXPECT_EQ(first_mismatch(qa.absmax_scales, qb.absmax_scales), -1) << name << " absmax scales differ";
  EXPECT_EQ(qa.absmax_offset, qb.absmax_offset) << name;
}

void expect_same_model(HybridLM& reference, HybridLM& streamed, bool untied_head, bool nf4_embedding = true) {
  // The embedding, and every Linear but lm_head: the same NF4 bytes.
  ASSERT_EQ(reference.embedding.is_quantized(), nf4_embedding);
  ASSERT_EQ(streamed.embedding.is_quantized(), nf4_embedding);
  if (nf4_embedding) {
    expect_same_nf4("embedding", *reference.embedding.quantized(), *streamed.embedding.quantized());
    EXPECT_TRUE(streamed.embedding.weight.is_meta()) << "the float table must be freed";
  }
  std::vector<std::pair<std::string, Linear*>> ref_l, str_l;
  visit_linears(reference, [&](const std::string& n, Linear& l) { ref_l.emplace_back(n, &l); });
  visit_linears(streamed, [&](const std::string& n, Linear& l) { str_l.emplace_back(n, &l); });
  ASSERT_EQ(ref_l.size(), str_l.size());
  int quantized = 0;
  for (size_t i = 0; i < ref_l.size(); ++i) {
    const std::string& name = ref_l[i].first;
    Linear &a = *ref_l[i].second, &b = *str_l[i].second;
    if (name == "lm_head") {
      EXPECT_FALSE(b.is_quantized()) << "lm_head must stay float32 (lora.h)";
      continue;
    }
    ASSERT_TRUE(a.is_quantized() && b.is_quantized()) << name;
    ++quantized;
    expect_same_nf4(name, *a.quantized(), *b.quantized());
    EXPECT_TRUE(b.weight.is_meta()) << name << ": the float weight must be freed";
  }
  EXPECT_GT(quantized, 10);
  EXPECT_EQ(untied_head, reference.lm_head != nullptr);
  // Every float parameter left (norms, conv, biases, A_log, D, lm_head; the embedding when it
  // stays float32): bit-equal.
  auto pa = reference.named_parameters(), pb = streamed.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  int compared = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i].first, pb[i].first);
    ASSERT_EQ(pa[i].second.is_meta(), pb[i].second.is_meta()) << pa[i].first;
    if (pa[i].second.is_meta()) continue;
    const std::vector<double> va = pa[i].second.to_double_vector(), vb = pb[i].second.to_double_vector();
    double max_diff = 0;
    for (size_t j = 0; j < va.size(); ++j) max_diff = std::max(max_diff, std::abs(va[j] - vb[j]));
    EXPECT_EQ(max_diff, 0.0) << pa[i].first << " max diff " << max_diff;
    ++compared;
  }
  EXPECT_GT(compared, 5);
}

TEST(StreamingInit, EqualsInitThenQuantize) {
  for (bool tie : {true, false})
    for (bool nf4_embedding : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "tied " << tie << ", NF4 embedding " << nf4_embedding);
      ModelConfig cfg = small_config();
      cfg.tie_embeddings = tie;
      HybridLM reference(cfg), streamed(cfg);
      reference.init(1234);
      if (nf4_embedding) reference.embedding.quantize();
      visit_linears(reference, [](const std::string& n, Linear& l) {
        if (n != "lm_head") l.quantize_base();
      });
      streamed.init(1234, /*quantize_linears=*/true, /*quantize_embedding=*/nf4_embedding);
      expect_same_model(reference, streamed, !tie, nf4_embedding);
    }
}

TEST(StreamingInit, ApplyLoraAfterwardsMatchesTwoPass) {
  // The QLoRA pipeline: streamed init, then apply_lora (its quantize step is a no-op), must
  // give the same adapters and report as init + apply_lora.
  ModelConfig cfg = small_config();
  LoraConfig lora;
  lora.enabled = true;
  lora.r = 4;
  QloraConfig qlora;
  qlora.enabled = true;
  HybridLM reference(cfg), streamed(cfg);
  reference.init(7);
  const LoraReport ra = apply_lora(reference, lora, qlora, 99);
  streamed.init(7, true);
  const LoraReport rb = apply_lora(streamed, lora, qlora, 99);
  EXPECT_EQ(ra.summary(), rb.summary());
  EXPECT_EQ(ra.quantized, rb.quantized);
  expect_same_model(reference, streamed, false);
}

TEST(StreamingInit, MetaModelIsLeftAlone) {
  HybridLM meta(small_config(), DType::F32, /*meta=*/true);
  EXPECT_NO_THROW(meta.init(3, true));
}

TEST(LazyStorage, LargeZerosAreMappedAndZero) {
  // 2 MiB: above the mmap threshold, so zeros() skips the memset and relies on the kernel.
  Tensor big = Tensor::zeros({512 * 1024}, DType::F32);
  ASSERT_TRUE(big.impl()->storage->mapped);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.raw()) % 64, 0u);
  const float* p = big.data<float>();
  int64_t nonzero = 0;
  for (int64_t i = 0; i < big.numel(); ++i) nonzero += p[i] != 0.0f;
  EXPECT_EQ(nonzero, 0);
  big.fill(2.5);  // writable
  EXPECT_EQ(big.item(big.numel() - 1), 2.5);
  Tensor small = Tensor::zeros({100}, DType::F32);
  EXPECT_FALSE(small.impl()->storage->mapped);
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(small.item(i), 0.0);
}

}  // namespace
}  // namespace mg
