// The HDF5 file driver magellan opens every file with: HDF5's POSIX "sec2" driver (pread /
// pwrite on one file descriptor; HDF5 1.10 src/H5FDsec2.c), except that a failed write never
// reaches HDF5.
//
// Why: in HDF5 1.10.8, once a write fails (ENOSPC on a full disk, EDQUOT, EIO), H5Fclose
// fails too and leaves the file half-destroyed in HDF5's tables; a later close of it, or
// the library's own shutdown at exit, then crashes, and its recycled memory can make a new
// file of the same name read back as zeros (all seen here with RLIMIT_FSIZE). So this driver
// *latches* the first write/truncate error (errno) on the file, reports success to HDF5 and
// skips every later write to that file. HDF5 stays consistent and closes the file normally;
// magellan reads the latch (latched_write_error) after each write, flush and close, and
// throws. The bytes on disk are then incomplete, which atomic_save handles by deleting them.
//
// The file format is untouched (no driver info in the superblock), so h5py and every other
// HDF5 tool read these files as plain sec2 files.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "checkpoints/h5_detail.h"

namespace mg::h5 {

namespace {

struct LatchFile {
  H5FD_t pub;  // must be first: HDF5 casts between H5FD_t* and the driver's struct
  int fd = -1;
  haddr_t eoa = 0;  // end of the address space HDF5 has allocated
  haddr_t eof = 0;  // current size of the file on disk
  dev_t device = 0;
  ino_t inode = 0;
  bool ignore_disabled_locks = false;
  int write_errno = 0;  // first failed write/truncate; 0 = none
};

// Offsets are off_t: addresses above 2^63-1 cannot be reached (as sec2's MAXADDR).
constexpr haddr_t kMaxAddr = (haddr_t(1) << 63) - 1;

thread_local int closed_write_errno = 0;

// sec2's REGION_OVERFLOW: [addr, addr+size) must be addressable with an off_t.
bool region_overflows(haddr_t addr, size_t size) {
  return addr == HADDR_UNDEF || (addr & ~kMaxAddr) || (haddr_t(size) & ~kMaxAddr) ||
         ((addr + size) & ~kMaxAddr);
}

void push_error(H5E_major_t major, H5E_minor_t minor, const char* what, int err) {
  H5Epush2(H5E_DEFAULT, __FILE__, "magellan_latch_driver", __LINE__, H5E_ERR_CLS, major, minor,
           "%s: %s", what, std::strerror(err));
}

H5FD_t* latch_open(const char* name, unsigned flags, hid_t fapl, haddr_t maxaddr) {
  if (!name || !*name || maxaddr == 0 || maxaddr == HADDR_UNDEF || (maxaddr & ~kMaxAddr)) {
    push_error(H5E_ARGS, H5E_BADVALUE, "bad file name or maxaddr", EINVAL);
    return nullptr;
  }
  int o_flags = (flags & H5F_ACC_RDWR) ? O_RDWR : O_RDONLY;
  if (flags & H5F_ACC_TRUNC) o_flags |= O_TRUNC;
  if (flags & H5F_ACC_CREAT) o_flags |= O_CREAT;
  if (flags & H5F_ACC_EXCL) o_flags |= O_EXCL;
  int fd = ::open(name, o_flags | O_CLOEXEC, 0666);
  if (fd < 0) {
    push_error(H5E_FILE, H5E_CANTOPENFILE, name, errno);
    return nullptr;
  }
  struct stat sb {};
  if (::fstat(fd, &sb) < 0) {
    push_error(H5E_FILE, H5E_BADFILE, "fstat", errno);
    ::close(fd);
    return nullptr;
  }
  auto* file = new LatchFile();  // freed by latch_close
  file->fd = fd;
  file->eof = static_cast<haddr_t>(sb.st_size);
  file->device = sb.st_dev;
  file->inode = sb.st_ino;
  hbool_t use_locking = true, ignore_disabled = false;
  if (fapl != H5P_FILE_ACCESS_DEFAULT && H5Pget_file_locking(fapl, &use_locking, &ignore_disabled) >= 0)
    file->ignore_disabled_locks = ignore_disabled;
  return &file->pub;
}

herr_t latch_close(H5FD_t* f) {
  auto* file = reinterpret_cast<LatchFile*>(f);
  closed_write_errno = file->write_errno;
  int rc = ::close(file->fd);
  if (rc < 0 && closed_write_errno == 0) closed_write_errno = errno;  // NFS reports late
  delete file;
  return 0;  // never fail a close: that is what breaks HDF5 (see the top of the file)
}

int latch_cmp(const H5FD_t* a, const H5FD_t* b) {
  auto* f1 = reinterpret_cast<const LatchFile*>(a);
  auto* f2 = reinterpret_cast<const LatchFile*>(b);
  if (f1->device != f2->device) return f1->device < f2->device ? -1 : 1;
  if (f1->inode != f2->inode) return f1->inode < f2->inode ? -1 : 1;
  return 0;
}

herr_t latch_query(const H5FD_t*, unsigned long* flags) {
  if (flags)  // as sec2 in HDF5 1.10.8, less POSIX_COMPAT_HANDLE (our handle is the struct)
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA | H5FD_FEAT_SUPPORTS_SWMR_IO |
             H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
  return 0;
}

haddr_t latch_get_eoa(const H5FD_t* f, H5FD_mem_t) { return reinterpret_cast<const LatchFile*>(f)->eoa; }

herr_t latch_set_eoa(H5FD_t* f, H5FD_mem_t, haddr_t addr) {
  if (addr & ~kMaxAddr) {
    push_error(H5E_ARGS, H5E_OVERFLOW, "address overflow", EINVAL);
    return -1;
  }
  reinterpret_cast<LatchFile*>(f)->eoa = addr;
  return 0;
}

haddr_t latch_get_eof(const H5FD_t* f, H5FD_mem_t) { return reinterpret_cast<const LatchFile*>(f)->eof; }

herr_t latch_get_handle(H5FD_t* f, hid_t, void** handle) {
  *handle = f;
  return 0;
}

herr_t latch_read(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, size_t size, void* buf) {
  auto* file = reinterpret_cast<LatchFile*>(f);
  // No check against eoa here: HDF5's H5FD_read does it, except for SWMR readers, whose
  // eoa lags the writer's (as sec2 in 1.10).
  if (region_overflows(addr, size)) {
    push_error(H5E_ARGS, H5E_OVERFLOW, "read address overflow", EINVAL);
    return -1;
  }
  auto* out = static_cast<unsigned char*>(buf);
  while (size > 0) {
    ssize_t n = ::pread(file->fd, out, size, static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      push_error(H5E_IO, H5E_READERROR, "pread", errno);
      return -1;
    }
    if (n == 0) {  // past the end of the file: HDF5 expects zeros, as sec2 gives
      std::memset(out, 0, size);
      break;
    }
    out += n;
    addr += static_cast<haddr_t>(n);
    size -= static_cast<size_t>(n);
  }
  return 0;
}

herr_t latch_write(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, size_t size, const void* buf) {
  auto* file = reinterpret_cast<LatchFile*>(f);
  if (region_overflows(addr, size)) {
    push_error(H5E_ARGS, H5E_OVERFLOW, "write address overflow", EINVAL);
    return -1;  // an HDF5 bookkeeping bug, not an I/O error: let HDF5 see it
  }
  if (file->write_errno) return 0;  // latched: the file is lost already, write nothing more
  auto* in = static_cast<const unsigned char*>(buf);
  while (size > 0) {
    ssize_t n = ::pwrite(file->fd, in, size, static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      file->write_errno = n < 0 ? errno : EIO;
      return 0;
    }
    in += n;
    addr += static_cast<haddr_t>(n);
    size -= static_cast<size_t>(n);
  }
  if (addr > file->eof) file->eof = addr;
  return 0;
}

herr_t latch_truncate(H5FD_t* f, hid_t, hbool_t) {
  auto* file = reinterpret_cast<LatchFile*>(f);
  if (file->eoa == file->eof || file->write_errno) return 0;
  if (::ftruncate(file->fd, static_cast<off_t>(file->eoa)) < 0) {
    file->write_errno = errno;
    return 0;
  }
  file->eof = file->eoa;
  return 0;
}

herr_t latch_lock(H5FD_t* f, hbool_t rw) {
  auto* file = reinterpret_cast<LatchFile*>(f);
  if (::flock(file->fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
    if (errno == ENOSYS && file->ignore_disabled_locks) return 0;
    push_error(H5E_VFL, H5E_CANTLOCKFILE, "flock (is the file open in another program?)", errno);
    return -1;
  }
  return 0;
}

herr_t latch_unlock(H5FD_t* f) {
  auto* file = reinterpret_cast<LatchFile*>(f);
  if (::flock(file->fd, LOCK_UN) < 0) {
    if (errno == ENOSYS && file->ignore_disabled_locks) return 0;
    push_error(H5E_VFL, H5E_CANTUNLOCKFILE, "flock unlock", errno);
    return -1;
  }
  return 0;
}

H5FD_class_t make_class() {
  H5FD_class_t c{};
  c.name = "magellan_latch";
  c.maxaddr = kMaxAddr;
  c.fc_degree = H5F_CLOSE_WEAK;
  c.open = latch_open;
  c.close = latch_close;
  c.cmp = latch_cmp;
  c.query = latch_query;
  c.get_eoa = latch_get_eoa;
  c.set_eoa = latch_set_eoa;
  c.get_eof = latch_get_eof;
  c.get_handle = latch_get_handle;
  c.read = latch_read;
  c.write = latch_write;
  c.truncate = latch_truncate;
  c.lock = latch_lock;
  c.unlock = latch_unlock;
  // Metadata and raw data in separate free lists.
  const H5FD_mem_t free_list_map[H5FD_MEM_NTYPES] = H5FD_FLMAP_DICHOTOMY;
  std::memcpy(c.fl_map, free_list_map, sizeof(free_list_map));
  return c;
}

}  // namespace

hid_t latch_driver() {
  static std::mutex mutex;
  static hid_t id = H5I_INVALID_HID;
  static const H5FD_class_t cls = make_class();
  std::lock_guard<std::mutex> lock(mutex);
  if (id < 0 || H5Iget_type(id) != H5I_VFL) id = H5FDregister(&cls);  // again after H5close
  if (id < 0) fail("[h5] could not register magellan's HDF5 file driver");
  return id;
}

int latched_write_error(hid_t file) {
  Id fapl(H5Fget_access_plist(file), H5Pclose);
  if (!fapl.valid() || H5Pget_driver(fapl.get()) != latch_driver()) {  // not opened by us
    error_detail();
    return 0;
  }
  void* handle = nullptr;
  if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || !handle) {
    error_detail();
    return 0;
  }
  return reinterpret_cast<LatchFile*>(handle)->write_errno;
}

int take_closed_write_error() {
  int err = closed_write_errno;
  closed_write_errno = 0;
  return err;
}

}  // namespace mg::h5
