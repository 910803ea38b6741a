#include "checkpoints/metrics_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "autograd/error.h"
#include "checkpoints/h5_detail.h"
#include "checkpoints/metrics_reader.h"

namespace mg {

namespace fs = std::filesystem;
using h5::Id;

namespace {

// 1024 entries = 8 KiB per chunk: one page-sized write per flushed append, and a 100k-step
// run needs ~100 chunks per series.
constexpr hsize_t kChunk = 1024;
constexpr int64_t kFormatVersion = 1;

struct SeriesState {
  Id steps, values;  // open datasets (n,)
  int64_t size = 0;
  int64_t last_step = INT64_MIN;
};

// Series names as given, checked: "train/loss" -> group /train/loss. No name may be a
// parent path of another (its group would hold the other's group).
std::vector<std::string> check_names(const std::string& file, std::vector<std::string> names) {
  for (auto& name : names) {
    std::string p = h5::normalize_path(file, name);
    MG_CHECK(p != "/", "[metrics] {}: empty series name", file);
    name = p.substr(1);
  }
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    MG_CHECK(sorted[i] != sorted[i - 1], "[metrics] {}: series '{}' declared twice", file,
             sorted[i]);
  }
  for (const auto& a : sorted)
    for (const auto& b : sorted)
      MG_CHECK(b.rfind(a + "/", 0) != 0,
               "[metrics] {}: series '{}' is a parent path of series '{}'; rename one", file, a,
               b);
  return names;
}

// Writes a fresh metrics file at `path` holding `data` (series -> initial entries) through a
// temp file and rename, so the previous file stays whole until the new one is complete.
void build_file(const std::string& path, const std::vector<std::string>& names,
                const std::map<std::string, MetricSeries>& data) {
  h5::quiet();
  const std::string temp = fmt::format("{}.tmp.{}", path, ::getpid());
  auto fail_cleanup = [&](const std::string& what) {
    std::error_code ec;
    fs::remove(temp, ec);
    h5::fail(fmt::format("[metrics] {}: {}", path, what));
  };
  {
    Id fapl = h5::file_access(/*swmr=*/true);
    Id file(H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
    if (!file.valid()) fail_cleanup("cannot create the metrics file; is the directory writable?");
    Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    hsize_t chunk = kChunk;
    H5Pset_chunk(dcpl.get(), 1, &chunk);
    for (const auto& name : names) {
      auto it = data.find(name);
      hsize_t n = it == data.end() ? 0 : it->second.steps.size();
      hsize_t max_n = H5S_UNLIMITED;
      Id space(H5Screate_simple(1, &n, &max_n), H5Sclose);
      std::string group = "/" + name;
      Id steps(H5Dcreate2(file.get(), (group + "/step").c_str(), H5T_STD_I64LE, space.get(),
                          lcpl.get(), dcpl.get(), H5P_DEFAULT),
               H5Dclose);
      Id values(H5Dcreate2(file.get(), (group + "/value").c_str(), H5T_IEEE_F64LE, space.get(),
                           lcpl.get(), dcpl.get(), H5P_DEFAULT),
                H5Dclose);
      if (!steps.valid() || !values.valid())
        fail_cleanup(fmt::format("cannot create series '{}'", name));
      if (n > 0 && (H5Dwrite(steps.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                             it->second.steps.data()) < 0 ||
                    H5Dwrite(values.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                             it->second.values.data()) < 0))
        fail_cleanup(fmt::format("cannot write series '{}' (disk full?)", name));
    }
    Id root(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
    Id str_type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(str_type.get(), H5T_VARIABLE);
    H5Tset_cset(str_type.get(), H5T_CSET_UTF8);
    Id scalar(H5Screate(H5S_SCALAR), H5Sclose);
    const char* format = "magellan-metrics";
    Id a1(H5Acreate2(root.get(), "format", str_type.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT),
          H5Aclose);
    Id a2(H5Acreate2(root.get(), "format_version", H5T_STD_I64LE, scalar.get(), H5P_DEFAULT,
                     H5P_DEFAULT),
          H5Aclose);
    if (!a1.valid() || !a2.valid() || H5Awrite(a1.get(), str_type.get(), &format) < 0 ||
        H5Awrite(a2.get(), H5T_NATIVE_INT64, &kFormatVersion) < 0)
      fail_cleanup("cannot write the root attributes");
    a1.reset();
    a2.reset();
    root.reset();
    int latched = h5::latched_write_error(file.get());
    h5::take_closed_write_error();
    if (file.close() < 0 || latched || h5::take_closed_write_error())
      fail_cleanup("cannot finish writing the metrics file (disk full?)");
  }
  int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0)
    fail_cleanup(fmt::format("cannot rename {} over it", temp));
}

}  // namespace

struct MetricsWriter::Impl {
  std::string path;
  std::vector<std::string> declared;
  Id file;
  std::map<std::string, SeriesState> series;  // declared ones only

