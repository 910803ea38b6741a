// End-to-end: drives the built `magellan` binary the way a user does (train, kill -9, resume,
// eval, quantize, QLoRA, generate, merge-lora, sweep, error messages) and checks its files
// with independent readers: h5py for checkpoints, a plain line parser for summary.yaml/CSV.
// Every child's stdout/stderr goes to files in a temp dir and is printed when a check fails.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_paths.h"

namespace fs = std::filesystem;

namespace {

const std::string kBinary = MAGELLAN_BINARY_DIR "/magellan";

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

// A fresh directory under $TMPDIR, removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "magellan_e2e_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct Result {
  std::string cmd, out, err;
  int rc = -1;
  // What a failed assertion prints: the command and everything it said.
  std::string show() const {
    return "\n$ " + cmd + "\n-- exit " + std::to_string(rc) + "\n-- stdout:\n" + out + "-- stderr:\n" + err;
  }
};

// fork + exec `args` (args[0] = the program) in `cwd`, stdout/stderr to the given files.
pid_t spawn(const std::vector<std::string>& args, const fs::path& cwd, const fs::path& out, const fs::path& err) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (chdir(cwd.c_str()) != 0) _exit(126);
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, STDOUT_FILENO);
    dup2(e, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

std::string join_cmd(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
  return s;
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// Runs `args` to completion in `dir`; output is captured under dir/.out_N.
Result run(const fs::path& dir, std::vector<std::string> args) {
  static int counter = 0;
  const fs::path out = dir / (".out_" + std::to_string(counter) + ".txt");
  const fs::path err = dir / (".err_" + std::to_string(counter++) + ".txt");
  Result r;
  r.cmd = join_cmd(args);
  int status = 0;
  waitpid(spawn(args, dir, out, err), &status, 0);
  r.rc = exit_code(status);
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

Result magellan(const fs::path& dir, std::vector<std::string> args) {
  args.insert(args.begin(), kBinary);
  return run(dir, args);
}

// summary.yaml / config.yaml lines "key: value  # comment", read without the library's loader.
std::map<std::string, std::string> read_key_values(const fs::path& p) {
  std::map<std::string, std::string> kv;
  std::istringstream in(read_text(p));
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find('#'));
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    key.erase(0, key.find_first_not_of(' '));
    value.erase(0, value.find_first_not_of(' '));
    value.erase(value.find_last_not_of(" \"") + 1);
    if (!value.empty() && value.front() == '"') value.erase(0, 1);
    kv[key] = value;
  }
  return kv;
}

double num(const std::string& s) { return s == ".nan" ? NAN : std::stod(s); }

std::vector<int> ints_in(const std::string& text) {
  std::vector<int> v;
  std::istringstream in(text);
  for (int x; in >> x;) v.push_back(x);
  return v;
}

// "eval: 256 tokens  loss 2.0794  perplexity 8.000  task accuracy 12.50%" -> (loss, accuracy %).
bool parse_eval(const std::string& out, double& loss, double& accuracy) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(loss ([0-9.naif]+)  perplexity [^ ]+  task accuracy ([0-9.]+)%)")))
    return false;
  loss = std::stod(m[1]);
  accuracy = std::stod(m[2]);
  return true;
}

std::vector<fs::path> step_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step_", 0) == 0 && n.size() > 8 && n.substr(n.size() - 3) == ".h5") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

int available_cores() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

// The tiny experiment every test trains (a minute of CPU at most, even under sanitizers).
std::string tiny_yaml(int steps) {
  return "experiment: e2e\nseed: 7\nthreads: 2\n"
         "model:\n  d_model: 32\n  vocab_size: 32\n  layer_pattern: ME\n  d_state: 8\n  n_experts: 4\n"
         "  top_k: 2\n  expert_hidden: 64\n"
         "data:\n  source: synthetic\n  task: selective_copy\n  seq_len: 32\n  n_memorize: 4\n  n_tokens: 8\n"
         "optimizer:\n  lr: 3.0e-3\n"
         "training:\n  steps: " + std::to_string(steps) + "\n  batch_size: 4\n  log_every: 10\n"
         "eval:\n  every: 20\n  batches: 2\n"
         "checkpoint:\n  every: 5\n  keep_last: 3\n"
         "logging:\n  progress: never\n";
}

#define REQUIRE_BINARY()                                                                            \
  ASSERT_TRUE(fs::exists(kBinary)) << kBinary << " is missing: build target `magellan` first "      \
                                   << "(ninja -C " MAGELLAN_BINARY_DIR " magellan test_cli)"

// h5py (an independent reader) says whether a checkpoint is complete, and its step.
Result h5_complete_and_step(const fs::path& dir, const fs::path& file) {
  return run(dir, {"/usr/bin/python3", "-c",
                   "import sys, h5py\nf = h5py.File(sys.argv[1], 'r')\n"
                   "print(int(f.attrs.get('complete', 0)), int(f.attrs['step']))",
                   file.string()});
}

}  // namespace

