// The safetensors reader against a file written by the safetensors library itself
// (tests/fixtures/safetensors_dtypes.safetensors, from scripts/oracle/hf_mamba_oracle.py
// --dtypes): the same values stored as F64, F32, F16 and BF16 (each exactly representable, so
// every one must read back as the F64 reference, -0.0 and infinities included), an I64 tensor
// (refused) and an empty one. Then broken files: each gives an error naming the file and what
// is wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/error.h"
#include "checkpoints/safetensors.h"
#include "h5_test_util.h"
#include "tests/test_paths.h"

namespace mg {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

const std::string kDtypes = test_paths::repo_path("tests/fixtures/safetensors_dtypes.safetensors");

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and a data section: the length prefix by hand.
std::string assemble(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(Safetensors, EveryFloatDtypeWrittenByTheLibraryReadsBackExactly) {
  const SafetensorsFile f = SafetensorsFile::open(kDtypes);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.entry("ref").dtype, "F64");
  ASSERT_EQ(f.entry("ref").shape, (std::vector<int64_t>{3, 4}));
  std::vector<double> ref(12);
  f.read("ref", DType::F64, ref.data());
  EXPECT_EQ(ref[2], 1.5);
  EXPECT_TRUE(std::signbit(ref[1]));
  EXPECT_TRUE(std::isinf(ref[8]) && ref[8] > 0);

  for (const std::string name : {"ref", "as_f32", "as_f16", "as_bf16"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(f.entry(name).shape, (std::vector<int64_t>{3, 4}));
    std::vector<double> d(12);
    std::vector<float> s(12);
    f.read(name, DType::F64, d.data());
    f.read(name, DType::F32, s.data());
    for (int i = 0; i < 12; ++i) {
      EXPECT_TRUE(same_bits(d[i], ref[i])) << i << ": " << d[i] << " vs " << ref[i];
      EXPECT_TRUE(same_bits(static_cast<double>(s[i]), ref[i])) << i << ": " << s[i] << " vs " << ref[i];
    }
  }
  EXPECT_EQ(f.entry("as_f16").dtype, "F16");
  EXPECT_EQ(f.entry("as_bf16").dtype, "BF16");
  EXPECT_EQ(f.entry("empty").numel(), 0);
  f.read("empty", DType::F32, nullptr);  // nothing to read
}

TEST(Safetensors, NonFloatAndMissingTensorsAreErrorsNamingTheFile) {
  const SafetensorsFile f = SafetensorsFile::open(kDtypes);
  EXPECT_EQ(f.entry("ids_i64").dtype, "I64");
  std::vector<float> out(6);
  expect_error([&] { f.read("ids_i64", DType::F32, out.data()); }, {kDtypes, "ids_i64", "I64", "not a float"});
  expect_error([&] { f.entry("nope"); }, {kDtypes, "no tensor 'nope'"});
}

// F16 corners written bit by bit (subnormals, the largest subnormal, NaN), and a tensor read
// across many chunks, against values computed by formula.
TEST(Safetensors, HalfCornersAndChunkedReads) {
  test::ScratchDir scratch;
  const fs::path& dir = scratch.path;
  const uint16_t bits[4] = {0x0001, 0x03ff, 0x8001, 0x7e00};  // 2^-24, 1023 * 2^-24, -2^-24, NaN
  const int64_t n = 100003;                                    // float32 values k/4 - 1000
  std::vector<float> big(n);
  for (int64_t k = 0; k < n; ++k) big[k] = static_cast<float>(k) / 4 - 1000;
  const std::string data = std::string(reinterpret_cast<const char*>(bits), 8) +
                           std::string(reinterpret_cast<const char*>(big.data()), n * 4);
  const std::string path = (dir / "chunks.safetensors").string();
  write_bytes(path, assemble(R"({"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
                             R"("big":{"dtype":"F32","shape":[100003],"data_offsets":[8,400020]}})", data));
  const SafetensorsFile f = SafetensorsFile::open(path);
  double h[4];
  f.read("h", DType::F64, h, /*chunk_bytes=*/2);  // one element per chunk
  EXPECT_EQ(h[0], std::ldexp(1.0, -24));
  EXPECT_EQ(h[1], 1023 * std::ldexp(1.0, -24));
  EXPECT_EQ(h[2], -std::ldexp(1.0, -24));
  EXPECT_TRUE(std::isnan(h[3]));
  for (int64_t chunk : {int64_t{4096}, int64_t{12}, int64_t{4} << 20}) {
    std::vector<float> back(n, -1);
    f.read("big", DType::F32, back.data(), chunk);
    EXPECT_EQ(back, big) << "chunk " << chunk;
  }
}

TEST(Safetensors, BrokenFilesGiveClearErrors) {
  test::ScratchDir scratch;
  const fs::path& dir = scratch.path;
  const std::string good = read_bytes(kDtypes);
  auto check = [&](const std::string& file, const std::string& bytes, std::initializer_list<std::string> parts) {
    const std::string path = (dir / file).string();
    write_bytes(path, bytes);
    SCOPED_TRACE(file);
    expect_error([&] { SafetensorsFile::open(path); }, parts);
  };
  check("cut.safetensors", good.substr(0, good.size() - 10), {"cut.safetensors", "outside the data section"});
  check("tiny.safetensors", "abc", {"tiny.safetensors", "too short"});
  check("huge_header.safetensors", std::string("\xff\xff\xff\x00\x00\x00\x00\x00", 8) + "{}",
        {"huge_header.safetensors", "header length"});
  check("not_json.safetensors", assemble("{\"a\": [", ""), {"not_json.safetensors", "not valid JSON"});
  check("size.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
        {"size.safetensors", "'w'", "4 bytes for shape [2] of F32 (8 expected)"});
  check("dtype.safetensors", assemble(R"({"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", "a"),
        {"'w'", "unknown dtype 'F4'"});
  check("negative.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"),
        {"'w'", "shape holds -1, not a non-negative 64-bit integer"});
  check("keys.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"), {"'w'", "data_offsets"});
  // Sizes that overflow 64 bits, or that point before the data section, are refused.
  check("big_dim.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})", "abcd"),
        {"'w'", "not a non-negative 64-bit integer"});
  check("wrap.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""),
        {"'w'", "more elements than 2^63"});
  check("bytes_wrap.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[4611686018427387905],"data_offsets":[0,4]}})", "abcd"),
        {"'w'", "needs more than 2^63 bytes"});
  check("before.safetensors", assemble(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,0]}})", "abcd"),
        {"'w'", "not a non-negative 64-bit integer"});
  check("overlap.safetensors",
        assemble(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                 "abcdefgh"),
        {"'a' and 'b' overlap"});
  expect_error([&] { SafetensorsFile::open((dir / "absent.safetensors").string()); }, {"absent.safetensors", "cannot open"});

  // A hand-assembled valid file reads (the length prefix and offsets as the format says).
  const float values[2] = {0.25f, -8.0f};
  const std::string path = (dir / "ok.safetensors").string();
  write_bytes(path, assemble(R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                             std::string(reinterpret_cast<const char*>(values), 8)));
  const SafetensorsFile ok = SafetensorsFile::open(path);
  float back[2];
  ok.read("w", DType::F32, back);
  EXPECT_EQ(back[0], 0.25f);
  EXPECT_EQ(back[1], -8.0f);
  EXPECT_EQ(ok.metadata().at("k"), "v");
}

}  // namespace
}  // namespace mg
