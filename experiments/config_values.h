#pragma once
// Internal to the config loader: strict readers for one YAML value (with the error message
// that names file:line, key path, what was expected and what was found) and the writers
// to_yaml uses, chosen so that read(write(x)) == x exactly.
//
// Strictness follows YAML 1.2's core schema rather than yaml-cpp's as<T>() (which reads
// "010" as octal 8 and "yes" as true): integers are decimal, booleans are true/false, and a
// quoted scalar is always a string ("512" is not a number).
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "experiments/config_tree.h"

namespace mg::config_detail {

// Throws "[config] <file:line>: <path>: expected <expected>, got <value><hint>".
[[noreturn]] void fail_expected(const Entry& e, const std::string& expected,
                                const std::string& hint = "");

// An integer in [lo, hi]. Integral reals (steps: 1e5) are accepted; 3.5 is not.
int64_t read_int(const Entry& e, int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max());
uint64_t read_uint64(const Entry& e);

struct RealRange {
  double lo = -std::numeric_limits<double>::infinity();
  bool lo_open = false;  // true: lo itself is excluded
  double hi = std::numeric_limits<double>::infinity();
  bool hi_open = false;
};
RealRange at_least(double lo);       // [lo, inf)
RealRange greater_than(double lo);   // (lo, inf)
std::string describe_range(const RealRange& r);  // "a number > 0", "a number in [0, 1)"

double read_real(const Entry& e, const RealRange& range);  // finite, in range
bool read_bool(const Entry& e);                            // true / false
std::string read_string(const Entry& e);                   // any scalar but null
std::vector<std::string> read_string_list(const Entry& e); // [a, b]; a lone string is not a list

// Index of the entry's value in `names`, or an error listing them (with a nearest guess).
size_t read_choice(const Entry& e, const std::vector<std::string_view>& names);

bool is_null(const Entry& e);

// A path from the YAML made absolute against the directory of the file that named it.
std::string resolve_path(const Entry& e, const std::string& path);

// Writers (YAML text for one value).
std::string format_real(double v);           // shortest text that reads back to the same double
std::string format_string(std::string_view s);  // plain when unambiguous, else double-quoted
std::string format_string_list(const std::vector<std::string>& items);  // [a, "b c"]

}  // namespace mg::config_detail
