#pragma once
// Reader for the safetensors format (Hugging Face checkpoints, e.g. model.safetensors):
//   u64 little-endian N | N bytes of JSON header | data
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, the
// offsets counted from the first byte after the header; an optional "__metadata__" maps
// strings to strings. Opening checks the whole header (sizes, offsets inside the file, bytes =
// elements x element size) and says what is wrong with which tensor of which file; reads
// convert the float dtypes (F64, F32, F16, BF16) to float32 or float64 a chunk at a time, so
// a tensor never sits in memory twice.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "autograd/dtype.h"

namespace mg {

struct SafetensorsEntry {
  std::string dtype;           // as written: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;  // {} for a scalar
  int64_t begin = 0, end = 0;  // byte range in the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const;  // error naming the file if absent

  // The tensor's elements, row-major, converted to `out_type` (F32 or F64) into `out`
  // (numel elements). Float dtypes only; anything else is an error naming the dtype.
  // `chunk_bytes` bounds the raw bytes held at once (tests make it small to cross chunks).
  void read(const std::string& name, DType out_type, void* out, int64_t chunk_bytes = 4 << 20) const;

 private:
  SafetensorsFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
  int64_t data_start_ = 0;  // 8 + header length
  std::map<std::string, SafetensorsEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Bytes per element of a safetensors dtype name; 0 when unknown.
int safetensors_element_size(const std::string& dtype);

}  // namespace mg
