#include "inference/load_model.h"

#include <algorithm>
#include <filesystem>

#include "checkpoints/atomic_save.h"
#include "checkpoints/h5_file.h"
#include "checkpoints/model_io.h"
#include "inference/expert_store.h"
#include "experiments/config_loader.h"
#include "model/lora.h"
#include "trainer/checkpoint_state.h"

namespace fs = std::filesystem;

namespace mg {

std::string resolve_checkpoint_path(const std::string& p) {
  if (!fs::is_directory(p)) {
    MG_CHECK(fs::exists(p), "[load] {}: no such file or directory", p);
    return p;
  }
  for (const std::string& dir : {p + "/checkpoints", p}) {
    if (!fs::is_directory(dir)) continue;
    if (auto c = latest_complete_checkpoint(dir)) return c->path;
  }
  throw Error(fmt::format("[load] {}: no complete checkpoint (step_*.h5) in it or in its checkpoints/ folder", p));
}

namespace {

// The expert stream for a model whose experts are held by checkpoint file `weights`.
std::shared_ptr<ExpertStream> open_expert_stream(const ExpertStreamRequest& req, const H5File& weights,
                                                 const ModelConfig& cfg) {
  const std::string path = req.store.empty() ? default_expert_store_path(weights.path()) : req.store;
  MG_CHECK(fs::exists(path), "[experts] no expert store at {}: make it with magellan export-experts --checkpoint {} "
           "-o {}", path, weights.path(), path);
  auto store = std::make_shared<const ExpertStore>(path, req.direct_io);
  const ExpertStoreSource& src = store->source();
  const int64_t step = weights.int_attr("/", "step");
  const std::string created = weights.has_attr("/", "created") ? weights.string_attr("/", "created") : "";
  MG_CHECK(src.step == step && src.created == created,
           "[experts] {} was exported from {} (step {}, created {}), not from {} (step {}, created {}): export "
           "it again with magellan export-experts --checkpoint {} -o {}",
           path, src.checkpoint, src.step, src.created, weights.path(), step, created, weights.path(), path);
  ExpertStreamOptions opts = req.options;
  if (opts.cache_bytes == 0) {  // default: a quarter of the experts, at least two layers' worth of top_k
    const int64_t one = store->decoded_bytes();
    opts.cache_bytes = std::max<int64_t>(one * static_cast<int64_t>(store->entries().size()) / 4, 2 * cfg.top_k * one);
  }
  return std::make_shared<ExpertStream>(std::move(store), cfg, opts);
}

}  // namespace

LoadedModel load_model_from_checkpoint(const std::string& checkpoint, const std::optional<std::string>& adapter,
                                       const std::optional<ExpertStreamRequest>& stream) {
  LoadedModel out;
  out.checkpoint = resolve_checkpoint_path(checkpoint);
  H5File f = H5File::open_read(out.checkpoint);
  check_checkpoint_format(f);
  out.config_yaml = f.string_attr("/", "config");
  out.config = load_config_text(out.config_yaml, out.checkpoint + ":/config").config;
  out.step = f.int_attr("/", "step");
  ExperimentConfig& cfg = out.config;

  out.model = std::make_unique<HybridLM>(cfg.model, DType::F32);
  const std::string kind = f.has_attr("/", "kind") ? f.string_attr("/", "kind") : "full";
  if (stream) {  // before anything is loaded: the experts' weights are freed, never read
    out.experts = kind == "adapter"
                      ? open_expert_stream(*stream, H5File::open_read(f.string_attr("/", "base_checkpoint")), cfg.model)
                      : open_expert_stream(*stream, f, cfg.model);
    out.model->stream_experts(out.experts.get());
  }
  if (kind == "adapter") {
    const std::string base = f.string_attr("/", "base_checkpoint");
    MG_CHECK(fs::exists(base), "[load] {} is an adapter for base checkpoint {}, which is missing", out.checkpoint, base);
    const std::string want = f.string_attr("/", "base_fnv1a64");
    const std::string got = file_fnv1a64(base);
    MG_CHECK(want == got, "[load] base checkpoint {} has changed since adapter {} was trained (hash {} != {})", base,
             out.checkpoint, got, want);
    H5File bf = H5File::open_read(base);
    read_model(bf, *out.model, /*require_all=*/true);
  }
  apply_lora(*out.model, cfg.lora, cfg.qlora, cfg.seed);
  read_model(f, *out.model, /*require_all=*/kind != "adapter");
  if (adapter) {
    H5File af = H5File::open_read(*adapter);
    check_checkpoint_format(af);
    ExperimentConfig acfg = load_config_text(af.string_attr("/", "config"), *adapter + ":/config").config;
    MG_CHECK(acfg.model == cfg.model, "[load] adapter {} was trained on a different model architecture than {}",
             *adapter, out.checkpoint);
    if (!cfg.lora.enabled) apply_lora(*out.model, acfg.lora, QloraConfig{}, acfg.seed);
    read_model(af, *out.model, /*require_all=*/false);
  }
  out.model->visit_parameters([](const std::string&, Tensor& p) {
    if (!p.is_meta()) p.set_requires_grad(false);  // inference: nothing trains
  });
  return out;
}

}  // namespace mg
