// LoRA / QLoRA on the hybrid model (design.md §5, model/lora.h): adapters with B = 0 leave
// the logits unchanged, target_modules / trainable patterns, freezing, a QLoRA fine-tune that
// lowers the loss while the NF4 base stays bit-identical, merge / unmerge against a naive
// W + scale * B A, and the rsLoRA scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "model/lora.h"

namespace mg {
namespace {

// d_model 64 so every NF4 block of 64 is full; R = ceil(64/16) = 4.
ModelConfig lora_test_config() {
  ModelConfig c;
  c.d_model = 64;
  c.vocab_size = 32;
  c.layer_pattern = "ME";
  c.d_state = 4;
  c.d_conv = 3;
  c.expand = 2;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_hidden = 64;
  c.aux_loss_coef = 0.01;
  c.z_loss_coef = 0.001;
  return c;
}

std::unique_ptr<HybridLM> make_model(uint64_t seed, const ModelConfig& cfg = lora_test_config()) {
  auto m = std::make_unique<HybridLM>(cfg, DType::F32);
  m->init(seed);
  return m;
}

LoraConfig lora_on(std::vector<std::string> targets, int r = 4, double alpha = 8.0) {
  LoraConfig l;
  l.enabled = true;
  l.r = r;
  l.alpha = alpha;
  l.target_modules = std::move(targets);
  return l;
}
QloraConfig qlora_on() {
  QloraConfig q;
  q.enabled = true;
  return q;
}
const std::vector<std::string> kAllLinears = {"in_proj", "x_proj", "dt_proj", "out_proj", "router", "up", "down"};

Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(B * T);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(V));
  return Tensor::from_ids(v, {B, T});
}

Tensor logits_of(const HybridLM& m, const Tensor& tok) {
  NoGradGuard ng;
  return m.forward(tok, Tensor()).logits;  // (B*T, V)
}

// max |a - b| relative to max |b|, printed by the callers.
double rel_diff(const Tensor& a, const Tensor& b) {
  double d = 0, ref = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    d = std::max(d, std::abs(a.item(i) - b.item(i)));
    ref = std::max(ref, std::abs(b.item(i)));
  }
  return d / std::max(ref, 1e-30);
}

std::map<std::string, Linear*> linears_of(HybridLM& m) {
  std::map<std::string, Linear*> out;
  visit_linears(m, [&](const std::string& n, Linear& l) { out[n] = &l; });
  return out;
}

// Sets every lora_B to small random values (B = 0 makes merges and A's gradient trivial).
void randomize_lora_B(HybridLM& m, uint64_t seed) {
  Rng rng(seed);
  m.visit_parameters([&](const std::string& name, Tensor& p) {
    if (!name.ends_with(".lora_B")) return;
    for (int64_t i = 0; i < p.numel(); ++i) p.data<float>()[i] = static_cast<float>(0.05 * rng.normal());
  });
}

// W + scale * B A in double, written as the plain triple loop: W [out,in], B [out,r], A [r,in].
std::vector<double> naive_merge(const Tensor& W, const Linear& l) {
  const int64_t out = l.out_features, in = l.in_features, r = l.lora_settings().r;
  std::vector<double> m(out * in);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double s = 0;
      for (int64_t j = 0; j < r; ++j) s += l.lora_B.item(o * r + j) * l.lora_A.item(j * in + i);
      m[o * in + i] = W.item(o * in + i) + l.lora_settings().scale() * s;
    }
  return m;
}

double max_abs_diff(const Tensor& a, const std::vector<double>& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, std::abs(a.item(i) - b[i]));
  return d;
}

