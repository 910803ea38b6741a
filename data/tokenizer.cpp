// load_tokenizer: the one place a tokenizer spec string becomes a Tokenizer (data/tokenizer.h).
#include <filesystem>

#include "autograd/error.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/tokenizer.h"
#include "util/regular_file.h"

namespace mg {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  namespace fs = std::filesystem;
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.rfind("gpt2:", 0) == 0) {
    fs::path dir = spec.substr(5);
    fs::path encoder = dir / "encoder.json", merges = dir / "vocab.bpe";
    require_regular_file(encoder.string(), "[load_tokenizer]");
    require_regular_file(merges.string(), "[load_tokenizer]");
    MG_CHECK(fs::is_regular_file(encoder) && fs::is_regular_file(merges),
             "[load_tokenizer] '{}': {} must hold encoder.json and vocab.bpe (the openai/gpt-2 "
             "files)",
             spec, dir.string());
    return BpeTokenizer::load_gpt2(encoder.string(), merges.string());
  }
  if (spec.size() >= 5 && spec.ends_with(".json")) {
    require_regular_file(spec, "[load_tokenizer]");
    MG_CHECK(fs::is_regular_file(spec),
             "[load_tokenizer] '{}' does not exist; give the path of a Hugging Face "
             "tokenizer.json",
             spec);
    return BpeTokenizer::load_hf_json(spec);
  }
  if (fs::is_directory(spec) && fs::exists(fs::path(spec) / "tokenizer.json")) {
    require_regular_file((fs::path(spec) / "tokenizer.json").string(), "[load_tokenizer]");
    return BpeTokenizer::load_hf_json((fs::path(spec) / "tokenizer.json").string());
  }
  throw Error(fmt::format(
      "[load_tokenizer] unknown tokenizer '{}'; use \"byte\", \"gpt2:<dir with encoder.json and "
      "vocab.bpe>\", or the path of a Hugging Face tokenizer.json (or a folder holding one)",
      spec));
}

}  // namespace mg
