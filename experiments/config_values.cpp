// Strict readers and exact writers for single config values (see config_values.h for why
// they do not use yaml-cpp's as<T>()).
#include "experiments/config_values.h"

#include <charconv>
#include <cmath>
#include <filesystem>

#include "autograd/error.h"

namespace mg::config_detail {

namespace {

// A scalar the user wrote as a string: quoted ("512", 'x') or tagged !!str.
bool is_string_scalar(const YAML::Node& n) {
  return n.IsScalar() && (n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str");
}

bool is_plain_scalar(const YAML::Node& n) { return n.IsScalar() && !is_string_scalar(n); }

std::string_view strip_plus(std::string_view s) {
  return !s.empty() && s.front() == '+' ? s.substr(1) : s;
}

bool parse_int64(std::string_view s, int64_t& out, bool& overflow) {
  s = strip_plus(s);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  overflow = ec == std::errc::result_out_of_range;
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
}

// YAML 1.2 core-schema float spellings, minus .inf/.nan (a config value must be finite).
bool parse_double(std::string_view s, double& out) {
  s = strip_plus(s);
  if (s.empty()) return false;
  for (char c : s)  // from_chars would also take "inf", "nan" and hex digits: refuse them here
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == 'E' ||
          c == '-' || c == '+'))
      return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(out);
}

std::string int_range_text(int64_t lo, int64_t hi) {
  if (hi == std::numeric_limits<int64_t>::max()) return fmt::format("an integer >= {}", lo);
  return fmt::format("an integer in [{}, {}]", lo, hi);
}

}  // namespace

void fail_expected(const Entry& e, const std::string& expected, const std::string& hint) {
  throw Error(fmt::format("[config] {}: {}: expected {}, got {}{}", where(e), e.path, expected,
                          describe(e.value()), hint));
}

bool is_null(const Entry& e) { return !e.value().IsDefined() || e.value().IsNull(); }

int64_t read_int(const Entry& e, int64_t lo, int64_t hi) {
  const std::string expected = int_range_text(lo, hi);
  if (!is_plain_scalar(e.value())) fail_expected(e, expected);
  int64_t v = 0;
  bool overflow = false;
  if (!parse_int64(e.value().Scalar(), v, overflow)) {
    double d = 0;
    // 1e5 and 2.0 are integers written as reals; 3.5 and 1e30 are not.
    if (overflow || !parse_double(e.value().Scalar(), d) || d != std::floor(d) ||
        std::fabs(d) > 9.0e15)
      fail_expected(e, expected, overflow ? " (out of range)" : "");
    v = static_cast<int64_t>(d);
  }
  if (v < lo || v > hi) fail_expected(e, expected, " (out of range)");
  return v;
}

uint64_t read_uint64(const Entry& e) {
  const char* expected = "an integer in [0, 18446744073709551615]";
  if (!is_plain_scalar(e.value())) fail_expected(e, expected);
  std::string_view s = strip_plus(e.value().Scalar());
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty())
    fail_expected(e, expected, s.rfind('-', 0) == 0 ? " (out of range)" : "");
  return v;
}

RealRange at_least(double lo) { return RealRange{lo, false}; }
RealRange greater_than(double lo) { return RealRange{lo, true}; }

std::string describe_range(const RealRange& r) {
  bool has_lo = std::isfinite(r.lo), has_hi = std::isfinite(r.hi);
  if (has_lo && has_hi)
    return fmt::format("a number in {}{}, {}{}", r.lo_open ? "(" : "[", format_real(r.lo),
                       format_real(r.hi), r.hi_open ? ")" : "]");
  if (has_lo) return fmt::format("a number {} {}", r.lo_open ? ">" : ">=", format_real(r.lo));
  if (has_hi) return fmt::format("a number {} {}", r.hi_open ? "<" : "<=", format_real(r.hi));
  return "a finite number";
}

double read_real(const Entry& e, const RealRange& range) {
  const std::string expected = describe_range(range);
  double v = 0;
  if (!is_plain_scalar(e.value()) || !parse_double(e.value().Scalar(), v)) fail_expected(e, expected);
  bool below = range.lo_open ? !(v > range.lo) : !(v >= range.lo);
  bool above = range.hi_open ? !(v < range.hi) : !(v <= range.hi);
  if (below || above) fail_expected(e, expected, " (out of range)");
  return v;
}

bool read_bool(const Entry& e) {
  if (is_plain_scalar(e.value())) {
    const std::string& s = e.value().Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  fail_expected(e, "true or false");
}

std::string read_string(const Entry& e) {
  if (!e.value().IsScalar()) fail_expected(e, "a string");
  return e.value().Scalar();
}

std::vector<std::string> read_string_list(const Entry& e) {
  if (!e.value().IsSequence()) fail_expected(e, "a list of strings, e.g. [a, b]");
  std::vector<std::string> out;
  for (size_t i = 0; i < e.value().size(); ++i) {
    Entry el = list_element(e, i);
    if (!el.value().IsScalar() || el.value().Scalar().empty()) fail_expected(el, "a non-empty string");
    out.push_back(el.value().Scalar());
  }
  return out;
}

size_t read_choice(const Entry& e, const std::vector<std::string_view>& names) {
  std::string list;
  for (size_t i = 0; i < names.size(); ++i) list += (i ? ", " : "") + std::string(names[i]);
  const std::string expected = "one of " + list;
  if (!e.value().IsScalar()) fail_expected(e, expected);
  const std::string& s = e.value().Scalar();
  for (size_t i = 0; i < names.size(); ++i)
    if (s == names[i]) return i;
  std::string_view best;
  int best_d = std::numeric_limits<int>::max();
  for (auto n : names) {
    int d = edit_distance(s, n);
    if (d < best_d) best = n, best_d = d;
  }
  if (best_d > std::max<int>(2, static_cast<int>(s.size()) / 3)) best = {};  // "adam" -> "adamw"
  fail_expected(e, expected, best.empty() ? "" : fmt::format("; did you mean '{}'?", best));
}

std::string resolve_path(const Entry& e, const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  if (p.is_relative()) p = (e.base_dir.empty() ? fs::current_path() : fs::path(e.base_dir)) / p;
  return fs::absolute(p).lexically_normal().string();
}

std::string format_real(double v) {
  // fmt's "{}" is the shortest representation that parses back to the same double (Ryu-like),
  // so to_yaml -> load is exact.
  return fmt::format("{}", v);
}

std::string format_string(std::string_view s) {
  static const char* const kAmbiguous[] = {"null", "Null", "NULL", "true", "True", "TRUE",
                                           "false", "False", "FALSE", "yes", "Yes", "YES",
                                           "no", "No", "NO", "on", "On", "ON", "off", "Off",
                                           "OFF", "y", "Y", "n", "N"};
  bool plain = !s.empty() && (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_' ||
                              s[0] == '/');
  for (char c : s)
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                      c == '/' || c == '-');
  for (const char* word : kAmbiguous) plain = plain && s != word;
  if (plain) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
          out += fmt::format("\\x{:02X}", static_cast<unsigned char>(c));
        else
          out += c;
    }
  }
  return out + "\"";
}

std::string format_string_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + format_string(items[i]);
  return out + "]";
}

}  // namespace mg::config_detail