TEST(Lora, ZeroBLeavesLogitsExactlyUnchangedOnFloatAndNF4Bases) {
  const Tensor tok = random_ids(2, 9, 32, 1);
  for (bool nf4 : {false, true}) {
    SCOPED_TRACE(nf4 ? "NF4 base" : "float base");
    auto base = make_model(3), adapted = make_model(3);
    LoraConfig off;  // NF4 reference: the same quantized base without adapters
    if (nf4) apply_lora(*base, off, qlora_on(), 1);
    LoraReport rep = apply_lora(*adapted, lora_on(kAllLinears), nf4 ? qlora_on() : QloraConfig{}, 1);
    ASSERT_EQ(rep.adapted.size(), 13u);  // 4 Mamba + router + 4 experts x (up, down)
    Tensor a = logits_of(*base, tok), b = logits_of(*adapted, tok);
    int64_t differ = 0;
    for (int64_t i = 0; i < a.numel(); ++i) differ += a.item(i) != b.item(i);
    EXPECT_EQ(differ, 0) << "max rel diff " << rel_diff(b, a);
  }
}

TEST(Lora, TargetPatternsSelectTheNamedLinears) {
  const std::string L0 = "layers.0.mixer.", L1 = "layers.1.mixer.";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"in_proj", {L0 + "in_proj"}},
      {"out_proj", {L0 + "out_proj"}},
      {"layers.*.mixer.experts.*.up",
       {L1 + "experts.0.up", L1 + "experts.1.up", L1 + "experts.2.up", L1 + "experts.3.up"}},
      {"x_proj", {L0 + "x_proj"}},
      {"dt_proj", {L0 + "dt_proj"}},
      {"router", {L1 + "router"}},
  };
  for (const auto& [pattern, expected] : cases) {
    SCOPED_TRACE(pattern);
    auto m = make_model(2);
    const int64_t total = m->num_parameters();
    LoraReport rep = apply_lora(*m, lora_on({pattern}, /*r=*/4), QloraConfig{}, 7);
    EXPECT_EQ(rep.adapted, expected);
    // Only the adapters train (plain LoRA: float base frozen); each is r * (in + out).
    std::vector<std::string> want_names;
    int64_t want_trainable = 0;
    auto lin = linears_of(*m);
    for (const auto& name : expected) {
      want_names.push_back(lora_A_name(name));
      want_names.push_back(lora_B_name(name));
      const Linear& l = *lin.at(name);
      want_trainable += 4 * (l.in_features + l.out_features);
      EXPECT_EQ(l.lora_A.shape(), (Shape{4, l.in_features}));
      EXPECT_EQ(l.lora_B.shape(), (Shape{l.out_features, 4}));
      for (int64_t i = 0; i < l.lora_B.numel(); ++i) ASSERT_EQ(l.lora_B.item(i), 0.0);
    }
    std::vector<std::string> got_names;
    for (auto& [n, p] : trainable_parameters(*m)) got_names.push_back(n);
    EXPECT_EQ(got_names, want_names);
    EXPECT_EQ(rep.trainable_params, want_trainable);
    EXPECT_EQ(rep.trainable_params + rep.frozen_params, total + want_trainable);
  }
  EXPECT_EQ(lora_A_name("layers.0.mixer.in_proj"), "layers.0.mixer.in_proj.lora_A");
  EXPECT_TRUE(is_adapter_param("layers.0.mixer.in_proj.lora_B"));
  EXPECT_FALSE(is_adapter_param("layers.0.mixer.in_proj.weight"));
}

TEST(Lora, PatternThatMatchesNothingIsAnErrorAndChangesNothing) {
  auto m = make_model(2);
  const auto before = m->named_parameters().size();
  try {
    apply_lora(*m, lora_on({"in_proj", "q_proj"}), qlora_on(), 1);
    FAIL() << "no error for target pattern q_proj";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'q_proj'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layers.0.mixer.in_proj"), std::string::npos) << msg;  // lists valid names
  }
  EXPECT_EQ(m->named_parameters().size(), before);
  for (auto& [n, l] : linears_of(*m)) EXPECT_FALSE(l->is_quantized() || l->has_lora()) << n;

  LoraConfig typo = lora_on({"in_proj"});
  typo.trainable = {"nrom"};
  EXPECT_THROW(apply_lora(*m, typo, QloraConfig{}, 1), Error);
}

