// Checkpoint conversions: magellan quantize (float32 -> NF4 base), magellan merge-lora
// (base + adapter -> one model, float32 or re-quantized NF4) and magellan import-hf (a Hugging
// Face Mamba directory -> a float32 checkpoint).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <boost/program_options.hpp>

#include "checkpoints/atomic_save.h"
#include "checkpoints/hf_import.h"
#include "checkpoints/model_io.h"
#include "cli/commands.h"
#include "data/tokenizer.h"
#include "experiments/config_loader.h"
#include "inference/load_model.h"
#include "model/lora.h"
#include "trainer/checkpoint_state.h"
#include "util/memory.h"
#include "util/progress.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace mg::cli {

namespace {

void write_converted(const std::string& out, HybridLM& model, const ExperimentConfig& cfg, int64_t step) {
  TrainState st;
  st.step = step;
  atomic_save(out, [&](H5File& f) {
    write_checkpoint_header(f, st, to_yaml(cfg), "full", std::nullopt);
    write_model(f, model, ModelSaveMode::Full);
  });
}

// OUT.yaml of import-hf: what a fine-tuning config extends to use the imported model.
void write_import_yaml(const std::string& path, const ExperimentConfig& cfg, const std::string& source_dir,
                       const std::string& checkpoint_name) {
  const ModelConfig& m = cfg.model;
  std::string y = fmt::format(
      "# magellan import-hf {}: the model of {} (from its config.json).\n"
      "# Fine-tune it from a YAML that says `extends: {}`, with lora/qlora and data sections.\n"
      "model:\n  d_model: {}\n  vocab_size: {}\n  layer_pattern: {}\n  d_state: {}\n  d_conv: {}\n"
      "  expand: {}\n  dt_rank: {}\n  tie_embeddings: {}\n  norm_eps: {}\n",
      source_dir, checkpoint_name, fs::path(path).filename().string(), m.d_model, m.vocab_size, m.layer_pattern,
      m.d_state, m.d_conv, m.expand, m.dt_rank ? std::to_string(*m.dt_rank) : "auto", m.tie_embeddings ? "true" : "false",
      m.norm_eps);
  auto quoted = [](const std::string& s) {  // a YAML double-quoted scalar
    std::string q = "\"";
    for (char c : s) q += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    return q + "\"";
  };
  if (cfg.data.tokenizer != "byte") y += fmt::format("data:\n  tokenizer: {}\n", quoted(cfg.data.tokenizer));
  y += fmt::format("qlora:\n  base_checkpoint: {}    # relative to this file\n", quoted(checkpoint_name));
  atomic_write(path, [&](const std::string& tmp) {
    std::ofstream o(tmp);
    o << y;
    MG_CHECK(o.flush(), "[import-hf] cannot write {} (disk full?)", tmp);
  });
}

// Size and error of the weights quantized, summed over them (nf4_error_stats of each).
struct QuantizeTally {
  double max_err = 0, err_sq = 0, weight_sq = 0;  // max |dW|; sums of dW^2 and W^2
  int64_t count = 0, fp32_bytes = 0, nf4_bytes = 0;

  void add(const Tensor& w, const NF4Weight& q) {
    const NF4ErrorStats s = nf4_error_stats(w.data<float>(), q);
    max_err = std::max(max_err, s.max_abs_error);
    err_sq += s.rms_error * s.rms_error * static_cast<double>(s.count);
    weight_sq += s.rms_weight * s.rms_weight * static_cast<double>(s.count);
    count += s.count;
    fp32_bytes += static_cast<int64_t>(w.bytes());
    nf4_bytes += q.bytes();
  }
  // Two lines: sizes, then the error against the weights' RMS.
  void print(const char* what) const {
    const double n = static_cast<double>(count);
    std::printf("  %-15s %s float32 -> %s NF4 (%.3f bits/param)\n", what, format_bytes(fp32_bytes).c_str(),
                format_bytes(nf4_bytes).c_str(), count ? 8.0 * nf4_bytes / n : 0.0);
    std::printf("  %-15s max |dW| %.4g, rms %.4g (%.2f%% of rms W %.4g)\n", "error", max_err,
                count ? std::sqrt(err_sq / n) : 0.0, count && weight_sq > 0 ? 100.0 * std::sqrt(err_sq / weight_sq) : 0.0,
                count ? std::sqrt(weight_sq / n) : 0.0);
  }
};

}  // namespace

