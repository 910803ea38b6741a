// The embedding table frozen in NF4 (model/embedding.h), as lookup and as the tied LM head:
//   - a lookup equals the rows of the fully dequantized table, bit for bit (C not a multiple
//     of the NF4 block, odd V*C included), and records nothing on the tape;
//   - the tied head's logits and input gradient against naive double loops over the
//     dequantized table;
//   - a tied model with the NF4 table against a float32 model holding its dequantized values:
//     forward, decode_step and every trainable parameter's gradient; the table gets none.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "model/embedding.h"
#include "model/hybrid_lm.h"

namespace mg {
namespace {

std::vector<float> random_floats(int64_t n, double stddev, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(stddev * rng.normal());
  return v;
}

// An Embedding [V, C] holding N(0, 0.5) values, quantized when asked.
std::unique_ptr<Embedding> random_embedding(int64_t V, int64_t C, uint64_t seed, bool quantize) {
  auto e = std::make_unique<Embedding>(V, C, DType::F32);
  const std::vector<float> values = random_floats(V * C, 0.5, seed);
  std::memcpy(e->weight.data<float>(), values.data(), values.size() * sizeof(float));
  if (quantize) e->quantize();
  return e;
}

// max |a - b| relative to max |b|.
double rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double d = 0, ref = 0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) {
    d = std::max(d, std::abs(a.item(i) - b.item(i)));
    ref = std::max(ref, std::abs(b.item(i)));
  }
  return d / std::max(ref, 1e-30);
}

struct Shape2 { int64_t V, C; };
// C = 64: whole blocks per row; C = 100: blocks straddle rows; 37 x 51 = 1887 and 3 x 7 = 21:
// odd V*C, so rows start on odd elements (low nibbles) and the last block is short.
const Shape2 kShapes[] = {{5, 64}, {13, 100}, {37, 51}, {3, 7}, {1, 1}};

TEST(NF4Embedding, LookupEqualsRowsOfTheFullyDequantizedTable) {
  for (Shape2 s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "V " << s.V << " C " << s.C);
    auto e = random_embedding(s.V, s.C, 1, /*quantize=*/true);
    ASSERT_TRUE(e->is_quantized());
    // Reference: nf4_dequantize of the whole table, then plain indexing.
    const std::vector<float> table = nf4_dequantize(*e->quantized());  // (V*C)
    std::vector<int32_t> ids = {0, static_cast<int32_t>(s.V - 1), static_cast<int32_t>(s.V / 2), 0};
    Rng rng(2);
    for (int i = 0; i < 20; ++i) ids.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(s.V))));
    const int64_t M = static_cast<int64_t>(ids.size());
    Tensor out = e->forward(Tensor::from_ids(ids, {2, M / 2}));  // (2, M/2, C)
    ASSERT_EQ(out.shape(), (Shape{2, M / 2, s.C}));
    int64_t mismatches = 0, first = -1;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t c = 0; c < s.C; ++c) {
        const float want = table[static_cast<size_t>(ids[i] * s.C + c)];
        const float got = out.data<float>()[i * s.C + c];
        if (std::memcmp(&want, &got, sizeof(float)) != 0 && mismatches++ == 0) first = i * s.C + c;
      }
    EXPECT_EQ(mismatches, 0) << "first at flat index " << first;
    // dense_weight is the same dequantization.
    EXPECT_EQ(e->dense_weight().to_double_vector(), std::vector<double>(table.begin(), table.end()));
  }
}

