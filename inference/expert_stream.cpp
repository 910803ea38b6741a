#include "inference/expert_stream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "util/memory.h"

namespace mg {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double mib(int64_t b) { return static_cast<double>(b) / (1 << 20); }
}  // namespace

double ExpertStreamStats::hit_rate() const {
  return requests ? static_cast<double>(hits + prefetch_hits) / static_cast<double>(requests) : 0.0;
}

std::string ExpertStreamStats::summary() const {
  auto pct = [&](int64_t n) { return requests ? 100.0 * static_cast<double>(n) / static_cast<double>(requests) : 0.0; };
  auto bytes = [](int64_t b) { return format_bytes(static_cast<double>(b)); };
  return fmt::format(
      "experts: {} requests, cache hit rate {:.1f}% ({:.1f}% cached, {:.1f}% prefetched), {:.1f}% read on demand\n"
      "reads: {} ({}, {:.0f} MiB/s per reading thread); prefetch {} issued, {} unused; model waited {:.2f} s\n"
      "cache: peak {} of a {} budget, {} evictions",
      requests, 100.0 * hit_rate(), pct(hits), pct(prefetch_hits), pct(misses), reads, bytes(bytes_read),
      read_s > 0 ? mib(bytes_read) / read_s : 0.0, prefetches, prefetch_unused, wait_s, bytes(peak_cache_bytes),
      bytes(budget_bytes), evictions);
}

ExpertStream::ExpertStream(std::shared_ptr<const ExpertStore> store, const ModelConfig& cfg, ExpertStreamOptions opts)
    : store_(std::move(store)), mlp_(cfg.expert_mlp), opts_(opts), n_layers_(cfg.n_layers()) {
  store_->check_matches(cfg);
  expert_bytes_ = store_->decoded_bytes();
  capacity_ = static_cast<int>(std::min<int64_t>(opts.cache_bytes / expert_bytes_, 1 << 20));
  MG_CHECK(capacity_ >= cfg.top_k,
           "[experts] an expert cache of {:.1f} MiB holds {} expert(s) of {:.2f} MiB; top_k = {} needs at least "
           "{:.1f} MiB (--expert-cache-mb {})",
           mib(opts.cache_bytes), capacity_, mib(expert_bytes_), cfg.top_k, mib(expert_bytes_ * cfg.top_k),
           static_cast<int64_t>(std::ceil(mib(expert_bytes_ * cfg.top_k))));
  stats_.budget_bytes = opts.cache_bytes;
  const int n_threads = opts.io_threads > 0 ? opts.io_threads : cfg.top_k;
  for (int i = 0; i < n_threads; ++i) threads_.emplace_back([this] { io_loop(); });
}

ExpertStream::~ExpertStream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int64_t ExpertStream::next_use_distance(int entry_layer, int layer) const {
  // Layers ahead of `layer` in decode order come sooner; `layer` itself (its other experts)
  // and the layers just done come last: their next use is in the next token.
  return (entry_layer - layer - 1 + n_layers_) % n_layers_ + 1;
}

bool ExpertStream::reserve(std::unique_lock<std::mutex>& lock, bool wait, std::shared_ptr<Expert>* recycled,
                           int layer) {
  for (;;) {
    if (used_bytes_ + expert_bytes_ <= opts_.cache_bytes) {
      used_bytes_ += expert_bytes_;
      stats_.peak_cache_bytes = std::max(stats_.peak_cache_bytes, used_bytes_);
      return true;
    }
    // Evict the idle entry (nobody holds or waits for it) whose next use is farthest away,
    // the least recently used among equals; the new read takes over its memory and its share
    // of the budget.
    auto victim = lru_.rend();
    int64_t victim_distance = -1;
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      const Entry& e = entries_.at(*it);
      if (e.pins > 0 || e.expert.use_count() > 1) continue;
      const int64_t d = next_use_distance(static_cast<int>(*it / store_->n_experts()), layer);
      if (d > victim_distance) victim = it, victim_distance = d;
    }
    if (victim != lru_.rend()) {
      Entry& e = entries_.at(*victim);
      if (e.from_prefetch && !e.used) ++stats_.prefetch_unused;
      ++stats_.evictions;
      *recycled = std::move(e.expert);
      const Key k = *victim;
      lru_.erase(std::next(victim).base());
      entries_.erase(k);
      return true;
    }
    if (!wait) return false;
    const bool in_flight = std::any_of(entries_.begin(), entries_.end(), [](const auto& kv) { return !kv.second.ready; });
    MG_CHECK(in_flight, "[experts] the expert cache ({:.1f} MiB) is full of experts in use: raise --expert-cache-mb",
             mib(opts_.cache_bytes));
    ready_cv_.wait(lock);  // an in-flight read will finish and become evictable
  }
}

ExpertStream::Entry& ExpertStream::start_read(Key k, bool from_prefetch, bool urgent,
                                              std::shared_ptr<Expert> recycled) {
  Entry& e = entries_[k];
  e.from_prefetch = from_prefetch;
  e.expert = std::move(recycled);
  if (urgent) jobs_.push_front(k);  // the model is waiting for it: ahead of guesses
  else jobs_.push_back(k);
  work_cv_.notify_one();
  return e;
}

