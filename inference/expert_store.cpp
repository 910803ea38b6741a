#include "inference/expert_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "autograd/half.h"
#include "checkpoints/atomic_save.h"
#include "checkpoints/h5_file.h"
#include "checkpoints/model_io.h"
#include "experiments/config_loader.h"
#include "inference/load_model.h"
#include "trainer/checkpoint_state.h"
#include "util/crc32c.h"
#include "util/progress.h"
#include "util/regular_file.h"

namespace fs = std::filesystem;

namespace mg {

namespace {

constexpr char kMagic[8] = {'M', 'G', 'E', 'X', 'P', 'E', 'R', 'T'};
// 1: no checksums (refused: export again). 2: each index entry carries its record's CRC32C.
constexpr uint32_t kVersion = 2;

// The first bytes of the file (padded to kExpertStoreAlign). Little-endian, as x86-64 writes it.
struct RawHeader {
  char magic[8];
  uint32_t version;
  uint32_t payload;        // ExpertPayload
  int64_t d_model, expert_hidden, n_experts;
  int64_t matrices_per_expert;  // 2 (gelu: up, down) or 3 (swiglu: up, down, gate)
  int64_t alignment;
  int64_t n_entries;
  int64_t index_offset;       // RawEntry[n_entries]
  int64_t provenance_offset;  // text
  int64_t provenance_bytes;
  int64_t file_size;
};
struct RawEntry {
  int32_t layer, expert;
  int64_t offset, bytes;
  uint32_t crc32c;    // CRC32C of the record's `bytes` bytes
  uint32_t reserved;  // 0
};
static_assert(sizeof(RawHeader) == 96 && sizeof(RawEntry) == 32);

int64_t align_up(int64_t n) { return (n + kExpertStoreAlign - 1) / kExpertStoreAlign * kExpertStoreAlign; }
int64_t align4(int64_t n) { return (n + 3) / 4 * 4; }

// The matrix shapes of an expert, in record order: up [F,C], down [C,F], gate [F,C].
std::vector<std::pair<int64_t, int64_t>> matrix_shapes(int64_t C, int64_t F, int n_matrices) {
  std::vector<std::pair<int64_t, int64_t>> s{{F, C}, {C, F}};
  if (n_matrices == 3) s.emplace_back(F, C);
  return s;
}

int64_t nf4_record_bytes(int64_t rows, int64_t cols) {
  NF4Weight w;
  w.rows = rows, w.cols = cols;
  return align4((w.numel() + 1) / 2 + w.n_blocks()) + 4 * w.n_absmax_blocks() + 4;
}

int64_t matrix_record_bytes(ExpertPayload p, int64_t rows, int64_t cols) {
  return p == ExpertPayload::NF4 ? nf4_record_bytes(rows, cols) : 2 * rows * cols;
}

int64_t record_bytes(ExpertPayload p, int64_t C, int64_t F, int n_matrices) {
  int64_t b = 0;
  for (auto [r, c] : matrix_shapes(C, F, n_matrices)) b += matrix_record_bytes(p, r, c);
  return b;
}

// Serializes one matrix of a record into `out` (matrix_record_bytes of it).
void encode_matrix(ExpertPayload p, const NF4Weight* q, const float* dense, int64_t rows, int64_t cols, uint8_t* out) {
  if (p == ExpertPayload::F16) {
    auto* h = reinterpret_cast<uint16_t*>(out);
    for (int64_t i = 0; i < rows * cols; ++i) h[i] = float_to_half(dense[i]);
    return;
  }
  std::memcpy(out, q->packed.data(), q->packed.size());
  std::memcpy(out + q->packed.size(), q->absmax_codes.data(), q->absmax_codes.size());
  uint8_t* s = out + align4(static_cast<int64_t>(q->packed.size() + q->absmax_codes.size()));
  std::memcpy(s, q->absmax_scales.data(), 4 * q->absmax_scales.size());
  std::memcpy(s + 4 * q->absmax_scales.size(), &q->absmax_offset, 4);
}

// Where each byte of a record goes: the arrays of the expert's matrices in record order
// (nf4: packed, absmax_codes, padding, absmax_scales, absmax_offset; f16: halves that widen
// into the float32 weight). `to_float`: the segment's bytes are halves to widen.
struct Segment {
  uint8_t* dst;  // null: padding, skipped
  int64_t bytes;
  bool to_float = false;
};

std::vector<Segment> record_segments(ExpertPayload p, Expert& ex) {
  std::vector<Segment> segs;
  for (Linear* l : {&ex.up, &ex.down, ex.gate.get()}) {
    if (!l) continue;
    if (p == ExpertPayload::F16) {
      segs.push_back({reinterpret_cast<uint8_t*>(l->weight.data<float>()), 2 * l->weight.numel(), true});
      continue;
    }
    NF4Weight& q = *l->quantized();
    const int64_t head = static_cast<int64_t>(q.packed.size() + q.absmax_codes.size());
    segs.push_back({q.packed.data(), static_cast<int64_t>(q.packed.size())});
    segs.push_back({q.absmax_codes.data(), static_cast<int64_t>(q.absmax_codes.size())});
    segs.push_back({nullptr, align4(head) - head});
    segs.push_back({reinterpret_cast<uint8_t*>(q.absmax_scales.data()), 4 * static_cast<int64_t>(q.absmax_scales.size())});
    segs.push_back({reinterpret_cast<uint8_t*>(&q.absmax_offset), 4});
  }
  return segs;
}

// The MoE layer indices of a config ('E' in layer_pattern).
std::vector<int> moe_layers(const ModelConfig& m) {
  std::vector<int> out;
  for (int i = 0; i < m.n_layers(); ++i)
    if (m.layer_pattern[i] == 'E') out.push_back(i);
  return out;
}

void write_all(int fd, const void* data, int64_t n, int64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, static_cast<size_t>(n), offset);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error(fmt::format("write to {} failed: {}", path, std::strerror(errno)));
    p += w, n -= w, offset += w;
  }
}

}  // namespace

