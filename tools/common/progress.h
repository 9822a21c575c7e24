// A progress line for the tools' long work: mkfs of a big pool, fsck of a
// full one, defrag of a big file (docs/progress.md).
//
// One line on the terminal, redrawn in place ("\r", the text, erase to the
// end of the line) at most ten times a second, and erased when the work is
// done, so that what the tool prints next starts on a clean line. It names
// the phase, how much of it is done out of how much, the percentage and,
// once a phase has run a second, the time left at its pace so far:
//
//   fsck.leasefs: inodes 1048576/4194304 25% ETA 0:03
//   mkfs.leasefs: writing the inode table 1.5/16.0 GiB 9% ETA 0:41
//
// A tool draws it only where a person watches: both stdout and stderr are
// terminals (a script that captures either sees nothing) and it was not
// told to be quiet (ProgressLine::Wanted).
//
// Thread safety: none; one thread updates a line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace leasefs::tools {

enum class ProgressUnit {
  kCount,  // "1048576/4194304"
  kBytes,  // "1.5/16.0 GiB": the unit chosen by the total
};

// The text of one progress line, without control characters, at most
// `columns` - 1 bytes long (a line as wide as the terminal would wrap on
// some terminals, and "\r" would then redraw only its last row). A phase
// too long for that is shortened at its start to "...", which keeps the
// end of a path. `elapsed_ns`: time spent in this phase so far; the ETA is
// shown from one second on, while 0 < done < total. total 0: no percentage.
std::string FormatProgress(std::string_view tool, std::string_view phase, uint64_t done,
                           uint64_t total, ProgressUnit unit, int64_t elapsed_ns, size_t columns);

// "0:07", "12:34", "1:02:03" (hours, minutes, seconds; rounded down).
std::string FormatDuration(int64_t ns);

// CLOCK_MONOTONIC in nanoseconds.
int64_t MonotonicNs();

class ProgressLine {
 public:
  // Where the line goes and what it reads: tests inject a pipe, a clock and
  // a width.
  struct Io {
    int fd = 2;
    std::function<int64_t()> now_ns = MonotonicNs;
    // The terminal's width; 80 when it cannot be had.
    std::function<size_t()> columns;  // empty: TIOCGWINSZ on fd
  };
  static constexpr int64_t kIntervalNs = 100'000'000;  // at most 10 draws a second

  // `tool` starts every line ("fsck.leasefs"). Draws nothing unless
  // `enabled`. Without `io`: on stderr, CLOCK_MONOTONIC, its width.
  ProgressLine(std::string tool, bool enabled);
  ProgressLine(std::string tool, bool enabled, Io io);
  // Erases the line if one is drawn.
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // True when a person is watching: !quiet, and stdout and stderr are both
  // terminals.
  static bool Wanted(bool quiet);

  bool enabled() const noexcept { return enabled_; }

  // `done` of the phase's `total` are done. The first update of a phase
  // draws at once; later ones redraw when kIntervalNs has passed since the
  // last draw and the text changed.
  void Update(std::string_view phase, uint64_t done, uint64_t total,
              ProgressUnit unit = ProgressUnit::kCount);
  // Erases the line if one is drawn ("\r", erase to the end of the line).
  // The next Update starts a new phase.
  void Clear();

  // A function for the engine's progress hooks (done, total) that updates
  // this line with `phase`; an empty function when the line is disabled, so
  // that the engine does not even call it.
  std::function<void(uint64_t, uint64_t)> Hook(std::string phase,
                                               ProgressUnit unit = ProgressUnit::kCount);

 private:
  void Write(const std::string& bytes);
  size_t Columns() const;

  const std::string tool_;
  const bool enabled_;
  const Io io_;
  std::string phase_;
  bool in_phase_ = false;
  int64_t phase_start_ns_ = 0;
  int64_t last_draw_ns_ = 0;
  std::string shown_;  // the text on the terminal now; empty: nothing drawn
};

}  // namespace leasefs::tools
