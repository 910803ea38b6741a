// H5File: round trips of every dtype and shape, attributes, conversions, error messages, and
// interchange with h5py in both directions (h5py is the independent reference).
#include "checkpoints/h5_file.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "autograd/error.h"
#include "h5_test_util.h"

namespace mg {
namespace {

using test::ScratchDir;

// Deterministic bytes for `n` elements of `dtype`, from a formula per type.
std::vector<unsigned char> make_data(DType dtype, int64_t n) {
  std::vector<unsigned char> bytes(static_cast<size_t>(n) * dtype_size(dtype));
  for (int64_t i = 0; i < n; ++i) {
    unsigned char* at = bytes.data() + i * dtype_size(dtype);
    switch (dtype) {
      case DType::F32: { float v = 0.1f * i - 3.0f; std::memcpy(at, &v, 4); break; }
      case DType::F64: { double v = i / 7.0 - 1.0; std::memcpy(at, &v, 8); break; }
      case DType::F16: { uint16_t v = (i * 7919) & 0x7BFF; std::memcpy(at, &v, 2); break; }  // finite halves
      case DType::U8: { uint8_t v = (i * 37) % 256; std::memcpy(at, &v, 1); break; }
      case DType::I32: { int32_t v = int32_t(i * 100003 - 500000); std::memcpy(at, &v, 4); break; }
      case DType::I64: { int64_t v = i * 1000000000007LL - 5; std::memcpy(at, &v, 8); break; }
    }
  }
  return bytes;
}

TEST(H5File, RoundTripsEveryDtypeAndShape) {
  ScratchDir dir;
  const std::string path = dir.file("rt.h5");
  const DType dtypes[] = {DType::F32, DType::F64, DType::F16, DType::U8, DType::I32, DType::I64};
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {1}, {5}, {2, 3, 4}, {3, 0, 2}};
  auto name = [](DType t, size_t s) { return fmt::format("/rt/{}/layers.{}.w", dtype_name(t), s); };
  {
    H5File f = H5File::create(path);
    for (DType t : dtypes)
      for (size_t s = 0; s < shapes.size(); ++s) {
        auto data = make_data(t, H5File::numel_of(shapes[s]));
        f.write(name(t, s), t, shapes[s], data.data());
      }
    f.close();
  }
  H5File f = H5File::open_read(path);
  for (DType t : dtypes) {
    EXPECT_EQ(f.list(fmt::format("/rt/{}", dtype_name(t))).size(), shapes.size());
    for (size_t s = 0; s < shapes.size(); ++s) {
      H5DatasetInfo info = f.info(name(t, s));
      EXPECT_EQ(info.dtype, t) << name(t, s);
      EXPECT_EQ(info.shape, shapes[s]) << name(t, s) << " read back as " << shape_string(info.shape);
      auto expected = make_data(t, H5File::numel_of(shapes[s]));
      std::vector<unsigned char> got(expected.size() + 1, 0xAB);  // +1: catches an overrun
      f.read(name(t, s), t, shapes[s], got.data());
      EXPECT_EQ(got.back(), 0xAB) << name(t, s) << ": read wrote past the end";
      got.pop_back();
      size_t first_diff = std::mismatch(got.begin(), got.end(), expected.begin()).first - got.begin();
      EXPECT_EQ(first_diff, got.size()) << name(t, s) << ": bytes differ from index " << first_diff;
    }
  }
}

TEST(H5File, ConvertsF16AndF64ToF32OnRead) {
  ScratchDir dir;
  const std::string path = dir.file("conv.h5");
  // Halves with known bit patterns: 0.5, -2.25, 65504 (max), 2^-24 (smallest subnormal), 1.
  const std::vector<uint16_t> half_bits = {0x3800, 0xC080, 0x7BFF, 0x0001, 0x3C00};
  const std::vector<float> half_values = {0.5f, -2.25f, 65504.0f, std::ldexp(1.0f, -24), 1.0f};
  std::vector<double> f64(7);
  for (size_t i = 0; i < f64.size(); ++i) f64[i] = std::sqrt(2.0) * i - 1.0 / 3.0;
  {
    H5File f = H5File::create(path);
    f.write<uint16_t>("h", {5}, half_bits.data());
    f.write<double>("d", {7}, f64.data());
  }
  H5File f = H5File::open_read(path);
  std::vector<float> h(5), d(7);
  f.read("h", DType::F32, {5}, h.data());
  f.read("d", DType::F32, {7}, d.data());
  double max_diff = 0;
  for (size_t i = 0; i < 5; ++i) max_diff = std::max(max_diff, double(std::abs(h[i] - half_values[i])));
  for (size_t i = 0; i < 7; ++i)
    max_diff = std::max(max_diff, double(std::abs(d[i] - static_cast<float>(f64[i]))));
  EXPECT_EQ(max_diff, 0.0) << "f16/f64 -> f32 conversion max diff " << max_diff;
  // F16 read as F16 is a plain copy of the bits.
  std::vector<uint16_t> back(5);
  f.read("h", DType::F16, back.data());
  EXPECT_EQ(back, half_bits);
}

TEST(H5File, Attributes) {
  ScratchDir dir;
  const std::string path = dir.file("attrs.h5");
  const std::string yaml = "model:\n  d_model: 512  # naïve – ünïcode ✓\n  layers: \"MMME\"\n";
  {
    H5File f = H5File::create(path);
    float w[3] = {1, 2, 3};
    f.write<float>("/model/norm_f.weight", {3}, w);
    f.set_string_attr("/", "config", yaml);
    f.set_string_attr("/", "empty", "");
    f.set_int_attr("/", "step", int64_t(1) << 40);
    f.set_int_attr("/", "neg", -7);
    f.set_double_attr("/model", "lr", 3e-4);
    f.set_int_attr("/model/norm_f.weight", "kind", 2);
    f.set_int_attr("/", "replace_me", 5);
    f.set_string_attr("/", "replace_me", "now a string");  // replacing changes the type
  }
  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.string_attr("/", "config"), yaml);
  EXPECT_EQ(f.string_attr("/", "empty"), "");
  EXPECT_EQ(f.int_attr("/", "step"), int64_t(1) << 40);
  EXPECT_EQ(f.int_attr("/", "neg"), -7);
  EXPECT_EQ(f.double_attr("/model", "lr"), 3e-4);
  EXPECT_EQ(f.int_attr("/model/norm_f.weight", "kind"), 2);
  EXPECT_EQ(f.double_attr("/", "neg"), -7.0);  // integers read as double too
  EXPECT_EQ(f.string_attr("/", "replace_me"), "now a string");
  EXPECT_TRUE(f.has_attr("/", "config"));
  EXPECT_FALSE(f.has_attr("/", "nope"));
  EXPECT_EQ(f.attr_names("/"), (std::vector<std::string>{"config", "empty", "neg", "replace_me", "step"}));
  try {
    f.int_attr("/", "config");
    FAIL() << "reading a string attribute as int must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not an integer"), std::string::npos) << e.what();
  }
  try {
    f.string_attr("/", "format");
    FAIL() << "a missing attribute must throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("no attribute 'format'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("config"), std::string::npos) << "should list what exists: " << msg;
  }
}