TEST(Lora, QloraFreezesAllButAdaptersAndListedParams) {
  auto m = make_model(4);
  const int64_t total = m->num_parameters();
  LoraConfig l = lora_on({"in_proj"});
  l.trainable = {"norm"};
  LoraReport rep = apply_lora(*m, l, qlora_on(), 1);
  EXPECT_EQ(rep.quantized, 14);  // 13 Linears + the tied embedding
  EXPECT_TRUE(rep.embedding_quantized);
  std::vector<std::string> got;
  for (auto& [n, p] : trainable_parameters(*m)) got.push_back(n);
  std::sort(got.begin(), got.end());
  const std::vector<std::string> want = {"layers.0.mixer.in_proj.lora_A", "layers.0.mixer.in_proj.lora_B",
                                         "layers.0.norm.weight", "layers.1.norm.weight", "norm_f.weight"};
  EXPECT_EQ(got, want);
  const int64_t C = 64, D = 128, r = 4;
  EXPECT_EQ(rep.trainable_params, 3 * C + r * (C + 2 * D));
  EXPECT_EQ(rep.trainable_params + rep.frozen_params, total + r * (C + 2 * D));
  for (auto& [n, p] : m->named_parameters()) {
    const bool frozen_kind = n.ends_with("A_log") || n.ends_with("conv1d.bias") || n.ends_with("dt_proj.bias") ||
                             n == "embedding.weight";
    if (frozen_kind) {
      EXPECT_FALSE(p.requires_grad()) << n;
    }
  }
}

TEST(Lora, MakingAnNF4WeightTrainableIsAnError) {
  auto m = make_model(4);
  LoraConfig l = lora_on({"out_proj"});
  l.trainable = {"in_proj"};  // names layers.0.mixer.in_proj.weight, NF4 under QLoRA
  try {
    apply_lora(*m, l, qlora_on(), 1);
    FAIL() << "no error for a trainable NF4 weight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.mixer.in_proj.weight"), std::string::npos) << e.what();
  }
  for (auto& [n, lin] : linears_of(*m)) EXPECT_FALSE(lin->is_quantized()) << n << ": changed before the error";
  // The same request over a float base is plain LoRA plus a fully trained in_proj: allowed.
  auto f = make_model(4);
  apply_lora(*f, l, QloraConfig{}, 1);
  EXPECT_TRUE(f->find_parameter("layers.0.mixer.in_proj.weight")->requires_grad());
}

TEST(Lora, QloraQuantizesTheTiedEmbeddingUnlessTold) {
  for (bool quantize_embedding : {true, false}) {
    SCOPED_TRACE(quantize_embedding ? "quantize_embedding: true" : "quantize_embedding: false");
    auto m = make_model(4);
    const std::vector<double> table = m->embedding.weight.to_double_vector();
    QloraConfig q = qlora_on();
    q.quantize_embedding = quantize_embedding;
    LoraReport rep = apply_lora(*m, lora_on({"in_proj"}), q, 1);
    EXPECT_EQ(rep.embedding_quantized, quantize_embedding);
    EXPECT_EQ(rep.quantized, quantize_embedding ? 14 : 13);
    EXPECT_EQ(m->embedding.is_quantized(), quantize_embedding);
    EXPECT_EQ(m->embedding.weight.is_meta(), quantize_embedding);
    EXPECT_FALSE(m->embedding.weight.requires_grad()) << "frozen either way";
    EXPECT_EQ(rep.summary().find("embedding included") != std::string::npos, quantize_embedding) << rep.summary();
    if (quantize_embedding) {
      // The NF4 table is the quantization of the float one it replaced.
      const std::vector<float> back = nf4_dequantize(*m->embedding.quantized());
      double max_err = 0;
      for (size_t i = 0; i < back.size(); ++i) max_err = std::max(max_err, std::abs(back[i] - table[i]));
      EXPECT_GT(max_err, 0.0);
      EXPECT_LT(max_err, 0.02);  // NF4 of N(0, 0.02) values
    } else {
      EXPECT_EQ(m->embedding.weight.to_double_vector(), table);
    }
  }
  // Without qlora.enabled the option does nothing.
  auto m = make_model(4);
  apply_lora(*m, lora_on({"in_proj"}), QloraConfig{}, 1);
  EXPECT_FALSE(m->embedding.is_quantized());
}