TEST(NF4Embedding, QuantizedTableIsAFrozenMetaParameterWithItsNameAndShape) {
  auto e = random_embedding(13, 100, 3, /*quantize=*/false);
  EXPECT_TRUE(e->weight.requires_grad());
  e->quantize();
  EXPECT_TRUE(e->weight.is_meta());
  EXPECT_FALSE(e->weight.requires_grad());
  EXPECT_EQ(e->weight.name(), "weight");
  EXPECT_EQ(e->weight.shape(), (Shape{13, 100}));
  const auto named = e->named_parameters();
  ASSERT_EQ(named.size(), 1u);
  EXPECT_TRUE(named[0].second.is_meta()) << "the registry must see the meta tensor";
  // Bytes: NF4 codes + double-quantized absmax, plus the absmax cached for lookups.
  EXPECT_EQ(nf4_bytes(13, 100), e->quantized()->bytes());
  EXPECT_EQ(Embedding::nf4_resident_bytes(13, 100), e->quantized()->bytes() + 4 * e->quantized()->n_blocks());

  // Lookups record nothing and give an output without gradient (the table is frozen).
  Tape tape;
  TapeScope scope(tape);
  Tensor out = e->forward(Tensor::from_ids({1, 2, 12}, {3}));
  EXPECT_FALSE(out.requires_grad());
  EXPECT_EQ(tape.size(), 0u);

  EXPECT_THROW(e->forward(Tensor::from_ids({13}, {1})), Error);  // outside the vocabulary
  EXPECT_THROW(e->forward(Tensor::from_ids({-1}, {1})), Error);
  Embedding other(13, 99, DType::F32);
  EXPECT_THROW(other.set_quantized(e->quantized()), Error);  // [13, 100] into [13, 99]

  // dequantize() gives back a float table with the same values, still frozen.
  const std::vector<double> values = e->dense_weight().to_double_vector();
  e->dequantize();
  EXPECT_FALSE(e->is_quantized());
  EXPECT_FALSE(e->weight.is_meta());
  EXPECT_FALSE(e->weight.requires_grad());
  EXPECT_EQ(e->weight.to_double_vector(), values);
}

// The tied head on an NF4 table: logits = h W^T and dh = g W, with W the dequantized table,
// against the plain triple loops in double. g = dL/dlogits is random, so every logit counts.
TEST(NF4Embedding, TiedHeadLogitsAndInputGradientMatchNaiveLoops) {
  for (Shape2 s : {Shape2{37, 51}, Shape2{50, 128}}) {
    for (int64_t M : {3, 40}) {  // the direct and the sgemm NF4 kernels (nf4.h)
      SCOPED_TRACE(::testing::Message() << "V " << s.V << " C " << s.C << " M " << M);
      auto e = random_embedding(s.V, s.C, 4, /*quantize=*/true);
      const std::vector<float> W = nf4_dequantize(*e->quantized());  // [V, C]
      Tensor h = Tensor::from_vector(random_floats(M * s.C, 1.0, 5), {M, s.C});
      h.set_requires_grad(true, /*is_param=*/true);
      const std::vector<float> g = random_floats(M * s.V, 1.0, 6);  // (M, V)

      Tensor logits = e->attend(h);  // (M, V)
      ASSERT_EQ(logits.shape(), (Shape{M, s.V}));
      current_tape().backward({logits}, {Tensor::from_vector(g, {M, s.V})});

      std::vector<double> want_logits(M * s.V, 0.0), want_dh(M * s.C, 0.0);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t v = 0; v < s.V; ++v)
          for (int64_t c = 0; c < s.C; ++c) {
            want_logits[m * s.V + v] += h.item(m * s.C + c) * static_cast<double>(W[v * s.C + c]);
            want_dh[m * s.C + c] += static_cast<double>(g[m * s.V + v]) * static_cast<double>(W[v * s.C + c]);
          }
      const double d_logits = rel_diff(logits, Tensor::from_vector(want_logits, {M, s.V}));
      const double d_dh = rel_diff(h.grad(), Tensor::from_vector(want_dh, {M, s.C}));
      EXPECT_LT(d_logits, 1e-5) << "logits";
      EXPECT_LT(d_dh, 1e-5) << "dh";
      EXPECT_TRUE(e->weight.is_meta() && !e->weight.grad().defined()) << "the NF4 table got a gradient";
    }
  }
}

// C = 51: not a multiple of 64, and V*C = 37*51 odd.
ModelConfig tied_config() {
  ModelConfig c;
  c.d_model = 51;
  c.vocab_size = 37;
  c.layer_pattern = "MEM";
  c.d_state = 4;
  c.d_conv = 3;
  c.expand = 2;
  c.n_experts = 3;
  c.top_k = 2;
  c.expert_hidden = 40;
  c.aux_loss_coef = 0.01;
  c.z_loss_coef = 0.001;
  return c;
}

