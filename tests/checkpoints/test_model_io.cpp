// The model part of a checkpoint: a model written by h5py in design.md's layout loads into
// HybridLM with the right values (float64 converted), round trips with NF4 and adapters, and
// mismatches are reported clearly.
#include <gtest/gtest.h>

#include "checkpoints/h5_file.h"
#include "checkpoints/model_io.h"
#include "h5_test_util.h"
#include "autograd/tape.h"
#include "model/lora.h"

namespace mg {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.d_model = 64;  // NF4 blocks of 64 fit whole rows
  c.vocab_size = 16;
  c.layer_pattern = "ME";
  c.d_state = 4;
  c.n_experts = 2;
  c.top_k = 1;
  c.expert_hidden = 64;
  return c;
}

TEST(ModelIO, ModelWrittenByH5pyLoads) {
  SKIP_WITHOUT_H5PY();
  test::ScratchDir dir;
  HybridLM model(tiny(), DType::F32);
  // Write every parameter from python with value i*0.001 + k (k = parameter index), float64.
  std::string script = "import h5py, numpy as np, sys\nshapes = [\n";
  int k = 0;
  for (auto& [name, p] : model.named_parameters()) {
    script += fmt::format("  ('{}', ({},)),\n", name, fmt::join(p.shape(), ", "));
    ++k;
  }
  script += "]\nwith h5py.File(sys.argv[1], 'w') as f:\n"
            "    for k, (name, shape) in enumerate(shapes):\n"
            "        n = int(np.prod(shape))\n"
            "        f['model/' + name] = (np.arange(n, dtype=np.float64) * 0.001 + k).reshape(shape)\n";
  std::string out;
  ASSERT_EQ(test::run_python(dir, script, dir.file("m.h5"), &out), 0) << out;
  H5File f = H5File::open_read(dir.file("m.h5"));
  ModelLoadReport rep = read_model(f, model, /*require_all=*/true);
  EXPECT_EQ(rep.loaded, k);
  k = 0;
  for (auto& [name, p] : model.named_parameters()) {
    for (int64_t i : {int64_t{0}, p.numel() - 1})
      EXPECT_FLOAT_EQ(static_cast<float>(p.item(i)), static_cast<float>(i * 0.001 + k)) << name << "[" << i << "]";
    ++k;
  }
}

TEST(ModelIO, RoundTripWithNf4BaseAndAdapters) {
  test::ScratchDir dir;
  HybridLM a(tiny(), DType::F32);
  a.init(3);
  LoraConfig lora;
  lora.enabled = true;
  lora.r = 4;
  QloraConfig q;
  q.enabled = true;
  apply_lora(a, lora, q, 5);
  visit_linears(a, [](const std::string&, Linear& l) {
    if (l.has_lora()) l.lora_B.fill(0.01);  // non-zero so the round trip is meaningful
  });
  {
    H5File f = H5File::create(dir.file("c.h5"));
    write_model(f, a, ModelSaveMode::Full);
    f.close();
  }
  HybridLM b(tiny(), DType::F32);
  apply_lora(b, lora, QloraConfig{}, 99);  // adapters to load into; bases become NF4 from the file
  H5File f = H5File::open_read(dir.file("c.h5"));
  ModelLoadReport rep = read_model(f, b, /*require_all=*/true);
  EXPECT_GT(rep.quantized, 0);
  EXPECT_GT(rep.adapters, 0);
  Tensor tok = Tensor::from_ids({1, 2, 3, 4, 5, 6}, {1, 6});
  NoGradGuard ng;
  Tensor la = a.forward(tok, Tensor()).logits, lb = b.forward(tok, Tensor()).logits;
  for (int64_t i = 0; i < la.numel(); ++i) ASSERT_EQ(la.item(i), lb.item(i)) << i;
}

Tensor logits_of(const HybridLM& m) {
  NoGradGuard ng;
  return m.forward(Tensor::from_ids({1, 2, 3, 4, 5, 15, 0}, {1, 7}), Tensor()).logits;
}

void expect_identical(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.numel(), b.numel());
  int64_t differ = 0;
  for (int64_t i = 0; i < a.numel(); ++i) differ += a.item(i) != b.item(i);
  EXPECT_EQ(differ, 0) << "of " << a.numel() << " logits";
}