TEST(Lora, TrainingAnNF4EmbeddingIsAnErrorThatNamesTheOption) {
  auto m = make_model(4);
  LoraConfig l = lora_on({"in_proj"});
  l.trainable = {"embedding.weight"};
  try {
    apply_lora(*m, l, qlora_on(), 1);
    FAIL() << "no error for a trainable NF4 embedding";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'embedding.weight'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qlora.quantize_embedding: false"), std::string::npos) << msg;
  }
  EXPECT_FALSE(m->embedding.is_quantized()) << "changed before the error";
  for (auto& [n, lin] : linears_of(*m)) EXPECT_FALSE(lin->is_quantized()) << n << ": changed before the error";

  // With quantize_embedding: false the same request trains the float32 table.
  QloraConfig q = qlora_on();
  q.quantize_embedding = false;
  LoraReport rep = apply_lora(*m, l, q, 1);
  EXPECT_FALSE(m->embedding.is_quantized());
  EXPECT_TRUE(m->embedding.weight.requires_grad());
  EXPECT_EQ(rep.quantized, 13);

  // A table that is already NF4 (loaded so) cannot be made float by the option: the error
  // says where the NF4 came from.
  auto n = make_model(4);
  n->embedding.quantize();
  try {
    apply_lora(*n, l, q, 1);
    FAIL() << "no error for a trainable embedding loaded as NF4";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--keep-embedding"), std::string::npos) << e.what();
  }
}

TEST(Lora, AdaptersAreDeterministicFromTheSeed) {
  auto a = make_model(1), b = make_model(1), c = make_model(1);
  apply_lora(*a, lora_on(kAllLinears), qlora_on(), 42);
  apply_lora(*b, lora_on(kAllLinears), qlora_on(), 42);
  apply_lora(*c, lora_on(kAllLinears), qlora_on(), 43);
  const std::string name = "layers.1.mixer.experts.2.down.lora_A";
  const auto va = a->find_parameter(name)->to_double_vector();
  EXPECT_EQ(va, b->find_parameter(name)->to_double_vector());
  EXPECT_NE(va, c->find_parameter(name)->to_double_vector());
}

TEST(Lora, UntiedHeadStaysFloatUnderQloraAndIsNoTarget) {
  ModelConfig cfg = lora_test_config();
  cfg.tie_embeddings = false;
  auto m = make_model(5, cfg);
  EXPECT_THROW(apply_lora(*m, lora_on({"lm_head"}), qlora_on(), 1), Error);
  LoraConfig l = lora_on({"in_proj"});
  l.trainable = {"lm_head"};
  apply_lora(*m, l, qlora_on(), 1);
  EXPECT_FALSE(m->lm_head->is_quantized());
  EXPECT_TRUE(m->lm_head->weight.requires_grad());
  EXPECT_TRUE(m->embedding.is_quantized()) << "the untied input embedding follows qlora.quantize_embedding";
  EXPECT_EQ(logits_of(*m, random_ids(1, 4, 32, 2)).numel(), 4 * 32);
}

