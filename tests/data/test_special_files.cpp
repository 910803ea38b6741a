// Special files given as inputs (issue 18): a FIFO or a device where a tokenizer file or a
// corpus is expected is refused at once with "is not a regular file (a FIFO)", never opened
// (opening a FIFO for reading blocks until a writer comes).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "autograd/error.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "util/regular_file.h"

namespace fs = std::filesystem;

namespace {

struct FifoDir {
  fs::path path;
  FifoDir() {
    std::string tmpl = (fs::temp_directory_path() / "magellan_fifo_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
    EXPECT_EQ(::mkfifo((path / "fifo.json").c_str(), 0600), 0);
    EXPECT_EQ(::mkfifo((path / "corpus.txt").c_str(), 0600), 0);
  }
  ~FifoDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mg::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SpecialFiles, FileKindNamesWhatAPathIs) {
  FifoDir d;
  EXPECT_EQ(mg::file_kind((d.path / "fifo.json").string()), "a FIFO");
  EXPECT_EQ(mg::file_kind("/dev/null"), "a character device");
  EXPECT_EQ(mg::file_kind(d.path.string()), "a directory");
  EXPECT_EQ(mg::file_kind((d.path / "missing").string()), "missing");
  EXPECT_NO_THROW(mg::require_regular_file((d.path / "missing").string(), "[t]"));  // the caller reports it
  EXPECT_NE(error_of([&] { mg::require_existing_regular_file((d.path / "missing").string(), "[t]"); })
                .find("does not exist"),
            std::string::npos);
  EXPECT_EQ(error_of([] { mg::require_regular_file("/dev/zero", "[t]"); }),
            "[t] /dev/zero is not a regular file (a character device); give the path of a file");
}

TEST(SpecialFiles, TokenizerAndCorpusFifosAreRefused) {
  FifoDir d;
  const std::string fifo_json = (d.path / "fifo.json").string();
  EXPECT_NE(error_of([&] { mg::load_tokenizer(fifo_json); }).find("fifo.json is not a regular file (a FIFO)"),
            std::string::npos);
  const std::string corpus = (d.path / "corpus.txt").string();
  EXPECT_NE(error_of([&] { mg::expand_input_paths({corpus}); }).find("corpus.txt is not a regular file (a FIFO)"),
            std::string::npos);
  // In a corpus folder, a FIFO is skipped (only regular files are corpus files).
  std::ofstream(d.path / "real.txt") << "text";
  EXPECT_EQ(mg::expand_input_paths({d.path.string()}).size(), 1u);
}

}  // namespace