// A tied NF4 embedding is written under /quantized/embedding.weight (not /model) and read
// back into the embedding: same bytes, identical logits. C = 72 so rows straddle NF4 blocks.
TEST(ModelIO, Nf4EmbeddingRoundTrip) {
  test::ScratchDir dir;
  ModelConfig cfg = tiny();
  cfg.d_model = 72;
  HybridLM a(cfg, DType::F32);
  a.init(7, /*quantize_linears=*/true);  // streaming QLoRA init: linears and embedding NF4
  ASSERT_TRUE(a.embedding.is_quantized());
  {
    H5File f = H5File::create(dir.file("e.h5"));
    write_model(f, a, ModelSaveMode::Full);
    f.close();
  }
  H5File f = H5File::open_read(dir.file("e.h5"));
  EXPECT_TRUE(f.is_group("/quantized/embedding.weight"));
  EXPECT_EQ(f.int_attr("/quantized/embedding.weight", "rows"), 16);
  EXPECT_EQ(f.int_attr("/quantized/embedding.weight", "cols"), 72);
  EXPECT_FALSE(f.exists("/model/embedding.weight"));

  HybridLM b(cfg, DType::F32);  // float32 everywhere until the file says otherwise
  ModelLoadReport rep = read_model(f, b, /*require_all=*/true);
  ASSERT_TRUE(b.embedding.is_quantized());
  EXPECT_TRUE(b.embedding.weight.is_meta());
  EXPECT_FALSE(b.embedding.weight.requires_grad());
  EXPECT_EQ(b.embedding.quantized()->packed, a.embedding.quantized()->packed);
  EXPECT_EQ(b.embedding.quantized()->absmax_codes, a.embedding.quantized()->absmax_codes);
  EXPECT_EQ(rep.quantized, 1 + 4 + 1 + 2 * 2);  // embedding + 4 Mamba + router + 2 experts x 2
  expect_identical(logits_of(a), logits_of(b));
}

// A checkpoint holding the table in float32 (qlora.quantize_embedding: false, or written before
// the embedding could be NF4) loads as written into a model that had quantized its own.
TEST(ModelIO, FloatEmbeddingInTheFileWinsOverOneTheModelQuantized) {
  test::ScratchDir dir;
  LoraConfig lora;
  lora.enabled = true;
  lora.r = 4;
  QloraConfig keep;
  keep.enabled = true;
  keep.quantize_embedding = false;
  HybridLM a(tiny(), DType::F32);
  a.init(8);
  apply_lora(a, lora, keep, 5);
  ASSERT_FALSE(a.embedding.is_quantized());
  {
    H5File f = H5File::create(dir.file("f.h5"));
    write_model(f, a, ModelSaveMode::Full);
    f.close();
  }
  QloraConfig q;
  q.enabled = true;  // quantize_embedding defaults to true
  HybridLM b(tiny(), DType::F32);
  apply_lora(b, lora, q, 5);  // as load_model_from_checkpoint: apply_lora, then read_model
  ASSERT_TRUE(b.embedding.is_quantized());
  H5File f = H5File::open_read(dir.file("f.h5"));
  read_model(f, b, /*require_all=*/true);
  EXPECT_FALSE(b.embedding.is_quantized());
  EXPECT_FALSE(b.embedding.weight.requires_grad());
  EXPECT_EQ(b.embedding.weight.to_double_vector(), a.embedding.weight.to_double_vector());
  expect_identical(logits_of(a), logits_of(b));
}

TEST(ModelIO, MissingParameterIsReportedByName) {
  test::ScratchDir dir;
  HybridLM a(tiny(), DType::F32);
  {
    H5File f = H5File::create(dir.file("p.h5"));
    f.write("/model/embedding.weight", DType::F32, {16, 64}, a.embedding.weight.raw());
    f.close();
  }
  HybridLM b(tiny(), DType::F32);
  H5File f = H5File::open_read(dir.file("p.h5"));
  try {
    read_model(f, b, /*require_all=*/true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.norm.weight"), std::string::npos) << e.what();
  }
  // A shape mismatch names the dataset.
  HybridLM wide([] { auto c = tiny(); c.vocab_size = 17; return c; }(), DType::F32);
  EXPECT_THROW(read_model(f, wide, false), Error);
}

}  // namespace
}  // namespace mg
