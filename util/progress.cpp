#include "util/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace mg {

using Clock = std::chrono::steady_clock;

Progress::Progress(std::string what, int64_t total, std::string unit, bool quiet,
                   double plain_every_s)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      total_(total),
      quiet_(quiet),
      tty_(stderr_is_tty()),
      plain_every_s_(plain_every_s),
      start_(Clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (drawn_ && !finished_ && tty_ && !quiet_) std::fputc('\n', stderr);
}

bool Progress::stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

double Progress::rate() const {
  double s = elapsed_s();
  return s > 0 ? static_cast<double>(done_) / s : 0.0;
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto total = static_cast<int64_t>(seconds + 0.5);
  int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  return h > 0 ? fmt::format("{}:{:02}:{:02}", h, m, s) : fmt::format("{}:{:02}", m, s);
}

std::string Progress::format_rate(double per_s, const std::string& unit) {
  if (unit == "B") {
    if (per_s >= 1e9) return fmt::format("{:.2f} GB/s", per_s / 1e9);
    if (per_s >= 1e6) return fmt::format("{:.1f} MB/s", per_s / 1e6);
    return fmt::format("{:.1f} kB/s", per_s / 1e3);
  }
  std::string u = unit.empty() ? "/s" : " " + unit + "/s";
  if (per_s >= 1e6) return fmt::format("{:.2f}M{}", per_s / 1e6, u);
  if (per_s >= 1e4) return fmt::format("{:.1f}k{}", per_s / 1e3, u);
  return fmt::format("{:.2f}{}", per_s, u);
}

void Progress::update(int64_t done, const std::string& extra) {
  done_ = done;
  if (quiet_) return;
  auto now = Clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  bool due = tty_ ? since >= 0.2 : (plain_every_s_ > 0 && since >= plain_every_s_);
  if (!due && !(tty_ && !drawn_)) return;
  last_draw_ = now;
  draw(false, extra);
}

void Progress::finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  if (quiet_) return;
  if (!tty_ && plain_every_s_ <= 0) return;
  draw(true, extra);
}

void Progress::clear() {
  if (!tty_ || !drawn_ || finished_ || quiet_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;  // so the next update() draws at once
}

void Progress::draw(bool final_line, const std::string& extra) {
  std::string line = what_;
  double r = rate();
  if (total_ > 0) {
    double frac = static_cast<double>(done_) / static_cast<double>(total_);
    line += fmt::format("  {}/{}  {:5.1f}%", done_, total_, 100.0 * frac);
  } else {
    line += fmt::format("  {}", done_);
  }
  line += "  " + format_rate(r, unit_);
  if (final_line) {
    line += "  in " + format_duration(elapsed_s());
  } else if (total_ > 0 && r > 0) {
    line += "  ETA " + format_duration(static_cast<double>(total_ - done_) / r);
  }
  if (!extra.empty()) line += "  " + extra;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace mg
