#include "data/jsonl_dataset.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "util/progress.h"
#include "util/regular_file.h"

namespace mg {

namespace {
constexpr uint64_t kPermStream = 0x6A736F6E6C;  // "jsonl"

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

// The string field `key` of a line's object, or an error naming file:line.
std::string string_field(const nlohmann::json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  MG_CHECK(it != obj.end(), "[jsonl] {}: no \"{}\" field; each line needs {{\"prompt\", "
           "\"completion\"}} or {{\"text\"}}", where, key);
  MG_CHECK(it->is_string(), "[jsonl] {}: \"{}\" is a {}, not a string", where, key,
           it->type_name());
  return it->get<std::string>();
}
}  // namespace

JsonlDataset::JsonlDataset(const DatasetOptions& opt, const Tokenizer& tok)
    : T_(opt.seq_len), vocab_size_(tok.vocab_size()), eos_(0), pack_(opt.pack), seed_(opt.seed) {
  MG_CHECK(opt.seq_len >= 1, "[data.seq_len] must be >= 1, got {}", opt.seq_len);
  MG_CHECK(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0,
           "[data.val_fraction] must be in [0, 1), got {}", opt.val_fraction);
  MG_CHECK(tok.eos_id().has_value(), "[jsonl] tokenizer '{}' has no eos id, which JSONL examples "
           "need to mark their end; use a tokenizer with <|endoftext|>", tok.kind());
  eos_ = *tok.eos_id();

  load(opt.path, tok, opt.quiet, train_);
  if (!opt.val_path.empty()) {
    load(opt.val_path, tok, opt.quiet, val_);
  } else {
    const auto n_val =
        static_cast<int64_t>(std::llround(opt.val_fraction * static_cast<double>(train_.size())));
    const int64_t first_val = train_.size() - n_val;
    for (int64_t i = first_val; i < train_.size(); ++i) {  // move the tail into val_
      val_.ids.insert(val_.ids.end(), train_.ids.begin() + train_.offsets[i],
                      train_.ids.begin() + train_.offsets[i + 1]);
      val_.offsets.push_back(static_cast<int64_t>(val_.ids.size()));
      val_.prompt_len.push_back(train_.prompt_len[i]);
    }
    train_.ids.resize(static_cast<size_t>(train_.offsets[first_val]));
    train_.offsets.resize(static_cast<size_t>(first_val + 1));
    train_.prompt_len.resize(static_cast<size_t>(first_val));
  }
  MG_CHECK(train_.size() >= 1, "[jsonl] no training examples left in {} after the validation "
           "split and skipping examples without completion tokens; add data or lower "
           "data.val_fraction", fmt::join(opt.path, ", "));
  start_epoch(0);
  MG_CHECK(order_.rows >= 1, "[jsonl] the {} packed training tokens do not fill one row of "
           "seq_len+1 = {}; add data or lower data.seq_len", train_.tokens(), T_ + 1);
}

void JsonlDataset::load(const std::vector<std::string>& paths, const Tokenizer& tok, bool quiet,
                        Examples& out) {
  const auto files = expand_input_paths(paths, ".jsonl");
  int64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += static_cast<int64_t>(std::filesystem::file_size(f));
  Progress progress("tokenize jsonl", total_bytes, "B", quiet, 10.0);
  int64_t bytes_done = 0;
  for (const auto& file : files) {
    require_regular_file(file.string(), "[data.path]");
    std::ifstream in(file, std::ios::binary);
    MG_CHECK(in.good(), "[jsonl] cannot read {}; check its permissions", file.string());
    std::string line;
    for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
      bytes_done += static_cast<int64_t>(line.size()) + 1;
      if (is_blank(line)) continue;
      const std::string where = fmt::format("{}:{}", file.string(), line_no);
      nlohmann::json obj;
      try {
        obj = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        throw Error(fmt::format("[jsonl] {}: invalid JSON ({}); each line must be one JSON "
                                "object", where, e.what()));
      }
      MG_CHECK(obj.is_object(), "[jsonl] {}: a JSON {}, not an object; each line must be one "
               "object like {{\"prompt\": ..., \"completion\": ...}} or {{\"text\": ...}}",
               where, obj.type_name());
      const bool has_text = obj.contains("text");
      const bool has_pair = obj.contains("prompt") || obj.contains("completion");
      MG_CHECK(has_text != has_pair, "[jsonl] {}: {}; give either \"prompt\" and \"completion\", "
               "or \"text\"", where, has_text ? "both \"text\" and \"prompt\"/\"completion\""
                                              : "neither \"text\" nor \"prompt\"/\"completion\"");
      std::vector<int32_t> s;
      int64_t prompt_len = 0;
      if (has_text) {
        s = tok.encode(string_field(obj, "text", where));
      } else {
        s = tok.encode(string_field(obj, "prompt", where));
        prompt_len = static_cast<int64_t>(s.size());
        auto completion = tok.encode(string_field(obj, "completion", where));
        s.insert(s.end(), completion.begin(), completion.end());
      }
      s.push_back(eos_);
      if (static_cast<int64_t>(s.size()) > T_ + 1) {
        s.resize(static_cast<size_t>(T_ + 1));  // right truncation (jsonl_dataset.h)
        ++truncated_;
      }
      // Counted targets are s[i] with i >= max(1, prompt_len): none means nothing to learn.
      if (std::max<int64_t>(1, prompt_len) >= static_cast<int64_t>(s.size())) {
        ++skipped_;
        continue;
      }
      out.ids.insert(out.ids.end(), s.begin(), s.end());
      out.offsets.push_back(static_cast<int64_t>(out.ids.size()));
      out.prompt_len.push_back(static_cast<int32_t>(prompt_len));
      progress.update(bytes_done);
    }
    MG_CHECK(!in.bad(), "[jsonl] read error in {}", file.string());
  }
  progress.update(total_bytes);
  progress.finish(fmt::format("{} examples", out.size()));
}

