// Importing a Hugging Face Mamba directory. tests/fixtures/hf_mamba_tiny/ is what HF's
// save_pretrained wrote (config.json, float32 model.safetensors) for the same random model as
// tests/fixtures/hf_mamba_oracle.h5: imported, it must hold the oracle's weights (rounded to
// float32) and reproduce HF's logits. Then shards, and configs and weights that do not fit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "autograd/error.h"
#include "autograd/tape.h"
#include "checkpoints/h5_file.h"
#include "checkpoints/hf_import.h"
#include "checkpoints/safetensors.h"
#include "h5_test_util.h"
#include "tests/test_paths.h"

namespace mg {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::ScratchDir;

const fs::path kFixtures = test_paths::repo_path("tests/fixtures");
const fs::path kTiny = kFixtures / "hf_mamba_tiny";

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// Float32 tensors -> a safetensors file (header by hand, as the format says).
void write_f32_safetensors(const fs::path& path, const std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>& tensors) {
  std::string header = "{", data;
  for (const auto& [name, t] : tensors) {
    const auto& [shape, values] = t;
    std::string dims;
    for (int64_t d : shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    header += (header.size() > 1 ? "," : "") + std::string("\"") + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims +
              "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  header += "}";
  std::string len(8, '\0');
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_text(path, len + header + data);
}

TEST(HfImport, ConfigJsonBecomesAnAllMambaModelConfig) {
  const ModelConfig c = hf_mamba_model_config((kTiny / "config.json").string());
  EXPECT_EQ(c.vocab_size, 37);
  EXPECT_EQ(c.d_model, 16);
  EXPECT_EQ(c.d_state, 4);
  EXPECT_EQ(c.d_conv, 4);
  EXPECT_EQ(c.expand, 2);
  EXPECT_EQ(c.resolved_dt_rank(), 3);
  EXPECT_EQ(c.layer_pattern, "MMM");
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(magellan_name_from_hf("backbone.embeddings.weight", true), "embedding.weight");
  EXPECT_EQ(magellan_name_from_hf("backbone.embedding.weight", true), "embedding.weight");
  EXPECT_EQ(magellan_name_from_hf("backbone.layers.2.mixer.A_log", true), "layers.2.mixer.A_log");
  EXPECT_EQ(magellan_name_from_hf("backbone.norm_f.weight", true), "norm_f.weight");
  EXPECT_EQ(magellan_name_from_hf("lm_head.weight", true), "");
  EXPECT_EQ(magellan_name_from_hf("lm_head.weight", false), "lm_head.weight");
}

TEST(HfImport, ImportedWeightsAreHfsAndReproduceItsLogits) {
  HybridLM model(hf_mamba_model_config((kTiny / "config.json").string()));
  const HfImportReport rep = load_hf_mamba_weights(kTiny.string(), model);
  EXPECT_EQ(rep.files.size(), 1u);
  EXPECT_EQ(rep.tensors_by_dtype.at("F32"), static_cast<int>(model.named_parameters().size()));

  const H5File oracle = H5File::open_read((kFixtures / "hf_mamba_oracle.h5").string());
  int checked = 0;
  for (auto& [name, p] : model.named_parameters()) {
    std::string hf = name == "embedding.weight" ? "backbone.embeddings.weight" : "backbone." + name;
    const std::vector<double> ref = oracle.read_vector<double>("/hf/" + hf);
    ASSERT_EQ(static_cast<int64_t>(ref.size()), p.numel()) << name;
    for (int64_t i = 0; i < p.numel(); ++i) ASSERT_EQ(p.data<float>()[i], static_cast<float>(ref[i])) << name << "[" << i << "]";
    ++checked;
  }
  EXPECT_EQ(checked, 3 * 10 + 2);  // per layer its norm and 9 mixer tensors; embedding, norm_f

  NoGradGuard no_grad;
  const Tensor tokens = Tensor::from_ids(oracle.read_vector<int32_t>("/inputs/tokens"), oracle.shape("/inputs/tokens"));
  const Tensor logits = model.forward(tokens, Tensor()).logits;
  const std::vector<double> ref = oracle.read_vector<double>("/outputs/logits");
  double gap = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    gap = std::max(gap, std::abs(logits.item(static_cast<int64_t>(i)) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  EXPECT_LT(gap, 1e-4 * scale);  // float32 weights and arithmetic against HF's float64 model
}

TEST(HfImport, ShardsListedByTheIndexImportLikeOneFile) {
  ScratchDir dir;
  fs::copy_file(kTiny / "config.json", dir.path / "config.json");
  const SafetensorsFile whole = SafetensorsFile::open((kTiny / "model.safetensors").string());
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> shard[2];
  std::string weight_map;
  for (const auto& [name, e] : whole.tensors()) {
    std::vector<float> v(static_cast<size_t>(e.numel()));
    whole.read(name, DType::F32, v.data());
    const int s = name.find("layers.0.") != std::string::npos || name.find("embeddings") != std::string::npos ? 0 : 1;
    shard[s][name] = {e.shape, v};
    weight_map += (weight_map.empty() ? "" : ",") + ("\"" + name + "\":\"model-0000" + std::to_string(s + 1) + "-of-00002.safetensors\"");
  }
  write_f32_safetensors(dir.path / "model-00001-of-00002.safetensors", shard[0]);
  write_f32_safetensors(dir.path / "model-00002-of-00002.safetensors", shard[1]);
  write_text(dir.path / "model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":{" + weight_map + "}}");

  HybridLM a(hf_mamba_model_config((kTiny / "config.json").string()));
  HybridLM b(hf_mamba_model_config((dir.path / "config.json").string()));
  load_hf_mamba_weights(kTiny.string(), a);
  EXPECT_EQ(load_hf_mamba_weights(dir.path.string(), b).files.size(), 2u);
  auto pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    for (int64_t j = 0; j < pa[i].second.numel(); ++j)
      ASSERT_EQ(pa[i].second.data<float>()[j], pb[i].second.data<float>()[j]) << pa[i].first;
}

// A tied model saved with lm_head.weight instead of (or beside) the embedding.
TEST(HfImport, TiedHeadStandsInForTheEmbeddingAndMustEqualIt) {
  ScratchDir dir;
  fs::copy_file(kTiny / "config.json", dir.path / "config.json");
  const SafetensorsFile whole = SafetensorsFile::open((kTiny / "model.safetensors").string());
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;
  for (const auto& [name, e] : whole.tensors()) {
    std::vector<float> v(static_cast<size_t>(e.numel()));
    whole.read(name, DType::F32, v.data());
    tensors[name == "backbone.embeddings.weight" ? "lm_head.weight" : name] = {e.shape, v};
  }
  write_f32_safetensors(dir.path / "model.safetensors", tensors);
  HybridLM reference(hf_mamba_model_config((kTiny / "config.json").string()));
  HybridLM from_head(hf_mamba_model_config((dir.path / "config.json").string()));
  load_hf_mamba_weights(kTiny.string(), reference);
  load_hf_mamba_weights(dir.path.string(), from_head);
  for (int64_t i = 0; i < reference.embedding.weight.numel(); ++i)
    ASSERT_EQ(from_head.embedding.weight.data<float>()[i], reference.embedding.weight.data<float>()[i]);

  tensors["backbone.embeddings.weight"] = tensors["lm_head.weight"];  // both, equal: fine
  write_f32_safetensors(dir.path / "model.safetensors", tensors);
  HybridLM both(hf_mamba_model_config((dir.path / "config.json").string()));
  load_hf_mamba_weights(dir.path.string(), both);
  tensors["lm_head.weight"].second[5] += 1.0f;  // both, different: refused
  write_f32_safetensors(dir.path / "model.safetensors", tensors);
  HybridLM differ(hf_mamba_model_config((dir.path / "config.json").string()));
  expect_error([&] { load_hf_mamba_weights(dir.path.string(), differ); },
               {"model.safetensors", "lm_head.weight differs from backbone.embeddings.weight", "tie_word_embeddings"});
}

TEST(HfImport, ConfigsMagellanCannotComputeAreRefusedByKeyAndFile) {
  ScratchDir dir;
  const std::string good = read_text(kTiny / "config.json");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
    const fs::path p = dir.path / "config.json";
    write_text(p, s);
    return p.string();
  };
  auto config_error = [&](const std::string& path, std::initializer_list<std::string> parts) {
    expect_error([&] { hf_mamba_model_config(path); }, parts);
  };
  config_error(with("\"use_bias\": false", "\"use_bias\": true"), {"config.json", "use_bias"});
  config_error(with("\"use_conv_bias\": true", "\"use_conv_bias\": false"), {"use_conv_bias"});
  config_error(with("\"model_type\": \"mamba\"", "\"model_type\": \"mamba2\""), {"model_type is 'mamba2'"});
  config_error(with("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), {"hidden_act", "gelu"});
  config_error(with("\"hidden_size\": 16", "\"hidden_size\": \"16\""), {"'hidden_size' must be a positive integer"});
  config_error(with("\"hidden_size\": 16", "\"hidden_size\": 4294967312"), {"'hidden_size' must be a positive integer"});
  config_error(with("\"model_type\": \"mamba\"", "\"model_type\": 7"), {"'model_type' must be a string"});
  config_error(with("\"time_step_min\": 0.001", "\"time_step_min\": null"), {"'time_step_min' must be a number"});
  config_error(with("\"state_size\": 4,", ""), {"missing key 'state_size'"});
  config_error(with("\"intermediate_size\": 32", "\"intermediate_size\": 48"), {"intermediate_size 48"});
  config_error(with("\"time_step_rank\": 3", "\"time_step_rank\": \"big\""), {"time_step_rank"});
  write_text(dir.path / "config.json", R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277})");
  config_error((dir.path / "config.json").string(), {"state-spaces/mamba config", "mamba-130m-hf"});
  write_text(dir.path / "config.json", "{\"model_type\": ");
  config_error((dir.path / "config.json").string(), {"config.json", "not valid JSON"});

  // "auto" rank is ceil(C / 16).
  EXPECT_EQ(hf_mamba_model_config(with("\"time_step_rank\": 3", "\"time_step_rank\": \"auto\"")).resolved_dt_rank(), 1);
}

TEST(HfImport, WeightsThatDoNotFitTheConfigAreErrors) {
  ScratchDir dir;
  const std::string good = read_text(kTiny / "config.json");
  auto import_with_layers = [&](int layers) {
    std::string s = good;
    s.replace(s.find("\"num_hidden_layers\": 3"), 22, "\"num_hidden_layers\": " + std::to_string(layers));
    write_text(dir.path / "config.json", s);
    HybridLM m(hf_mamba_model_config((dir.path / "config.json").string()));
    load_hf_mamba_weights(dir.path.string(), m);
  };
  expect_error([&] { import_with_layers(3); }, {"no model.safetensors", "pytorch_model.bin"});
  fs::copy_file(kTiny / "model.safetensors", dir.path / "model.safetensors");
  expect_error([&] { import_with_layers(4); }, {"lack", "layers.3."});
  expect_error([&] { import_with_layers(2); }, {"model.safetensors", "backbone.layers.2.", "has no place"});

  std::string wide = good;
  wide.replace(wide.find("\"hidden_size\": 16"), 17, "\"hidden_size\": 32");
  wide.replace(wide.find("\"intermediate_size\": 32"), 23, "\"intermediate_size\": 64");
  write_text(dir.path / "config.json", wide);
  HybridLM m(hf_mamba_model_config((dir.path / "config.json").string()));
  expect_error([&] { load_hf_mamba_weights(dir.path.string(), m); }, {"model.safetensors", "has shape [", "expects ["});
}

}  // namespace
}  // namespace mg
