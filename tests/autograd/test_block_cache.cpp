// BlockCache: large tensor blocks reused inside a scope, unmapped outside; reused blocks are
// not mistaken for zero pages; the mapped total never exceeds (1 + kSlack) x the most bytes the
// same allocations hold live at once (counted by a plain replay of the sequence).
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "autograd/block_cache.h"
#include "autograd/tensor.h"

namespace mg {
namespace {

constexpr int64_t kMiB = 1 << 20;

int64_t floats(double mib) { return static_cast<int64_t>(mib * kMiB / 4); }

TEST(BlockCache, SizeClassesRoundUpByAtMostAnEighth) {
  size_t previous = 0;
  for (size_t n = 1; n < (size_t{64} << 20); n = n * 5 / 4 + 4093) {
    const size_t c = BlockCache::size_class(n);
    EXPECT_EQ(c % 4096, 0u) << n;
    EXPECT_GE(c, n);
    const size_t pages = (n + 4095) / 4096 * 4096;
    EXPECT_LE(c, std::max(pages + pages / 8, pages)) << n;
    EXPECT_GE(c, previous) << n;  // monotonic
    previous = c;
  }
  // One class serves every request within it.
  const size_t c = BlockCache::size_class(3 * kMiB);
  EXPECT_EQ(BlockCache::size_class(c), c);
  EXPECT_EQ(BlockCache::size_class(c - 4096 * 3), c);
}

// True while [p, p + one page) is mapped in this process (mincore fails with ENOMEM if not).
bool page_is_mapped(void* p) {
  unsigned char resident = 0;
  return mincore(p, 4096, &resident) == 0;
}

TEST(BlockCache, OutsideAScopeEveryBlockIsFreshWholePagesAndUnmapped) {
  const BlockCacheStats before = BlockCache::stats();
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({floats(2) + 1});  // 2 MiB + 4 bytes: one page more, not a class
    first = a.raw();
    EXPECT_EQ(a.impl()->storage->capacity, size_t{2 * kMiB + 4096});
    EXPECT_TRUE(page_is_mapped(first));
  }
  EXPECT_FALSE(page_is_mapped(first));
  Tensor b = Tensor::empty({floats(2)});
  EXPECT_TRUE(b.impl()->storage->zeroed);
  const BlockCacheStats after = BlockCache::stats();
  EXPECT_EQ(after.cached_bytes, 0u);
  EXPECT_EQ(after.hits, before.hits);
}

TEST(BlockCache, ABlockMappedOutsideAScopeIsReusedOnlyIfClassSized) {
  Tensor odd = Tensor::empty({floats(2) + 1});  // whole pages, not a class size
  Tensor even = Tensor::empty({floats(2)});     // 2 MiB: a class size
  void* odd_ptr = odd.raw();
  BlockCache::Scope scope;
  const size_t cached_before = BlockCache::stats().cached_bytes;
  odd = Tensor();
  EXPECT_FALSE(page_is_mapped(odd_ptr));
  even = Tensor();
  EXPECT_EQ(BlockCache::stats().cached_bytes, cached_before + 2 * kMiB);
}

TEST(BlockCache, PoisonFillsReusedBlocksAndZerosClearsThem) {
  BlockCache::Scope scope;
  BlockCache::PoisonReused poison;
  { Tensor a = Tensor::full({floats(2)}, 1.0); }
  Tensor b = Tensor::empty({floats(2)});
  ASSERT_FALSE(b.impl()->storage->zeroed);
  const float* p = b.data<float>();
  EXPECT_TRUE(std::isnan(p[0]) && std::isnan(p[b.numel() - 1]));
  b = Tensor();
  Tensor z = Tensor::zeros({floats(2)});
  EXPECT_EQ(std::count(z.data<float>(), z.data<float>() + z.numel(), 0.0f), z.numel());
}

TEST(BlockCache, ScopeReusesFreedBlocksAndZerosStillZero) {
  BlockCache::Scope scope;
  const BlockCacheStats before = BlockCache::stats();
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({floats(3)});
    first = a.raw();
    a.fill(7.0);
  }
  EXPECT_EQ(BlockCache::stats().cached_bytes, before.cached_bytes + BlockCache::size_class(3 * kMiB));
  // Same size class (a little smaller): the freed block comes back, with its old contents...
  Tensor b = Tensor::empty({floats(3) - 1000});
  EXPECT_EQ(b.raw(), first);
  EXPECT_FALSE(b.impl()->storage->zeroed);
  EXPECT_EQ(BlockCache::stats().hits, before.hits + 1);
  b.fill(9.0);
  b = Tensor();
  // ...so zeros() must clear a reused block itself.
  Tensor z = Tensor::zeros({floats(3)});
  EXPECT_EQ(z.raw(), first);
  const float* p = z.data<float>();
  EXPECT_EQ(std::count(p, p + z.numel(), 0.0f), z.numel());
}

