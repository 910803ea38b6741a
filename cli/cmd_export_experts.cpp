// magellan export-experts: a checkpoint's MoE experts -> an expert store for streaming
// inference (inference/expert_store.h, docs/inference.md).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include <boost/program_options.hpp>

#include "cli/commands.h"
#include "inference/expert_store.h"
#include "inference/load_model.h"
#include "util/memory.h"
#include "util/progress.h"

namespace po = boost::program_options;

namespace mg::cli {

namespace {

// --verify STORE: reads every record and checks its CRC32C. Prints "ok: N experts" and returns
// 0, or names the first damaged expert and returns 1.
int verify_store(const std::string& path, bool quiet) {
  const ExpertStore store(path, /*direct_io=*/false);  // refuses a bad header, index or old version
  const int64_t chunk_bytes = ExpertStore::kReadChunkBytes;
  std::unique_ptr<void, decltype(&std::free)> chunk(std::aligned_alloc(kExpertStoreAlign, chunk_bytes), &std::free);
  MG_CHECK(chunk, "[export-experts] cannot allocate a read buffer");
  Progress progress("verify experts", static_cast<int64_t>(store.entries().size()), "expert", quiet);
  for (const ExpertStoreEntry& e : store.entries()) {
    try {
      store.verify(e, chunk.get(), chunk_bytes);
    } catch (const Error& err) {
      progress.finish();
      std::fprintf(stderr, "magellan export-experts: %s\n", err.what());
      std::printf("damaged: expert %d of layer %d in %s\n", e.expert, e.layer, path.c_str());
      return 1;
    }
    progress.advance(1);
  }
  progress.finish();
  std::printf("ok: %zu experts (%s, CRC32C of every record) in %s\n", store.entries().size(),
              format_bytes(static_cast<double>(store.total_record_bytes())).c_str(), path.c_str());
  return 0;
}

}  // namespace

int cmd_export_experts(const Args& args) {
  po::options_description desc(
      "magellan export-experts --checkpoint FILE|RUN_DIR [-o STORE] [--payload nf4|f16]\n"
      "magellan export-experts --verify STORE\n\n"
      "Writes every MoE expert of a checkpoint to one expert store, one aligned record per expert,\n"
      "for generate/eval --stream-experts. Float32 experts are quantized to NF4 (nf4 payload) or\n"
      "rounded to half (f16); NF4 experts are copied as they are. An adapter-only checkpoint's\n"
      "experts are its base's. Written atomically. Every record carries a CRC32C, checked whenever it\n"
      "is read; --verify reads a whole store and checks them all (exit 1 on a damaged record).\n\noptions");
  std::string ckpt, out, payload = "nf4", verify;
  desc.add_options()("help,h", "show this help")("checkpoint", po::value(&ckpt), "a checkpoint file or run dir")(
      "output,o", po::value(&out), "the store to write (default: the checkpoint's path with .experts)")(
      "payload", po::value(&payload)->default_value("nf4"), "nf4 or f16")(
      "verify", po::value(&verify), "check every record of this store against its checksum; writes nothing")(
      "quiet,q", "no progress line");
  po::variables_map vm = parse_args(args, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("verify")) {
    MG_CHECK(ckpt.empty() && out.empty() && vm["payload"].defaulted(),
             "[export-experts] --verify STORE checks a store: give it alone (no --checkpoint, -o or --payload)");
    MG_CHECK(!verify.empty(), "[export-experts] --verify needs a store path");
    return verify_store(verify, vm.count("quiet") > 0);
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
