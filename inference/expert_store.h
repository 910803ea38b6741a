#pragma once
// The expert store: every MoE expert of a checkpoint in one file, each expert one contiguous,
// 4096-aligned record, so that streaming inference (inference/expert_stream.h) reads an expert
// in one sequential pass (O_DIRECT-able). Full layout in docs/inference.md; in short, all
// integers little-endian:
//
//   [0, 4096)       header: magic "MGEXPERT", version, payload kind, d_model C, expert_hidden
//                   F, n_experts E, matrices per expert (2 gelu | 3 swiglu), alignment, entry
//                   count, index and provenance offsets, file size
//   index           one entry per (MoE layer, expert): layer (model layer index), expert,
//                   record offset, record bytes (unpadded), the record's CRC32C (version 2),
//                   in layer-then-expert order
//   provenance      text "key=value" lines: source checkpoint, its step and `created` stamp
//   records         4096-aligned; each the expert's matrices in the order up, down, gate:
//     nf4 payload   per matrix: packed (n+1)/2 B | absmax_codes n_blocks B | pad to 4 |
//                   absmax_scales 4*n_absmax_blocks B | absmax_offset 4 B   (model/nf4.h)
//     f16 payload   per matrix: rows*cols IEEE half
//                   matrix shapes: up [F,C], down [C,F], gate [F,C] (design.md §3)
// The records are padded to the alignment, so a whole-record O_DIRECT read never passes the end
// of the file. Every read of a record checks its CRC32C (over the unpadded bytes) against the
// index: a damaged record is an error naming the file, layer and expert, never used.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "experiments/config.h"
#include "model/moe_block.h"

namespace mg {

enum class ExpertPayload : uint32_t { NF4 = 1, F16 = 2 };
const char* expert_payload_name(ExpertPayload p);  // "nf4" | "f16"
ExpertPayload parse_expert_payload(const std::string& s);  // throws on anything else

constexpr int64_t kExpertStoreAlign = 4096;  // record offsets and sizes; O_DIRECT's unit

struct ExpertStoreEntry {
  int32_t layer = 0, expert = 0;
  int64_t offset = 0, bytes = 0;  // bytes: unpadded record size
  uint32_t crc32c = 0;             // of the record's `bytes` bytes (util/crc32c.h)
};

// Where a store's experts came from: checked against the checkpoint it is used with.
struct ExpertStoreSource {
  std::string checkpoint;  // path as given at export
  int64_t step = 0;
  std::string created;     // the checkpoint's `created` root attribute
};

struct ExportReport {
  int64_t experts = 0, bytes = 0;  // records written, file size
  int64_t params = 0;              // expert parameters
  bool quantized = false;          // float32 experts were quantized to NF4 on export
  double seconds = 0;
};

// Writes the experts of `checkpoint` (a file or run dir; for an adapter-only checkpoint, its
// base's experts) to `out`, atomically (temp file, fsync, rename: an existing `out` stays intact
// on any error). Float32 experts are quantized for the nf4 payload (dequantized NF4 ones
// rounded for f16). Refuses a checkpoint whose LoRA adapters touch experts (merge them first).
// `quiet` silences the progress line.
ExportReport export_expert_store(const std::string& checkpoint, const std::string& out, ExpertPayload payload,
                                 bool quiet = false);

// The default store path of a checkpoint: "x/step_100.h5" -> "x/step_100.experts".
std::string default_expert_store_path(const std::string& checkpoint_file);

// An open store. Reads are thread-safe (pread on one descriptor).
class ExpertStore {
 public:
  // direct_io: open with O_DIRECT (reads bypass the page cache); throws, naming the file,
  // when the file system refuses it.
  ExpertStore(const std::string& path, bool direct_io);
  ~ExpertStore();
  ExpertStore(const ExpertStore&) = delete;
  ExpertStore& operator=(const ExpertStore&) = delete;

  const std::string& path() const { return path_; }
  ExpertPayload payload() const { return payload_; }
  int64_t d_model() const { return C_; }
  int64_t expert_hidden() const { return F_; }
  int64_t n_experts() const { return E_; }
  int matrices_per_expert() const { return n_matrices_; }
  const std::vector<ExpertStoreEntry>& entries() const { return entries_; }
  const ExpertStoreSource& source() const { return source_; }
  bool direct_io() const { return direct_; }
  int64_t total_record_bytes() const;  // sum of unpadded record sizes (the experts' bytes)
  // Largest padded record: what one expert read takes from disk.
  int64_t max_read_bytes() const { return max_read_bytes_; }

  // Throws, naming the store and the differing field, unless it holds exactly the experts of
  // this model config (C, F, E, expert_mlp, the MoE layers of layer_pattern).
  void check_matches(const ModelConfig& cfg) const;

  const ExpertStoreEntry& entry(int layer, int expert) const;  // throws if absent

  // An expert of the store's shapes, its weights allocated but not yet read (NF4 Linears, or
  // float32 ones for the f16 payload): what read_into fills.
  std::shared_ptr<Expert> new_expert(ExpertMlp mlp) const;
  // Reads record `e` into `dst` (made by new_expert; a cache reuses an evicted one), as one
  // sequential pass over the contiguous record. Buffered nf4: preads straight into the
  // expert's arrays. O_DIRECT (and f16): aligned preads of `chunk_bytes` (a multiple of
  // kExpertStoreAlign) into `chunk` (aligned to it), each scattered into the arrays, so the
  // only buffer besides the expert is one chunk. Returns the bytes read from the file. Checks
  // the record's CRC32C on the way: a mismatch throws (naming the file, layer and expert) and
  // leaves `dst` holding unusable bytes.
  int64_t read_into(const ExpertStoreEntry& e, Expert& dst, void* chunk, int64_t chunk_bytes) const;
  // Reads record `e` through `chunk` (as read_into) and checks its CRC32C without decoding:
  // throws as read_into does on a mismatch. For `magellan export-experts --verify`.
  void verify(const ExpertStoreEntry& e, void* chunk, int64_t chunk_bytes) const;
  static constexpr int64_t kReadChunkBytes = int64_t{1} << 20;  // 1 MiB: full disk speed here
  // Memory the decoded expert takes (what a cache of decoded experts counts).
  int64_t decoded_bytes() const;
  // Asks the kernel to drop this file's cached pages (posix_fadvise DONTNEED), so that the
  // next buffered reads come from the disk: a cold start without root.
  void drop_page_cache() const;

 private:
  std::string path_;
  int fd_ = -1;
  bool direct_ = false;
  ExpertPayload payload_ = ExpertPayload::NF4;
  int64_t C_ = 0, F_ = 0, E_ = 0, max_read_bytes_ = 0;
  int n_matrices_ = 0;
  [[noreturn]] void throw_damaged(const ExpertStoreEntry& e, uint32_t got) const;
  std::vector<ExpertStoreEntry> entries_;
  ExpertStoreSource source_;
};

}  // namespace mg