// 1 + 2. Train, kill -9 mid-run, resume to the end; the result equals an uninterrupted run;
// `magellan eval --run` reproduces the trainer's own final evaluation.
TEST(CliE2E, TrainKillResumeThenEval) {
  REQUIRE_BINARY();
  TempDir tmp;
  const int steps = 40;
  write_text(tmp.path / "tiny.yaml", tiny_yaml(steps));
  const fs::path run_dir = tmp.path / "run", ckpts = run_dir / "checkpoints";

  const std::vector<std::string> train = {kBinary, "train", "tiny.yaml", "run_dir=" + run_dir.string(), "--quiet"};
  const pid_t pid = spawn(train, tmp.path, tmp.path / "train.out", tmp.path / "train.err");
  int status = 0;
  bool exited = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (step_checkpoints(ckpts).empty() && std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the training run ended (exit " << exit_code(status) << ") before it could be killed mid-run\n"
      << read_text(tmp.path / "train.err");
  ASSERT_FALSE(fs::exists(run_dir / "summary.yaml")) << "killed run wrote a summary: it had finished";

  const auto files = step_checkpoints(ckpts);
  ASSERT_FALSE(files.empty());
  Result h5 = h5_complete_and_step(tmp.path, files.back());
  ASSERT_EQ(h5.rc, 0) << h5.show();
  const std::vector<int> complete_step = ints_in(h5.out);
  ASSERT_EQ(complete_step.size(), 2u) << h5.show();
  EXPECT_EQ(complete_step[0], 1) << "checkpoint " << files.back() << " lacks complete=1";
  EXPECT_GT(complete_step[1], 0);
  EXPECT_LT(complete_step[1], steps);

  Result resumed = magellan(tmp.path, {"train", "--resume", run_dir.string(), "--quiet"});
  ASSERT_EQ(resumed.rc, 0) << resumed.show();
  auto sum = read_key_values(run_dir / "summary.yaml");
  EXPECT_EQ(sum["status"], "finished") << resumed.show();
  EXPECT_EQ(sum["final_step"], std::to_string(steps));
  EXPECT_NE(read_text(run_dir / "train.log").find("resumed from"), std::string::npos);

  // Resuming is bit-exact (design.md §1): the same evals as a run that was never killed.
  Result whole = magellan(tmp.path, {"train", "tiny.yaml", "run_dir=" + (tmp.path / "whole").string(), "--quiet"});
  ASSERT_EQ(whole.rc, 0) << whole.show();
  auto ref = read_key_values(tmp.path / "whole" / "summary.yaml");
  for (const char* key : {"best_eval_loss", "final_eval_loss", "final_eval_accuracy", "final_train_loss"}) {
    const double a = num(sum[key]), b = num(ref[key]);
    EXPECT_NEAR(a, b, 1e-6 * std::max(1.0, std::fabs(b))) << key << ": resumed " << a << " vs uninterrupted " << b;
  }

  // 2. eval --run: the latest checkpoint (step 40) on the same validation batches as the
  // trainer's final eval, so the printed loss and accuracy must match summary.yaml.
  Result ev = magellan(tmp.path, {"eval", "--run", run_dir.string(), "--threads", "2"});
  ASSERT_EQ(ev.rc, 0) << ev.show();
  double loss = 0, acc = 0;
  ASSERT_TRUE(parse_eval(ev.out, loss, acc)) << "no loss / task accuracy in the output" << ev.show();
  EXPECT_NEAR(loss, num(sum["final_eval_loss"]), 6e-5) << ev.show();
  EXPECT_NEAR(acc, 100.0 * num(sum["final_eval_accuracy"]), 6e-3) << ev.show();
}

// 3. QLoRA: float32 base -> quantize -> adapter training on the NF4 base -> generate three
// ways (adapter checkpoint, base + --adapter, merged) -> the same greedy ids.
TEST(CliE2E, QloraAdapterGenerateAndMerge) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "base.yaml", tiny_yaml(20));
  Result base = magellan(tmp.path, {"train", "base.yaml", "run_dir=base_run", "--quiet"});
  ASSERT_EQ(base.rc, 0) << base.show();
  Result quant = magellan(tmp.path, {"quantize", "--checkpoint", "base_run", "-o", "base_nf4.h5", "--quiet"});
  ASSERT_EQ(quant.rc, 0) << quant.show();
  ASSERT_TRUE(fs::exists(tmp.path / "base_nf4.h5")) << quant.show();
  // The tied embedding is NF4 too (qlora.quantize_embedding's default), unless kept.
  EXPECT_NE(quant.out.find("and the embedding"), std::string::npos) << quant.show();
  Result keep = magellan(tmp.path, {"quantize", "--checkpoint", "base_run", "-o", "base_keep.h5", "--keep-embedding",
                                    "--quiet"});
  ASSERT_EQ(keep.rc, 0) << keep.show();
  EXPECT_NE(keep.out.find("kept float32 (--keep-embedding)"), std::string::npos) << keep.show();

  write_text(tmp.path / "qlora.yaml",
             tiny_yaml(6) + "qlora:\n  enabled: true\n  base_checkpoint: base_nf4.h5\n"
                            "lora:\n  enabled: true\n  r: 4\n  alpha: 8\n"
                            "  target_modules: [in_proj, out_proj, up, down]\n");
  Result qlora = magellan(tmp.path, {"train", "qlora.yaml", "run_dir=qlora_run", "optimizer.lr=1.0e-2", "--quiet"});
  ASSERT_EQ(qlora.rc, 0) << qlora.show();
  const auto ckpts = step_checkpoints(tmp.path / "qlora_run" / "checkpoints");
  ASSERT_FALSE(ckpts.empty()) << qlora.show();
  const std::string adapter = ckpts.back().string();

  const std::vector<std::string> gen = {"--prompt-ids", "1 2 3", "-n", "5", "--temp", "0", "--threads", "2"};
  auto generate = [&](std::vector<std::string> head) {
    head.insert(head.begin(), "generate");
    head.insert(head.end(), gen.begin(), gen.end());
    return magellan(tmp.path, head);
  };
  Result g_adapter = generate({"--checkpoint", adapter});
  ASSERT_EQ(g_adapter.rc, 0) << g_adapter.show();
  const std::vector<int> ids = ints_in(g_adapter.out);
  ASSERT_EQ(ids.size(), 5u) << g_adapter.show();
  for (int id : ids) EXPECT_TRUE(id >= 0 && id < 32) << g_adapter.show();

  Result g_base_plus = generate({"--checkpoint", "base_nf4.h5", "--adapter", adapter});
  ASSERT_EQ(g_base_plus.rc, 0) << g_base_plus.show();
  EXPECT_EQ(ints_in(g_base_plus.out), ids) << g_adapter.show() << g_base_plus.show();

  Result merge = magellan(tmp.path, {"merge-lora", "--checkpoint", adapter, "-o", "merged.h5"});
  ASSERT_EQ(merge.rc, 0) << merge.show();
  EXPECT_NE(merge.out.find("(float32; "), std::string::npos) << merge.show();
  {  // every weight of the merged file is float32: nothing left under /quantized (h5py reads it)
    const fs::path probe = tmp.path / "probe.py";
    write_text(probe, "import h5py, sys\nf = h5py.File(sys.argv[1], 'r')\nprint('quantized' in f, 'adapter' in f)\n");
    Result q = run(tmp.path, {"/usr/bin/python3", probe.string(), (tmp.path / "merged.h5").string()});
    ASSERT_EQ(q.rc, 0) << q.show();
    EXPECT_EQ(q.out, "False False\n") << q.show();
  }
  Result g_merged = generate({"--checkpoint", "merged.h5"});
  ASSERT_EQ(g_merged.rc, 0) << g_merged.show();
  EXPECT_EQ(ints_in(g_merged.out), ids) << g_adapter.show() << g_merged.show();

  // Beyond argmax: the merged model's loss equals the adapted one's up to float rounding, and
  // differs from the bare NF4 base (so the adapter is really applied in all three paths).
  double l_adapter = 0, l_merged = 0, l_base = 0, acc = 0;
  Result e_adapter = magellan(tmp.path, {"eval", "--checkpoint", adapter, "--threads", "2"});
  Result e_merged = magellan(tmp.path, {"eval", "--checkpoint", "merged.h5", "--threads", "2"});
  Result e_base = magellan(tmp.path, {"eval", "--checkpoint", "base_nf4.h5", "--threads", "2"});
  ASSERT_TRUE(parse_eval(e_adapter.out, l_adapter, acc)) << e_adapter.show();
  ASSERT_TRUE(parse_eval(e_merged.out, l_merged, acc)) << e_merged.show();
  ASSERT_TRUE(parse_eval(e_base.out, l_base, acc)) << e_base.show();
  EXPECT_NEAR(l_merged, l_adapter, 1e-3) << e_adapter.show() << e_merged.show();
  EXPECT_GT(std::fabs(l_adapter - l_base), 1e-3) << "the adapter did not change the model" << e_base.show();
}

