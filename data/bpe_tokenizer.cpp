// Byte-level BPE encode/decode. Loading and saving files is in bpe_tokenizer_json.cpp.
//
// Merging follows Hugging Face tokenizers (`tokenizers/src/models/bpe/word.rs`, merge_all):
// a min-heap of candidate merges keyed by (rank, position) over a linked list of symbols, so a
// pre-token of n bytes costs O(n log n) however long it is; candidates made stale by an earlier
// merge are recognized on pop and dropped. Results are cached per pre-token (HF and tiktoken
// both do; data/bpe_tokenizer_cache.h): English text repeats its words, so most pre-tokens are
// cache hits.
#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <functional>
#include <unordered_map>

#include "autograd/error.h"
#include "data/bpe_tokenizer_cache.h"
#include "data/byte_unicode.h"
#include "data/nfc.h"
#include "data/pretokenize.h"

namespace mg {
namespace {

// (left id, right id) -> (rank, merged id), open addressing with linear probing.
class MergeTable {
 public:
  struct Entry {
    int32_t rank, merged;
  };
  explicit MergeTable(size_t n_merges) {
    size_t capacity = 16;
    while (capacity < n_merges * 2) capacity *= 2;
    keys_.assign(capacity, kEmpty);
    entries_.resize(capacity);
    mask_ = capacity - 1;
  }
  // A pair listed twice keeps its last rank, as HF's HashMap collect does.
  void insert(int32_t left, int32_t right, Entry entry) {
    uint64_t key = pack(left, right);
    size_t i = slot(key);
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
    keys_[i] = key;
    entries_[i] = entry;
  }
  const Entry* find(int32_t left, int32_t right) const {
    uint64_t key = pack(left, right);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &entries_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  static uint64_t pack(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
  size_t slot(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<uint64_t> keys_;
  std::vector<Entry> entries_;
  size_t mask_ = 0;
};

// Byte trie over the added tokens, for leftmost-longest matching (HF builds an Aho-Corasick
// automaton with MatchKind::LeftmostLongest; with a handful of tokens a trie walk is as fast).
class AddedTokenTrie {
 public:
  void insert(std::string_view text, int32_t token) {
    int32_t node = 0;
    for (unsigned char c : text) {
      auto [it, inserted] = edges_.try_emplace(edge(node, c), int32_t(token_at_.size()));
      if (inserted) token_at_.push_back(-1);
      node = it->second;
    }
    token_at_[size_t(node)] = token;
    first_byte_[static_cast<unsigned char>(text[0])] = true;
  }
  bool empty() const { return token_at_.size() == 1; }
  // The longest token starting at text[i]: (its length, its index), or (0, -1).
  std::pair<size_t, int32_t> longest_at(std::string_view text, size_t i) const {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) return {0, -1};
    std::pair<size_t, int32_t> best{0, -1};
    int32_t node = 0;
    for (size_t j = i; j < text.size(); ++j) {
      auto it = edges_.find(edge(node, static_cast<unsigned char>(text[j])));
      if (it == edges_.end()) break;
      node = it->second;
      if (token_at_[size_t(node)] >= 0) best = {j + 1 - i, token_at_[size_t(node)]};
    }
    return best;
  }

 private:
  static uint64_t edge(int32_t node, unsigned char c) { return (uint64_t(node) << 8) | c; }
  std::vector<int32_t> token_at_ = {-1};  // per node: index of the token ending there, or -1
  std::unordered_map<uint64_t, int32_t> edges_;
  std::array<bool, 256> first_byte_{};
};

// Start of the whitespace run that ends at text[end] (HF `space_leftmost_at_end`).
size_t whitespace_start_before(std::string_view text, size_t begin, size_t end) {
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    int len = utf8_sequence_length(text, start);
    if (len == 0 || start + size_t(len) != end ||
        !is_unicode_white_space(utf8_decode(text, start, len)))
      break;
    end = start;
  }
  return end;
}

// End of the whitespace run that starts at text[begin] (HF `space_rightmost_at_start`).
size_t whitespace_end_after(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    int len = utf8_sequence_length(text, begin);
    if (len == 0 || !is_unicode_white_space(utf8_decode(text, begin, len))) break;
    begin += size_t(len);
  }
  return begin;
}

struct TransparentStringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

uint64_t fnv1a(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

}  // namespace

struct BpeTokenizer::Impl {
  std::string source;
  BpeOptions options;
  std::vector<std::pair<std::string, int32_t>> vocab;  // sorted by id
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t, TransparentStringHash, std::equal_to<>> token_to_id;
  std::vector<std::string> id_to_token;  // byte-level spelling, "" where unassigned
  std::vector<std::string> id_to_bytes;  // what decode() emits
  std::vector<uint8_t> id_assigned;
  std::array<int32_t, 256> byte_id{};    // the single-byte symbols, -1 where the vocab has none
  int32_t unk_id = -1;                   // options.unk_token's id, or -1
  MergeTable merge_table{0};
  AddedTokenTrie raw_trie, normalized_trie;
  int32_t vocab_size = 0;
  std::optional<int32_t> eos;
  std::string fingerprint;

