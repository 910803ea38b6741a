// magellan sweep: a grid of training runs (trainer/sweep.h), each a child `magellan train`.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <boost/program_options.hpp>

#include "autograd/error.h"
#include "cli/commands.h"
#include "trainer/sweep.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace mg::cli {

int cmd_sweep(const Args& args) {
  po::options_description desc(
      "magellan sweep SWEEP.yaml [--jobs N] [--quiet]\n\n"
      "Runs every combination of the sweep file's grid as its own training run\n"
      "(runs/<sweep>/trial_NNN, log in runs/<sweep>/trial_NNN.log), N at a time, and prints a\n"
      "table sorted by the objective (also runs/<sweep>/summary.csv). Run it again to skip\n"
      "finished trials and resume interrupted ones. Ctrl-C stops every trial with a checkpoint.\n"
      "Example file: experiments/sweep_example.yaml\n\noptions");
  std::string file;
  int jobs = 1;
  desc.add_options()("help,h", "show this help")(
      "jobs,j", po::value(&jobs)->default_value(1), "trials at once; each gets max(1, cores / N) threads")(
      "quiet,q", "no progress line or per-trial lines (the table is still printed)");
  po::options_description hidden;
  hidden.add_options()("file", po::value(&file));
  po::positional_options_description pos;
  pos.add("file", 1);
  po::options_description all;
  all.add(desc).add(hidden);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(!file.empty(), "[sweep] no sweep file given: magellan sweep experiments/sweep_example.yaml");
  MG_CHECK(jobs >= 1, "[sweep] --jobs must be >= 1 (got {})", jobs);
  const SweepSpec spec = load_sweep(file);
  SweepOptions opts;
  opts.jobs = jobs;
  opts.quiet = vm.count("quiet") > 0;
  // Trials run this very binary, whatever name or PATH it was started by.
  opts.executable = fs::read_symlink("/proc/self/exe").string();
  const SweepReport rep = run_sweep(spec, opts);
  std::printf("\n%s", format_sweep_table(spec, rep).c_str());
  std::printf("summary: %s/summary.csv", spec.sweep_dir.c_str());
  if (rep.n_skipped) std::printf("; %d trial%s skipped (finished earlier)", rep.n_skipped, rep.n_skipped == 1 ? "" : "s");
  if (rep.n_failed) std::printf("; %d FAILED (see their logs)", rep.n_failed);
  std::printf("\n");
  if (rep.interrupted) {
    std::printf("interrupted: run `%s sweep %s` again to resume\n", program_name().c_str(), quote_arg(file).c_str());
    return 130;
  }
  return rep.n_failed ? 1 : 0;
}

}  // namespace mg::cli