const char* expert_payload_name(ExpertPayload p) { return p == ExpertPayload::NF4 ? "nf4" : "f16"; }

ExpertPayload parse_expert_payload(const std::string& s) {
  if (s == "nf4") return ExpertPayload::NF4;
  if (s == "f16") return ExpertPayload::F16;
  throw Error(fmt::format("[experts] unknown expert payload '{}': use nf4 or f16", s));
}

std::string default_expert_store_path(const std::string& checkpoint_file) {
  return fs::path(checkpoint_file).replace_extension(".experts").string();
}

ExportReport export_expert_store(const std::string& checkpoint, const std::string& out, ExpertPayload payload,
                                 bool quiet) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string path = resolve_checkpoint_path(checkpoint);
  H5File f = H5File::open_read(path);
  check_checkpoint_format(f);
  const ExperimentConfig cfg = load_config_text(f.string_attr("/", "config"), path + ":/config").config;
  const ModelConfig& m = cfg.model;
  const std::vector<int> layers = moe_layers(m);
  MG_CHECK(!layers.empty(), "[experts] {} has no MoE layers (model.layer_pattern '{}' has no E): nothing to "
           "stream", path, m.layer_pattern);
  auto refuse_expert_adapters = [](const H5File& h) {
    if (!h.is_group("/adapter")) return;
    for (const std::string& a : h.list("/adapter"))
      MG_CHECK(a.find(".experts.") == std::string::npos,
               "[experts] {} has a LoRA adapter on an expert ({}): merge it first (magellan merge-lora) and "
               "export the merged checkpoint",
               h.path(), a);
  };
  refuse_expert_adapters(f);
  // An adapter-only checkpoint's experts are its base's.
  H5File weights = f.has_attr("/", "kind") && f.string_attr("/", "kind") == "adapter"
                       ? H5File::open_read(f.string_attr("/", "base_checkpoint"))
                       : H5File::open_read(path);
  refuse_expert_adapters(weights);

  const int n_matrices = m.expert_mlp == ExpertMlp::Swiglu ? 3 : 2;
  const int64_t C = m.d_model, F = m.expert_hidden, E = m.n_experts;
  const int64_t rec_bytes = record_bytes(payload, C, F, n_matrices);
  const std::string provenance = fmt::format("checkpoint={}\nstep={}\ncreated={}\n", weights.path(),
                                             weights.int_attr("/", "step"), weights.string_attr("/", "created"));

  RawHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.payload = static_cast<uint32_t>(payload);
  h.d_model = C, h.expert_hidden = F, h.n_experts = E, h.matrices_per_expert = n_matrices;
  h.alignment = kExpertStoreAlign;
  h.n_entries = static_cast<int64_t>(layers.size()) * E;
  h.index_offset = kExpertStoreAlign;
  h.provenance_offset = h.index_offset + h.n_entries * static_cast<int64_t>(sizeof(RawEntry));
  h.provenance_bytes = static_cast<int64_t>(provenance.size());
  std::vector<RawEntry> index;
  int64_t offset = align_up(h.provenance_offset + h.provenance_bytes);
  for (int layer : layers)
    for (int64_t e = 0; e < E; ++e) {
      index.push_back({layer, static_cast<int32_t>(e), offset, rec_bytes, 0, 0});
      offset += align_up(rec_bytes);
    }
  h.file_size = offset;

  ExportReport rep;
  rep.bytes = h.file_size;
  Progress progress("export experts", h.n_entries, "expert", quiet);
  atomic_write(out, [&](const std::string& temp) {
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(fmt::format("cannot create {}: {}", temp, std::strerror(errno)));
    try {
      write_all(fd, &h, sizeof h, 0, temp);
      write_all(fd, provenance.data(), h.provenance_bytes, h.provenance_offset, temp);
      std::vector<uint8_t> rec(static_cast<size_t>(align_up(rec_bytes)));  // zero padding stays zero
      for (RawEntry& en : index) {
        const std::string prefix = fmt::format("layers.{}.mixer.experts.{}.", en.layer, en.expert);
        int64_t at = 0;
        const char* names[3] = {"up", "down", "gate"};
        for (int mi = 0; mi < n_matrices; ++mi) {
          const auto [rows, cols] = matrix_shapes(C, F, n_matrices)[mi];
          const std::string q_group = "/quantized/" + prefix + names[mi] + ".weight";
          const std::string dense_path = "/model/" + prefix + names[mi] + ".weight";
          std::shared_ptr<NF4Weight> q;
          std::vector<float> dense;
          if (weights.is_group(q_group)) {
            q = read_nf4_weight(weights, q_group);
            if (payload == ExpertPayload::F16) dense = nf4_dequantize(*q);
          } else {
            MG_CHECK(weights.exists(dense_path), "[experts] {} has neither {} nor {}", weights.path(), q_group,
                     dense_path);
            dense.resize(static_cast<size_t>(rows * cols));
            weights.read(dense_path, DType::F32, {rows, cols}, dense.data());
            if (payload == ExpertPayload::NF4) {
              q = std::make_shared<NF4Weight>(nf4_quantize(dense.data(), rows, cols));
              rep.quantized = true;
            }
          }
          MG_CHECK(!q || (q->rows == rows && q->cols == cols), "[experts] {}: {} is [{}, {}], the config says [{}, {}]",
                   weights.path(), q_group, q->rows, q->cols, rows, cols);
          encode_matrix(payload, q.get(), dense.data(), rows, cols, rec.data() + at);
          at += matrix_record_bytes(payload, rows, cols);
          rep.params += rows * cols;
        }
        en.crc32c = crc32c(rec.data(), static_cast<size_t>(rec_bytes));
        write_all(fd, rec.data(), align_up(rec_bytes), en.offset, temp);
        ++rep.experts;
        progress.advance(1);
      }
      // The index last: it holds the records' checksums.
      write_all(fd, index.data(), static_cast<int64_t>(index.size() * sizeof(RawEntry)), h.index_offset, temp);
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::close(fd) != 0) throw Error(fmt::format("closing {} failed: {}", temp, std::strerror(errno)));
  });
  progress.finish();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

