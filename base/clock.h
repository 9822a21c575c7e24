// Wall-clock time in nanoseconds since the Unix epoch, as stored on media.
#pragma once

#include <cstdint>
#include <ctime>

namespace leasefs {

inline int64_t NowNs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline timespec NsToTimespec(int64_t ns) noexcept {
  timespec ts{};
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  if (ts.tv_nsec < 0) {  // times before 1970
    ts.tv_nsec += 1'000'000'000;
    ts.tv_sec -= 1;
  }
  return ts;
}

inline int64_t TimespecToNs(const timespec& ts) noexcept {
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// The timestamps a pool can hold: int64 nanoseconds since the epoch, of
// which the whole seconds from kMinTimeSec to kMaxTimeSec are the mount's
// range (1677-09-21 00:12:44 to 2262-04-11 23:47:16 UTC), as ext4's and
// XFS's s_time_min/s_time_max are theirs (docs/timestamps.md).
inline constexpr int64_t kMinTimeSec = -9'223'372'036;
inline constexpr int64_t kMaxTimeSec = 9'223'372'036;

// A time a caller sets (utimensat), as stored: clamped into the range the
// way the kernel clamps a local filesystem's (timestamp_truncate): the
// seconds to [kMinTimeSec, kMaxTimeSec], and the nanoseconds to 0 when the
// seconds land on either edge. REQUIRES: 0 <= tv_nsec < 10^9.
inline int64_t ClampedTimespecToNs(const timespec& ts) noexcept {
  if (ts.tv_sec <= kMinTimeSec) return kMinTimeSec * 1'000'000'000;
  if (ts.tv_sec >= kMaxTimeSec) return kMaxTimeSec * 1'000'000'000;
  return TimespecToNs(ts);
}

}  // namespace leasefs
