#include "model/moe_block.h"

#include <algorithm>
#include <cmath>

#include "autograd/op_util.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "cuda/tensor_kernels.h"
#include "model/init.h"

namespace mg {

Expert::Expert(int64_t C, int64_t F, ExpertMlp m, DType dtype, bool meta)
    : mlp(m), up(C, F, false, dtype, meta), down(F, C, false, dtype, meta) {
  register_module("up", up);
  register_module("down", down);
  if (mlp == ExpertMlp::Swiglu) {
    gate = std::make_unique<Linear>(C, F, false, dtype, meta);
    register_module("gate", *gate);
  }
}

void Expert::init(Rng& rng) {
  init_linear_default(up, rng);
  init_linear_default(down, rng);
  if (gate) init_linear_default(*gate, rng);
}

void Expert::release_weights() {
  up.release_weights();
  down.release_weights();
  if (gate) gate->release_weights();
}

Tensor Expert::forward(const Tensor& x, Rng* rng, bool training) const {
  if (mlp == ExpertMlp::Gelu)  // down(gelu(up(x)))
    return down.forward(ops::gelu(up.forward(x, rng, training)), rng, training);
  // down(silu(gate(x)) * up(x))
  return down.forward(ops::mul(ops::silu(gate->forward(x, rng, training)), up.forward(x, rng, training)), rng,
                      training);
}

MoeMixer::MoeMixer(const ModelConfig& cfg, DType dtype, bool meta)
    : C(cfg.d_model),
      E(cfg.n_experts),
      k(cfg.top_k),
      F(cfg.expert_hidden),
      capacity_factor(cfg.capacity_factor),
      router(C, E, false, dtype, meta) {
  MG_CHECK(k >= 1 && k <= E, "[moe] top_k = {} must be in [1, n_experts = {}]", k, E);
  register_module("router", router);
  for (int64_t e = 0; e < E; ++e) {
    experts.push_back(std::make_unique<Expert>(C, F, cfg.expert_mlp, dtype, meta));
    register_module("experts." + std::to_string(e), *experts.back());
  }
}

void MoeMixer::init(Rng& rng) {
  init_linear_default(router, rng);
  for (auto& e : experts) e->init(rng);
}

void MoeMixer::stream_experts(ExpertSource* source, int layer) {
  MG_CHECK(source && source->max_acquire() >= k, "[moe] an expert source must hold at least top_k = {} experts", k);
  for (auto& e : experts) e->release_weights();
  source_ = source;
  layer_index_ = layer;
}

std::vector<int32_t> MoeMixer::route(const Tensor& h) const {
  NoGradGuard no_grad;
  Tensor x = ops::reshape(h, {h.numel() / C, C});  // (M,C)
  return topk_experts(ops::softmax(router.forward(x)), k);
}

// Routing decisions are made on the host: on the GPU the (M,E) probabilities come across
// (M*E values per MoE layer, one synchronizing copy); grouping tokens by expert needs the
// counts on the host anyway, to size the expert GEMMs.
std::vector<int32_t> topk_experts(const Tensor& probs, int64_t k) {
  const Tensor p = probs.to(Device::CPU);
  const int64_t E = p.dim(-1), M = p.numel() / E;
  std::vector<int32_t> idx(static_cast<size_t>(M * k));
  MG_DISPATCH_FLOAT(p.dtype(), "topk", [&] {
    const scalar_t* pp = p.data<scalar_t>();
    for (int64_t m = 0; m < M; ++m) {
      const scalar_t* row = pp + m * E;
      for (int64_t j = 0; j < k; ++j) {
        int32_t best = -1;
        for (int32_t e = 0; e < E; ++e) {
          bool taken = false;
          for (int64_t l = 0; l < j; ++l) taken = taken || idx[m * k + l] == e;
          // strict '>' keeps the lower index on ties
          if (!taken && (best < 0 || row[e] > row[best])) best = e;
        }
        idx[m * k + j] = best;
      }
    }
  });
  return idx;
}

namespace ops {
// Computed on the host (k values per token); on the GPU the weights go back to the device and
// the backward brings dW across, as topk_experts does with the probabilities.
Tensor routing_weights(const Tensor& probs, const std::vector<int32_t>& idx, int64_t k, const Tensor& p_host) {
  const Tensor p = p_host.defined() ? p_host : probs.to(Device::CPU);
  const Device dev = probs.device();
  const int64_t E = p.dim(-1), M = p.numel() / E;
  Tensor w = Tensor::empty({M, k}, p.dtype());
  Tensor S = Tensor::empty({M}, p.dtype());  // (M) sum of the chosen probabilities
  MG_DISPATCH_FLOAT(p.dtype(), "routing_weights", [&] {
    const scalar_t* pp = p.data<scalar_t>();
    scalar_t* wp = w.data<scalar_t>();
    scalar_t* sp = S.data<scalar_t>();
    for (int64_t m = 0; m < M; ++m) {
      scalar_t s = 0;
      for (int64_t j = 0; j < k; ++j) s += pp[m * E + idx[m * k + j]];
      sp[m] = s;
      for (int64_t j = 0; j < k; ++j) wp[m * k + j] = pp[m * E + idx[m * k + j]] / s;
    }
  });
  Tensor w_out = w.to(dev);
  if (any_requires_grad({&probs})) {
    Node node{"routing_weights", {input_slot(probs)}, {make_output_slot(w_out)}, {w.detach(), S}, nullptr};
    node.backward = [idx, M, E, k](Node& nd) {
      const Tensor dW = nd.out_grad().to(Device::CPU);
      Tensor dP = nd.in_grad(0);
      // On the GPU: accumulate on the host into zeros, then add on the device (the same sums).
      Tensor dP_host = dP.is_cuda() ? Tensor::zeros(dP.shape(), dP.dtype()) : dP;
      MG_DISPATCH_FLOAT(dW.dtype(), "routing_weights backward", [&] {
        const scalar_t* g = dW.data<scalar_t>();
        const scalar_t* wp = nd.saved[0].data<scalar_t>();
        const scalar_t* sp = nd.saved[1].data<scalar_t>();
        scalar_t* dp = dP_host.data<scalar_t>();
        for (int64_t m = 0; m < M; ++m) {
          scalar_t dot = 0;
          for (int64_t j = 0; j < k; ++j) dot += g[m * k + j] * wp[m * k + j];
          for (int64_t j = 0; j < k; ++j) dp[m * E + idx[m * k + j]] += (g[m * k + j] - dot) / sp[m];
        }
        if (dP.is_cuda())
          cuda::accumulate<scalar_t>(dP.dev_data<scalar_t>(), dP_host.to(Device::CUDA).dev_data<scalar_t>(),
                                     static_cast<size_t>(dP.numel()));
      });
    };
    current_tape().record(std::move(node));
  }
  return w_out;
}
}  // namespace ops

MoeOutput MoeMixer::forward(const Tensor& h, Rng* rng, bool training) const {
  MG_CHECK(h.ndim() == 3 && h.dim(2) == C, "[moe] input must be (B,T,{}), got {}", C, h.describe());
  const int64_t M = h.dim(0) * h.dim(1);
  Tensor x = ops::reshape(h, {M, C});                          // (M,C)
  Tensor logits = router.forward(x, rng, training);            // (M,E)
  Tensor p = ops::softmax(logits);                             // (M,E)
  const Tensor p_host = p.to(Device::CPU);                     // routing is decided on the host
  std::vector<int32_t> idx = topk_experts(p_host, k);          // (M,k), not differentiable
  Tensor w = ops::reshape(ops::routing_weights(p, idx, k, p_host), {M * k, 1});  // (M*k, 1)

  // Group assignments by expert, in token order; apply the capacity limit.
  const int64_t capacity = capacity_factor
      ? static_cast<int64_t>(std::ceil(*capacity_factor * static_cast<double>(M * k) / static_cast<double>(E)))
      : M * k;
  std::vector<std::vector<int32_t>> rows(E), slots(E);
  MoeOutput res;
  res.stats.tokens_per_expert.assign(E, 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = idx[m * k + j];
      if (static_cast<int64_t>(rows[e].size()) >= capacity) {
        ++res.stats.dropped;
        continue;
      }
      rows[e].push_back(static_cast<int32_t>(m));
      slots[e].push_back(static_cast<int32_t>(m * k + j));
    }

  std::vector<int32_t> used;  // experts with at least one assignment, ascending
  for (int64_t e = 0; e < E; ++e) {
    res.stats.tokens_per_expert[e] = static_cast<int64_t>(rows[e].size());
    if (!rows[e].empty()) used.push_back(static_cast<int32_t>(e));
  }
  MG_CHECK(!source_ || !training, "[moe] streamed experts are for inference: they cannot be trained");

  Tensor out;  // (M,C), accumulated expert by expert in ascending order (streamed or not)
  const size_t batch = source_ ? static_cast<size_t>(source_->max_acquire()) : used.size();
  for (size_t first = 0; first < used.size(); first += batch) {
    const std::span<const int32_t> ids(used.data() + first, std::min(batch, used.size() - first));
    std::vector<std::shared_ptr<const Expert>> streamed;
    if (source_) streamed = source_->acquire(layer_index_, ids);  // read in parallel, cached
    for (size_t j = 0; j < ids.size(); ++j) {
      const int32_t e = ids[j];
      const Expert& expert = source_ ? *streamed[j] : *experts[e];
      const int64_t n = static_cast<int64_t>(rows[e].size());
      Tensor r = Tensor::from_ids(rows[e], {n}).to(h.device());
      Tensor we = ops::reshape(ops::gather_rows(w, Tensor::from_ids(slots[e], {n}).to(h.device())), {n});  // (n)
      Tensor ye = expert.forward(ops::gather_rows(x, r), rng, training);                    // (n,C)
      out = ops::scatter_add_rows(out, ye, r, we, M);
    }
  }
  if (!out.defined()) out = Tensor::zeros({M, C}, h.dtype(), h.device());  // every assignment dropped
  res.out = ops::reshape(out, h.shape());

  // L_aux = E * sum_i f_i P_i, with f constant (counts of the top-k choice, before capacity).
  std::vector<double> f(E, 0.0);
  for (int32_t e : idx) f[e] += 1.0 / static_cast<double>(M * k);
  Tensor f_t = Tensor::from_vector(f, {E}).to(h.dtype()).to(h.device());
  Tensor P = ops::scale(ops::sum_rows(p), 1.0 / static_cast<double>(M));        // (E)
  res.aux = ops::scale(ops::sum(ops::mul(P, f_t)), static_cast<double>(E));     // []
  res.z = ops::mean(ops::square(ops::logsumexp(logits)));                       // []
  res.stats.aux_loss = res.aux.item();
  res.stats.z_loss = res.z.item();
  return res;
}

}  // namespace mg
