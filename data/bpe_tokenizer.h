#pragma once
// Byte-level BPE: GPT-2 (encoder.json + vocab.bpe), Hugging Face tokenizer.json (model BPE with
// a ByteLevel pre-tokenizer: GPT-2, GPT-NeoX, RoBERTa, ...) and tokenizers trained by magellan
// (data/bpe_trainer.h). Encoding is id-for-id the Hugging Face `tokenizers` pipeline:
//   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest),
//   2. each remaining piece is normalized (NFC when the file says so) and the added tokens with
//      normalized=true are cut out of it,
//   3. ByteLevel pre-tokenization of each remaining piece (optional prefix space, GPT-2 regex,
//      data/pretokenize.h),
//   4. each pre-token's bytes become byte-level symbols and are merged by merge rank, lowest
//      first, leftmost first among equal ranks (HF `Word::merge_all`, GPT-2 `bpe()`).
// Post-processors (templates adding BOS/EOS) are not applied: encode() returns the raw ids.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/tokenizer.h"

namespace mg {

// A token matched in the text before pre-tokenization (HF `added_tokens`, e.g. <|endoftext|>).
struct AddedToken {
  int32_t id = 0;
  std::string content;      // the text it matches (plain UTF-8, not byte-level spelled)
  bool special = true;      // HF's flag; kept for saving, it does not change encode()
  bool normalized = false;  // matched in the normalized pieces instead of the raw text
  bool lstrip = false;      // the match absorbs the whitespace on its left
  bool rstrip = false;      // ... and on its right
};

struct BpeOptions {
  bool add_prefix_space = false;  // ByteLevel: prepend ' ' to a piece that does not start with one
  bool use_regex = true;          // ByteLevel: split with the GPT-2 pattern (else one pre-token)
  bool nfc = false;               // normalizer {"type": "NFC"}
  bool ignore_merges = false;     // BPE: a pre-token that is itself a vocab entry is one id
  // BPE unk_token / fuse_unk: what a byte without a vocab symbol becomes (see the constructor).
  std::string unk_token;          // empty: such bytes are dropped, as HF does with unk_token null
  bool fuse_unk = false;          // consecutive unknown bytes give one unk id
};

class BpeTokenizer final : public Tokenizer {
 public:
  // vocab: (token in byte-level spelling, id); merges: (left, right) vocab tokens, rank = index.
  // The vocab must hold the byte-level symbol of every byte that valid UTF-8 can contain, so
  // any UTF-8 text round-trips. The 13 bytes that never occur in UTF-8 (C0, C1, F5..FF) may
  // lack one (GPT-NeoX-20B lacks C0, C1, F5..FE): in invalid text they become unk_token, or are
  // dropped without one, as HF does. `source` names where it came from, for error messages.
  // Throws mg::Error on an inconsistent vocab/merges/added-token set.
  BpeTokenizer(std::vector<std::pair<std::string, int32_t>> vocab,
               std::vector<std::pair<std::string, std::string>> merges,
               std::vector<AddedToken> added_tokens, BpeOptions options = {},
               std::string source = "BpeTokenizer");
  ~BpeTokenizer() override;
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // openai/gpt-2 files. <|endoftext|>, when in encoder.json, is an added special token, so it
  // is recognized in text as Hugging Face's GPT2Tokenizer(Fast) does.
  static std::unique_ptr<BpeTokenizer> load_gpt2(const std::string& encoder_json_path,
                                                 const std::string& vocab_bpe_path);
  // Hugging Face tokenizer.json. Throws mg::Error naming the file and the key it cannot use.
  static std::unique_ptr<BpeTokenizer> load_hf_json(const std::string& path);
  static std::unique_ptr<BpeTokenizer> parse_hf_json(std::string_view json_text,
                                                     const std::string& source);
  // Hugging Face-compatible tokenizer.json (model BPE, ByteLevel pre-tokenizer and decoder,
  // added_tokens, NFC normalizer when set); load_hf_json reads it back to identical encodings.
  std::string to_hf_json() const;
  void save_hf_json(const std::string& path) const;

  std::vector<int32_t> encode(std::string_view text) const override;
  // encode() without step 1-2 (added tokens are plain text), like tiktoken's encode_ordinary.
  std::vector<int32_t> encode_ordinary(std::string_view text) const;
  // decode(encode(s)) == s for every s, with two exceptions the file itself asks for: with the
  // NFC normalizer it gives nfc(s); bytes the vocab has no symbol for (see the constructor) are
  // dropped or become unk_token. GPT-2 round-trips every byte string.
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override;
  std::optional<int32_t> eos_id() const override;  // <|endoftext|>, </s> or <|end_of_text|>
  std::string kind() const override { return "bpe"; }
  std::string fingerprint() const override;

  std::optional<int32_t> token_to_id(std::string_view byte_level_token) const;
  // Byte-level spelling of a vocab id; empty for an id only an added token has.
  std::string_view id_to_token(int32_t id) const;
  const std::vector<std::pair<std::string, int32_t>>& vocab() const;  // sorted by id
  const std::vector<std::pair<std::string, std::string>>& merges() const;
  const std::vector<AddedToken>& added_tokens() const;
  const BpeOptions& options() const;

  // The pre-token -> ids cache (thread-safe, bounded). Cleared for cold-cache benchmarks.
  void clear_cache() const;
  size_t cache_entries() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mg
