// magellan export-experts --verify STORE: reads every record of an expert store and checks its
// CRC32C; "ok: N experts" on an intact store, the damaged expert named and exit 1 after one
// flipped byte; generate with that store refuses the damaged expert the same way.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/cli/cli_shell.h"

namespace fs = std::filesystem;

namespace {

using mg::test::kMagellan;
using mg::test::sh;

TEST(ExportExpertsVerify, FindsAFlippedByteAndNamesTheExpert) {
  mg::test::ShellTempDir dir;
  std::ofstream(dir.path / "tiny.yaml")
      << "experiment: verify\nseed: 7\nthreads: 2\n"
         "model:\n  d_model: 32\n  vocab_size: 32\n  layer_pattern: ME\n  d_state: 8\n  n_experts: 4\n"
         "  top_k: 2\n  expert_hidden: 64\n"
         "data:\n  source: synthetic\n  task: selective_copy\n  seq_len: 32\n  n_memorize: 4\n  n_tokens: 8\n"
         "training:\n  steps: 1\n  batch_size: 2\n  log_every: 1\n"
         "checkpoint:\n  every: 1\n"
         "logging:\n  progress: never\n";
  auto r = sh(dir.path, kMagellan + " train tiny.yaml run_dir=run --quiet && " + kMagellan +
                            " export-experts --checkpoint run -o s.experts --quiet");
  ASSERT_EQ(r.rc, 0) << r.show();
  r = sh(dir.path, kMagellan + " export-experts --verify s.experts --quiet");
  EXPECT_EQ(r.rc, 0) << r.show();
  EXPECT_NE(r.out.find("ok: 4 experts"), std::string::npos) << r.show();

  // Flip one byte in the middle of the third record (layer 1, expert 2), found from the index
  // (32-byte entries at 4096: i32 layer, i32 expert, i64 offset, i64 bytes, u32 crc32c, u32 0).
  r = sh(dir.path,
         "/usr/bin/python3 -c \"import struct\n"
         "f = open('s.experts', 'r+b'); f.seek(4096 + 2 * 32)\n"
         "layer, expert, off, n, crc, z = struct.unpack('<iiqqII', f.read(32)); assert (layer, expert) == (1, 2)\n"
         "f.seek(off + n // 2); b = f.read(1); f.seek(off + n // 2); f.write(bytes([b[0] ^ 0x40]))\"");
  ASSERT_EQ(r.rc, 0) << r.show();
  r = sh(dir.path, kMagellan + " export-experts --verify s.experts --quiet");
  EXPECT_EQ(r.rc, 1) << r.show();
  EXPECT_NE(r.out.find("s.experts: expert 2 of layer 1 is damaged"), std::string::npos) << r.show();
  EXPECT_NE(r.out.find("export it again with: magellan export-experts"), std::string::npos) << r.show();
  EXPECT_EQ(r.out.find("ok:"), std::string::npos) << r.show();

  // Generation that routes to it (this prompt does, within a few tokens) refuses it.
  r = sh(dir.path, kMagellan + " generate --checkpoint run --prompt-ids '1 2 3 4 5 6 7 8' -n 32 --temp 1.5 --seed 1 "
                               "--stream-experts s.experts --no-prefetch");
  EXPECT_EQ(r.rc, 1) << r.show();
  EXPECT_NE(r.out.find("magellan generate: [experts] "), std::string::npos) << r.show();
  EXPECT_NE(r.out.find("expert 2 of layer 1 is damaged"), std::string::npos) << r.show();

  // --verify stands alone.
  r = sh(dir.path, kMagellan + " export-experts --verify s.experts --checkpoint run");
  EXPECT_EQ(r.rc, 1) << r.show();
  EXPECT_NE(r.out.find("give it alone"), std::string::npos) << r.show();
}

}  // namespace
