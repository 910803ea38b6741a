#include "data/token_cache.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "data/tokenizer.h"
#include "util/progress.h"
#include "util/regular_file.h"

namespace mg {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'M', 'G', 'T', 'O', 'K', 'C', 0, 0};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kWriteBufferTokens = size_t{1} << 20;  // ids buffered per write (even count)

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t bytes_per_token;
  uint64_t count;
  uint64_t key;
  uint64_t checksum;
  uint32_t vocab_size;
  uint32_t n_files;
  uint8_t reserved[16];
};
static_assert(sizeof(Header) == kHeaderBytes, "token cache header must be 64 bytes");

// FNV-1a over bytes: the cache key (a name, so collisions only need to be unlikely).
uint64_t fnv1a(const std::string& s, uint64_t h = 0xCBF29CE484222325ull) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// Checksum of the id bytes: per 8-byte word w (the tail zero-padded), h = (h ^ w) * P.
// Each step is a bijection of h for a fixed w, so changing any single word always changes
// the result; it runs at several GB/s, so every open can afford to verify the whole file.
// Streaming: every chunk except the last must be a multiple of 8 bytes.
uint64_t checksum_update(uint64_t h, const unsigned char* bytes, size_t n) {
  size_t words = n / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, bytes + 8 * i, 8);
    h = (h ^ w) * 0x100000001B3ull;
  }
  if (size_t tail = n % 8) {
    uint64_t w = 0;
    std::memcpy(&w, bytes + 8 * words, tail);
    h = (h ^ w) * 0x100000001B3ull;
  }
  return h;
}
constexpr uint64_t kChecksumSeed = 0x6D67746F6B636163ull;  // "mgtokcac"

// Writes ids to the temp file in the cache's dtype, checksumming as it goes.
class IdWriter {
 public:
  IdWriter(std::FILE* f, int bytes_per_token, int32_t vocab_size, const fs::path& where)
      : f_(f), bpt_(bytes_per_token), vocab_(vocab_size), where_(where),
        buf_(kWriteBufferTokens * static_cast<size_t>(bytes_per_token)) {}

  void append(const std::vector<int32_t>& ids, const fs::path& source) {  // ids: (n)
    for (size_t i = 0; i < ids.size();) {
      const size_t take = std::min(kWriteBufferTokens - buffered_, ids.size() - i);
      int32_t lo = 0, hi = 0;
      for (size_t j = 0; j < take; ++j)
        lo = std::min(lo, ids[i + j]), hi = std::max(hi, ids[i + j]);
      MG_CHECK(lo >= 0 && hi < vocab_, "[token cache] the tokenizer returned an id in [{}, {}] "
               "for {}, outside [0, {}); this is a tokenizer bug: report it with the file", lo,
               hi, source.string(), vocab_);
      if (bpt_ == 2) {
        auto* dst = reinterpret_cast<uint16_t*>(buf_.data()) + buffered_;
        for (size_t j = 0; j < take; ++j) dst[j] = static_cast<uint16_t>(ids[i + j]);
      } else {
        auto* dst = reinterpret_cast<uint32_t*>(buf_.data()) + buffered_;
        for (size_t j = 0; j < take; ++j) dst[j] = static_cast<uint32_t>(ids[i + j]);
      }
      buffered_ += take, i += take;
      if (buffered_ == kWriteBufferTokens) flush();  // a multiple of 8 bytes
    }
    count_ += static_cast<uint64_t>(ids.size());
  }
  void flush() {
    if (buffered_ == 0) return;
    const size_t bytes = buffered_ * static_cast<size_t>(bpt_);
    checksum_ = checksum_update(checksum_, buf_.data(), bytes);
    MG_CHECK(std::fwrite(buf_.data(), 1, bytes, f_) == bytes,
             "[token cache] writing {} failed ({}); check free disk space", where_.string(),
             std::strerror(errno));
    buffered_ = 0;
  }
  uint64_t count() const { return count_; }
  uint64_t checksum() const { return checksum_; }

 private:
  std::FILE* f_;
  int bpt_;
  int32_t vocab_;
  fs::path where_;
  std::vector<unsigned char> buf_;  // (kWriteBufferTokens * bytes per token)
  size_t buffered_ = 0;             // ids in buf_
  uint64_t count_ = 0;
  uint64_t checksum_ = kChecksumSeed;
};

// A run of text to encode: a piece of one file, and whether the file ends with it.
struct Piece {
  std::string text;
  const fs::path* file;
  bool last_of_file;
};