  ~Impl() {
    h5::quiet();
    series.clear();  // datasets before the file
    file.reset();
  }
};

MetricsWriter::MetricsWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsWriter::~MetricsWriter() = default;
MetricsWriter::MetricsWriter(MetricsWriter&&) noexcept = default;
MetricsWriter& MetricsWriter::operator=(MetricsWriter&&) noexcept = default;

MetricsWriter MetricsWriter::create(const std::string& path,
                                    const std::vector<std::string>& series) {
  std::vector<std::string> names = check_names(path, series);
  build_file(path, names, {});
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->declared = names;
  MetricsWriter writer(std::move(impl));
  writer.open_swmr();
  return writer;
}

MetricsWriter MetricsWriter::resume(const std::string& path,
                                    const std::vector<std::string>& series,
                                    int64_t resume_step) {
  std::vector<std::string> declared = check_names(path, series);
  if (!fs::exists(path)) {
    spdlog::info("[metrics] {} does not exist; starting a new one at step {}", path, resume_step);
    return create(path, series);
  }
  // Keep every series of the old file (declared or not), cut to step <= resume_step. Reading
  // it whole and rewriting is cheap (16 bytes an entry) and works whatever state a crash left.
  std::map<std::string, MetricSeries> kept;
  {
    MetricsReader old(path);
    for (const auto& name : old.series()) {
      MetricSeries s = old.read(name), cut;
      for (size_t i = 0; i < s.steps.size(); ++i) {
        if (s.steps[i] > resume_step) continue;
        cut.steps.push_back(s.steps[i]);
        cut.values.push_back(s.values[i]);
      }
      kept.emplace(name, std::move(cut));
    }
  }
  std::vector<std::string> all = declared;
  for (const auto& [name, s] : kept)
    if (std::find(all.begin(), all.end(), name) == all.end()) all.push_back(name);
  check_names(path, all);  // an old series may clash with a newly declared name
  build_file(path, all, kept);
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->declared = declared;
  MetricsWriter writer(std::move(impl));
  writer.open_swmr();
  return writer;
}

void MetricsWriter::open_swmr() {
  h5::quiet();
  Impl& m = *impl_;
  Id fapl = h5::file_access(/*swmr=*/true);
  m.file = Id(H5Fopen(m.path.c_str(), H5F_ACC_RDWR | H5F_ACC_SWMR_WRITE, fapl.get()), H5Fclose);
  if (!m.file.valid())
    h5::fail(fmt::format("[metrics] {}: cannot open for appending (SWMR write); is another run "
                         "writing it?",
                         m.path));
  for (const auto& name : m.declared) {
    SeriesState s;
    s.steps = Id(H5Dopen2(m.file.get(), ("/" + name + "/step").c_str(), H5P_DEFAULT), H5Dclose);
    s.values = Id(H5Dopen2(m.file.get(), ("/" + name + "/value").c_str(), H5P_DEFAULT), H5Dclose);
    if (!s.steps.valid() || !s.values.valid())
      h5::fail(fmt::format("[metrics] {}: cannot open series '{}'", m.path, name));
    Id space(H5Dget_space(s.steps.get()), H5Sclose);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space.get(), &n, nullptr);
    s.size = static_cast<int64_t>(n);
    if (n > 0) {
      hsize_t last = n - 1, one = 1;
      Id mem(H5Screate_simple(1, &one, nullptr), H5Sclose);
      H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, &last, nullptr, &one, nullptr);
      if (H5Dread(s.steps.get(), H5T_NATIVE_INT64, mem.get(), space.get(), H5P_DEFAULT,
                  &s.last_step) < 0)
        h5::fail(fmt::format("[metrics] {}: cannot read series '{}'", m.path, name));
    }
    m.series.emplace(name, std::move(s));
  }
}

