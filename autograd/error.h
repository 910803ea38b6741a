#pragma once
// magellan's one exception type. Messages follow "[where] what was wrong; what to do".
// Thrown anywhere, caught once at the CLI, which prints it and exits non-zero.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace mg {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// MG_CHECK(cond, "[where] fmt {}", args...) throws mg::Error when cond is false. For internal
// invariants and user input alike: it stays on in release builds (never use assert on input).
#define MG_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::mg::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

}  // namespace mg
