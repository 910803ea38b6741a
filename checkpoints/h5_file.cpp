#include "checkpoints/h5_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "autograd/error.h"
#include "checkpoints/h5_detail.h"
#include "util/regular_file.h"

namespace mg {

namespace fs = std::filesystem;
using h5::Id;

int64_t H5DatasetInfo::numel() const { return H5File::numel_of(shape); }

int64_t H5File::numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

namespace {

// Link creation: make missing parent groups, names are UTF-8.
hid_t link_create_props() {
  static const hid_t lcpl = [] {
    hid_t p = H5Pcreate(H5P_LINK_CREATE);
    if (p < 0 || H5Pset_create_intermediate_group(p, 1) < 0 ||
        H5Pset_char_encoding(p, H5T_CSET_UTF8) < 0)
      h5::fail("[h5] could not create a link creation property list");
    return p;
  }();
  return lcpl;
}

bool same_class(H5T_class_t stored, DType memory) {
  bool memory_float = memory == DType::F32 || memory == DType::F64 || memory == DType::F16;
  return memory_float ? stored == H5T_FLOAT : stored == H5T_INTEGER;
}

herr_t collect_link_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Opening and closing
// ---------------------------------------------------------------------------------------

H5File::H5File(int64_t id, std::string path, bool writable)
    : id_(id), path_(std::move(path)), writable_(writable) {}

H5File H5File::create(const std::string& path) {
  h5::quiet();
  fs::path parent = fs::path(path).parent_path();
  MG_CHECK(parent.empty() || fs::is_directory(parent),
           "[h5] {}: cannot create the file, directory '{}' does not exist; create it first",
           path, parent.string());
  Id fapl = h5::file_access(/*swmr=*/false);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0)
    h5::fail(fmt::format("[h5] {}: cannot create the file; check that the directory is "
                         "writable and the file is not open in another program",
                         path));
  return H5File(id, path, /*writable=*/true);
}

H5File H5File::open_read(const std::string& path) { return open_existing(path, false); }
H5File H5File::open_rw(const std::string& path) { return open_existing(path, true); }

H5File H5File::open_existing(const std::string& path, bool writable) {
  h5::quiet();
  std::error_code ec;
  MG_CHECK(fs::exists(path, ec), "[h5] {}: no such file; check the path", path);
  require_regular_file(path, "[h5]");  // a FIFO would block HDF5's open forever
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    h5::error_detail();  // clear the stack
    throw Error(fmt::format("[h5] {}: not an HDF5 file ({} bytes: empty, cut short, or another "
                            "format); use another file",
                            path, fs::file_size(path, ec)));
  }
  Id fapl = h5::file_access(/*swmr=*/false);
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get());
  if (id < 0)
    h5::fail(fmt::format("[h5] {}: cannot open for {}; the file is truncated or damaged (an "
                         "interrupted copy or save, a full disk) or is being written by "
                         "another program; use another copy",
                         path, writable ? "writing" : "reading"));
  return H5File(id, path, writable);
}

H5File::~H5File() {
  if (id_ >= 0) {
    h5::quiet();
    H5Fclose(id_);
    h5::take_closed_write_error();
  }
}

H5File::H5File(H5File&& other) noexcept
    : id_(other.id_), path_(std::move(other.path_)), writable_(other.writable_) {
  other.id_ = -1;
}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = other.id_;
    path_ = std::move(other.path_);
    writable_ = other.writable_;
    other.id_ = -1;
  }
  return *this;
}

void H5File::flush() {
  require_open("flush");
  h5::quiet();
  if (H5Fflush(id_, H5F_SCOPE_GLOBAL) < 0)
    h5::fail(fmt::format("[h5] {}: flushing to disk failed (disk full?)", path_));
  check_written("flush", "/");
}

void H5File::close() {
  if (id_ < 0) return;
  h5::quiet();
  int latched = h5::latched_write_error(id_);
  h5::take_closed_write_error();
  herr_t status = H5Fclose(id_);
  id_ = -1;
  int err = latched ? latched : h5::take_closed_write_error();
  if (status < 0)
    h5::fail(fmt::format("[h5] {}: could not finish writing the file (disk full?); it is "
                         "incomplete, do not use it",
                         path_));
  MG_CHECK(err == 0,
           "[h5] {}: writing the file failed: {} (disk full?); it is incomplete, do not use it",
           path_, std::strerror(err));
}

void H5File::check_written(const char* what, const std::string& object) const {
  // The driver hides write errors from HDF5 (h5_driver.cpp says why): ask it.
  int err = h5::latched_write_error(id_);
  MG_CHECK(err == 0,
           "[h5] {}: {} of '{}' failed: {} (disk full?); the file is incomplete, do not use it",
           path_, what, object, std::strerror(err));
}

void H5File::require_open(const char* what) const {
  MG_CHECK(id_ >= 0, "[h5] {}: {} on a closed file; open it first", path_, what);
}

