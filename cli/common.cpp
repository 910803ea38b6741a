#include <string>

#include "cli/commands.h"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "autograd/error.h"

namespace mg::cli {

namespace {
std::string& prog() {
  static std::string p = "magellan";
  return p;
}
}  // namespace

namespace po = boost::program_options;

po::variables_map parse_args(const Args& args, const po::options_description& desc,
                             std::vector<std::string>* positional) {
  po::options_description all;
  all.add(desc);
  po::positional_options_description pos;
  po::options_description hidden;
  if (positional) {
    hidden.add_options()("args", po::value(positional));
    all.add(hidden);
    pos.add("args", -1);
  }
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  po::notify(vm);
  return vm;
}

const std::string& program_name() { return prog(); }
void set_program_name(const std::string& argv0) { prog() = argv0; }

void check_output_path(const std::string& out, const std::vector<std::string>& inputs, const char* where) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  if (!fs::exists(st)) return;  // a new file: nothing to destroy
  MG_CHECK(fs::is_regular_file(st),
           "[{}] the output {} exists and is not a regular file (a directory, device or FIFO); magellan writes "
           "its outputs as new files, atomically: give a file path", where, out);
  for (const std::string& in : inputs) {
    if (in.empty() || !fs::exists(in, ec)) continue;
    MG_CHECK(!fs::equivalent(out, in, ec),
             "[{}] the output {} is the input {} (the same file): writing it would destroy the input; give "
             "another output path", where, out, in);
  }
}

std::vector<int32_t> parse_token_ids(const std::string& text, int64_t V, const std::string& where) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  for (std::string word; in >> word;) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    MG_CHECK(end != word.c_str() && *end == '\0' && errno == 0, "[{}] '{}' (word {}) is not a token id (a whole number)",
             where, word.substr(0, 40), ids.size() + 1);
    MG_CHECK(v >= 0 && v < V, "[{}] id {} (word {}) is outside the vocabulary [0, {})", where, v, ids.size() + 1, V);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

std::string quote_arg(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace mg::cli
