#pragma once
// The training recipe, a plain sequence (torchtune style): setup -> train -> save.
//
//   Trainer t(config, resolved_yaml, {.resume = false});
//   TrainSummary s = t.run();
//
// setup: run dir (config.yaml, overrides.txt, train.log, metrics.h5, checkpoints/), data,
//        model (+ base checkpoint, QLoRA quantization, LoRA adapters), optimizer, schedule;
//        or, with resume, all of that from the latest complete checkpoint.
// train: micro-batches with accumulation, NaN/Inf guard, global-norm clipping, optimizer
//        step, LR schedule; eval, metrics, progress, checkpoints every N steps.
// save:  a final checkpoint; the summary.
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "experiments/config.h"
#include "model/hybrid_lm.h"

namespace mg {

struct TrainOptions {
  bool resume = false;                  // continue from run_dir's latest complete checkpoint
  std::vector<std::string> overrides;   // recorded in overrides.txt
  bool quiet = false;                   // no progress line and no console log (train.log still)
  int64_t stop_after_steps = -1;        // stop (with a checkpoint) after this many steps of this
                                        // invocation; for tests and for time-boxed runs
};

struct TrainSummary {
  std::string run_dir;
  int64_t start_step = 0, final_step = 0;
  // Values this invocation never measured are NaN (summary.yaml: .nan), never 0.
  double final_train_loss = NAN;        // mean CE of the last logging window (or of the steps
                                        // since the last one, when the run stopped between two)
  double best_eval_loss = NAN;          // NaN when never evaluated
  int64_t best_eval_step = -1;
  double final_eval_loss = NAN, final_eval_accuracy = -1;  // accuracy: task data only (-1: none)
  double tokens_per_s = NAN;            // training throughput of this invocation (NaN: no step)
  double wall_s = 0;
  int64_t skipped_steps = 0;            // non-finite steps skipped
  std::string status;                   // "finished", "stopped" (signal or stop_after_steps)
  bool interrupted = false;             // stopped by SIGINT/SIGTERM (the CLI then exits 130)
  std::string last_checkpoint;
  std::vector<double> step_losses;      // every optimizer step's loss (tests compare them)
};

struct EvalResult {
  double loss = 0, ppl = 0;
  double accuracy = -1;  // task metric when the data has one
  int64_t tokens = 0;
};

// Mean loss over the counted targets of the validation batches, perplexity, task accuracy.
// `progress`: its own line ("eval  3/20 batch ..."), when given and not quiet; erased at the
// end so that the result can be logged on a clean line.
EvalResult evaluate(const HybridLM& model, const Dataset& data, int64_t batch_size, int64_t max_batches,
                    bool show_progress = false);

class Trainer {
 public:
  Trainer(ExperimentConfig cfg, std::string resolved_yaml, TrainOptions opts);
  ~Trainer();
  TrainSummary run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Request a graceful stop (checkpoint, then return) from a signal handler or another thread.
void request_training_stop();

}  // namespace mg