// Expert streaming: export-experts, then generate and eval with --stream-experts give the
// resident model's tokens and loss exactly, and say what the cache did.
TEST(CliE2E, StreamedExpertsMatchTheResidentModel) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "base.yaml", tiny_yaml(10));
  Result base = magellan(tmp.path, {"train", "base.yaml", "run_dir=run", "--quiet"});
  ASSERT_EQ(base.rc, 0) << base.show();
  Result quant = magellan(tmp.path, {"quantize", "--checkpoint", "run", "-o", "nf4.h5", "--quiet"});
  ASSERT_EQ(quant.rc, 0) << quant.show();
  Result missing = magellan(tmp.path, {"generate", "--checkpoint", "nf4.h5", "--prompt-ids", "1 2", "--stream-experts"});
  EXPECT_NE(missing.rc, 0);
  EXPECT_NE(missing.err.find("magellan export-experts --checkpoint nf4.h5 -o nf4.experts"), std::string::npos)
      << missing.show();
  Result exp = magellan(tmp.path, {"export-experts", "--checkpoint", "nf4.h5", "--quiet"});
  ASSERT_EQ(exp.rc, 0) << exp.show();
  ASSERT_TRUE(fs::exists(tmp.path / "nf4.experts")) << exp.show();

  const std::vector<std::string> gen = {"generate", "--checkpoint", "nf4.h5", "--prompt-ids", "1 2 3 4", "-n", "24",
                                        "--temp", "0.9", "--seed", "3", "--threads", "2"};
  Result resident = magellan(tmp.path, gen);
  ASSERT_EQ(resident.rc, 0) << resident.show();
  auto streamed_gen = gen;
  for (const char* a : {"--stream-experts", "--expert-cache-mb", "0.005"}) streamed_gen.push_back(a);
  Result streamed = magellan(tmp.path, streamed_gen);
  ASSERT_EQ(streamed.rc, 0) << streamed.show();
  EXPECT_EQ(ints_in(streamed.out), ints_in(resident.out)) << resident.show() << streamed.show();
  EXPECT_EQ(ints_in(resident.out).size(), 24u) << resident.show();
  EXPECT_NE(streamed.err.find("cache hit rate"), std::string::npos) << streamed.show();
  EXPECT_NE(streamed.err.find("peak RSS"), std::string::npos) << streamed.show();

  double l_res = 0, l_str = 0, acc = 0;
  Result e_res = magellan(tmp.path, {"eval", "--checkpoint", "nf4.h5", "--threads", "2"});
  Result e_str = magellan(tmp.path, {"eval", "--checkpoint", "nf4.h5", "--threads", "2", "--stream-experts",
                                     "nf4.experts", "--expert-cache-mb", "0.005", "--no-prefetch"});
  ASSERT_TRUE(parse_eval(e_res.out, l_res, acc)) << e_res.show();
  ASSERT_TRUE(parse_eval(e_str.out, l_str, acc)) << e_str.show();
  EXPECT_EQ(l_res, l_str) << e_res.show() << e_str.show();

  Result flag = magellan(tmp.path, {"eval", "--checkpoint", "nf4.h5", "--expert-cache-mb", "8"});
  EXPECT_NE(flag.rc, 0);
  EXPECT_NE(flag.err.find("--expert-cache-mb needs --stream-experts"), std::string::npos) << flag.show();
}

