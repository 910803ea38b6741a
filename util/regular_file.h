#pragma once
// Input files given by a user path must be regular files: a FIFO blocks the open (or the read)
// forever, a device reads garbage or without end (/dev/zero), a directory fails obscurely.
//
//   require_regular_file(path, "[config]");   // before opening `path` for reading
//
// Every place that opens a user-given input file calls it first (config YAML, data.path
// corpora, tokenizer files, checkpoints, safetensors, HF config.json, expert stores, token
// caches, sweep files, prompt files). Folders where a folder is expected (a corpus folder,
// an HF model dir) are the caller's business: check them with std::filesystem before.
#include <string>
#include <string_view>

namespace mg {

// What `path` is, stat(2) following symbolic links: "a regular file", "a directory",
// "a FIFO", "a character device", "a block device", "a socket", "missing", or
// "unreadable (<errno text>)".
std::string file_kind(const std::string& path);

// Throws mg::Error "<where> <path> is not a regular file (a FIFO); give a file" when `path`
// exists and is not a regular file (after following symbolic links). A missing path passes,
// so that the caller's own "no such file" message (naming what it wanted) stays.
void require_regular_file(const std::string& path, std::string_view where);

// The same, a missing path included: "<where> <path> does not exist".
void require_existing_regular_file(const std::string& path, std::string_view where);

}  // namespace mg
