// magellan export-experts: a checkpoint's MoE experts -> an expert store for streaming
// inference (inference/expert_store.h, docs/inference.md).
#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>

#include "cli/commands.h"
#include "inference/expert_store.h"
#include "inference/load_model.h"
#include "util/memory.h"

namespace po = boost::program_options;

namespace mg::cli {

int cmd_export_experts(const Args& args) {
  po::options_description desc(
      "magellan export-experts --checkpoint FILE|RUN_DIR [-o STORE] [--payload nf4|f16]\n\n"
      "Writes every MoE expert of a checkpoint to one expert store, one aligned record per expert,\n"
      "for generate/eval --stream-experts. Float32 experts are quantized to NF4 (nf4 payload) or\n"
      "rounded to half (f16); NF4 experts are copied as they are. An adapter-only checkpoint's\n"
      "experts are its base's. Written atomically.\n\noptions");
  std::string ckpt, out, payload = "nf4";
  desc.add_options()("help,h", "show this help")("checkpoint", po::value(&ckpt), "a checkpoint file or run dir")(
      "output,o", po::value(&out), "the store to write (default: the checkpoint's path with .experts)")(
      "payload", po::value(&payload)->default_value("nf4"), "nf4 or f16")("quiet,q", "no progress line");
  po::variables_map vm = parse_args(args, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  MG_CHECK(!ckpt.empty(), "[export-experts] give --checkpoint FILE (or a run directory)");
  const ExpertPayload p = parse_expert_payload(payload);
  const std::string file = resolve_checkpoint_path(ckpt);
  if (out.empty()) out = default_expert_store_path(file);
  check_output_path(out, {file}, "export-experts");
  const ExportReport r = export_expert_store(file, out, p, vm.count("quiet") > 0);
  std::printf("wrote %s: %lld experts (%lld parameters, %s payload%s), %s in %.2f s\n", out.c_str(),
              static_cast<long long>(r.experts), static_cast<long long>(r.params), expert_payload_name(p),
              r.quantized ? ", quantized from float32" : "", format_bytes(static_cast<double>(r.bytes)).c_str(),
              r.seconds);
  std::printf("use it with: %s generate --checkpoint %s --stream-experts %s ...\n", program_name().c_str(),
              quote_arg(file).c_str(), quote_arg(out).c_str());
  return 0;
}

}  // namespace mg::cli
