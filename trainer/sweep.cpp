// magellan sweep: sweep file -> trials -> child processes -> summary (trainer/sweep.h).
#include "trainer/sweep.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "autograd/error.h"
#include "checkpoints/atomic_save.h"
#include "experiments/config_loader.h"
#include "util/progress.h"
#include "util/regular_file.h"

namespace fs = std::filesystem;

namespace mg {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kSweepKeys = "sweep, sweep_dir, base, overrides, grid, objective";

// "file:12" for a node of the sweep file (yaml-cpp lines are 0-based).
std::string where(const std::string& file, const YAML::Node& node) {
  return node.Mark().is_null() ? file : fmt::format("{}:{}", file, node.Mark().line + 1);
}

// A YAML string literal that reads back as exactly `s` (for run_dir= and quoted values).
std::string yaml_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A grid value as override text: plain scalars verbatim ("1.0e-3" stays as written, so the
// child parses it exactly as the loader would parse the file), quoted scalars stay strings,
// lists and maps in flow style ("[in_proj, out_proj]").
std::string value_text(const YAML::Node& v) {
  if (v.IsScalar()) return v.Tag() == "!" ? yaml_quote(v.Scalar()) : v.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << v;
  return e.c_str();
}

std::string scalar_field(const std::string& file, const YAML::Node& v, const char* key) {
  MG_CHECK(v.IsScalar() && !v.Scalar().empty(), "[sweep] {}: '{}' must be a string", where(file, v), key);
  return v.Scalar();
}

// Keys the sweep sets for each trial itself; a sweep file must not set them.
bool reserved_key(const std::string& key) { return key == "run_dir" || key == "experiment" || key == "threads"; }

std::optional<SweepObjective> parse_objective(const std::string& s) {
  for (auto o : {SweepObjective::BestEvalLoss, SweepObjective::FinalEvalLoss, SweepObjective::FinalTrainLoss,
                 SweepObjective::FinalEvalAccuracy})
    if (objective_name(o) == s) return o;
  return std::nullopt;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string grid_label(const SweepTrial& t) {
  std::vector<std::string> kv;
  for (const auto& [k, v] : t.grid_values) kv.push_back(k + "=" + v);
  return join(kv, " ");
}

std::string last_log_line(const std::string& path) {
  if (file_kind(path) != "a regular file") return "";  // missing, or a FIFO that would block
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) last = line;
  }
  return last.empty() ? "(empty log)" : last;
}

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1u, std::thread::hardware_concurrency());
}

// Ctrl-C / SIGTERM during a sweep: remembered here, forwarded to the trials by the main loop.
volatile std::sig_atomic_t g_sweep_signal = 0;
extern "C" void on_sweep_signal(int sig) { g_sweep_signal = sig; }

