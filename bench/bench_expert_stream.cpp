// Decoding with streamed MoE experts (issue 8, docs/inference.md): tokens/s, cache hit rate,
// bytes read and peak RSS with every expert resident, and streamed from an expert store with
// the page cache or O_DIRECT, at several cache budgets. Plain main, prints a table:
//   (from the repository root) build/bench_expert_stream [--config experiments/presets/production3B.yaml]
//       [--dir /tmp/magellan_bench_experts] [--prompt 4] [--tokens 16] [--caches 128,25%,50%]
//       [--threads 0]
// 1. prepare (once per --dir): the config's model with fresh NF4 weights (streaming QLoRA init,
//    every Linear NF4), saved as a checkpoint, and its experts exported to an expert store.
// 2. one child process per configuration (so that each peak RSS is its own): load, decode
//    `prompt` + `tokens` tokens greedily, print a RESULT line; the parent checks that every
//    configuration produced the resident run's tokens and prints the table.
// Cold reads: before each streamed run the store's pages are dropped from the page cache
// (posix_fadvise DONTNEED, after fdatasync), so the first read of each expert comes from disk
// in both modes; O_DIRECT runs bypass the page cache entirely.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/blas.h"
#include "autograd/tape.h"
#include "checkpoints/atomic_save.h"
#include "checkpoints/model_io.h"
#include "experiments/config_loader.h"
#include "inference/expert_store.h"
#include "inference/load_model.h"
#include "trainer/checkpoint_state.h"
#include "util/memory.h"

extern char** environ;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double mib(double b) { return b / (1 << 20); }

struct Args {
  std::string config = "experiments/presets/production3B.yaml";
  std::string dir = (fs::temp_directory_path() / "magellan_bench_experts").string();
  int prompt = 4, tokens = 16, threads = 0;
  std::string caches = "128,25%,50%";  // MiB, or a percentage of the experts' bytes
  // child mode
  std::string child;  // "resident" | "stream"
  double cache_mb = 0;
  bool direct = false, prefetch = true;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      MG_CHECK(i + 1 < argc, "[bench_expert_stream] {} needs a value", k);
      return argv[++i];
    };
    if (k == "--config") a.config = next();
    else if (k == "--dir") a.dir = next();
    else if (k == "--prompt") a.prompt = std::stoi(next());
    else if (k == "--tokens") a.tokens = std::stoi(next());
    else if (k == "--caches") a.caches = next();
    else if (k == "--threads") a.threads = std::stoi(next());
    else if (k == "--child") a.child = next();
    else if (k == "--cache-mb") a.cache_mb = std::stod(next());
    else if (k == "--direct") a.direct = true;
    else if (k == "--no-prefetch") a.prefetch = false;
    else throw mg::Error("[bench_expert_stream] unknown option " + k + "; see bench/bench_expert_stream.cpp");
  }
  return a;
}

std::string checkpoint_path(const Args& a) { return a.dir + "/model.h5"; }
std::string store_path(const Args& a) { return a.dir + "/model.experts"; }

void prepare(const Args& a) {
  if (fs::exists(checkpoint_path(a)) && fs::exists(store_path(a))) {
    std::printf("reusing %s and %s\n", checkpoint_path(a).c_str(), store_path(a).c_str());
    return;
  }
  fs::create_directories(a.dir);
  mg::ExperimentConfig cfg = mg::load_config(a.config, {}).config;
  auto t0 = Clock::now();
  mg::HybridLM model(cfg.model);
  model.init(cfg.seed, /*quantize_linears=*/true);  // every Linear NF4, one layer's floats at a time
  std::printf("init %.1f s (peak RSS %s)\n", since(t0), mg::format_bytes(static_cast<double>(mg::peak_rss_bytes())).c_str());
  t0 = Clock::now();
  mg::atomic_save(checkpoint_path(a), [&](mg::H5File& f) {
    mg::write_checkpoint_header(f, mg::TrainState{}, mg::to_yaml(cfg), "full", std::nullopt);
    mg::write_model(f, model, mg::ModelSaveMode::Full);
  });
  std::printf("checkpoint %s: %s in %.1f s\n", checkpoint_path(a).c_str(),
              mg::format_bytes(static_cast<double>(fs::file_size(checkpoint_path(a)))).c_str(), since(t0));
  const mg::ExportReport r = mg::export_expert_store(checkpoint_path(a), store_path(a), mg::ExpertPayload::NF4, true);
  std::printf("expert store %s: %lld experts, %s in %.1f s\n", store_path(a).c_str(), static_cast<long long>(r.experts),
              mg::format_bytes(static_cast<double>(r.bytes)).c_str(), r.seconds);
}

