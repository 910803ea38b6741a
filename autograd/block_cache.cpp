#include "autograd/block_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <list>
#include <mutex>

#include "autograd/error.h"

namespace mg {

namespace {

constexpr size_t kPage = 4096;

size_t whole_pages(size_t bytes) { return (std::max<size_t>(bytes, 1) + kPage - 1) / kPage * kPage; }

struct CachedBlock {
  void* ptr;
  size_t capacity;
};

// All state behind one mutex: allocations of >= 1 MiB are rare enough (hundreds per step)
// that a linear scan of the cached blocks costs nothing next to one page fault. The system
// calls (mmap, munmap: a TLB shootdown each) run outside it.
struct State {
  std::mutex mu;
  int scopes = 0;
  bool poison = false;
  std::list<CachedBlock> cached;  // in the order they were freed: front = least recent
  BlockCacheStats stats;
  size_t live_peak = 0;  // most live bytes since the outermost scope opened
};

State& state() {
  static State& s = *new State;  // never destroyed: tensors may be freed during static destruction
  return s;
}

void note_acquired(State& s, size_t capacity) {
  s.stats.live_bytes += capacity;
  s.live_peak = std::max(s.live_peak, s.stats.live_bytes);
  s.stats.peak_mapped_bytes = std::max(s.stats.peak_mapped_bytes, s.stats.live_bytes + s.stats.cached_bytes);
}

void unmap_all(const std::list<CachedBlock>& blocks) {
  for (const CachedBlock& b : blocks) munmap(b.ptr, b.capacity);
}

// Takes every cached block out of the cache (under the lock), for the caller to unmap.
std::list<CachedBlock> take_cache(State& s) {
  std::list<CachedBlock> all;
  all.swap(s.cached);
  s.stats.cached_bytes = 0;
  return all;
}

void* map_anonymous(size_t length) {
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void set_poison(bool on) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.poison = on;
}

}  // namespace

size_t BlockCache::size_class(size_t bytes) {
  const size_t pages = whole_pages(bytes);
  const size_t octave = std::bit_floor(pages);
  const size_t step = std::max(kPage, octave / 8);
  return (pages + step - 1) / step * step;
}

MappedBlock BlockCache::acquire(size_t bytes) {
  State& s = state();
  std::list<CachedBlock> evicted;  // unmapped once the lock is released
  size_t length = whole_pages(bytes);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.scopes > 0) {
      length = size_class(bytes);
      // The most recently freed block of this class: its pages are the likeliest in cache.
      for (auto it = s.cached.rbegin(); it != s.cached.rend(); ++it) {
        if (it->capacity != length) continue;
        void* ptr = it->ptr;
        s.cached.erase(std::next(it).base());
        s.stats.cached_bytes -= length;
        ++s.stats.hits;
        note_acquired(s, length);
        if (s.poison) std::memset(ptr, 0xFF, length);  // a test aid: the cost under the lock is moot
        return {ptr, length, false};
      }
      ++s.stats.misses;
      // Keep live + cached within the budget: evict the least recently freed blocks until the
      // new block fits (or nothing is left, and live alone is at its peak).
      const size_t live_after = s.stats.live_bytes + length;
      const size_t budget =
          static_cast<size_t>(static_cast<double>(std::max(s.live_peak, live_after)) * (1.0 + kSlack));
      while (!s.cached.empty() && live_after + s.stats.cached_bytes > budget) {
        s.stats.cached_bytes -= s.cached.front().capacity;
        ++s.stats.unmapped_blocks;
        evicted.splice(evicted.end(), s.cached, s.cached.begin());
      }
    }
    note_acquired(s, length);  // charged now, so misses on other threads count this block
  }
  unmap_all(evicted);
  void* p = map_anonymous(length);
  if (!p) {  // the cache may hold memory the OS can use: give it all back and try once more
    std::list<CachedBlock> all;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      all = take_cache(s);
    }
    unmap_all(all);
    p = map_anonymous(length);
  }
  if (!p) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stats.live_bytes -= length;
  }
  MG_CHECK(p, "[tensor] out of memory mapping {} bytes; free memory or use a smaller model", bytes);
  return {p, length, true};
}

void BlockCache::release(void* ptr, size_t capacity) {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stats.live_bytes -= capacity;
    // Blocks mapped outside a scope have whole-page lengths; only class-sized ones are reusable.
    if (s.scopes > 0 && capacity == size_class(capacity)) {
      s.cached.push_back({ptr, capacity});
      s.stats.cached_bytes += capacity;
      return;
    }
  }
  munmap(ptr, capacity);
}

BlockCacheStats BlockCache::stats() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.stats;
}

void BlockCache::reset_stats() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.stats.hits = s.stats.misses = s.stats.unmapped_blocks = 0;
  s.stats.peak_mapped_bytes = s.stats.live_bytes + s.stats.cached_bytes;
}

BlockCache::PoisonReused::PoisonReused() { set_poison(true); }
BlockCache::PoisonReused::~PoisonReused() { set_poison(false); }

BlockCache::Scope::Scope(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.scopes++ == 0) s.live_peak = s.stats.live_bytes;
}

BlockCache::Scope::~Scope() {
  if (!enabled_) return;
  State& s = state();
  std::list<CachedBlock> all;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (--s.scopes > 0) return;
    all = take_cache(s);
  }
  unmap_all(all);
}

}  // namespace mg
