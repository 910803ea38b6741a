#pragma once
// One-line progress for long work (training, quantizing, tokenizing, sweeps):
//   "quantize  1234/5000  24.7%  [3.1 MB/s]  ETA 0:01:12  <extra>"
// Redrawn in place (\r) at most ~5 times a second when stderr is a terminal; when it is not
// (CI, a log file, a pipe) it prints nothing unless `plain_every_s` > 0, in which case it
// writes a plain line that often. quiet=true silences it entirely.
#include <chrono>
#include <cstdint>
#include <string>

namespace mg {

class Progress {
 public:
  // `what`: the label; `total`: units of work (0 = unknown); `unit`: e.g. "tok", "B", "step".
  Progress(std::string what, int64_t total, std::string unit = "", bool quiet = false,
           double plain_every_s = 0.0);
  ~Progress();  // finishes the line if it was drawn

  void update(int64_t done, const std::string& extra = "");  // absolute count of units done
  void advance(int64_t n = 1, const std::string& extra = "") { update(done_ + n, extra); }
  void finish(const std::string& extra = "");  // final line with the total elapsed time
  // Erases the line drawn in place (on a terminal), so that a log line can start at column 0;
  // the next update() draws it again. Does nothing when nothing is drawn in place.
  void clear();

  double elapsed_s() const;
  double rate() const;  // units per second so far
  int64_t done() const { return done_; }

  // Formatting helpers, used by other progress/summary lines too.
  static std::string format_duration(double seconds);  // "1:02:03", "0:04"
  static std::string format_rate(double per_s, const std::string& unit);  // "3.1 MB/s", "12.0k tok/s"

  // True when stderr is a terminal (the only case where in-place redraws happen).
  static bool stderr_is_tty();

 private:
  void draw(bool final_line, const std::string& extra);

  std::string what_, unit_;
  int64_t total_ = 0, done_ = 0;
  bool quiet_, tty_, drawn_ = false, finished_ = false;
  double plain_every_s_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace mg
