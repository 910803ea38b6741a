// Hugging Face's MambaForCausalLM as an oracle for the Mamba path. The fixture
// tests/fixtures/hf_mamba_oracle.h5 was written by scripts/oracle/hf_mamba_oracle.py with
// transformers 5.17 / torch 2.11 (float64, CPU, random weights): HF's parameters under HF's
// names, a batch of tokens and targets, HF's logits, loss and gradients, and a greedy
// continuation made through HF's recurrent cache path. magellan loads the weights by the
// rename design.md §3 promises ("backbone." dropped, "embeddings" -> "embedding") and must
// reproduce all of it.
//
// Tolerance: HF computes RMSNorm, exp(A_log) and B in float32 even in a float64 model (its
// script checks itself against a plain float64 loop to ~1e-6), so agreement is to ~1e-5 of
// the largest value, not to float64 rounding. A wrong op is off by O(1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "checkpoints/h5_file.h"
#include "model/hybrid_lm.h"
#include "tests/test_paths.h"

namespace mg {
namespace {

const std::string kFixture = test_paths::repo_path("tests/fixtures/hf_mamba_oracle.h5");

// HF's name -> design.md's name (empty: not a separate parameter here).
std::string magellan_name(std::string hf) {
  auto replace_prefix = [&](const std::string& from, const std::string& to) {
    if (hf.rfind(from, 0) == 0) hf = to + hf.substr(from.size());
  };
  replace_prefix("backbone.embeddings.", "embedding.");
  replace_prefix("backbone.", "");
  return hf == "lm_head.weight" ? "" : hf;  // tied to the embedding
}

// Lists the datasets under `group` with their full paths ("/hf/backbone.layers.0.mixer.D").
std::vector<std::string> datasets_under(const H5File& f, const std::string& group) {
  std::vector<std::string> names;
  for (const std::string& n : f.list(group)) names.push_back(group + "/" + n);
  return names;
}

class HfMambaOracle : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = H5File::open_read(kFixture);
    cfg_.vocab_size = static_cast<int>(file_.int_attr("/", "vocab_size"));
    cfg_.d_model = static_cast<int>(file_.int_attr("/", "hidden_size"));
    cfg_.d_state = static_cast<int>(file_.int_attr("/", "state_size"));
    cfg_.d_conv = static_cast<int>(file_.int_attr("/", "conv_kernel"));
    cfg_.expand = static_cast<int>(file_.int_attr("/", "expand"));
    cfg_.dt_rank = static_cast<int>(file_.int_attr("/", "time_step_rank"));
    cfg_.norm_eps = file_.double_attr("/", "layer_norm_epsilon");
    cfg_.layer_pattern = std::string(file_.int_attr("/", "num_hidden_layers"), 'M');
    cfg_.tie_embeddings = true;
    ASSERT_EQ(file_.int_attr("/", "tie_word_embeddings"), 1);
    ASSERT_EQ(file_.int_attr("/", "use_bias"), 0);
    ASSERT_EQ(file_.int_attr("/", "use_conv_bias"), 1);

    model_ = std::make_unique<HybridLM>(cfg_, DType::F64);
    std::map<std::string, Tensor> ours;
    for (auto& [name, p] : model_->named_parameters()) ours[name] = p;
    int loaded = 0;
    for (const std::string& path : datasets_under(file_, "/hf")) {
      const std::string name = magellan_name(path.substr(4));
      if (name.empty()) continue;
      auto it = ours.find(name);
      ASSERT_NE(it, ours.end()) << "HF parameter " << path << " has no magellan counterpart " << name;
      ASSERT_EQ(it->second.shape(), file_.shape(path)) << name;
      file_.read(path, DType::F64, it->second.data<double>());
      ++loaded;
    }
    ASSERT_EQ(loaded, static_cast<int>(ours.size())) << "every magellan parameter comes from HF";
  }

  // A whole int32 dataset as a tensor of ids with the dataset's shape.
  Tensor ids(const std::string& path) const {
    return Tensor::from_ids(file_.read_vector<int32_t>(path), file_.shape(path));
  }

