#pragma once
// The byte-level tokenizer: id b for byte b (0..255) and <|endoftext|> = 256. The literal text
// "<|endoftext|>" is encoded as the one id 256, as the BPE tokenizers do, so documents joined
// with it in a text file get the same end-of-text id however they are tokenized.
#include "data/tokenizer.h"

namespace mg {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEndOfText = 256;
  static constexpr std::string_view kEndOfTextText = "<|endoftext|>";

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return 257; }
  std::optional<int32_t> eos_id() const override { return kEndOfText; }
  std::string kind() const override { return "byte"; }
  std::string fingerprint() const override;
};

}  // namespace mg
