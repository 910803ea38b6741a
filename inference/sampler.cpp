#include "inference/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mg {

int32_t Sampler::sample(std::span<const float> logits_in, std::span<const int32_t> history) {
  const int64_t V = static_cast<int64_t>(logits_in.size());
  std::vector<double> logits(logits_in.begin(), logits_in.end());
  if (opts_.repeat_penalty != 1.0) {
    const size_t from = history.size() > static_cast<size_t>(opts_.repeat_last_n) ? history.size() - opts_.repeat_last_n : 0;
    std::vector<bool> seen(static_cast<size_t>(V), false);
    for (size_t i = from; i < history.size(); ++i)
      if (history[i] >= 0 && history[i] < V) seen[history[i]] = true;
    for (int64_t v = 0; v < V; ++v)
      if (seen[v]) logits[v] = logits[v] > 0 ? logits[v] / opts_.repeat_penalty : logits[v] * opts_.repeat_penalty;
  }
  if (opts_.temperature <= 0) return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());

  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  // Stable order: higher logit first, lower id on ties (deterministic across libraries).
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t keep = V;
  if (opts_.top_k > 0) keep = std::min<int64_t>(keep, opts_.top_k);
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = logits[idx[0]];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += (p[i] = std::exp((logits[idx[i]] - mx) / opts_.temperature));
  if (opts_.top_p < 1.0) {  // smallest prefix whose mass reaches top_p
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += p[n++] / total;
      if (cum >= opts_.top_p) break;
    }
    keep = n;
    total = 0;
    for (int64_t i = 0; i < keep; ++i) total += p[i];
  }
  double r = rng_.uniform() * total;
  for (int64_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace mg