// Two models from one seed: `nf4` with its embedding quantized, `dense` a float32 model whose
// embedding holds the dequantized table; everything else equal.
struct TwinModels {
  std::unique_ptr<HybridLM> nf4, dense;
};
TwinModels twin_models(uint64_t seed) {
  TwinModels t{std::make_unique<HybridLM>(tied_config()), std::make_unique<HybridLM>(tied_config())};
  t.nf4->init(seed);
  t.dense->init(seed);
  // Larger than the N(0, 0.02) init so the head's logits are not all near zero.
  for (HybridLM* m : {t.nf4.get(), t.dense.get()}) {
    float* e = m->embedding.weight.data<float>();
    for (int64_t i = 0; i < m->embedding.weight.numel(); ++i) e[i] *= 20.0f;
  }
  t.nf4->embedding.quantize();
  const Tensor table = t.nf4->embedding.dense_weight();
  std::memcpy(t.dense->embedding.weight.data<float>(), table.data<float>(), table.bytes());
  set_trainable(t.dense->embedding.weight, false);  // frozen in both
  return t;
}

Tensor ids_of(std::vector<int32_t> v, Shape shape) { return Tensor::from_ids(v, shape); }

TEST(NF4Embedding, TiedModelMatchesFloatModelOnTheDequantizedTable) {
  TwinModels t = twin_models(11);
  ASSERT_TRUE(t.nf4->embedding.is_quantized());
  ASSERT_FALSE(t.dense->embedding.is_quantized());
  const Tensor tok = ids_of({0, 5, 36, 7, 7, 1, 20, 3, 36, 2}, {2, 5});
  {
    NoGradGuard ng;
    const Tensor a = t.nf4->forward(tok, Tensor()).logits, b = t.dense->forward(tok, Tensor()).logits;
    ASSERT_EQ(a.shape(), (Shape{10, 37}));
    EXPECT_LT(rel_diff(a, b), 1e-5);
    double spread = 0;
    for (int64_t i = 0; i < b.numel(); ++i) spread = std::max(spread, std::abs(b.item(i)));
    EXPECT_GT(spread, 0.5) << "logits too small for the comparison to mean much";
  }
  // Recurrent decoding: four steps of two sequences.
  HybridLM::DecodeState sa, sb;
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE(step);
    const Tensor ids = ids_of({step, 36 - step}, {2});
    const Tensor a = t.nf4->decode_step(ids, sa), b = t.dense->decode_step(ids, sb);
    ASSERT_EQ(a.shape(), (Shape{2, 37}));
    EXPECT_LT(rel_diff(a, b), 1e-5);
  }
}

// Training through the NF4 tied head: the loss and every trainable parameter's gradient (all
// of them lie before the head, so each one's dh passed through it) equal the float model's;
// the NF4 table gets no gradient.
TEST(NF4Embedding, GradientsThroughTheNF4TiedHeadMatchTheFloatModel) {
  TwinModels t = twin_models(12);
  const Tensor tok = ids_of({4, 8, 15, 16, 23, 36, 0, 1}, {2, 4});
  const Tensor tgt = ids_of({8, 15, 16, 23, 36, 0, 1, 2}, {2, 4});
  LmOutput oa = t.nf4->forward(tok, tgt, {.training = true});
  current_tape().backward(oa.loss);
  LmOutput ob = t.dense->forward(tok, tgt, {.training = true});
  current_tape().backward(ob.loss);
  EXPECT_NEAR(oa.loss.item(), ob.loss.item(), 1e-5 * std::abs(ob.loss.item()));

  auto pa = t.nf4->named_parameters(), pb = t.dense->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  int compared = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    const std::string& name = pa[i].first;
    if (name == "embedding.weight") {
      EXPECT_TRUE(pa[i].second.is_meta()) << name;
      EXPECT_FALSE(pa[i].second.requires_grad()) << name;
      EXPECT_FALSE(pa[i].second.grad().defined()) << "the NF4 table got a gradient";
      EXPECT_FALSE(pb[i].second.grad().defined()) << "the frozen float table got a gradient";
      continue;
    }
    ASSERT_TRUE(pa[i].second.grad().defined() && pb[i].second.grad().defined()) << name;
    EXPECT_LT(rel_diff(pa[i].second.grad(), pb[i].second.grad()), 1e-4) << name;
    ++compared;
  }
  EXPECT_GT(compared, 15);
}

}  // namespace
}  // namespace mg
