#pragma once
// Expert streaming: an ExpertSource (model/expert_source.h) that reads MoE experts from an
// expert store (inference/expert_store.h) into a cache of bounded size, so a model whose
// experts do not fit in RAM still runs: only the k experts the router picks for a token are
// needed, and routing repeats enough for a cache to pay.
//
//   - reads: each expert is one contiguous record, read sequentially in 1 MiB aligned chunks
//     (optionally O_DIRECT) straight into its arrays, on a pool of I/O threads, so the k
//     experts of a layer load in parallel;
//   - cache: decoded experts, never more than the budget (experts in use or in flight are
//     never evicted; acquire waits for room instead). Eviction is Belady's rule on the layer
//     cycle: decoding visits the MoE layers in order, token after token, so the idle expert
//     whose layer comes up last (the layer just done, whose next use is a token away) goes
//     first, least recently used among equals. Plain LRU is the worst policy for that cyclic
//     pattern once the experts a token touches outnumber the cache: it evicts exactly what comes
//     back first (measured: 3.8% of requests found cached at a 25% budget, docs/inference.md). An evicted
//     expert's memory is reused by the read that replaces it (no allocation churn);
//   - prefetch: HybridLM::decode_step guesses the next MoE layer's experts early (its router on
//     the residual stream before the layers in between run); the guess is read in the
//     background while those layers compute, and simply skipped when the cache has no room.
// Counters (hits, misses, prefetch use, bytes and time read, waiting) are in stats().
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "inference/expert_store.h"
#include "model/expert_source.h"

namespace mg {

struct ExpertStreamOptions {
  int64_t cache_bytes = 0;  // budget for decoded experts; must hold at least top_k of them
  bool prefetch = true;
  int io_threads = 0;       // 0: top_k threads
};

struct ExpertStreamStats {
  int64_t requests = 0;       // experts acquired (one per MoE layer, token batch and routed expert)
  int64_t hits = 0;           // found in the cache
  int64_t prefetch_hits = 0;  // found because a prefetch guess had loaded it (or was loading it)
  int64_t misses = 0;         // read on demand
  int64_t prefetches = 0;     // reads started by a guess
  int64_t prefetch_unused = 0;  // guessed and read, evicted before any use
  int64_t evictions = 0;
  int64_t reads = 0, bytes_read = 0;
  double read_s = 0;          // time reading (pread + copy into the expert), summed over I/O threads
  double wait_s = 0;          // time the model waited in acquire
  int64_t cache_bytes = 0, peak_cache_bytes = 0, budget_bytes = 0;

  double hit_rate() const;    // (hits + prefetch_hits) / requests
  std::string summary() const;  // a few lines for the end of a run
};

class ExpertStream : public ExpertSource {
 public:
  // `cfg`: the model's config (checked against the store); the store stays shared.
  ExpertStream(std::shared_ptr<const ExpertStore> store, const ModelConfig& cfg, ExpertStreamOptions opts);
  ~ExpertStream() override;  // stops and joins the I/O threads
  ExpertStream(const ExpertStream&) = delete;
  ExpertStream& operator=(const ExpertStream&) = delete;

  std::vector<std::shared_ptr<const Expert>> acquire(int layer, std::span<const int32_t> ids) override;
  int max_acquire() const override { return capacity_; }
  void prefetch(int layer, std::span<const int32_t> ids) override;
  bool wants_prefetch() const override { return opts_.prefetch; }

  ExpertStreamStats stats() const;
  const ExpertStore& store() const { return *store_; }

 private:
  using Key = int64_t;  // layer * E + expert
  struct Entry {
    std::shared_ptr<Expert> expert;        // decoded when ready; before that, possibly an
                                           // evicted expert whose memory the read reuses
    bool ready = false;
    bool from_prefetch = false, used = false;
    int pins = 0;                          // acquire calls that are waiting for it
    std::list<Key>::iterator lru;          // valid when ready
    std::exception_ptr error;
  };

  Key key(int layer, int32_t e) const { return static_cast<Key>(layer) * store_->n_experts() + e; }
  // Makes room for one more expert, for MoE layer `layer`, evicting an idle one if needed (its
  // memory is handed back in *recycled for the new read). With `wait`, blocks until in-flight
  // reads make room; without, returns false when there is none now.
  bool reserve(std::unique_lock<std::mutex>& lock, bool wait, std::shared_ptr<Expert>* recycled, int layer);
  // How far (in layers, 1..n_layers) the next use of an entry of `entry_layer` is when `layer`
  // is being loaded: the eviction order.
  int64_t next_use_distance(int entry_layer, int layer) const;
  Entry& start_read(Key k, bool from_prefetch, bool urgent, std::shared_ptr<Expert> recycled);  // lock held
  void io_loop();

  std::shared_ptr<const ExpertStore> store_;
  ExpertMlp mlp_;
  ExpertStreamOptions opts_;
  int64_t expert_bytes_ = 0;  // decoded size of one expert
  int capacity_ = 0;          // experts the budget holds
  int n_layers_ = 0;          // model layers: the period of the decode order

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;  // an entry became ready (or failed)
  std::condition_variable work_cv_;   // a job was queued, or stop
  std::unordered_map<Key, Entry> entries_;
  std::list<Key> lru_;                // ready entries, most recent first
  std::deque<Key> jobs_;
  int64_t used_bytes_ = 0;            // ready + in-flight entries
  bool stop_ = false;
  ExpertStreamStats stats_;
  std::vector<std::thread> threads_;
};

}  // namespace mg
