// Special files as inputs (issue 18): a FIFO or a device given where magellan reads a file
// (a config, a corpus, a tokenizer, a checkpoint, safetensors, a sweep file) is refused at
// once with "is not a regular file (a FIFO)", never waited on: each command runs under
// `timeout 20`, so one that blocks exits 124 and fails the test instead of hanging it.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/cli/cli_shell.h"
#include "tests/test_paths.h"

namespace fs = std::filesystem;

namespace {

using mg::test::kMagellan;
using mg::test::sh;

// magellan under `timeout 20`: a command that waits on a FIFO exits 124, not the clear error.
mg::test::ShellResult magellan(const fs::path& dir, const std::string& args) {
  return sh(dir, "timeout 20 " + kMagellan + " " + args);
}

// A FIFO (or a device) given where magellan reads a file: refused at once, never waited on.
TEST(SpecialInputs, SpecialFilesAsInputsAreRefused) {
  mg::test::ShellTempDir dir;
  ASSERT_EQ(::mkfifo((dir.path / "fifo").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((dir.path / "fifo.yaml").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((dir.path / "fifo.json").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((dir.path / "fifo.h5").c_str(), 0600), 0);
  std::ofstream(dir.path / "extends.yaml") << "extends: fifo.yaml\nexperiment: x\n";
  const std::string byte_yaml = mg::test_paths::repo_path("experiments/shakespeare_byte.yaml");
  fs::copy(mg::test_paths::repo_path("tests/fixtures/hf_mamba_tiny"), dir.path / "hf");
  fs::remove(dir.path / "hf/config.json");
  ASSERT_EQ(::mkfifo((dir.path / "hf/config.json").c_str(), 0600), 0);
  fs::copy(mg::test_paths::repo_path("tests/fixtures/hf_mamba_tiny"), dir.path / "hf2");
  fs::remove(dir.path / "hf2/model.safetensors");
  ASSERT_EQ(::mkfifo((dir.path / "hf2/model.safetensors").c_str(), 0600), 0);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train fifo.yaml", "fifo.yaml is not a regular file (a FIFO)"},
      {"train extends.yaml", "fifo.yaml is not a regular file (a FIFO)"},  // extends: fifo.yaml
      {"train " + byte_yaml + " data.path=fifo", "fifo is not a regular file (a FIFO)"},
      {"train " + byte_yaml + " data.source=jsonl data.path=fifo", "fifo is not a regular file (a FIFO)"},
      {"generate --checkpoint fifo --prompt-ids 1", "fifo is not a regular file (a FIFO)"},
      {"generate --checkpoint fifo.h5 --prompt-ids 1", "fifo.h5 is not a regular file (a FIFO)"},
      {"generate --checkpoint /dev/zero --prompt-ids 1", "/dev/zero is not a regular file (a character device)"},
      {"info fifo.yaml", "fifo.yaml is not a regular file (a FIFO)"},
      {"tokenizer encode --tokenizer fifo.json hello", "fifo.json is not a regular file (a FIFO)"},
      {"tokenize --tokenizer fifo.json " + byte_yaml, "fifo.json is not a regular file (a FIFO)"},
      {"tokenizer train --vocab-size 300 fifo -o tok.json", "fifo is not a regular file (a FIFO)"},
      {"import-hf hf -o out.h5 --quiet", "config.json is not a regular file (a FIFO)"},
      {"import-hf hf2 -o out.h5 --quiet", "model.safetensors is not a regular file (a FIFO)"},
      {"sweep fifo.yaml", "fifo.yaml is not a regular file (a FIFO)"},
  };
  for (const auto& [cmd, want] : cases) {
    auto r = magellan(dir.path, cmd);
    EXPECT_EQ(r.rc, 1) << "124 = it waited on the FIFO" << r.show();
    EXPECT_NE(r.out.find(want), std::string::npos) << "want: " << want << r.show();
  }
  EXPECT_FALSE(fs::exists(dir.path / "tok.json"));
}

}  // namespace