// A pretrained Mamba from a Hugging Face directory (tests/fixtures/hf_mamba_tiny, written by
// HF's save_pretrained): imported, it greedily generates what HF's generate did (read from the
// oracle file by h5py), refuses eval without --data, and QLoRA fine-tunes from the YAML the
// import wrote beside the checkpoint.
TEST(CliE2E, ImportHfGeneratesLikeHfAndFineTunes) {
  REQUIRE_BINARY();
  TempDir tmp;
  const fs::path fixtures = mg::test_paths::repo_path("tests/fixtures");
  Result imp = magellan(tmp.path, {"import-hf", (fixtures / "hf_mamba_tiny").string(), "-o", "tiny.h5"});
  ASSERT_EQ(imp.rc, 0) << imp.show();
  ASSERT_TRUE(fs::exists(tmp.path / "tiny.yaml")) << imp.show();

  Result hf = run(tmp.path, {"/usr/bin/python3", "-c",
                             "import sys, h5py\nf = h5py.File(sys.argv[1], 'r')\n"
                             "print(' '.join(map(str, f['generate/prompt'][0])))\n"
                             "print(' '.join(map(str, f['generate/tokens'][0, f['generate/prompt'].shape[1]:])))",
                             (fixtures / "hf_mamba_oracle.h5").string()});
  ASSERT_EQ(hf.rc, 0) << hf.show();
  const std::string prompt = hf.out.substr(0, hf.out.find('\n'));
  const std::vector<int> expected = ints_in(hf.out.substr(hf.out.find('\n')));
  ASSERT_EQ(expected.size(), 9u) << hf.show();
  Result gen = magellan(tmp.path, {"generate", "--checkpoint", "tiny.h5", "--prompt-ids", prompt, "-n", "9", "--temp", "0"});
  ASSERT_EQ(gen.rc, 0) << gen.show();
  EXPECT_EQ(ints_in(gen.out), expected) << gen.show() << hf.show();

  Result eval = magellan(tmp.path, {"eval", "--checkpoint", "tiny.h5"});
  EXPECT_NE(eval.rc, 0);
  EXPECT_NE(eval.err.find("records no training data (an imported model): give --data"), std::string::npos) << eval.show();

  write_text(tmp.path / "ft.yaml",
             "extends: tiny.yaml\nexperiment: ft\nthreads: 2\nqlora:\n  enabled: true\n"
             "lora:\n  enabled: true\n  r: 4\n  alpha: 8\n  target_modules: [in_proj, out_proj]\n"
             "data:\n  source: synthetic\n  task: selective_copy\n  seq_len: 32\n  n_memorize: 4\n  n_tokens: 8\n"
             "training:\n  steps: 4\n  batch_size: 4\neval:\n  batches: 1\nlogging:\n  progress: never\n");
  Result ft = magellan(tmp.path, {"train", "ft.yaml", "run_dir=ft_run", "--quiet"});
  ASSERT_EQ(ft.rc, 0) << ft.show();
  const std::string log = read_text(tmp.path / "ft_run" / "train.log");  // the imported weights were the base
  EXPECT_NE(log.find("base weights: " + (tmp.path / "tiny.h5").string()), std::string::npos) << log;
  Result ft_gen = magellan(tmp.path, {"generate", "--run", "ft_run", "--prompt-ids", prompt, "-n", "5", "--temp", "0"});
  ASSERT_EQ(ft_gen.rc, 0) << ft_gen.show();
  EXPECT_EQ(ints_in(ft_gen.out).size(), 5u) << ft_gen.show();
}

