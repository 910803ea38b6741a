#include "data/byte_tokenizer.h"

#include "autograd/error.h"

namespace mg {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '<' && text.substr(i, kEndOfTextText.size()) == kEndOfTextText) {
      ids.push_back(kEndOfText);
      i += kEndOfTextText.size();
    } else {
      ids.push_back(static_cast<unsigned char>(text[i++]));
    }
  }
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    MG_CHECK(id >= 0 && id <= kEndOfText,
             "[ByteTokenizer::decode] id {} is outside [0, 256]; the ids come from another "
             "tokenizer or are corrupt",
             id);
    if (id == kEndOfText) text += kEndOfTextText;
    else text.push_back(char(id));
  }
  return text;
}

// Fixed: nothing about this tokenizer can change. Bump the version if encode() ever does.
std::string ByteTokenizer::fingerprint() const {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a, as BpeTokenizer's
  for (unsigned char c : std::string_view("magellan-byte-v1: 256 bytes + <|endoftext|>=256"))
    h = (h ^ c) * 0x100000001B3ull;
  return fmt::format("{:016x}", h);
}

}  // namespace mg