TEST(BlockCache, ClosingTheLastScopeUnmapsTheCache) {
  {
    BlockCache::Scope outer;
    {
      BlockCache::Scope inner;
      Tensor a = Tensor::empty({floats(2)});
    }
    EXPECT_GT(BlockCache::stats().cached_bytes, 0u);  // the outer scope still keeps it
  }
  EXPECT_EQ(BlockCache::stats().cached_bytes, 0u);
}

TEST(BlockCache, MappedTotalStaysWithinTheBoundAndBlocksNeverAlias) {
  // A random sequence of allocations and frees, sizes over several classes, repeated like
  // training steps. Reference: the peak of the live class-rounded bytes, replayed plainly.
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> mib(1.0, 5.0);
  std::vector<double> sizes(40);
  for (double& s : sizes) s = mib(rng);
  BlockCache::Scope scope;
  const BlockCacheStats start = BlockCache::stats();
  BlockCache::reset_stats();
  std::map<int, Tensor> live;
  size_t live_bytes = 0, reference_peak = 0;
  int next_id = 0;
  auto check_and_free = [&](std::map<int, Tensor>::iterator it) {
    const float* p = it->second.data<float>();
    const int64_t intact = std::count(p, p + it->second.numel(), static_cast<float>(it->first));
    EXPECT_EQ(intact, it->second.numel()) << "block " << it->first << " was overwritten";
    live_bytes -= BlockCache::size_class(it->second.bytes());
    live.erase(it);
  };
  for (int step = 0; step < 6; ++step) {
    std::mt19937 step_rng(11 + step % 2);  // two alternating patterns
    for (int i = 0; i < 80; ++i) {
      if (live.empty() || step_rng() % 3 != 0) {
        Tensor t = Tensor::empty({floats(sizes[step_rng() % sizes.size()])});
        t.fill(next_id);
        live.emplace(next_id++, t);
        live_bytes += BlockCache::size_class(t.bytes());
        reference_peak = std::max(reference_peak, live_bytes);
      } else {
        auto it = live.begin();
        std::advance(it, step_rng() % live.size());
        check_and_free(it);
      }
      const BlockCacheStats now = BlockCache::stats();
      ASSERT_EQ(now.live_bytes - start.live_bytes, live_bytes);
      ASSERT_LE(double(now.live_bytes + now.cached_bytes),
                (1 + BlockCache::kSlack) * double(start.live_bytes + reference_peak));
    }
    while (!live.empty()) check_and_free(live.begin());
  }
  const BlockCacheStats end = BlockCache::stats();
  EXPECT_LE(double(end.peak_mapped_bytes), (1 + BlockCache::kSlack) * double(start.live_bytes + reference_peak));
  EXPECT_GT(end.unmapped_blocks, 0);      // the bound was enforced, not merely never reached
  EXPECT_GT(end.hits, 2 * end.misses);    // the repeated steps are mostly served from the cache
}

}  // namespace
}  // namespace mg
