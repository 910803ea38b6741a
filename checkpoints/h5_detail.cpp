#include "checkpoints/h5_detail.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "autograd/error.h"

namespace mg::h5 {

void quiet() {
  thread_local bool silenced = false;
  if (!silenced) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    silenced = true;
  }
}

namespace {

herr_t collect_error(unsigned depth, const H5E_error2_t* err, void* out) {
  auto* messages = static_cast<std::vector<std::string>*>(out);
  if (err->desc && *err->desc) messages->emplace_back(err->desc);
  return depth >= 2 ? 1 : 0;  // the three innermost entries say what went wrong; stop there
}

}  // namespace

std::string error_detail() {
  std::vector<std::string> messages;
  // Upward = innermost first: "truncated file: eof = ..." before "unable to open file".
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &messages);
  H5Eclear2(H5E_DEFAULT);
  std::string joined;
  for (const auto& m : messages) {
    if (!joined.empty()) joined += " <- ";
    joined += m;
  }
  return joined;
}

void fail(const std::string& message) {
  std::string detail = error_detail();
  if (detail.empty()) throw Error(message);
  throw Error(fmt::format("{} [HDF5: {}]", message, detail));
}

namespace {

// IEEE binary16 as h5py defines it (h5py/h5t.pyx): sign bit 15, exponent bits 10..14,
// mantissa bits 0..9, exponent bias 15. Locked, so it is never closed by mistake.
hid_t make_f16_type() {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  if (t < 0 || H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
      H5Tset_ebias(t, 15) < 0 || H5Tlock(t) < 0)
    fail("[h5] could not build the IEEE half-precision HDF5 type");
  return t;
}

hid_t f16_type() {
  static const hid_t t = make_f16_type();
  return t;
}

H5T_conv_ret_t abort_on_range_error(H5T_conv_except_t kind, hid_t, hid_t, void*, void*, void*) {
  if (kind == H5T_CONV_EXCEPT_RANGE_HI || kind == H5T_CONV_EXCEPT_RANGE_LOW)
    return H5T_CONV_ABORT;
  return H5T_CONV_UNHANDLED;  // inf/nan/precision: HDF5's default handling is right
}

}  // namespace

hid_t file_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return H5T_IEEE_F32LE;
    case DType::F64: return H5T_IEEE_F64LE;
    case DType::F16: return f16_type();
    case DType::U8: return H5T_STD_U8LE;
    case DType::I32: return H5T_STD_I32LE;
    case DType::I64: return H5T_STD_I64LE;
  }
  throw Error("[h5] unknown DType");
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return H5T_NATIVE_FLOAT;
    case DType::F64: return H5T_NATIVE_DOUBLE;
    case DType::F16: return f16_type();  // x86 is little-endian, as the file type
    case DType::U8: return H5T_NATIVE_UINT8;
    case DType::I32: return H5T_NATIVE_INT32;
    case DType::I64: return H5T_NATIVE_INT64;
  }
  throw Error("[h5] unknown DType");
}

bool dtype_of_stored(hid_t type, DType* out) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
    if (size == 2 && esize == 5 && msize == 10) return *out = DType::F16, true;  // not bfloat16
    if (size == 4 && esize == 8 && msize == 23) return *out = DType::F32, true;
    if (size == 8 && esize == 11 && msize == 52) return *out = DType::F64, true;
    return false;
  }
  if (cls == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 1 && !is_signed) return *out = DType::U8, true;
    if (size == 4 && is_signed) return *out = DType::I32, true;
    if (size == 8 && is_signed) return *out = DType::I64, true;
  }
  return false;
}

std::string describe_type(hid_t type) {
  size_t bits = 8 * H5Tget_size(type);
  switch (H5Tget_class(type)) {
    case H5T_FLOAT: return fmt::format("{}-bit float", bits);
    case H5T_INTEGER:
      return fmt::format("{}-bit {} integer", bits,
                         H5Tget_sign(type) == H5T_SGN_2 ? "signed" : "unsigned");
    case H5T_STRING:
      return H5Tis_variable_str(type) > 0 ? "variable-length string"
                                          : fmt::format("{}-byte string", bits / 8);
    case H5T_ENUM: return "enum (h5py stores numpy bool this way)";
    case H5T_COMPOUND: return "compound";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length sequence";
    default: return "unsupported HDF5 type";
  }
}

hid_t range_checked_transfer() {
  static const hid_t dxpl = [] {
    hid_t p = H5Pcreate(H5P_DATASET_XFER);
    if (p < 0 || H5Pset_type_conv_cb(p, abort_on_range_error, nullptr) < 0)
      fail("[h5] could not create a dataset transfer property list");
    return p;
  }();
  return dxpl;
}

Id file_access(bool swmr) {
  Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_driver(fapl.get(), latch_driver(), nullptr) < 0 ||
      H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG) < 0 ||
      H5Pset_file_locking(fapl.get(), true, /*ignore_when_disabled=*/true) < 0)
    fail("[h5] could not create a file access property list");
  // SWMR needs the 1.10 file format (superblock v3). Checkpoints keep the default (oldest
  // format that can hold the data) so that any HDF5 1.8+ tool reads them.
  if (swmr && H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0)
    fail("[h5] could not set libver bounds for SWMR");
  return fapl;
}

std::vector<int64_t> dataspace_shape(hid_t space, const std::string& file,
                                     const std::string& path) {
  H5S_class_t cls = H5Sget_simple_extent_type(space);
  if (cls == H5S_SCALAR) return {};
  if (cls != H5S_SIMPLE)
    fail(fmt::format("[h5] {}: dataset or attribute '{}' has a null dataspace (no shape, "
                 "h5py.Empty); store an array of shape (0,) instead",
                 file, path));
  int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  if (rank < 0 || H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0)
    fail(fmt::format("[h5] {}: cannot read the shape of '{}'", file, path));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::string join_names(const std::vector<std::string>& names, size_t at_most) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < at_most; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > at_most) out += fmt::format(", ... ({} in all)", names.size());
  return out.empty() ? "nothing" : out;
}

std::string normalize_path(const std::string& file, const std::string& path) {
  std::string out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t slash = path.find('/', i);
    if (slash == std::string::npos) slash = path.size();
    std::string part = path.substr(i, slash - i);
    bool leading = i == 0 && slash == 0, trailing = slash == path.size() && part.empty();
    if (!leading && !trailing) {
      MG_CHECK(!part.empty() && part != "." && part != "..",
               "[h5] {}: bad object path '{}' (empty, '.' or '..' component); use names like "
               "'/model/layers.0.norm.weight'",
               file, path);
      out += '/';
      out += part;
    }
    i = slash + 1;
  }
  return out.empty() ? "/" : out;
}

}  // namespace mg::h5
