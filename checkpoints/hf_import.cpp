#include "checkpoints/hf_import.h"

#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "checkpoints/safetensors.h"
#include "util/regular_file.h"

namespace mg {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const std::string& path) {
  require_regular_file(path, "[import-hf]");
  std::ifstream in(path);
  MG_CHECK(in, "[import-hf] cannot open {}", path);
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("[import-hf] {}: not valid JSON ({})", path, e.what()));
  }
}

// Typed access to config.json keys; errors name the key and the file.
struct ConfigReader {
  const json& j;
  const std::string& path;

  const json& at(const char* key) const {
    MG_CHECK(j.contains(key), "[import-hf] {}: missing key '{}' (is this a transformers MambaConfig?)", path, key);
    return j.at(key);
  }
  int integer(const char* key) const {
    const json& v = at(key);
    MG_CHECK(v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= INT_MAX,
             "[import-hf] {}: '{}' must be a positive integer (at most {}), not {}", path, key, INT_MAX, v.dump());
    return v.get<int>();
  }
  std::string text_or(const char* key, const std::string& fallback) const {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    MG_CHECK(j.at(key).is_string(), "[import-hf] {}: '{}' must be a string, not {}", path, key, j.at(key).dump());
    return j.at(key).get<std::string>();
  }
  double number_or(const char* key, double fallback) const { return j.contains(key) ? number(key) : fallback; }
  double number(const char* key) const {
    const json& v = at(key);
    MG_CHECK(v.is_number(), "[import-hf] {}: '{}' must be a number, not {}", path, key, v.dump());
    return v.get<double>();
  }
  bool flag(const char* key, bool fallback) const {
    if (!j.contains(key)) return fallback;
    MG_CHECK(j.at(key).is_boolean(), "[import-hf] {}: '{}' must be true or false, not {}", path, key, j.at(key).dump());
    return j.at(key).get<bool>();
  }
};

// The safetensors files of a model directory: model.safetensors, or the shards of the index.
std::vector<std::string> weight_files(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(single)) return {single.string()};
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json(index.string());
    MG_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), "[import-hf] {}: no 'weight_map' object",
             index.string());
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
      MG_CHECK(file.is_string(), "[import-hf] {}: weight_map['{}'] is not a file name", index.string(), name);
      shards.insert((fs::path(dir) / file.get<std::string>()).string());
    }
    return {shards.begin(), shards.end()};
  }
  throw Error(fmt::format(
      "[import-hf] {}: no model.safetensors or model.safetensors.index.json (only safetensors weights are read; "
      "a pytorch_model.bin can be converted with transformers: from_pretrained(dir).save_pretrained(out))",
      dir));
}

}  // namespace

ModelConfig hf_mamba_model_config(const std::string& config_json_path) {
  const json j = read_json(config_json_path);
  const ConfigReader r{j, config_json_path};
  MG_CHECK(j.is_object(), "[import-hf] {}: not a JSON object", config_json_path);
  if (j.contains("d_model") && j.contains("n_layer") && !j.contains("hidden_size"))
    throw Error(fmt::format("[import-hf] {}: this is a state-spaces/mamba config (d_model, n_layer); use the "
                            "transformers-format repository of the same model (e.g. state-spaces/mamba-130m-hf)",
                            config_json_path));
  const std::string type = r.text_or("model_type", "");
  MG_CHECK(type == "mamba", "[import-hf] {}: model_type is '{}'; only 'mamba' (Mamba-1, MambaForCausalLM) is supported",
           config_json_path, type);
  MG_CHECK(!r.flag("use_bias", false), "[import-hf] {}: use_bias is true, but magellan's Mamba block has no in_proj/"
           "out_proj bias (design.md §3)", config_json_path);
  MG_CHECK(r.flag("use_conv_bias", true), "[import-hf] {}: use_conv_bias is false, but magellan's conv1d has a bias",
           config_json_path);
  const std::string act = r.text_or("hidden_act", "silu");
  MG_CHECK(act == "silu", "[import-hf] {}: hidden_act is '{}'; magellan's Mamba block uses silu", config_json_path, act);

  ModelConfig c;
  c.vocab_size = r.integer("vocab_size");
  c.d_model = r.integer("hidden_size");
  c.d_state = r.integer("state_size");
  c.d_conv = r.integer("conv_kernel");
  c.expand = r.integer("expand");
  c.layer_pattern = std::string(static_cast<size_t>(r.integer("num_hidden_layers")), 'M');
  c.norm_eps = r.number("layer_norm_epsilon");
  c.tie_embeddings = r.flag("tie_word_embeddings", true);
  const json& rank = r.at("time_step_rank");
  if (rank.is_string()) {
    MG_CHECK(rank.get<std::string>() == "auto", "[import-hf] {}: time_step_rank is {}; an integer or \"auto\"",
             config_json_path, rank.dump());
  } else {
    c.dt_rank = r.integer("time_step_rank");
  }
  if (j.contains("intermediate_size"))
    MG_CHECK(r.integer("intermediate_size") == c.d_inner(),
             "[import-hf] {}: intermediate_size {} is not expand x hidden_size = {}", config_json_path,
             r.integer("intermediate_size"), c.d_inner());
  c.dt_min = r.number_or("time_step_min", c.dt_min);  // init-only, kept for the record
  c.dt_max = r.number_or("time_step_max", c.dt_max);
  c.dt_init_floor = r.number_or("time_step_floor", c.dt_init_floor);
  return c;
}

