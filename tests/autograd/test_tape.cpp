// The tape's contract: accumulation, freeing, no-grad, errors; gradient checkpointing gives
// identical gradients; gradcheck itself catches broken backwards.
#include <gtest/gtest.h>

#include "autograd/checkpoint.h"
#include "autograd/gradcheck.h"
#include "autograd/module.h"
#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

namespace mg {
namespace {

Tensor randn(const Shape& shape, uint64_t seed, DType dt = DType::F64) {
  Rng rng(seed);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = rng.normal();
  return Tensor::from_vector(v, shape).to(dt);
}

TEST(Tape, ParameterGradsAccumulateAcrossBackwardCalls) {
  Tensor w = randn({3}, 1);
  set_trainable(w, true);
  Tensor x = randn({3}, 2);
  current_tape().backward(ops::sum(ops::mul(w, x)));
  std::vector<double> g1 = w.grad().to_double_vector();
  current_tape().backward(ops::sum(ops::mul(w, x)));
  for (int i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(g1[i], x.item(i));
    EXPECT_DOUBLE_EQ(w.grad().item(i), 2 * x.item(i));
  }
  w.zero_grad();
  EXPECT_FALSE(w.grad().defined());
}

// zero_grad keeps the buffer for the next step (no fresh pages per step), zeroed before reuse,
// and never reuses one that a caller still holds.
TEST(Tape, ZeroGradReusesTheBufferZeroedUnlessSomeoneHoldsIt) {
  Tensor w = randn({4096}, 3, DType::F32);  // >= 1 MiB would be mmapped; the rule is the same
  set_trainable(w, true);
  Tensor x = randn({4096}, 4, DType::F32);
  current_tape().backward(ops::sum(ops::mul(w, x)));
  const void* first = w.grad().raw();
  w.zero_grad();
  EXPECT_FALSE(w.grad().defined());  // optimizers skip it until the next backward
  current_tape().backward(ops::sum(ops::scale(ops::mul(w, x), 3.0)));
  EXPECT_EQ(w.grad().raw(), first);  // the same buffer
  for (int64_t i = 0; i < 4096; i += 511) EXPECT_FLOAT_EQ(w.grad().item(i), 3 * x.item(i));  // zeroed first

  Tensor held = w.grad();  // a caller keeps last step's gradient
  w.zero_grad();
  current_tape().backward(ops::sum(w));
  EXPECT_NE(w.grad().raw(), held.raw());
  for (int64_t i = 0; i < 4096; i += 511) {
    EXPECT_FLOAT_EQ(held.item(i), 3 * x.item(i));  // untouched
    EXPECT_FLOAT_EQ(w.grad().item(i), 1.0f);
  }
}

TEST(Tape, FreesNodesAndSavedTensorsAfterBackward) {
  Tensor w = randn({64, 64}, 1, DType::F32);
  set_trainable(w, true);
  Tape tape;
  TapeScope scope(tape);
  Tensor h = ops::silu(ops::linear(randn({8, 64}, 2, DType::F32), w));
  EXPECT_EQ(tape.size(), 2u);
  EXPECT_GT(tape.saved_bytes(), 0u);
  tape.backward(ops::mean(h));
  EXPECT_EQ(tape.size(), 0u);
  EXPECT_EQ(tape.saved_bytes(), 0u);
  EXPECT_FALSE(h.grad().defined()) << "activation grads are freed once used";
  EXPECT_TRUE(w.grad().defined()) << "parameter grads persist";
}

TEST(Tape, NoGradRecordsNothing) {
  Tensor w = randn({4}, 1);
  set_trainable(w, true);
  Tape tape;
  TapeScope scope(tape);
  {
    NoGradGuard guard;
    Tensor y = ops::exp(w);
    EXPECT_FALSE(y.requires_grad());
  }
  EXPECT_EQ(tape.size(), 0u);
  Tensor frozen = randn({4}, 2);  // does not require grad
  Tensor y = ops::exp(frozen);
  EXPECT_EQ(tape.size(), 0u);
  EXPECT_THROW(tape.backward(ops::sum(y)), Error) << "a loss of frozen tensors cannot backprop";
}

TEST(Tape, ModuleNamesParametersWithDots) {
  struct Leaf : Module {
    Tensor weight = Tensor::zeros({2, 3});
    Tensor bias = Tensor::zeros({2});
    Leaf() { register_parameter("weight", weight); register_parameter("bias", bias, false); }
  };
  struct Root : Module {
    Leaf a, b;
    Tensor scale = Tensor::zeros({1});
    Root() { register_parameter("scale", scale); register_module("layers.0.mixer", a); register_module("head", b); }
  };
  Root r;
  auto named = r.named_parameters();
  ASSERT_EQ(named.size(), 5u);
  EXPECT_EQ(named[0].first, "scale");
  EXPECT_EQ(named[1].first, "layers.0.mixer.weight");
  EXPECT_EQ(named[4].first, "head.bias");
  EXPECT_EQ(r.num_parameters(), 1 + 2 * (6 + 2));
  EXPECT_EQ(r.num_parameters(/*trainable_only=*/true), 1 + 2 * 6);
  ASSERT_NE(r.find_parameter("head.weight"), nullptr);
  EXPECT_TRUE(r.find_parameter("head.weight")->same(r.b.weight));
}

// A two-layer block used for checkpointing: y = silu(x W1^T) W2^T, with dropout to check
// that random draws are replayed.
struct Block {
  Tensor w1 = randn({16, 8}, 3), w2 = randn({8, 16}, 4);
  Block() { set_trainable(w1, true); set_trainable(w2, true); }
  std::vector<Tensor> operator()(const std::vector<Tensor>& in, Rng& rng) const {
    Tensor h = ops::dropout(ops::silu(ops::linear(in[0], w1)), 0.2, rng);
    return {ops::add(in[0], ops::linear(h, w2))};
  }
};

TEST(Checkpoint, GradientsIdenticalToPlainRun) {
  Block b1, b2;
  Tensor x0 = randn({5, 8}, 7);
  auto run = [&](bool ckpt) {
    Rng rng(99);
    Tensor x = x0.clone();
    x.set_requires_grad(true, true);
    Tensor h = x;
    for (const Block* b : {&b1, &b2}) {
      auto seg = [&, b](const std::vector<Tensor>& in) { return (*b)(in, rng); };
      h = ckpt ? checkpoint(seg, {h}, &rng)[0] : seg({h})[0];
    }
    current_tape().backward(ops::sum(ops::square(h)));
    std::vector<std::vector<double>> grads = {x.grad().to_double_vector()};
    for (Tensor* w : {&b1.w1, &b1.w2, &b2.w1, &b2.w2}) {
      grads.push_back(w->grad().to_double_vector());
      w->zero_grad();
    }
    grads.push_back({static_cast<double>(rng.next_u64())});  // RNG ends in the same state
    return grads;
  };
  auto plain = run(false);
  auto ckpt = run(true);
  ASSERT_EQ(plain.size(), ckpt.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_EQ(plain[i], ckpt[i]) << "tensor " << i << " differs";
}

TEST(Checkpoint, KeepsOnlySegmentInputs) {
  Block b;
  Tensor x = randn({64, 8}, 8);
  x.set_requires_grad(true);
  Rng rng(1);
  Tape plain, ck;
  { TapeScope s(plain); b({x}, rng); }
  { TapeScope s(ck); checkpoint([&](const std::vector<Tensor>& in) { return b(in, rng); }, {x}, &rng); }
  EXPECT_EQ(ck.saved_bytes(), x.bytes());
  EXPECT_GT(plain.saved_bytes(), 3 * x.bytes());
}

// --- gradcheck must fail on broken backwards ----------------------------------------------
enum class Bug { None, WrongSign, MissingTerm, TransposedIndex };

// y = x * x + x @ M applied row-wise: x (2,3), M (3,3). Correct backward:
// dx = 2 x dy + dy M^T.
Tensor buggy_op(const Tensor& x, const Tensor& M, Bug bug) {
  const int64_t R = 2, C = 3;
  Tensor out = Tensor::empty({R, C}, DType::F64);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      double s = x.data<double>()[r * C + c] * x.data<double>()[r * C + c];
      for (int64_t k = 0; k < C; ++k) s += x.data<double>()[r * C + k] * M.data<double>()[k * C + c];
      out.data<double>()[r * C + c] = s;
    }
  if (any_requires_grad({&x})) {
    Node node{"buggy", {input_slot(x)}, {make_output_slot(out)}, {x.detach(), M}, nullptr};
    node.backward = [bug](Node& nd) {
      const double* g = nd.out_grad().data<double>();
      const double* xv = nd.saved[0].data<double>();
      const double* m = nd.saved[1].data<double>();
      double* dx = nd.in_grad(0).data<double>();
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < C; ++k) {
          double quad = 2 * xv[r * C + k] * g[r * C + k];
          double lin = 0;
          for (int64_t c = 0; c < C; ++c)
            lin += g[r * C + c] * (bug == Bug::TransposedIndex ? m[c * C + k] : m[k * C + c]);
          if (bug == Bug::WrongSign) quad = -quad;
          if (bug == Bug::MissingTerm) lin = 0;
          dx[r * C + k] += quad + lin;
        }
    };
    current_tape().record(std::move(node));
  }
  return out;
}

TEST(Gradcheck, CatchesDeliberatelyBrokenBackwards) {
  Tensor x = randn({2, 3}, 1), M = randn({3, 3}, 2);
  for (Bug bug : {Bug::None, Bug::WrongSign, Bug::MissingTerm, Bug::TransposedIndex}) {
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return buggy_op(in[0], M, bug); }, {x.clone()});
    EXPECT_EQ(r.ok, bug == Bug::None) << "bug " << static_cast<int>(bug) << ": " << r.worst << "\n" << r.report;
  }
}

}  // namespace
}  // namespace mg
