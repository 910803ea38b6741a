#pragma once
// One batch of token windows, the unit every Dataset hands to the trainer.
//
// Convention (the same for every dataset): logits computed at position (b,t) are scored
// against targets[b*T + t]. For language-model data that is the next token
// (targets[t] = tokens[t+1] of the underlying stream); for the synthetic tasks it is the
// answer expected at a marker/trigger position. -1 means "not counted": the loss ignores it
// (ignore_index = -1, design.md §3) and so does task accuracy.
#include <cstdint>
#include <vector>

namespace mg {

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;   // (B,T) row-major, ids in [0, vocab_size_needed)
  std::vector<int32_t> targets;  // (B,T) row-major, -1 = not counted (ignore_index)

  Batch() = default;
  // A batch of B rows of T, tokens 0 and every target -1 (fill in what is counted).
  Batch(int64_t rows, int64_t cols)
      : B(rows), T(cols), tokens(static_cast<size_t>(rows * cols), 0),
        targets(static_cast<size_t>(rows * cols), -1) {}

  int32_t* tokens_row(int64_t b) { return tokens.data() + b * T; }    // (T)
  int32_t* targets_row(int64_t b) { return targets.data() + b * T; }  // (T)
  const int32_t* tokens_row(int64_t b) const { return tokens.data() + b * T; }
  const int32_t* targets_row(int64_t b) const { return targets.data() + b * T; }

  // Number of targets the loss counts (targets != -1): the denominator of the mean loss.
  int64_t counted_targets() const {
    int64_t n = 0;
    for (int32_t t : targets) n += (t != -1);
    return n;
  }
};

}  // namespace mg