// 4. A 2x2 sweep, two trials at a time; a second invocation skips all four untouched.
TEST(CliE2E, SweepRunsGridThenSkipsFinished) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "tiny.yaml", tiny_yaml(10));
  write_text(tmp.path / "sweep.yaml",
             "sweep: e2e_sweep\nbase: tiny.yaml\noverrides: [\"eval.every=5\"]\n"
             "grid:\n  optimizer.lr: [1.0e-3, 3.0e-3]\n  model.d_state: [4, 8]\nobjective: best_eval_loss\n");
  Result first = magellan(tmp.path, {"sweep", "sweep.yaml", "--jobs", "2"});
  ASSERT_EQ(first.rc, 0) << first.show();
  const fs::path dir = tmp.path / "runs" / "e2e_sweep";

  // summary.csv: header + 4 rows, all finished, sorted by best_eval_loss, matching each
  // trial's own summary.yaml; each trial trained the grid point its row names.
  const std::string csv = read_text(dir / "summary.csv");
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(csv);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::istringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  ASSERT_EQ(rows.size(), 5u) << csv << first.show();
  const std::vector<std::string> header = rows[0];
  auto col = [&](const std::string& name) {
    return static_cast<size_t>(std::find(header.begin(), header.end(), name) - header.begin());
  };
  for (const char* c : {"trial", "optimizer.lr", "model.d_state", "status", "final_train_loss", "best_eval_loss",
                        "best_eval_step", "final_eval_accuracy", "tokens_per_s", "wall_s"})
    ASSERT_LT(col(c), header.size()) << "no column " << c << " in\n" << csv;
  const std::map<std::string, std::pair<double, int>> grid = {
      {"trial_000", {1e-3, 4}}, {"trial_001", {1e-3, 8}}, {"trial_002", {3e-3, 4}}, {"trial_003", {3e-3, 8}}};
  const int threads = std::max(1, available_cores() / 2);
  double prev = -INFINITY;
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    ASSERT_GT(r.size(), col("wall_s")) << csv;
    const std::string trial = r[col("trial")];
    ASSERT_TRUE(grid.count(trial)) << trial << "\n" << csv;
    EXPECT_EQ(r[col("status")], "finished") << csv << first.show();
    const auto sum = read_key_values(dir / trial / "summary.yaml");
    const double best = std::stod(r[col("best_eval_loss")]);
    EXPECT_NEAR(best, num(sum.at("best_eval_loss")), 1e-5 * std::fabs(best)) << trial << "\n" << csv;
    EXPECT_GE(best, prev) << "rows not sorted by best_eval_loss:\n" << csv;
    prev = best;
    EXPECT_EQ(sum.at("final_step"), "10");
    const auto cfg = read_key_values(dir / trial / "config.yaml");
    EXPECT_DOUBLE_EQ(std::stod(cfg.at("lr")), grid.at(trial).first) << trial;
    EXPECT_EQ(std::stoi(cfg.at("d_state")), grid.at(trial).second) << trial;
    EXPECT_DOUBLE_EQ(std::stod(r[col("optimizer.lr")]), grid.at(trial).first) << csv;
    EXPECT_EQ(std::stoi(r[col("model.d_state")]), grid.at(trial).second) << csv;
    EXPECT_EQ(std::stoi(cfg.at("threads")), threads) << trial << ": threads = max(1, cores / jobs)";
    EXPECT_EQ(cfg.at("experiment"), "e2e_sweep_" + trial);
  }

  std::map<std::string, fs::file_time_type> mtimes;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "summary.csv") mtimes[e.path().string()] = e.last_write_time();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a rewrite would show in the mtimes

  Result again = magellan(tmp.path, {"sweep", "sweep.yaml", "--jobs", "2"});
  ASSERT_EQ(again.rc, 0) << again.show();
  for (const auto& trial : {"trial_000", "trial_001", "trial_002", "trial_003"})
    EXPECT_NE(again.out.find(std::string(trial) + " skipped"), std::string::npos) << again.show();
  EXPECT_NE(again.out.find("4 skipped"), std::string::npos) << again.show();
  for (const auto& [path, t] : mtimes) {
    ASSERT_TRUE(fs::exists(path)) << path << " disappeared" << again.show();
    EXPECT_EQ(fs::last_write_time(path), t) << path << " was rewritten by the second sweep" << again.show();
  }
  const std::string csv2 = read_text(dir / "summary.csv");
  EXPECT_EQ(std::count(csv2.begin(), csv2.end(), '\n'), 5) << csv2;
  EXPECT_EQ(csv2.substr(0, csv2.find('\n')), csv.substr(0, csv.find('\n')));

  // An interrupted trial (as if killed after its step-5 checkpoint) is resumed, not restarted.
  fs::remove(dir / "trial_002" / "summary.yaml");
  fs::remove(dir / "trial_002" / "checkpoints" / "step_00000010.h5");
  Result third = magellan(tmp.path, {"sweep", "sweep.yaml", "--jobs", "2"});
  ASSERT_EQ(third.rc, 0) << third.show();
  EXPECT_NE(third.out.find("3 skipped (finished), 1 to resume, 0 new"), std::string::npos) << third.show();
  const std::string log = read_text(dir / "trial_002.log");
  EXPECT_NE(log.find("train --resume"), std::string::npos) << log;
  EXPECT_EQ(read_key_values(dir / "trial_002" / "summary.yaml")["final_step"], "10") << log;
  EXPECT_NE(read_text(dir / "trial_002" / "train.log").find("resumed from runs/e2e_sweep/trial_002/checkpoints/step_00000005.h5"),
            std::string::npos) << read_text(dir / "trial_002" / "train.log");
}

