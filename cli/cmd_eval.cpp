// magellan eval: loss, perplexity and task accuracy of a checkpoint on a validation split.
#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>

#include "autograd/blas.h"
#include "autograd/block_cache.h"
#include "cli/commands.h"
#include "cli/stream_flags.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "inference/load_model.h"
#include "trainer/trainer.h"
#include "util/progress.h"

namespace po = boost::program_options;

namespace mg::cli {

int cmd_eval(const Args& args) {
  po::options_description desc(
      "magellan eval --run RUN_DIR | --checkpoint FILE [--adapter FILE] [options]\n\n"
      "Evaluates on the validation split of the data the checkpoint was trained on, or on the\n"
      "whole of --data (every seq_len window of it, all of them unless --batches): mean loss\n"
      "over counted targets, perplexity, and task accuracy for synthetic tasks.\n\noptions");
  std::string run, ckpt, adapter, data_path;
  int batches = 0, batch_size = 0, threads = 0;
  int64_t seq_len = 0;
  desc.add_options()("help,h", "show this help")("run", po::value(&run), "a run directory (its latest checkpoint)")(
      "checkpoint", po::value(&ckpt), "a checkpoint file")("adapter", po::value(&adapter),
                                                          "a LoRA adapter checkpoint to apply on top")(
      "data", po::value(&data_path), "evaluate on this file or directory instead (same data.source; for an imported model a .jsonl file is "
      "read as JSONL, anything else as text); all of it is evaluated")(
      "seq-len", po::value(&seq_len), "tokens per window (default: the config's data.seq_len)")(
      "batches", po::value(&batches), "validation batches (default: the config's eval.batches, or all with "
      "--data; -1 = all)")(
      "batch-size", po::value(&batch_size), "rows per batch (default: training.batch_size)")(
      "threads", po::value(&threads), "threads (default: all cores)")(
      "quiet,q", "no progress line (it is drawn only on a terminal anyway)");
  StreamFlags stream;
  add_stream_options(desc, stream);
  po::variables_map vm = parse_args(args, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(run.empty() != ckpt.empty(), "[eval] give exactly one of --run RUN_DIR or --checkpoint FILE");
  set_num_threads(threads);
  LoadedModel lm = load_model_from_checkpoint(run.empty() ? ckpt : run,
                                              adapter.empty() ? std::nullopt : std::optional<std::string>(adapter),
                                              stream_request(vm, stream));
  ExperimentConfig& cfg = lm.config;
  DatasetOptions o;
  o.source = data_source_name(cfg.data.source);
  if (cfg.data.source == DataSource::None) {  // an imported model: --data says what to read
    MG_CHECK(!data_path.empty(), "[eval] {} records no training data (an imported model): give --data PATH",
             lm.checkpoint);
    o.source = data_path.ends_with(".jsonl") ? "jsonl" : "text";
  }
  o.task = cfg.data.task == SyntheticTask::SelectiveCopy ? "selective_copy" : "induction";
  o.path = cfg.data.path;
  o.val_fraction = cfg.data.val_fraction;
  if (!data_path.empty()) {
    // The whole file is the validation split (val_path replaces val_fraction's held-out tail;
    // the training split, unused here, is the same file).
    o.path = {data_path};
    o.val_path = {data_path};
  }
  MG_CHECK(!vm.count("seq-len") || seq_len >= 1, "[eval] --seq-len must be >= 1, got {}", seq_len);
  o.seq_len = vm.count("seq-len") ? seq_len : cfg.data.seq_len;
  o.seed = cfg.seed;
  o.n_memorize = cfg.data.n_memorize;
  o.n_tokens = cfg.data.n_tokens;
  std::unique_ptr<Tokenizer> tok;
  if (cfg.data.source != DataSource::Synthetic) tok = load_tokenizer(cfg.data.tokenizer);
  auto data = make_dataset(o, tok.get());
  const int64_t B = batch_size > 0 ? batch_size : cfg.training.batch_size;
  const int64_t n = vm.count("batches") ? batches : data_path.empty() ? cfg.eval.batches : -1;
  // Every batch allocates the same activations: keep the freed blocks (not when streaming
  // experts, whose memory bound is --expert-cache-mb's).
  BlockCache::Scope keep_blocks(cfg.training.block_cache && !lm.experts);
  EvalResult r = evaluate(*lm.model, *data, B, n, Progress::stderr_is_tty() && !vm.count("quiet"));
  std::printf("checkpoint %s (step %lld)\n", lm.checkpoint.c_str(), static_cast<long long>(lm.step));
  std::printf("eval: %lld tokens  loss %.4f  perplexity %.3f", static_cast<long long>(r.tokens), r.loss, r.ppl);
  if (r.accuracy >= 0) std::printf("  task accuracy %.2f%%", 100.0 * r.accuracy);
  std::printf("\n");
  if (lm.experts) print_stream_report(lm);
  return 0;
}

}  // namespace mg::cli
