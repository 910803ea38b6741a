// magellan tokenizer train | encode | decode, and magellan tokenize
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>

#include "autograd/error.h"
#include "checkpoints/atomic_save.h"
#include "cli/commands.h"
#include "data/bpe_tokenizer.h"
#include "data/bpe_trainer.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "util/progress.h"
#include "util/regular_file.h"

namespace po = boost::program_options;

namespace mg::cli {

namespace {

// All of standard input (text to encode or ids to decode when no argument gives them).
std::string read_stdin(const char* what) {
  MG_CHECK(!::isatty(STDIN_FILENO), "[tokenizer] {}: give it as an argument, or pipe it in on standard input", what);
  std::stringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

// A token's text for a person: printable ASCII as is, everything else escaped (\n, \xNN).
std::string escaped(const std::string& piece) {
  std::string out;
  for (unsigned char c : piece) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else if (c >= 0x20 && c < 0x7f) out += static_cast<char>(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}


// magellan tokenizer encode|decode --tokenizer SPEC [TEXT | IDS]
int encode_or_decode(const std::string& action, const Args& args) {
  const bool encode = action == "encode";
  po::options_description desc(encode ? "magellan tokenizer encode --tokenizer SPEC [TEXT]\n\n"
                                        "Prints the ids of TEXT (or of standard input), space-separated.\n\noptions"
                                      : "magellan tokenizer decode --tokenizer SPEC [\"ID ID ...\"]\n\n"
                                        "Prints the text of whitespace-separated ids (or of standard input)\n"
                                        "exactly, with no newline added.\n\noptions");
  std::string spec = "byte";
  desc.add_options()("help,h", "show this help")("tokenizer,t", po::value(&spec)->default_value("byte"),
                                                 "byte, gpt2:<dir>, or a tokenizer.json path")(
      "pieces", "encode: one line per token, its id and its text (escaped)");
  std::vector<std::string> positional;
  po::variables_map vm = parse_args({args.begin() + 1, args.end()}, desc, &positional);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  const auto tok = load_tokenizer(spec);
  std::string input;
  for (size_t i = 0; i < positional.size(); ++i) input += (i ? " " : "") + positional[i];
  if (positional.empty()) input = read_stdin(encode ? "encode: the text" : "decode: the ids");
  if (!encode) {
    const std::string text = tok->decode(parse_token_ids(input, tok->vocab_size(), "tokenizer decode"));
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  const std::vector<int32_t> ids = tok->encode(input);
  if (vm.count("pieces")) {
    for (int32_t id : ids) std::printf("%d\t%s\n", id, escaped(tok->decode(std::span<const int32_t>(&id, 1))).c_str());
    return 0;
  }
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
  std::printf("\n");
  return 0;
}

}  // namespace

int cmd_tokenizer(const Args& args) {
  if (!args.empty() && (args[0] == "encode" || args[0] == "decode")) return encode_or_decode(args[0], args);
  const std::string usage =
      "magellan tokenizer train --vocab-size N CORPUS... -o tokenizer.json\n"
      "magellan tokenizer encode --tokenizer SPEC [TEXT]       (ids of a text; --pieces: with their text)\n"
      "magellan tokenizer decode --tokenizer SPEC [\"IDS\"]      (the text of ids)\n\n"
      "Trains a byte-level BPE (GPT-2 pre-tokenization) on text files or directories and writes\n"
      "a Hugging Face-compatible tokenizer.json (loadable by `tokenizers` and by magellan's\n"
      "data.tokenizer).\n\noptions";
  po::options_description desc(usage);
  int vocab = 10000;
  std::string out;
  std::vector<std::string> specials = {"<|endoftext|>"};
  desc.add_options()("help,h", "show this help")("vocab-size", po::value(&vocab)->default_value(10000),
                                                 "final vocabulary size, bytes and specials included")(
      "output,o", po::value(&out), "where to write tokenizer.json")(
      "special", po::value(&specials)->multitoken(), "special tokens (default <|endoftext|>)");
  std::vector<std::string> positional;
  po::variables_map vm = parse_args(args, desc, &positional);
  if (vm.count("help") || positional.empty()) {
    std::cout << desc << "\n";
    return positional.empty() && !vm.count("help") ? 2 : 0;
  }
  MG_CHECK(positional[0] == "train", "[tokenizer] unknown action '{}': the actions are train, encode and decode",
           positional[0]);
  MG_CHECK(positional.size() > 1, "[tokenizer] train: give corpus files or directories");
  MG_CHECK(!out.empty(), "[tokenizer] train: give -o tokenizer.json");
  const std::vector<std::filesystem::path> inputs = expand_input_paths({positional.begin() + 1, positional.end()});
  check_output_path(out, std::vector<std::string>(inputs.begin(), inputs.end()), "tokenizer train");
  std::vector<std::string> texts;
  int64_t bytes = 0;
  for (const auto& p : inputs) {
    require_regular_file(p.string(), "[tokenizer]");
    std::ifstream in(p, std::ios::binary);
    MG_CHECK(in, "[tokenizer] cannot read {}", p.string());
    std::stringstream ss;
    ss << in.rdbuf();
    texts.push_back(ss.str());
    bytes += static_cast<int64_t>(texts.back().size());
  }
  BpeTrainStats stats;
  std::vector<std::string_view> views(texts.begin(), texts.end());
  BpeTrainOptions opt;
  opt.vocab_size = vocab;
  opt.specials = specials;
  auto tok = train_bpe(views, opt, &stats);
  // A temp file renamed over -o: a full disk or a kill leaves the old tokenizer.json whole.
  atomic_write(out, [&](const std::string& tmp) { tok->save_hf_json(tmp); });
  std::printf("trained %d tokens (%zu merges) on %zu file(s), %.2f MB in %.2f s -> %s\n", tok->vocab_size(),
              stats.merge_counts.size(), texts.size(), bytes / 1e6, stats.seconds, out.c_str());
  return 0;
}

int cmd_tokenize(const Args& args) {
  po::options_description desc(
      "magellan tokenize --tokenizer SPEC FILE_OR_DIR... [--cache-dir DIR]\n\n"
      "Builds (or validates) the memory-mapped token cache that training reads: ids as uint16\n"
      "when the vocabulary fits, else uint32; rebuilt only when the files or tokenizer change.\n\noptions");
  std::string spec = "byte", cache_dir = ".cache/tokens";
  desc.add_options()("help,h", "show this help")("tokenizer,t", po::value(&spec)->default_value("byte"),
                                                 "byte | gpt2:<dir> | path/to/tokenizer.json")(
      "cache-dir", po::value(&cache_dir)->default_value(".cache/tokens"), "where caches live")(
      "quiet,q", "no progress line");
  std::vector<std::string> positional;
  po::variables_map vm = parse_args(args, desc, &positional);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(!positional.empty(), "[tokenize] give text files or directories");
  auto tok = load_tokenizer(spec);
  Progress timer("tokenize", 0, "", true);
  TokenCache cache = TokenCache::open_or_build(positional, *tok, cache_dir, vm.count("quiet") > 0);
  std::printf("%s %lld tokens (%d bytes each) from %zu file(s) -> %s (%.2f s)\n", cache.built() ? "built" : "up to date:",
              static_cast<long long>(cache.size()), cache.bytes_per_token(), cache.inputs().size(),
              cache.file().string().c_str(), timer.elapsed_s());
  return 0;
}

}  // namespace mg::cli