// Ctrl-C: the sweep forwards SIGINT to the running trials (each checkpoints and stops),
// launches nothing more, and exits 130.
TEST(CliE2E, SweepCtrlCStopsTrialsWithCheckpoints) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "tiny.yaml", tiny_yaml(1000000));
  write_text(tmp.path / "sweep.yaml", "sweep: long\nbase: tiny.yaml\noverrides: [\"eval.every=0\"]\n"
                                      "grid:\n  optimizer.lr: [1.0e-3, 2.0e-3, 3.0e-3]\n");
  const fs::path dir = tmp.path / "runs" / "long";
  const pid_t pid = spawn({kBinary, "sweep", "sweep.yaml", "--jobs", "2"}, tmp.path, tmp.path / "sweep.out",
                          tmp.path / "sweep.err");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while ((step_checkpoints(dir / "trial_000" / "checkpoints").empty() ||
          step_checkpoints(dir / "trial_001" / "checkpoints").empty()) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGINT);
  int status = 0;
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (waitpid(pid, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (std::chrono::steady_clock::now() >= deadline) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "the sweep did not exit within 60 s of SIGINT\n" << read_text(tmp.path / "sweep.err");
  }
  const std::string said = read_text(tmp.path / "sweep.out") + read_text(tmp.path / "sweep.err");
  EXPECT_EQ(exit_code(status), 130) << said;
  for (const char* trial : {"trial_000", "trial_001"}) {
    const auto sum = read_key_values(dir / trial / "summary.yaml");
    EXPECT_EQ(sum.count("status") ? sum.at("status") : "", "stopped") << trial << "\n" << said;
    EXPECT_FALSE(step_checkpoints(dir / trial / "checkpoints").empty()) << trial;
  }
  EXPECT_FALSE(fs::exists(dir / "trial_002")) << "a trial was launched after Ctrl-C\n" << said;
  const std::string csv = read_text(dir / "summary.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4) << csv;
  EXPECT_NE(csv.find("trial_002,3.0e-3,missing"), std::string::npos) << csv;
}

// eval --data FILE on a text model: the whole file is the evaluation set (no val_fraction
// split of it), in --seq-len windows, all of them unless --batches.
TEST(CliE2E, EvalOnAWholeFile) {
  REQUIRE_BINARY();
  TempDir tmp;
  const std::string corpus = mg::test_paths::repo_path("assets/tinyshakespeare.txt");
  write_text(tmp.path / "bytes.yaml",
             "experiment: bytes\nseed: 7\nthreads: 2\n"
             "model:\n  d_model: 32\n  vocab_size: 257\n  layer_pattern: M\n  d_state: 8\n"
             "data:\n  source: text\n  path: " + corpus + "\n  tokenizer: byte\n  seq_len: 32\n"
             "training:\n  steps: 2\n  batch_size: 2\n  log_every: 1\n"
             "eval:\n  every: 0\n  batches: 1\ncheckpoint:\n  every: 0\nlogging:\n  progress: never\n");
  Result train = magellan(tmp.path, {"train", "bytes.yaml", "run_dir=run", "--quiet"});
  ASSERT_EQ(train.rc, 0) << train.show();
  const auto ckpts = step_checkpoints(tmp.path / "run" / "checkpoints");
  ASSERT_FALSE(ckpts.empty()) << train.show();
  const std::regex eval_line(R"(eval: ([0-9]+) tokens  loss ([0-9.naif]+)  perplexity)");
  std::smatch m;

  Result big = magellan(tmp.path, {"eval", "--checkpoint", ckpts.back().string(), "--data", corpus, "--seq-len",
                                   "64", "--batches", "2", "--batch-size", "4", "--threads", "2"});
  ASSERT_EQ(big.rc, 0) << big.show();
  ASSERT_TRUE(std::regex_search(big.out, m, eval_line)) << big.show();
  EXPECT_EQ(std::stoll(m[1]), 2 * 4 * 64) << big.show();
  EXPECT_TRUE(std::isfinite(std::stod(m[2]))) << big.show();

  // A small file, no --batches: every window of it (the byte tokenizer: one token a byte,
  // then the eos: bytes + 1 tokens, floor(bytes / 64) windows of 64 targets).
  std::string text;
  for (int i = 0; i < 40; ++i) text += "To be, or not to be, that is the question. ";
  write_text(tmp.path / "small.txt", text);
  Result all = magellan(tmp.path, {"eval", "--run", "run", "--data", "small.txt", "--seq-len", "64", "--threads", "2"});
  ASSERT_EQ(all.rc, 0) << all.show();
  ASSERT_TRUE(std::regex_search(all.out, m, eval_line)) << all.show();
  EXPECT_EQ(std::stoll(m[1]), static_cast<long long>(text.size()) / 64 * 64) << all.show();
  EXPECT_TRUE(std::isfinite(std::stod(m[2]))) << all.show();
}

// Resume refusals leave the run dir as it was: an override the checkpoint cannot take (new
// shapes) writes no config.yaml/overrides.txt, and a finished run is not "resumed" into a
// summary of zeros but refused with how to extend it.
TEST(CliE2E, RefusedResumesTouchNothing) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "tiny.yaml", tiny_yaml(10));
  const fs::path dir = tmp.path / "run";
  Result first = magellan(tmp.path, {"train", "tiny.yaml", "run_dir=run", "--quiet", "--stop-after", "5"});
  ASSERT_EQ(first.rc, 0) << first.show();
  const std::string config = read_text(dir / "config.yaml"), overrides = read_text(dir / "overrides.txt");

  Result wider = magellan(tmp.path, {"train", "--resume", "run", "model.d_model=64", "--quiet"});
  EXPECT_NE(wider.rc, 0) << wider.show();
  EXPECT_EQ(read_text(dir / "config.yaml"), config) << wider.show();
  EXPECT_EQ(read_text(dir / "overrides.txt"), overrides) << wider.show();

  Result resumed = magellan(tmp.path, {"train", "--resume", "run", "--quiet"});
  ASSERT_EQ(resumed.rc, 0) << wider.show() << resumed.show();
  EXPECT_EQ(read_key_values(dir / "summary.yaml")["status"], "finished") << resumed.show();
  const std::string summary = read_text(dir / "summary.yaml"), overrides2 = read_text(dir / "overrides.txt");

  Result again = magellan(tmp.path, {"train", "--resume", "run", "--quiet"});
  EXPECT_EQ(again.rc, 1) << again.show();
  EXPECT_NE(again.err.find("finished"), std::string::npos) << again.show();
  EXPECT_NE(again.err.find("training.steps=N"), std::string::npos) << again.show();
  EXPECT_EQ(read_text(dir / "summary.yaml"), summary) << again.show();
  EXPECT_EQ(read_text(dir / "overrides.txt"), overrides2) << again.show();
}