JsonlDataset::Order JsonlDataset::make_order(const Examples& ex, std::vector<uint32_t> perm) const {
  Order order;
  order.perm = std::move(perm);
  if (!pack_) {
    order.rows = ex.size();
    return order;
  }
  order.starts.resize(order.perm.size() + 1);
  order.starts[0] = 0;
  for (size_t k = 0; k < order.perm.size(); ++k) {
    const uint32_t e = order.perm[k];
    order.starts[k + 1] = order.starts[k] + (ex.offsets[e + 1] - ex.offsets[e]);
  }
  const int64_t stream = order.starts.back();
  order.rows = stream > T_ ? (stream - 1) / T_ : 0;
  return order;
}

void JsonlDataset::fill_row(const Examples& ex, const Order& order, int64_t r, int32_t* tokens,
                            int32_t* targets) const {
  if (!pack_) {
    const uint32_t e = order.perm[static_cast<size_t>(r)];
    const int32_t* s = ex.ids.data() + ex.offsets[e];
    const int64_t n = ex.offsets[e + 1] - ex.offsets[e];  // <= T+1 after truncation
    for (int64_t t = 0; t + 1 < n; ++t) {
      tokens[t] = s[t];
      if (t + 1 >= ex.prompt_len[e]) targets[t] = s[t + 1];
    }
    return;
  }
  // Packed: stream positions q0 .. q0+T; position q of example k (in visiting order) is
  // s_k[q - starts[k]], counted as a target iff that local index >= the prompt length.
  const int64_t q0 = r * T_;
  size_t k = static_cast<size_t>(
      std::upper_bound(order.starts.begin(), order.starts.end(), q0) - order.starts.begin() - 1);
  for (int64_t t = 0; t <= T_; ++t) {
    const int64_t q = q0 + t;
    while (q >= order.starts[k + 1]) ++k;
    const uint32_t e = order.perm[k];
    const int64_t local = q - order.starts[k];
    const int32_t id = ex.ids[static_cast<size_t>(ex.offsets[e] + local)];
    if (t < T_) tokens[t] = id;
    if (t > 0 && local >= ex.prompt_len[e]) targets[t - 1] = id;
  }
}

