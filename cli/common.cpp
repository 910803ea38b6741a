#include <string>

#include "cli/commands.h"

namespace mg::cli {

namespace {
std::string& prog() {
  static std::string p = "magellan";
  return p;
}
}  // namespace

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
