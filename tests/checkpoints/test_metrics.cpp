// metrics.h5: append/read back, readers (h5py and MetricsReader) that see values while the
// writer (another process) is still appending, resume truncation, resume after a crash.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include <gtest/gtest.h>

#include "autograd/error.h"
#include "checkpoints/metrics_reader.h"
#include "checkpoints/metrics_writer.h"
#include "h5_test_util.h"

namespace mg {
namespace {

using test::ScratchDir;

double loss_at(int64_t step) { return 10.0 / (1.0 + step) + 0.001 * step; }  // any formula

// Runs `body` in a forked child (the writer process). The parent talks to it through two
// pipes: the child calls signal_parent(c) / wait_parent(c), the parent the reverse.
class ChildProcess {
 public:
  template <class Fn>
  explicit ChildProcess(Fn body) {
    if (::pipe(to_child_) != 0 || ::pipe(to_parent_) != 0) throw std::runtime_error("pipe");
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      int code = 0;
      try {
        body(*this);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "writer child failed: %s\n", e.what());
        code = 1;
      }
      std::fflush(nullptr);
      ::_exit(code);  // no atexit handlers, no gtest teardown in the child
    }
  }
  ~ChildProcess() {
    kill();
    for (int fd : {to_child_[0], to_child_[1], to_parent_[0], to_parent_[1]}) ::close(fd);
  }
  void signal_parent(char c) { (void)!::write(to_parent_[1], &c, 1); }
  void wait_parent(char c) { wait_on(to_child_[0], c); }
  void signal_child(char c) { (void)!::write(to_child_[1], &c, 1); }
  bool wait_child(char c) { return wait_on(to_parent_[0], c); }
  void kill() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      exit_code();
    }
  }
  int exit_code() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  static bool wait_on(int fd, char expected) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 60000) != 1) return false;  // a hung peer fails the test, not CI
    char c = 0;
    return ::read(fd, &c, 1) == 1 && c == expected;
  }
  int to_child_[2] = {-1, -1}, to_parent_[2] = {-1, -1};
  pid_t pid_ = -1;
  bool reaped_ = false;
};

TEST(Metrics, AppendAndReadBack) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.h5");
  std::vector<int64_t> steps;
  std::vector<double> losses, lrs;
  {
    auto m = MetricsWriter::create(path, {"train/loss", "train/lr", "eval/loss"});
    for (int64_t step = 1; step <= 2500; ++step) {  // > 2 chunks of 1024
      steps.push_back(step);
      losses.push_back(loss_at(step));
      lrs.push_back(1e-3 * std::cos(step * 1e-3));
      if (step % 2) {
        m.append("train/loss", step, losses.back());
        m.append("train/lr", step, lrs.back());
      } else {
        m.append(step, {{"train/loss", losses.back()}, {"train/lr", lrs.back()}});
      }
    }
    m.append("eval/loss", 2500, 0.5);
    m.append("eval/loss", 2500, 0.25);  // equal steps are fine
    EXPECT_EQ(m.size("train/loss"), 2500);
    EXPECT_THROW(m.append("train/loss", 7, 1.0), Error) << "steps must not decrease";
    EXPECT_THROW(m.append("train/los", 2501, 1.0), Error) << "undeclared series";
    m.close();
  }
  MetricsReader r(path);
  EXPECT_EQ(r.series(), (std::vector<std::string>{"eval/loss", "train/loss", "train/lr"}));
  MetricSeries loss = r.read("train/loss"), lr = r.read("train/lr"), eval = r.read("eval/loss");
  EXPECT_EQ(loss.steps, steps);
  EXPECT_EQ(loss.values, losses);
  EXPECT_EQ(lr.values, lrs);
  EXPECT_EQ(eval.steps, (std::vector<int64_t>{2500, 2500}));
  EXPECT_EQ(eval.values, (std::vector<double>{0.5, 0.25}));
  EXPECT_THROW(r.read("nope"), Error);
}