// Ctrl-C on train: a checkpoint, status stopped without made-up numbers, and exit 130.
TEST(CliE2E, TrainCtrlCExits130WithACheckpoint) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "tiny.yaml", tiny_yaml(1000000));
  const fs::path dir = tmp.path / "run";
  const pid_t pid = spawn({kBinary, "train", "tiny.yaml", "run_dir=run", "eval.every=0", "--quiet"}, tmp.path,
                          tmp.path / "train.out", tmp.path / "train.err");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (step_checkpoints(dir / "checkpoints").empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGINT);
  int status = 0;
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (waitpid(pid, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (std::chrono::steady_clock::now() >= deadline) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "train did not exit within 60 s of SIGINT\n" << read_text(tmp.path / "train.err");
  }
  const std::string said = read_text(tmp.path / "train.out") + read_text(tmp.path / "train.err");
  EXPECT_EQ(exit_code(status), 130) << said;
  EXPECT_NE(said.find("interrupted"), std::string::npos) << said;
  auto sum = read_key_values(dir / "summary.yaml");
  EXPECT_EQ(sum["status"], "stopped") << said;
  const auto ckpts = step_checkpoints(dir / "checkpoints");
  ASSERT_FALSE(ckpts.empty()) << said;
  EXPECT_NE(sum["last_checkpoint"].find(ckpts.back().filename().string()), std::string::npos) << said;
  EXPECT_EQ(sum["final_eval_loss"], ".nan") << said;
  EXPECT_EQ(sum["best_eval_loss"], ".nan") << said;
  EXPECT_NE(sum["final_train_loss"], "0") << said;
}