// QLoRA fine-tune of a tiny model with a plain Adam written here: the loss falls, and only the
// adapters move (NF4 bytes and every float parameter bit-identical).
TEST(Lora, QloraFineTuneLowersLossAndTouchesOnlyAdapters) {
  auto m = make_model(6);
  // The N(0, 0.02) embedding init bounds the tied head's logits to about +-1.3 (|h| = sqrt(C)
  // after the final RMSNorm), which caps what frozen-head fine-tuning can reach; a pretrained
  // base has larger embeddings. Scale them up so the adapters, not the head, are measured.
  {
    float* e = m->embedding.weight.data<float>();
    for (int64_t i = 0; i < m->embedding.weight.numel(); ++i) e[i] *= 5.0f;
  }
  apply_lora(*m, lora_on(kAllLinears, /*r=*/4, /*alpha=*/8.0), qlora_on(), 3);
  const Tensor tok = random_ids(2, 16, 32, 7), tgt = random_ids(2, 16, 32, 8);

  // Codes, then absmax codes, of every NF4 weight: the Linears and the tied embedding.
  auto nf4_bytes_of = [](const NF4Weight& q) {
    std::vector<uint8_t> b = q.packed;
    b.insert(b.end(), q.absmax_codes.begin(), q.absmax_codes.end());
    return b;
  };
  std::map<std::string, std::vector<uint8_t>> nf4_before;
  for (auto& [n, l] : linears_of(*m)) nf4_before[n] = nf4_bytes_of(*l->quantized());
  ASSERT_TRUE(m->embedding.is_quantized());
  nf4_before["embedding"] = nf4_bytes_of(*m->embedding.quantized());
  std::map<std::string, std::vector<double>> frozen_before;
  for (auto& [n, p] : m->named_parameters())
    if (!p.is_meta() && !is_adapter_param(n)) frozen_before[n] = p.to_double_vector();

  auto params = trainable_parameters(*m);
  ASSERT_EQ(params.size(), 26u);
  std::vector<std::vector<float>> mom(params.size()), vel(params.size());
  double first = 0, last = 0;
  for (int step = 1; step <= 50; ++step) {
    m->zero_grad();
    LmOutput out = m->forward(tok, tgt, {.training = true});
    current_tape().backward(out.loss);
    if (step == 1) first = out.ce_loss.item();
    last = out.ce_loss.item();
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor& p = params[i].second;
      ASSERT_TRUE(p.grad().defined()) << params[i].first;
      mom[i].resize(p.numel());
      vel[i].resize(p.numel());
      float* w = p.data<float>();
      const float* g = p.grad().data<float>();
      for (int64_t j = 0; j < p.numel(); ++j) {
        mom[i][j] = 0.9f * mom[i][j] + 0.1f * g[j];
        vel[i][j] = 0.999f * vel[i][j] + 0.001f * g[j] * g[j];
        const float mh = mom[i][j] / (1 - std::pow(0.9f, step)), vh = vel[i][j] / (1 - std::pow(0.999f, step));
        w[j] -= 1e-2f * mh / (std::sqrt(vh) + 1e-8f);
      }
    }
  }
  EXPECT_GT(first, 3.0);  // random targets, random logits: about ln 32 or more
  EXPECT_LT(last, 0.1 * first) << "from " << first;  // measured: 4.2 -> 0.13

  for (auto& [n, l] : linears_of(*m)) EXPECT_EQ(nf4_bytes_of(*l->quantized()), nf4_before[n]) << n << ": NF4 bytes changed";
  EXPECT_EQ(nf4_bytes_of(*m->embedding.quantized()), nf4_before["embedding"]) << "NF4 embedding changed";
  for (auto& [n, p] : m->named_parameters()) {
    if (p.is_meta() || is_adapter_param(n)) continue;
    EXPECT_EQ(p.to_double_vector(), frozen_before[n]) << n << " changed";
    EXPECT_FALSE(p.grad().defined()) << n << " got a gradient";
  }
}

