#include "checkpoints/atomic_save.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "autograd/error.h"

namespace mg {

namespace fs = std::filesystem;

namespace {

// fsync(2) on a file or a directory by path. Returns errno, 0 on success.
int fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0) | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

// The part of `name` that the wildcards of `pattern` matched: the literal text before the
// first wildcard and after the last '*' is dropped ("step_*.h5": "step_9.h5" -> "9", so the
// 5 of ".h5" is not taken for a step). `name` is known to match `pattern`.
std::string wildcard_part(const std::string& pattern, const std::string& name) {
  size_t head = std::min(pattern.find_first_of("*?[\\"), pattern.size());
  size_t star = pattern.rfind('*');
  size_t tail = 0;
  if (star != std::string::npos && pattern.find_first_of("*?[\\", star + 1) == std::string::npos)
    tail = pattern.size() - star - 1;
  if (head + tail > name.size()) return name;
  return name.substr(head, name.size() - head - tail);
}

// The last run of decimal digits in `name`; false when there is none (or it overflows).
bool last_number(const std::string& name, int64_t* out) {
  size_t end = name.find_last_of("0123456789");
  if (end == std::string::npos) return false;
  size_t begin = end;
  while (begin > 0 && name[begin - 1] >= '0' && name[begin - 1] <= '9') --begin;
  std::string digits = name.substr(begin, end - begin + 1);
  size_t first = digits.find_first_not_of('0');
  if (first != std::string::npos && digits.size() - first > 18) return false;
  *out = first == std::string::npos ? 0 : std::stoll(digits.substr(first));
  return true;
}

// True when no process `pid` exists (kill(pid, 0) fails with ESRCH). A live process, or one
// we may not signal (EPERM: it exists), counts as alive: its temp file may be in use.
bool process_is_gone(int64_t pid) {
  if (pid <= 0 || pid > INT32_MAX) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::vector<std::string> remove_stale_temp_files(const std::string& final_path) {
  std::vector<std::string> removed;
  const fs::path target(final_path);
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string own = target.filename().string();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || at == 0) continue;
    const std::string base = name.substr(0, at), pid_text = name.substr(at + 5);
    if (pid_text.empty() || pid_text.size() > 10 || pid_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    // Only what a save of this file, or of a checkpoint beside it, could have left.
    if (base != own && ::fnmatch("step_*.h5", base.c_str(), 0) != 0) continue;
    if (!process_is_gone(std::stoll(pid_text))) continue;
    if (fs::remove(entry.path(), ec)) {
      spdlog::info("[save] removed {}, left by an interrupted save of process {} (no longer running)",
                   entry.path().string(), pid_text);
      removed.push_back(entry.path().string());
    }
  }
  return removed;
}

void atomic_write(const std::string& final_path, const std::function<void(const std::string&)>& write_fn) {
  remove_stale_temp_files(final_path);  // a save killed earlier (kill -9, power loss) left its temp file
  const std::string temp = fmt::format("{}.tmp.{}", final_path, ::getpid());
  auto remove_temp = [&] {
    std::error_code ec;
    fs::remove(temp, ec);
  };
  try {
    write_fn(temp);
    if (int err = fsync_path(temp, false))
      throw Error(fmt::format("fsync of {} failed: {}", temp, std::strerror(err)));
    if (::rename(temp.c_str(), final_path.c_str()) != 0)
      throw Error(fmt::format("rename {} -> {} failed: {}", temp, final_path, std::strerror(errno)));
  } catch (const std::exception& e) {
    remove_temp();  // write_fn has closed the file (its handles are gone with its scope)
    throw Error(fmt::format("[save] writing {} failed; the previous file there (if any) is untouched: {}",
                            final_path, e.what()));
  } catch (...) {
    remove_temp();
    throw;
  }
  // The rename is durable only once the directory entry is on disk. Some filesystems refuse
  // fsync on directories: the file itself is complete, so warn rather than fail the run.
  fs::path dir = fs::path(final_path).parent_path();
  if (int err = fsync_path(dir.empty() ? "." : dir.string(), true))
    spdlog::warn("[save] wrote {}, but fsync of its directory failed ({}); it may be lost if the machine "
                 "loses power now",
                 final_path, std::strerror(err));
}

void atomic_save(const std::string& final_path, const std::function<void(H5File&)>& write_fn) {
  atomic_write(final_path, [&](const std::string& temp) {
    H5File file = H5File::create(temp);
    write_fn(file);
    MG_CHECK(file.is_open(), "[checkpoint] write_fn closed the file; leave closing to atomic_save");
    file.set_int_attr("/", kCompleteAttr, 1);  // last: marks everything above as written
    file.close();                              // throws if HDF5 could not write (disk full)
  });
}

std::string checkpoint_filename(int64_t step) { return fmt::format("step_{:08d}.h5", step); }

std::vector<CheckpointFile> list_checkpoints(const std::string& dir, const std::string& pattern) {
  std::vector<CheckpointFile> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    std::string name = entry.path().filename().string();
    int64_t step = 0;
    if (::fnmatch(pattern.c_str(), name.c_str(), 0) != 0 ||
        !last_number(wildcard_part(pattern, name), &step))
      continue;
    out.push_back({(fs::path(dir) / name).string(), step});
  }
  MG_CHECK(!ec, "[checkpoint] cannot list directory {}: {}; check its permissions", dir,
           ec.message());
  std::sort(out.begin(), out.end(), [](const CheckpointFile& a, const CheckpointFile& b) {
    return a.step != b.step ? a.step < b.step : a.path < b.path;
  });
  return out;
}

