// GPT-2's byte <-> unicode map, built once, following openai/gpt-2 src/encoder.py:
//   bs = list(range(ord("!"), ord("~")+1)) + list(range(ord("¡"), ord("¬")+1))
//        + list(range(ord("®"), ord("ÿ")+1))
//   cs = bs[:]; n = 0
//   for b in range(2**8):
//       if b not in bs: bs.append(b); cs.append(2**8+n); n += 1
#include "data/byte_unicode.h"

#include <array>

namespace mg {
namespace {

struct ByteUnicodeMap {
  std::array<char32_t, 256> codepoint{};
  std::array<std::string, 256> utf8;
  std::array<int16_t, 512> byte_of{};  // all 256 code points lie below U+0200

  ByteUnicodeMap() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    byte_of.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      codepoint[b] = printable(b) ? char32_t(b) : char32_t(256 + n++);
      utf8_append(utf8[b], codepoint[b]);
      byte_of[codepoint[b]] = int16_t(b);
    }
  }
};

const ByteUnicodeMap& byte_unicode_map() {
  static const ByteUnicodeMap map;
  return map;
}

}  // namespace

char32_t byte_to_codepoint(uint8_t b) { return byte_unicode_map().codepoint[b]; }

int codepoint_to_byte(char32_t cp) {
  return cp < 512 ? byte_unicode_map().byte_of[cp] : -1;
}

std::string_view byte_to_utf8(uint8_t b) { return byte_unicode_map().utf8[b]; }

std::string bytes_to_byte_level(std::string_view bytes) {
  const ByteUnicodeMap& map = byte_unicode_map();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += map.utf8[b];
  return out;
}

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    int len = utf8_sequence_length(text, i);
    if (len == 0) return std::nullopt;
    int b = codepoint_to_byte(utf8_decode(text, i, len));
    if (b < 0) return std::nullopt;
    out.push_back(char(b));
    i += size_t(len);
  }
  return out;
}

int utf8_sequence_length(std::string_view s, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  auto cont = [&](size_t k) { return k < s.size() && (at(k) & 0xC0) == 0x80; };
  unsigned c = at(i);
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;  // stray continuation byte, or overlong 2-byte lead (C0, C1)
  if (c < 0xE0) return cont(i + 1) ? 2 : 0;
  if (c < 0xF0) {
    if (!cont(i + 1) || !cont(i + 2)) return 0;
    unsigned c1 = at(i + 1);
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // UTF-16 surrogate D800..DFFF
    return 3;
  }
  if (c < 0xF5) {
    if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    unsigned c1 = at(i + 1);
    if (c == 0xF0 && c1 < 0x90) return 0;   // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

char32_t utf8_decode(std::string_view s, size_t i, int len) {
  auto at = [&](size_t k) { return char32_t(static_cast<unsigned char>(s[k])); };
  switch (len) {
    case 1: return at(i);
    case 2: return ((at(i) & 0x1F) << 6) | (at(i + 1) & 0x3F);
    case 3: return ((at(i) & 0x0F) << 12) | ((at(i + 1) & 0x3F) << 6) | (at(i + 2) & 0x3F);
    default:
      return ((at(i) & 0x07) << 18) | ((at(i + 1) & 0x3F) << 12) | ((at(i + 2) & 0x3F) << 6) |
             (at(i + 3) & 0x3F);
  }
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    int len = utf8_sequence_length(s, i);
    if (len == 0) return false;
    i += size_t(len);
  }
  return true;
}

}  // namespace mg
