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

}  // namespace leasefs
