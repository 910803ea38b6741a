#pragma once
// Internal to checkpoints/ (h5_file.cpp, metrics_*.cpp): RAII for HDF5 ids, HDF5's error
// stack turned into text, and the DType <-> HDF5 type mapping. Public headers do not include
// <hdf5.h>; only the .cpp files of this folder do, through this header.
//
// The Debian libhdf5 is built thread-safe: its default error stack and the H5Eset_auto
// setting are per thread, hence quiet() at every entry point rather than once per process.
#include <hdf5.h>

#include <string>
#include <vector>

#include "autograd/dtype.h"

namespace mg::h5 {

static_assert(sizeof(hid_t) == sizeof(int64_t), "H5File stores hid_t in an int64_t");

// Owns one HDF5 id and closes it with the matching H5?close on destruction.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      closer_ = other.closer_;
      other.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  ~Id() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and returns HDF5's status (negative on failure); destructors ignore it.
  herr_t close() {
    herr_t status = (id_ >= 0 && closer_) ? closer_(id_) : 0;
    id_ = H5I_INVALID_HID;
    return status;
  }
  void reset() noexcept { (void)close(); }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Turns off HDF5's printing of its error stack on the calling thread (we throw instead).
void quiet();

// The innermost messages of the calling thread's HDF5 error stack ("truncated file: eof =
// ..."), joined, then clears the stack. Empty when HDF5 recorded nothing.
std::string error_detail();

// Throws mg::Error(message + " [HDF5: <detail>]").
[[noreturn]] void fail(const std::string& message);

// Little-endian file types and native memory types for each DType. F16 is an IEEE binary16
// HDF5 float built the way h5py builds it, so h5py/numpy see float16.
hid_t file_type(DType dtype);
hid_t memory_type(DType dtype);

// The DType a stored HDF5 type maps to; false when it is none of the six (e.g. int16).
bool dtype_of_stored(hid_t type, DType* out);
// "16-bit signed integer", "64-bit float", "variable-length string", ... for messages.
std::string describe_type(hid_t type);

// Dataset-transfer property list that makes integer and float narrowing fail on values out
// of range instead of clipping them silently (HDF5's default).
hid_t range_checked_transfer();

// File-access property list: magellan's latching driver, strong close (closing the file
// closes everything in it) and file locking that is skipped, not fatal, on filesystems
// without flock (NFS, some FUSE).
// swmr=true adds libver bounds latest..latest, which SWMR needs.
Id file_access(bool swmr);

// magellan's file driver (h5_driver.cpp): HDF5's POSIX sec2 driver, except that a failed
// write is latched instead of reported to HDF5, which cannot recover from one. file_access()
// selects it for every file magellan opens.
hid_t latch_driver();
// errno of the first failed write/truncate on open file `file` (0 = none so far).
int latched_write_error(hid_t file);
// errno latched on the last file this thread closed (0 = none), and reset it. Call right
// after H5Fclose: its writes of cached metadata happen inside the close.
int take_closed_write_error();

// Shape of a scalar ({}) or simple dataspace; throws for a null dataspace (h5py.Empty).
std::vector<int64_t> dataspace_shape(hid_t space, const std::string& file,
                                     const std::string& path);
// "a, b, c, ... (12 in all)" for messages; "nothing" when empty.
std::string join_names(const std::vector<std::string>& names, size_t at_most);

// "/a/b" from "a/b", "/a/b", "a/b/"; throws on empty names or empty components.
std::string normalize_path(const std::string& file, const std::string& path);

}  // namespace mg::h5
