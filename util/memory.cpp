#include "util/memory.h"

#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace mg {

namespace {
int64_t status_kib(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  int64_t kib = 0;
  const size_t klen = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, key, klen) == 0) {
      std::sscanf(line + klen, " %ld", &kib);
      break;
    }
  std::fclose(f);
  return kib;
}
}  // namespace

int64_t current_rss_bytes() { return status_kib("VmRSS:") * 1024; }
int64_t peak_rss_bytes() { return status_kib("VmHWM:") * 1024; }

std::string format_bytes(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  return fmt::format("{:.1f} KiB", b / 1024.0);
}

}  // namespace mg
