#include "checkpoints/metrics_reader.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "autograd/error.h"
#include "checkpoints/h5_detail.h"
#include "util/regular_file.h"

namespace mg {

using h5::Id;

struct MetricsReader::Impl {
  std::string path;
  Id file;
  bool swmr = false;
  struct Series {
    Id steps, values;
  };
  std::map<std::string, Series> series;
  std::vector<std::string> names;

  ~Impl() {
    h5::quiet();
    series.clear();  // datasets before the file
    file.reset();
  }
};

namespace {

herr_t collect_child(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

H5I_type_t child_type(hid_t group, const std::string& name) {
  Id obj(H5Oopen(group, name.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.valid()) {
    h5::error_detail();
    return H5I_BADID;
  }
  return H5Iget_type(obj.get());
}

// A series is a group holding datasets "step" and "value"; other groups are searched below.
void find_series(hid_t group, const std::string& prefix, std::vector<std::string>* out) {
  std::vector<std::string> children;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_child, &children) < 0) {
    h5::error_detail();
    return;
  }
  for (const auto& name : children) {
    if (child_type(group, name) != H5I_GROUP) continue;
    Id sub(H5Gopen2(group, name.c_str(), H5P_DEFAULT), H5Gclose);
    if (!sub.valid()) continue;
    std::string path = prefix.empty() ? name : prefix + "/" + name;
    if (child_type(sub.get(), "step") == H5I_DATASET &&
        child_type(sub.get(), "value") == H5I_DATASET) {
      out->push_back(path);
    } else {
      find_series(sub.get(), path, out);
    }
  }
}

int64_t length_of(hid_t dataset) {
  Id space(H5Dget_space(dataset), H5Sclose);
  hsize_t n = 0;
  if (!space.valid() || H5Sget_simple_extent_ndims(space.get()) != 1 ||
      H5Sget_simple_extent_dims(space.get(), &n, nullptr) < 0)
    return -1;
  return static_cast<int64_t>(n);
}

bool read_prefix(hid_t dataset, hid_t mem_type, int64_t n, void* out) {
  if (n == 0) return true;
  Id file_space(H5Dget_space(dataset), H5Sclose);
  hsize_t start = 0, count = static_cast<hsize_t>(n);
  Id mem_space(H5Screate_simple(1, &count, nullptr), H5Sclose);
  return H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count,
                             nullptr) >= 0 &&
         H5Dread(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out) >= 0;
}

}  // namespace

MetricsReader::MetricsReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  impl_->path = path;
  MG_CHECK(std::filesystem::is_regular_file(path), "[metrics] {}: no such file; check the path",
           path);
  Id fapl = h5::file_access(/*swmr=*/false);
  // SWMR read works on files a writer has open, or left marked open by a crash; files in the
  // older format refuse it and are opened plainly.
  require_regular_file(path, "[metrics]");
  impl_->file = Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl.get()), H5Fclose);
  impl_->swmr = impl_->file.valid();
  if (!impl_->swmr) {
    h5::error_detail();
    impl_->file = Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
    if (!impl_->file.valid())
      h5::fail(fmt::format("[metrics] {}: cannot open for reading; is it a metrics.h5 file?",
                           path));
  }
  Id root(H5Gopen2(impl_->file.get(), "/", H5P_DEFAULT), H5Gclose);
  find_series(root.get(), "", &impl_->names);
  std::sort(impl_->names.begin(), impl_->names.end());
  for (const auto& name : impl_->names) {
    Impl::Series s;
    s.steps = Id(H5Dopen2(impl_->file.get(), ("/" + name + "/step").c_str(), H5P_DEFAULT), H5Dclose);
    s.values = Id(H5Dopen2(impl_->file.get(), ("/" + name + "/value").c_str(), H5P_DEFAULT), H5Dclose);
    if (!s.steps.valid() || !s.values.valid())
      h5::fail(fmt::format("[metrics] {}: cannot open series '{}'", path, name));
    impl_->series.emplace(name, std::move(s));
  }
}

MetricsReader::~MetricsReader() = default;
MetricsReader::MetricsReader(MetricsReader&&) noexcept = default;
MetricsReader& MetricsReader::operator=(MetricsReader&&) noexcept = default;

const std::vector<std::string>& MetricsReader::series() const { return impl_->names; }
const std::string& MetricsReader::path() const { return impl_->path; }

bool MetricsReader::has(const std::string& name) const { return impl_->series.count(name) > 0; }

MetricSeries MetricsReader::read(const std::string& name) const {
  MG_CHECK(impl_ && impl_->file.valid(), "[metrics] read of '{}' on a closed reader", name);
  h5::quiet();
  auto it = impl_->series.find(name);
  MG_CHECK(it != impl_->series.end(), "[metrics] {}: no series '{}' (the file has: {})",
           impl_->path, name, fmt::join(impl_->names, ", "));
  const Impl::Series& s = it->second;
  // H5Drefresh drops this reader's cached metadata of the dataset: new extent, new chunks.
  if (impl_->swmr && (H5Drefresh(s.steps.get()) < 0 || H5Drefresh(s.values.get()) < 0))
    h5::fail(fmt::format("[metrics] {}: refreshing series '{}' failed", impl_->path, name));
  int64_t n_steps = length_of(s.steps.get()), n_values = length_of(s.values.get());
  MG_CHECK(n_steps >= 0 && n_values >= 0,
           "[metrics] {}: series '{}' has step/value datasets that are not 1-d", impl_->path,
           name);
  int64_t n = std::min(n_steps, n_values);
  MetricSeries out;
  out.steps.resize(static_cast<size_t>(n));
  out.values.resize(static_cast<size_t>(n));
  if (!read_prefix(s.steps.get(), H5T_NATIVE_INT64, n, out.steps.data()) ||
      !read_prefix(s.values.get(), H5T_NATIVE_DOUBLE, n, out.values.data()))
    h5::fail(fmt::format("[metrics] {}: reading series '{}' failed", impl_->path, name));
  return out;
}

void MetricsReader::close() {
  if (!impl_) return;
  impl_->series.clear();
  impl_->file.reset();
}

}  // namespace mg