void JsonlDataset::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  order_ = make_order(train_, seeded_permutation(train_.size(),
                                                 derive_seed(seed_, kPermStream,
                                                             static_cast<uint64_t>(epoch))));
}

Batch JsonlDataset::next_train_batch(int64_t B) {
  MG_CHECK(B >= 1, "[JsonlDataset] batch size must be >= 1, got {}", B);
  Batch batch(B, T_);
  std::fill(batch.tokens.begin(), batch.tokens.end(), eos_);
  for (int64_t b = 0; b < B; ++b) {
    fill_row(train_, order_, position_, batch.tokens_row(b), batch.targets_row(b));
    if (++position_ == order_.rows) start_epoch(epoch_ + 1);
  }
  return batch;
}

std::vector<Batch> JsonlDataset::validation_batches(int64_t B, int64_t n) const {
  MG_CHECK(B >= 1, "[JsonlDataset] batch size must be >= 1, got {}", B);
  if (val_.size() == 0) return {};
  std::vector<uint32_t> file_order(static_cast<size_t>(val_.size()));
  std::iota(file_order.begin(), file_order.end(), 0u);
  const Order order = make_order(val_, std::move(file_order));
  return batches_of_rows(order.rows, B, T_, n, eos_,
                         [&](int64_t r, int32_t* tokens, int32_t* targets) {
                           fill_row(val_, order, r, tokens, targets);
                         });
}

double JsonlDataset::epoch_progress() const {
  return static_cast<double>(epoch_) +
         static_cast<double>(position_) / static_cast<double>(order_.rows);
}

std::vector<uint64_t> JsonlDataset::state() const {
  return {kStateTag,
          kStateVersion,
          seed_,
          static_cast<uint64_t>(epoch_),
          static_cast<uint64_t>(position_),
          static_cast<uint64_t>(train_.size()),
          static_cast<uint64_t>(train_.tokens()),
          static_cast<uint64_t>(T_),
          static_cast<uint64_t>(pack_)};
}

void JsonlDataset::restore(const std::vector<uint64_t>& s) {
  check_state_header(s, kStateTag, kStateVersion, 9, "JsonlDataset");
  MG_CHECK(s[5] == static_cast<uint64_t>(train_.size()) &&
               s[6] == static_cast<uint64_t>(train_.tokens()) &&
               s[7] == static_cast<uint64_t>(T_) && s[8] == static_cast<uint64_t>(pack_),
           "[JsonlDataset::restore] the checkpoint was taken on {} training examples ({} "
           "tokens), seq_len {}, pack {}; this run has {} ({} tokens), seq_len {}, pack {}; "
           "resume with the same data, tokenizer and data settings", s[5], s[6], s[7], s[8] != 0,
           train_.size(), train_.tokens(), T_, pack_);
  seed_ = s[2];
  start_epoch(static_cast<int64_t>(s[3]));
  MG_CHECK(static_cast<int64_t>(s[4]) < order_.rows,
           "[JsonlDataset::restore] saved position {} is outside epoch {}'s {} rows; the state "
           "is corrupt", s[4], s[3], order_.rows);
  position_ = static_cast<int64_t>(s[4]);
}

std::string JsonlDataset::describe() const {
  return fmt::format("jsonl: {} training examples ({} tokens), {} validation; {} truncated to "
                     "seq_len+1 = {}, {} skipped (no completion tokens left); {}: {} rows per epoch",
                     train_.size(), train_.tokens(), val_.size(), truncated_, T_ + 1, skipped_,
                     pack_ ? "packed" : "padded, one example per row", order_.rows);
}

}  // namespace mg
