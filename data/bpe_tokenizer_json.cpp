// Reading and writing BPE tokenizer files: openai/gpt-2 encoder.json + vocab.bpe, and Hugging
// Face tokenizer.json (the `tokenizers` serialization, format "version": "1.0").
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "data/bpe_tokenizer.h"
#include "util/regular_file.h"

namespace mg {
namespace {

using nlohmann::json;

std::string read_text_file(const std::string& path, const std::string& what) {
  require_regular_file(path, "[load_tokenizer]");
  std::ifstream in(path, std::ios::binary);
  MG_CHECK(in.good(), "[load_tokenizer] cannot open {} ({}); check the path", path, what);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json parse_json(std::string_view text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("[load_tokenizer] {} is not valid JSON: {}", source, e.what()));
  }
}

// A key that may be absent or null (HF writes null for unset options).
bool optional_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  MG_CHECK(it->is_boolean(), "[load_tokenizer] {}: '{}' must be true or false, not {}", where, key,
           it->dump());
  return it->get<bool>();
}

std::string type_of(const json& obj, const std::string& where) {
  MG_CHECK(obj.is_object() && obj.contains("type") && obj["type"].is_string(),
           "[load_tokenizer] {} must be an object with a string 'type', not {}", where,
           obj.dump().substr(0, 200));
  return obj["type"].get<std::string>();
}

// The components of a Sequence (or the object itself when it is not one).
std::vector<json> flatten_sequence(const json& obj, const char* list_key,
                                   const std::string& where) {
  if (type_of(obj, where) != "Sequence") return {obj};
  MG_CHECK(obj.contains(list_key) && obj[list_key].is_array(),
           "[load_tokenizer] {}: a Sequence needs an array '{}'", where, list_key);
  return obj[list_key].get<std::vector<json>>();
}

std::vector<std::pair<std::string, int32_t>> parse_vocab(const json& vocab,
                                                         const std::string& where) {
  MG_CHECK(vocab.is_object(), "[load_tokenizer] {} must be an object {{token: id}}", where);
  std::vector<std::pair<std::string, int32_t>> out;
  out.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    MG_CHECK(it.value().is_number_integer(), "[load_tokenizer] {}: the id of '{}' is not an integer",
             where, it.key());
    out.emplace_back(it.key(), it.value().get<int32_t>());
  }
  return out;
}

