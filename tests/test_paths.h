#pragma once
// Where the tests find the files the repository ships (assets/, tests/fixtures/, experiments/,
// docs/): under the source directory, which is the checkout the tests were built from
// (MAGELLAN_SOURCE_DIR, a compile definition) unless the environment variable
// MAGELLAN_SOURCE_DIR names another one at run time (test binaries run away from the checkout
// they were built in, e.g. copied to another machine beside a copy of the repository).
//   #include "tests/test_paths.h"
//   mg::test_paths::asset_path("gpt2/encoder.json")   // <source>/assets/gpt2/encoder.json
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace mg::test_paths {

// The repository root: $MAGELLAN_SOURCE_DIR when set and non-empty, else the compiled path.
inline std::string source_dir() {
  const char* env = std::getenv("MAGELLAN_SOURCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  return MAGELLAN_SOURCE_DIR;
}

// <source>/<relative>, not checked (safe for namespace-scope constants).
inline std::string repo_path(const std::string& relative) { return source_dir() + "/" + relative; }

// Throws, naming the path and why, unless `path` (a file or a folder) can be read.
inline void require_readable(const std::string& path, const std::string& where) {
  if (::access(path.c_str(), R_OK) == 0) return;
  const int err = errno;
  throw std::runtime_error("cannot open " + path + ": " + std::strerror(err) +
                           "; the repository ships it under " + where +
                           " (tests look under $MAGELLAN_SOURCE_DIR when set, else the checkout "
                           "they were built from)");
}

// <source>/assets/<relative> (a file or a folder), checked: a missing asset is a test failure
// that names the path, never a silent pass.
inline std::string asset_path(const std::string& relative) {
  std::string path = repo_path("assets/" + relative);
  require_readable(path, "assets/");
  return path;
}

// The whole content of <source>/<relative>, checked like asset_path.
inline std::string read_repo_file(const std::string& relative) {
  const std::string path = repo_path(relative);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(err) +
                             "; the repository ships it as " + relative +
                             " (tests look under $MAGELLAN_SOURCE_DIR when set, else the checkout "
                             "they were built from)");
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace mg::test_paths
