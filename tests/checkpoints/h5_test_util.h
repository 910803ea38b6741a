#pragma once
// Shared by tests/checkpoints/*.cpp: a scratch directory per test, error-message checks, the
// system python with h5py (the independent reader/writer the files are checked against), file
// bytes.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "autograd/error.h"

namespace mg::test {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed at the end of the test.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() /
           fmt::format("mg_ckpt_{}_{}_{}", ::getpid(), info->test_suite_name(), info->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Runs `f`, expects an mg::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// /usr/bin/python3 has h5py and numpy; the `python3` on PATH may not.
inline constexpr const char* kPython = "/usr/bin/python3";

inline bool have_h5py() {
  static const bool ok =
      std::system(fmt::format("{} -c 'import h5py, numpy' >/dev/null 2>&1", kPython).c_str()) == 0;
  return ok;
}

// Runs `script` with the system python and `args`; returns its exit status, and its output
// in *output (for the failure message).
inline int run_python(const ScratchDir& dir, const std::string& script, const std::string& args,
                      std::string* output) {
  static int counter = 0;
  std::string script_path = dir.file(fmt::format("script_{}.py", counter));
  std::string out_path = dir.file(fmt::format("script_{}.out", counter++));
  std::ofstream(script_path) << script;
  int rc = std::system(
      fmt::format("{} {} {} > {} 2>&1", kPython, script_path, args, out_path).c_str());
  std::ifstream in(out_path);
  *output = std::string(std::istreambuf_iterator<char>(in), {});
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A full disk, simulated with RLIMIT_FSIZE: writes past the limit fail with EFBIG (SIGXFSZ
// ignored) just as they fail with ENOSPC on a full disk.
struct FileSizeLimit {
  rlimit old{};
  void (*old_handler)(int);
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old);
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = old;
    lim.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
  }
};

inline std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace mg::test

#define SKIP_WITHOUT_H5PY()                                                              \
  do {                                                                                   \
    if (!::mg::test::have_h5py()) GTEST_SKIP() << "/usr/bin/python3 with h5py is missing"; \
  } while (0)
