#pragma once
// Test-only tokenizers and temp dirs for the dataset tests. The tokenizers are written here,
// plainly, so these tests do not depend on data/'s real tokenizers (tested on their own).
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "data/tokenizer.h"

namespace mg::data_test {

// Bytes 0..255 are their own ids, eos = 256. `id_shift` moves the byte ids up (ids
// shift..shift+255, eos shift+256) to make a vocabulary wider than 16 bits.
class PlainByteTokenizer : public Tokenizer {
 public:
  explicit PlainByteTokenizer(int32_t id_shift = 0, std::string tag = "plain-byte")
      : shift_(id_shift), tag_(std::move(tag)) {}
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(shift_ + c);
    return ids;
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id != *eos_id()) s.push_back(static_cast<char>(id - shift_));
    return s;
  }
  int32_t vocab_size() const override { return shift_ + 257; }
  std::optional<int32_t> eos_id() const override { return shift_ + 256; }
  std::string kind() const override { return "byte"; }
  std::string fingerprint() const override { return fmt::format("{}-{}", tag_, shift_); }

 private:
  int32_t shift_;
  std::string tag_;
};

// Splits text into maximal runs of whitespace / of other bytes and maps each run to a hash
// id, so cutting a file inside a run changes the ids. Like GPT-2's \s+(?!\S), a whitespace
// run followed by a non-space byte is split into (all but its last byte) + (its last byte),
// while a run at the end of the text stays whole: a cut after "\n\n" changes the ids too.
// No eos.
class RunHashTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    auto emit = [&](std::string_view piece) {
      uint64_t h = 1469598103934665603ull;
      for (unsigned char c : piece) h = (h ^ c) * 1099511628211ull;
      ids.push_back(static_cast<int32_t>(h % 50000));
    };
    size_t i = 0;
    while (i < text.size()) {
      const bool space = is_space(text[i]);
      size_t j = i;
      while (j < text.size() && is_space(text[j]) == space) ++j;
      if (space && j < text.size() && j - i > 1) {
        emit(text.substr(i, j - i - 1));
        emit(text.substr(j - 1, 1));
      } else {
        emit(text.substr(i, j - i));
      }
      i = j;
    }
    return ids;
  }
  std::string decode(std::span<const int32_t>) const override { return {}; }
  int32_t vocab_size() const override { return 50000; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string kind() const override { return "runhash"; }
  std::string fingerprint() const override { return "runhash-1"; }

 private:
  static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
};

// A fresh empty directory, removed with its contents at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           fmt::format("mg_data_test_{}_{}", ::getpid(), counter++);
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_file(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace mg::data_test