// --- reading ----------------------------------------------------------------------------------

ExpertStore::ExpertStore(const std::string& path, bool direct_io) : path_(path), direct_(direct_io) {
  const std::string hint = "; export it again with: magellan export-experts --checkpoint CKPT -o " + path;
  // Header, index and provenance through an ordinary descriptor (no alignment rules).
  require_regular_file(path, "[experts]");
  const int hfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (hfd < 0) throw Error(fmt::format("[experts] cannot open expert store {}: {}", path, std::strerror(errno)));
  struct stat st {};
  ::fstat(hfd, &st);
  auto read_at = [&](void* buf, int64_t n, int64_t off, const char* what) {
    const ssize_t r = ::pread(hfd, buf, static_cast<size_t>(n), off);
    if (r != n) {
      ::close(hfd);
      throw Error(fmt::format("[experts] {}: cannot read the {} (file too short){}", path, what, hint));
    }
  };
  RawHeader h{};
  read_at(&h, sizeof h, 0, "header");
  auto fail = [&](const std::string& why) {
    ::close(hfd);
    throw Error(fmt::format("[experts] {}: {}{}", path, why, hint));
  };
  if (std::memcmp(h.magic, kMagic, 8) != 0) fail("not a magellan expert store (bad magic)");
  if (h.version < kVersion)
    fail(fmt::format("format version {} is older than this build's {} (it has no record checksums, written by an "
                     "older magellan)", h.version, kVersion));
  if (h.version != kVersion)
    fail(fmt::format("format version {} is not {} (this build's; written by a newer magellan?)", h.version, kVersion));
  if (h.payload != 1 && h.payload != 2) fail(fmt::format("unknown payload kind {}", h.payload));
  if (h.d_model <= 0 || h.expert_hidden <= 0 || h.n_experts <= 0 || (h.matrices_per_expert != 2 && h.matrices_per_expert != 3) ||
      h.alignment != kExpertStoreAlign || h.n_entries <= 0 || h.n_entries > (1 << 24))
    fail("corrupt header");
  if (st.st_size != h.file_size)
    fail(fmt::format("size {} bytes, the header says {} (truncated or damaged)", static_cast<int64_t>(st.st_size),
                     h.file_size));
  payload_ = static_cast<ExpertPayload>(h.payload);
  C_ = h.d_model, F_ = h.expert_hidden, E_ = h.n_experts, n_matrices_ = static_cast<int>(h.matrices_per_expert);
  const int64_t rec = record_bytes(payload_, C_, F_, n_matrices_);
  std::vector<RawEntry> raw(static_cast<size_t>(h.n_entries));
  if (h.index_offset < 0 || h.provenance_offset < 0 || h.provenance_bytes < 0 || h.provenance_bytes > (1 << 20) ||
      h.index_offset + h.n_entries * static_cast<int64_t>(sizeof(RawEntry)) > h.file_size ||
      h.provenance_offset + h.provenance_bytes > h.file_size)
    fail("corrupt header (index outside the file)");
  read_at(raw.data(), h.n_entries * static_cast<int64_t>(sizeof(RawEntry)), h.index_offset, "index");
  std::string prov(static_cast<size_t>(h.provenance_bytes), '\0');
  read_at(prov.data(), h.provenance_bytes, h.provenance_offset, "provenance");
  ::close(hfd);
  for (const RawEntry& r : raw) {
    if (r.bytes != rec || r.offset % kExpertStoreAlign != 0 || r.offset < 0 || r.offset + align_up(r.bytes) > h.file_size ||
        r.expert < 0 || r.expert >= E_ || r.layer < 0 || r.reserved != 0)
      throw Error(fmt::format("[experts] {}: corrupt index entry (layer {}, expert {}){}", path, r.layer, r.expert, hint));
    entries_.push_back({r.layer, r.expert, r.offset, r.bytes, r.crc32c});
  }
  max_read_bytes_ = align_up(rec);
  for (size_t pos = 0; pos < prov.size();) {
    const size_t eol = std::min(prov.find('\n', pos), prov.size());
    const std::string line = prov.substr(pos, eol - pos);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) {
      const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
      if (k == "checkpoint") source_.checkpoint = v;
      if (k == "step") source_.step = std::stoll(v);
      if (k == "created") source_.created = v;
    }
    pos = eol + 1;
  }

  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct_io ? O_DIRECT : 0));
  if (fd_ < 0)
    throw Error(fmt::format("[experts] cannot open {}{}: {}{}", path, direct_io ? " with O_DIRECT" : "",
                            std::strerror(errno),
                            direct_io ? " (the file system may not support direct I/O: drop --direct-io)" : ""));
}