struct ScopedSignals {
  struct sigaction old_int {}, old_term {};
  ScopedSignals() {
    g_sweep_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_sweep_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~ScopedSignals() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

// fork + exec `argv` with stdout and stderr appended to `log_path`. The child gets its own
// process group, so a Ctrl-C at the terminal reaches only the sweep, which forwards it once.
pid_t launch(const std::vector<std::string>& argv, const std::string& log_path) {
  {
    std::ofstream log(log_path, std::ios::app);
    MG_CHECK(log.good(), "[sweep] cannot write trial log {}; check the folder's permissions", log_path);
    std::vector<std::string> quoted;
    for (const auto& a : argv) quoted.push_back(a.find_first_of(" '\"[]{}*") == std::string::npos ? a : "'" + a + "'");
    log << "# " << join(quoted, " ") << "\n";
  }
  std::vector<char*> cargv;  // built before fork: the child may only make async-signal-safe calls
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  MG_CHECK(pid >= 0, "[sweep] fork failed ({}); too many processes? lower --jobs", std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    execv(cargv[0], cargv.data());
    const char msg[] = "magellan sweep: exec of the trial command failed\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(127);
  }
  return pid;
}

// Throws when `run_dir` was trained with a different config than the trial now asks for
// (the sweep file changed): skipping or resuming it would put a stale row in the table.
void check_same_config(const SweepTrial& t, const ExperimentConfig& want) {
  const std::string path = t.run_dir + "/config.yaml";
  require_regular_file(path, "[sweep]");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  ExperimentConfig have;
  try {
    have = load_config_text(text.str(), path).config;
  } catch (const Error& e) {
    throw Error(fmt::format("[sweep] {}: {} is unreadable ({}); delete {} to run the trial again", t.name, path,
                            e.what(), t.run_dir));
  }
  have.threads = want.threads;                // depends on --jobs only
  have.training.steps = want.training.steps;  // more steps: the trial is resumed to reach them
  if (have == want) return;
  std::istringstream a(to_yaml(have)), b(to_yaml(want));
  std::string la, lb;
  while (std::getline(a, la) && std::getline(b, lb) && la == lb) {}
  auto strip = [](std::string s) { return s.substr(0, s.find('#')); };
  throw Error(fmt::format("[sweep] {} ({}) was run with a different config than the sweep file now gives "
                          "(it has '{}', the sweep wants '{}'); delete {} to run it again, or use another "
                          "sweep name", t.name, t.run_dir, strip(la), strip(lb), t.run_dir));
}

std::string fmt_num(double v, const char* spec = "{:.6g}") {
  return std::isfinite(v) ? fmt::format(fmt::runtime(spec), v) : std::string();
}

std::vector<std::string> row_cells(const SweepSpec& spec, const TrialResult& r) {
  std::vector<std::string> c{r.trial.name};
  for (const auto& gv : r.trial.grid_values) c.push_back(gv.second);
  c.push_back(r.status);
  c.push_back(fmt_num(r.final_train_loss));
  c.push_back(fmt_num(r.best_eval_loss));
  c.push_back(r.best_eval_step >= 0 ? std::to_string(r.best_eval_step) : "");
  c.push_back(fmt_num(r.final_eval_accuracy, "{:.4f}"));
  c.push_back(fmt_num(r.tokens_per_s, "{:.0f}"));
  c.push_back(fmt_num(r.wall_s, "{:.1f}"));
  return c;
}

std::vector<std::string> header_cells(const SweepSpec& spec) {
  std::vector<std::string> h{"trial"};
  for (const auto& a : spec.grid) h.push_back(a.key);
  for (const char* k : {"status", "final_train_loss", "best_eval_loss", "best_eval_step", "final_eval_accuracy",
                        "tokens_per_s", "wall_s"})
    h.push_back(k);
  return h;
}

}  // namespace

std::string_view objective_name(SweepObjective o) {
  switch (o) {
    case SweepObjective::BestEvalLoss: return "best_eval_loss";
    case SweepObjective::FinalEvalLoss: return "final_eval_loss";
    case SweepObjective::FinalTrainLoss: return "final_train_loss";
    case SweepObjective::FinalEvalAccuracy: return "final_eval_accuracy";
  }
  return "?";
}

double objective_value(SweepObjective o, const TrialResult& r) {
  switch (o) {
    case SweepObjective::BestEvalLoss: return r.best_eval_loss;
    case SweepObjective::FinalEvalLoss: return r.final_eval_loss;
    case SweepObjective::FinalTrainLoss: return r.final_train_loss;
    case SweepObjective::FinalEvalAccuracy: return r.final_eval_accuracy;
  }
  return kNaN;
}

SweepSpec load_sweep(const std::string& path) {
  SweepSpec spec;
  spec.source = path;
  require_regular_file(path, "[sweep]");
  MG_CHECK(fs::is_regular_file(path), "[sweep] cannot read sweep file '{}'; check the path", path);
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("[sweep] {}:{}: YAML syntax error: {}; fix the file", path, e.mark.line + 1, e.msg));
  }
  MG_CHECK(doc.IsMap(), "[sweep] {}: expected a map with keys {}", path, kSweepKeys);
  std::map<std::string, YAML::Node> keys;
  for (const auto& kv : doc) {
    const std::string k = kv.first.as<std::string>();
    MG_CHECK(k == "sweep" || k == "sweep_dir" || k == "base" || k == "overrides" || k == "grid" || k == "objective",
             "[sweep] {}: unknown key '{}'; valid keys are {}", where(path, kv.first), k, kSweepKeys);
    MG_CHECK(!keys.count(k), "[sweep] {}: key '{}' given twice", where(path, kv.first), k);
    keys[k] = kv.second;
  }
  MG_CHECK(keys.count("sweep") || keys.count("sweep_dir"),
           "[sweep] {}: give the sweep a name (`sweep: lr_sweep`, trials in runs/lr_sweep/) or a folder "
           "(`sweep_dir: ...`)", path);
  MG_CHECK(keys.count("base"), "[sweep] {}: no `base:` experiment YAML; name the config every trial starts from",
           path);
  if (keys.count("sweep")) spec.name = scalar_field(path, keys["sweep"], "sweep");
  if (keys.count("sweep_dir")) spec.sweep_dir = scalar_field(path, keys["sweep_dir"], "sweep_dir");
  if (spec.name.empty()) spec.name = fs::path(spec.sweep_dir).lexically_normal().filename().string();
  MG_CHECK(!spec.name.empty() && spec.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789_.-") == std::string::npos,
           "[sweep] {}: sweep name '{}' may hold only letters, digits, '_', '.' and '-'",
           where(path, keys.count("sweep") ? keys["sweep"] : doc), spec.name);
  if (spec.sweep_dir.empty()) spec.sweep_dir = "runs/" + spec.name;

  const YAML::Node& base = keys["base"];
  const fs::path base_path = fs::path(path).parent_path() / scalar_field(path, base, "base");
  MG_CHECK(fs::is_regular_file(base_path), "[sweep] {}: base config '{}' not found (looked for {}); it is "
           "relative to the sweep file", where(path, base), base.Scalar(), base_path.string());
  spec.base_config = base_path.lexically_normal().string();

  if (keys.count("overrides")) {
    const YAML::Node& ov = keys["overrides"];
    MG_CHECK(ov.IsSequence() || ov.IsNull(), "[sweep] {}: 'overrides' must be a list of \"key.sub=value\" strings",
             where(path, ov));
    for (const auto& o : ov) {
      MG_CHECK(o.IsScalar(), "[sweep] {}: each override is one \"key.sub=value\" string", where(path, o));
      try {
        const std::string key = split_override(o.Scalar()).first;
        MG_CHECK(!reserved_key(key), "[sweep] '{}' is set by the sweep for each trial", key);
      } catch (const Error& e) {
        throw Error(fmt::format("[sweep] {}: {}", where(path, o), e.what()));
      }
      spec.overrides.push_back(o.Scalar());
    }
  }
  if (keys.count("grid")) {
    const YAML::Node& grid = keys["grid"];
    MG_CHECK(grid.IsMap() || grid.IsNull(), "[sweep] {}: 'grid' must map config keys to lists of values, e.g. "
             "'optimizer.lr: [1.0e-3, 3.0e-3]'", where(path, grid));
    const std::vector<std::string> known = config_key_paths();
    for (const auto& kv : grid) {
      SweepAxis axis{kv.first.as<std::string>(), {}};
      const std::string at = where(path, kv.first);
      MG_CHECK(!reserved_key(axis.key), "[sweep] {}: '{}' is set by the sweep for each trial; it cannot be a grid "
               "key", at, axis.key);
      for (const auto& a : spec.grid)
        MG_CHECK(a.key != axis.key, "[sweep] {}: grid key '{}' given twice", at, axis.key);
      MG_CHECK(kv.second.IsSequence() && kv.second.size() > 0, "[sweep] {}: grid key '{}' needs a non-empty list "
               "of values, e.g. [1, 2]", at, axis.key);
      for (const auto& v : kv.second) axis.values.push_back(value_text(v));
      if (std::find(known.begin(), known.end(), axis.key) == known.end()) {
        // The loader's own message says what is wrong and suggests the nearest key.
        try {
          load_config(spec.base_config, {axis.key + "=" + axis.values.front()});
        } catch (const Error& e) {
          throw Error(fmt::format("[sweep] {}: grid key '{}': {}", at, axis.key, e.what()));
        }
        throw Error(fmt::format("[sweep] {}: grid key '{}' is a section; sweep its keys ('{}.<key>')", at, axis.key,
                                axis.key));
      }
      spec.grid.push_back(std::move(axis));
    }
  }
  if (keys.count("objective")) {
    const auto o = parse_objective(scalar_field(path, keys["objective"], "objective"));
    MG_CHECK(o, "[sweep] {}: unknown objective '{}'; use best_eval_loss, final_eval_loss, final_train_loss "
             "(minimized) or final_eval_accuracy (maximized)", where(path, keys["objective"]),
             keys["objective"].Scalar());
    spec.objective = *o;
  }
  return spec;
}