TEST(H5File, StructureAndListing) {
  ScratchDir dir;
  H5File f = H5File::create(dir.file("s.h5"));
  float x = 1;
  for (const char* n : {"layers.2.norm.weight", "layers.10.norm.weight", "embedding.weight"})
    f.write<float>(std::string("/model/") + n, {}, &x);
  f.create_group("/optimizer/m");
  f.create_group("/optimizer/m");  // idempotent
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"model", "optimizer"}));
  EXPECT_EQ(f.list("model"),
            (std::vector<std::string>{"embedding.weight", "layers.10.norm.weight", "layers.2.norm.weight"}));
  EXPECT_TRUE(f.exists("/model/embedding.weight"));
  EXPECT_TRUE(f.is_dataset("/model/embedding.weight"));
  EXPECT_FALSE(f.is_group("/model/embedding.weight"));
  EXPECT_TRUE(f.is_group("/optimizer/m"));
  EXPECT_FALSE(f.exists("/nope/deeper/still"));          // missing parents: false, no throw
  EXPECT_FALSE(f.exists("/model/embedding.weight/x"));  // parent is a dataset
  EXPECT_TRUE(f.exists("/"));
}

TEST(H5File, ErrorsNameTheFileTheObjectAndWhatToDo) {
  ScratchDir dir;
  const std::string path = dir.file("e.h5");
  {
    H5File f = H5File::create(path);
    float w[6] = {};
    f.write<float>("/model/embedding.weight", {2, 3}, w);
    f.write<float>("/model/layers.0.norm.weight", {3}, w);
    // Overwrite with the same dtype/shape is allowed; another shape is not.
    float w2[3] = {4, 5, 6};
    f.write<float>("/model/layers.0.norm.weight", {3}, w2);
    EXPECT_THROW(f.write<float>("/model/layers.0.norm.weight", {2}, w2), Error);
    EXPECT_THROW(f.write<float>("/model/embedding.weight/child", {1}, w2), Error);
  }
  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.read_vector<float>("/model/layers.0.norm.weight"), (std::vector<float>{4, 5, 6}));
  auto message_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no exception)";
  };
  std::string msg = message_of([&] { f.info("/model/norm_f.weight"); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no dataset '/model/norm_f.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("embedding.weight"), std::string::npos) << "should list /model: " << msg;

  float out[6];
  msg = message_of([&] { f.read("/model/embedding.weight", DType::F32, {3, 2}, out); });
  EXPECT_NE(msg.find("has shape [2,3], expected [3,2]"), std::string::npos) << msg;
  msg = message_of([&] { f.read("/model/embedding.weight", DType::I32, out); });
  EXPECT_NE(msg.find("cannot read it as i32"), std::string::npos) << msg;
  msg = message_of([&] { f.set_int_attr("/", "x", 1); });
  EXPECT_NE(msg.find("read-only"), std::string::npos) << msg;
  msg = message_of([&] { H5File::open_read(dir.file("missing.h5")); });
  EXPECT_NE(msg.find("missing.h5: no such file"), std::string::npos) << msg;
  std::ofstream(dir.file("text.h5")) << "this is not hdf5\n";
  msg = message_of([&] { H5File::open_read(dir.file("text.h5")); });
  EXPECT_NE(msg.find("text.h5: not an HDF5 file"), std::string::npos) << msg;
  msg = message_of([&] { H5File::create(dir.file("no/such/dir/x.h5")); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(H5File, ReadsAFileWrittenByH5py) {
  SKIP_WITHOUT_H5PY();
  ScratchDir dir;
  const std::string path = dir.file("from_h5py.h5");
  const char* script = R"(
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], 'w') as f:
    f['model/layers.0.norm.weight'] = np.arange(12, dtype=np.float64).reshape(3, 4) * 0.1 + 1/3
    f['model/embedding.weight'] = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    f['half'] = np.array([0.5, -2.25, 65504, 2**-24], dtype=np.float16)
    f['ids'] = np.array([1, -2, 3000000000], dtype=np.int64)
    f['small_ids'] = np.array([1, -2, 7], dtype=np.int64)
    f['i16'] = np.array([-300, 5], dtype=np.int16)
    f['huge'] = np.array([1e300])
    f['scalar'] = np.float64(2.5)
    f['flags'] = np.array([True, False])
    f.attrs['format'] = 'magellan-checkpoint'
    f.attrs['step'] = 1000
    f.attrs['lr'] = 3e-4
    f.attrs['fixed'] = np.bytes_(b'fixed-len')
    f.attrs['one'] = [7]
)";
  std::string out;
  ASSERT_EQ(test::run_python(dir, script, path, &out), 0) << out;

  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.info("/model/layers.0.norm.weight").dtype, DType::F64);
  std::vector<float> w(12);
  f.read("/model/layers.0.norm.weight", DType::F32, {3, 4}, w.data());  // f64 -> f32
  double max_diff = 0;
  for (int i = 0; i < 12; ++i)
    max_diff = std::max(max_diff, double(std::abs(w[i] - static_cast<float>(i * 0.1 + 1.0 / 3.0))));
  EXPECT_EQ(max_diff, 0.0) << "f64 -> f32 max diff " << max_diff;
  std::vector<float> e = f.read_vector<float>("/model/embedding.weight");
  for (int i = 0; i < 6; ++i) EXPECT_EQ(e[i], i - 2.5f) << i;
  EXPECT_EQ(f.info("half").dtype, DType::F16);
  EXPECT_EQ(f.read_vector<float>("half"),
            (std::vector<float>{0.5f, -2.25f, 65504.0f, std::ldexp(1.0f, -24)}));
  EXPECT_EQ(f.read_vector<uint16_t>("half"), (std::vector<uint16_t>{0x3800, 0xC080, 0x7BFF, 0x0001}));
  EXPECT_EQ(f.read_vector<int64_t>("ids"), (std::vector<int64_t>{1, -2, 3000000000}));
  EXPECT_EQ(f.read_vector<int32_t>("small_ids"), (std::vector<int32_t>{1, -2, 7}));
  EXPECT_THROW(f.read_vector<int32_t>("ids"), Error) << "3e9 does not fit in i32: must not clip";
  EXPECT_THROW(f.read_vector<float>("huge"), Error) << "1e300 does not fit in f32";
  EXPECT_EQ(f.read_vector<int32_t>("i16"), (std::vector<int32_t>{-300, 5}));
  try {
    f.info("i16");
    FAIL() << "int16 is not a magellan dtype";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("16-bit signed integer"), std::string::npos) << err.what();
  }
  try {
    f.read_vector<uint8_t>("flags");
    FAIL() << "numpy bool is an HDF5 enum";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("bool"), std::string::npos) << err.what();
  }
  EXPECT_EQ(f.shape("scalar"), std::vector<int64_t>{});
  EXPECT_EQ(f.read_vector<double>("scalar"), std::vector<double>{2.5});
  EXPECT_EQ(f.string_attr("/", "format"), "magellan-checkpoint");
  EXPECT_EQ(f.int_attr("/", "step"), 1000);
  EXPECT_EQ(f.double_attr("/", "lr"), 3e-4);
  EXPECT_EQ(f.string_attr("/", "fixed"), "fixed-len");
  EXPECT_EQ(f.int_attr("/", "one"), 7);
}