ExpertStore::~ExpertStore() {
  if (fd_ >= 0) ::close(fd_);
}

int64_t ExpertStore::total_record_bytes() const {
  int64_t n = 0;
  for (const auto& e : entries_) n += e.bytes;
  return n;
}

void ExpertStore::check_matches(const ModelConfig& m) const {
  auto differ = [&](const char* what, int64_t store, int64_t model) {
    if (store != model)
      throw Error(fmt::format("[experts] {} does not fit this model: {} is {} in the store, {} in the config (was "
                              "it exported from another checkpoint?)",
                              path_, what, store, model));
  };
  differ("d_model", C_, m.d_model);
  differ("expert_hidden", F_, m.expert_hidden);
  differ("n_experts", E_, m.n_experts);
  differ("matrices per expert (gelu 2, swiglu 3)", n_matrices_, m.expert_mlp == ExpertMlp::Swiglu ? 3 : 2);
  const std::vector<int> layers = moe_layers(m);
  differ("expert count", static_cast<int64_t>(entries_.size()), static_cast<int64_t>(layers.size()) * E_);
  for (int layer : layers)
    for (int64_t e = 0; e < E_; ++e) entry(layer, static_cast<int>(e));
}

const ExpertStoreEntry& ExpertStore::entry(int layer, int expert) const {
  for (const auto& e : entries_)  // small: layers * experts entries
    if (e.layer == layer && e.expert == expert) return e;
  throw Error(fmt::format("[experts] {} has no expert {} for layer {}", path_, expert, layer));
}

