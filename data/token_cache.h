#pragma once
// Token cache: text files tokenized once into one flat file of token ids, memory-mapped for
// reading, so a run starts in milliseconds on data that took minutes to tokenize.
//
// Inputs: files and/or directories. A directory contributes every regular file under it,
// recursively, skipping names that start with '.'. The whole list is made absolute, sorted and
// de-duplicated, so its order (and the token stream) does not depend on how it was written.
// Each file is one document: its tokens are followed by the tokenizer's eos id when it has one.
//
// Key: a 64-bit hash of (cache format version, tokenizer fingerprint, and for every file its
// absolute path, size and modification time). The cache lives at
// <cache_dir>/<key as 16 hex digits>.tok, beside a human-readable <key>.json manifest (never
// read back). Editing, touching, adding or removing an input, or changing the tokenizer,
// gives a new key and so a new cache; older caches are left in place (delete the dir freely).
//
// File layout (little-endian), 64-byte header then the ids:
//   0  char[8]  magic "MGTOKC\0\0"
//   8  u32      format version (kTokenCacheVersion)
//  12  u32      bytes per token: 2 (uint16, when vocab_size <= 65536) or 4 (uint32)
//  16  u64      token count
//  24  u64      key (must equal the key computed from the inputs)
//  32  u64      checksum of the token bytes (fnv-style mix over 8-byte words, see .cpp)
//  40  u32      vocab_size of the tokenizer
//  44  u32      number of input files
//  48  u8[16]   zero
//  64  ids      count * bytes-per-token
// Opening checks magic, version, key, bytes-per-token, size == 64 + count * bytes, the
// checksum and that every id is < vocab_size; any failure logs a warning naming the file and
// rebuilds it. Builds write <file>.tmp.<pid>, fsync it and rename it into place, so a crash
// (or two runs building the same cache at once) never leaves a half-written cache behind.
//
// Tokenizing large files: a file is read and encoded in pieces of ~4 MiB (less for small
// corpora, down to 64 KiB, so every thread gets some), each cut just after a
// '\n' that sits between two printable non-space ASCII bytes ("a\nB" is cut as "a\n" | "B").
// GPT-2-style pre-tokenizers (the byte, GPT-2 and tokenizer.json ones here) split there the
// same way whether or not the text goes on: their pattern \s+(?!\S) splits a whitespace run
// followed by a word into (all but its last char) + (its last char), and keeps a run at the
// end of the text whole, which only agree for a run of one char: so a lone '\n' with
// non-space on both sides (a cut after "\n\n" would give one pre-token instead of two). So the ids equal those of encoding the whole file
// at once (a test checks it with GPT-2 and
// GPT-NeoX). Pieces are independent, so they are encoded in parallel (OpenMP, two pieces per
// thread in flight) and written in order: Tokenizer::encode() must be safe to call from
// several threads at once, as every tokenizer in data/ is (it is const and caches are locked).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mg {

class Tokenizer;

inline constexpr uint32_t kTokenCacheVersion = 1;

// Expands files/directories as described above. `extension` (e.g. ".jsonl"), when not empty,
// filters the files found inside directories (files named explicitly are always kept).
// Throws mg::Error naming a path that does not exist, or when nothing is found.
std::vector<std::filesystem::path> expand_input_paths(const std::vector<std::string>& paths,
                                                      const std::string& extension = "");

class TokenCache {
 public:
  static constexpr size_t kDefaultPieceBytes = size_t{4} << 20;

  // Opens the cache for `paths` under `cache_dir`, building (or rebuilding) it when it is
  // missing, stale or corrupt. Tokenizing shows a Progress line unless `quiet`.
  // `piece_bytes`: the most text encoded per tokenizer call (tests make it tiny to force cuts).
  static TokenCache open_or_build(const std::vector<std::string>& paths, const Tokenizer& tok,
                                  const std::string& cache_dir, bool quiet = false,
                                  size_t piece_bytes = kDefaultPieceBytes);

  TokenCache(TokenCache&& other) noexcept;
  TokenCache& operator=(TokenCache&& other) noexcept;
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;
  ~TokenCache();

  int64_t size() const { return count_; }                  // tokens in the stream
  int bytes_per_token() const { return bytes_per_token_; }  // 2 or 4
  int32_t vocab_size() const { return vocab_size_; }
  int32_t operator[](int64_t i) const {
    return bytes_per_token_ == 2 ? static_cast<const uint16_t*>(data_)[i]
                                 : static_cast<int32_t>(static_cast<const uint32_t*>(data_)[i]);
  }
  // out[0..n) = ids [start, start + n); throws mg::Error when the range is outside the stream.
  void copy(int64_t start, int64_t n, int32_t* out) const;  // out: (n)

  const std::filesystem::path& file() const { return file_; }  // the .tok file
  const std::vector<std::filesystem::path>& inputs() const { return inputs_; }
  bool built() const { return built_; }  // true when this open_or_build call tokenized
  uint64_t key() const { return key_; }

  // The cache key for the expanded inputs (exposed for tests and `magellan tokenize`).
  static uint64_t compute_key(const std::vector<std::filesystem::path>& inputs,
                              const Tokenizer& tok);

 private:
  TokenCache() = default;
  // Maps `file` and validates it against `key`; returns false (with `why` set) if unusable.
  bool map_and_validate(const std::filesystem::path& file, uint64_t key, std::string& why);
  void unmap();

  std::filesystem::path file_;
  std::vector<std::filesystem::path> inputs_;
  void* map_ = nullptr;        // the whole file, header included
  size_t map_bytes_ = 0;
  const void* data_ = nullptr;  // first id, (count_) of uint16 or uint32
  int64_t count_ = 0;
  int bytes_per_token_ = 2;
  int32_t vocab_size_ = 0;
  uint64_t key_ = 0;
  bool built_ = false;
};

}  // namespace mg
