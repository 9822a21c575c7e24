// leasectl defrag of a fragmented file larger than one of its ranges, as a
// real child on a pseudo-terminal against a real daemon: the progress line
// (its first text exact), erased before the file's line, and the file one
// run afterwards with its bytes unchanged; nothing of it with -q.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "leasefs/ioctl.h"
#include "tests/tools/leasectl_util.h"
#include "tests/tools/tty_run.h"
#include "tools/common/progress.h"

namespace leasefs::testing {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// The file's runs of the block map.
uint64_t Runs(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  uint64_t runs = 0;
  leasefs_bmap b{};
  for (;;) {
    REQUIRE(ioctl(fd, LEASEFS_IOC_BMAP, &b) == 0);
    runs += b.count;
    if (!(b.flags & LEASEFS_BMAP_MORE)) break;
    b.start = b.next;
  }
  close(fd);
  return runs;
}

// `mib` MiB, each MiB its own extent: a 4 KiB block of another file is
// written after each, and that file is then removed.
std::string Fragmented(TestMount& m, const std::string& name, uint64_t mib) {
  const std::string path = m.path(name), spacer = m.path(name + ".spacer");
  std::string data;
  for (uint64_t i = 0; i < mib; ++i) {
    const std::string chunk(kMiB, static_cast<char>('a' + i % 26));
    WriteAt(path, i * kMiB, chunk);
    WriteAt(spacer, i * kBlock, Blocks("s"));
    data += chunk;
  }
  REQUIRE(unlink(spacer.c_str()) == 0);
  REQUIRE(ReadAll(path) == data);
  return data;
}

TEST_SUITE("progress_defrag") {
  TEST_CASE("leasectl defrag on a terminal: a line through the file, erased before its result") {
    MountOptions o;
    o.pool_size = "512M";
    TestMount m(o);
    // Three ranges of 64 MiB: 0, 64 and 128 MiB.
    const std::string data = Fragmented(m, "big", 130);
    const std::string big = m.path("big");
    REQUIRE(Runs(big) >= 130);
    const TtyRun tty = RunWithOutput({LeasectlBin(), "defrag", big}, Output::kTerminal, 200);
    REQUIRE(tty.code == 0);
    const ProgressDraws d = ParseProgress(tty.terminal);
    CHECK_MESSAGE(d.clean, tty.terminal);
    REQUIRE(!d.lines.empty());
    CHECK(d.lines[0] == "leasectl defrag: " + big + " 0.0/130.0 MiB 0%");
    CHECK(d.lines[0] == tools::FormatProgress("leasectl defrag", big, 0, 130 * kMiB,
                                              tools::ProgressUnit::kBytes, 0, 200));
    for (const std::string& l : d.lines) CHECK(l.rfind("leasectl defrag: " + big + " ", 0) == 0);
    // The result line, as with no terminal; the file is one run now.
    CHECK(d.printed.rfind(big + ": ", 0) == 0);
    CHECK(d.printed.find(" extents -> 1 extent, ") != std::string::npos);
    CHECK(d.printed.back() == '\n');
    CHECK(Runs(big) == 1);
    CHECK(ReadAll(big) == data);
  }

  TEST_CASE("leasectl defrag -q on a terminal, and with stdout captured: the result line only") {
    TestMount m;
    const std::string data = Fragmented(m, "f", 3);
    const std::string f = m.path("f");
    TtyRun r = RunWithOutput({LeasectlBin(), "defrag", "-q", f}, Output::kTerminal);
    CHECK(r.code == 0);
    CHECK(r.terminal.rfind(f + ": ", 0) == 0);
    CHECK(r.terminal.find(" extents -> 1 extent, ") != std::string::npos);
    CHECK(r.terminal.find('\r') == std::string::npos);
    r = RunWithOutput({LeasectlBin(), "defrag", f}, Output::kStdoutPiped);
    CHECK(r.code == 0);
    CHECK(r.terminal.empty());
    CHECK(r.out == f + ": 1 extent -> 1 extent, 0 blocks moved\n");
    CHECK(ReadAll(f) == data);
  }

  TEST_CASE("leasectl defrag: a failure is printed on a clean line, the next file still done") {
    TestMount m;
    const std::string d = m.path("d"), f = m.path("f");
    REQUIRE(mkdir(d.c_str(), 0755) == 0);
    Fragmented(m, "f", 2);
    const TtyRun r = RunWithOutput({LeasectlBin(), "defrag", d, f}, Output::kTerminal);
    CHECK(r.code == 1);
    const ProgressDraws p = ParseProgress(r.terminal);
    CHECK_MESSAGE(p.clean, r.terminal);
    CHECK(p.printed.rfind("leasectl: defrag: " + d + ": Is a directory\n" + f + ": ", 0) == 0);
    CHECK(p.lines == std::vector<std::string>{"leasectl defrag: " + f + " 0.0/2.0 MiB 0%"});
  }
}

}  // namespace
}  // namespace leasefs::testing
