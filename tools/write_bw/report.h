// leasefs-write-bw's results, computed and printed as perftest's ib_write_bw
// prints them (../shared/context/tool-formats.md; docs/softnic.md
// "leasefs-write-bw"): a row per message size with the peak and average
// bandwidth and the message rate.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace leasefs::write_bw {

// perftest's RESULT_LINE: 87 dashes.
inline constexpr const char* kResultLine =
    "---------------------------------------------------------------------------------------\n";

// Peaks are computed for at most this many iterations (the search is
// quadratic); above, and in duration mode, the peak column says 0.00.
inline constexpr uint64_t kMaxPeakIterations = 20000;

struct Row {
  uint64_t size = 0;        // bytes per message
  uint64_t iterations = 0;  // messages completed
  double peak_bps = 0;      // bytes per second; 0: not computed
  double avg_bps = 0;
  double msg_rate_mpps = 0;  // millions of messages per second
};

// The timings of an iterations run, in seconds on one clock: posted[i] when
// message i was posted; completed[j] when the completion of message j came,
// for the signaled messages j only (every cq_mod-th and the last; the other
// entries are unused). A completion also completes every message before it.
struct Timings {
  std::vector<double> posted;
  std::vector<double> completed;
};

// Whether message i of n is signaled under CQ moderation cq_mod.
inline bool Signaled(uint64_t i, uint64_t n, uint32_t cq_mod) {
  return (i + 1) % cq_mod == 0 || i + 1 == n;
}

// perftest's figures: average = size * n / (last completion - first post);
// peak = size / the least average time per message over any run of messages
// i..j ending at a signaled one, (completed[j] - posted[i]) / (j - i + 1).
// REQUIRES: n = posted.size() = completed.size() > 0.
Row IterationsRow(uint64_t size, const Timings& t, uint32_t cq_mod);
// Duration mode: n messages completed in `seconds`; no peak.
Row DurationRow(uint64_t size, uint64_t n, double seconds);

// The column header line (MB/sec, which is MiB/s as in perftest, or Gb/sec
// with gbits) and one row, each ending in a newline, byte for byte as
// perftest prints them.
std::string ResultHeader(bool gbits);
std::string FormatRow(const Row& row, bool gbits);

}  // namespace leasefs::write_bw
