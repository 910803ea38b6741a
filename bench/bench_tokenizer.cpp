// Tokenizer throughput on TinyShakespeare (1.1 MB), one thread:
//   encode MB/s for GPT-2 and GPT-NeoX, cold (empty pre-token cache) and warm (cache filled),
//   decode MB/s, pre-tokenization alone, BPE training time for a 10000-token vocab, and the
//   same-run baseline: the slow reference encoder of tests/data (GPT-2's bpe() on strings).
// Every timed encoder is first checked id-for-id against the reference.
//   ./build/bench_tokenizer [path/to/data]   (default: <repo>/assets, shipped with the repository)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <string>

#include "data/bpe_tokenizer.h"
#include "data/bpe_trainer.h"
#include "data/pretokenize.h"
#include "tests/data/test_tokenizer_reference_bpe.h"

namespace {

// Both clocks: the thread's CPU time gives MB/s per core even on a busy shared machine (where
// wall time also counts the time other processes held the core); wall time is what a user sees.
struct Timing {
  double cpu = 0, wall = 0;
};

double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

Timing time_of(const std::function<void()>& fn) {
  double c0 = thread_cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return {thread_cpu_seconds() - c0,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

// Best of `repeats` runs (the machine is shared; the minimum is the least disturbed).
Timing best_of(int repeats, const std::function<void()>& fn) {
  Timing best{1e30, 1e30};
  for (int i = 0; i < repeats; ++i) {
    Timing t = time_of(fn);
    best = {std::min(best.cpu, t.cpu), std::min(best.wall, t.wall)};
  }
  return best;
}

void row(const char* what, double bytes, Timing t, const std::string& note = "") {
  std::printf("  %-30s %8.2f MB/s/core %8.2f MB/s wall %8.1f ms cpu  %s\n", what,
              bytes / t.cpu / 1e6, bytes / t.wall / 1e6, t.cpu * 1e3, note.c_str());
}

bool check(const char* what, const std::vector<int32_t>& got, const std::vector<int>& want) {
  bool same = got.size() == want.size() && std::equal(got.begin(), got.end(), want.begin());
  if (!same) std::printf("  !! %s differs from the reference: figures below are invalid\n", what);
  return same;
}

void bench_encoder(const char* name, const mg::BpeTokenizer& tok, ref::Bpe& reference,
                   const std::string& text) {
  std::printf("%s (%zu bytes)\n", name, text.size());
  // Baseline: the reference without its cache (every pre-token merged from scratch) on a
  // 128 KB slice, and with its cache on everything.
  std::string slice = text.substr(0, 128 * 1024);
  std::vector<int> ref_slice;
  Timing ref_nocache = time_of([&] { ref_slice = reference.encode(slice, false); });
  std::vector<int> ref_ids;
  Timing ref_cached = time_of([&] { ref_ids = reference.encode(text, true); });

  std::vector<int32_t> ids;
  tok.clear_cache();
  Timing cold = time_of([&] { ids = tok.encode(text); });
  const size_t cached = tok.cache_entries();
  check("encode (cold)", ids, ref_ids);
  Timing warm = best_of(5, [&] { ids = tok.encode(text); });
  check("encode (warm)", ids, ref_ids);
  tok.clear_cache();
  std::vector<int32_t> slice_ids;
  Timing cold_slice = time_of([&] { slice_ids = tok.encode(slice); });
  check("encode (slice)", slice_ids, ref_slice);
  std::string decoded;
  Timing decode = best_of(5, [&] { decoded = tok.decode(ids); });
  if (decoded != text) std::printf("  !! decode(encode(text)) != text\n");

  row("encode, cold cache", double(text.size()), cold,
      std::to_string(ids.size()) + " ids, " + std::to_string(cached) + " cached pre-tokens");
  row("encode, warm cache", double(text.size()), warm);
  row("encode 128 KB, cold cache", double(slice.size()), cold_slice);
  row("decode (MB of text out)", double(text.size()), decode);
  row("reference, no cache, 128 KB", double(slice.size()), ref_nocache,
      "baseline: x" + std::to_string(int(ref_nocache.cpu / cold_slice.cpu)) +
          " the cold encoder's time");
  row("reference, with cache", double(text.size()), ref_cached,
      "x" + std::to_string(int(ref_cached.cpu / cold.cpu)) + " the cold encoder's time");
}

}  // namespace

// The data folder (tinyshakespeare.txt, gpt2/, gpt-neox-20b/): the argument, $MAGELLAN_DATA, or
// the repository's assets/ found from the executable's place (<repo>/<build dir>/bench_tokenizer)
// or the working directory (the repository root or a folder in it).
std::string find_data_dir(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  if (argc > 1) return argv[1];
  if (const char* env = std::getenv("MAGELLAN_DATA"); env != nullptr && *env != '\0')
    candidates.emplace_back(env);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path() / "../assets");
  candidates.emplace_back("assets");
  candidates.emplace_back("../assets");
  std::string tried;
  for (const fs::path& dir : candidates) {
    if (fs::is_regular_file(dir / "tinyshakespeare.txt")) return dir.lexically_normal().string();
    tried += (tried.empty() ? "" : ", ") + dir.lexically_normal().string();
  }
  throw std::runtime_error("cannot find tinyshakespeare.txt (looked in " + tried +
                           "); pass the data folder (the repository's assets/) as the first "
                           "argument or set MAGELLAN_DATA");
}

int main(int argc, char** argv) {
  try {
    const std::string data = find_data_dir(argc, argv);
    const std::string text = ref::read_file(data + "/tinyshakespeare.txt");
    std::printf("bench_tokenizer: 1 thread, TinyShakespeare %.2f MB\n", text.size() / 1e6);

    std::vector<std::string_view> pieces;
    Timing pre = best_of(5, [&] {
      pieces.clear();
      mg::gpt2_pretokenize(text, pieces);
    });
    std::printf("pre-tokenization (GPT-2 regex, PCRE2 JIT)\n");
    row("gpt2_pretokenize", double(text.size()), pre, std::to_string(pieces.size()) + " pieces");

    auto gpt2 = mg::BpeTokenizer::load_gpt2(data + "/gpt2/encoder.json", data + "/gpt2/vocab.bpe");
    ref::Bpe ref_gpt2 = ref::Bpe::from_gpt2(data + "/gpt2");
    bench_encoder("GPT-2", *gpt2, ref_gpt2, text);

    auto neox = mg::BpeTokenizer::load_hf_json(data + "/gpt-neox-20b/tokenizer.json");
    ref::Bpe ref_neox = ref::Bpe::from_hf_json(data + "/gpt-neox-20b/tokenizer.json");
    bench_encoder("GPT-NeoX-20B (NFC, 29 added tokens)", *neox, ref_neox, text);

    std::printf("BPE training, vocab 10000 (incl. <|endoftext|> and 256 bytes)\n");
    mg::BpeTrainOptions options;
    options.vocab_size = 10000;
    options.show_progress = false;
    mg::BpeTrainStats stats;
    std::unique_ptr<mg::BpeTokenizer> trained;
    std::vector<std::string_view> texts = {text};
    Timing train = time_of([&] { trained = mg::train_bpe(texts, options, &stats); });
    std::vector<int32_t> ids = trained->encode(text);
    std::printf("  train_bpe: %.2f s cpu, %.2f s wall (%zu merges, %lld pre-tokens, %lld unique; "
                "%.0f merges/s cpu)\n",
                train.cpu, train.wall, trained->merges().size(), (long long)stats.pretokens,
                (long long)stats.unique_pretokens, double(trained->merges().size()) / train.cpu);
    std::printf("  trained tokenizer: %zu ids for %zu bytes (%.2f bytes/id); GPT-2: %.2f "
                "bytes/id\n",
                ids.size(), text.size(), double(text.size()) / double(ids.size()),
                double(text.size()) / double(gpt2->encode(text).size()));
    if (trained->decode(ids) != text) std::printf("  !! trained tokenizer does not round-trip\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
