// tokenizer train -o replaces an existing tokenizer.json atomically (issue 18): the new file is
// written to a temp file renamed over it, so a write cut short (a full disk) leaves the old one.
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

using mg::test::bytes_of;

// tokenizer train -o over an existing tokenizer: the write goes to a temp file renamed over
// it, so a write cut short (here by a file-size limit, as a full disk would) leaves the old
// file as it was.
TEST(AtomicOutputs, TokenizerTrainReplacesItsOutputAtomically) {
  mg::test::ShellTempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + "\n";
  std::ofstream(dir.path / "corpus.txt") << text;
  auto r = sh(dir.path, kMagellan + " tokenizer train --vocab-size 400 corpus.txt -o tok.json");
  ASSERT_EQ(r.rc, 0) << r.show();
  const std::string before = bytes_of(dir.path / "tok.json");
  ASSERT_GT(before.size(), 8192u);
  // At most 4 KiB may be written (ulimit -f counts 512- or 1024-byte blocks): the new file
  // cannot be written whole. SIGXFSZ is ignored so the write fails with EFBIG instead.
  r = sh(dir.path, "(trap '' XFSZ; ulimit -f 4; " + kMagellan + " tokenizer train --vocab-size 410 corpus.txt -o tok.json)");
  EXPECT_NE(r.rc, 0) << r.show();
  EXPECT_EQ(bytes_of(dir.path / "tok.json"), before) << "the old tokenizer was damaged" << r.show();
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  r = sh(dir.path, kMagellan + " tokenizer train --vocab-size 410 corpus.txt -o tok.json");
  EXPECT_EQ(r.rc, 0) << r.show();
  EXPECT_NE(bytes_of(dir.path / "tok.json"), before);
}

// -o naming the corpus (by any spelling) or a special file is refused before anything is written.
TEST(AtomicOutputs, TokenizerTrainRefusesAnOutputThatIsAnInput) {
  mg::test::ShellTempDir dir;
  std::ofstream(dir.path / "corpus.txt") << "the quick brown fox jumps over the lazy dog\n";
  auto r = sh(dir.path, "ln -s corpus.txt link.txt && mkdir sub");
  ASSERT_EQ(r.rc, 0) << r.show();
  const std::string before = bytes_of(dir.path / "corpus.txt");
  for (const char* out : {"corpus.txt", "link.txt", "sub/../corpus.txt"}) {
    r = sh(dir.path, kMagellan + " tokenizer train --vocab-size 260 corpus.txt -o " + out);
    EXPECT_EQ(r.rc, 1) << r.show();
    EXPECT_NE(r.out.find("writing it would destroy the input"), std::string::npos) << r.show();
  }
  for (const char* out : {"/dev/null", "sub"}) {
    r = sh(dir.path, kMagellan + " tokenizer train --vocab-size 260 corpus.txt -o " + out);
    EXPECT_EQ(r.rc, 1) << r.show();
    EXPECT_NE(r.out.find("is not a regular file"), std::string::npos) << r.show();
  }
  EXPECT_EQ(bytes_of(dir.path / "corpus.txt"), before);
}

}  // namespace