int cmd_quantize(const Args& args) {
  po::options_description desc(
      "magellan quantize --checkpoint IN.h5 -o OUT.h5 [--keep-embedding]\n\n"
      "Quantizes every linear layer of a float32 checkpoint, and the embedding table (for a tied\n"
      "model also the LM head), to NF4 (bitsandbytes layout, double-quantized absmax;\n"
      "docs/checkpoint-format.md). An untied lm_head, norms and Mamba's small tensors stay\n"
      "float32. The result is a QLoRA base: name it in qlora.base_checkpoint.\n\noptions");
  std::string in, out;
  desc.add_options()("help,h", "show this help")("checkpoint,c", po::value(&in), "float32 checkpoint (or run dir)")(
      "output,o", po::value(&out), "NF4 checkpoint to write")(
      "keep-embedding", "keep embedding.weight float32 (as qlora.quantize_embedding: false)")(
      "quiet,q", "no progress line");
  po::variables_map vm = parse_args(args, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(!in.empty() && !out.empty(), "[quantize] give --checkpoint IN.h5 and -o OUT.h5");
  check_output_path(out, {resolve_checkpoint_path(in)}, "quantize");
  LoadedModel lm = load_model_from_checkpoint(in);
  check_output_path(out, {lm.config.qlora.base_checkpoint.value_or("")}, "quantize");
  MG_CHECK(!lm.config.lora.enabled, "[quantize] {} carries LoRA adapters: merge them first (magellan merge-lora)",
           lm.checkpoint);
  Embedding& embedding = lm.model->embedding;
  const bool quantize_embedding = !vm.count("keep-embedding") && !embedding.is_quantized();
  int64_t n_linears = 0, params = quantize_embedding ? embedding.weight.numel() : 0;
  visit_linears(*lm.model, [&](const std::string&, Linear& l) {
    ++n_linears;
    params += l.in_features * l.out_features;
  });
  Progress progress("quantize", params, "param", vm.count("quiet") > 0);
  QuantizeTally linears, table;
  int64_t done = 0, already = 0;
  const auto t0 = std::chrono::steady_clock::now();
  visit_linears(*lm.model, [&](const std::string&, Linear& l) {
    if (l.is_quantized()) {
      ++already;
      return;
    }
    Tensor w = l.weight;
    l.quantize_base();
    linears.add(w, *l.quantized());
    done += w.numel();
    progress.update(done);
  });
  if (quantize_embedding) {
    Tensor w = embedding.weight;
    embedding.quantize();
    table.add(w, *embedding.quantized());
    progress.update(done += w.numel());
  }
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_converted(out, *lm.model, lm.config, lm.step);
  const int64_t count = linears.count + table.count;
  std::printf("quantized %lld linear layers (%lld parameters)%s in %.2f s (%.0f M params/s)%s\n",
              static_cast<long long>(n_linears - already), static_cast<long long>(linears.count),
              quantize_embedding ? fmt::format(" and the embedding ({} parameters)", table.count).c_str() : "", secs,
              count / secs / 1e6, already ? fmt::format("; {} were already NF4", already).c_str() : "");
  linears.print("linear weights");
  if (quantize_embedding)
    table.print("embedding");
  else
    std::printf("  embedding       %s\n", embedding.is_quantized() ? "was already NF4"
                                                                    : "kept float32 (--keep-embedding)");
  std::printf("  file            %s (%s)\n", out.c_str(), format_bytes(static_cast<double>(fs::file_size(out))).c_str());
  return 0;
}

int cmd_merge_lora(const Args& args) {
  po::options_description desc(
      "magellan merge-lora --checkpoint ADAPTER.h5 -o MERGED.h5 [--nf4]\n\n"
      "Merges LoRA adapters into their base weights (W + scale * B A; an NF4 base is dequantized\n"
      "first): the result is a plain model checkpoint without adapters, all float32 (NF4 weights\n"
      "without an adapter and an NF4 embedding are dequantized too), or with --nf4 the merged\n"
      "weights re-quantized to NF4 (the error is reported) and the other NF4 weights kept.\n\noptions");
  std::string in, out, adapter;
  desc.add_options()("help,h", "show this help")("checkpoint,c", po::value(&in), "checkpoint with adapters (or run dir)")(
      "adapter", po::value(&adapter), "an adapter checkpoint to apply on --checkpoint first")(
      "output,o", po::value(&out), "merged checkpoint to write")("nf4", "re-quantize merged weights to NF4");
  po::variables_map vm = parse_args(args, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(!in.empty() && !out.empty(), "[merge-lora] give --checkpoint IN.h5 and -o OUT.h5");
  check_output_path(out, {resolve_checkpoint_path(in), adapter.empty() ? "" : resolve_checkpoint_path(adapter)},
                    "merge-lora");
  LoadedModel lm = load_model_from_checkpoint(in, adapter.empty() ? std::nullopt : std::optional<std::string>(adapter));
  check_output_path(out, {lm.config.qlora.base_checkpoint.value_or("")}, "merge-lora");
  MergeReport rep = merge_all_lora(*lm.model, vm.count("nf4") > 0);
  MG_CHECK(rep.merged > 0, "[merge-lora] {} has no LoRA adapters to merge", lm.checkpoint);
  ExperimentConfig cfg = lm.config;
  cfg.lora.enabled = false;
  cfg.qlora = QloraConfig{};
  write_converted(out, *lm.model, cfg, lm.step);
  if (vm.count("nf4"))
    std::printf("merged %d adapters -> %s (NF4; re-quantization error max %.4g, rms %.4g)%s\n", rep.merged,
                out.c_str(), rep.max_abs_error, rep.rms_error,
                lm.model->embedding.is_quantized() ? "; the embedding stays NF4" : "");
  else
    std::printf("merged %d adapters -> %s (float32; %d other NF4 weights dequantized)\n", rep.merged, out.c_str(),
                rep.dequantized);
  return 0;
}

int cmd_import_hf(const Args& args) {
  po::options_description desc(
      "magellan import-hf DIR -o OUT.h5 [--tokenizer SPEC]\n\n"
      "Imports a pretrained Mamba from a Hugging Face model directory (transformers'\n"
      "MambaForCausalLM, e.g. a download of state-spaces/mamba-130m-hf: config.json and\n"
      "model.safetensors, or the shards model.safetensors.index.json lists) into a float32\n"
      "checkpoint. Tensor names lose 'backbone.' (design.md section 3); F16, BF16 and F64 convert\n"
      "to float32. The result generates and evaluates, and is a base for fine-tuning: name it\n"
      "in qlora.base_checkpoint (QLoRA quantizes it on load) or run magellan quantize first.\n"
      "Beside OUT.h5 goes OUT.yaml: the model section and base checkpoint, for a fine-tuning\n"
      "config to extend (extends: OUT.yaml, then lora/qlora and data sections).\n\noptions");
  std::string out, tokenizer;
  int32_t tokenizer_ids = 0;
  desc.add_options()("help,h", "show this help")("output,o", po::value(&out), "checkpoint to write")(
      "tokenizer", po::value(&tokenizer),
      "tokenizer spec kept in the checkpoint's config (default: DIR/tokenizer.json when present, else byte)")(
      "quiet,q", "no progress line");
  std::vector<std::string> positional;
  po::variables_map vm = parse_args(args, desc, &positional);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(positional.size() == 1 && !out.empty(), "[import-hf] give the model directory and -o OUT.h5");
  const std::string ext = fs::path(out).extension().string();
  MG_CHECK(ext != ".yaml" && ext != ".yml",
           "[import-hf] -o {}: the checkpoint is an HDF5 file (OUT.h5); OUT.yaml is written beside it", out);
  const fs::path dir = positional[0];
  MG_CHECK(fs::is_directory(dir), "[import-hf] {} is not a directory: give the folder that holds config.json and "
           "model.safetensors", dir.string());
  {  // neither output may be a file of the model directory (or the tokenizer named)
    std::vector<std::string> inputs = {tokenizer.rfind("gpt2:", 0) == 0 ? tokenizer.substr(5) : tokenizer};
    for (const auto& e : fs::directory_iterator(dir)) inputs.push_back(e.path().string());
    check_output_path(out, inputs, "import-hf");
    check_output_path(fs::path(out).replace_extension(".yaml").string(), inputs, "import-hf");
  }
  const auto t0 = std::chrono::steady_clock::now();
  ExperimentConfig cfg;
  cfg.model = hf_mamba_model_config((dir / "config.json").string());
  cfg.data.source = DataSource::None;  // no training data comes with a pretrained model
  if (tokenizer.empty() && fs::exists(dir / "tokenizer.json")) tokenizer = (dir / "tokenizer.json").string();
  if (!tokenizer.empty() && tokenizer != "byte") {
    // Absolute (the checkpoint is read from anywhere), loaded once to check that it loads.
    const bool gpt2 = tokenizer.rfind("gpt2:", 0) == 0;
    tokenizer = (gpt2 ? "gpt2:" : "") + fs::absolute(gpt2 ? tokenizer.substr(5) : tokenizer).lexically_normal().string();
    tokenizer_ids = load_tokenizer(tokenizer)->vocab_size();
    cfg.data.tokenizer = tokenizer;
  }
  validate_config(cfg);
  HybridLM model(cfg.model);
  Progress progress("import", model.num_parameters(), "param", vm.count("quiet") > 0);
  const HfImportReport rep = load_hf_mamba_weights(dir.string(), model, [&](int64_t done) { progress.update(done); });
  progress.finish();
  write_converted(out, model, cfg, /*step=*/0);
  const std::string yaml_path = fs::path(out).replace_extension(".yaml").string();
  write_import_yaml(yaml_path, cfg, dir.string(), fs::path(out).filename().string());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::string dtypes;
  for (const auto& [dtype, n] : rep.tensors_by_dtype) dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", n, dtype);
  const ModelConfig& m = cfg.model;
  std::printf("imported %s: %d Mamba layers, C %d, N %d, V %d, %s embeddings; %lld parameters from %zu tensors "
              "(%s) in %zu file%s, %.2f s\n",
              dir.string().c_str(), m.n_layers(), m.d_model, m.d_state, m.vocab_size,
              m.tie_embeddings ? "tied" : "untied", static_cast<long long>(rep.parameters),
              static_cast<size_t>([&] { int n = 0; for (const auto& kv : rep.tensors_by_dtype) n += kv.second; return n; }()),
              dtypes.c_str(), rep.files.size(), rep.files.size() == 1 ? "" : "s", secs);
  if (cfg.data.tokenizer == "byte" && tokenizer.empty())
    std::printf("  tokenizer       none found (no tokenizer.json in %s): use --prompt-ids, or import again with "
                "--tokenizer\n", dir.string().c_str());
  else
    std::printf("  tokenizer       %s%s\n", cfg.data.tokenizer.c_str(),
                tokenizer_ids > m.vocab_size
                    ? fmt::format(" (warning: {} ids, the model has {}: text with the extra tokens is refused)",
                                  tokenizer_ids, m.vocab_size).c_str()
                    : "");
  std::printf("  file            %s (%s)\n", out.c_str(), format_bytes(static_cast<double>(fs::file_size(out))).c_str());
  std::printf("  config          %s (extends: it in a fine-tuning YAML)\n", yaml_path.c_str());
  std::printf("next: %s generate --checkpoint %s -p \"...\"   (or --prompt-ids)\n", program_name().c_str(),
              quote_arg(out).c_str());
  return 0;
}

}  // namespace mg::cli
