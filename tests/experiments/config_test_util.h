#pragma once
// Helpers for the config tests: a scratch directory of YAML files, and "this call throws an
// mg::Error whose message contains all of these pieces" (printing the message when not).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/error.h"

namespace mg::testing {

class ScratchDir {
 public:
  ScratchDir() {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() /
           ("magellan_config_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(dir_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  // Writes `text` to dir/name (creating sub-directories) and returns the full path.
  std::string write(const std::string& name, const std::string& text) const {
    auto p = dir_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
  std::string path(const std::string& name = "") const { return (dir_ / name).lexically_normal().string(); }

 private:
  std::filesystem::path dir_;
};

// Runs `fn`, expects an mg::Error, and checks that its message contains every piece.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& pieces) {
  try {
    fn();
  } catch (const mg::Error& e) {
    std::string msg = e.what();
    for (const auto& piece : pieces)
      EXPECT_NE(msg.find(piece), std::string::npos)
          << "message lacks \"" << piece << "\"\n  message: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-mg::Error exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no mg::Error thrown; expected one mentioning \"" << (pieces.empty() ? "" : pieces[0]) << "\"";
}

}  // namespace mg::testing
