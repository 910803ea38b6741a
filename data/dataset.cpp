#include "data/dataset.h"

#include <fmt/format.h>

#include "autograd/error.h"
#include "data/jsonl_dataset.h"
#include "data/synthetic_tasks.h"
#include "data/text_dataset.h"
#include "data/tokenizer.h"

namespace mg {

TaskScore Dataset::task_accuracy(const Batch& batch,
                                 const std::vector<int32_t>& predictions) const {
  MG_CHECK(predictions.size() == batch.targets.size(),
           "[task_accuracy] {} predictions for a batch of {}x{} = {} positions; pass the (B,T) "
           "argmax ids of this batch", predictions.size(), batch.B, batch.T,
           batch.targets.size());
  TaskScore score;
  for (size_t i = 0; i < batch.targets.size(); ++i) {
    if (batch.targets[i] == -1) continue;
    ++score.counted;
    score.correct += (predictions[i] == batch.targets[i]);
  }
  return score;
}

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) {
  // Three rounds of SplitMix64 chained through the inputs: every input bit affects every
  // output bit, so (seed, a, b) and (seed, a, b+1) give unrelated generators.
  SplitMix64 g(seed);
  uint64_t s = g.next() ^ a;
  SplitMix64 h(s);
  s = h.next() ^ b;
  SplitMix64 k(s);
  return k.next();
}

std::vector<uint32_t> seeded_permutation(int64_t n, uint64_t seed) {
  MG_CHECK(n >= 0 && n <= int64_t{0xFFFFFFFF},
           "[seeded_permutation] n = {} is outside [0, 2^32); use fewer, longer windows", n);
  std::vector<uint32_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = static_cast<uint32_t>(i);
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {  // swap i with a uniform j in [0, i]
    auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

void check_state_header(const std::vector<uint64_t>& state, uint64_t tag, uint64_t version,
                        size_t size, const char* where) {
  MG_CHECK(state.size() == size && state[0] == tag && state[1] == version,
           "[{}::restore] the saved data state ({} values, tag {:#x}, version {}) is not a {} "
           "state (tag {:#x}, version {}, {} values); resume with the data settings the "
           "checkpoint was trained with", where, state.size(), state.empty() ? 0 : state[0],
           state.size() > 1 ? state[1] : 0, where, tag, version, size);
}

std::unique_ptr<Dataset> make_dataset(const DatasetOptions& opt, const Tokenizer* tokenizer) {
  if (opt.source == "synthetic") {
    SyntheticTaskKind task;
    if (opt.task == "selective_copy") {
      task = SyntheticTaskKind::SelectiveCopy;
    } else if (opt.task == "induction") {
      task = SyntheticTaskKind::Induction;
    } else {
      throw Error(fmt::format("[data.task] unknown synthetic task '{}'; use selective_copy or "
                              "induction", opt.task));
    }
    return std::make_unique<SyntheticTaskDataset>(task, opt);
  }
  MG_CHECK(opt.source == "text" || opt.source == "jsonl",
           "[data.source] unknown source '{}'; use synthetic, text or jsonl", opt.source);
  MG_CHECK(tokenizer != nullptr, "[data.source] source '{}' needs a tokenizer (data.tokenizer)",
           opt.source);
  if (opt.source == "text") return std::make_unique<TextDataset>(opt, *tokenizer);
  return std::make_unique<JsonlDataset>(opt, *tokenizer);
}

}  // namespace mg