std::vector<SweepTrial> expand_trials(const SweepSpec& spec) {
  size_t n = 1;
  for (const auto& a : spec.grid) n *= a.values.size();
  std::vector<SweepTrial> trials;
  for (size_t i = 0; i < n; ++i) {
    SweepTrial t;
    t.index = static_cast<int>(i);
    t.name = fmt::format("trial_{:03d}", i);
    t.run_dir = spec.sweep_dir + "/" + t.name;
    t.log_path = spec.sweep_dir + "/" + t.name + ".log";
    t.overrides = spec.overrides;
    // Mixed-radix digits of i, the last axis least significant (nested loops in file order).
    size_t stride = n;
    for (const auto& a : spec.grid) {
      stride /= a.values.size();
      const std::string& v = a.values[(i / stride) % a.values.size()];
      t.grid_values.emplace_back(a.key, v);
      t.overrides.push_back(a.key + "=" + v);
    }
    t.overrides.push_back("run_dir=" + yaml_quote(t.run_dir));
    t.overrides.push_back("experiment=" + yaml_quote(spec.name + "_" + t.name));
    trials.push_back(std::move(t));
  }
  return trials;
}

ExperimentConfig trial_config(const SweepSpec& spec, const SweepTrial& t, int threads) {
  std::vector<std::string> ov = t.overrides;
  ov.push_back(fmt::format("threads={}", threads));
  try {
    return load_config(spec.base_config, ov).config;
  } catch (const Error& e) {
    throw Error(fmt::format("[sweep] {} ({}) has an invalid config; nothing was launched. {}", t.name,
                            t.grid_values.empty() ? "no grid" : grid_label(t), e.what()));
  }
}

