#include "checkpoints/h5_file.h"

// H5File's attributes: scalar string / int64 / float64 values on any object (h5_file.h).
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "autograd/error.h"
#include "checkpoints/h5_detail.h"

namespace mg {

using h5::Id;

namespace {

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

Id open_object(hid_t file, const std::string& file_path, const std::string& p) {
  Id obj(H5Oopen(file, p.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.valid()) h5::fail(fmt::format("[h5] {}: cannot open object '{}'", file_path, p));
  return obj;
}

Id utf8_string_type() {
  Id t(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!t.valid() || H5Tset_size(t.get(), H5T_VARIABLE) < 0 ||
      H5Tset_cset(t.get(), H5T_CSET_UTF8) < 0)
    h5::fail("[h5] could not build the UTF-8 string type");
  return t;
}

// Replaces attribute `name` of `obj` with a scalar of `file_type`, written from `value`.
void put_attr(hid_t obj, const std::string& file, const std::string& p, const std::string& name,
              hid_t file_type, hid_t mem_type, const void* value) {
  h5::quiet();
  htri_t found = H5Aexists(obj, name.c_str());
  if (found > 0 && H5Adelete(obj, name.c_str()) < 0)
    h5::fail(fmt::format("[h5] {}: cannot replace attribute '{}' of '{}'", file, name, p));
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id attr(H5Acreate2(obj, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
          H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), mem_type, value) < 0 || attr.close() < 0)
    h5::fail(fmt::format("[h5] {}: cannot write attribute '{}' of '{}'", file, name, p));
}

}  // namespace

bool H5File::has_attr(const std::string& object, const std::string& name) const {
  require_open("has_attr");
  h5::quiet();
  std::string p = h5::normalize_path(path_, object);
  if (!exists(p)) throw Error(missing_object_message(p, "object"));
  Id obj = open_object(id_, path_, p);
  htri_t found = H5Aexists(obj.get(), name.c_str());
  if (found < 0) h5::fail(fmt::format("[h5] {}: cannot look up attributes of '{}'", path_, p));
  return found > 0;
}

std::vector<std::string> H5File::attr_names(const std::string& object) const {
  require_open("attr_names");
  h5::quiet();
  std::string p = h5::normalize_path(path_, object);
  if (!exists(p)) throw Error(missing_object_message(p, "object"));
  Id obj = open_object(id_, path_, p);
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Aiterate2(obj.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &names) < 0)
    h5::fail(fmt::format("[h5] {}: cannot list attributes of '{}'", path_, p));
  std::sort(names.begin(), names.end());
  return names;
}

void H5File::set_string_attr(const std::string& object, const std::string& name,
                             const std::string& value) {
  require_writable("set_string_attr");
  std::string p = h5::normalize_path(path_, object);
  MG_CHECK(value.find('\0') == std::string::npos,
           "[h5] {}: attribute '{}' of '{}' contains a NUL byte; store binary data as a u8 "
           "dataset",
           path_, name, p);
  if (!exists(p)) throw Error(missing_object_message(p, "object"));
  Id obj = open_object(id_, path_, p);
  Id type = utf8_string_type();
  const char* text = value.c_str();
  put_attr(obj.get(), path_, p, name, type.get(), type.get(), &text);
  check_written("set attribute", p + "@" + name);
}

