// LR schedules at their endpoints and joints against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

#include "autograd/error.h"
#include "trainer/lr_scheduler.h"

namespace mg {
namespace {

// peak 1e-3, min 1e-4, warmup 100, total 1000: decay phases span steps 100..1000.
LrSchedule schedule(LrScheduleKind kind) {
  return LrSchedule{.kind = kind,
                    .peak_lr = 1e-3,
                    .min_lr = 1e-4,
                    .warmup_steps = 100,
                    .total_steps = 1000,
                    .decay_fraction = 0.2};
}

constexpr double kTol = 1e-15;

TEST(LrSchedule, WarmupIsLinearFromFirstStepToPeak) {
  for (LrScheduleKind kind : {LrScheduleKind::Constant, LrScheduleKind::Linear,
                              LrScheduleKind::Cosine, LrScheduleKind::Wsd}) {
    const LrSchedule s = schedule(kind);
    EXPECT_NEAR(lr_at(s, 0), 1e-5, kTol);    // (0 + 1) / 100 * 1e-3
    EXPECT_NEAR(lr_at(s, 49), 5e-4, kTol);   // 50 / 100 * 1e-3
    EXPECT_NEAR(lr_at(s, 99), 1e-3, kTol);   // last warmup step reaches the peak
    EXPECT_NEAR(lr_at(s, 100), 1e-3, kTol);  // first step after warmup: still the peak
  }
}

TEST(LrSchedule, Constant) {
  const LrSchedule s = schedule(LrScheduleKind::Constant);
  EXPECT_EQ(lr_at(s, 500), 1e-3);
  EXPECT_EQ(lr_at(s, 999), 1e-3);
  EXPECT_EQ(lr_at(s, 5000), 1e-3);
}

TEST(LrSchedule, LinearDecay) {
  const LrSchedule s = schedule(LrScheduleKind::Linear);
  EXPECT_NEAR(lr_at(s, 550), 5.5e-4, kTol);                       // halfway: (1e-3 + 1e-4) / 2
  EXPECT_NEAR(lr_at(s, 999), 1e-3 - 9e-4 * 899.0 / 900.0, kTol);  // last step: 1.01e-4
  EXPECT_NEAR(lr_at(s, 999), 1.01e-4, 1e-12);
  EXPECT_EQ(lr_at(s, 1000), 1e-4);
  EXPECT_EQ(lr_at(s, 2000), 1e-4);
}

TEST(LrSchedule, CosineDecay) {
  const LrSchedule s = schedule(LrScheduleKind::Cosine);
  EXPECT_NEAR(lr_at(s, 550), 5.5e-4, kTol);                                // cos(pi/2) = 0
  EXPECT_NEAR(lr_at(s, 325), 1e-4 + 4.5e-4 * (1 + std::sqrt(0.5)), kTol);  // cos(pi/4)
  EXPECT_NEAR(lr_at(s, 775), 1e-4 + 4.5e-4 * (1 - std::sqrt(0.5)), kTol);  // cos(3pi/4)
  // Last step: 1e-4 + 4.5e-4 * (1 - cos(pi / 900)) = 1e-4 + 2.7416e-9
  EXPECT_NEAR(lr_at(s, 999), 1e-4 + 4.5e-4 * (1 - std::cos(std::numbers::pi / 900)), kTol);
  EXPECT_NEAR(lr_at(s, 999), 1.0000274e-4, 1e-11);
  EXPECT_EQ(lr_at(s, 1000), 1e-4);
}

TEST(LrSchedule, WarmupStableDecay) {
  const LrSchedule s = schedule(LrScheduleKind::Wsd);  // decays over the last 200 steps
  EXPECT_EQ(wsd_decay_start(s), 800);
  EXPECT_EQ(lr_at(s, 500), 1e-3);
  EXPECT_EQ(lr_at(s, 799), 1e-3);  // end of the stable phase
  EXPECT_EQ(lr_at(s, 800), 1e-3);  // decay starts from the peak
  EXPECT_NEAR(lr_at(s, 801), 1e-3 - 9e-4 / 200, kTol);
  EXPECT_NEAR(lr_at(s, 900), 5.5e-4, kTol);
  EXPECT_NEAR(lr_at(s, 999), 1e-4 + 9e-4 / 200, kTol);  // 1.045e-4
  EXPECT_EQ(lr_at(s, 1000), 1e-4);
}

TEST(LrSchedule, NoWarmupStartsAtPeak) {
  LrSchedule s = schedule(LrScheduleKind::Cosine);
  s.warmup_steps = 0;
  EXPECT_EQ(lr_at(s, 0), 1e-3);
  EXPECT_NEAR(lr_at(s, 500), 5.5e-4, kTol);
}

TEST(LrSchedule, RejectsInconsistentSettings) {
  LrSchedule s = schedule(LrScheduleKind::Cosine);
  s.warmup_steps = 1001;
  try {
    lr_at(s, 0);
    FAIL() << "warmup > total accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("warmup_steps = 1001 exceeds total_steps = 1000"),
              std::string::npos)
        << e.what();
  }
  s = schedule(LrScheduleKind::Linear);
  s.warmup_steps = 1000;  // no room to decay
  EXPECT_THROW(lr_at(s, 0), Error);
  s.kind = LrScheduleKind::Constant;
  EXPECT_NO_THROW(lr_at(s, 0));
  s = schedule(LrScheduleKind::Wsd);
  s.decay_fraction = 0.95;  // decay would start at 50, inside the warmup
  EXPECT_THROW(lr_at(s, 0), Error);
  s.decay_fraction = 0.0;
  EXPECT_THROW(lr_at(s, 0), Error);
  s = schedule(LrScheduleKind::Cosine);
  s.min_lr = 2e-3;  // above peak
  EXPECT_THROW(validate_lr_schedule(s), Error);
  s = schedule(LrScheduleKind::Cosine);
  EXPECT_THROW(lr_at(s, -1), Error);
  s.peak_lr = 0.0;
  EXPECT_THROW(lr_at(s, 0), Error);
}

TEST(LrSchedule, KindNamesRoundTrip) {
  for (LrScheduleKind kind : {LrScheduleKind::Constant, LrScheduleKind::Linear,
                              LrScheduleKind::Cosine, LrScheduleKind::Wsd}) {
    EXPECT_EQ(lr_schedule_kind_from_name(lr_schedule_kind_name(kind)), kind);
  }
  EXPECT_THROW(lr_schedule_kind_from_name("cosine_with_restarts"), Error);
}

}  // namespace
}  // namespace mg