// Encodes the pieces in parallel (they are independent: see the cut rule) and writes their
// ids in order, with an eos after each file's last piece.
void encode_pieces(std::vector<Piece>& pieces, const Tokenizer& tok, std::optional<int32_t> eos,
                   IdWriter& writer) {
  std::vector<std::vector<int32_t>> ids(pieces.size());
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < pieces.size(); ++i) {
    try {
      ids[i] = tok.encode(pieces[i].text);
    } catch (...) {
#pragma omp critical(mg_token_cache_failure)
      failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  for (size_t i = 0; i < pieces.size(); ++i) {
    writer.append(ids[i], *pieces[i].file);
    if (pieces[i].last_of_file && eos) writer.append({*eos}, *pieces[i].file);  // one document
  }
  pieces.clear();
}

// Where a piece of text may end: just after a '\n' that sits between two printable non-space
// ASCII bytes ("a\nB"); see token_cache.h. Returns 0 when there is none. Only '\n's at
// index >= `from` are looked at (the caller passes where its new bytes begin, minus one, so a
// long text without cuts is scanned once, not once per read).
size_t last_safe_cut(const std::string& text, size_t from) {
  auto printable = [](char c) { return c >= 0x21 && c <= 0x7E; };
  const size_t lowest = std::max<size_t>(from, 1);
  for (size_t i = text.size() >= 2 ? text.size() - 2 : 0; i >= lowest; --i)
    if (text[i] == '\n' && printable(text[i - 1]) && printable(text[i + 1])) return i + 1;
  return 0;
}

std::string manifest_json(const std::vector<fs::path>& inputs, const Tokenizer& tok,
                          uint64_t key, uint64_t count, int bytes_per_token) {
  nlohmann::json j;
  j["format"] = "magellan-token-cache";
  j["version"] = kTokenCacheVersion;
  j["key"] = fmt::format("{:016x}", key);
  j["tokenizer_kind"] = tok.kind();
  j["tokenizer_fingerprint"] = tok.fingerprint();
  j["vocab_size"] = tok.vocab_size();
  j["eos_id"] = tok.eos_id() ? nlohmann::json(*tok.eos_id()) : nlohmann::json(nullptr);
  j["tokens"] = count;
  j["bytes_per_token"] = bytes_per_token;
  for (const auto& p : inputs) j["files"].push_back(p.string());
  return j.dump(2) + "\n";
}

}  // namespace