// Float base: merged logits match the adapter's (1e-5); unmerge restores W (1e-6).
TEST(Lora, MergeAndUnmergeOnAFloatBase) {
  auto m = make_model(8);
  std::map<std::string, std::vector<double>> W0;
  for (auto& [n, l] : linears_of(*m)) W0[n] = l->weight.to_double_vector();
  apply_lora(*m, lora_on(kAllLinears), QloraConfig{}, 2);
  randomize_lora_B(*m, 9);
  const Tensor tok = random_ids(2, 8, 32, 3);
  const Tensor adapted = logits_of(*m, tok);

  std::map<std::string, std::vector<double>> want;
  for (auto& [n, l] : linears_of(*m)) want[n] = naive_merge(l->weight, *l);
  EXPECT_EQ(merge_adapters(*m), 13);
  for (auto& [n, l] : linears_of(*m)) EXPECT_LT(max_abs_diff(l->weight, want[n]), 1e-6) << n;
  const Tensor merged = logits_of(*m, tok);
  EXPECT_LT(rel_diff(merged, adapted), 1e-5);
  EXPECT_GT(rel_diff(merged, logits_of(*make_model(8), tok)), 1e-3) << "B was set: the merge must matter";

  EXPECT_EQ(unmerge_adapters(*m), 13);
  for (auto& [n, l] : linears_of(*m)) EXPECT_LT(max_abs_diff(l->weight, W0[n]), 1e-6) << n;
  EXPECT_LT(rel_diff(logits_of(*m, tok), adapted), 1e-5);
}

// QLoRA with adapters on some layers only: the float merge leaves no NF4 weight anywhere (the
// layers without an adapter and the embedding are dequantized), the model computes the same.
TEST(Lora, FloatMergeDequantizesEveryOtherNF4Weight) {
  auto m = make_model(12);
  apply_lora(*m, lora_on({"in_proj", "out_proj"}), qlora_on(), 4);
  randomize_lora_B(*m, 13);
  ASSERT_TRUE(m->embedding.is_quantized());
  const Tensor tok = random_ids(2, 8, 32, 5);
  const Tensor adapted = logits_of(*m, tok);
  MergeReport rep = merge_all_lora(*m, /*requantize=*/false);
  EXPECT_GT(rep.merged, 0);
  EXPECT_GT(rep.dequantized, 1);
  for (auto& [n, l] : linears_of(*m)) EXPECT_FALSE(l->is_quantized()) << n << " still NF4";
  EXPECT_FALSE(m->embedding.is_quantized());
  for (auto& [n, p] : m->named_parameters()) {
    EXPECT_FALSE(p.is_meta()) << n << " has no float32 storage";
    EXPECT_FALSE(p.requires_grad() && n.find("lora") != std::string::npos) << n;
  }
  EXPECT_LT(rel_diff(logits_of(*m, tok), adapted), 1e-4);
}

// NF4 base merged into float32 (1e-4 on the logits), then re-quantized with its error reported.
TEST(Lora, MergeAnNF4BaseIntoFloatAndRequantize) {
  for (bool requantize : {false, true}) {
    SCOPED_TRACE(requantize ? "requantize" : "float merge");
    auto m = make_model(10);
    apply_lora(*m, lora_on(kAllLinears), qlora_on(), 4);
    randomize_lora_B(*m, 11);
    const Tensor tok = random_ids(2, 8, 32, 5);
    const Tensor adapted = logits_of(*m, tok);
    std::map<std::string, std::vector<double>> want;
    for (auto& [n, l] : linears_of(*m)) want[n] = naive_merge(l->dense_weight(), *l);

    MergeReport rep = merge_all_lora(*m, requantize);
    EXPECT_EQ(rep.merged, 13);
    for (auto& [n, p] : m->named_parameters()) EXPECT_FALSE(is_adapter_param(n)) << n << " left after merge";
    if (!requantize) {
      for (auto& [n, l] : linears_of(*m)) {
        EXPECT_FALSE(l->is_quantized());
        EXPECT_LT(max_abs_diff(l->weight, want[n]), 1e-6) << n;
      }
      EXPECT_LT(rel_diff(logits_of(*m, tok), adapted), 1e-4);
      continue;
    }
    // The reported error against |merged - dequant(requantized)| computed here.
    double max_err = 0, sq = 0;
    int64_t count = 0;
    for (auto& [n, l] : linears_of(*m)) {
      ASSERT_TRUE(l->is_quantized()) << n;
      const Tensor back = l->dense_weight();
      for (int64_t i = 0; i < back.numel(); ++i) {
        const double e = std::abs(back.item(i) - static_cast<float>(want[n][i]));
        max_err = std::max(max_err, e), sq += e * e, ++count;
      }
    }
    EXPECT_NEAR(rep.max_abs_error, max_err, 1e-6);  // merged in f32 vs in double: < 1e-6
    EXPECT_NEAR(rep.rms_error, std::sqrt(sq / static_cast<double>(count)), 1e-6);
    EXPECT_GT(rep.rms_error, 0.0);
    EXPECT_LT(rep.rms_error, 0.2 * rep.rms_weight);  // NF4: ~10% of the weights' RMS
  }
}