void H5File::require_writable(const char* what) const {
  require_open(what);
  MG_CHECK(writable_, "[h5] {}: {} on a file opened read-only; open it with open_rw", path_,
           what);
}

// ---------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------

bool H5File::exists(const std::string& path) const {
  require_open("exists");
  h5::quiet();
  std::string p = h5::normalize_path(path_, path);
  if (p == "/") return true;
  // H5Lexists fails (rather than saying false) when a parent is missing: check each prefix.
  for (size_t slash = p.find('/', 1);; slash = p.find('/', slash + 1)) {
    std::string prefix = p.substr(0, slash);
    if (H5Lexists(id_, prefix.c_str(), H5P_DEFAULT) <= 0) {
      h5::error_detail();
      return false;
    }
    if (slash == std::string::npos) break;
  }
  htri_t resolves = H5Oexists_by_name(id_, p.c_str(), H5P_DEFAULT);  // dangling soft links
  h5::error_detail();
  return resolves > 0;
}

namespace {

H5I_type_t object_type(hid_t file, const std::string& p) {
  Id obj(H5Oopen(file, p.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.valid()) {
    h5::error_detail();
    return H5I_BADID;
  }
  return H5Iget_type(obj.get());
}

}  // namespace

bool H5File::is_group(const std::string& path) const {
  return exists(path) && object_type(id_, h5::normalize_path(path_, path)) == H5I_GROUP;
}

bool H5File::is_dataset(const std::string& path) const {
  return exists(path) && object_type(id_, h5::normalize_path(path_, path)) == H5I_DATASET;
}

void H5File::create_group(const std::string& group) {
  require_writable("create_group");
  std::string p = h5::normalize_path(path_, group);
  if (exists(p)) {
    MG_CHECK(is_group(p), "[h5] {}: cannot create group '{}', a dataset has that name", path_,
             p);
    return;
  }
  Id g(H5Gcreate2(id_, p.c_str(), link_create_props(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!g.valid()) h5::fail(fmt::format("[h5] {}: cannot create group '{}'", path_, p));
  check_written("create_group", p);
}

std::vector<std::string> H5File::list(const std::string& group) const {
  require_open("list");
  std::string p = h5::normalize_path(path_, group);
  if (!is_group(p)) throw Error(missing_object_message(p, "group"));
  Id g(H5Gopen2(id_, p.c_str(), H5P_DEFAULT), H5Gclose);
  std::vector<std::string> names;
  if (!g.valid() ||
      H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_link_name, &names) < 0)
    h5::fail(fmt::format("[h5] {}: cannot list group '{}'", path_, p));
  std::sort(names.begin(), names.end());
  return names;
}

std::string H5File::missing_object_message(const std::string& p, const char* kind) const {
  // Name the deepest existing parent and what it holds: a typo or a layout mismatch shows.
  auto parent_of = [](const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == 0 || slash == std::string::npos ? std::string(1, '/') : path.substr(0, slash);
  };
  std::string parent = parent_of(p);
  while (parent.size() > 1 && !is_group(parent)) parent = parent_of(parent);
  std::vector<std::string> children = list(parent);
  std::string what = exists(p) ? fmt::format("'{}' is not a {}", p, kind)
                               : fmt::format("no {} '{}'", kind, p);
  return fmt::format("[h5] {}: {} ('{}' holds: {}); check the name, or that the file was "
                     "written for this model/config",
                     path_, what, parent, h5::join_names(children, 8));
}

// ---------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------

int64_t H5File::open_dataset(const std::string& p) const {
  // Open first, diagnose only on failure: one name lookup on the path that loads checkpoints.
  hid_t ds = H5Dopen2(id_, p.c_str(), H5P_DEFAULT);
  if (ds >= 0) return ds;
  std::string detail = h5::error_detail();
  if (!is_dataset(p)) throw Error(missing_object_message(p, "dataset"));
  throw Error(fmt::format("[h5] {}: cannot open dataset '{}' [HDF5: {}]", path_, p, detail));
}

void H5File::write(const std::string& dataset, DType dtype, const std::vector<int64_t>& shape,
                   const void* data) {
  require_writable("write");
  h5::quiet();
  std::string p = h5::normalize_path(path_, dataset);
  MG_CHECK(p != "/", "[h5] {}: write needs a dataset name, got '{}'", path_, dataset);
  for (int64_t d : shape)
    MG_CHECK(d >= 0, "[h5] {}: dataset '{}' has a negative dimension in shape {}", path_, p,
             shape_string(shape));
  int64_t n = numel_of(shape);
  MG_CHECK(n == 0 || data != nullptr, "[h5] {}: write of '{}' with no data pointer", path_, p);

  Id ds(H5Dopen2(id_, p.c_str(), H5P_DEFAULT), H5Dclose);  // fails (quietly) if it is new
  h5::error_detail();
  if (ds.valid()) {
    // Overwriting in place keeps the file from growing (HDF5 does not reclaim deleted space).
    H5DatasetInfo old = info(p);
    MG_CHECK(old.dtype == dtype && old.shape == shape,
             "[h5] {}: dataset '{}' exists as {} {}, cannot overwrite it with {} {}; write a "
             "new file",
             path_, p, dtype_name(old.dtype), shape_string(old.shape), dtype_name(dtype),
             shape_string(shape));
  } else {
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    Id space(shape.empty() ? H5Screate(H5S_SCALAR)
                           : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
             H5Sclose);
    if (!space.valid())
      h5::fail(fmt::format("[h5] {}: bad shape {} for '{}'", path_, shape_string(shape), p));
    // Contiguous layout, no compression: checkpoints are written once and read whole, and
    // that is the fastest path through HDF5 (one write() per tensor).
    ds = Id(H5Dcreate2(id_, p.c_str(), h5::file_type(dtype), space.get(), link_create_props(),
                       H5P_DEFAULT, H5P_DEFAULT),
            H5Dclose);
    if (!ds.valid())
      h5::fail(fmt::format("[h5] {}: cannot create dataset '{}' (a group of that name exists, or "
                           "a parent is a dataset?)",
                           path_, p));
  }
  if (n > 0 && H5Dwrite(ds.get(), h5::memory_type(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    h5::fail(fmt::format("[h5] {}: writing dataset '{}' ({} {}) failed (disk full?)", path_, p,
                         dtype_name(dtype), shape_string(shape)));
  if (ds.close() < 0) h5::fail(fmt::format("[h5] {}: closing dataset '{}' failed", path_, p));
  check_written("write", p);
}

std::vector<int64_t> H5File::shape(const std::string& dataset) const {
  require_open("shape");
  h5::quiet();
  std::string p = h5::normalize_path(path_, dataset);
  Id ds(open_dataset(p), H5Dclose);
  Id space(H5Dget_space(ds.get()), H5Sclose);
  return h5::dataspace_shape(space.get(), path_, p);
}

H5DatasetInfo H5File::info(const std::string& dataset) const {
  require_open("info");
  h5::quiet();
  std::string p = h5::normalize_path(path_, dataset);
  Id ds(open_dataset(p), H5Dclose);
  Id type(H5Dget_type(ds.get()), H5Tclose);
  Id space(H5Dget_space(ds.get()), H5Sclose);
  H5DatasetInfo out{DType::F32, h5::dataspace_shape(space.get(), path_, p)};
  MG_CHECK(h5::dtype_of_stored(type.get(), &out.dtype),
           "[h5] {}: dataset '{}' holds {} elements, which is none of f32/f64/f16/u8/i32/i64; "
           "read() it as f32/f64 or i32/i64 (it converts), or convert the file",
           path_, p, h5::describe_type(type.get()));
  return out;
}

void H5File::read(const std::string& dataset, DType memory_type, void* out) const {
  read_checked(dataset, memory_type, nullptr, out);
}

void H5File::read(const std::string& dataset, DType memory_type,
                  const std::vector<int64_t>& expected_shape, void* out) const {
  read_checked(dataset, memory_type, &expected_shape, out);
}

void H5File::read_checked(const std::string& dataset, DType memory_type,
                          const std::vector<int64_t>* expected_shape, void* out) const {
  require_open("read");
  h5::quiet();
  std::string p = h5::normalize_path(path_, dataset);
  Id ds(open_dataset(p), H5Dclose);
  Id type(H5Dget_type(ds.get()), H5Tclose);
  MG_CHECK(same_class(H5Tget_class(type.get()), memory_type),
           "[h5] {}: dataset '{}' holds {} elements, cannot read it as {}; is this the right "
           "dataset?",
           path_, p, h5::describe_type(type.get()), dtype_name(memory_type));
  Id space(H5Dget_space(ds.get()), H5Sclose);
  std::vector<int64_t> stored = h5::dataspace_shape(space.get(), path_, p);
  MG_CHECK(!expected_shape || stored == *expected_shape,
           "[h5] {}: dataset '{}' has shape {}, expected {}; the file was written for another "
           "model configuration",
           path_, p, shape_string(stored), shape_string(expected_shape ? *expected_shape : stored));
  if (numel_of(stored) == 0) return;
  MG_CHECK(out != nullptr, "[h5] {}: read of '{}' into a null buffer", path_, p);
  if (H5Dread(ds.get(), h5::memory_type(memory_type), H5S_ALL, H5S_ALL,
              h5::range_checked_transfer(), out) < 0)
    h5::fail(fmt::format("[h5] {}: reading dataset '{}' ({}) as {} failed: a value is outside "
                         "the {} range, or the file is damaged",
                         path_, p, h5::describe_type(type.get()), dtype_name(memory_type),
                         dtype_name(memory_type)));
}

}  // namespace mg