std::vector<fs::path> expand_input_paths(const std::vector<std::string>& paths,
                                         const std::string& extension) {
  MG_CHECK(!paths.empty(), "[data.path] no input files given; list text files or directories");
  std::vector<fs::path> out;
  for (const auto& p : paths) {
    std::error_code ec;
    auto st = fs::status(p, ec);
    MG_CHECK(fs::exists(st), "[data.path] '{}' does not exist; fix the path (in a YAML file, relative "
             "paths are resolved against that file's folder; in a key=value override or a --data flag, "
             "against the working directory)", p);
    if (fs::is_directory(st)) {
      auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied);
      for (; it != fs::recursive_directory_iterator(); ++it) {
        const auto name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {  // hidden: .git, editor swap files, ...
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (!it->is_regular_file()) continue;
        if (!extension.empty() && it->path().extension() != extension) continue;
        out.push_back(fs::weakly_canonical(it->path()));
      }
    } else {
      require_regular_file(p, "[data.path]");
      out.push_back(fs::weakly_canonical(p));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  MG_CHECK(!out.empty(), "[data.path] no {}files found under {}; check the paths",
           extension.empty() ? "" : extension + " ", fmt::join(paths, ", "));
  return out;
}

uint64_t TokenCache::compute_key(const std::vector<fs::path>& inputs, const Tokenizer& tok) {
  std::string m = fmt::format("magellan-token-cache v{}\n{}\n{}\n{}\n", kTokenCacheVersion,
                              tok.fingerprint(), tok.vocab_size(), tok.eos_id().value_or(-1));
  for (const auto& p : inputs) {
    auto mtime = fs::last_write_time(p).time_since_epoch().count();
    m += fmt::format("{}\t{}\t{}\n", p.string(), fs::file_size(p), mtime);
  }
  return fnv1a(m);
}

TokenCache TokenCache::open_or_build(const std::vector<std::string>& paths, const Tokenizer& tok,
                                     const std::string& cache_dir, bool quiet,
                                     size_t piece_bytes) {
  TokenCache cache;
  cache.inputs_ = expand_input_paths(paths);
  cache.key_ = compute_key(cache.inputs_, tok);
  fs::path dir(cache_dir);
  fs::path file = dir / fmt::format("{:016x}.tok", cache.key_);

  std::string why;
  if (fs::exists(file)) {
    if (cache.map_and_validate(file, cache.key_, why)) return cache;
    spdlog::warn("[token cache] {} is unusable ({}); rebuilding it", file.string(), why);
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  MG_CHECK(!ec, "[token cache] cannot create cache directory {} ({}); set data.cache_dir to a "
           "writable place", dir.string(), ec.message());
  const int32_t vocab = tok.vocab_size();
  const int bpt = vocab <= 65536 ? 2 : 4;
  const std::optional<int32_t> eos = tok.eos_id();
  fs::path tmp = file;
  tmp += fmt::format(".tmp.{}", ::getpid());

  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  MG_CHECK(f != nullptr, "[token cache] cannot write {} ({}); set data.cache_dir to a writable "
           "place", tmp.string(), std::strerror(errno));
  try {
    Header h{};
    MG_CHECK(std::fwrite(&h, sizeof h, 1, f) == 1, "[token cache] writing {} failed",
             tmp.string());
    int64_t total_bytes = 0;
    for (const auto& p : cache.inputs_) total_bytes += static_cast<int64_t>(fs::file_size(p));
    spdlog::info("[token cache] tokenizing {} file(s), {:.1f} MB, with {} into {}",
                 cache.inputs_.size(), total_bytes / 1e6, tok.kind(), file.string());
    Progress progress("tokenize", total_bytes, "B", quiet, 10.0);
    IdWriter writer(f, bpt, vocab, tmp);
    // Pieces are encoded a group at a time, two per thread, so all cores tokenize while at
    // most 2 * threads * piece_bytes of text is held in memory.
    const size_t threads = static_cast<size_t>(std::max(1, omp_get_max_threads()));
    const size_t group = 2 * threads;
    // Small corpora get smaller pieces (>= 64 KiB, still long enough to amortize a call), so
    // that there are a few per thread and all cores work.
    const size_t piece = std::min(piece_bytes, std::max<size_t>(size_t{64} << 10,
                                  static_cast<size_t>(total_bytes) / (4 * threads)));
    std::vector<Piece> pieces;
    int64_t bytes_read = 0;
    std::string text(std::max<size_t>(piece, 1), '\0');
    for (const auto& p : cache.inputs_) {
      require_regular_file(p.string(), "[data.path]");
      std::ifstream in(p, std::ios::binary);
      MG_CHECK(in.good(), "[token cache] cannot read {}; check its permissions", p.string());
      std::string pending;  // read, not yet cut into a piece
      while (true) {
        in.read(text.data(), static_cast<std::streamsize>(text.size()));
        size_t got = static_cast<size_t>(in.gcount());
        MG_CHECK(!in.bad(), "[token cache] read error in {}", p.string());
        const size_t old_size = pending.size();
        pending.append(text.data(), got);
        bytes_read += static_cast<int64_t>(got);
        const bool at_end = in.eof() || got == 0;
        const size_t cut = at_end ? pending.size()
                                  : last_safe_cut(pending, old_size > 0 ? old_size - 1 : 0);
        if (cut > 0 || at_end) {
          pieces.push_back({pending.substr(0, cut), &p, at_end});
          pending.erase(0, cut);
        }
        if (pieces.size() >= group) {
          encode_pieces(pieces, tok, eos, writer);
          progress.update(bytes_read - static_cast<int64_t>(pending.size()));
        }
        if (at_end) break;
      }
    }
    encode_pieces(pieces, tok, eos, writer);
    writer.flush();
    progress.finish();

    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kTokenCacheVersion;
    h.bytes_per_token = static_cast<uint32_t>(bpt);
    h.count = writer.count();
    h.key = cache.key_;
    h.checksum = writer.checksum();
    h.vocab_size = static_cast<uint32_t>(vocab);
    h.n_files = static_cast<uint32_t>(cache.inputs_.size());
    MG_CHECK(std::fseek(f, 0, SEEK_SET) == 0 && std::fwrite(&h, sizeof h, 1, f) == 1 &&
                 std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0,
             "[token cache] finishing {} failed ({}); check free disk space", tmp.string(),
             std::strerror(errno));
    std::fclose(f);
    f = nullptr;
    fs::rename(tmp, file);  // atomic: readers see the old file or the whole new one
  } catch (...) {
    if (f) std::fclose(f);
    fs::remove(tmp, ec);
    throw;
  }

  MG_CHECK(cache.map_and_validate(file, cache.key_, why),
           "[token cache] {} fails validation right after being built ({}); is another process "
           "writing to {}?", file.string(), why, dir.string());
  {  // informational manifest; a failure to write it is not worth failing the run for
    std::ofstream out(dir / fmt::format("{:016x}.json", cache.key_));
    out << manifest_json(cache.inputs_, tok, cache.key_, static_cast<uint64_t>(cache.count_), bpt);
  }
  cache.built_ = true;
  return cache;
}

bool TokenCache::map_and_validate(const fs::path& file, uint64_t key, std::string& why) {
  unmap();
  if (const std::string kind = file_kind(file.string()); kind != "a regular file") {  // a FIFO would block open
    why = kind + ", not a regular file";
    return false;
  }
  int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) {
    why = fmt::format("cannot open: {}", std::strerror(errno));
    return false;
  }
  struct stat st {};
  ::fstat(fd, &st);
  size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes < kHeaderBytes) {
    ::close(fd);
    why = fmt::format("truncated: {} bytes, smaller than the {}-byte header", bytes, kHeaderBytes);
    return false;
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    why = fmt::format("mmap failed: {}", std::strerror(errno));
    return false;
  }
  map_ = map;
  map_bytes_ = bytes;
  Header h;
  std::memcpy(&h, map, sizeof h);
  const unsigned char* ids = static_cast<const unsigned char*>(map) + kHeaderBytes;

  auto fail = [&](std::string reason) {
    why = std::move(reason);
    unmap();
    return false;
  };
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return fail("bad magic");
  if (h.version != kTokenCacheVersion)
    return fail(fmt::format("format version {} (this build reads {})", h.version,
                            kTokenCacheVersion));
  if (h.key != key) return fail("key in the header does not match the inputs");
  if (h.bytes_per_token != 2 && h.bytes_per_token != 4)
    return fail(fmt::format("bytes per token {}", h.bytes_per_token));
  if (h.count > (bytes - kHeaderBytes) / h.bytes_per_token ||
      kHeaderBytes + h.count * h.bytes_per_token != bytes)
    return fail(fmt::format("size {} bytes does not match {} tokens of {} bytes (truncated?)",
                            bytes, h.count, h.bytes_per_token));
  size_t id_bytes = bytes - kHeaderBytes;
  if (checksum_update(kChecksumSeed, ids, id_bytes) != h.checksum)
    return fail("checksum mismatch (corrupted)");
  uint32_t max_id = 0;
  if (h.bytes_per_token == 2) {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(ids);
    for (uint64_t i = 0; i < h.count; ++i) max_id = std::max<uint32_t>(max_id, v[i]);
  } else {
    const uint32_t* v = reinterpret_cast<const uint32_t*>(ids);
    for (uint64_t i = 0; i < h.count; ++i) max_id = std::max<uint32_t>(max_id, v[i]);
  }
  if (h.count > 0 && max_id >= h.vocab_size)
    return fail(fmt::format("id {} >= vocab size {}", max_id, h.vocab_size));

  file_ = file;
  data_ = ids;
  count_ = static_cast<int64_t>(h.count);
  bytes_per_token_ = static_cast<int>(h.bytes_per_token);
  vocab_size_ = static_cast<int32_t>(h.vocab_size);
  return true;
}

void TokenCache::copy(int64_t start, int64_t n, int32_t* out) const {
  MG_CHECK(start >= 0 && n >= 0 && start + n <= count_,
           "[token cache] range [{}, {}) is outside the {} tokens of {}", start, start + n,
           count_, file_.string());
  if (bytes_per_token_ == 2) {
    const uint16_t* v = static_cast<const uint16_t*>(data_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = v[i];
  } else {
    const uint32_t* v = static_cast<const uint32_t*>(data_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(v[i]);
  }
}

void TokenCache::unmap() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  data_ = nullptr;
  count_ = 0;
}

TokenCache::~TokenCache() { unmap(); }

TokenCache::TokenCache(TokenCache&& o) noexcept { *this = std::move(o); }

TokenCache& TokenCache::operator=(TokenCache&& o) noexcept {
  if (this != &o) {
    unmap();
    file_ = std::move(o.file_);
    inputs_ = std::move(o.inputs_);
    map_ = o.map_, map_bytes_ = o.map_bytes_, data_ = o.data_, count_ = o.count_;
    bytes_per_token_ = o.bytes_per_token_, vocab_size_ = o.vocab_size_;
    key_ = o.key_, built_ = o.built_;
    o.map_ = nullptr, o.map_bytes_ = 0, o.data_ = nullptr, o.count_ = 0;
  }
  return *this;
}

}  // namespace mg
