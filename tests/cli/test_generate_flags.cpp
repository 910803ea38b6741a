// magellan generate refuses bad input with one line naming it (issue 18): --prompt-ids parsed
// strictly (every word a whole number in [0, vocab)), and each sampling flag in its range,
// NaN and infinity included.
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

TEST(GenerateFlags, GenerateParsesPromptIdsStrictly) {
  mg::test::ShellTempDir dir;
  ASSERT_NO_FATAL_FAILURE(mg::test::write_documented_checkpoint(dir.path));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"1 x 2", "'x' (word 2) is not a token id"},
      {"1 2.5", "'2.5' (word 2) is not a token id"},
      {"3 4 5abc", "'5abc' (word 3) is not a token id"},
      {"1 0x10", "'0x10' (word 2) is not a token id"},
      {"1 99999999999999999999", "(word 2) is not a token id"},
      {"7 257", "id 257 (word 2) is outside the vocabulary [0, 257)"},
      {"-1", "id -1 (word 1) is outside the vocabulary [0, 257)"},
      {"  ", "--prompt-ids has no ids"},
  };
  for (const auto& [ids, want] : cases) {
    auto r = magellan(dir.path, "generate --checkpoint init.h5 -n 2 --prompt-ids '" + ids + "'");
    EXPECT_EQ(r.rc, 1) << r.show();
    EXPECT_NE(r.out.find(want), std::string::npos) << "want: " << want << r.show();
  }
  auto r = magellan(dir.path, "generate --checkpoint init.h5 -n 2 --temp 0 --prompt-ids ' 1\t2\n3 '");
  EXPECT_EQ(r.rc, 0) << r.show();
}

TEST(GenerateFlags, GenerateRefusesSamplingFlagsOutOfRange) {
  mg::test::ShellTempDir dir;
  ASSERT_NO_FATAL_FAILURE(mg::test::write_documented_checkpoint(dir.path));
  // Boost.Program_options reads doubles with lexical_cast: "nan", "NaN", "-nan" and "inf" parse.
  // A negative value is given as --flag=-1 (Boost takes a separate "-1" for an option).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--temp=-1", "--temp -1: "},
      {"--temp nan", "--temp nan: "},
      {"--temp NaN", "--temp nan: "},
      {"--temp=-nan", "--temp "},
      {"--temp inf", "--temp inf: "},
      {"--top-p 0", "--top-p 0: "},
      {"--top-p 1.5", "--top-p 1.5: "},
      {"--top-p=-0.5", "--top-p -0.5: "},
      {"--top-p nan", "--top-p nan: "},
      {"--top-k=-1", "--top-k -1: "},
      {"--repeat-penalty 0", "--repeat-penalty 0: "},
      {"--repeat-penalty=-2", "--repeat-penalty -2: "},
      {"--repeat-penalty nan", "--repeat-penalty nan: "},
      {"--repeat-penalty inf", "--repeat-penalty inf: "},
      {"--repeat-last-n=-1", "--repeat-last-n -1: "},
      {"--n-predict=-1", "-n -1: "},
      {"-n 10000001", "-n 10000001: "},
  };
  for (const auto& [flag, want] : cases) {
    auto r = magellan(dir.path, "generate --checkpoint init.h5 --prompt-ids '1 2' " + flag);
    EXPECT_EQ(r.rc, 1) << r.show();
    EXPECT_NE(r.out.find(want), std::string::npos) << "want: " << want << r.show();
    EXPECT_NE(r.out.find("must be"), std::string::npos) << "the valid range" << r.show();
  }
  // The edges of each range are accepted.
  auto r = magellan(dir.path, "generate --checkpoint init.h5 --prompt-ids '1 2' -n 0 --temp 0 --top-p 1 --top-k 0 "
                              "--repeat-penalty 1.3 --repeat-last-n 0");
  EXPECT_EQ(r.rc, 0) << r.show();
}

}  // namespace
