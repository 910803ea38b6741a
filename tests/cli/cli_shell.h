#pragma once
// Running the built `magellan` (or any command) through the shell, for the small CLI tests
// (test_cli_e2e.cpp has its own fork/exec driver for the long scenarios).
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/test_paths.h"

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

// A file's bytes (to check that an input was left byte-identical).
inline std::string bytes_of(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// dir/init.h5: a float32 one-layer byte Mamba (vocabulary 257), written by running the h5py
// block of docs/checkpoint-format.md as documented (/usr/bin/python3 has h5py and numpy).
// Call with ASSERT_NO_FATAL_FAILURE.
inline void write_documented_checkpoint(const std::filesystem::path& dir) {
  std::string recipe = mg::test_paths::read_repo_file("docs/checkpoint-format.md");
  const size_t open = recipe.find("```python\n", recipe.find("A complete example"));
  ASSERT_NE(open, std::string::npos) << "docs/checkpoint-format.md lost its h5py example";
  recipe = recipe.substr(open + 10);
  std::ofstream(dir / "make.py") << recipe.substr(0, recipe.find("\n```") + 1);
  const ShellResult r = sh(dir, "/usr/bin/python3 make.py");
  ASSERT_EQ(r.rc, 0) << r.show();
}

}  // namespace mg::test
