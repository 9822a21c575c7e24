#include "tools/common/progress.h"

#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <utility>

#include <sys/ioctl.h>

namespace leasefs::tools {

namespace {

constexpr int64_t kSecondNs = 1'000'000'000;
constexpr size_t kDefaultColumns = 80;
constexpr const char* kErase = "\x1b[K";  // erase from the cursor to the end of the line

// Products of two 64-bit counts (GCC and clang have it; -Wpedantic does not
// know it).
__extension__ typedef unsigned __int128 Wide;

// done * 100 / total without overflow, at most 100.
uint64_t Percent(uint64_t done, uint64_t total) {
  if (done >= total) return 100;
  return static_cast<uint64_t>(static_cast<Wide>(done) * 100 / total);
}

// "1.5/16.0 GiB": both in the unit the total needs, one decimal (KiB
// below 1 MiB).
std::string Bytes(uint64_t done, uint64_t total) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double scale = 1024.0;
  while (u + 1 < 6 && static_cast<double>(total) >= scale * 1024.0) {
    scale *= 1024.0;
    ++u;
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.1f/%.1f %s", static_cast<double>(done) / scale,
                static_cast<double>(total) / scale, kUnits[u]);
  return buf;
}

std::string Amounts(uint64_t done, uint64_t total, ProgressUnit unit) {
  if (unit == ProgressUnit::kBytes) return Bytes(done, total);
  return std::to_string(done) + "/" + std::to_string(total);
}

// The time left at the pace so far: elapsed * (total - done) / done.
int64_t Remaining(uint64_t done, uint64_t total, int64_t elapsed_ns) {
  const Wide left = static_cast<Wide>(elapsed_ns) * (total - done) / done;
  return left > static_cast<Wide>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(left);
}

// `phase` cut at its start to fit `room` bytes, "..." in front; no
// continuation byte of UTF-8 is left at the cut.
std::string FitPhase(std::string_view phase, size_t room) {
  if (phase.size() <= room) return std::string(phase);
  if (room <= 3) return std::string(room, '.');
  size_t from = phase.size() - (room - 3);
  while (from < phase.size() && (static_cast<unsigned char>(phase[from]) & 0xc0) == 0x80) ++from;
  return "..." + std::string(phase.substr(from));
}

}  // namespace

std::string FormatDuration(int64_t ns) {
  const int64_t s = ns < 0 ? 0 : ns / kSecondNs;
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%" PRId64 ":%02" PRId64 ":%02" PRId64, s / 3600, s / 60 % 60,
                  s % 60);
  else
    std::snprintf(buf, sizeof buf, "%" PRId64 ":%02" PRId64, s / 60, s % 60);
  return buf;
}

std::string FormatProgress(std::string_view tool, std::string_view phase, uint64_t done,
                           uint64_t total, ProgressUnit unit, int64_t elapsed_ns, size_t columns) {
  std::string tail = " " + (total == 0 ? std::to_string(done) : Amounts(done, total, unit));
  if (total != 0) tail += " " + std::to_string(Percent(done, total)) + "%";
  if (elapsed_ns >= kSecondNs && done > 0 && done < total)
    tail += " ETA " + FormatDuration(Remaining(done, total, elapsed_ns));
  const std::string head = std::string(tool) + ": ";
  const size_t width = columns > 1 ? columns - 1 : 0;
  std::string line;
  if (head.size() + tail.size() < width) {
    line = head + FitPhase(phase, width - head.size() - tail.size()) + tail;
  } else {
    line = head + std::string(phase) + tail;  // no room for the phase: cut the whole line
  }
  if (line.size() > width) line.resize(width);
  return line;
}

int64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * kSecondNs + ts.tv_nsec;
}

ProgressLine::ProgressLine(std::string tool, bool enabled)
    : ProgressLine(std::move(tool), enabled, Io{}) {}

ProgressLine::ProgressLine(std::string tool, bool enabled, Io io)
    : tool_(std::move(tool)), enabled_(enabled), io_(std::move(io)) {}

ProgressLine::~ProgressLine() { Clear(); }

bool ProgressLine::Wanted(bool quiet) { return !quiet && isatty(1) == 1 && isatty(2) == 1; }

void ProgressLine::Update(std::string_view phase, uint64_t done, uint64_t total,
                          ProgressUnit unit) {
  if (!enabled_) return;
  const int64_t now = io_.now_ns();
  const bool fresh = !in_phase_ || phase != phase_;
  if (fresh) {
    phase_.assign(phase);
    in_phase_ = true;
    phase_start_ns_ = now;
  } else if (now - last_draw_ns_ < kIntervalNs) {
    return;
  }
  std::string text =
      FormatProgress(tool_, phase, done, total, unit, now - phase_start_ns_, Columns());
  if (!fresh && text == shown_) return;
  last_draw_ns_ = now;
  Write("\r" + text + kErase);
  shown_ = std::move(text);
}

void ProgressLine::Clear() {
  in_phase_ = false;
  if (!enabled_ || shown_.empty()) return;
  Write(std::string("\r") + kErase);
  shown_.clear();
}

std::function<void(uint64_t, uint64_t)> ProgressLine::Hook(std::string phase, ProgressUnit unit) {
  if (!enabled_) return {};
  return [this, phase = std::move(phase), unit](uint64_t done, uint64_t total) {
    Update(phase, done, total, unit);
  };
}

void ProgressLine::Write(const std::string& bytes) {
  // A progress line is not worth failing for: a short or refused write
  // only leaves the line incomplete.
  for (size_t at = 0; at < bytes.size();) {
    const ssize_t n = write(io_.fd, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

size_t ProgressLine::Columns() const {
  if (io_.columns) return io_.columns();
  winsize ws{};
  if (ioctl(io_.fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return kDefaultColumns;
}

}  // namespace leasefs::tools
