#include "autograd/block_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <list>
#include <mutex>

#include "autograd/error.h"

namespace mg {

namespace {

constexpr size_t kPage = 4096;

struct CachedBlock {
  void* ptr;
  size_t capacity;
};

// All state behind one mutex: allocations of >= 1 MiB are rare enough (hundreds per step)
// that a linear scan of the cached blocks costs nothing next to one page fault.
struct State {
  std::mutex mu;
  int scopes = 0;
  std::list<CachedBlock> cached;  // in the order they were freed: front = least recent
  BlockCacheStats stats;
  size_t live_peak = 0;  // most live bytes since the outermost scope opened
};

State& state() {
  static State s;
  return s;
}

void note_acquired(State& s, size_t capacity) {
  s.stats.live_bytes += capacity;
  s.live_peak = std::max(s.live_peak, s.stats.live_bytes);
  s.stats.peak_mapped_bytes = std::max(s.stats.peak_mapped_bytes, s.stats.live_bytes + s.stats.cached_bytes);
}

void unmap(void* ptr, size_t capacity) { munmap(ptr, capacity); }

}  // namespace

size_t BlockCache::size_class(size_t bytes) {
  const size_t pages = (std::max<size_t>(bytes, 1) + kPage - 1) / kPage * kPage;
  const size_t octave = std::bit_floor(pages);
  const size_t step = std::max(kPage, octave / 8);
  return (pages + step - 1) / step * step;
}

MappedBlock BlockCache::acquire(size_t bytes) {
  const size_t capacity = size_class(bytes);
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mu);
  if (s.scopes > 0) {
    // The most recently freed block of this class: its pages are the likeliest still in cache.
    for (auto it = s.cached.rbegin(); it != s.cached.rend(); ++it) {
      if (it->capacity != capacity) continue;
      void* ptr = it->ptr;
      s.cached.erase(std::next(it).base());
      s.stats.cached_bytes -= capacity;
      ++s.stats.hits;
      note_acquired(s, capacity);
      return {ptr, capacity, false};
    }
    ++s.stats.misses;
    // Keep live + cached within the budget: unmap the least recently freed blocks until the
    // new block fits (or nothing is left, and live alone is at its peak).
    const size_t live_after = s.stats.live_bytes + capacity;
    const size_t budget = static_cast<size_t>(static_cast<double>(std::max(s.live_peak, live_after)) *
                                              (1.0 + kSlack));
    while (!s.cached.empty() && live_after + s.stats.cached_bytes > budget) {
      const CachedBlock old = s.cached.front();
      s.cached.pop_front();
      s.stats.cached_bytes -= old.capacity;
      ++s.stats.unmapped_blocks;
      unmap(old.ptr, old.capacity);
    }
  }
  lock.unlock();
  void* p = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  MG_CHECK(p != MAP_FAILED, "[tensor] out of memory mapping {} bytes; free memory or use a smaller model", bytes);
  lock.lock();
  note_acquired(s, capacity);
  return {p, capacity, true};
}

void BlockCache::release(void* ptr, size_t capacity) {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stats.live_bytes -= capacity;
    if (s.scopes > 0) {
      s.cached.push_back({ptr, capacity});
      s.stats.cached_bytes += capacity;
      return;
    }
  }
  unmap(ptr, capacity);
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

BlockCache::Scope::Scope() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.scopes++ == 0) s.live_peak = s.stats.live_bytes;
}

BlockCache::Scope::~Scope() {
  State& s = state();
  std::list<CachedBlock> drop;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (--s.scopes > 0) return;
    drop.swap(s.cached);
    s.stats.cached_bytes = 0;
  }
  for (const CachedBlock& b : drop) unmap(b.ptr, b.capacity);
}

}  // namespace mg
