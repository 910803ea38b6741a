#include "util/crc32c.h"

#include <array>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace mg {

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

// kTables[0] is the byte-at-a-time table; kTables[k][b] is the CRC of byte b followed by k
// zero bytes, so that 8 bytes are folded with 8 independent look-ups (slicing-by-8).
constexpr std::array<std::array<uint32_t, 256>, 8> make_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c >> 1) ^ (kPoly & (0u - (c & 1u)));
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  return t;
}
constexpr auto kTables = make_tables();

}  // namespace

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);  // little-endian
    w ^= c;
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
  }
  for (; n > 0; --n) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return ~c;
}

#if defined(__SSE4_2__)
namespace {

// The crc32 instruction has a latency of 3 cycles and a throughput of 1: one dependent chain
// uses a third of it. Long inputs are cut into blocks of 3 x kLane bytes whose three lanes run
// as independent chains, then are combined: in the raw (un-inverted) register, processing
// bytes is linear, so reg(A|B|C) = Z(Z(reg(A)) ^ reg0(B)) ^ reg0(C), where reg0 starts at 0 and
// Z shifts a register over kLane zero bytes (a linear map of 32 bits, applied by 4 tables).
constexpr size_t kLane = 4096;

uint32_t hw_run(uint32_t c, const uint8_t* p, size_t n) {  // n a multiple of 8
  uint64_t r = c;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    r = _mm_crc32_u64(r, w);
  }
  return static_cast<uint32_t>(r);
}

struct ZeroShift {
  uint32_t t[4][256];
  ZeroShift() {
    uint32_t basis[32];
    for (int i = 0; i < 32; ++i) {
      uint64_t r = uint32_t{1} << i;
      for (size_t k = 0; k < kLane; k += 8) r = _mm_crc32_u64(r, 0);
      basis[i] = static_cast<uint32_t>(r);
    }
    for (int j = 0; j < 4; ++j)
      for (uint32_t v = 0; v < 256; ++v) {
        uint32_t x = 0;
        for (int b = 0; b < 8; ++b)
          if (v >> b & 1u) x ^= basis[8 * j + b];
        t[j][v] = x;
      }
  }
  uint32_t operator()(uint32_t r) const {
    return t[0][r & 0xFF] ^ t[1][(r >> 8) & 0xFF] ^ t[2][(r >> 16) & 0xFF] ^ t[3][r >> 24];
  }
};

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n) c = _mm_crc32_u8(c, *p++);
  if (n >= 3 * kLane) {
    static const ZeroShift shift;  // built once (thread-safe), ~16 K instructions
    for (; n >= 3 * kLane; n -= 3 * kLane, p += 3 * kLane) {
      uint64_t a = c, b = 0, d = 0;
      for (size_t k = 0; k < kLane; k += 8) {
        uint64_t wa, wb, wd;
        std::memcpy(&wa, p + k, 8);
        std::memcpy(&wb, p + kLane + k, 8);
        std::memcpy(&wd, p + 2 * kLane + k, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        d = _mm_crc32_u64(d, wd);
      }
      c = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(d);
    }
  }
  c = hw_run(c, p, n & ~size_t{7});
  p += n & ~size_t{7};
  for (n &= 7; n > 0; --n) c = _mm_crc32_u8(c, *p++);
  return ~c;
}
bool crc32c_hardware() { return true; }
#else
uint32_t crc32c(const void* data, size_t n, uint32_t crc) { return crc32c_portable(data, n, crc); }
bool crc32c_hardware() { return false; }
#endif

}  // namespace mg