std::vector<std::shared_ptr<const Expert>> ExpertStream::acquire(int layer, std::span<const int32_t> ids) {
  MG_CHECK(static_cast<int>(ids.size()) <= capacity_, "[experts] {} experts asked at once, the cache holds {}",
           ids.size(), capacity_);
  const auto t0 = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  // Pin what is cached first, so that making room for the missing ones cannot evict it.
  std::vector<Key> keys, missing;
  for (int32_t id : ids) {
    const Key k = key(layer, id);
    keys.push_back(k);
    ++stats_.requests;
    auto it = entries_.find(k);
    if (it == entries_.end()) {
      missing.push_back(k);
      continue;
    }
    Entry& e = it->second;
    ++(e.from_prefetch && !e.used ? stats_.prefetch_hits : stats_.hits);
    e.used = true;
    ++e.pins;
  }
  for (Key k : missing) {
    ++stats_.misses;
    std::shared_ptr<Expert> recycled;
    reserve(lock, /*wait=*/true, &recycled, layer);  // may wait; pinned entries stay
    Entry& e = start_read(k, /*from_prefetch=*/false, /*urgent=*/true, std::move(recycled));
    e.used = true;
    ++e.pins;
  }
  std::vector<std::shared_ptr<const Expert>> out;
  std::exception_ptr error;
  for (Key k : keys) {
    Entry& e = entries_.at(k);
    ready_cv_.wait(lock, [&] { return e.ready || e.error; });
    --e.pins;
    if (e.error) error = e.error;
    out.push_back(e.expert);
    if (e.ready) lru_.splice(lru_.begin(), lru_, e.lru);  // most recently used
  }
  for (Key k : keys)  // a failed read is forgotten, so a later call tries again
    if (auto it = entries_.find(k); it != entries_.end() && it->second.error && it->second.pins == 0) {
      used_bytes_ -= expert_bytes_;
      entries_.erase(it);
    }
  stats_.wait_s += seconds_since(t0);
  if (error) std::rethrow_exception(error);
  return out;
}

void ExpertStream::prefetch(int layer, std::span<const int32_t> ids) {
  std::vector<int32_t> unique(ids.begin(), ids.end());
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  if (static_cast<int>(unique.size()) > capacity_) unique.resize(static_cast<size_t>(capacity_));
  std::unique_lock<std::mutex> lock(mu_);
  // The guessed experts already cached are pinned while room is made for the others.
  std::vector<Key> pinned, missing;
  for (int32_t id : unique) {
    const Key k = key(layer, id);
    auto it = entries_.find(k);
    if (it == entries_.end()) missing.push_back(k);
    else ++it->second.pins, pinned.push_back(k);
  }
  for (Key k : missing) {
    std::shared_ptr<Expert> recycled;
    if (!reserve(lock, /*wait=*/false, &recycled, layer)) break;  // no room now: a guess is not worth waiting for
    start_read(k, /*from_prefetch=*/true, /*urgent=*/false, std::move(recycled));
    ++stats_.prefetches;
  }
  for (Key k : pinned) --entries_.at(k).pins;
}

void ExpertStream::io_loop() {
  // One chunk buffer per thread, aligned for O_DIRECT, reused for every read.
  const int64_t chunk_bytes = ExpertStore::kReadChunkBytes;
  std::unique_ptr<void, decltype(&std::free)> buf(std::aligned_alloc(kExpertStoreAlign, chunk_bytes), &std::free);
  MG_CHECK(buf, "[experts] cannot allocate a {:.1f} MiB read buffer", mib(chunk_bytes));
  const int64_t E = store_->n_experts();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    const Key k = jobs_.front();
    jobs_.pop_front();
    std::shared_ptr<Expert> expert = entries_.at(k).expert;  // a recycled expert, or null
    lock.unlock();
    std::exception_ptr error;
    int64_t bytes = 0;
    double read_s = 0;
    try {
      const ExpertStoreEntry& en = store_->entry(static_cast<int>(k / E), static_cast<int>(k % E));
      if (!expert) expert = store_->new_expert(mlp_);
      const auto t0 = Clock::now();
      bytes = store_->read_into(en, *expert, buf.get(), chunk_bytes);
      read_s = seconds_since(t0);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    Entry& e = entries_.at(k);
    ++stats_.reads;
    stats_.bytes_read += bytes;
    stats_.read_s += read_s;
    if (error && e.pins == 0) {  // a guess nobody waits for: forget it
      used_bytes_ -= expert_bytes_;
      entries_.erase(k);
    } else if (error) {
      e.error = error;
    } else {
      e.expert = std::move(expert);
      e.ready = true;
      lru_.push_front(k);
      e.lru = lru_.begin();
    }
    ready_cv_.notify_all();
  }
}

ExpertStreamStats ExpertStream::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ExpertStreamStats s = stats_;
  s.cache_bytes = used_bytes_;
  return s;
}

}  // namespace mg