std::vector<std::string> keep_last(const std::string& dir, const std::string& pattern, int n,
                                   const std::vector<std::string>& protect) {
  MG_CHECK(n >= 1, "[checkpoint] keep_last must keep at least 1 checkpoint, got {}", n);
  auto same_file = [](const std::string& a, const std::string& b) {
    std::error_code ec1, ec2;
    return fs::weakly_canonical(a, ec1) == fs::weakly_canonical(b, ec2) && !ec1 && !ec2;
  };
  auto is_protected = [&](const std::string& path) {
    return std::any_of(protect.begin(), protect.end(),
                       [&](const std::string& p) { return same_file(path, p); });
  };
  std::vector<CheckpointFile> files = list_checkpoints(dir, pattern);
  std::vector<std::string> removed;
  int kept = 0;
  for (auto it = files.rbegin(); it != files.rend(); ++it) {  // newest first
    if (is_protected(it->path)) continue;
    if (kept < n) {
      ++kept;
      continue;
    }
    std::error_code ec;
    if (fs::remove(it->path, ec)) {
      removed.push_back(it->path);
    } else {
      spdlog::warn("[checkpoint] keep_last: could not delete {}: {}", it->path, ec.message());
    }
  }
  return removed;
}

bool is_complete_checkpoint(const std::string& path, std::string* why_not) {
  std::string reason;
  try {
    H5File file = H5File::open_read(path);
    if (!file.has_attr("/", kCompleteAttr)) {
      reason = fmt::format("{}: no root attribute '{}' (the save did not finish)", path,
                           kCompleteAttr);
    } else if (int64_t flag = file.int_attr("/", kCompleteAttr); flag != 1) {
      reason = fmt::format("{}: root attribute '{}' is {}, not 1", path, kCompleteAttr, flag);
    }
  } catch (const Error& e) {
    reason = e.what();
  }
  if (why_not) *why_not = reason;
  return reason.empty();
}

std::optional<CheckpointFile> latest_complete_checkpoint(const std::string& dir,
                                                         const std::string& pattern) {
  std::vector<CheckpointFile> files = list_checkpoints(dir, pattern);
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    std::string why;
    if (is_complete_checkpoint(it->path, &why)) return *it;
    spdlog::warn("[checkpoint] skipping incomplete checkpoint (step {}): {}", it->step, why);
  }
  return std::nullopt;
}

}  // namespace mg
