#include "trainer/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "autograd/error.h"

namespace mg {

std::string_view lr_schedule_kind_name(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::Constant:
      return "constant";
    case LrScheduleKind::Linear:
      return "linear";
    case LrScheduleKind::Cosine:
      return "cosine";
    case LrScheduleKind::Wsd:
      return "wsd";
  }
  return "?";
}

LrScheduleKind lr_schedule_kind_from_name(std::string_view name) {
  for (LrScheduleKind kind : {LrScheduleKind::Constant, LrScheduleKind::Linear,
                              LrScheduleKind::Cosine, LrScheduleKind::Wsd}) {
    if (lr_schedule_kind_name(kind) == name) return kind;
  }
  throw Error(fmt::format(
      "[lr_schedule] unknown schedule kind '{}'; use one of constant, linear, cosine, wsd", name));
}

int64_t wsd_decay_start(const LrSchedule& s) {
  const auto decay_steps = static_cast<int64_t>(std::llround(s.decay_fraction * s.total_steps));
  return s.total_steps - std::max<int64_t>(1, decay_steps);
}

void validate_lr_schedule(const LrSchedule& s) {
  const std::string_view kind = lr_schedule_kind_name(s.kind);
  MG_CHECK(std::isfinite(s.peak_lr) && s.peak_lr > 0.0,
           "[lr_schedule] peak_lr = {} must be a positive finite number; set e.g. peak_lr: 3e-4",
           s.peak_lr);
  MG_CHECK(std::isfinite(s.min_lr) && s.min_lr >= 0.0 && s.min_lr <= s.peak_lr,
           "[lr_schedule] min_lr = {} must lie in [0, peak_lr = {}]; lower min_lr", s.min_lr,
           s.peak_lr);
  MG_CHECK(s.warmup_steps >= 0, "[lr_schedule] warmup_steps = {} is negative; use 0 for no warmup",
           s.warmup_steps);
  MG_CHECK(s.total_steps >= 1, "[lr_schedule] total_steps = {} must be >= 1", s.total_steps);
  MG_CHECK(s.warmup_steps <= s.total_steps,
           "[lr_schedule] warmup_steps = {} exceeds total_steps = {}; shorten the warmup or "
           "train longer",
           s.warmup_steps, s.total_steps);
  if (s.kind == LrScheduleKind::Constant) return;
  MG_CHECK(s.warmup_steps < s.total_steps,
           "[lr_schedule] kind {} needs total_steps ({}) > warmup_steps ({}) to leave room to "
           "decay; shorten the warmup or use kind constant",
           kind, s.total_steps, s.warmup_steps);
  if (s.kind == LrScheduleKind::Wsd) {
    MG_CHECK(std::isfinite(s.decay_fraction) && s.decay_fraction > 0.0 && s.decay_fraction <= 1.0,
             "[lr_schedule] wsd decay_fraction = {} must lie in (0, 1] (e.g. 0.1 = decay over "
             "the last 10% of steps); for no decay use kind constant",
             s.decay_fraction);
    const int64_t decay_start = wsd_decay_start(s);
    MG_CHECK(decay_start >= s.warmup_steps,
             "[lr_schedule] wsd decay would start at step {} (decay_fraction {} of {} steps), "
             "before warmup ends at step {}; lower decay_fraction or warmup_steps",
             decay_start, s.decay_fraction, s.total_steps, s.warmup_steps);
  }
}

double lr_at(const LrSchedule& s, int64_t step) {
  validate_lr_schedule(s);
  MG_CHECK(step >= 0, "[lr_schedule] step = {} is negative; steps are 0-based", step);
  if (step < s.warmup_steps) {
    return s.peak_lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  if (s.kind == LrScheduleKind::Constant) return s.peak_lr;
  if (step >= s.total_steps) return s.min_lr;

  // Decay from peak_lr at `decay_start` to min_lr at total_steps; progress in [0, 1).
  const int64_t decay_start = s.kind == LrScheduleKind::Wsd ? wsd_decay_start(s) : s.warmup_steps;
  if (step < decay_start) return s.peak_lr;  // wsd's stable phase
  const double progress =
      static_cast<double>(step - decay_start) / static_cast<double>(s.total_steps - decay_start);
  switch (s.kind) {
    case LrScheduleKind::Linear:
    case LrScheduleKind::Wsd:
      return s.peak_lr + (s.min_lr - s.peak_lr) * progress;
    case LrScheduleKind::Cosine:
      return s.min_lr +
             0.5 * (s.peak_lr - s.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
    case LrScheduleKind::Constant:
      break;
  }
  return s.peak_lr;
}

}  // namespace mg
