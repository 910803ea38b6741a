#pragma once
// GPT-2's reversible byte <-> unicode map, and the small UTF-8 helpers the tokenizers share.
//
// Byte-level BPE (Radford et al. 2019, openai/gpt-2 src/encoder.py `bytes_to_unicode`) spells
// every byte as one printable unicode character, so vocab.bpe / tokenizer.json can hold any
// byte sequence as text: the 188 printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') spell
// themselves, the other 68 (controls, space, 0x7F..0xA0, 0xAD) map to U+0100.. in byte order,
// so ' ' (0x20) is 'Ġ' (U+0120) and '\n' (0x0A) is 'Ċ' (U+010A).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mg {

// The code point GPT-2 uses to spell byte `b`.
char32_t byte_to_codepoint(uint8_t b);
// The byte that code point `cp` spells, or -1 when `cp` is not one of the 256.
int codepoint_to_byte(char32_t cp);
// UTF-8 of byte_to_codepoint(b): 1 byte for printable ASCII, else 2.
std::string_view byte_to_utf8(uint8_t b);

// Raw bytes -> their byte-level spelling (what vocab.bpe and tokenizer.json store).
std::string bytes_to_byte_level(std::string_view bytes);
// Byte-level spelling -> raw bytes; nullopt when `text` is not valid UTF-8 or holds a character
// outside the 256 (e.g. an added token such as "<|endoftext|>" spelled with plain characters is
// fine, but "€" is not a byte-level character).
std::optional<std::string> byte_level_to_bytes(std::string_view text);

// ---- UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF) ----

// Length (1..4) of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not
// valid UTF-8 (stray continuation byte, overlong form, surrogate, > U+10FFFF, truncated).
int utf8_sequence_length(std::string_view s, size_t i);
// The code point of the valid sequence of length `len` at s[i] (len from utf8_sequence_length).
char32_t utf8_decode(std::string_view s, size_t i, int len);
// Appends the UTF-8 encoding of `cp` (must be a valid scalar value).
void utf8_append(std::string& out, char32_t cp);
bool is_valid_utf8(std::string_view s);

}  // namespace mg