// "left right" -> (left, right): both formats split on the one space (HF `convert_merges`).
std::pair<std::string, std::string> split_merge_line(std::string_view line,
                                                     const std::string& where, size_t index) {
  size_t space = line.find(' ');
  MG_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
               line.find(' ', space + 1) == std::string_view::npos,
           "[load_tokenizer] {}: merge #{} '{}' is not two tokens separated by one space", where,
           index, line);
  return {std::string(line.substr(0, space)), std::string(line.substr(space + 1))};
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::load_gpt2(const std::string& encoder_json_path,
                                                      const std::string& vocab_bpe_path) {
  json encoder = parse_json(read_text_file(encoder_json_path, "GPT-2 encoder.json"),
                            encoder_json_path);
  std::vector<std::pair<std::string, int32_t>> vocab = parse_vocab(encoder, encoder_json_path);

  std::string bpe = read_text_file(vocab_bpe_path, "GPT-2 vocab.bpe");
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream lines(bpe);
  std::string line;
  for (size_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    merges.push_back(split_merge_line(line, fmt::format("{} line {}", vocab_bpe_path, line_no),
                                      merges.size()));
  }

  std::vector<AddedToken> added;
  for (const auto& [token, id] : vocab)
    if (token == "<|endoftext|>") added.push_back({id, token, true, false, false, false});
  return std::make_unique<BpeTokenizer>(std::move(vocab), std::move(merges), std::move(added),
                                        BpeOptions{}, encoder_json_path);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::load_hf_json(const std::string& path) {
  return parse_hf_json(read_text_file(path, "Hugging Face tokenizer.json"), path);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::parse_hf_json(std::string_view json_text,
                                                          const std::string& source) {
  json root = parse_json(json_text, source);
  MG_CHECK(root.is_object() && root.contains("model"),
           "[load_tokenizer] {} has no 'model'; is it a Hugging Face tokenizer.json?", source);
  const json& model = root["model"];
  std::string model_type = model.contains("type") ? type_of(model, source + ": model") : "BPE";
  MG_CHECK(model_type == "BPE",
           "[load_tokenizer] {}: model.type is '{}'; magellan loads byte-level BPE tokenizers only",
           source, model_type);

  BpeOptions options;
  // model options that would change encoding in ways this encoder does not implement
  if (model.contains("dropout") && !model["dropout"].is_null())
    MG_CHECK(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0,
             "[load_tokenizer] {}: model.dropout is {}; BPE dropout makes encoding random, set it "
             "to null for training data",
             source, model["dropout"].dump());
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null())
      MG_CHECK(model[key].is_string() && model[key].get<std::string>().empty(),
               "[load_tokenizer] {}: model.{} is {}; byte-level BPE does not use it", source, key,
               model[key].dump());
  options.ignore_merges = optional_bool(model, "ignore_merges", false, source + ": model");
  options.fuse_unk = optional_bool(model, "fuse_unk", false, source + ": model");
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    MG_CHECK(model["unk_token"].is_string(), "[load_tokenizer] {}: model.unk_token must be a "
             "string or null", source);
    options.unk_token = model["unk_token"].get<std::string>();
  }

  MG_CHECK(model.contains("vocab") && model.contains("merges"),
           "[load_tokenizer] {}: model needs 'vocab' and 'merges'", source);
  auto vocab = parse_vocab(model["vocab"], source + ": model.vocab");
  const json& merges_json = model["merges"];
  MG_CHECK(merges_json.is_array(), "[load_tokenizer] {}: model.merges must be an array", source);
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json.size());
  for (const json& m : merges_json) {
    if (m.is_string()) {
      merges.push_back(split_merge_line(m.get<std::string>(), source, merges.size()));
    } else {
      MG_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
               "[load_tokenizer] {}: merge #{} is {}; expected \"a b\" or [\"a\", \"b\"]", source,
               merges.size(), m.dump());
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }

  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    for (const json& n : flatten_sequence(root["normalizer"], "normalizers", source + ": normalizer")) {
      std::string type = type_of(n, source + ": normalizer");
      MG_CHECK(type == "NFC",
               "[load_tokenizer] {}: normalizer '{}' is not supported (only NFC, or none)", source,
               type);
      options.nfc = true;
    }
  }

  MG_CHECK(root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null(),
           "[load_tokenizer] {}: pre_tokenizer is missing; magellan needs ByteLevel", source);
  auto pre = flatten_sequence(root["pre_tokenizer"], "pretokenizers", source + ": pre_tokenizer");
  MG_CHECK(pre.size() == 1 && type_of(pre[0], source + ": pre_tokenizer") == "ByteLevel",
           "[load_tokenizer] {}: pre_tokenizer is {}; only a single ByteLevel is supported", source,
           root["pre_tokenizer"].dump().substr(0, 200));
  // HF's ByteLevel defaults: add_prefix_space true, use_regex true.
  options.add_prefix_space = optional_bool(pre[0], "add_prefix_space", true, source);
  options.use_regex = optional_bool(pre[0], "use_regex", true, source);

  if (root.contains("decoder") && !root["decoder"].is_null()) {
    for (const json& d : flatten_sequence(root["decoder"], "decoders", source + ": decoder")) {
      std::string type = type_of(d, source + ": decoder");
      MG_CHECK(type == "ByteLevel",
               "[load_tokenizer] {}: decoder '{}' is not supported; byte-level BPE decodes with "
               "ByteLevel",
               source, type);
    }
  }

  std::vector<AddedToken> added;
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    MG_CHECK(root["added_tokens"].is_array(), "[load_tokenizer] {}: added_tokens must be an array",
             source);
    for (const json& t : root["added_tokens"]) {
      MG_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() &&
                   t.contains("content") && t["content"].is_string(),
               "[load_tokenizer] {}: added token {} needs an integer 'id' and a string 'content'",
               source, t.dump());
      std::string where = fmt::format("{}: added token {}", source, t["content"].dump());
      AddedToken token;
      token.id = t["id"].get<int32_t>();
      token.content = t["content"].get<std::string>();
      token.special = optional_bool(t, "special", false, where);
      token.normalized = optional_bool(t, "normalized", !token.special, where);
      token.lstrip = optional_bool(t, "lstrip", false, where);
      token.rstrip = optional_bool(t, "rstrip", false, where);
      MG_CHECK(!optional_bool(t, "single_word", false, where),
               "[load_tokenizer] {}: single_word added tokens are not supported", where);
      added.push_back(std::move(token));
    }
  }
  return std::make_unique<BpeTokenizer>(std::move(vocab), std::move(merges), std::move(added),
                                        options, source);
}

