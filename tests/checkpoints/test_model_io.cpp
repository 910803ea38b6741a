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
