#pragma once
// Hyper-parameter sweeps: a grid of trials, each a normal training run in its own process.
//
//   SweepSpec spec = load_sweep("experiments/sweep_example.yaml");
//   SweepReport rep = run_sweep(spec, {.jobs = 2, .executable = "/proc/self/exe"});
//   std::cout << format_sweep_table(spec, rep);      // also written to <sweep_dir>/summary.csv
//
// A sweep file (strict: unknown keys are errors naming the line):
//   sweep: lora_sweep                  # trials go to runs/<sweep>/trial_NNN (or sweep_dir:)
//   base: tiny_selective_copy.yaml     # the base experiment, relative to the sweep file
//   overrides: ["training.steps=40"]   # applied to every trial (optional)
//   grid:                              # cartesian product, in file order (last key fastest)
//     optimizer.lr: [1.0e-3, 3.0e-3]
//     lora.target_modules: [[in_proj], [in_proj, out_proj]]   # list values are fine
//   objective: best_eval_loss          # | final_eval_loss | final_train_loss (minimized)
//                                      # | final_eval_accuracy (maximized)
// Overrides and grid values are command-line overrides of the child: paths in them (e.g. a
// grid over qlora.base_checkpoint) resolve against the current directory, as on the command
// line; paths inside the base YAML resolve against the base YAML, as always.
//
// Each trial runs `<executable> train BASE overrides... grid... run_dir=DIR experiment=NAME
// threads=T --quiet` (or `train --resume DIR threads=T training.steps=S --quiet` for a trial
// interrupted earlier), with stdout/stderr in <sweep_dir>/trial_NNN.log. Processes rather
// than threads: a trial that crashes or leaks cannot take the sweep down, each trial's log
// and run dir are exactly those of a hand-launched `magellan train`, and Ctrl-C reaches each
// one as it would reach a single run (it checkpoints and stops).
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "experiments/config.h"

namespace mg {

enum class SweepObjective { BestEvalLoss, FinalEvalLoss, FinalTrainLoss, FinalEvalAccuracy };

struct SweepAxis {
  std::string key;                  // a config key path, e.g. "optimizer.lr"
  std::vector<std::string> values;  // override value texts (YAML), e.g. "1.0e-3", "[in_proj]"
};

struct SweepSpec {
  std::string source;                  // the sweep file, for messages
  std::string name;                    // sweep:, or the last part of sweep_dir:
  std::string sweep_dir;               // sweep_dir:, or runs/<name> (relative to the cwd)
  std::string base_config;             // base:, resolved against the sweep file's folder
  std::vector<std::string> overrides;  // "key=value", applied to every trial before the grid
  std::vector<SweepAxis> grid;         // in file order
  SweepObjective objective = SweepObjective::BestEvalLoss;
};

struct SweepTrial {
  int index = 0;
  std::string name;      // "trial_007"
  std::string run_dir;   // <sweep_dir>/trial_007
  std::string log_path;  // <sweep_dir>/trial_007.log
  std::vector<std::pair<std::string, std::string>> grid_values;  // (key, value) per axis
  std::vector<std::string> overrides;  // spec.overrides + grid + run_dir= + experiment=
};

// What a trial's run dir says (summary.yaml, written by the trainer at the end of each
// invocation), plus what this sweep saw of its process.
struct TrialResult {
  SweepTrial trial;
  std::string status = "missing";  // finished | stopped | failed | missing (never ran)
  std::string note;                // failed: the last line of its log; skipped: "skipped"
  int64_t final_step = 0, total_steps = 0, best_eval_step = -1;
  double final_train_loss = 0, best_eval_loss = 0, final_eval_loss = 0;  // NaN when absent
  double final_eval_accuracy = 0, tokens_per_s = 0, wall_s = 0;          // NaN when absent
  bool skipped = false;            // finished before this invocation: not run again
};

struct SweepOptions {
  int jobs = 1;             // trials at once; each gets max(1, cores / jobs) threads
  bool quiet = false;       // no progress line and no per-trial lines on stderr
  std::string executable;   // the magellan binary to run trials with ("/proc/self/exe")
  int cores = 0;            // 0 = std::thread::hardware_concurrency()
};

struct SweepReport {
  std::vector<TrialResult> results;  // sorted by the objective; failed / missing last
  int n_failed = 0, n_skipped = 0;
  bool interrupted = false;          // SIGINT/SIGTERM: children were told to stop
};

// Parses and checks a sweep file (strict: every problem names the file and line).
SweepSpec load_sweep(const std::string& path);

// The cartesian product of the grid, in file order, the last axis varying fastest.
std::vector<SweepTrial> expand_trials(const SweepSpec& spec);

// The config trial `t` trains with `threads` threads (load_config with its overrides);
// throws mg::Error naming the trial and its grid values when the config is invalid.
ExperimentConfig trial_config(const SweepSpec& spec, const SweepTrial& t, int threads);

// Reads <run_dir>/summary.yaml into `r` (status "missing" when there is none).
void read_trial_summary(TrialResult& r);

// Validates every trial, then runs the unfinished ones (skipping finished trials, resuming
// interrupted ones), `opts.jobs` at a time, and writes <sweep_dir>/summary.csv. Failed trials
// do not stop the others. SIGINT/SIGTERM are forwarded to the running trials.
SweepReport run_sweep(const SweepSpec& spec, const SweepOptions& opts);

// The objective's value of a result (NaN when absent) and whether larger is better.
double objective_value(SweepObjective objective, const TrialResult& r);
std::string_view objective_name(SweepObjective objective);

// The summary as an aligned text table, and as CSV (header + one row per trial, in the
// report's order): trial, grid keys..., status, final_train_loss, best_eval_loss,
// best_eval_step, final_eval_accuracy, tokens_per_s, wall_s, note.
std::string format_sweep_table(const SweepSpec& spec, const SweepReport& report);
std::string format_sweep_csv(const SweepSpec& spec, const SweepReport& report);

}  // namespace mg