std::shared_ptr<Expert> ExpertStore::new_expert(ExpertMlp mlp) const {
  // nf4: meta Linears given NF4 bases of the right sizes; f16: float32 Linears.
  const bool nf4 = payload_ == ExpertPayload::NF4;
  auto ex = std::make_shared<Expert>(C_, F_, mlp, DType::F32, /*meta=*/nf4);
  for (Linear* l : {&ex->up, &ex->down, ex->gate.get()}) {
    if (!l) continue;
    l->weight.set_requires_grad(false);
    if (!nf4) continue;
    auto q = std::make_shared<NF4Weight>();
    q->rows = l->out_features, q->cols = l->in_features;
    q->packed.resize(static_cast<size_t>((q->numel() + 1) / 2));
    q->absmax_codes.resize(static_cast<size_t>(q->n_blocks()));
    q->absmax_scales.resize(static_cast<size_t>(q->n_absmax_blocks()));
    l->set_quantized(std::move(q));
  }
  return ex;
}

namespace {
// Reads exactly n bytes at `offset` (looping over short reads); throws naming the expert.
void pread_full(int fd, void* dst, int64_t n, int64_t offset, const ExpertStoreEntry& e, const std::string& path) {
  for (int64_t got = 0; got < n;) {
    const ssize_t r = ::pread(fd, static_cast<uint8_t*>(dst) + got, static_cast<size_t>(n - got), offset + got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      throw Error(fmt::format("[experts] reading expert {} of layer {} from {} failed: {}", e.expert, e.layer, path,
                              r == 0 ? "unexpected end of file" : std::strerror(errno)));
    got += r;
  }
}
}  // namespace

int64_t ExpertStore::read_into(const ExpertStoreEntry& e, Expert& dst, void* chunk, int64_t chunk_bytes) const {
  MG_CHECK(chunk_bytes > 0 && chunk_bytes % kExpertStoreAlign == 0, "[experts] read chunk of {} bytes is not a "
           "multiple of {}", chunk_bytes, kExpertStoreAlign);
  const std::vector<Segment> segs = record_segments(payload_, dst);
  if (!direct_ && payload_ == ExpertPayload::NF4) {
    // Buffered: the kernel copies straight from the page cache into the expert's arrays (one
    // copy instead of two); sequential preads over the contiguous record.
    int64_t at = e.offset;
    uint32_t crc = 0;
    for (const Segment& s : segs) {
      uint8_t pad[4];  // the alignment padding inside the record (< 4 bytes) is checked too
      MG_CHECK(s.dst || s.bytes <= 4, "[experts] internal: padding of {} bytes", s.bytes);
      uint8_t* dst = s.dst ? s.dst : pad;
      pread_full(fd_, dst, s.bytes, at, e, path_);
      crc = crc32c(dst, static_cast<size_t>(s.bytes), crc);
      at += s.bytes;
    }
    MG_CHECK(at - e.offset == e.bytes, "[experts] {}: record of expert {} in layer {} does not match its matrices",
             path_, e.expert, e.layer);
    if (crc != e.crc32c) throw_damaged(e, crc);
    return e.bytes;
  }
  // O_DIRECT (or f16, which widens): aligned chunks, each scattered into the expert's arrays.
  size_t seg = 0;
  int64_t seg_done = 0;  // bytes of segs[seg] already filled
  uint32_t crc = 0;
  const int64_t total = align_up(e.bytes);  // whole aligned blocks (O_DIRECT)
  for (int64_t done = 0; done < total;) {
    const int64_t want = std::min(chunk_bytes, total - done);
    pread_full(fd_, chunk, want, e.offset + done, e, path_);
    const uint8_t* src = static_cast<const uint8_t*>(chunk);
    crc = crc32c(src, static_cast<size_t>(std::min(want, std::max<int64_t>(e.bytes - done, 0))), crc);
    for (int64_t left = want; left > 0 && seg < segs.size();) {  // the padding after the record is dropped
      const Segment& s = segs[seg];
      const int64_t n = std::min(left, s.bytes - seg_done);
      if (s.dst && s.to_float) {  // halves never straddle a chunk: offsets and chunks are even
        const auto* h = reinterpret_cast<const uint16_t*>(src);
        float* f = reinterpret_cast<float*>(s.dst) + seg_done / 2;
        for (int64_t i = 0; i < n / 2; ++i) f[i] = half_to_float(h[i]);
      } else if (s.dst) {
        std::memcpy(s.dst + seg_done, src, static_cast<size_t>(n));
      }
      src += n, left -= n, seg_done += n;
      if (seg_done == s.bytes) ++seg, seg_done = 0;
    }
    done += want;
  }
  MG_CHECK(seg == segs.size(), "[experts] {}: record of expert {} in layer {} is shorter than its matrices", path_,
           e.expert, e.layer);
  if (crc != e.crc32c) throw_damaged(e, crc);
  return total;
}

void ExpertStore::verify(const ExpertStoreEntry& e, void* chunk, int64_t chunk_bytes) const {
  MG_CHECK(chunk_bytes > 0 && chunk_bytes % kExpertStoreAlign == 0, "[experts] read chunk of {} bytes is not a "
           "multiple of {}", chunk_bytes, kExpertStoreAlign);
  uint32_t crc = 0;
  for (int64_t done = 0; done < e.bytes;) {
    const int64_t want = std::min(chunk_bytes, align_up(e.bytes) - done);  // whole blocks (O_DIRECT)
    pread_full(fd_, chunk, want, e.offset + done, e, path_);
    crc = crc32c(chunk, static_cast<size_t>(std::min(want, e.bytes - done)), crc);
    done += want;
  }
  if (crc != e.crc32c) throw_damaged(e, crc);
}

void ExpertStore::throw_damaged(const ExpertStoreEntry& e, uint32_t got) const {
  throw Error(fmt::format(
      "[experts] {}: expert {} of layer {} is damaged (its record's CRC32C is {:08x}, the index says {:08x}): the "
      "file is damaged; export it again with: magellan export-experts --checkpoint CKPT -o {}",
      path_, e.expert, e.layer, got, e.crc32c, path_));
}

int64_t ExpertStore::decoded_bytes() const {
  int64_t b = 0;
  for (auto [r, c] : matrix_shapes(C_, F_, n_matrices_)) {
    if (payload_ == ExpertPayload::F16) {
      b += 4 * r * c;
    } else {
      NF4Weight w;  // sizes only
      w.rows = r, w.cols = c;
      b += (w.numel() + 1) / 2 + w.n_blocks() + 4 * w.n_absmax_blocks() + 4;  // = NF4Weight::bytes()
    }
  }
  return b;
}

void ExpertStore::drop_page_cache() const {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

}  // namespace mg
