// magellan tokenizer encode / decode: ids of a text and the text of ids, checked against ids
// Hugging Face's GPT-2 tokenizer gives ("Hello world" -> 15496 995, <|endoftext|> -> 50256).
#include <gtest/gtest.h>

#include "tests/cli/cli_shell.h"
#include "tests/test_paths.h"

namespace {

using mg::test::kMagellan;
using mg::test::sh;

TEST(TokenizerCli, EncodesAndDecodesLikeGpt2) {
  mg::test::ShellTempDir dir;
  const std::string gpt2 = " -t gpt2:" + mg::test_paths::asset_path("gpt2");
  auto r = sh(dir.path, kMagellan + " tokenizer encode" + gpt2 + " 'Hello world<|endoftext|>'");
  ASSERT_EQ(r.rc, 0) << r.show();
  EXPECT_EQ(r.out, "15496 995 50256\n") << r.show();
  r = sh(dir.path, kMagellan + " tokenizer encode" + gpt2 + " --pieces 'Hello world'");
  EXPECT_EQ(r.out, "15496\tHello\n995\t world\n") << r.show();
  r = sh(dir.path, kMagellan + " tokenizer decode" + gpt2 + " '15496 995 50256'");
  EXPECT_EQ(r.out, "Hello world<|endoftext|>") << r.show();
  // Standard input, bytes the tokenizer must round-trip exactly (newline, UTF-8).
  r = sh(dir.path, "printf 'caf\\303\\251\\nx' | " + kMagellan + " tokenizer encode" + gpt2 + " | " + kMagellan +
                       " tokenizer decode" + gpt2 + " | od -An -c");
  EXPECT_EQ(r.rc, 0) << r.show();
  EXPECT_NE(r.out.find("c   a   f 303 251  \\n   x"), std::string::npos) << r.show();
}

TEST(TokenizerCli, BadIdsAreRefusedNamingTheWord) {
  mg::test::ShellTempDir dir;
  auto r = sh(dir.path, kMagellan + " tokenizer decode '104 x 105'");
  EXPECT_EQ(r.rc, 1) << r.show();
  EXPECT_NE(r.out.find("'x' (word 2) is not a token id"), std::string::npos) << r.show();
  r = sh(dir.path, kMagellan + " tokenizer decode '104 257'");  // byte: ids [0, 257)
  EXPECT_EQ(r.rc, 1) << r.show();
  EXPECT_NE(r.out.find("id 257 (word 2) is outside the vocabulary [0, 257)"), std::string::npos) << r.show();
  r = sh(dir.path, kMagellan + " tokenizer decode '104 1e2'");
  EXPECT_EQ(r.rc, 1) << r.show();
}

}  // namespace