std::string BpeTokenizer::to_hf_json() const {
  using ojson = nlohmann::ordered_json;
  const BpeOptions& opt = options();
  ojson root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  ojson added = ojson::array();
  for (const AddedToken& t : added_tokens())
    added.push_back({{"id", t.id},
                     {"content", t.content},
                     {"single_word", false},
                     {"lstrip", t.lstrip},
                     {"rstrip", t.rstrip},
                     {"normalized", t.normalized},
                     {"special", t.special}});
  root["added_tokens"] = added;
  root["normalizer"] = opt.nfc ? ojson{{"type", "NFC"}} : ojson(nullptr);
  ojson byte_level = {{"type", "ByteLevel"},
                      {"add_prefix_space", opt.add_prefix_space},
                      {"trim_offsets", true},
                      {"use_regex", opt.use_regex}};
  root["pre_tokenizer"] = byte_level;
  root["post_processor"] = byte_level;
  root["decoder"] = byte_level;
  ojson model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = opt.unk_token.empty() ? ojson(nullptr) : ojson(opt.unk_token);
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = opt.fuse_unk;
  model["byte_fallback"] = false;
  if (opt.ignore_merges) model["ignore_merges"] = true;
  // The vocab, in id order as HF writes it, is spliced in as text: ordered_json's object insert
  // is a linear search, quadratic over 50k tokens.
  const std::string vocab_placeholder = "\x01magellan-vocab\x01";
  model["vocab"] = vocab_placeholder;
  // "a b" strings are read by every tokenizers version; pairs only when a token has a space.
  bool has_space = false;
  for (const auto& [l, r] : merges())
    has_space |= l.find(' ') != std::string::npos || r.find(' ') != std::string::npos;
  ojson merges_json = ojson::array();
  for (const auto& [l, r] : merges()) {
    if (has_space) merges_json.push_back(ojson::array({l, r}));
    else merges_json.push_back(l + " " + r);
  }
  model["merges"] = std::move(merges_json);
  root["model"] = std::move(model);
  try {
    std::string text = root.dump(2);
    std::string vocab_text = "{";
    for (const auto& [token, id] : vocab())
      vocab_text += fmt::format("{}\n      {}: {}", vocab_text.size() > 1 ? "," : "",
                                ojson(token).dump(), id);
    vocab_text += "\n    }";
    std::string quoted_placeholder = ojson(vocab_placeholder).dump();
    size_t at = text.find(quoted_placeholder);
    MG_CHECK(at != std::string::npos, "[BpeTokenizer::to_hf_json] internal: vocab slot not found");
    text.replace(at, quoted_placeholder.size(), vocab_text);
    return text;
  } catch (const nlohmann::json::type_error& e) {
    throw Error(fmt::format("[BpeTokenizer::to_hf_json] a token or added token is not valid UTF-8 "
                            "and cannot be written to JSON: {}",
                            e.what()));
  }
}

void BpeTokenizer::save_hf_json(const std::string& path) const {
  std::string text = to_hf_json();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MG_CHECK(out.good(), "[BpeTokenizer::save_hf_json] cannot write {}; check that the folder exists",
           path);
  out << text << '\n';
  out.close();
  MG_CHECK(out.good(), "[BpeTokenizer::save_hf_json] writing {} failed (disk full?)", path);
}

}  // namespace mg
