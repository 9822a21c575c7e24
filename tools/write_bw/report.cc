#include "tools/write_bw/report.h"

#include <cstdio>

namespace leasefs::write_bw {
namespace {

// perftest's units: MB/sec are 2^20 bytes a second, Gb/sec 10^9 bits.
double InUnits(double bytes_per_s, bool gbits) {
  return gbits ? bytes_per_s / 125000000.0 : bytes_per_s / 1048576.0;
}

}  // namespace

Row IterationsRow(uint64_t size, const Timings& t, uint32_t cq_mod) {
  const uint64_t n = t.posted.size();
  Row row;
  row.size = size;
  row.iterations = n;
  const double span = t.completed[n - 1] - t.posted[0];
  if (span > 0) {
    row.avg_bps = static_cast<double>(size) * static_cast<double>(n) / span;
    row.msg_rate_mpps = static_cast<double>(n) / span / 1e6;
  }
  if (n > kMaxPeakIterations) return row;
  double best = span / static_cast<double>(n);
  auto consider = [&](uint64_t i, uint64_t j) {
    const double per = (t.completed[j] - t.posted[i]) / static_cast<double>(j - i + 1);
    if (per < best) best = per;
  };
  for (uint64_t i = 0; i < n; ++i) {
    // The signaled messages from i on: every cq_mod-th, and the last.
    for (uint64_t j = i / cq_mod * cq_mod + cq_mod - 1; j < n; j += cq_mod) consider(i, j);
    if (n % cq_mod != 0) consider(i, n - 1);  // the last, when the stride missed it
  }
  if (best > 0) row.peak_bps = static_cast<double>(size) / best;
  return row;
}

Row DurationRow(uint64_t size, uint64_t n, double seconds) {
  Row row;
  row.size = size;
  row.iterations = n;
  if (seconds > 0) {
    row.avg_bps = static_cast<double>(size) * static_cast<double>(n) / seconds;
    row.msg_rate_mpps = static_cast<double>(n) / seconds / 1e6;
  }
  return row;
}

std::string ResultHeader(bool gbits) {
  return gbits ? " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]\n"
               : " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n";
}

std::string FormatRow(const Row& row, bool gbits) {
  char line[256];
  std::snprintf(line, sizeof line, " %-7lu    %-10lu       %-7.2lf            %-7.2lf\t\t   %-7.6lf\n",
                static_cast<unsigned long>(row.size), static_cast<unsigned long>(row.iterations),
                InUnits(row.peak_bps, gbits), InUnits(row.avg_bps, gbits), row.msg_rate_mpps);
  return line;
}

}  // namespace leasefs::write_bw
