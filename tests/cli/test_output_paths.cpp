// No output destroys an input: quantize, merge-lora, export-experts and import-hf refuse an -o
// that is one of their inputs, however spelled (the same path, a symbolic link, a hard link),
// and an -o that is not a regular file (/dev/null); the input stays byte-identical.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/cli/cli_shell.h"
#include "tests/test_paths.h"

namespace fs = std::filesystem;

namespace {

using mg::test::kMagellan;
using mg::test::sh;

using mg::test::bytes_of;

TEST(OutputPaths, AnOutputThatIsAnInputIsRefused) {
  mg::test::ShellTempDir dir;
  ASSERT_NO_FATAL_FAILURE(mg::test::write_documented_checkpoint(dir.path));
  auto r = sh(dir.path, "ln -s init.h5 soft.h5 && ln init.h5 hard.h5 && mkdir sub");
  ASSERT_EQ(r.rc, 0) << r.show();
  const std::string before = bytes_of(dir.path / "init.h5");
  for (const char* cmd : {"quantize --checkpoint init.h5 -o init.h5", "quantize --checkpoint init.h5 -o soft.h5",
                                 "quantize --checkpoint init.h5 -o hard.h5", "quantize --checkpoint init.h5 -o ./sub/../init.h5",
                                 "merge-lora --checkpoint init.h5 -o hard.h5", "export-experts --checkpoint init.h5 -o soft.h5"}) {
    r = sh(dir.path, kMagellan + " " + cmd);
    EXPECT_EQ(r.rc, 1) << r.show();
    EXPECT_NE(r.out.find("(the same file): writing it would destroy the input"), std::string::npos) << r.show();
  }
  for (const char* out : {"/dev/null", "sub"}) {
    r = sh(dir.path, kMagellan + " quantize --checkpoint init.h5 -o " + out);
    EXPECT_EQ(r.rc, 1) << r.show();
    EXPECT_NE(r.out.find("is not a regular file"), std::string::npos) << r.show();
  }
  EXPECT_EQ(bytes_of(dir.path / "init.h5"), before);
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  r = sh(dir.path, kMagellan + " quantize --checkpoint init.h5 -o fresh.h5 --quiet");  // a new path still works
  EXPECT_EQ(r.rc, 0) << r.show();
}

TEST(OutputPaths, ImportHfRefusesToWriteOverItsSourceFiles) {
  mg::test::ShellTempDir dir;
  fs::copy(mg::test_paths::repo_path("tests/fixtures/hf_mamba_tiny"), dir.path / "hf");
  const std::string before = bytes_of(dir.path / "hf/model.safetensors");
  // -o hf/config.h5 would write hf/config.yaml beside it: not an input. -o over the weights is.
  auto r = sh(dir.path, kMagellan + " import-hf hf -o hf/model.safetensors --quiet");
  EXPECT_EQ(r.rc, 1) << r.show();
  EXPECT_NE(r.out.find("writing it would destroy the input"), std::string::npos) << r.show();
  EXPECT_EQ(bytes_of(dir.path / "hf/model.safetensors"), before);
  r = sh(dir.path, kMagellan + " import-hf hf -o hf/config.h5 --quiet");  // config.yaml is not config.json
  EXPECT_EQ(r.rc, 0) << r.show();
}

}  // namespace
