#pragma once
// metrics.h5: training curves in HDF5, readable (h5py, MetricsReader) while the run goes on.
//
// Layout (design.md §6), one group per series, named by the series:
//   /train/loss/step   int64   (n,)  chunked, maxshape (None,)   non-decreasing
//   /train/loss/value  float64 (n,)  chunked, maxshape (None,)
//   root attributes: format = "magellan-metrics", format_version = 1
// In Python, while the run is going (SWMR needs swmr=True):
//   f = h5py.File("runs/x/metrics.h5", "r", swmr=True)
//   s = f["train/loss"]; s["step"].refresh(); s["value"].refresh()
//   n = min(len(s["step"]), len(s["value"])); steps, values = s["step"][:n], s["value"][:n]
//
// The writer opens the file in SWMR-write mode (HDF5 >= 1.10 format), so the set of series
// is fixed when it opens: declare them all up front. Every append is flushed before it
// returns, so a crash loses at most the step being written (the OS still has to write its
// page cache; a power cut can lose more).
//
//   auto m = MetricsWriter::create(run_dir + "/metrics.h5", {"train/loss", "train/lr"});
//   m.append("train/loss", step, loss);
//   m.append(step, {{"train/loss", loss}, {"train/lr", lr}});   // one flush for the row
// On resume from a checkpoint at step S, MetricsWriter::resume(path, series, S) keeps the
// entries with step <= S (the steps after the checkpoint will be redone) and goes on.
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mg {

class MetricsWriter {
 public:
  // A new metrics file at `path` (an existing one is replaced) with `series` declared.
  static MetricsWriter create(const std::string& path, const std::vector<std::string>& series);
  // Reopens `path` for a run resumed from step `resume_step`: every series in the file is cut
  // to its entries with step <= resume_step, declared series it lacks are added, and
  // appending continues. Works on a file left by a crashed writer (it is rewritten through a
  // temp file and rename, which also clears HDF5's "open for writing" mark). A missing
  // file is created.
  static MetricsWriter resume(const std::string& path, const std::vector<std::string>& series,
                              int64_t resume_step);

  ~MetricsWriter();  // closes, ignoring errors: call close() to see them
  MetricsWriter(MetricsWriter&&) noexcept;
  MetricsWriter& operator=(MetricsWriter&&) noexcept;

  // Appends (step, value) to a declared series and flushes. Steps must not decrease within a
  // series (resume's truncation relies on it).
  void append(const std::string& series, int64_t step, double value);
  // Appends one value per named series at the same step, then flushes once.
  void append(int64_t step, const std::vector<std::pair<std::string, double>>& values);

  int64_t size(const std::string& series) const;  // entries so far
  const std::vector<std::string>& series() const;  // declared, in the order given
  const std::string& path() const;
  void close();

 private:
  struct Impl;
  explicit MetricsWriter(std::unique_ptr<Impl> impl);
  void open_swmr();
  void append_unflushed(const std::string& series, int64_t step, double value);
  void flush();
  std::unique_ptr<Impl> impl_;
};

}  // namespace mg
