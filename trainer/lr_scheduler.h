#pragma once
// Learning-rate schedules as pure functions of the (0-based) optimizer step: no state, so a
// resumed run needs only the step counter to get the same learning rate back.
//
// Every kind starts with a linear warmup that reaches peak_lr on the last warmup step:
//   step < warmup_steps:  lr = peak_lr * (step + 1) / warmup_steps
// (the "+1" makes step 0 train with a small non-zero lr, as nanoGPT's get_lr does). Then:
//   constant: lr = peak_lr
//   linear:   peak_lr -> min_lr linearly, reaching min_lr at step == total_steps
//   cosine:   lr = min_lr + 0.5 (peak_lr - min_lr) (1 + cos(pi * progress)),
//             progress = (step - warmup) / (total - warmup)       (SGDR, Loshchilov & Hutter 2017)
//   wsd:      warmup-stable-decay (Hu et al. 2024, MiniCPM): peak_lr until the last
//             decay_steps = round(decay_fraction * total_steps) steps, then linear to min_lr
//             at step == total_steps.
// Steps at or past total_steps return the end value (min_lr; peak_lr for constant).
#include <cstdint>
#include <string_view>

namespace mg {

enum class LrScheduleKind { Constant, Linear, Cosine, Wsd };

struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::Cosine;
  double peak_lr = 3e-4;        // reached at the end of warmup
  double min_lr = 0.0;          // end value of linear / cosine / wsd (0 <= min_lr <= peak_lr)
  int64_t warmup_steps = 0;     // 0 = no warmup
  int64_t total_steps = 1;      // steps of the whole run (> warmup_steps for decaying kinds)
  double decay_fraction = 0.1;  // wsd only: final fraction of total_steps spent decaying, (0, 1]
};

// Throws mg::Error naming the bad field and what to do (e.g. warmup_steps > total_steps).
void validate_lr_schedule(const LrSchedule& schedule);

// The learning rate for 0-based `step` (>= 0). Validates `schedule` (a handful of compares).
double lr_at(const LrSchedule& schedule, int64_t step);

// First step of the wsd decay phase: total_steps - round(decay_fraction * total_steps),
// at least one decay step. Only meaningful for kind == Wsd.
int64_t wsd_decay_start(const LrSchedule& schedule);

// "constant" | "linear" | "cosine" | "wsd" (what YAML configs spell).
std::string_view lr_schedule_kind_name(LrScheduleKind kind);
// Inverse of lr_schedule_kind_name; throws mg::Error listing the accepted names.
LrScheduleKind lr_schedule_kind_from_name(std::string_view name);

}  // namespace mg
