// magellan: command-line entry point. Dispatches to one subcommand; every error reaches here
// as one line "magellan <cmd>: <what was wrong; what to do>" and a non-zero exit.
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <string>

#include <boost/program_options/errors.hpp>

#include "autograd/error.h"
#include "cli/commands.h"

namespace {

struct Command {
  int (*run)(const mg::cli::Args&);
  const char* help;
};

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> table = {
      {"demo", {mg::cli::cmd_demo, "train the built-in demo (synthetic task, no downloads), then show next steps"}},
      {"train", {mg::cli::cmd_train, "train from a YAML experiment, or --resume a run directory"}},
      {"eval", {mg::cli::cmd_eval, "loss, perplexity and task accuracy of a checkpoint on its data"}},
      {"generate", {mg::cli::cmd_generate, "generate text (or token ids) from a checkpoint, recurrently"}},
      {"info", {mg::cli::cmd_info, "parameter counts by component and memory for a config"}},
      {"quantize", {mg::cli::cmd_quantize, "turn a float32 checkpoint into an NF4 (QLoRA base) checkpoint"}},
      {"export-experts", {mg::cli::cmd_export_experts, "write a checkpoint's MoE experts to a store for --stream-experts"}},
      {"merge-lora", {mg::cli::cmd_merge_lora, "merge a LoRA adapter into its base weights"}},
      {"import-hf", {mg::cli::cmd_import_hf, "import a pretrained Mamba from a Hugging Face model directory"}},
      {"tokenizer", {mg::cli::cmd_tokenizer, "tokenizer tools: `tokenizer train` a BPE vocabulary"}},
      {"tokenize", {mg::cli::cmd_tokenize, "tokenize text files into a token cache"}},
      {"sweep", {mg::cli::cmd_sweep, "run a grid of trials (e.g. LoRA ranks x learning rates) and summarize"}},
  };
  return table;
}

void usage(std::FILE* out) {
  std::fprintf(out, "magellan %s: a training-first harness for hybrid Mamba + MoE language models\n\n", MAGELLAN_VERSION);
  std::fprintf(out, "usage: magellan <command> [options]   (magellan <command> --help for its flags)\n\n");
  for (const auto& [name, cmd] : commands()) std::fprintf(out, "  %-14s %s\n", name.c_str(), cmd.help);
  std::fprintf(out, "\nStart with: magellan demo\n");
}

bool cpu_supported() {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return true;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  mg::cli::set_program_name(argv[0]);
  if (!cpu_supported()) {
    std::fprintf(stderr, "magellan: this build needs a CPU with AVX2, FMA and F16C (x86-64-v3); rebuild with "
                         "-DMAGELLAN_ARCH=x86-64 for a portable build\n");
    return 2;
  }
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("magellan %s\n", MAGELLAN_VERSION);
    return 0;
  }
  const std::string name = argv[1];
  auto it = commands().find(name);
  if (it == commands().end()) {
    std::fprintf(stderr, "magellan: unknown command '%s'\n\n", name.c_str());
    usage(stderr);
    return 2;
  }
  mg::cli::Args args(argv + 2, argv + argc);
  try {
    return it->second.run(args);
  } catch (const mg::Error& e) {
    std::fprintf(stderr, "\nmagellan %s: %s\n", name.c_str(), e.what());
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "magellan %s: %s (see magellan %s --help)\n", name.c_str(), e.what(), name.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nmagellan %s: unexpected error: %s\n", name.c_str(), e.what());
  }
  return 1;
}
