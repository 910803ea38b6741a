#pragma once
// Unicode Normalization Form C (UAX #15), for tokenizer.json files whose normalizer is "NFC"
// (GPT-NeoX-20B and others). Written here rather than linked from ICU to keep the data library's
// dependencies as they are; the tables come from Python's unicodedata (data/nfc_tables.inc says
// how) and tests/data/test_tokenizer_nfc.cpp checks the result against Python's normalize().
#include <string>
#include <string_view>

namespace mg {

// NFC of `text`. Bytes that are not valid UTF-8 are copied through unchanged; each maximal run
// of valid UTF-8 between them is normalized on its own. Never throws on any input.
std::string nfc(std::string_view text);

// True when every code point of `text` is below U+0300 (no byte >= 0xCC), which makes
// nfc(text) == text: no character below U+0300 decomposes to anything NFC keeps, or combines.
bool nfc_trivially_stable(std::string_view text);

}  // namespace mg
