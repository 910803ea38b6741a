#pragma once
// Running the built `magellan` (or any command) through the shell, for the small CLI tests
// (test_cli_e2e.cpp has its own fork/exec driver for the long scenarios).
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace mg::test {

inline const std::string kMagellan = MAGELLAN_BINARY_DIR "/magellan";

struct ShellResult {
  int rc = -1;
  std::string out;  // stdout and stderr, in order
  std::string cmd;
  std::string show() const { return "\n$ " + cmd + "\n-- exit " + std::to_string(rc) + "\n" + out; }
};

// Runs `cmd` with /bin/sh in `dir`; captures its output in dir/cmd.log.
inline ShellResult sh(const std::filesystem::path& dir, const std::string& cmd) {
  const std::filesystem::path log = dir / "cmd.log";
  const int status = std::system(("cd '" + dir.string() + "' && (" + cmd + ") > '" + log.string() + "' 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, ss.str(), cmd};
}

// A fresh directory under $TMPDIR, removed at the end of the test.
struct ShellTempDir {
  std::filesystem::path path;
  ShellTempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "magellan_cli_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~ShellTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace mg::test