TEST(Metrics, BadSeriesNamesAreRejected) {
  ScratchDir dir;
  EXPECT_THROW(MetricsWriter::create(dir.file("a.h5"), {"train/loss", "train/loss"}), Error);
  EXPECT_THROW(MetricsWriter::create(dir.file("b.h5"), {"train", "train/loss"}), Error);
  EXPECT_THROW(MetricsWriter::create(dir.file("c.h5"), {"train//loss"}), Error);
  EXPECT_THROW(MetricsWriter::create(dir.file("d.h5"), {""}), Error);
}

// The h5py reader: prints "<n> <max |value - loss_at(step)|> <last step>" for train/loss.
constexpr const char* kSwmrReader = R"(
import sys, h5py
with h5py.File(sys.argv[1], 'r', libver='latest', swmr=True) as f:
    s, v = f['train/loss/step'], f['train/loss/value']
    s.refresh(); v.refresh()
    n = min(len(s), len(v))
    steps, values = s[:n], v[:n]
    diff = max([abs(values[i] - (10.0 / (1.0 + steps[i]) + 0.001 * steps[i])) for i in range(n)] + [0.0])
    print(n, diff, steps[-1] if n else -1)
)";

TEST(Metrics, ReadersSeeValuesWhileTheWriterIsOpen) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.h5");
  ChildProcess writer([&](ChildProcess& self) {
    auto m = MetricsWriter::create(path, {"train/loss", "eval/loss"});
    for (int64_t step = 1; step <= 5; ++step) m.append("train/loss", step, loss_at(step));
    self.signal_parent('a');
    self.wait_parent('b');
    for (int64_t step = 6; step <= 12; ++step) m.append("train/loss", step, loss_at(step));
    m.append("eval/loss", 12, 1.5);
    self.signal_parent('c');
    self.wait_parent('d');  // still open while the parent reads
    m.close();
  });
  ASSERT_TRUE(writer.wait_child('a')) << "writer did not start";

  MetricsReader reader(path);  // opened while the writer is appending
  MetricSeries s = reader.read("train/loss");
  ASSERT_EQ(s.steps.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(s.steps[i], int64_t(i + 1));
    EXPECT_EQ(s.values[i], loss_at(int64_t(i + 1)));
  }
  std::string out;
  if (test::have_h5py()) {
    ASSERT_EQ(test::run_python(dir, kSwmrReader, path, &out), 0) << out;
    EXPECT_EQ(out, "5 0.0 5\n");
  }

  writer.signal_child('b');
  ASSERT_TRUE(writer.wait_child('c'));
  s = reader.read("train/loss");  // the same reader, refreshed
  ASSERT_EQ(s.steps.size(), 12u);
  EXPECT_EQ(s.steps.back(), 12);
  EXPECT_EQ(s.values.back(), loss_at(12));
  EXPECT_EQ(reader.read("eval/loss").values, std::vector<double>{1.5});
  if (test::have_h5py()) {
    ASSERT_EQ(test::run_python(dir, kSwmrReader, path, &out), 0) << out;
    EXPECT_EQ(out, "12 0.0 12\n");
  }
  writer.signal_child('d');
  EXPECT_EQ(writer.exit_code(), 0);
}

