// NFC = canonical decomposition, canonical ordering, canonical composition (UAX #15 §1.3 and
// the Unicode sample implementation, unicode.org/reports/tr15/Normalizer.java). Hangul
// syllables are decomposed and composed arithmetically (Unicode §3.12).
#include "data/nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "data/byte_unicode.h"

namespace mg {
namespace {

#include "data/nfc_tables.inc"

// Hangul constants, Unicode §3.12.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

int combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* table = kNfcCombiningClasses;
  const size_t n = std::size(kNfcCombiningClasses);
  // first range whose last code point is >= cp
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (table[mid][1] < cp) lo = mid + 1; else hi = mid;
  }
  return (lo < n && table[lo][0] <= cp) ? int(table[lo][2]) : 0;
}

const uint32_t* find_decomposition(char32_t cp) {
  const auto* begin = std::begin(kNfcDecompositions);
  const auto* end = std::end(kNfcDecompositions);
  const auto* it = std::lower_bound(begin, end, cp,
                                    [](const uint32_t (&e)[4], char32_t c) { return e[0] < c; });
  return (it != end && (*it)[0] == cp) ? *it : nullptr;
}

// Full canonical decomposition of cp appended to out (the table holds one level; recurse).
void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp < 0xC0) {  // the first canonical decomposition is U+00C0
    out.push_back(cp);
    return;
  }
  const uint32_t* d = find_decomposition(cp);
  if (!d) {
    out.push_back(cp);
    return;
  }
  decompose(d[1], out);
  if (d[2] != 0) decompose(d[2], out);
}

const std::unordered_map<uint64_t, char32_t>& composition_map() {
  static const std::unordered_map<uint64_t, char32_t> map = [] {
    std::unordered_map<uint64_t, char32_t> m;
    for (const auto& e : kNfcDecompositions)
      if (e[3]) m.emplace((uint64_t(e[1]) << 21) | e[2], e[0]);
    return m;
  }();
  return map;
}

// The primary composite of (first, second), or 0 when there is none.
char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount)
    return first + (second - kTBase);
  const auto& map = composition_map();
  auto it = map.find((uint64_t(first) << 21) | second);
  return it == map.end() ? 0 : it->second;
}

// NFC of one run of valid UTF-8, appended to out.
void normalize_valid_run(std::string_view run, std::string& out) {
  std::vector<char32_t> cps;  // the decomposed code points
  cps.reserve(run.size());
  for (size_t i = 0; i < run.size();) {
    int len = utf8_sequence_length(run, i);
    decompose(utf8_decode(run, i, len), cps);
    i += size_t(len);
  }
  // Canonical ordering: a stable sort of every run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j, [](char32_t a, char32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // Canonical composition (Normalizer.java `internalCompose`): a character joins the last
  // starter unless a character between them is a starter or has a class >= its own (blocked).
  if (!cps.empty()) {
    size_t starter_pos = 0, write = 1;
    int last_class = combining_class(cps[0]);
    if (last_class != 0) last_class = 256;  // text starting with a mark: nothing composes with it
    for (size_t read = 1; read < cps.size(); ++read) {
      char32_t ch = cps[read];
      int ch_class = combining_class(ch);
      char32_t composite = compose_pair(cps[starter_pos], ch);
      if (composite != 0 && (last_class < ch_class || last_class == 0)) {
        cps[starter_pos] = composite;
      } else {
        if (ch_class == 0) starter_pos = write;
        last_class = ch_class;
        cps[write++] = ch;
      }
    }
    cps.resize(write);
  }
  for (char32_t cp : cps) utf8_append(out, cp);
}

}  // namespace

bool nfc_trivially_stable(std::string_view text) {
  for (unsigned char c : text)
    if (c >= 0xCC) return false;
  return true;
}

std::string nfc(std::string_view text) {
  if (nfc_trivially_stable(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 16);
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size()) {  // a run of valid UTF-8
      int len = utf8_sequence_length(text, i);
      if (len == 0) break;
      i += size_t(len);
    }
    if (i > start) normalize_valid_run(text.substr(start, i - start), out);
    while (i < text.size() && utf8_sequence_length(text, i) == 0) out.push_back(text[i++]);
  }
  return out;
}

}  // namespace mg
