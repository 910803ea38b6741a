// CRC32C against the standard check value and the RFC 3720 (iSCSI) test vectors, for the
// hardware and the table-driven versions; chaining over pieces equals one pass. Plus a timing
// printed (not asserted) for the expert store's read path.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "util/crc32c.h"

namespace mg {
namespace {

using Fn = uint32_t (*)(const void*, size_t, uint32_t);

void check_vectors(Fn f) {
  const std::string check = "123456789";
  EXPECT_EQ(f(check.data(), check.size(), 0), 0xE3069283u);
  std::vector<uint8_t> v(32, 0x00);
  EXPECT_EQ(f(v.data(), v.size(), 0), 0x8A9136AAu);
  v.assign(32, 0xFF);
  EXPECT_EQ(f(v.data(), v.size(), 0), 0x62A8AB43u);
  std::iota(v.begin(), v.end(), uint8_t{0});  // 0x00..0x1F
  EXPECT_EQ(f(v.data(), v.size(), 0), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint8_t>(31 - i);  // 0x1F..0x00
  EXPECT_EQ(f(v.data(), v.size(), 0), 0x113FDB5Cu);
  EXPECT_EQ(f(nullptr, 0, 0), 0u);
}

TEST(Crc32c, StandardCheckValueAndRfc3720Vectors) {
  check_vectors(&crc32c);
  check_vectors(&crc32c_portable);
}

TEST(Crc32c, HardwareAndTableAgreeAtEveryAlignmentAndChainOverPieces) {
  std::mt19937 rng(5);
  std::vector<uint8_t> buf(40000);  // past 3 x 4096: the three-lane path
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t start = 0; start < 9; ++start)
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{63}, size_t{4090}, size_t{12288}, size_t{12295}, size_t{39990}}) {
      const uint32_t whole = crc32c_portable(buf.data() + start, n);
      ASSERT_EQ(crc32c(buf.data() + start, n), whole) << start << " " << n;
      for (size_t cut : {size_t{0}, n / 3, n / 2, n}) {
        EXPECT_EQ(crc32c(buf.data() + start + cut, n - cut, crc32c(buf.data() + start, cut)), whole);
        EXPECT_EQ(crc32c_portable(buf.data() + start + cut, n - cut, crc32c_portable(buf.data() + start, cut)), whole);
      }
    }
  // One flipped bit changes it.
  const uint32_t before = crc32c(buf.data(), buf.size());
  buf[31234] ^= 0x10;
  EXPECT_NE(crc32c(buf.data(), buf.size()), before);
}

TEST(Crc32c, Throughput) {  // informational: what checking a record costs
  std::vector<uint8_t> buf(size_t{64} << 20, 0x5A);
  auto gbps = [&](Fn f) {
    uint32_t c = f(buf.data(), buf.size(), 0);  // warm
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) c = f(buf.data(), buf.size(), c);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(c, 0x12345678u);  // keep it
    return 3.0 * static_cast<double>(buf.size()) / s / 1e9;
  };
  std::printf("crc32c: %.2f GB/s (%s), slicing-by-8: %.2f GB/s\n", gbps(&crc32c),
              crc32c_hardware() ? "SSE4.2 crc32" : "table", gbps(&crc32c_portable));
}

}  // namespace
}  // namespace mg
