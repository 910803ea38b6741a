#pragma once
// GPT-2 / Hugging Face ByteLevel pre-tokenization: the text is cut into pieces that BPE never
// merges across. The pattern is GPT-2's (openai/gpt-2 src/encoder.py, also HF tokenizers'
// ByteLevel and tiktoken's "gpt2"):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// run with PCRE2 (UTF + UCP, JIT-compiled).
#include <string_view>
#include <vector>

namespace mg {

// The pattern as written by GPT-2 (for messages and docs; the compiled form spells \s out, see
// pretokenize.cpp).
inline constexpr std::string_view kGpt2PreTokenizePattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Appends the pre-tokens of `text` to `pieces`, as views into `text`, in order; concatenated
// they are exactly `text`. Runs of valid UTF-8 are split by the pattern; every maximal run of
// bytes that are not valid UTF-8 is one piece of its own (HF tokenizers cannot take such text at
// all; this keeps any byte string encodable and lossless). Thread-safe; never throws.
void gpt2_pretokenize(std::string_view text, std::vector<std::string_view>& pieces);

// True for the code points with Unicode's White_Space property, i.e. what \s means in the
// regex engines HF tokenizers (Oniguruma) and tiktoken (fancy-regex) use.
bool is_unicode_white_space(char32_t cp);

}  // namespace mg
