#pragma once
// A slow, obviously-correct byte-level BPE encoder, written apart from data/*.cpp to check them
// (tests/data/test_tokenizer_reference.cpp) and to be the baseline in bench/bench_tokenizer.cpp.
//  - GPT-2's bytes_to_unicode transcribed from openai/gpt-2 src/encoder.py;
//  - the pre-tokenization regex walked by hand, alternative by alternative, with \p{L} / \p{N}
//    asked of PCRE2 one character at a time (no big pattern, no JIT);
//  - GPT-2's `bpe()`: repeatedly merge every occurrence of the lowest-ranked adjacent pair;
//  - added tokens found by trying every token at every position (leftmost, then longest).
// Only NFC is shared with the code under test (mg::nfc); test_tokenizer_nfc.cpp checks it
// against Python's unicodedata on its own.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <climits>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/nfc.h"

namespace ref {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("reference: cannot open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// openai/gpt-2 encoder.py, line for line.
inline const std::vector<std::string>& bytes_to_unicode() {
  static const std::vector<std::string> table = [] {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool in_bs = false;
      for (int x : bs) in_bs |= x == b;
      if (!in_bs) {
        bs.push_back(b);
        cs.push_back(256 + n);
        ++n;
      }
    }
    std::vector<std::string> t(256);
    for (size_t i = 0; i < bs.size(); ++i) append_utf8(t[size_t(bs[i])], uint32_t(cs[i]));
    return t;
  }();
  return table;
}

// One character of the text, or one byte that does not start a valid UTF-8 sequence (cp = -1).
struct Unit {
  size_t begin, end;
  int64_t cp;
};

inline std::vector<Unit> decode_units(std::string_view s) {
  std::vector<Unit> units;
  size_t i = 0;
  while (i < s.size()) {
    unsigned c0 = (unsigned char)s[i];
    auto cont = [&](size_t k) { return k < s.size() && ((unsigned char)s[k] >> 6) == 2; };
    int64_t cp = -1;
    size_t len = 1;
    if (c0 < 0x80) {
      cp = c0;
    } else if (c0 >= 0xC2 && c0 <= 0xDF && cont(i + 1)) {
      cp = ((c0 & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F);
      len = 2;
    } else if (c0 >= 0xE0 && c0 <= 0xEF && cont(i + 1) && cont(i + 2)) {
      int64_t v = ((c0 & 0x0F) << 12) | (((unsigned char)s[i + 1] & 0x3F) << 6) |
                  ((unsigned char)s[i + 2] & 0x3F);
      if (v >= 0x800 && !(v >= 0xD800 && v <= 0xDFFF)) cp = v, len = 3;
    } else if (c0 >= 0xF0 && c0 <= 0xF4 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      int64_t v = ((c0 & 0x07) << 18) | (((unsigned char)s[i + 1] & 0x3F) << 12) |
                  (((unsigned char)s[i + 2] & 0x3F) << 6) | ((unsigned char)s[i + 3] & 0x3F);
      if (v >= 0x10000 && v <= 0x10FFFF) cp = v, len = 4;
    }
    units.push_back({i, i + len, cp});
    i += len;
  }
  return units;
}

// Asks PCRE2 whether one character has a Unicode property, e.g. "\\p{L}"; memoized.
class PropertyTest {
 public:
  explicit PropertyTest(const char* property) {
    std::string pattern = std::string("^") + property + "$";
    int err;
    PCRE2_SIZE off;
    code_ = pcre2_compile((PCRE2_SPTR)pattern.c_str(), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &err, &off, nullptr);
    if (!code_) throw std::runtime_error("reference: bad property " + pattern);
    md_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~PropertyTest() {
    pcre2_match_data_free(md_);
    pcre2_code_free(code_);
  }
  bool operator()(int64_t cp) {
    auto it = memo_.find(cp);
    if (it != memo_.end()) return it->second;
    std::string ch;
    append_utf8(ch, uint32_t(cp));
    bool yes = pcre2_match(code_, (PCRE2_SPTR)ch.data(), ch.size(), 0, 0, md_, nullptr) >= 0;
    memo_[cp] = yes;
    return yes;
  }

 private:
  pcre2_code* code_;
  pcre2_match_data* md_;
  std::unordered_map<int64_t, bool> memo_;
};

// Unicode White_Space (PropList.txt), which is \s in Oniguruma and fancy-regex.
inline bool is_space(int64_t cp) {
  static const int64_t list[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,
                                 0xA0,   0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
                                 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028,
                                 0x2029, 0x202F, 0x205F, 0x3000};
  for (int64_t x : list)
    if (cp == x) return true;
  return false;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// tried alternative by alternative at each position, as a backtracking engine does. Runs of
// invalid bytes are pieces of their own (the choice data/pretokenize.h documents).
inline std::vector<std::string> pretokenize(std::string_view text) {
  static PropertyTest letter("\\p{L}"), number("\\p{N}");
  std::vector<Unit> u = decode_units(text);
  std::vector<std::string> out;
  auto emit = [&](size_t a, size_t b) {
    out.emplace_back(text.substr(u[a].begin, u[b - 1].end - u[a].begin));
  };
  size_t i = 0;
  while (i < u.size()) {
    if (u[i].cp < 0) {  // a run of invalid bytes
      size_t j = i;
      while (j < u.size() && u[j].cp < 0) ++j;
      emit(i, j);
      i = j;
      continue;
    }
    size_t end = i;  // the valid run [i, end)
    while (end < u.size() && u[end].cp >= 0) ++end;
    while (i < end) {
      auto cp = [&](size_t k) { return u[k].cp; };
      // 's|'t|'re|'ve|'m|'ll|'d
      bool took = false;
      if (cp(i) == '\'') {
        for (const char* suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
          size_t n = std::string_view(suffix).size(), k = 0;
          while (k < n && i + 1 + k < end && cp(i + 1 + k) == suffix[k]) ++k;
          if (k == n) {
            emit(i, i + 1 + n);
            i += 1 + n;
            took = true;
            break;
          }
        }
      }
      if (took) continue;
      // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
      auto is_letter = [&](int64_t c) { return letter(c); };
      auto is_number = [&](int64_t c) { return number(c); };
      auto is_other = [&](int64_t c) { return !is_space(c) && !letter(c) && !number(c); };
      for (int cls = 0; cls < 3 && !took; ++cls) {
        auto in = [&](int64_t c) {
          return cls == 0 ? is_letter(c) : cls == 1 ? is_number(c) : is_other(c);
        };
        size_t j = i;
        if (cp(j) == ' ' && j + 1 < end && in(cp(j + 1))) ++j;  // the optional space
        if (!in(cp(j))) continue;
        while (j < end && in(cp(j))) ++j;
        emit(i, j);
        i = j;
        took = true;
      }
      if (took) continue;
      // \s+(?!\S) then \s+: the whole run if nothing follows it, else all but its last
      // character (which then starts the next piece), else the single character.
      size_t j = i;
      while (j < end && is_space(cp(j))) ++j;
      if (j == i) throw std::logic_error("reference: a character no alternative matches");
      if (j < end && j - i >= 2) --j;
      emit(i, j);
      i = j;
    }
  }
  return out;
}

struct AddedToken {
  int id;
  std::string content;  // what it matches (NFC of the file's content when normalized under NFC)
  bool normalized;
};

class Bpe {
 public:
  static Bpe from_gpt2(const std::string& dir) {
    Bpe b;
    nlohmann::json enc = nlohmann::json::parse(read_file(dir + "/encoder.json"));
    for (auto it = enc.begin(); it != enc.end(); ++it) b.vocab_[it.key()] = it.value().get<int>();
    std::istringstream lines(read_file(dir + "/vocab.bpe"));
    std::string line;
    int rank = 0;
    std::getline(lines, line);  // "#version: 0.2"
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      size_t sp = line.find(' ');
      b.ranks_[{line.substr(0, sp), line.substr(sp + 1)}] = rank++;
    }
    b.added_.push_back({50256, "<|endoftext|>", false});
    return b;
  }

  static Bpe from_hf_json(const std::string& path) {
    Bpe b;
    nlohmann::json j = nlohmann::json::parse(read_file(path));
    for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it)
      b.vocab_[it.key()] = it.value().get<int>();
    int rank = 0;
    for (const auto& m : j["model"]["merges"]) {
      std::string a, c;
      if (m.is_string()) {
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ');
        a = s.substr(0, sp);
        c = s.substr(sp + 1);
      } else {
        a = m[0].get<std::string>();
        c = m[1].get<std::string>();
      }
      b.ranks_[{a, c}] = rank++;  // a repeated pair keeps its last rank, as HF does
    }
    for (const auto& t : j["added_tokens"]) {
      if (t.value("lstrip", false) || t.value("rstrip", false) || t.value("single_word", false))
        throw std::runtime_error("reference: lstrip/rstrip/single_word not modelled");
      bool special = t.value("special", false);
      b.added_.push_back({t["id"].get<int>(), t["content"].get<std::string>(),
                          t.value("normalized", !special)});
    }
    if (!j["model"].value("unk_token", nlohmann::json()).is_null())
      throw std::runtime_error("reference: unk_token not modelled");
    const auto& n = j["normalizer"];
    b.nfc_ = !n.is_null() && n["type"] == "NFC";
    if (b.nfc_)
      for (AddedToken& t : b.added_)
        if (t.normalized) t.content = mg::nfc(t.content);
    const auto& pre = j["pre_tokenizer"];
    b.add_prefix_space_ = pre.value("add_prefix_space", true);
    b.use_regex_ = pre.value("use_regex", true);
    return b;
  }

  // cache: remember each pre-token's ids (still obviously correct; the bench times it off).
  std::vector<int> encode(std::string_view text, bool cache = true) {
    std::vector<int> ids;
    split_added(std::string(text), false, [&](const std::string& piece) {
      std::string normalized = nfc_ ? mg::nfc(piece) : piece;
      split_added(normalized, true, [&](const std::string& p) { encode_piece(p, ids, cache); },
                  ids);
    }, ids);
    return ids;
  }

  // GPT-2's bpe(): merge every occurrence of the lowest-ranked pair, until none is ranked.
  std::vector<std::string> bpe(const std::string& bytes) const {
    std::vector<std::string> word;
    for (unsigned char c : bytes)  // a byte the vocab lacks is dropped (HF, unk_token null)
      if (vocab_.count(bytes_to_unicode()[c])) word.push_back(bytes_to_unicode()[c]);
    while (word.size() > 1) {
      int best = INT_MAX;
      std::pair<std::string, std::string> best_pair;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto it = ranks_.find({word[i], word[i + 1]});
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          best_pair = it->first;
        }
      }
      if (best == INT_MAX) break;
      std::vector<std::string> merged;
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == best_pair.first && word[i + 1] == best_pair.second) {
          merged.push_back(word[i] + word[i + 1]);
          i += 2;
        } else {
          merged.push_back(word[i]);
          i += 1;
        }
      }
      word = merged;
    }
    return word;
  }

 private:
  template <class F>
  void split_added(const std::string& text, bool normalized, F&& piece_fn,
                   std::vector<int>& ids) const {
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* best = nullptr;
      for (const AddedToken& t : added_) {
        if (t.normalized == normalized && text.compare(i, t.content.size(), t.content) == 0 &&
            (!best || t.content.size() > best->content.size()))
          best = &t;
      }
      if (!best) {
        ++i;
        continue;
      }
      if (i > start) piece_fn(text.substr(start, i - start));
      ids.push_back(best->id);
      i += best->content.size();
      start = i;
    }
    if (start < text.size()) piece_fn(text.substr(start));
  }

  void encode_piece(std::string piece, std::vector<int>& ids, bool cache) {
    if (add_prefix_space_ && piece[0] != ' ') piece = " " + piece;
    std::vector<std::string> words =
        use_regex_ ? pretokenize(piece) : std::vector<std::string>{piece};
    for (const std::string& w : words) {
      if (cache) {
        auto it = cache_.find(w);
        if (it != cache_.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      std::vector<int> word_ids;
      for (const std::string& token : bpe(w)) word_ids.push_back(vocab_.at(token));
      ids.insert(ids.end(), word_ids.begin(), word_ids.end());
      if (cache) cache_[w] = word_ids;
    }
  }

  std::map<std::string, int> vocab_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<AddedToken> added_;
  bool nfc_ = false, add_prefix_space_ = false, use_regex_ = true;
  std::map<std::string, std::vector<int>> cache_;
};

}  // namespace ref