// Child: one configuration. Prints "RESULT key=value ..." and the generated ids.
int run_child(const Args& a) {
  mg::set_num_threads(a.threads);
  std::optional<mg::ExpertStreamRequest> req;
  if (a.child == "stream") {
    mg::ExpertStore(store_path(a), false).drop_page_cache();  // cold: first reads come from disk
    req.emplace();
    req->store = store_path(a);
    req->direct_io = a.direct;
    req->options.cache_bytes = static_cast<int64_t>(a.cache_mb * (1 << 20));
    req->options.prefetch = a.prefetch;
  }
  auto t0 = Clock::now();
  mg::LoadedModel lm = mg::load_model_from_checkpoint(checkpoint_path(a), {}, req);
  const double load_s = since(t0);
  // Resident bytes of the weights that are not streamed experts: float parameters, NF4
  // Linears, the NF4 embedding (with the absmax it keeps for lookups).
  int64_t weights = 0;
  lm.model->visit_parameters([&](const std::string&, mg::Tensor& p) {
    if (!p.is_meta()) weights += p.numel() * static_cast<int64_t>(mg::dtype_size(p.dtype()));
  });
  int64_t expert_weights = 0;
  const mg::Embedding& emb = lm.model->embedding;
  if (emb.is_quantized()) weights += mg::Embedding::nf4_resident_bytes(emb.num_embeddings, emb.embedding_dim);
  mg::visit_linears(*lm.model, [&](const std::string& name, mg::Linear& l) {
    if (!l.is_quantized()) return;
    (name.find(".experts.") != std::string::npos ? expert_weights : weights) += l.quantized()->bytes();
  });
  const int64_t rss_loaded = mg::current_rss_bytes();

  mg::NoGradGuard ng;
  mg::HybridLM::DecodeState state;
  std::vector<int32_t> ids;
  for (int i = 0; i < a.prompt; ++i) ids.push_back(static_cast<int32_t>((i * 7919 + 13) % lm.config.model.vocab_size));
  mg::Tensor logits;
  t0 = Clock::now();
  for (int i = 0; i < a.prompt + a.tokens; ++i) {
    if (i >= a.prompt) {  // greedy
      const float* p = logits.data<float>();
      ids.push_back(static_cast<int32_t>(std::max_element(p, p + logits.numel()) - p));
    }
    logits = lm.model->decode_step(mg::Tensor::from_ids({ids.back()}, {1}), state);
  }
  const double decode_s = since(t0);
  std::printf("RESULT tok_s=%.4f load_s=%.2f weights_mib=%.1f resident_expert_mib=%.1f rss_loaded_mib=%.1f "
              "peak_rss_mib=%.1f",
              (a.prompt + a.tokens) / decode_s, load_s, mib(weights), mib(expert_weights), mib(rss_loaded),
              mib(mg::peak_rss_bytes()));
  if (lm.experts) {
    const mg::ExpertStreamStats s = lm.experts->stats();
    std::printf(" hit=%.4f prefetch_hit=%.4f read_mib=%.1f read_mib_s=%.0f wait_s=%.2f cache_peak_mib=%.1f "
                "budget_mib=%.1f store_mib=%.1f",
                s.hit_rate(), s.requests ? static_cast<double>(s.prefetch_hits) / s.requests : 0.0, mib(s.bytes_read),
                s.read_s > 0 ? mib(s.bytes_read) / s.read_s : 0.0, s.wait_s, mib(s.peak_cache_bytes), mib(s.budget_bytes),
                mib(lm.experts->store().total_record_bytes()));
  }
  std::printf(" ids=");
  for (size_t i = a.prompt; i < ids.size(); ++i) std::printf("%s%d", i > static_cast<size_t>(a.prompt) ? "," : "", ids[i]);
  std::printf("\n");
  return 0;
}

