#pragma once
// Resident memory of this process, from /proc/self/status (Linux): VmRSS now, VmHWM peak.
#include <cstdint>
#include <string>

namespace mg {

int64_t current_rss_bytes();
int64_t peak_rss_bytes();
std::string format_bytes(double bytes);  // "1.23 GiB", "512.0 MiB", "12.0 KiB"

}  // namespace mg
