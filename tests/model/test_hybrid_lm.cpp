// The hybrid model: gradients (float64 finite differences) through MoE routing and a whole
// 2-layer model, MoE against a naive loop, causality, L_aux, overfitting, recurrent decoding
// and gradient checkpointing.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "model/hybrid_lm.h"

namespace mg {
namespace {

ModelConfig tiny_config(const std::string& pattern = "ME") {
  ModelConfig c;
  c.d_model = 8;
  c.vocab_size = 11;
  c.layer_pattern = pattern;
  c.d_state = 4;
  c.d_conv = 3;
  c.expand = 2;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_hidden = 6;
  c.aux_loss_coef = 0.1;
  c.z_loss_coef = 0.01;
  return c;
}

Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(B * T);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(V));
  return Tensor::from_ids(v, {B, T});
}

// Central differences in float64 on sampled entries of every parameter, against backward.
void expect_model_grads_match(HybridLM& model, const std::function<Tensor()>& loss_fn, double tol) {
  model.zero_grad();
  current_tape().backward(loss_fn());
  int checked = 0;
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    Tensor g = p.grad();
    const int64_t n = p.numel(), stride = std::max<int64_t>(1, n / 7);
    for (int64_t i = 0; i < n; i += stride) {
      double* v = p.data<double>() + i;
      const double orig = *v, eps = 1e-6;
      double lp, lm;
      {
        NoGradGuard ng;
        *v = orig + eps;
        lp = loss_fn().item();
        *v = orig - eps;
        lm = loss_fn().item();
        *v = orig;
      }
      const double numeric = (lp - lm) / (2 * eps), analytic = g.defined() ? g.item(i) : 0.0;
      EXPECT_NEAR(analytic, numeric, tol + 1e-5 * std::abs(numeric)) << name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

TEST(HybridLM, WholeTwoLayerModelGradcheck) {
  for (ExpertMlp mlp : {ExpertMlp::Gelu, ExpertMlp::Swiglu}) {
    ModelConfig cfg = tiny_config("ME");
    cfg.expert_mlp = mlp;
    HybridLM model(cfg, DType::F64);
    model.init(3);
    Tensor tok = random_ids(2, 5, cfg.vocab_size, 1), tgt = random_ids(2, 5, cfg.vocab_size, 2);
    expect_model_grads_match(model, [&] { return model.forward(tok, tgt).loss; }, 1e-7);
  }
}

TEST(HybridLM, UntiedHeadAndCapacityFactorGradcheck) {
  ModelConfig cfg = tiny_config("EM");
  cfg.tie_embeddings = false;
  cfg.capacity_factor = 0.6;  // drops some assignments
  HybridLM model(cfg, DType::F64);
  model.init(4);
  Tensor tok = random_ids(2, 6, cfg.vocab_size, 3), tgt = random_ids(2, 6, cfg.vocab_size, 4);
  LmOutput out = model.forward(tok, tgt);
  EXPECT_GT(out.routing.at(0).dropped, 0);
  expect_model_grads_match(model, [&] { return model.forward(tok, tgt).loss; }, 1e-7);
}

// MoE forward against a plain loop: every token through its top-k experts, weights renormalized.
TEST(MoE, ForwardMatchesNaiveLoopAndAuxLossFormula) {
  ModelConfig cfg = tiny_config("E");
  cfg.n_experts = 5;
  cfg.top_k = 2;
  MoeMixer moe(cfg, DType::F64);
  Rng rng(5);
  moe.init(rng);
  const int64_t B = 2, T = 7, C = cfg.d_model, E = 5, k = 2;
  std::vector<double> hv(B * T * C);
  for (auto& v : hv) v = rng.normal();
  Tensor h = Tensor::from_vector(hv, {B, T, C});
  MoeOutput out = moe.forward(h);

  auto expert_apply = [&](int e, const double* x, double* y) {
    const Expert& ex = *moe.experts[e];
    std::vector<double> hid(cfg.expert_hidden);
    for (int f = 0; f < cfg.expert_hidden; ++f) {
      double s = 0;
      for (int c = 0; c < C; ++c) s += ex.up.weight.data<double>()[f * C + c] * x[c];
      hid[f] = 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)));
    }
    for (int c = 0; c < C; ++c) {
      double s = 0;
      for (int f = 0; f < cfg.expert_hidden; ++f) s += ex.down.weight.data<double>()[c * cfg.expert_hidden + f] * hid[f];
      y[c] = s;
    }
  };
  std::vector<double> P(E, 0), f(E, 0);
  double zsum = 0, max_diff = 0;
  for (int64_t m = 0; m < B * T; ++m) {
    const double* x = hv.data() + m * C;
    std::vector<double> logit(E), p(E);
    double mx = -1e300, s = 0;
    for (int e = 0; e < E; ++e) {
      logit[e] = 0;
      for (int c = 0; c < C; ++c) logit[e] += moe.router.weight.data<double>()[e * C + c] * x[c];
      mx = std::max(mx, logit[e]);
    }
    for (int e = 0; e < E; ++e) s += std::exp(logit[e] - mx);
    for (int e = 0; e < E; ++e) p[e] = std::exp(logit[e] - mx) / s, P[e] += p[e] / (B * T);
    zsum += std::pow(mx + std::log(s), 2);
    std::vector<int> order = {0, 1, 2, 3, 4};
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double wsum = p[order[0]] + p[order[1]];
    std::vector<double> y(C, 0), ye(C);
    for (int j = 0; j < k; ++j) {
      f[order[j]] += 1.0 / (B * T * k);
      expert_apply(order[j], x, ye.data());
      for (int c = 0; c < C; ++c) y[c] += p[order[j]] / wsum * ye[c];
    }
    for (int c = 0; c < C; ++c) max_diff = std::max(max_diff, std::abs(y[c] - out.out.item(m * C + c)));
  }
  EXPECT_LT(max_diff, 1e-12);
  double aux = 0;
  for (int e = 0; e < E; ++e) aux += E * f[e] * P[e];
  EXPECT_NEAR(out.aux.item(), aux, 1e-12);
  EXPECT_NEAR(out.z.item(), zsum / (B * T), 1e-12);
  int64_t total = 0;
  for (auto n : out.stats.tokens_per_expert) total += n;
  EXPECT_EQ(total, B * T * k);
}