// A run that fails while starting (a data.path that does not exist) leaves no runs/<name>
// behind, and the error says where relative paths in a YAML file point.
TEST(CliE2E, FailedStartLeavesNoRunDir) {
  REQUIRE_BINARY();
  TempDir tmp;
  fs::create_directories(tmp.path / "cfg");
  write_text(tmp.path / "cfg" / "text.yaml",
             "experiment: textrun\nmodel:\n  d_model: 32\n  vocab_size: 257\n  layer_pattern: M\n"
             "data:\n  source: text\n  path: missing.txt\ntraining:\n  steps: 2\n  batch_size: 2\n");
  Result bad = magellan(tmp.path, {"train", "cfg/text.yaml", "--quiet"});
  EXPECT_NE(bad.rc, 0) << bad.show();
  EXPECT_NE(bad.err.find((tmp.path / "cfg" / "missing.txt").string()), std::string::npos) << bad.show();
  EXPECT_NE(bad.err.find("that file's folder"), std::string::npos) << bad.show();
  EXPECT_FALSE(fs::exists(tmp.path / "runs" / "textrun")) << bad.show();
  EXPECT_FALSE(fs::exists(tmp.path / "runs")) << bad.show();
}

// 5. Mistakes a user makes: each exits non-zero and names what was wrong and where.
TEST(CliE2E, ErrorsNameTheProblem) {
  REQUIRE_BINARY();
  TempDir tmp;
  write_text(tmp.path / "bad.yaml", "experiment: bad\nmodel:\n  d_model: 32\n  d_modle: 32\n");
  Result unknown = magellan(tmp.path, {"train", "bad.yaml"});
  EXPECT_NE(unknown.rc, 0) << unknown.show();
  EXPECT_NE(unknown.err.find("d_modle"), std::string::npos) << unknown.show();
  EXPECT_NE(unknown.err.find("bad.yaml:4"), std::string::npos) << unknown.show();

  Result missing = magellan(tmp.path, {"train", "no_such_config.yaml"});
  EXPECT_NE(missing.rc, 0) << missing.show();
  EXPECT_NE(missing.err.find("no_such_config.yaml"), std::string::npos) << missing.show();

  Result resume = magellan(tmp.path, {"train", "--resume", "/nonexistent"});
  EXPECT_NE(resume.rc, 0) << resume.show();
  EXPECT_NE(resume.err.find("/nonexistent"), std::string::npos) << resume.show();

  // Sweep files are strict too, and every trial's config is checked before any is launched.
  write_text(tmp.path / "tiny.yaml", tiny_yaml(10));
  write_text(tmp.path / "s1.yaml", "sweep: s1\nbase: tiny.yaml\ngird:\n  optimizer.lr: [1.0e-3]\n");
  Result s1 = magellan(tmp.path, {"sweep", "s1.yaml"});
  EXPECT_NE(s1.rc, 0) << s1.show();
  EXPECT_NE(s1.err.find("'gird'"), std::string::npos) << s1.show();
  EXPECT_NE(s1.err.find("s1.yaml:3"), std::string::npos) << s1.show();

  write_text(tmp.path / "s2.yaml", "sweep: s2\nbase: tiny.yaml\ngrid:\n  optimizer.lr: [1.0e-3]\n"
                                   "  optimizer.lrr: [1, 2]\n");
  Result s2 = magellan(tmp.path, {"sweep", "s2.yaml"});
  EXPECT_NE(s2.rc, 0) << s2.show();
  EXPECT_NE(s2.err.find("optimizer.lrr"), std::string::npos) << s2.show();
  EXPECT_NE(s2.err.find("s2.yaml:5"), std::string::npos) << s2.show();

  write_text(tmp.path / "s3.yaml", "sweep: s3\nbase: tiny.yaml\ngrid:\n  model.d_state: [8, -1]\n");
  Result s3 = magellan(tmp.path, {"sweep", "s3.yaml"});
  EXPECT_NE(s3.rc, 0) << s3.show();
  EXPECT_NE(s3.err.find("trial_001"), std::string::npos) << s3.show();
  EXPECT_NE(s3.err.find("d_state"), std::string::npos) << s3.show();
  EXPECT_FALSE(fs::exists(tmp.path / "runs" / "s3" / "trial_000")) << "a trial was launched before validation";
}
