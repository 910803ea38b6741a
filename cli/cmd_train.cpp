// magellan train / magellan demo
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <boost/program_options.hpp>

#include "cli/commands.h"
#include "cli/demo_config.h"
#include "experiments/config_loader.h"
#include "trainer/trainer.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace mg::cli {

namespace {

void print_next_steps(const TrainSummary& s, const ExperimentConfig& cfg) {
  const std::string p = program_name(), dir = quote_arg(s.run_dir);
  std::printf("\nrun %s: %s at step %lld", s.run_dir.c_str(), s.status.c_str(), static_cast<long long>(s.final_step));
  if (std::isfinite(s.best_eval_loss))
    std::printf(", best eval loss %.4f (step %lld)", s.best_eval_loss, static_cast<long long>(s.best_eval_step));
  if (s.final_eval_accuracy >= 0) std::printf(", task accuracy %.1f%%", 100.0 * s.final_eval_accuracy);
  if (std::isfinite(s.tokens_per_s)) std::printf(", %.0f tokens/s", s.tokens_per_s);
  std::printf(", %.0f s\n", s.wall_s);
  std::printf("  checkpoint  %s\n  metrics     %s/metrics.h5   log %s/train.log\n\nnext:\n", s.last_checkpoint.c_str(),
              s.run_dir.c_str(), s.run_dir.c_str());
  std::printf("  %s eval --run %s\n", p.c_str(), dir.c_str());
  if (cfg.data.source == DataSource::Synthetic)
    std::printf("  %s generate --run %s --prompt-ids \"3 16 5 9 12 16\" -n 1 --temp 0\n", p.c_str(), dir.c_str());
  else
    std::printf("  %s generate --run %s -p \"Once upon a time\" -n 200\n", p.c_str(), dir.c_str());
  if (s.status == "stopped")
    std::printf("  %s train --resume %s     # continue where it stopped\n", p.c_str(), dir.c_str());
  else
    std::printf("  %s train --resume %s training.steps=%lld     # continue for more steps\n", p.c_str(), dir.c_str(),
                static_cast<long long>(cfg.training.steps * 2));
}

int run_training(const LoadedConfig& loaded, TrainOptions opts) {
  const ExperimentConfig& cfg = loaded.config;
  Trainer trainer(cfg, loaded.yaml, std::move(opts));
  TrainSummary s = trainer.run();
  print_next_steps(s, cfg);
  if (s.interrupted) {  // Ctrl-C / SIGTERM: checkpointed, but not what was asked for (128 + SIGINT)
    std::fprintf(stderr, "magellan train: interrupted at step %lld (checkpoint saved); resume with `%s train --resume %s`\n",
                 static_cast<long long>(s.final_step), program_name().c_str(), quote_arg(s.run_dir).c_str());
    return 130;
  }
  return s.status == "finished" || s.status == "stopped" ? 0 : 1;
}

}  // namespace

int cmd_train(const Args& args) {
  po::options_description desc(
      "magellan train CONFIG.yaml [key.sub=value ...] [options]\n"
      "magellan train --resume RUN_DIR [key.sub=value ...]\n\n"
      "Trains the experiment the YAML describes (docs/config.md); key=value arguments override\n"
      "its keys (e.g. optimizer.lr=1e-3 lora.target_modules=[in_proj,out_proj]). Run outputs go\n"
      "to runs/<experiment>/. Ctrl-C stops after the current step with a checkpoint (exit 130).\n\noptions");
  std::string resume, device;
  int64_t stop_after = -1;
  desc.add_options()("help,h", "show this help")(
      "resume", po::value(&resume), "continue RUN_DIR from its latest complete checkpoint (bit-exact)")(
      "device", po::value(&device), "cpu or cuda: the same as the override training.device=...")(
      "quiet,q", "no progress line or console log (train.log is still written)")(
      "stop-after", po::value(&stop_after), "stop with a checkpoint after this many steps (time-boxed runs)");
  std::vector<std::string> positional;
  po::variables_map vm = parse_args(args, desc, &positional);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  TrainOptions opts;
  opts.quiet = vm.count("quiet") > 0;
  opts.stop_after_steps = stop_after;
  if (!device.empty()) opts.overrides.push_back("training.device=" + device);  // checked by the config loader
  std::string config_path;
  for (const std::string& a : positional) {
    if (a.find('=') != std::string::npos) opts.overrides.push_back(a);
    else if (config_path.empty()) config_path = a;
    else throw Error(fmt::format("[train] two config files given ('{}' and '{}'); give one (it may `extends:` others)",
                                 config_path, a));
  }
  if (!resume.empty()) {
    MG_CHECK(config_path.empty(), "[train] --resume takes its config from {}/config.yaml; do not also give '{}'",
             resume, config_path);
    const std::string resolved = resume + "/config.yaml";
    MG_CHECK(fs::exists(resolved), "[train] --resume {}: no config.yaml there; is it a run directory?", resume);
    opts.resume = true;
    LoadedConfig loaded = load_config(resolved, opts.overrides);
    // The run dir is where we resume, wherever it was created from.
    loaded.config.run_dir = resume;
    return run_training(loaded, opts);
  }
  MG_CHECK(!config_path.empty(), "[train] no config given: magellan train experiments/<name>.yaml (or `magellan demo`)");
  return run_training(load_config(config_path, opts.overrides), opts);
}

int cmd_demo(const Args& args) {
  po::options_description desc(
      "magellan demo [key.sub=value ...] [options]\n\n"
      "Trains the built-in demo: a small hybrid Mamba+MoE model learns the induction-heads task\n"
      "(Mamba paper, §4.1) on synthetic data, a few minutes on 2 cores, then prints how to\n"
      "evaluate, generate from and resume the run. Writes runs/demo (or runs/demo-2, ...).\n\noptions");
  desc.add_options()("help,h", "show this help")("quiet,q", "no progress line or console log")(
      "print-config", "print the demo's YAML and exit");
  std::vector<std::string> overrides;
  po::variables_map vm = parse_args(args, desc, &overrides);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("print-config")) {
    std::cout << kDemoConfigYaml;
    return 0;
  }
  LoadedConfig loaded = load_config_text(kDemoConfigYaml, "<built-in demo>", overrides);
  // Never touch an earlier demo run: take the first free runs/demo, runs/demo-2, ...
  std::string dir = loaded.config.resolved_run_dir();
  for (int i = 2; fs::exists(dir); ++i) dir = loaded.config.resolved_run_dir() + "-" + std::to_string(i);
  loaded.config.run_dir = dir;
  loaded.yaml = to_yaml(loaded.config);
  TrainOptions opts;
  opts.quiet = vm.count("quiet") > 0;
  opts.overrides = overrides;
  return run_training(loaded, opts);
}

}  // namespace mg::cli
