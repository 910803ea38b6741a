#pragma once
// The tokenizer interface every data path uses: byte-level, GPT-2 BPE (encoder.json +
// vocab.bpe), Hugging Face tokenizer.json (ByteLevel BPE), and BPE trained by magellan.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mg {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // text -> ids. Any byte string is accepted (invalid UTF-8 included) and never throws.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // ids -> text; decode(encode(s)) == s for every s. Throws mg::Error on an id out of range.
  // (Exceptions a tokenizer file asks for: an NFC normalizer gives nfc(s), and bytes a BPE vocab
  // has no symbol for are dropped; data/bpe_tokenizer.h. GPT-2 and "byte" have none.)
  virtual std::string decode(std::span<const int32_t> ids) const = 0;

  virtual int32_t vocab_size() const = 0;               // ids are in [0, vocab_size)
  virtual std::optional<int32_t> eos_id() const = 0;    // end-of-text, if the tokenizer has one
  virtual std::string kind() const = 0;                 // "byte", "bpe"
  // Stable hex digest of everything that changes encode() (vocab, merges, specials, options):
  // token caches are keyed by it and rebuilt when it changes.
  virtual std::string fingerprint() const = 0;
};

// Loads a tokenizer from a spec:
//   "byte"                  -> 256 byte ids + <|endoftext|> (id 256)
//   "gpt2:<dir>"            -> <dir>/encoder.json + <dir>/vocab.bpe
//   "<path>/tokenizer.json" -> Hugging Face tokenizer.json (BPE with ByteLevel pre-tokenizer)
//   "<dir>"                 -> <dir>/tokenizer.json, when the folder holds one
// Throws mg::Error naming the path and what is wrong.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

}  // namespace mg
