#include "trainer/checkpoint_state.h"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "autograd/error.h"
#include "util/regular_file.h"

namespace mg {

namespace {
std::string now_iso8601() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}
}  // namespace

std::string file_fnv1a64(const std::string& path) {
  require_regular_file(path, "[checkpoint]");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  MG_CHECK(f, "[checkpoint] cannot read {} to hash it", path);
  uint64_t h = 0xcbf29ce484222325ull;
  std::vector<unsigned char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0)
    for (size_t i = 0; i < n; ++i) h = (h ^ buf[i]) * 0x100000001b3ull;
  std::fclose(f);
  return fmt::format("{:016x}", h);
}

void write_checkpoint_header(H5File& f, const TrainState& s, const std::string& config_yaml,
                             const std::string& kind, const std::optional<std::string>& base_checkpoint) {
  f.set_string_attr("/", "format", kCheckpointFormat);
  f.set_int_attr("/", "format_version", kCheckpointFormatVersion);
  f.set_string_attr("/", "kind", kind);
  f.set_int_attr("/", "step", s.step);
  f.set_int_attr("/", "tokens_seen", s.tokens_seen);
  f.set_string_attr("/", "config", config_yaml);
  f.set_string_attr("/", "created", now_iso8601());
  f.set_string_attr("/", "magellan_version", MAGELLAN_VERSION);
  if (kind == "adapter" && base_checkpoint) {
    f.set_string_attr("/", "base_checkpoint", *base_checkpoint);
    f.set_string_attr("/", "base_fnv1a64", file_fnv1a64(*base_checkpoint));
  }
}

void write_train_state(H5File& f, const TrainState& s, const Rng& rng, const std::vector<uint64_t>& data_state,
                       double last_lr) {
  f.create_group("/scheduler");
  f.set_int_attr("/scheduler", "step", s.step);
  f.set_double_attr("/scheduler", "lr", last_lr);
  auto r = rng.state();
  f.write("/rng", DType::I64, {4}, r.data());  // uint64 bits stored as int64
  f.write("/data", DType::I64, {static_cast<int64_t>(data_state.size())}, data_state.data());
  f.create_group("/train");
  f.set_double_attr("/train", "best_eval_loss", s.best_eval_loss);
  f.set_int_attr("/train", "best_eval_step", s.best_eval_step);
}

void check_checkpoint_format(const H5File& f) {
  MG_CHECK(f.has_attr("/", "format") && f.string_attr("/", "format") == kCheckpointFormat,
           "[checkpoint] {} is not a magellan checkpoint (no root attribute format = \"{}\")", f.path(),
           kCheckpointFormat);
  const int64_t v = f.int_attr("/", "format_version");
  MG_CHECK(v <= kCheckpointFormatVersion, "[checkpoint] {} has format_version {}, newer than this build reads ({}); "
           "upgrade magellan", f.path(), v, kCheckpointFormatVersion);
}

void read_train_state(const H5File& f, TrainState& s, Rng& rng, std::vector<uint64_t>& data_state) {
  check_checkpoint_format(f);
  s.step = f.int_attr("/", "step");
  s.tokens_seen = f.int_attr("/", "tokens_seen");
  s.best_eval_loss = f.double_attr("/train", "best_eval_loss");
  s.best_eval_step = f.int_attr("/train", "best_eval_step");
  std::array<uint64_t, 4> r{};
  f.read("/rng", DType::I64, {4}, r.data());
  rng.set_state(r);
  data_state.resize(static_cast<size_t>(f.info("/data").numel()));
  f.read("/data", DType::I64, data_state.data());
}

}  // namespace mg
