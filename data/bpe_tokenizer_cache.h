#pragma once
// The pre-token -> ids cache of BpeTokenizer (internal to data/bpe_tokenizer.cpp).
//
// Open addressing over flat arrays: a lookup is one hash, one probe into a contiguous slot
// array and one memcmp, where std::unordered_map chases a node pointer per bucket entry (it was
// ~40% of warm encode time in a perf profile). Keys and ids live in two append-only arenas, so
// growing the slot array moves 24-byte slots, never strings. Bounded: once full it stops
// inserting (HF tokenizers' cache does the same). Sharded, one mutex per shard, so threads
// encoding at once rarely wait on each other.
#include <array>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string_view>
#include <vector>

namespace mg::detail {

// 64-bit hash of a short byte string: 8-byte words folded with multiply-xorshift (SplitMix64's
// finalizer), good enough spread for a power-of-two table.
inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * 0x94D049BB133111EBull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return h | 1;  // 0 marks an empty slot
}

class PreTokenCache {
 public:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = size_t(1) << 15;  // 512k pre-tokens in all
  static constexpr size_t kMaxKeyBytes = 64;                      // longer ones are not cached

  // Appends the cached ids of `key` to `out`; false when it is not cached.
  bool find(uint64_t hash, std::string_view key, std::vector<int32_t>& out) const {
    const Shard& shard = shard_of(hash);
    std::lock_guard<std::mutex> lock(shard.mutex);
    const Slot* slot = shard.find(hash, key);
    if (!slot) return false;
    const int32_t* ids = shard.ids.data() + slot->ids_offset;
    out.insert(out.end(), ids, ids + slot->n_ids);
    return true;
  }

  void insert(uint64_t hash, std::string_view key, const int32_t* ids, size_t n_ids) {
    if (key.size() > kMaxKeyBytes || n_ids > 0xFFFF) return;
    Shard& shard = shard_of(hash);
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.size >= kMaxEntriesPerShard || shard.find(hash, key)) return;
    if ((shard.size + 1) * 2 > shard.slots.size()) shard.grow();
    Slot slot{hash, uint32_t(shard.keys.size()), uint32_t(shard.ids.size()), uint16_t(key.size()),
              uint16_t(n_ids)};
    shard.keys.insert(shard.keys.end(), key.begin(), key.end());
    shard.ids.insert(shard.ids.end(), ids, ids + n_ids);
    shard.place(slot);
    ++shard.size;
  }

  void clear() {
    for (Shard& shard : shards_) {
      std::lock_guard<std::mutex> lock(shard.mutex);
      shard.slots.assign(0, Slot{});
      shard.keys.clear();
      shard.ids.clear();
      shard.size = 0;
    }
  }

  size_t size() const {
    size_t n = 0;
    for (const Shard& shard : shards_) {
      std::lock_guard<std::mutex> lock(shard.mutex);
      n += shard.size;
    }
    return n;
  }

 private:
  struct Slot {
    uint64_t hash = 0;  // 0: empty
    uint32_t key_offset = 0, ids_offset = 0;
    uint16_t key_len = 0, n_ids = 0;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::vector<Slot> slots;     // power-of-two size, at most half full
    std::vector<char> keys;      // key bytes, appended
    std::vector<int32_t> ids;    // id runs, appended
    size_t size = 0;

    const Slot* find(uint64_t hash, std::string_view key) const {
      if (slots.empty()) return nullptr;
      const size_t mask = slots.size() - 1;
      for (size_t i = size_t(hash) & mask;; i = (i + 1) & mask) {
        const Slot& s = slots[i];
        if (s.hash == 0) return nullptr;
        if (s.hash == hash && s.key_len == key.size() &&
            std::memcmp(keys.data() + s.key_offset, key.data(), key.size()) == 0)
          return &s;
      }
    }
    void place(const Slot& slot) {
      const size_t mask = slots.size() - 1;
      size_t i = size_t(slot.hash) & mask;
      while (slots[i].hash != 0) i = (i + 1) & mask;
      slots[i] = slot;
    }
    void grow() {
      std::vector<Slot> old = std::move(slots);
      slots.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
      for (const Slot& s : old)
        if (s.hash != 0) place(s);
    }
  };

  // The top bits pick the shard; the low bits index within it.
  Shard& shard_of(uint64_t hash) { return shards_[hash >> 60]; }
  const Shard& shard_of(uint64_t hash) const { return shards_[hash >> 60]; }

  std::array<Shard, kShards> shards_;
};

}  // namespace mg::detail