  void expect_greedy_decoding_matches_hf(bool prefill);

  H5File file_;
  ModelConfig cfg_;
  std::unique_ptr<HybridLM> model_;
};

// max |a - b| over max |b|, both flat of equal size.
double relative_gap(const Tensor& ours, const std::vector<double>& ref) {
  EXPECT_EQ(ours.numel(), static_cast<int64_t>(ref.size()));
  double gap = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    gap = std::max(gap, std::abs(ours.item(static_cast<int64_t>(i)) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return gap / std::max(scale, 1e-300);
}

TEST_F(HfMambaOracle, LogitsAndLossMatchHuggingFace) {
  NoGradGuard no_grad;
  LmOutput out = model_->forward(ids("/inputs/tokens"), ids("/inputs/targets"));
  EXPECT_LT(relative_gap(out.logits, file_.read_vector<double>("/outputs/logits")), 1e-5);
  const double hf_loss = file_.read_vector<double>("/outputs/loss").at(0);
  EXPECT_NEAR(out.loss.item(), hf_loss, 1e-5 * hf_loss);
}

TEST_F(HfMambaOracle, EveryParameterGradientMatchesHuggingFace) {
  model_->zero_grad();
  current_tape().backward(model_->forward(ids("/inputs/tokens"), ids("/inputs/targets")).loss);
  int compared = 0;
  for (const std::string& path : datasets_under(file_, "/grads")) {
    const std::string name = magellan_name(path.substr(7));
    if (name.empty()) continue;
    for (auto& [ours_name, p] : model_->named_parameters()) {
      if (ours_name != name) continue;
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_LT(relative_gap(p.grad(), file_.read_vector<double>(path)), 2e-5) << name;
      ++compared;
    }
  }
  EXPECT_EQ(compared, static_cast<int>(model_->named_parameters().size()));
}

// Greedy decoding through decode_step (the recurrent path), the prompt fed token by token or
// prefilled in one batched pass, gives HF's tokens, and each step's logits equal the logits HF
// chose that token from.
TEST_F(HfMambaOracle, RecurrentGreedyDecodingMatchesHuggingFaceGenerate) {
  for (bool prefill : {false, true}) {
    SCOPED_TRACE(prefill ? "prompt prefilled" : "prompt token by token");
    expect_greedy_decoding_matches_hf(prefill);
  }
}

void HfMambaOracle::expect_greedy_decoding_matches_hf(bool prefill) {
  NoGradGuard no_grad;
  const std::vector<int32_t> prompt = file_.read_vector<int32_t>("/generate/prompt");
  const std::vector<int32_t> expected = file_.read_vector<int32_t>("/generate/tokens");
  const std::vector<double> scores = file_.read_vector<double>("/generate/scores");  // (G, V)
  const int64_t V = cfg_.vocab_size, G = static_cast<int64_t>(expected.size() - prompt.size());
  ASSERT_EQ(static_cast<int64_t>(scores.size()), G * V);

  HybridLM::DecodeState state;
  Tensor logits;  // (1, V)
  if (prefill)
    logits = model_->prefill(Tensor::from_ids(prompt, {1, static_cast<int64_t>(prompt.size())}), state);
  else
    for (int32_t t : prompt) logits = model_->decode_step(Tensor::from_ids({t}, {1}), state);
  std::vector<int32_t> generated(prompt);
  double worst = 0;
  for (int64_t g = 0; g < G; ++g) {
    int32_t best = 0;
    for (int64_t v = 0; v < V; ++v) {
      worst = std::max(worst, std::abs(logits.item(v) - scores[g * V + v]));
      if (logits.item(v) > logits.item(best)) best = static_cast<int32_t>(v);
    }
    generated.push_back(best);
    logits = model_->decode_step(Tensor::from_ids({best}, {1}), state);
  }
  EXPECT_EQ(generated, expected);
  double scale = 0;
  for (double s : scores) scale = std::max(scale, std::abs(s));
  EXPECT_LT(worst, 1e-5 * scale);
}

}  // namespace
}  // namespace mg
