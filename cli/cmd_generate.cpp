// magellan generate: text (or token ids) from a checkpoint, with llama.cpp / HF generate()
// sampling flags; streams tokens as they come and reports tokens/s.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>

#include "autograd/blas.h"
#include "cli/commands.h"
#include "cli/stream_flags.h"
#include "data/tokenizer.h"
#include "inference/generate.h"
#include "inference/load_model.h"
#include "util/regular_file.h"

namespace po = boost::program_options;

namespace mg::cli {

namespace {

constexpr int64_t kMaxNewTokens = 10'000'000;

// The sampling flags, each in its range (Boost reads "nan", "-nan" and "inf" as doubles, and
// NaN compares false with everything, so each test is written to fail on it).
void check_generate_flags(int64_t n, const SamplingOptions& s) {
  MG_CHECK(n >= 0 && n <= kMaxNewTokens, "[generate] -n {}: must be in [0, {}] (tokens to generate)", n, kMaxNewTokens);
  MG_CHECK(std::isfinite(s.temperature) && s.temperature >= 0,
           "[generate] --temp {}: must be a finite number >= 0 (0 = greedy)", s.temperature);
  MG_CHECK(s.top_p > 0 && s.top_p <= 1, "[generate] --top-p {}: must be in (0, 1] (1 = off)", s.top_p);
  MG_CHECK(s.top_k >= 0, "[generate] --top-k {}: must be >= 0 (0 = all tokens)", s.top_k);
  MG_CHECK(std::isfinite(s.repeat_penalty) && s.repeat_penalty > 0,
           "[generate] --repeat-penalty {}: must be a finite number > 0 (1 = off)", s.repeat_penalty);
  MG_CHECK(s.repeat_last_n >= 0, "[generate] --repeat-last-n {}: must be >= 0", s.repeat_last_n);
}


}  // namespace

int cmd_generate(const Args& args) {
  po::options_description desc(
      "magellan generate --run RUN_DIR | --checkpoint FILE [--adapter FILE] -p PROMPT [options]\n\n"
      "Generates recurrently (O(1) per token in the sequence length). A prompt given as ids\n"
      "(--prompt-ids) is answered in ids; models trained on synthetic tasks have no tokenizer\n"
      "and take only ids.\n\noptions");
  std::string run, ckpt, adapter, prompt, prompt_file, prompt_ids;
  int64_t n = 200;
  int threads = 0;
  SamplingOptions s;
  desc.add_options()("help,h", "show this help")("run", po::value(&run), "a run directory (its latest checkpoint)")(
      "checkpoint", po::value(&ckpt), "a checkpoint file")("adapter", po::value(&adapter), "a LoRA adapter checkpoint")(
      "prompt,p", po::value(&prompt), "the prompt text")("file,f", po::value(&prompt_file), "read the prompt from a file")(
      "prompt-ids", po::value(&prompt_ids), "the prompt as space-separated token ids")(
      "n-predict,n", po::value(&n)->default_value(200), "tokens to generate")(
      "temp", po::value(&s.temperature)->default_value(0.8), "temperature; 0 = greedy")(
      "top-k", po::value(&s.top_k)->default_value(40), "keep the k most likely tokens (0 = all)")(
      "top-p", po::value(&s.top_p)->default_value(0.95), "nucleus sampling mass (1 = off)")(
      "repeat-penalty", po::value(&s.repeat_penalty)->default_value(1.0), "penalize recent tokens (1 = off)")(
      "repeat-last-n", po::value(&s.repeat_last_n)->default_value(64), "how many recent tokens the penalty sees")(
      "seed", po::value(&s.seed)->default_value(1), "sampling seed")("threads", po::value(&threads), "threads");
  StreamFlags stream;
  add_stream_options(desc, stream);
  po::variables_map vm = parse_args(args, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(run.empty() != ckpt.empty(), "[generate] give exactly one of --run RUN_DIR or --checkpoint FILE");
  check_generate_flags(n, s);
  set_num_threads(threads);
  LoadedModel lm = load_model_from_checkpoint(run.empty() ? ckpt : run,
                                              adapter.empty() ? std::nullopt : std::optional<std::string>(adapter),
                                              stream_request(vm, stream));
  if (!prompt_file.empty()) {
    require_regular_file(prompt_file, "[generate] -f");
    std::ifstream in(prompt_file);
    MG_CHECK(in, "[generate] cannot read prompt file {}", prompt_file);
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  }
  const bool synthetic = lm.config.data.source == DataSource::Synthetic;
  // Ids in, ids out: the tokenizer is loaded only for a text prompt (and then gives the
  // end-of-text id that stops generation early).
  const bool as_text = prompt_ids.empty();
  std::unique_ptr<Tokenizer> tok;
  if (as_text && !synthetic) tok = load_tokenizer(lm.config.data.tokenizer);
  std::vector<int32_t> ids;
  if (!as_text) {
    ids = parse_token_ids(prompt_ids, lm.config.model.vocab_size, "generate --prompt-ids");
    MG_CHECK(!ids.empty(), "[generate] --prompt-ids has no ids; give space-separated token ids");
  } else {
    MG_CHECK(!synthetic, "[generate] this model was trained on a synthetic task (no tokenizer): use --prompt-ids");
    MG_CHECK(!prompt.empty(), "[generate] no prompt: give -p TEXT, -f FILE or --prompt-ids");
    ids = tok->encode(prompt);
    for (int32_t id : ids)
      MG_CHECK(id < lm.config.model.vocab_size,
               "[generate] the tokenizer ({}) gives id {}, outside the model's vocabulary of {}: the checkpoint's "
               "data.tokenizer does not fit this model; give --prompt-ids",
               lm.config.data.tokenizer, id, lm.config.model.vocab_size);
  }
  if (as_text) std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  auto on_token = [&](int32_t id) {
    if (!as_text)
      std::printf("%d ", id);
    else if (id >= tok->vocab_size())  // a padding row of the embedding (vocab_size rounded up)
      std::printf("<|id %d|>", id);
    else
      std::fputs(tok->decode(std::span<const int32_t>(&id, 1)).c_str(), stdout);
    std::fflush(stdout);
  };
  GenerateResult r = generate(*lm.model, ids, n, s, tok ? tok->eos_id() : std::nullopt, on_token);
  std::printf("\n");
  std::fprintf(stderr, "\n[%zu prompt tokens in %.2f s; %zu generated in %.2f s = %.1f tokens/s%s]\n", ids.size(),
               r.prompt_s, r.tokens.size(), r.generate_s, r.generate_s > 0 ? r.tokens.size() / r.generate_s : 0.0,
               r.stopped_at_eos ? "; stopped at end-of-text" : "");
  print_stream_report(lm);
  return 0;
}

}  // namespace mg::cli
