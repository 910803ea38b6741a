#include "cli/stream_flags.h"

#include <cstdio>

#include "util/memory.h"

namespace po = boost::program_options;

namespace mg::cli {

void add_stream_options(po::options_description& desc, StreamFlags& f) {
  desc.add_options()("stream-experts", po::value(&f.store)->implicit_value(""),
                     "read MoE experts from an expert store on demand instead of loading them (default store: "
                     "the checkpoint's path with .experts; make it with magellan export-experts)")(
      "expert-cache-mb", po::value(&f.cache_mb),
      "memory for streamed experts in MiB (default: a quarter of the experts' size)")(
      "direct-io", "read experts with O_DIRECT, bypassing the OS page cache")(
      "no-prefetch", "do not guess and read the next MoE layer's experts ahead")(
      "io-threads", po::value(&f.io_threads), "expert read threads (default: top_k)");
}

std::optional<ExpertStreamRequest> stream_request(const po::variables_map& vm, const StreamFlags& f) {
  const bool streaming = vm.count("stream-experts") > 0;
  for (const char* flag : {"expert-cache-mb", "direct-io", "no-prefetch", "io-threads"})
    MG_CHECK(streaming || !vm.count(flag), "--{} needs --stream-experts", flag);
  if (!streaming) return std::nullopt;
  MG_CHECK(f.cache_mb >= 0, "--expert-cache-mb must be >= 0, got {}", f.cache_mb);
  ExpertStreamRequest r;
  r.store = f.store;
  r.direct_io = vm.count("direct-io") > 0;
  r.options.cache_bytes = static_cast<int64_t>(f.cache_mb * (1 << 20));
  r.options.prefetch = !vm.count("no-prefetch");
  r.options.io_threads = f.io_threads;
  return r;
}

void print_stream_report(const LoadedModel& lm) {
  if (lm.experts) {
    const ExpertStore& s = lm.experts->store();
    std::fprintf(stderr, "[streamed %zu experts (%s payload, %s) from %s%s]\n%s\n", s.entries().size(),
                 expert_payload_name(s.payload()), format_bytes(static_cast<double>(s.total_record_bytes())).c_str(),
                 s.path().c_str(), s.direct_io() ? " with O_DIRECT" : "", lm.experts->stats().summary().c_str());
  }
  std::fprintf(stderr, "peak RSS %s\n", format_bytes(static_cast<double>(peak_rss_bytes())).c_str());
}

}  // namespace mg::cli
