#pragma once
// The expert-streaming flags shared by `generate` and `eval` (docs/inference.md):
//   --stream-experts [STORE]  --expert-cache-mb N  --direct-io  --no-prefetch  --io-threads N
#include <optional>
#include <string>

#include <boost/program_options.hpp>

#include "inference/load_model.h"

namespace mg::cli {

struct StreamFlags {
  std::string store;
  double cache_mb = 0;  // 0: a quarter of the experts' bytes (at least 2 * top_k experts)
  int io_threads = 0;
};

void add_stream_options(boost::program_options::options_description& desc, StreamFlags& flags);
// The request the flags describe, or nullopt without --stream-experts.
std::optional<ExpertStreamRequest> stream_request(const boost::program_options::variables_map& vm,
                                                  const StreamFlags& flags);
// The end-of-run report of a streamed run (to stderr): the stream's counters and the peak RSS.
void print_stream_report(const LoadedModel& lm);

}  // namespace mg::cli
