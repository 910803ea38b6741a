#include "inference/load_model.h"

#include <filesystem>

#include "checkpoints/atomic_save.h"
#include "checkpoints/h5_file.h"
#include "checkpoints/model_io.h"
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

LoadedModel load_model_from_checkpoint(const std::string& checkpoint, const std::optional<std::string>& adapter) {
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
