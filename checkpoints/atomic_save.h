#pragma once
// Crash-safe checkpoint files: a save either fully replaces the file at its path or leaves
// the previous one as it was, and a reader can tell a complete checkpoint from a damaged one.
//
//   atomic_save(dir + "/" + checkpoint_filename(step), [&](H5File& f) { ...write... });
//   keep_last(dir, "step_*.h5", 3, {best_path});
//   auto latest = latest_complete_checkpoint(dir);   // std::nullopt on a fresh run
//
// The save follows the POSIX recipe (write a temp file in the same directory, fsync it,
// rename(2) it over the target, fsync the directory), and like llm.c's DONE marker a root
// attribute `complete = 1` is written after everything else, so a file cut short by a copy
// or a full disk elsewhere is recognised and skipped.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "checkpoints/h5_file.h"

namespace mg {

// Root attribute that atomic_save writes last; 1 = every dataset before it was written.
inline constexpr const char* kCompleteAttr = "complete";

// Writes a new HDF5 file at `final_path` through `write_fn`, atomically:
//  1. creates `<final_path>.tmp.<pid>` and calls write_fn on it,
//  2. sets root attribute complete = 1, closes (HDF5 flushes), fsyncs the temp file,
//  3. renames it over `final_path`, fsyncs the directory.
// If anything throws (write_fn, HDF5 on a full disk, fsync, rename) the temp file is removed,
// the file previously at `final_path` is untouched, and mg::Error naming `final_path` and
// the cause is thrown. write_fn must not keep the H5File.
void atomic_save(const std::string& final_path, const std::function<void(H5File&)>& write_fn);

// The same recipe for any file: write_fn(temp_path) writes (and closes) the temp file; then
// fsync, rename over `final_path`, fsync the directory. On any error the temp file is removed,
// `final_path` is untouched and mg::Error names it and the cause.
void atomic_write(const std::string& final_path, const std::function<void(const std::string& temp_path)>& write_fn);

// Removes `<name>.tmp.<pid>` files beside `final_path` that a save killed mid-way left
// behind (kill -9, a crash: nothing else removes them, and a production checkpoint's is
// gigabytes): those whose <name> is final_path's own file name or a checkpoint ("step_*.h5"),
// and whose process no longer exists. A live process's temp file is never touched, nor any
// other file. atomic_write calls it first; returns the removed paths.
std::vector<std::string> remove_stale_temp_files(const std::string& final_path);

// "step_00001000.h5": zero-padded to 8 digits so a directory listing sorts by step too.
std::string checkpoint_filename(int64_t step);

struct CheckpointFile {
  std::string path;  // dir + "/" + file name
  int64_t step;      // the last run of digits in what the pattern's wildcards matched
};

// Regular files in `dir` whose name matches the glob `pattern` (fnmatch) with a number where
// the wildcards are ("step_*.h5": step_00001000.h5 and step_1000.h5 are step 1000), sorted
// by that number, ascending. Files without digits ("best.h5") and temp files
// of an interrupted save ("step_5.h5.tmp.123" does not match "step_*.h5") are not listed.
// A missing directory gives an empty list (a fresh run).
std::vector<CheckpointFile> list_checkpoints(const std::string& dir,
                                             const std::string& pattern = "step_*.h5");

// Deletes all but the `n` (>= 1) highest-step files that list_checkpoints(dir, pattern)
// gives; files named in `protect` (e.g. the best-by-eval checkpoint) are never deleted and
// do not count towards n. Returns the deleted paths. A file that cannot be deleted is
// reported with a warning and skipped (pruning must not stop a training run).
std::vector<std::string> keep_last(const std::string& dir, const std::string& pattern, int n,
                                   const std::vector<std::string>& protect = {});

// True when `path` opens as HDF5 and has root attribute complete == 1. Otherwise false, with
// the reason in *why_not (if given): missing, truncated, not HDF5, no marker.
bool is_complete_checkpoint(const std::string& path, std::string* why_not = nullptr);

// The highest-step complete checkpoint in `dir`; incomplete or unreadable files above it are
// skipped with a warning naming the file and the reason. std::nullopt if there is none.
std::optional<CheckpointFile> latest_complete_checkpoint(const std::string& dir,
                                                         const std::string& pattern = "step_*.h5");

}  // namespace mg
