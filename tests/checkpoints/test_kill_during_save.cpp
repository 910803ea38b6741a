// SIGKILL in the middle of a checkpoint save: the previous checkpoint is byte-identical and
// still the latest complete one, so a resume picks it up. The save runs in a child process
// that is killed while it is writing (it signals the parent half-way through its datasets).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <vector>

#include "checkpoints/atomic_save.h"
#include "h5_test_util.h"

namespace mg {
namespace {

void write_payload(H5File& f, float value, int n_datasets, int pipe_fd) {
  std::vector<float> data(1 << 18, value);  // 1 MiB per dataset
  for (int i = 0; i < n_datasets; ++i) {
    f.write("/model/w" + std::to_string(i), DType::F32, {1 << 18}, data.data());
    f.flush();
    if (pipe_fd >= 0 && i == n_datasets / 2) {  // half-way: tell the parent, then keep going slowly
      char c = 'x';
      (void)!::write(pipe_fd, &c, 1);
      ::sleep(30);
    }
  }
}

TEST(AtomicSave, SigkillMidSaveLeavesPreviousCheckpointIntact) {
  test::ScratchDir dir;
  const std::string prev = dir.file(checkpoint_filename(100));
  atomic_save(prev, [](H5File& f) {
    f.set_int_attr("/", "step", 100);
    write_payload(f, 1.0f, 4, -1);
  });
  const std::string before = test::file_bytes(prev);

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string next = dir.file(checkpoint_filename(200));
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // child: no OpenMP or BLAS is used on this path, so fork is safe
    ::close(fds[0]);
    try {
      atomic_save(next, [&](H5File& f) {
        f.set_int_attr("/", "step", 200);
        write_payload(f, 2.0f, 8, fds[1]);
      });
    } catch (...) {
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  char c;
  ASSERT_EQ(::read(fds[0], &c, 1), 1) << "the child never reached the middle of its save";
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(status));

  EXPECT_EQ(test::file_bytes(prev), before) << "the previous checkpoint changed";
  EXPECT_FALSE(std::filesystem::exists(next)) << "a killed save must not leave the final name";
  auto latest = latest_complete_checkpoint(dir.path.string());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 100);
  H5File f = H5File::open_read(latest->path);
  EXPECT_EQ(f.read_vector<float>("/model/w3")[17], 1.0f);
}

}  // namespace
}  // namespace mg