TEST(MoE, AuxLossIsOneUnderUniformRouting) {
  for (int k : {1, 2, 3}) {
    ModelConfig cfg = tiny_config("E");
    cfg.top_k = k;
    MoeMixer moe(cfg, DType::F64);
    Rng rng(1);
    moe.init(rng);
    moe.router.weight.fill(0.0);  // p uniform: P_i = 1/E whatever the top-k choice
    Tensor h = Tensor::full({1, 9, cfg.d_model}, 0.3, DType::F64);
    EXPECT_NEAR(moe.forward(h).aux.item(), 1.0, 1e-12) << "k=" << k;
  }
}

TEST(MoE, TopKTiesGoToLowerIndex) {
  Tensor p = Tensor::from_vector(std::vector<double>{0.25, 0.25, 0.25, 0.25, 0.1, 0.4, 0.4, 0.1}, {2, 4});
  auto idx = topk_experts(p, 2);
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1, 1, 2}));
}

TEST(HybridLM, CausalChangingTokenTLeavesEarlierLogits) {
  ModelConfig cfg = tiny_config("MEM");
  HybridLM model(cfg, DType::F32);
  model.init(9);
  Tensor tok = random_ids(1, 12, cfg.vocab_size, 7);
  NoGradGuard ng;
  Tensor a = model.forward(tok, Tensor()).logits;
  const int64_t t = 6;
  tok.data<int32_t>()[t] = (tok.data<int32_t>()[t] + 1) % cfg.vocab_size;
  Tensor b = model.forward(tok, Tensor()).logits;
  const int64_t V = cfg.vocab_size;
  for (int64_t i = 0; i < t * V; ++i) ASSERT_EQ(a.item(i), b.item(i)) << "logit " << i << " before t changed";
  double changed = 0;
  for (int64_t i = t * V; i < 12 * V; ++i) changed += std::abs(a.item(i) - b.item(i));
  EXPECT_GT(changed, 0.0);
}

TEST(HybridLM, RecurrentDecodingMatchesParallelForward) {
  ModelConfig cfg = tiny_config("MEMM");
  HybridLM model(cfg, DType::F64);
  model.init(11);
  const int64_t B = 2, T = 9, V = cfg.vocab_size;
  Tensor tok = random_ids(B, T, V, 5);
  Tensor full = model.forward(tok, Tensor()).logits;  // (B*T, V)
  HybridLM::DecodeState st;
  double max_diff = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> col(B);
    for (int64_t b = 0; b < B; ++b) col[b] = tok.data<int32_t>()[b * T + t];
    Tensor step = model.decode_step(Tensor::from_ids(col, {B}), st);  // (B, V)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v)
        max_diff = std::max(max_diff, std::abs(step.item(b * V + v) - full.item((b * T + t) * V + v)));
  }
  EXPECT_LT(max_diff, 1e-10);
}

