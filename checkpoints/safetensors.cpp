#include "checkpoints/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "autograd/half.h"
#include "util/regular_file.h"

namespace mg {

namespace {

constexpr int64_t kMaxHeaderBytes = 100 << 20;  // the format's own limit

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(fmt::format("[safetensors] {}: {}", path, what));
}

// Exactly `n` bytes at `offset`, or an error saying the file is shorter than its header says.
void pread_exact(int fd, const std::string& path, void* buf, int64_t n, int64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, static_cast<size_t>(n), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path, fmt::format("read failed at byte {}: {}", offset, std::strerror(errno)));
    if (got == 0) fail(path, fmt::format("ends at byte {} before the data its header describes (cut short?)", offset));
    p += got;
    n -= got;
    offset += got;
  }
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// n elements of `dtype` at `src` -> `out_type` at `dst`.
void convert(const std::string& dtype, const uint8_t* src, int64_t n, DType out_type, void* dst) {
  auto store = [&](auto load) {
    if (out_type == DType::F64) {
      auto* d = static_cast<double*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<double>(load(i));
    } else {
      auto* d = static_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(load(i));
    }
  };
  auto bits16 = [&](int64_t i) {
    uint16_t v;
    std::memcpy(&v, src + 2 * i, 2);
    return v;
  };
  if (dtype == "F32") {
    store([&](int64_t i) { float v; std::memcpy(&v, src + 4 * i, 4); return v; });
  } else if (dtype == "F64") {
    store([&](int64_t i) { double v; std::memcpy(&v, src + 8 * i, 8); return v; });
  } else if (dtype == "F16") {
    store([&](int64_t i) { return half_to_float(bits16(i)); });
  } else {  // BF16 (checked by the caller)
    store([&](int64_t i) { return bf16_to_float(bits16(i)); });
  }
}

}  // namespace

int safetensors_element_size(const std::string& dtype) {
  static const std::map<std::string, int> sizes = {
      {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
      {"F16", 2}, {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"I64", 8}, {"U64", 8}, {"F64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  require_regular_file(path, "[safetensors]");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, fmt::format("cannot open: {}", std::strerror(errno)));
  SafetensorsFile file(path, fd);  // closes fd on any error below
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, fmt::format("cannot stat: {}", std::strerror(errno)));
  const int64_t file_size = st.st_size;
  if (file_size < 8) fail(path, fmt::format("{} bytes: too short for a safetensors file (empty or cut short)", file_size));

  uint8_t len_bytes[8];
  pread_exact(fd, path, len_bytes, 8, 0);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > static_cast<uint64_t>(std::min(kMaxHeaderBytes, file_size - 8)))
    fail(path, fmt::format("header length {} does not fit the file ({} bytes): not a safetensors file, or cut short",
                           header_len, file_size));
  std::string header(header_len, '\0');
  pread_exact(fd, path, header.data(), static_cast<int64_t>(header_len), 8);
  file.data_start_ = 8 + static_cast<int64_t>(header_len);
  const int64_t data_size = file_size - file.data_start_;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!j.is_object()) fail(path, "header is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        if (m.value().is_string()) file.metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    auto bad = [&](const std::string& what) { fail(path, fmt::format("tensor '{}': {}", name, what)); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("needs dtype, shape and data_offsets");
    SafetensorsEntry e;
    if (!v["dtype"].is_string()) bad("dtype is not a string");
    e.dtype = v["dtype"].get<std::string>();
    const int elem = safetensors_element_size(e.dtype);
    if (elem == 0) bad(fmt::format("unknown dtype '{}'", e.dtype));
    // Sizes are checked in 64 bits without overflow: a dimension, the element count or the
    // byte count beyond what the data section can hold is an error, not a wrapped number.
    auto small_count = [&](const nlohmann::json& n, const char* what) {
      if (!n.is_number_unsigned() || n.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        bad(fmt::format("{} holds {}, not a non-negative 64-bit integer", what, n.dump()));
      return n.get<int64_t>();
    };
    if (!v["shape"].is_array()) bad("shape is not a list");
    int64_t numel = 1;
    for (const auto& d : v["shape"]) {
      e.shape.push_back(small_count(d, "shape"));
      if (__builtin_mul_overflow(numel, e.shape.back(), &numel)) bad("shape has more elements than 2^63");
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2) bad("data_offsets is not [begin, end]");
    e.begin = small_count(off[0], "data_offsets");
    e.end = small_count(off[1], "data_offsets");
    if (e.begin > e.end || e.end > data_size)
      bad(fmt::format("bytes [{}, {}) lie outside the data section ({} bytes): the file is cut short or corrupt",
                      e.begin, e.end, data_size));
    int64_t bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<int64_t>(elem), &bytes))
      bad(fmt::format("shape [{}] of {} needs more than 2^63 bytes", fmt::join(e.shape, ","), e.dtype));
    if (e.end - e.begin != bytes)
      bad(fmt::format("{} bytes for shape [{}] of {} ({} expected)", e.end - e.begin, fmt::join(e.shape, ","),
                      e.dtype, bytes));
    file.tensors_.emplace(name, std::move(e));
  }
  // No two tensors may share bytes (the format lays them out one after another).
  std::vector<std::pair<int64_t, const std::string*>> starts;
  for (const auto& [name, e] : file.tensors_)
    if (e.end > e.begin) starts.emplace_back(e.begin, &name);
  std::sort(starts.begin(), starts.end());
  for (size_t k = 1; k < starts.size(); ++k) {
    const SafetensorsEntry& prev = file.tensors_.at(*starts[k - 1].second);
    if (starts[k].first < prev.end)
      fail(path, fmt::format("tensors '{}' and '{}' overlap in the data section: the file is corrupt",
                             *starts[k - 1].second, *starts[k].second));
  }
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      data_start_(other.data_start_),
      tensors_(std::move(other.tensors_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    data_start_ = other.data_start_;
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, fmt::format("has no tensor '{}'", name));
  return it->second;
}

void SafetensorsFile::read(const std::string& name, DType out_type, void* out, int64_t chunk_bytes) const {
  MG_CHECK(out_type == DType::F32 || out_type == DType::F64, "[safetensors] reads convert to F32 or F64 only");
  const SafetensorsEntry& e = entry(name);
  if (e.dtype != "F32" && e.dtype != "F64" && e.dtype != "F16" && e.dtype != "BF16")
    fail(path_, fmt::format("tensor '{}' is {}, not a float type (F64, F32, F16, BF16)", name, e.dtype));
  const int elem = safetensors_element_size(e.dtype);
  const int out_elem = out_type == DType::F64 ? 8 : 4;
  const int64_t per_chunk = std::max<int64_t>(1, chunk_bytes / elem);
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(e.numel(), per_chunk) * elem));
  for (int64_t first = 0; first < e.numel(); first += per_chunk) {
    const int64_t n = std::min(per_chunk, e.numel() - first);
    pread_exact(fd_, path_, buf.data(), n * elem, data_start_ + e.begin + first * elem);
    convert(e.dtype, buf.data(), n, out_type, static_cast<uint8_t*>(out) + first * out_elem);
  }
}

}  // namespace mg