void H5File::set_int_attr(const std::string& object, const std::string& name, int64_t value) {
  require_writable("set_int_attr");
  std::string p = h5::normalize_path(path_, object);
  if (!exists(p)) throw Error(missing_object_message(p, "object"));
  Id obj = open_object(id_, path_, p);
  put_attr(obj.get(), path_, p, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
  check_written("set attribute", p + "@" + name);
}

void H5File::set_double_attr(const std::string& object, const std::string& name, double value) {
  require_writable("set_double_attr");
  std::string p = h5::normalize_path(path_, object);
  if (!exists(p)) throw Error(missing_object_message(p, "object"));
  Id obj = open_object(id_, path_, p);
  put_attr(obj.get(), path_, p, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
  check_written("set attribute", p + "@" + name);
}

int64_t H5File::open_attr(const std::string& object, const std::string& name) const {
  std::string p = h5::normalize_path(path_, object);
  if (!has_attr(p, name))
    throw Error(fmt::format("[h5] {}: '{}' has no attribute '{}' (it has: {}); is this file "
                            "from magellan, and of this version?",
                            path_, p, name, h5::join_names(attr_names(p), 12)));
  Id obj = open_object(id_, path_, p);
  hid_t attr = H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT);
  if (attr < 0) h5::fail(fmt::format("[h5] {}: cannot open attribute '{}' of '{}'", path_, name, p));
  Id space(H5Aget_space(attr), H5Sclose);
  std::vector<int64_t> shape = h5::dataspace_shape(space.get(), path_, p + "@" + name);
  if (numel_of(shape) != 1) {
    H5Aclose(attr);
    throw Error(fmt::format("[h5] {}: attribute '{}' of '{}' has shape {}, expected a single "
                            "value",
                            path_, name, p, shape_string(shape)));
  }
  return attr;
}

std::string H5File::string_attr(const std::string& object, const std::string& name) const {
  require_open("string_attr");
  h5::quiet();
  std::string p = h5::normalize_path(path_, object);
  Id attr(open_attr(p, name), H5Aclose);
  Id type(H5Aget_type(attr.get()), H5Tclose);
  MG_CHECK(H5Tget_class(type.get()) == H5T_STRING,
           "[h5] {}: attribute '{}' of '{}' is {}, not a string", path_, name, p,
           h5::describe_type(type.get()));
  Id mem(H5Tcopy(type.get()), H5Tclose);  // strings have no byte order: same type in memory
  if (H5Tis_variable_str(type.get()) > 0) {
    char* text = nullptr;
    if (H5Aread(attr.get(), mem.get(), &text) < 0)
      h5::fail(fmt::format("[h5] {}: cannot read attribute '{}' of '{}'", path_, name, p));
    std::string out = text ? text : "";
    H5free_memory(text);
    return out;
  }
  std::string buf(H5Tget_size(type.get()), '\0');
  if (H5Aread(attr.get(), mem.get(), buf.data()) < 0)
    h5::fail(fmt::format("[h5] {}: cannot read attribute '{}' of '{}'", path_, name, p));
  if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) {
    buf.erase(buf.find_last_not_of(' ') + 1);
  } else {
    buf.resize(std::strlen(buf.c_str()));  // NUL-terminated or NUL-padded
  }
  return buf;
}

int64_t H5File::int_attr(const std::string& object, const std::string& name) const {
  require_open("int_attr");
  h5::quiet();
  std::string p = h5::normalize_path(path_, object);
  Id attr(open_attr(p, name), H5Aclose);
  Id type(H5Aget_type(attr.get()), H5Tclose);
  MG_CHECK(H5Tget_class(type.get()) == H5T_INTEGER,
           "[h5] {}: attribute '{}' of '{}' is {}, not an integer", path_, name, p,
           h5::describe_type(type.get()));
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0)
    h5::fail(fmt::format("[h5] {}: cannot read attribute '{}' of '{}'", path_, name, p));
  return value;
}

double H5File::double_attr(const std::string& object, const std::string& name) const {
  require_open("double_attr");
  h5::quiet();
  std::string p = h5::normalize_path(path_, object);
  Id attr(open_attr(p, name), H5Aclose);
  Id type(H5Aget_type(attr.get()), H5Tclose);
  H5T_class_t cls = H5Tget_class(type.get());
  MG_CHECK(cls == H5T_FLOAT || cls == H5T_INTEGER,
           "[h5] {}: attribute '{}' of '{}' is {}, not a number", path_, name, p,
           h5::describe_type(type.get()));
  double value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) < 0)
    h5::fail(fmt::format("[h5] {}: cannot read attribute '{}' of '{}'", path_, name, p));
  return value;
}

}  // namespace mg