// Runs this program with `extra` args as a child; returns its RESULT fields.
std::map<std::string, std::string> spawn_child(const Args& a, const std::vector<std::string>& extra) {
  std::vector<std::string> argv_s{"/proc/self/exe", "--config", a.config, "--dir", a.dir, "--prompt",
                                  std::to_string(a.prompt), "--tokens", std::to_string(a.tokens), "--threads",
                                  std::to_string(a.threads)};
  argv_s.insert(argv_s.end(), extra.begin(), extra.end());
  int pipefd[2];
  MG_CHECK(::pipe(pipefd) == 0, "pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid;
  MG_CHECK(posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ) == 0, "spawn failed");
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  MG_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "[bench_expert_stream] child failed:\n{}", out);
  std::map<std::string, std::string> kv;
  std::istringstream in(out.substr(out.find("RESULT ") + 7));
  for (std::string tok; in >> tok;)
    if (auto eq = tok.find('='); eq != std::string::npos) kv[tok.substr(0, eq)] = tok.substr(eq + 1);
  return kv;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    if (!a.child.empty()) return run_child(a);
    prepare(a);
    const double expert_mib = mib(static_cast<double>(mg::ExpertStore(store_path(a), false).total_record_bytes()));

    struct Config {
      std::string name;
      std::vector<std::string> args;
    };
    std::vector<Config> configs{{"resident (all experts in RAM)", {"--child", "resident"}}};
    std::stringstream cs(a.caches);
    for (std::string c; std::getline(cs, c, ',');) {
      const double mb = c.back() == '%' ? expert_mib * std::stod(c.substr(0, c.size() - 1)) / 100.0 : std::stod(c);
      const std::string label = fmt::format("{:.0f} MiB{}", mb, c.back() == '%' ? " (" + c + ")" : "");
      const std::string m = fmt::format("{:.3f}", mb);
      configs.push_back({"stream, page cache, " + label, {"--child", "stream", "--cache-mb", m}});
      configs.push_back({"stream, O_DIRECT, " + label, {"--child", "stream", "--cache-mb", m, "--direct"}});
      configs.push_back({"stream, O_DIRECT, no prefetch, " + label,
                         {"--child", "stream", "--cache-mb", m, "--direct", "--no-prefetch"}});
    }
    std::printf("\n%s: experts %.1f MiB in the store; decode %d prompt + %d generated tokens, batch 1, %d threads\n",
                a.config.c_str(), expert_mib, a.prompt, a.tokens, a.threads > 0 ? a.threads : mg::num_threads());
    std::printf("%-48s %8s %7s %8s %9s %9s %10s %9s %9s\n", "configuration", "tok/s", "x res.", "hit %", "read MiB",
                "MiB/s", "peak RSS", "target", "same ids");
    double resident_tok_s = 0;
    std::string resident_ids;
    for (const Config& c : configs) {
      auto r = spawn_child(a, c.args);
      const double tok_s = std::stod(r["tok_s"]);
      if (resident_ids.empty()) resident_tok_s = tok_s, resident_ids = r["ids"];
      const bool stream = r.count("hit") > 0;
      // Target (issue 8): peak RSS <= non-expert weights + cache budget + 15%.
      const double target = stream ? 1.15 * (std::stod(r["weights_mib"]) + std::stod(r["budget_mib"])) : 0.0;
      std::printf("%-48s %8.3f %7.2f %8s %9s %9s %8.0f M %7s %9s\n", c.name.c_str(), tok_s, tok_s / resident_tok_s,
                  stream ? fmt::format("{:.1f}", 100 * std::stod(r["hit"])).c_str() : "-",
                  stream ? r["read_mib"].c_str() : "-", stream ? r["read_mib_s"].c_str() : "-",
                  std::stod(r["peak_rss_mib"]), stream ? fmt::format("{:.0f} M", target).c_str() : "-",
                  r["ids"] == resident_ids ? "yes" : "NO");
      if (!stream)
        std::printf("  (resident: weights %.1f MiB of which experts %.1f MiB; loaded in %s s)\n",
                    std::stod(r["weights_mib"]) + std::stod(r["resident_expert_mib"]), std::stod(r["resident_expert_mib"]),
                    r["load_s"].c_str());
      else
        std::printf("  (non-expert weights %.1f MiB, cache peak %s of %s MiB, prefetch hits %.1f%%, model waited %s s)\n",
                    std::stod(r["weights_mib"]), r["cache_peak_mib"].c_str(), r["budget_mib"].c_str(),
                    100 * std::stod(r["prefetch_hit"]), r["wait_s"].c_str());
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_expert_stream: %s\n", e.what());
    return 1;
  }
}
