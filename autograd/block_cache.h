#pragma once
// Reuse of large tensor blocks across training steps.
//
// Tensors of at least Storage::kMmapThresholdBytes are anonymous mmaps (tensor.h). A training
// step allocates and frees the same activations and gradients every step. Mapping them afresh
// costs a page fault per 4 KiB page touched (two when a kernel reads a fresh page before writing
// it), and unmapping costs a TLB shootdown: an inter-processor interrupt to every other CPU the
// process runs on, which a VM turns into exits. On the 2-core dev machine that kernel work was
// 45% of the CPU samples of the 2-thread phase1 benchmark and the reason 2 threads barely beat
// 1 (docs/benchmarks.md, "Large blocks reused across steps").
//
// While a BlockCache::Scope is alive, freed blocks are kept, grouped by size class (8 classes
// per power of two), and the next allocation of the same class gets one back instead of a fresh
// mapping. Outside every scope, blocks are whole-page mappings, unmapped when freed, as before,
// so loading, quantizing or building a model layer by layer returns memory to the OS at once.
//
// Memory bound: on a miss, the least recently freed blocks are unmapped until the mapped total
// (live + cached) is at most (1 + kSlack) x the most bytes live at once since the outermost
// scope opened. Measured on phase1 (docs/benchmarks.md): a bound of exactly the live peak
// (kSlack = 0) still remapped 13% of the blocks every step and ran ~14% slower than 25%, which
// remapped ~3 of 228 per step, for 4-17% more peak RSS than no cache across the workloads
// measured. Workloads whose size classes peak at different times can keep remapping a few
// blocks per step within the bound. Sizes count in class-rounded bytes (at most 1/8 above the
// requested ones; only touched pages are resident).
#include <cstddef>
#include <cstdint>

namespace mg {

struct MappedBlock {
  void* ptr = nullptr;
  size_t capacity = 0;  // mapped bytes: size_class(requested) in a scope, else whole pages
  bool zeroed = false;  // a fresh mapping (all zero); a reused block holds old data
};

struct BlockCacheStats {
  int64_t hits = 0;              // allocations served from the cache
  int64_t misses = 0;            // fresh mappings while a scope was alive
  int64_t unmapped_blocks = 0;   // cached blocks unmapped to respect the bound
  size_t live_bytes = 0;         // mapped blocks in use by tensors
  size_t cached_bytes = 0;       // mapped blocks kept for reuse
  size_t peak_mapped_bytes = 0;  // max of live + cached since the last reset_stats()
};

class BlockCache {
 public:
  static constexpr double kSlack = 0.25;  // mapped total <= (1 + kSlack) x live peak in a scope

  // Mapped length for a request of `bytes`: whole pages, rounded up to one of 8 classes per
  // power of two (so a block serves any request within 12.5% below its size).
  static size_t size_class(size_t bytes);

  // A block of at least `bytes` (>= 1): cached if a scope is alive and one of its class is
  // free, else a fresh anonymous mapping. Throws mg::Error when the OS refuses.
  static MappedBlock acquire(size_t bytes);
  // Gives a block back: kept while a scope is alive, else unmapped.
  static void release(void* ptr, size_t capacity);

  static BlockCacheStats stats();
  static void reset_stats();  // zeroes the counters; peak restarts from the current total

  // Keeps freed blocks for reuse while alive (a Scope made with enabled = false does nothing,
  // for callers that reuse only when a setting says so); scopes nest (and may live on several
  // threads). The last one to close unmaps every cached block.
  class Scope {
   public:
    explicit Scope(bool enabled = true);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    bool enabled_;
  };

  // Test aid: while alive, every reused block is filled with 0xFF bytes (NaN as float) before
  // it is handed out, so code that reads an "empty" tensor before writing it cannot go unnoticed.
  class PoisonReused {
   public:
    PoisonReused();
    ~PoisonReused();
    PoisonReused(const PoisonReused&) = delete;
    PoisonReused& operator=(const PoisonReused&) = delete;
  };
};

}  // namespace mg