void read_trial_summary(TrialResult& r) {
  const std::string path = r.trial.run_dir + "/summary.yaml";
  r.status = "missing";
  r.final_train_loss = r.best_eval_loss = r.final_eval_loss = r.final_eval_accuracy = r.tokens_per_s = r.wall_s =
      kNaN;
  r.final_step = r.total_steps = 0;
  r.best_eval_step = -1;
  if (!fs::exists(path)) return;
  require_regular_file(path, "[sweep]");
  try {
    const YAML::Node s = YAML::LoadFile(path);
    r.status = s["status"].as<std::string>();
    r.final_step = s["final_step"].as<int64_t>();
    r.total_steps = s["total_steps"].as<int64_t>();
    r.final_train_loss = s["final_train_loss"].as<double>();
    r.best_eval_loss = s["best_eval_loss"].as<double>();
    r.best_eval_step = s["best_eval_step"].as<int64_t>();
    r.final_eval_loss = r.best_eval_step >= 0 ? s["final_eval_loss"].as<double>() : kNaN;
    const double acc = s["final_eval_accuracy"].as<double>();
    r.final_eval_accuracy = acc >= 0 ? acc : kNaN;  // -1: the data has no task metric
    r.tokens_per_s = s["tokens_per_s"].as<double>();
    r.wall_s = s["wall_s"].as<double>();
  } catch (const YAML::Exception& e) {
    r.status = "missing";
    r.note = fmt::format("unreadable {} ({})", path, e.what());
  }
}