TEST(Metrics, ResumeTruncatesToTheCheckpointStepAndContinues) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.h5");
  {
    auto m = MetricsWriter::create(path, {"train/loss", "eval/loss", "old/series"});
    for (int64_t step = 1; step <= 10; ++step) {
      m.append(step, {{"train/loss", loss_at(step)}, {"old/series", double(step)}});
      if (step % 5 == 0) m.append("eval/loss", step, 100.0 + step);
    }
  }
  {
    // Resumed from the checkpoint at step 6; "old/series" is no longer declared (kept,
    // truncated), "train/lr" is new.
    auto m = MetricsWriter::resume(path, {"train/loss", "eval/loss", "train/lr"}, 6);
    EXPECT_EQ(m.size("train/loss"), 6);
    EXPECT_EQ(m.size("eval/loss"), 1);
    EXPECT_EQ(m.size("train/lr"), 0);
    for (int64_t step = 7; step <= 8; ++step) {
      m.append(step, {{"train/loss", -loss_at(step)}, {"train/lr", 0.1 * step}});
    }
    EXPECT_THROW(m.append("train/loss", 6, 0.0), Error);
    m.close();
  }
  MetricsReader r(path);
  EXPECT_EQ(r.series(), (std::vector<std::string>{"eval/loss", "old/series", "train/loss", "train/lr"}));
  MetricSeries loss = r.read("train/loss");
  std::vector<int64_t> want_steps = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<double> want_values;
  for (int64_t step : want_steps) want_values.push_back(step <= 6 ? loss_at(step) : -loss_at(step));
  EXPECT_EQ(loss.steps, want_steps);
  EXPECT_EQ(loss.values, want_values);
  EXPECT_EQ(r.read("eval/loss").steps, std::vector<int64_t>{5});
  EXPECT_EQ(r.read("old/series").values, (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r.read("train/lr").values, (std::vector<double>{0.1 * 7, 0.1 * 8}));
  // A missing file on resume starts a new one.
  auto fresh = MetricsWriter::resume(dir.file("new.h5"), {"train/loss"}, 100);
  EXPECT_EQ(fresh.size("train/loss"), 0);
}

TEST(Metrics, ResumeAfterTheWriterCrashed) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.h5");
  ChildProcess writer([&](ChildProcess& self) {
    auto m = MetricsWriter::create(path, {"train/loss"});
    for (int64_t step = 1; step <= 8; ++step) m.append("train/loss", step, loss_at(step));
    self.signal_parent('a');
    self.wait_parent('b');  // killed here, file open: HDF5 never closes it
  });
  ASSERT_TRUE(writer.wait_child('a'));
  writer.kill();  // SIGKILL, as a crash or the OOM killer would

  {
    MetricsReader r(path);  // every append was flushed: all 8 are there
    MetricSeries s = r.read("train/loss");
    ASSERT_EQ(s.steps.size(), 8u);
    EXPECT_EQ(s.values[7], loss_at(8));
  }
  {
    auto m = MetricsWriter::resume(path, {"train/loss"}, 4);
    EXPECT_EQ(m.size("train/loss"), 4);
    m.append("train/loss", 5, 42.0);
    m.close();
  }
  MetricsReader r(path);
  MetricSeries s = r.read("train/loss");
  EXPECT_EQ(s.steps, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(s.values.back(), 42.0);
  if (test::have_h5py()) {  // a plain (non-SWMR) h5py open works again after resume
    std::string out;
    ASSERT_EQ(test::run_python(dir, "import sys, h5py\nprint(list(h5py.File(sys.argv[1], 'r')['train/loss/step'][:]))\n",
                               path, &out),
              0)
        << out;
    EXPECT_EQ(out, "[1, 2, 3, 4, 5]\n");
  }
}

TEST(Metrics, FullDiskThrowsAndResumeRecovers) {
  ScratchDir dir;
  const std::string path = dir.file("metrics.h5");
  std::string message;
  {
    auto m = MetricsWriter::create(path, {"train/loss"});
    m.append("train/loss", 1, loss_at(1));
    {
      // The file may not grow: the next chunk (entries 1024..) cannot be written.
      test::FileSizeLimit limit(std::filesystem::file_size(path));
      try {
        for (int64_t step = 2; step <= 3000; ++step) m.append("train/loss", step, loss_at(step));
      } catch (const Error& e) {
        message = e.what();
      }
    }
  }  // the writer closes without crashing despite the failed writes
  EXPECT_NE(message.find(path), std::string::npos) << "expected an error naming the file: " << message;
  EXPECT_NE(message.find(std::strerror(EFBIG)), std::string::npos) << message;
  // What was flushed before the failure is there; resume from step 1 brings the file back.
  auto m = MetricsWriter::resume(path, {"train/loss"}, 1);
  EXPECT_EQ(m.size("train/loss"), 1);
  m.append("train/loss", 2, 7.0);
  m.close();
  EXPECT_EQ(MetricsReader(path).read("train/loss").values, (std::vector<double>{loss_at(1), 7.0}));
}

}  // namespace
}  // namespace mg
