// What a person sees on a terminal: training under a pseudo-terminal (util-linux `script`),
// where the progress line is redrawn in place. A log line (the eval result) must start on a
// clean line, not glued to the end of the progress line.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/cli/cli_shell.h"

namespace {

using mg::test::kMagellan;
using mg::test::sh;

// Terminal output made readable in a failure message: ESC shown as <ESC>.
std::string visible(std::string s) {
  for (size_t at = s.find('\033'); at != std::string::npos; at = s.find('\033', at)) s.replace(at, 1, "<ESC>");
  return s;
}

TEST(TerminalOutput, EvalLinesDoNotGlueToTheProgressLine) {
  mg::test::ShellTempDir dir;
  std::ofstream(dir.path / "tiny.yaml") << "experiment: pty\nrun_dir: run\n"
                                           "model: {d_model: 32, vocab_size: 32, layer_pattern: M, d_state: 8}\n"
                                           "data: {source: synthetic, task: induction, seq_len: 32, n_tokens: 8}\n"
                                           "training: {steps: 6, batch_size: 2, log_every: 1}\n"
                                           "eval: {every: 3, batches: 2}\ncheckpoint: {every: 0}\nthreads: 1\n";
  const auto r = sh(dir.path, "script -qfec '" + kMagellan + " train tiny.yaml' /dev/null");
  ASSERT_EQ(r.rc, 0) << r.show();
  ASSERT_NE(r.out.find("\r\033[Ktrain"), std::string::npos) << "no progress line was drawn in place" << r.show();
  // Every log line ("[2026-12-08 02:13:14] ...") starts a line: after a newline, or after the
  // erase-line sequence that clears the progress line.
  int log_lines = 0;
  for (size_t at = r.out.find("eval step"); at != std::string::npos; at = r.out.find("eval step", at + 1)) {
    const size_t open = r.out.rfind('[', at);
    ASSERT_NE(open, std::string::npos);
    const std::string before = r.out.substr(open >= 4 ? open - 4 : 0, open >= 4 ? 4 : open);
    const bool clean = (!before.empty() && before.back() == '\n') || before.ends_with("\r\033[K") || open == 0;
    EXPECT_TRUE(clean) << "an eval line glued to what came before it: ..."
                       << visible(r.out.substr(open >= 60 ? open - 60 : 0, 120));
    ++log_lines;
  }
  EXPECT_EQ(log_lines, 2) << r.show();
}

}  // namespace