// A prompt prefilled in one batched pass, then decoded on, gives the logits of decoding every
// token one by one: prompts shorter than the conv window (T < K-1), equal to it, and longer
// than a scan chunk; Mamba and MoE layers; two sequences.
TEST(HybridLM, PrefillThenDecodeMatchesDecodingTokenByToken) {
  for (const std::string pattern : {"MEMM", "EM"}) {
    ModelConfig cfg = tiny_config(pattern);  // d_conv 3: the conv state holds 2 inputs
    HybridLM model(cfg, DType::F64);
    model.init(13);
    for (auto& layer : model.layers)
      if (layer->mamba) layer->mamba->scan_chunk = 4;  // prompts of 7 cross chunk boundaries
    const int64_t B = 2, V = cfg.vocab_size, more = 4;
    for (int64_t P : {1, 2, 7}) {
      SCOPED_TRACE(::testing::Message() << pattern << " prompt " << P);
      Tensor tok = random_ids(B, P + more, V, 21 + P);
      auto column = [&](int64_t t) {
        std::vector<int32_t> col(B);
        for (int64_t b = 0; b < B; ++b) col[b] = tok.data<int32_t>()[b * (P + more) + t];
        return Tensor::from_ids(col, {B});
      };
      HybridLM::DecodeState one_by_one, prefilled;
      std::vector<Tensor> want;
      for (int64_t t = 0; t < P + more; ++t) want.push_back(model.decode_step(column(t), one_by_one));
      std::vector<int32_t> prompt;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < P; ++t) prompt.push_back(tok.data<int32_t>()[b * (P + more) + t]);
      std::vector<Tensor> got{model.prefill(Tensor::from_ids(prompt, {B, P}), prefilled)};
      for (int64_t t = P; t < P + more; ++t) got.push_back(model.decode_step(column(t), prefilled));
      double max_diff = 0;
      for (size_t k = 0; k < got.size(); ++k)
        for (int64_t i = 0; i < B * V; ++i)
          max_diff = std::max(max_diff, std::abs(got[k].item(i) - want[P - 1 + k].item(i)));
      EXPECT_LT(max_diff, 1e-10);
      EXPECT_THROW(model.prefill(Tensor::from_ids(prompt, {B, P}), prefilled), Error);  // not fresh
    }
  }
}

TEST(HybridLM, GradientCheckpointingGivesIdenticalGradients) {
  ModelConfig cfg = tiny_config("MEME");
  HybridLM model(cfg, DType::F32);
  model.init(2);
  Tensor tok = random_ids(2, 8, cfg.vocab_size, 1), tgt = random_ids(2, 8, cfg.vocab_size, 2);
  auto grads = [&](GradCheckpointing policy) {
    model.zero_grad();
    ForwardOptions o;
    o.training = true;
    o.checkpointing = policy;
    LmOutput out = model.forward(tok, tgt, o);
    current_tape().backward(out.loss);
    std::vector<std::vector<double>> g;
    for (auto& [n, p] : model.named_parameters()) g.push_back(p.grad().to_double_vector());
    g.push_back({out.loss.item()});
    return g;
  };
  auto plain = grads(GradCheckpointing::None);
  EXPECT_EQ(plain, grads(GradCheckpointing::EveryLayer));
  EXPECT_EQ(plain, grads(GradCheckpointing::EveryN));
}

TEST(HybridLM, TinyModelOverfitsAFixedBatch) {
  ModelConfig cfg = tiny_config("ME");
  cfg.d_model = 16;
  cfg.vocab_size = 16;
  HybridLM model(cfg, DType::F32);
  model.init(1);
  Tensor tok = random_ids(2, 16, 16, 3), tgt = random_ids(2, 16, 16, 4);
  // Plain Adam written out here (the trainer's fused AdamW is tested separately).
  auto params = model.named_parameters();
  std::vector<std::vector<float>> m(params.size()), v(params.size());
  float first = 0, last = 0;
  for (int step = 1; step <= 300; ++step) {
    model.zero_grad();
    LmOutput out = model.forward(tok, tgt, {.training = true});
    current_tape().backward(out.loss);
    if (step == 1) first = static_cast<float>(out.ce_loss.item());
    last = static_cast<float>(out.ce_loss.item());
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor& p = params[i].second;
      if (!p.grad().defined()) continue;
      m[i].resize(p.numel());
      v[i].resize(p.numel());
      float* w = p.data<float>();
      const float* g = p.grad().data<float>();
      for (int64_t j = 0; j < p.numel(); ++j) {
        m[i][j] = 0.9f * m[i][j] + 0.1f * g[j];
        v[i][j] = 0.999f * v[i][j] + 0.001f * g[j] * g[j];
        float mh = m[i][j] / (1 - std::pow(0.9f, step)), vh = v[i][j] / (1 - std::pow(0.999f, step));
        w[j] -= 1e-2f * mh / (std::sqrt(vh) + 1e-8f);
      }
    }
  }
  EXPECT_GT(first, 2.0f);
  EXPECT_LT(last, 0.05f) << "from " << first;
}

// Presets (design.md §4): the count the code allocates, built without allocating.
int64_t preset_params(int C, int V, const std::string& pattern, int E, int N, int F) {
  ModelConfig c;
  c.d_model = C;
  c.vocab_size = V;
  c.layer_pattern = pattern;
  c.n_experts = E;
  c.d_state = N;
  c.expert_hidden = F;
  HybridLM meta(c, DType::F32, /*meta=*/true);
  return meta.num_parameters();
}

TEST(Presets, ParameterCountsMatchTheSeed) {
  const int64_t phase1 = preset_params(512, 10000, "MEMEMEE", 8, 16, 2048);
  EXPECT_NEAR(phase1 / 77.2e6, 1.0, 0.02) << phase1;
  std::string p3b;
  for (int i = 0; i < 39; ++i) p3b += (i % 4 == 3) ? 'E' : 'M';
  const int64_t prod = preset_params(2048, 50257, p3b, 8, 16, 8192);
  EXPECT_NEAR(prod / 3284e6, 1.0, 0.02) << prod;
}

}  // namespace
}  // namespace mg