SweepReport run_sweep(const SweepSpec& spec, const SweepOptions& opts) {
  MG_CHECK(opts.jobs >= 1, "[sweep] --jobs must be >= 1 (got {})", opts.jobs);
  MG_CHECK(!opts.executable.empty(), "[sweep] no executable to run trials with");
  const int cores = opts.cores > 0 ? opts.cores : available_cores();
  const int threads = std::max(1, cores / opts.jobs);
  const std::vector<SweepTrial> trials = expand_trials(spec);

  // 1. Every trial's config first, so a typo in the grid fails before anything runs; then
  //    what each trial dir already holds: finished (skip), interrupted (resume), or nothing.
  enum class Plan { Skip, Resume, Fresh };
  std::vector<Plan> plan(trials.size(), Plan::Fresh);
  std::vector<int64_t> steps(trials.size());
  std::vector<TrialResult> results(trials.size());
  for (size_t i = 0; i < trials.size(); ++i) {
    const ExperimentConfig cfg = trial_config(spec, trials[i], threads);
    steps[i] = cfg.training.steps;
    results[i].trial = trials[i];
    if (fs::exists(trials[i].run_dir + "/config.yaml")) check_same_config(trials[i], cfg);
    read_trial_summary(results[i]);
    const TrialResult& r = results[i];
    if (r.status == "finished" && r.final_step == r.total_steps && r.total_steps >= steps[i]) plan[i] = Plan::Skip;
    else if (latest_complete_checkpoint(trials[i].run_dir + "/checkpoints")) plan[i] = Plan::Resume;
  }
  fs::create_directories(spec.sweep_dir);
  // One sweep per folder at a time: a second one would launch the same unfinished trials
  // into the same run dirs. flock is released when the process ends, however it ends.
  const std::string lock_path = spec.sweep_dir + "/.sweep.lock";
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  MG_CHECK(lock_fd >= 0, "[sweep] cannot create {} ({}); check the folder's permissions", lock_path,
           std::strerror(errno));
  struct LockGuard {
    int fd;
    ~LockGuard() { close(fd); }
  } lock_guard{lock_fd};
  MG_CHECK(flock(lock_fd, LOCK_EX | LOCK_NB) == 0, "[sweep] another `magellan sweep` is running on {} (it holds "
           "{}); wait for it, or stop it with Ctrl-C", spec.sweep_dir, lock_path);

  SweepReport rep;
  std::vector<size_t> queue;
  int n_resume = 0;
  for (size_t i = 0; i < trials.size(); ++i) {
    if (plan[i] == Plan::Skip) {
      results[i].skipped = true;
      results[i].note = "skipped: finished earlier";
      ++rep.n_skipped;
      std::printf("%s skipped: already finished (step %lld/%lld)  %s\n", trials[i].name.c_str(),
                  static_cast<long long>(results[i].final_step), static_cast<long long>(steps[i]),
                  grid_label(trials[i]).c_str());
    } else {
      n_resume += plan[i] == Plan::Resume;
      queue.push_back(i);
    }
  }
  std::printf("sweep %s: %zu trials: %d skipped (finished), %d to resume, %zu new; %d at a time, %d thread%s each; "
              "logs %s/trial_NNN.log\n", spec.name.c_str(), trials.size(), rep.n_skipped, n_resume,
              queue.size() - static_cast<size_t>(n_resume), std::min<int>(opts.jobs, std::max<int>(1, queue.size())),
              threads, threads == 1 ? "" : "s", spec.sweep_dir.c_str());
  std::fflush(stdout);

  // 2. Run the queue, `jobs` at a time. Polling waitpid keeps the loop simple and lets it
  //    redraw the progress line and notice a Ctrl-C between children's exits.
  std::map<pid_t, size_t> running;
  std::vector<bool> launched(trials.size(), false);
  size_t next = 0, done = 0;
  bool forwarded = false;
  Progress progress("sweep", static_cast<int64_t>(queue.size()), "trial", opts.quiet);
  const auto t0 = std::chrono::steady_clock::now();
  const bool tty = Progress::stderr_is_tty();
  ScopedSignals signals;
  while ((!forwarded && next < queue.size()) || !running.empty()) {
    if (g_sweep_signal && !forwarded) {
      forwarded = rep.interrupted = true;
      std::fprintf(stderr, "%s[sweep] stopping: SIGINT sent to %zu running trial%s (each checkpoints and stops); "
                   "run the sweep again to resume\n", tty ? "\r\033[K" : "", running.size(),
                   running.size() == 1 ? "" : "s");
      for (const auto& [pid, i] : running) kill(pid, SIGINT);
    }
    while (!forwarded && next < queue.size() && running.size() < static_cast<size_t>(opts.jobs)) {
      const size_t i = queue[next++];
      std::vector<std::string> argv{opts.executable, "train"};
      if (plan[i] == Plan::Resume) {
        argv.insert(argv.end(), {"--resume", trials[i].run_dir, fmt::format("training.steps={}", steps[i])});
      } else {
        argv.push_back(spec.base_config);
        argv.insert(argv.end(), trials[i].overrides.begin(), trials[i].overrides.end());
      }
      argv.insert(argv.end(), {fmt::format("threads={}", threads), "--quiet"});
      launched[i] = true;
      try {
        running[launch(argv, trials[i].log_path)] = i;
      } catch (const Error& e) {  // this trial fails; the running ones are still waited for
        results[i].status = "failed";
        results[i].note = e.what();
        ++done;
      }
    }
    int wstatus = 0;
    const pid_t pid = waitpid(-1, &wstatus, WNOHANG);
    if (pid <= 0 || !running.count(pid)) {
      progress.update(static_cast<int64_t>(done), fmt::format("{} running", running.size()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    const size_t i = running[pid];
    running.erase(pid);
    ++done;
    TrialResult& r = results[i];
    read_trial_summary(r);
    // 130: the trial was interrupted (the SIGINT this sweep forwarded) and checkpointed.
    const bool interrupted = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 130 && r.status == "stopped";
    if (!interrupted && (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)) {
      r.status = "failed";
      r.note = WIFSIGNALED(wstatus) ? fmt::format("killed by signal {}", WTERMSIG(wstatus))
                                    : last_log_line(trials[i].log_path);
    } else if (r.status == "missing") {
      r.status = "failed";
      r.note = "exited without writing summary.yaml; see " + trials[i].log_path;
    }
    if (!opts.quiet) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double left = el / static_cast<double>(done) * static_cast<double>(queue.size() - done);
      const std::string value = fmt_num(objective_value(spec.objective, r));
      std::fprintf(stderr, "%s[sweep] %s %s (%s): %s %s  [%zu/%zu done, %zu running, ETA %s]\n",
                   tty ? "\r\033[K" : "", trials[i].name.c_str(), r.status.c_str(), grid_label(trials[i]).c_str(),
                   r.status == "failed" ? r.note.c_str() : std::string(objective_name(spec.objective)).c_str(),
                   r.status == "failed" ? "" : value.empty() ? "-" : value.c_str(), done,
                   queue.size(), running.size(), Progress::format_duration(left).c_str());
    }
    progress.update(static_cast<int64_t>(done), fmt::format("{} running", running.size()));
  }
  progress.finish();

  // 3. The table: by the objective, finished before stopped, failed and missing last.
  for (size_t i = 0; i < trials.size(); ++i)
    if (!launched[i] && !results[i].skipped) read_trial_summary(results[i]);
  const bool maximize = spec.objective == SweepObjective::FinalEvalAccuracy;
  auto rank = [&](const TrialResult& r) {
    const bool has = std::isfinite(objective_value(spec.objective, r));
    return r.status == "finished" ? (has ? 0 : 1) : r.status == "stopped" ? (has ? 2 : 3) : 4;
  };
  std::stable_sort(results.begin(), results.end(), [&](const TrialResult& a, const TrialResult& b) {
    const int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb;
    if (ra == 0 || ra == 2) {
      const double va = objective_value(spec.objective, a), vb = objective_value(spec.objective, b);
      return maximize ? va > vb : va < vb;
    }
    return false;
  });
  for (const auto& r : results) rep.n_failed += r.status == "failed";
  rep.results = std::move(results);
  const std::string csv = spec.sweep_dir + "/summary.csv";
  atomic_write(csv, [&](const std::string& tmp) {  // temp, fsync, rename: the old table or the whole new one
    std::ofstream out(tmp);
    out << format_sweep_csv(spec, rep);
    out.close();
    MG_CHECK(out.good(), "[sweep] cannot write {}; check the disk and permissions", tmp);
  });
  return rep;
}

std::string format_sweep_csv(const SweepSpec& spec, const SweepReport& report) {
  auto cell = [](const std::string& s) {  // RFC 4180 quoting where needed
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  auto line = [&](std::vector<std::string> cells) {
    for (auto& c : cells) c = cell(c);
    return join(cells, ",") + "\n";
  };
  std::vector<std::string> h = header_cells(spec);
  h.push_back("note");
  std::string out = line(h);
  for (const auto& r : report.results) {
    std::vector<std::string> c = row_cells(spec, r);
    c.push_back(r.note);
    out += line(c);
  }
  return out;
}

std::string format_sweep_table(const SweepSpec& spec, const SweepReport& report) {
  std::vector<std::vector<std::string>> rows{header_cells(spec)};
  for (const auto& r : report.results) rows.push_back(row_cells(spec, r));
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t j = 0; j < row.size(); ++j) width[j] = std::max(width[j], row[j].size());
  std::string out;
  for (const auto& row : rows) {
    std::string l;
    for (size_t j = 0; j < row.size(); ++j) l += fmt::format("{:<{}}  ", row[j].empty() ? "-" : row[j], width[j]);
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  }
  for (const auto& r : report.results)
    if (r.status == "failed") out += fmt::format("{} failed: {}  (log {})\n", r.trial.name, r.note, r.trial.log_path);
  const TrialResult* best = report.results.empty() ? nullptr : &report.results.front();
  if (best && std::isfinite(objective_value(spec.objective, *best)))
    out += fmt::format("best by {}: {} ({}) = {}   run dir {}\n", objective_name(spec.objective), best->trial.name,
                       best->trial.grid_values.empty() ? "no grid" : grid_label(best->trial),
                       fmt_num(objective_value(spec.objective, *best)), best->trial.run_dir);
  return out;
}

}  // namespace mg
