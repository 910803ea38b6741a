#include "util/regular_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "autograd/error.h"

namespace mg {

std::string file_kind(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return errno == ENOENT || errno == ENOTDIR ? "missing" : fmt::format("unreadable ({})", std::strerror(errno));
  switch (st.st_mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    default: return "a special file";
  }
}

void require_regular_file(const std::string& path, std::string_view where) {
  const std::string kind = file_kind(path);
  if (kind == "a regular file" || kind == "missing" || kind.starts_with("unreadable")) return;  // open() says why
  throw Error(fmt::format("{} {} is not a regular file ({}); give the path of a file", where, path, kind));
}

void require_existing_regular_file(const std::string& path, std::string_view where) {
  MG_CHECK(file_kind(path) != "missing", "{} {} does not exist; check the path", where, path);
  require_regular_file(path, where);
}

}  // namespace mg