TEST(H5File, H5pyReadsOurFile) {
  SKIP_WITHOUT_H5PY();
  ScratchDir dir;
  const std::string path = dir.file("ours.h5");
  {
    H5File f = H5File::create(path);
    std::vector<float> a(6);
    for (int i = 0; i < 6; ++i) a[i] = i * 0.25f - 1.0f;
    f.write<float>("/model/layers.0.mixer.A_log", {2, 3}, a.data());
    const uint16_t half[4] = {0x3800, 0xC080, 0x7BFF, 0x0001};
    f.write<uint16_t>("/optimizer/m/embedding.weight", {2, 2}, half);
    double scalar = 2.5;
    f.write<double>("/scheduler/last_lr", {}, &scalar);
    const uint8_t codes[3] = {0, 127, 255};
    f.write<uint8_t>("/quantized/x/codes", {3}, codes);
    const int32_t ids[2] = {-1, 50256};
    f.write<int32_t>("/data/ids", {2}, ids);
    f.write<int64_t>("/data/empty", {0, 4}, nullptr);
    f.set_string_attr("/", "format", "magellan-checkpoint");
    f.set_string_attr("/", "config", "name: ünïcode ✓\n");
    f.set_int_attr("/", "step", 1234567890123);
    f.set_double_attr("/", "lr", 0.1);
  }
  const char* script = R"(
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
def check(cond, what):
    if not cond:
        print('FAIL:', what); sys.exit(1)
a = f['model/layers.0.mixer.A_log']
check(a.dtype == np.float32 and a.shape == (2, 3), f'A_log {a.dtype} {a.shape}')
want = np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.25) - np.float32(1)
check(np.array_equal(a[()], want), f'A_log values {a[()]} max diff {np.abs(a[()] - want).max()}')
m = f['optimizer/m/embedding.weight']
check(m.dtype == np.float16 and m.shape == (2, 2), f'f16 dtype {m.dtype}')
check(np.array_equal(m[()].ravel(), np.array([0.5, -2.25, 65504, 2**-24], dtype=np.float16)), f'f16 {m[()]}')
s = f['scheduler/last_lr']
check(s.shape == () and s.dtype == np.float64 and s[()] == 2.5, f'scalar {s.shape} {s[()]}')
check(f['quantized/x/codes'].dtype == np.uint8 and list(f['quantized/x/codes'][()]) == [0, 127, 255], 'u8')
check(f['data/ids'].dtype == np.int32 and list(f['data/ids'][()]) == [-1, 50256], 'i32')
check(f['data/empty'].dtype == np.int64 and f['data/empty'].shape == (0, 4), 'empty')
check(isinstance(f.attrs['format'], str) and f.attrs['format'] == 'magellan-checkpoint', repr(f.attrs['format']))
check(f.attrs['config'] == 'name: \u00fcn\u00efcode \u2713\n', repr(f.attrs['config']))
check(f.attrs['step'] == 1234567890123 and f.attrs['step'].dtype == np.int64, 'step')
check(f.attrs['lr'] == 0.1, 'lr')
print('ok')
)";
  std::string out;
  EXPECT_EQ(test::run_python(dir, script, path, &out), 0) << out;
}

}  // namespace
}  // namespace mg