namespace {

// Grows a 1-d dataset from n to n+1 and writes `value` (of `mem_type`) at index n.
bool append_one(hid_t dataset, int64_t n, hid_t mem_type, const void* value) {
  hsize_t new_size = static_cast<hsize_t>(n + 1), at = static_cast<hsize_t>(n), one = 1;
  if (H5Dset_extent(dataset, &new_size) < 0) return false;
  Id file_space(H5Dget_space(dataset), H5Sclose);
  Id mem_space(H5Screate_simple(1, &one, nullptr), H5Sclose);
  return file_space.valid() &&
         H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &at, nullptr, &one, nullptr) >= 0 &&
         H5Dwrite(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, value) >= 0;
}

}  // namespace

void MetricsWriter::append_unflushed(const std::string& series, int64_t step, double value) {
  MG_CHECK(impl_ && impl_->file.valid(), "[metrics] append to '{}' on a closed writer", series);
  h5::quiet();
  Impl& m = *impl_;
  auto it = m.series.find(series);
  MG_CHECK(it != m.series.end(),
           "[metrics] {}: series '{}' was not declared (declared: {}); add it to the list given "
           "to MetricsWriter",
           m.path, series, fmt::join(m.declared, ", "));
  SeriesState& s = it->second;
  MG_CHECK(step >= s.last_step,
           "[metrics] {}: series '{}' got step {} after step {}; steps must not decrease",
           m.path, series, step, s.last_step);
  // Value first, then step: a reader cuts both to the shorter, so it never pairs a step
  // with a value not yet written.
  if (!append_one(s.values.get(), s.size, H5T_NATIVE_DOUBLE, &value) ||
      !append_one(s.steps.get(), s.size, H5T_NATIVE_INT64, &step))
    h5::fail(fmt::format("[metrics] {}: appending to series '{}' failed (disk full?)", m.path,
                         series));
  ++s.size;
  s.last_step = step;
}

void MetricsWriter::flush() {
  if (H5Fflush(impl_->file.get(), H5F_SCOPE_LOCAL) < 0)
    h5::fail(fmt::format("[metrics] {}: flush failed (disk full?)", impl_->path));
  // The driver hides write errors from HDF5 (h5_driver.cpp says why): ask it.
  int err = h5::latched_write_error(impl_->file.get());
  MG_CHECK(err == 0, "[metrics] {}: writing failed: {} (disk full?); metrics from here on are "
           "lost", impl_->path, std::strerror(err));
}

void MetricsWriter::append(const std::string& series, int64_t step, double value) {
  append_unflushed(series, step, value);
  flush();
}

void MetricsWriter::append(int64_t step,
                           const std::vector<std::pair<std::string, double>>& values) {
  for (const auto& [series, value] : values) append_unflushed(series, step, value);
  flush();
}

int64_t MetricsWriter::size(const std::string& series) const {
  auto it = impl_->series.find(series);
  MG_CHECK(it != impl_->series.end(), "[metrics] {}: no declared series '{}'", impl_->path,
           series);
  return it->second.size;
}

const std::vector<std::string>& MetricsWriter::series() const { return impl_->declared; }
const std::string& MetricsWriter::path() const { return impl_->path; }

void MetricsWriter::close() {
  if (!impl_ || !impl_->file.valid()) return;
  h5::quiet();
  impl_->series.clear();
  int latched = h5::latched_write_error(impl_->file.get());
  h5::take_closed_write_error();
  if (impl_->file.close() < 0 || latched || h5::take_closed_write_error())
    h5::fail(fmt::format("[metrics] {}: closing failed (disk full?)", impl_->path));
}

}  // namespace mg
