// The frame of `leasectl top`: what one look at a mount found, laid out as
// lines for a terminal of a given size. Pure (data in, lines out, the clocks
// given), so that tests/tools/top_format_test.cc checks it without a mount;
// top.cc gathers the data and drives the terminal. docs/leasectl.md
// specifies the frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "leasefs/ioctl.h"
#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/pin_format.h"

namespace leasefs::leasectl {

// One look at a mount.
struct TopData {
  std::string mount;  // the path top watches, as given
  std::vector<LeaseRow> leases;
  bool have_pins = false;  // false: a daemon without pins
  std::vector<PinRow> pins;
  PinTotals pin_totals;
  bool have_dax = false;                        // false: a daemon without the DAX list
  std::vector<leasefs_dax_record> quarantined;  // the records with quarantined > 0
  uint64_t dax_records = 0;                     // records in use
  uint64_t quarantined_bytes = 0;               // the whole pool's quarantine
  std::vector<leasefs_event> events;            // the last events, oldest first
};

// Where and when the frame is shown.
struct TopView {
  size_t width = 0;           // characters a line may have; 0: no limit
  size_t height = 0;          // lines the frame may have; 0: no limit
  size_t max_events = 10;     // events shown at most (fewer where height says so)
  uint64_t monotonic_ns = 0;  // CLOCK_MONOTONIC now: the break countdowns
  uint64_t realtime_ns = 0;   // CLOCK_REALTIME now: the time of day in the header
  std::string status;         // appended to the first line when not empty
};

// How the terminal may colour a line; the text is the same either way.
enum class TopStyle {
  kPlain,
  kBanner,    // the first line
  kTitle,     // a section's name
  kColumns,   // a table's column names
  kBreaking,  // a lease being broken; a quarantined run
  kAlarm,     // a revoked lease; a fenced pin
};

struct TopLine {
  std::string text;
  TopStyle style = TopStyle::kPlain;
  bool operator==(const TopLine&) const = default;
};

// The frame: two header lines, then the sections LEASES, PINS, QUARANTINE
// and EVENTS, each after an empty line. The events are the last ones that
// fit in `height` (at most max_events); a frame taller than `height` is cut
// and ends with "(N more lines: the terminal is too small)". Every line goes
// through FitLine(width).
std::vector<TopLine> FormatTop(const TopData& data, const TopView& view);

// `line` safe to print and at most `width` characters (0: no limit): each
// control character (C0, DEL, C1) and each byte that is not part of valid
// UTF-8 becomes '?', so that a file's name cannot move the cursor or change
// the terminal's modes; then it is cut after `width` code points (one
// column each: wide characters are not told apart).
std::string FitLine(std::string_view line, size_t width);

}  // namespace leasefs::leasectl
