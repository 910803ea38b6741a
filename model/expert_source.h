#pragma once
// Where an MoE layer's experts come from when they are not resident in the model: inference
// with expert streaming (inference/expert_stream.h) reads only the experts the router picks,
// from an expert store on disk, into a bounded cache. The model calls the source; it knows
// nothing of files or caches.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace mg {

class Expert;

// acquire and prefetch are called by one thread at a time (the one running the model).
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  // Experts `ids` of the MoE layer at model layer index `layer`, ready to run, in the order
  // asked. The source keeps each alive at least as long as its handle.
  virtual std::vector<std::shared_ptr<const Expert>> acquire(int layer, std::span<const int32_t> ids) = 0;
  // How many experts one acquire call may ask for (what the cache holds at once, >= top_k).
  virtual int max_acquire() const = 0;
  // A guess of what acquire will soon be asked for: start loading it in the background.
  virtual void prefetch(int layer, std::span<const int32_t> ids) = 0;
  // Whether the model should compute guesses for prefetch (it costs one router GEMV per
  // MoE layer and token).
  virtual bool wants_prefetch() const = 0;
};

}  // namespace mg
