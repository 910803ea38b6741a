// The documentation's runnable examples, run as written: docs/checkpoint-format.md's h5py
// block writes a checkpoint from outside magellan, which generate and quantize must accept.
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

// The first ```python block after `marker` in a repository file.
std::string python_block_after(const std::string& doc, const std::string& marker) {
  const std::string text = mg::test_paths::read_repo_file(doc);
  const size_t at = text.find(marker);
  if (at == std::string::npos) throw std::runtime_error(doc + " no longer says '" + marker + "'");
  const size_t open = text.find("```python\n", at);
  const size_t close = text.find("\n```", open + 10);
  if (open == std::string::npos || close == std::string::npos)
    throw std::runtime_error(doc + ": no ```python block after '" + marker + "'");
  return text.substr(open + 10, close - open - 10 + 1);
}

TEST(DocsExamples, CheckpointWrittenByH5pyAsDocumentedLoads) {
  mg::test::ShellTempDir dir;
  std::ofstream(dir.path / "example.py")
      << python_block_after("docs/checkpoint-format.md", "A complete example");
  // /usr/bin/python3 has h5py and numpy (Debian packages); the `python3` on PATH may not.
  const auto py = sh(dir.path, "/usr/bin/python3 example.py");
  ASSERT_EQ(py.rc, 0) << py.show();
  for (const std::string& cmd :
       {kMagellan + " generate --checkpoint init.h5 -p ROMEO: -n 8 --seed 1",
        kMagellan + " quantize --checkpoint init.h5 -o init_nf4.h5 --quiet",
        kMagellan + " generate --checkpoint init_nf4.h5 -p ROMEO: -n 8 --seed 1"}) {
    const auto r = sh(dir.path, cmd);
    EXPECT_EQ(r.rc, 0) << r.show();
  }
  EXPECT_TRUE(fs::exists(dir.path / "init_nf4.h5"));
}

}  // namespace
