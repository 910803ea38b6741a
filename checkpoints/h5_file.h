#pragma once
// H5File: one HDF5 file holding named n-d arrays (datasets) in groups, with attributes on any
// object. It is the layer the checkpoint code (design.md §6) and the metrics file build on.
//
//   auto f = H5File::create("ckpt.h5");                        // truncates
//   f.write("/model/layers.0.norm.weight", DType::F32, {C}, w);  // makes /model on the way
//   f.set_string_attr("/", "format", "magellan-checkpoint");
//   auto g = H5File::open_read("ckpt.h5");
//   g.read("/model/layers.0.norm.weight", DType::F32, {C}, out);  // f64/f16 on disk convert
//
// Paths are absolute or relative to the root; dataset names may contain dots (they are
// design.md §3's parameter names). Every failure throws mg::Error naming the file, the object
// and what to do; HDF5's own error printing is silenced and its innermost message appended.
// Arrays are row-major (C order), as numpy and h5py store them. One H5File is used by one
// thread at a time; different files on different threads are fine (the Debian libhdf5 is
// the thread-safe build, which serializes its calls).
//
// Files are opened through magellan's copy of HDF5's POSIX driver (h5_driver.cpp), which
// keeps a failed write (full disk) from breaking HDF5; such a failure throws at the write,
// flush or close that hit it.
//
// Reference: HDF5 1.10 C API (https://docs.hdfgroup.org/hdf5/v1_10/); F16 is built as h5py
// builds numpy's float16 (h5py/h5t.pyx), strings are variable-length UTF-8 as h5py writes str.
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/dtype.h"

namespace mg {

struct H5DatasetInfo {
  DType dtype;                 // element type as stored in the file
  std::vector<int64_t> shape;  // {} for a 0-d (scalar) dataset; a 0 anywhere = empty
  int64_t numel() const;
};

// dtype_of<T>() (the DType a C++ element type is read/written as) is in autograd/dtype.h.

// "[2,3]" / "[]" for messages.
std::string shape_string(const std::vector<int64_t>& shape);

class H5File {
 public:
  static H5File create(const std::string& path);     // new file; replaces an existing one
  static H5File open_read(const std::string& path);  // read-only
  static H5File open_rw(const std::string& path);    // read-write, file must exist

  H5File() = default;
  ~H5File();  // closes, ignoring errors: call close() to see them
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  // Writes HDF5's buffers to the OS (no fsync: atomic_save does that after close()).
  void flush();
  // Flushes and closes; throws if HDF5 could not write what it held (e.g. the disk is full).
  void close();
  bool is_open() const { return id_ >= 0; }
  const std::string& path() const { return path_; }

  // --- datasets ---
  // Creates `dataset` (and the groups above it) with `shape` and writes numel(shape)
  // elements of `dtype` from `data` (row-major). If the dataset exists with the same dtype
  // and shape it is overwritten in place; with another dtype/shape it is an error.
  void write(const std::string& dataset, DType dtype, const std::vector<int64_t>& shape,
             const void* data);
  template <class T>
  void write(const std::string& dataset, const std::vector<int64_t>& shape, const T* data) {
    write(dataset, dtype_of<T>(), shape, data);
  }

  // Reads the whole dataset into `out` (numel * dtype_size(memory_type) bytes), converting
  // from the stored type: any float width to any float width (f64 -> f32 included), any
  // integer width to any integer width. Values out of the target's range are an error, not
  // clipped. Float <-> integer is refused (it is always a mix-up of datasets).
  void read(const std::string& dataset, DType memory_type, void* out) const;
  // The same, after checking that the stored shape is `expected_shape`.
  void read(const std::string& dataset, DType memory_type,
            const std::vector<int64_t>& expected_shape, void* out) const;
  // Whole dataset, flattened row-major.
  template <class T>
  std::vector<T> read_vector(const std::string& dataset) const {
    std::vector<T> out(static_cast<size_t>(numel_of(shape(dataset))));
    read(dataset, dtype_of<T>(), out.data());
    return out;
  }

  // Stored dtype and shape; throws if the stored element type is none of the six DTypes
  // (read() still converts e.g. an int16 dataset into I32).
  H5DatasetInfo info(const std::string& dataset) const;
  std::vector<int64_t> shape(const std::string& dataset) const;  // any element type

  // --- structure ---
  bool exists(const std::string& path) const;  // group, dataset; false for dangling links
  bool is_group(const std::string& path) const;
  bool is_dataset(const std::string& path) const;
  void create_group(const std::string& group);  // with parents; no-op if it exists
  // Names (not paths) of the children of `group`, sorted bytewise ("layers.10" < "layers.2").
  std::vector<std::string> list(const std::string& group = "/") const;

  // --- attributes on any object ("/" = root) ---
  // Setting replaces an existing attribute of that name, whatever its type was.
  void set_string_attr(const std::string& object, const std::string& name,
                       const std::string& value);  // variable-length UTF-8: h5py gives str
  void set_int_attr(const std::string& object, const std::string& name, int64_t value);
  void set_double_attr(const std::string& object, const std::string& name, double value);
  bool has_attr(const std::string& object, const std::string& name) const;
  // Getters accept what h5py writes: fixed or variable-length strings (str or bytes), any
  // integer width for int, any integer or float for double; scalar or one-element arrays.
  std::string string_attr(const std::string& object, const std::string& name) const;
  int64_t int_attr(const std::string& object, const std::string& name) const;
  double double_attr(const std::string& object, const std::string& name) const;
  std::vector<std::string> attr_names(const std::string& object) const;  // sorted

  static int64_t numel_of(const std::vector<int64_t>& shape);

 private:
  H5File(int64_t id, std::string path, bool writable);
  static H5File open_existing(const std::string& path, bool writable);
  void require_open(const char* what) const;
  void require_writable(const char* what) const;
  void check_written(const char* what, const std::string& object) const;
  std::string missing_object_message(const std::string& path, const char* kind) const;
  int64_t open_dataset(const std::string& dataset) const;  // caller owns the returned id
  void read_checked(const std::string& dataset, DType memory_type,
                    const std::vector<int64_t>* expected_shape, void* out) const;
  int64_t open_attr(const std::string& object, const std::string& name) const;  // likewise

  int64_t id_ = -1;  // hid_t of the open file, -1 when closed
  std::string path_;
  bool writable_ = false;
};

}  // namespace mg
