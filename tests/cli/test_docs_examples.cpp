// The documentation's runnable examples, run as written: docs/checkpoint-format.md's h5py
// block writes a checkpoint from outside magellan, which generate and quantize must accept.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/test_paths.h"

namespace fs = std::filesystem;

namespace {

const std::string kBinary = MAGELLAN_BINARY_DIR "/magellan";

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

// Runs a shell command in `dir`; returns its exit code, its output in `log`.
int sh(const fs::path& dir, const std::string& cmd, std::string& log) {
  const fs::path out = dir / "cmd.log";
  const int status = std::system(("cd '" + dir.string() + "' && " + cmd + " > '" + out.string() + "' 2>&1").c_str());
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  log = "$ " + cmd + "\n" + ss.str();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

TEST(DocsExamples, CheckpointWrittenByH5pyAsDocumentedLoads) {
  std::string tmpl = (fs::temp_directory_path() / "magellan_docs_XXXXXX").string();
  const fs::path dir = ::mkdtemp(tmpl.data());
  std::ofstream(dir / "example.py")
      << python_block_after("docs/checkpoint-format.md", "A complete example");
  std::string log;
  // /usr/bin/python3 has h5py and numpy (Debian packages); the `python3` on PATH may not.
  ASSERT_EQ(sh(dir, "/usr/bin/python3 example.py", log), 0) << log;
  EXPECT_EQ(sh(dir, kBinary + " generate --checkpoint init.h5 -p ROMEO: -n 8 --seed 1", log), 0) << log;
  EXPECT_EQ(sh(dir, kBinary + " quantize --checkpoint init.h5 -o init_nf4.h5 --quiet", log), 0) << log;
  EXPECT_TRUE(fs::exists(dir / "init_nf4.h5"));
  EXPECT_EQ(sh(dir, kBinary + " generate --checkpoint init_nf4.h5 -p ROMEO: -n 8 --seed 1", log), 0) << log;
  fs::remove_all(dir);
}

}  // namespace