// rsLoRA (Kalajdzievski 2023): scale alpha/sqrt(r) instead of alpha/r, checked on the output
// of one float64 Linear against base + scale * B A x written as loops.
TEST(Lora, RsLoraScaleIsAlphaOverSqrtR) {
  for (bool rs : {false, true}) {
    LoraSettings s{16, 32.0, 0.0, rs};
    EXPECT_DOUBLE_EQ(s.scale(), rs ? 8.0 : 2.0);
    LoraConfig c = lora_on({"x"}, 16, 32.0);
    c.use_rslora = rs;
    EXPECT_DOUBLE_EQ(c.scale(), s.scale());

    const int64_t in = 24, out = 10, r = 16;
    Rng rng(3);
    Linear l(in, out, /*bias=*/true, DType::F64);
    init_linear_default(l, rng);
    l.add_lora(s, rng);
    for (int64_t i = 0; i < l.lora_B.numel(); ++i) l.lora_B.data<double>()[i] = rng.normal();
    std::vector<double> xv(2 * in);
    for (auto& v : xv) v = rng.normal();
    Tensor y = l.forward(Tensor::from_vector(xv, {2, in}));
    double max_diff = 0;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t o = 0; o < out; ++o) {
        double base = l.bias.item(o), delta = 0;
        for (int64_t i = 0; i < in; ++i) base += l.weight.item(o * in + i) * xv[b * in + i];
        for (int64_t j = 0; j < r; ++j) {
          double ax = 0;
          for (int64_t i = 0; i < in; ++i) ax += l.lora_A.item(j * in + i) * xv[b * in + i];
          delta += l.lora_B.item(o * r + j) * ax;
        }
        const double want = base + (rs ? 32.0 / 4.0 : 32.0 / 16.0) * delta;
        max_diff = std::max(max_diff, std::abs(y.item(b * out + o) - want));
      }
    EXPECT_LT(max_diff, 1e-12) << (rs ? "rsLoRA" : "LoRA");
  }
}

// After merge + drop, a layer can take a new adapter (the registry keeps its lora_A/lora_B slots).
TEST(Lora, NewAdapterAfterDropLora) {
  Rng rng(1);
  Linear l(64, 32, false, DType::F32);
  init_linear_default(l, rng);
  LoraSettings s{4, 8.0, 0.0, false};
  l.add_lora(s, rng);
  EXPECT_THROW(l.drop_lora(), Error);  // unmerged: its update would be lost
  l.merge_lora();
  l.drop_lora();
  EXPECT_EQ(l.named_parameters().size(), 1u);
  s.r = 8;
  l.add_lora(s, rng);
  auto named = l.named_parameters();
  ASSERT_EQ(named.size(), 3u);
  EXPECT_EQ(named[1].first, "lora_A");
  EXPECT_EQ(named[1].second.shape(), (Shape{8, 64}));
  EXPECT_TRUE(named[2].second.requires_grad());
}

}  // namespace
}  // namespace mg