  mutable detail::PreTokenCache cache;

  void encode_text(std::string_view text, bool match_added, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view piece, bool match_added,
                         std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  // Calls on_piece(piece) for the text between matches and on_token(id) for each match.
  template <class OnPiece>
  void split_on_added(const AddedTokenTrie& trie, std::string_view text, OnPiece&& on_piece,
                      std::vector<int32_t>& out) const;
};

BpeTokenizer::BpeTokenizer(std::vector<std::pair<std::string, int32_t>> vocab,
                           std::vector<std::pair<std::string, std::string>> merges,
                           std::vector<AddedToken> added_tokens, BpeOptions options,
                           std::string source)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.source = std::move(source);
  m.options = options;
  std::sort(vocab.begin(), vocab.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  m.vocab = std::move(vocab);
  m.merges = std::move(merges);
  m.added = std::move(added_tokens);

  int32_t max_id = -1;
  for (const auto& [token, id] : m.vocab) {
    MG_CHECK(id >= 0, "[BpeTokenizer] {}: vocab token '{}' has negative id {}; ids must be >= 0",
             m.source, token, id);
    MG_CHECK(!token.empty(), "[BpeTokenizer] {}: vocab id {} is the empty string", m.source, id);
    max_id = std::max(max_id, id);
  }
  for (const AddedToken& t : m.added) {
    MG_CHECK(t.id >= 0 && !t.content.empty(),
             "[BpeTokenizer] {}: added token '{}' (id {}) needs a non-empty content and id >= 0",
             m.source, t.content, t.id);
    max_id = std::max(max_id, t.id);
  }
  m.vocab_size = max_id + 1;
  m.id_to_token.assign(size_t(m.vocab_size), "");
  m.id_to_bytes.assign(size_t(m.vocab_size), "");
  m.id_assigned.assign(size_t(m.vocab_size), 0);
  for (const auto& [token, id] : m.vocab) {
    MG_CHECK(!m.id_assigned[size_t(id)], "[BpeTokenizer] {}: id {} is given to both '{}' and '{}'",
             m.source, id, m.id_to_token[size_t(id)], token);
    MG_CHECK(m.token_to_id.emplace(token, id).second,
             "[BpeTokenizer] {}: token '{}' appears twice in the vocab", m.source, token);
    m.id_assigned[size_t(id)] = 1;
    m.id_to_token[size_t(id)] = token;
    // The HF ByteLevel decoder falls back to the token's own UTF-8 when it is not byte-level.
    m.id_to_bytes[size_t(id)] = byte_level_to_bytes(token).value_or(token);
  }

  std::string missing;
  for (int b = 0; b < 256; ++b) {
    auto it = m.token_to_id.find(byte_to_utf8(uint8_t(b)));
    m.byte_id[size_t(b)] = it == m.token_to_id.end() ? -1 : it->second;
    bool never_in_utf8 = b == 0xC0 || b == 0xC1 || b >= 0xF5;
    if (m.byte_id[size_t(b)] < 0 && !never_in_utf8 && missing.size() < 60)
      missing += fmt::format(" 0x{:02X}", b);
  }
  MG_CHECK(missing.empty(),
           "[BpeTokenizer] {}: the vocab lacks the byte-level symbols of bytes{}; a ByteLevel "
           "vocab needs every byte UTF-8 text can hold (train with the full byte alphabet)",
           m.source, missing);
  if (!options.unk_token.empty()) {
    auto it = m.token_to_id.find(options.unk_token);
    MG_CHECK(it != m.token_to_id.end(), "[BpeTokenizer] {}: unk_token '{}' is not in the vocab",
             m.source, options.unk_token);
    m.unk_id = it->second;
  }

  m.merge_table = MergeTable(m.merges.size());
  for (size_t rank = 0; rank < m.merges.size(); ++rank) {
    const auto& [left, right] = m.merges[rank];
    auto l = m.token_to_id.find(left), r = m.token_to_id.find(right);
    auto merged = m.token_to_id.find(left + right);
    MG_CHECK(l != m.token_to_id.end() && r != m.token_to_id.end() &&
                 merged != m.token_to_id.end(),
             "[BpeTokenizer] {}: merge #{} '{} {}' uses a token missing from the vocab ('{}', "
             "'{}' and '{}' must all be in it)",
             m.source, rank, left, right, left, right, left + right);
    m.merge_table.insert(l->second, r->second, {int32_t(rank), merged->second});
  }

  for (size_t i = 0; i < m.added.size(); ++i) {
    const AddedToken& t = m.added[i];
    m.id_assigned[size_t(t.id)] = 1;
    m.id_to_bytes[size_t(t.id)] = t.content;
    // HF normalizes the content of normalized tokens before matching it in normalized text.
    if (t.normalized)
      m.normalized_trie.insert(options.nfc ? nfc(t.content) : t.content, int32_t(i));
    else
      m.raw_trie.insert(t.content, int32_t(i));
  }

  for (const char* name : {"<|endoftext|>", "</s>", "<|end_of_text|>"}) {
    for (const AddedToken& t : m.added)
      if (t.content == name && !m.eos) m.eos = t.id;
    if (auto it = m.token_to_id.find(std::string_view(name)); it != m.token_to_id.end() && !m.eos)
      m.eos = it->second;
  }

  // Everything encode() depends on, in a fixed order.
  uint64_t h = fnv1a(0xCBF29CE484222325ull, "magellan-bpe-v1");
  h = fnv1a(h, fmt::format("prefix={} regex={} nfc={} ignore_merges={} unk={} fuse_unk={}\n",
                           options.add_prefix_space, options.use_regex, options.nfc,
                           options.ignore_merges, options.unk_token, options.fuse_unk));
  for (const auto& [token, id] : m.vocab) h = fnv1a(h, fmt::format("v{}={}\x1f", id, token));
  for (const auto& [l, r] : m.merges) h = fnv1a(h, fmt::format("m{}\x1f{}\x1f", l, r));
  for (const AddedToken& t : m.added)
    h = fnv1a(h, fmt::format("a{}={}\x1f{}{}{}\x1f", t.id, t.content, int(t.normalized),
                             int(t.lstrip), int(t.rstrip)));
  m.fingerprint = fmt::format("{:016x}", h);

  std::vector<std::string_view> probe;  // compiles the pattern now, so a failure shows at load
  gpt2_pretokenize("a", probe);
}

BpeTokenizer::~BpeTokenizer() = default;

template <class OnPiece>
void BpeTokenizer::Impl::split_on_added(const AddedTokenTrie& trie, std::string_view text,
                                        OnPiece&& on_piece, std::vector<int32_t>& out) const {
  if (trie.empty()) {
    if (!text.empty()) on_piece(text);
    return;
  }
  size_t piece_start = 0;  // HF `find_matches`: start_offset
  for (size_t i = 0; i < text.size();) {
    auto [len, index] = trie.longest_at(text, i);
    if (len == 0) {
      ++i;
      continue;
    }
    const AddedToken& token = added[size_t(index)];
    size_t start = i, stop = i + len;
    if (token.lstrip) start = whitespace_start_before(text, piece_start, start);
    if (token.rstrip) stop = whitespace_end_after(text, stop);
    if (start > piece_start) on_piece(text.substr(piece_start, start - piece_start));
    out.push_back(token.id);
    piece_start = i = stop;
  }
  if (piece_start < text.size()) on_piece(text.substr(piece_start));
}

void BpeTokenizer::Impl::encode_text(std::string_view text, bool match_added,
                                     std::vector<int32_t>& out) const {
  if (!match_added) {
    encode_normalized(text, false, out);
    return;
  }
  split_on_added(
      raw_trie, text, [&](std::string_view piece) { encode_normalized(piece, true, out); }, out);
}

void BpeTokenizer::Impl::encode_normalized(std::string_view piece, bool match_added,
                                           std::vector<int32_t>& out) const {
  std::string normalized;
  if (options.nfc && !nfc_trivially_stable(piece)) {
    normalized = nfc(piece);
    piece = normalized;
  }
  if (!match_added) {
    if (!piece.empty()) encode_piece(piece, out);
    return;
  }
  split_on_added(
      normalized_trie, piece, [&](std::string_view p) { encode_piece(p, out); }, out);
}

void BpeTokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  std::string prefixed;
  if (options.add_prefix_space && piece.front() != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!options.use_regex) {
    encode_word(piece, out);
    return;
  }
  thread_local std::vector<std::string_view> words;  // reused: one allocation per thread
  words.clear();
  gpt2_pretokenize(piece, words);
  for (std::string_view w : words) encode_word(w, out);
}

void BpeTokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1 && byte_id[static_cast<unsigned char>(word[0])] >= 0) {
    out.push_back(byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (word.size() > detail::PreTokenCache::kMaxKeyBytes) {
    merge_word(word, out);
    return;
  }
  const uint64_t hash = detail::hash_bytes(word);
  if (cache.find(hash, word, out)) return;
  const size_t first = out.size();
  merge_word(word, out);
  cache.insert(hash, word, out.data() + first, out.size() - first);
}

void BpeTokenizer::Impl::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (options.ignore_merges) {
    auto it = token_to_id.find(bytes_to_byte_level(word));
    if (it != token_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;  // id -1: absorbed into its left neighbour
  };
  struct Candidate {
    int32_t rank, pos, left, right, merged;
  };
  // (rank, pos) smallest first: lowest rank, then leftmost.
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  // One symbol per byte; a byte without one becomes unk (fused with a preceding unk when
  // fuse_unk) or is dropped (HF `BPE::merge_word`).
  symbols.clear();
  bool last_was_unk = false;
  for (unsigned char c : word) {
    int32_t id = byte_id[c];
    if (id < 0) {
      if (unk_id < 0 || (options.fuse_unk && last_was_unk)) continue;
      id = unk_id;
      last_was_unk = true;
    } else {
      last_was_unk = false;
    }
    int32_t i = int32_t(symbols.size());
    symbols.push_back({id, i - 1, i + 1});
  }
  const int32_t n = int32_t(symbols.size());
  if (n == 0) return;
  symbols.back().next = -1;
  heap.clear();
  auto candidate_at = [&](int32_t pos) -> bool {  // the pair starting at symbol `pos`
    const Symbol& left = symbols[size_t(pos)];
    if (left.next < 0) return false;
    int32_t right = symbols[size_t(left.next)].id;
    const MergeTable::Entry* e = merge_table.find(left.id, right);
    if (!e) return false;
    heap.push_back({e->rank, pos, left.id, right, e->merged});
    return true;
  };
  for (int32_t i = 0; i + 1 < n; ++i) candidate_at(i);
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[size_t(c.pos)];
    // Stale when the left symbol changed (merged or absorbed) or its right neighbour did.
    if (left.id != c.left || left.next < 0 || symbols[size_t(left.next)].id != c.right) continue;
    Symbol& right = symbols[size_t(left.next)];
    left.id = c.merged;
    left.next = right.next;
    right.id = -1;
    if (left.next >= 0) symbols[size_t(left.next)].prev = c.pos;
    if (left.prev >= 0 && candidate_at(left.prev))
      std::push_heap(heap.begin(), heap.end(), later);
    if (candidate_at(c.pos)) std::push_heap(heap.begin(), heap.end(), later);
  }
  for (int32_t i = 0; i >= 0; i = symbols[size_t(i)].next) out.push_back(symbols[size_t(i)].id);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  impl_->encode_text(text, true, ids);
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode_ordinary(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  impl_->encode_text(text, false, ids);
  return ids;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  const Impl& m = *impl_;
  std::string text;
  text.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    MG_CHECK(id >= 0 && id < m.vocab_size && m.id_assigned[size_t(id)],
             "[BpeTokenizer::decode] {}: id {} is not a token (vocab size {}); the ids come from "
             "another tokenizer or are corrupt",
             m.source, id, m.vocab_size);
    text += m.id_to_bytes[size_t(id)];
  }
  return text;
}

int32_t BpeTokenizer::vocab_size() const { return impl_->vocab_size; }
std::optional<int32_t> BpeTokenizer::eos_id() const { return impl_->eos; }
std::string BpeTokenizer::fingerprint() const { return impl_->fingerprint; }

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view byte_level_token) const {
  auto it = impl_->token_to_id.find(byte_level_token);
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}

std::string_view BpeTokenizer::id_to_token(int32_t id) const {
  MG_CHECK(id >= 0 && id < impl_->vocab_size, "[BpeTokenizer::id_to_token] id {} out of [0, {})",
           id, impl_->vocab_size);
  return impl_->id_to_token[size_t(id)];
}

const std::vector<std::pair<std::string, int32_t>>& BpeTokenizer::vocab() const {
  return impl_->vocab;
}
const std::vector<std::pair<std::string, std::string>>& BpeTokenizer::merges() const {
  return impl_->merges;
}
const std::vector<AddedToken>& BpeTokenizer::added_tokens() const { return impl_->added; }
const BpeOptions& BpeTokenizer::options() const { return impl_->options; }

void BpeTokenizer::clear_cache() const { impl_->cache.clear(); }
size_t BpeTokenizer::cache_entries() const { return impl_->cache.size(); }

}  // namespace mg