std::string magellan_name_from_hf(const std::string& hf_name, bool tied_embeddings) {
  std::string name = hf_name;
  auto strip = [&](const std::string& from, const std::string& to) {
    if (name.rfind(from, 0) == 0) name = to + name.substr(from.size());
  };
  strip("backbone.embeddings.", "embedding.");  // transformers
  strip("backbone.embedding.", "embedding.");   // state-spaces/mamba
  strip("backbone.", "");
  if (name == "lm_head.weight" && tied_embeddings) return "";
  return name;
}

HfImportReport load_hf_mamba_weights(const std::string& dir, HybridLM& model,
                                     const std::function<void(int64_t)>& on_progress) {
  std::map<std::string, Tensor> params;
  for (auto& [name, p] : model.named_parameters()) params.emplace(name, p);
  const bool tied = model.config().tie_embeddings;

  HfImportReport report;
  std::set<std::string> filled;
  std::string tied_head_file;  // where a tied model's lm_head.weight was seen, if anywhere
  for (const std::string& path : weight_files(dir)) {
    report.files.push_back(path);
    const SafetensorsFile file = SafetensorsFile::open(path);
    for (const auto& [hf_name, entry] : file.tensors()) {
      const std::string name = magellan_name_from_hf(hf_name, tied);
      if (name.empty()) {  // a tied head: the embedding itself, checked against it below
        tied_head_file = path;
        continue;
      }
      auto it = params.find(name);
      MG_CHECK(it != params.end(), "[import-hf] {}: tensor '{}' ({}) has no place in a model of this config "
               "(config.json and the weights disagree?)", path, hf_name, name);
      MG_CHECK(filled.insert(name).second, "[import-hf] {}: tensor '{}' appears twice in the shards", path, hf_name);
      Tensor& p = it->second;
      MG_CHECK(entry.shape == p.shape(), "[import-hf] {}: tensor '{}' has shape [{}], the model expects [{}] for {}",
               path, hf_name, fmt::join(entry.shape, ","), fmt::join(p.shape(), ","), name);
      file.read(hf_name, p.dtype(), p.raw());
      ++report.tensors_by_dtype[entry.dtype];
      report.parameters += entry.numel();
      if (on_progress) on_progress(report.parameters);
    }
  }
  if (!tied_head_file.empty()) {
    // Some exports save the tied head instead of the embedding, some both: use it where the
    // embedding is missing, and refuse two different tables under tie_word_embeddings.
    const SafetensorsFile file = SafetensorsFile::open(tied_head_file);
    Tensor& emb = params.at("embedding.weight");
    MG_CHECK(file.entry("lm_head.weight").shape == emb.shape(),
             "[import-hf] {}: lm_head.weight has shape [{}], the tied embedding [{}]", tied_head_file,
             fmt::join(file.entry("lm_head.weight").shape, ","), fmt::join(emb.shape(), ","));
    Tensor head = Tensor::empty(emb.shape(), emb.dtype());
    file.read("lm_head.weight", emb.dtype(), head.raw());
    if (filled.insert("embedding.weight").second) {
      emb.copy_from(head);
      report.parameters += emb.numel();
    } else {
      MG_CHECK(std::memcmp(head.raw(), emb.raw(), emb.bytes()) == 0, "[import-hf] {}: config.json ties the embeddings, but lm_head.weight differs from "
               "backbone.embeddings.weight; set tie_word_embeddings: false to keep both", tied_head_file);
    }
  }
  std::vector<std::string> missing;
  for (const auto& [name, p] : params)
    if (!filled.count(name)) missing.push_back(name);
  MG_CHECK(missing.empty(), "[import-hf] {}: the weights lack {} of the model's parameters, e.g. {}", dir,
           missing.size(), fmt::join(missing.begin(), missing.begin() + std::min<size_t>(missing.size(), 3), ", "));
  return report;
}

}  // namespace mg
