// magellan tokenizer train / magellan tokenize
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>

#include "autograd/error.h"
#include "cli/commands.h"
#include "data/bpe_tokenizer.h"
#include "data/bpe_trainer.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "util/progress.h"

namespace po = boost::program_options;

namespace mg::cli {

int cmd_tokenizer(const Args& args) {
  const std::string usage =
      "magellan tokenizer train --vocab-size N CORPUS... -o tokenizer.json\n\n"
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
  MG_CHECK(positional[0] == "train", "[tokenizer] unknown action '{}': the action is `train`", positional[0]);
  MG_CHECK(positional.size() > 1, "[tokenizer] train: give corpus files or directories");
  MG_CHECK(!out.empty(), "[tokenizer] train: give -o tokenizer.json");
  std::vector<std::string> texts;
  int64_t bytes = 0;
  for (const auto& p : expand_input_paths({positional.begin() + 1, positional.end()})) {
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
  tok->save_hf_json(out);
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
