#pragma once
// Reads metrics.h5 (layout in metrics_writer.h), also while a MetricsWriter in another
// process is still appending to it: the file is opened for SWMR reading (HDF5's single-writer
// / multiple-reader mode) and every read() first refreshes the series, so it sees what the
// writer has flushed since. Files in the pre-1.10 format (no SWMR) are read normally.
#include <memory>
#include <string>
#include <vector>

namespace mg {

struct MetricSeries {
  std::vector<int64_t> steps;  // (n,) non-decreasing
  std::vector<double> values;  // (n,)
};

class MetricsReader {
 public:
  explicit MetricsReader(const std::string& path);
  ~MetricsReader();
  MetricsReader(MetricsReader&&) noexcept;
  MetricsReader& operator=(MetricsReader&&) noexcept;

  // Series names ("train/loss", ...), sorted. A SWMR writer cannot add series while it runs,
  // so the list found at open stays right.
  const std::vector<std::string>& series() const;
  bool has(const std::string& name) const;
  // The entries written so far. While the writer runs, the step and value datasets may
  // momentarily differ in length by one; both are cut to the shorter.
  MetricSeries read(const std::string& name) const;
  const std::string& path() const;
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mg
