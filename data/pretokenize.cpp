// GPT-2 pre-tokenization with PCRE2.
//
// \s is spelled out as the White_Space property: with PCRE2_UCP, \s would be \p{Z} + \h + \v,
// which also holds U+180E (Mongolian vowel separator, no longer White_Space since Unicode 6.3)
// and so would split differently from Oniguruma (HF tokenizers) and fancy-regex (tiktoken).
#include "data/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <memory>
#include <string>

#include "autograd/error.h"
#include "data/byte_unicode.h"

namespace mg {
namespace {

// White_Space (Unicode PropList.txt): 0009..000D, 0020, 0085, 00A0, 1680, 2000..200A, 2028,
// 2029, 202F, 205F, 3000.
#define MG_WS R"(\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})"
constexpr const char* kCompiledPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" MG_WS R"(\p{L}\p{N}]+|[)" MG_WS
    R"(]+(?![^)" MG_WS R"(])|[)" MG_WS R"(]+)";
#undef MG_WS

struct CompiledPattern {
  pcre2_code* code = nullptr;
  bool jit = false;

  CompiledPattern() {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kCompiledPattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw Error(fmt::format("[gpt2_pretokenize] PCRE2 rejected the GPT-2 pattern at offset {}: "
                              "{}; PCRE2 must be built with Unicode support",
                              offset, reinterpret_cast<const char*>(message)));
    }
    jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // falls back to the interpreter
  }
  ~CompiledPattern() { pcre2_code_free(code); }
};

const CompiledPattern& compiled_pattern() {
  static const CompiledPattern pattern;
  return pattern;
}

// One match-data block per thread: pcre2_match_data must not be shared between threads.
pcre2_match_data* thread_match_data(const pcre2_code* code) {
  struct Deleter {
    void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
  };
  thread_local std::unique_ptr<pcre2_match_data, Deleter> md(
      pcre2_match_data_create_from_pattern(code, nullptr));
  return md.get();
}

// ---- ASCII fast path ----
// On ASCII text the pattern is simple enough to follow by hand, about 10x faster than PCRE2.
// The hand-written matcher answers only when every character its answer depends on (the piece
// and the one after it) is ASCII; otherwise PCRE2 decides that one piece. The tests compare
// both paths against an independent reference on text mixing ASCII and Unicode.
enum AsciiClass : uint8_t { kLetter, kDigit, kSpace, kOther, kNonAscii, kEnd };

constexpr std::array<AsciiClass, 256> make_ascii_classes() {
  std::array<AsciiClass, 256> t{};
  for (int c = 0; c < 256; ++c) {
    if (c >= 0x80) t[size_t(c)] = kNonAscii;
    else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) t[size_t(c)] = kLetter;
    else if (c >= '0' && c <= '9') t[size_t(c)] = kDigit;
    else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) t[size_t(c)] = kSpace;  // White_Space
    else t[size_t(c)] = kOther;  // punctuation, symbols, and controls other than \t..\r
  }
  return t;
}
constexpr std::array<AsciiClass, 256> kAsciiClass = make_ascii_classes();

// Length of the piece starting at run[pos], or 0 when a non-ASCII character could change it.
size_t ascii_piece_length(std::string_view run, size_t pos) {
  const size_t n = run.size();
  auto cls = [&](size_t i) { return i < n ? kAsciiClass[static_cast<unsigned char>(run[i])] : kEnd; };
  auto run_end = [&](size_t i, AsciiClass c) {
    while (i < n && kAsciiClass[static_cast<unsigned char>(run[i])] == c) ++i;
    return i;
  };
  AsciiClass c = cls(pos);
  if (c == kNonAscii) return 0;
  if (run[pos] == '\'' && pos + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d
    char a = run[pos + 1], b = pos + 2 < n ? run[pos + 2] : '\0';
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  size_t start = pos;
  if (run[pos] == ' ') {  // the optional space of ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    AsciiClass next = cls(pos + 1);
    if (next == kNonAscii) return 0;
    if (next == kLetter || next == kDigit || next == kOther) {
      start = pos + 1;
      c = next;
    }
  }
  if (c == kLetter || c == kDigit || c == kOther) {
    size_t end = run_end(start, c);
    return cls(end) == kNonAscii ? 0 : end - pos;  // a non-ASCII letter/digit/symbol may go on
  }
  // \s+(?!\S) | \s+ : the whole run at the end, else all but its last character, else one.
  size_t end = run_end(pos, kSpace);
  if (end == n) return end - pos;
  if (cls(end) == kNonAscii) return 0;  // U+00A0, U+3000, ... would extend the run
  return end - pos >= 2 ? end - pos - 1 : 1;
}

// Splits one run of valid UTF-8 with the pattern.
void split_valid_run(std::string_view run, std::vector<std::string_view>& pieces) {
  const CompiledPattern& pattern = compiled_pattern();
  pcre2_match_data* md = thread_match_data(pattern.code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(run.data());
  size_t pos = 0;
  while (pos < run.size()) {
    if (size_t len = ascii_piece_length(run, pos); len > 0) {
      pieces.push_back(run.substr(pos, len));
      pos += len;
      continue;
    }
    int rc = pattern.jit
                 ? pcre2_jit_match(pattern.code, subject, run.size(), pos, 0, md, nullptr)
                 : PCRE2_ERROR_JIT_STACKLIMIT;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // no JIT, or its stack ran out: the interpreter
      rc = pcre2_match(pattern.code, subject, run.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       md, nullptr);
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
    if (rc < 0 || ovector[1] <= pos) {
      // Cannot happen for valid UTF-8 (the last two alternatives cover every character), but a
      // resource error must not lose text: keep the rest as one piece.
      pieces.push_back(run.substr(pos));
      return;
    }
    if (ovector[0] > pos) pieces.push_back(run.substr(pos, ovector[0] - pos));  // (never)
    pieces.push_back(run.substr(ovector[0], ovector[1] - ovector[0]));
    pos = ovector[1];
  }
}

}  // namespace

void gpt2_pretokenize(std::string_view text, std::vector<std::string_view>& pieces) {
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    // Fast scan over ASCII, then the general UTF-8 check.
    while (i < text.size()) {
      if (static_cast<unsigned char>(text[i]) < 0x80) { ++i; continue; }
      int len = utf8_sequence_length(text, i);
      if (len == 0) break;
      i += size_t(len);
    }
    if (i > start) split_valid_run(text.substr(start, i - start), pieces);
    start = i;
    while (i < text.size() && utf8_sequence_length(text, i) == 0) ++i;
    if (i > start) pieces.push_back(text.substr(start, i - start));
  }
}

bool is_unicode_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace mg
