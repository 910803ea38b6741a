#include <string>

#include "cli/commands.h"

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

std::string quote_arg(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace mg::cli
