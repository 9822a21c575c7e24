// mkfs.leasefs and fsck.leasefs as real children on a pseudo-terminal: the
// progress line each draws there (the form of every line, fsck's phases in
// order, each first drawn at 0; every line erased before the tool prints
// anything, which is then byte for byte what a pipe gets), and nothing of
// it on pipes, with stdout alone captured, or with -q. The exact texts are
// progress_test.cc's. Pool files in /dev/shm, removed at the end. The
// binaries come from MKFS_LEASEFS_BIN and FSCK_LEASEFS_BIN.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/mount.h"
#include "tests/support/pool_file.h"
#include "tests/tools/tty_run.h"

namespace leasefs::testing {
namespace {

std::vector<std::string> Mkfs(const PoolFile& pool, const std::string& size,
                              std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {MkfsBin(), "--size", size};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(pool.path());
  return argv;
}

// True if every line is one of mkfs's: "mkfs.leasefs: writing metadata
// D/T UNIT P%" (an ETA after it), all with one total.
bool MkfsLines(const std::vector<std::string>& lines) {
  static const std::regex kLine(
      R"(mkfs\.leasefs: writing metadata \d+\.\d/(\d+\.\d (KiB|MiB|GiB)) \d+%( ETA \d+:\d\d)?)");
  std::string total;
  for (const std::string& l : lines) {
    std::smatch m;
    if (!std::regex_match(l, m, kLine)) return false;
    if (!total.empty() && m[1] != total) return false;
    total = m[1];
  }
  return !lines.empty();
}

// The phases the lines name, each once, in order ("fsck.leasefs: inodes
// 0/4095 0%" -> "inodes").
std::vector<std::string> Phases(const std::vector<std::string>& lines, const std::string& tool,
                                const std::vector<std::string>& known) {
  std::vector<std::string> phases;
  for (const std::string& l : lines) {
    std::string phase = "?";
    for (const std::string& k : known)
      if (l.rfind(tool + ": " + k + " ", 0) == 0) phase = k;
    if (phases.empty() || phases.back() != phase) phases.push_back(phase);
  }
  return phases;
}

TEST_SUITE("progress_tools") {
  TEST_CASE("mkfs.leasefs on a terminal: lines as it writes, erased before the summary") {
    // 8 GiB (sparse) with a fixed inode table: 128 MiB of it to write, two
    // pieces and more; and a small pool with the defaults.
    for (const auto& run :
         {std::pair<std::string, std::vector<std::string>>{"8G", {"-N", "524287"}}, {"64M", {}}}) {
      const std::string& size = run.first;
      const std::vector<std::string>& extra = run.second;
      CAPTURE(size);
      PoolFile pool("progress");
      const TtyRun tty = RunWithOutput(Mkfs(pool, size, extra), Output::kTerminal);
      REQUIRE(tty.code == 0);
      const ProgressDraws d = ParseProgress(tty.terminal);
      CHECK_MESSAGE(d.clean, tty.terminal);
      CHECK_MESSAGE(MkfsLines(d.lines), tty.terminal);
      // What follows the erased line is what a script gets on stdout.
      std::vector<std::string> again = extra;
      again.push_back("--force");
      const TtyRun piped = RunWithOutput(Mkfs(pool, size, again), Output::kPipes);
      REQUIRE(piped.code == 0);
      CHECK(piped.err.empty());
      CHECK(d.printed == piped.out);
      CHECK(piped.out.rfind("leasefs pool " + pool.path() + ": ", 0) == 0);
    }
  }

  TEST_CASE("mkfs.leasefs: no progress line with -q, on pipes, or with stdout captured") {
    PoolFile pool("progress");
    TtyRun r = RunWithOutput(Mkfs(pool, "8G", {"-q"}), Output::kTerminal);
    CHECK(r.code == 0);
    CHECK(r.terminal.empty());
    r = RunWithOutput(Mkfs(pool, "8G", {"--force"}), Output::kStdoutPiped);
    CHECK(r.code == 0);
    CHECK(r.terminal.empty());
    CHECK(r.out.rfind("leasefs pool " + pool.path() + ": 8192 MiB, ", 0) == 0);
    CHECK(r.out.find('\r') == std::string::npos);
    r = RunWithOutput(Mkfs(pool, "8G", {"--force"}), Output::kPipes);
    CHECK(r.code == 0);
    CHECK(r.err.empty());
    CHECK(r.terminal.empty());
    CHECK(r.out.find('\r') == std::string::npos);
  }

  TEST_CASE("mkfs.leasefs: an error is printed on a clean line") {
    PoolFile pool("progress");
    REQUIRE(RunWithOutput(Mkfs(pool, "64M"), Output::kPipes).code == 0);
    // Formatted already, no --force: refused before any metadata is written.
    const TtyRun r = RunWithOutput(Mkfs(pool, "64M"), Output::kTerminal);
    CHECK(r.code == 1);
    CHECK(r.terminal == "mkfs.leasefs: " + pool.path() +
                            " already holds a leasefs pool; use --force to overwrite it\n");
  }

  TEST_CASE("fsck.leasefs on a terminal: each phase drawn from 0, erased before the summary") {
    PoolFile pool("progress");
    REQUIRE(RunWithOutput(Mkfs(pool, "64M"), Output::kPipes).code == 0);
    const TtyRun tty = RunWithOutput({FsckBin(), pool.path()}, Output::kTerminal);
    REQUIRE(tty.code == 0);
    const ProgressDraws d = ParseProgress(tty.terminal);
    CHECK_MESSAGE(d.clean, tty.terminal);
    const std::vector<std::string> order = {"inodes", "directories", "link counts", "refcounts"};
    CHECK(Phases(d.lines, "fsck.leasefs", order) == order);
    // The first line of each phase is drawn at once, at 0; the others as the
    // clock allows.
    for (const std::string& phase : order) {
      CAPTURE(phase);
      const auto first = std::find_if(d.lines.begin(), d.lines.end(), [&](const std::string& l) {
        return l.rfind("fsck.leasefs: " + phase + " ", 0) == 0;
      });
      REQUIRE(first != d.lines.end());
      CHECK(std::regex_match(*first, std::regex("fsck\\.leasefs: " + phase + " 0/[1-9]\\d* 0%")));
    }
    const TtyRun piped = RunWithOutput({FsckBin(), pool.path()}, Output::kPipes);
    REQUIRE(piped.code == 0);
    CHECK(piped.err.empty());
    CHECK(d.printed == piped.out);
    CHECK(std::regex_match(piped.out,
                           std::regex(pool.path() + ": clean; 1/\\d+ inodes \\(1 directories, 0 "
                                                    "files\\), 0/\\d+ data blocks\n")));
  }

  TEST_CASE("fsck.leasefs: no progress line with -q, on pipes, or with stdout captured") {
    PoolFile pool("progress");
    REQUIRE(RunWithOutput(Mkfs(pool, "64M"), Output::kPipes).code == 0);
    TtyRun r = RunWithOutput({FsckBin(), "-q", pool.path()}, Output::kTerminal);
    CHECK(r.code == 0);
    CHECK(r.terminal.empty());
    r = RunWithOutput({FsckBin(), pool.path()}, Output::kStdoutPiped);
    CHECK(r.code == 0);
    CHECK(r.terminal.empty());
    CHECK(r.out.rfind(pool.path() + ": clean; ", 0) == 0);
    r = RunWithOutput({FsckBin(), "-n", pool.path()}, Output::kPipes);
    CHECK(r.code == 0);
    CHECK(r.terminal.empty());
    CHECK(r.err.empty());
    CHECK(r.out.rfind(pool.path() + ": clean; ", 0) == 0);
  }

  TEST_CASE("fsck.leasefs: an operational error is printed on a clean line") {
    PoolFile pool("progress");
    // Not a pool: 8 MiB of zeros.
    const int fd = open(pool.path().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 8 << 20) == 0);
    close(fd);
    const TtyRun r = RunWithOutput({FsckBin(), pool.path()}, Output::kTerminal);
    CHECK(r.code == 8);
    CHECK(r.terminal == "fsck.leasefs: " + pool.path() +
                            ": not a leasefs pool (no superblock magic in block 0 or 1)\n");
  }
}

}  // namespace
}  // namespace leasefs::testing
