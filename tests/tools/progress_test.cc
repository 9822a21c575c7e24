// The progress line of the tools (tools/common/progress.h): the exact text
// for each kind of amount, the ETA, fitting the terminal's width, and the
// bytes ProgressLine writes, redraws limited to ten a second by an injected
// clock.
#include "tools/common/progress.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include <doctest/doctest.h>

namespace leasefs::tools {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;

TEST_SUITE("progress") {
  TEST_CASE(
      "FormatProgress: a count, its percentage rounded down, and no ETA in the first second") {
    CHECK(FormatProgress("fsck.leasefs", "inodes", 1048576, 4194304, ProgressUnit::kCount, 0, 80) ==
          "fsck.leasefs: inodes 1048576/4194304 25%");
    CHECK(FormatProgress("fsck.leasefs", "refcounts", 2, 3, ProgressUnit::kCount, kSec - 1, 80) ==
          "fsck.leasefs: refcounts 2/3 66%");
    CHECK(FormatProgress("fsck.leasefs", "inodes", 0, 4095, ProgressUnit::kCount, 0, 80) ==
          "fsck.leasefs: inodes 0/4095 0%");
    CHECK(FormatProgress("fsck.leasefs", "inodes", 4095, 4095, ProgressUnit::kCount, 5 * kSec,
                         80) == "fsck.leasefs: inodes 4095/4095 100%");
  }

  TEST_CASE("FormatProgress: the ETA is the time so far scaled to what is left") {
    // 2 s for a quarter: 6 s for the rest.
    CHECK(FormatProgress("fsck.leasefs", "inodes", 1048576, 4194304, ProgressUnit::kCount, 2 * kSec,
                         80) == "fsck.leasefs: inodes 1048576/4194304 25% ETA 0:06");
    // 1 h for a third: 2 h left.
    CHECK(FormatProgress("t", "p", 1, 3, ProgressUnit::kCount, 3600 * kSec, 80) ==
          "t: p 1/3 33% ETA 2:00:00");
    // Nothing done yet: no pace to go by.
    CHECK(FormatProgress("t", "p", 0, 3, ProgressUnit::kCount, 10 * kSec, 80) == "t: p 0/3 0%");
  }

  TEST_CASE("FormatProgress: bytes in the unit the total needs, one decimal") {
    CHECK(FormatProgress("mkfs.leasefs", "writing metadata", 3 * kGiB / 2, 16 * kGiB,
                         ProgressUnit::kBytes, 0,
                         80) == "mkfs.leasefs: writing metadata 1.5/16.0 GiB 9%");
    CHECK(FormatProgress("mkfs.leasefs", "writing metadata", 64 * kMiB, 260 * kMiB + kMiB / 10,
                         ProgressUnit::kBytes, 0,
                         80) == "mkfs.leasefs: writing metadata 64.0/260.1 MiB 24%");
    CHECK(FormatProgress("t", "p", 100 << 10, 512 << 10, ProgressUnit::kBytes, 0, 80) ==
          "t: p 100.0/512.0 KiB 19%");
    CHECK(FormatProgress("t", "p", kGiB << 10, 2 * (kGiB << 10), ProgressUnit::kBytes, 0, 80) ==
          "t: p 1.0/2.0 TiB 50%");
  }

  TEST_CASE("FormatProgress: no total, no percentage; more than the total is 100%") {
    CHECK(FormatProgress("t", "p", 5, 0, ProgressUnit::kCount, 3 * kSec, 80) == "t: p 5");
    CHECK(FormatProgress("t", "p", 7, 5, ProgressUnit::kCount, 3 * kSec, 80) == "t: p 7/5 100%");
    // Near the top of the range: no overflow in the percentage or the ETA.
    CHECK(FormatProgress("t", "p", UINT64_MAX / 2, UINT64_MAX, ProgressUnit::kCount, 10 * kSec,
                         80) == "t: p 9223372036854775807/18446744073709551615 49% ETA 0:10");
  }

  TEST_CASE("FormatProgress: fits in one column less than the terminal's width") {
    // The phase gives way first, from its start (the end of a path says more).
    const std::string path = "/mnt/leasefs/projects/big/disk.img";
    CHECK(FormatProgress("leasectl defrag", path, kGiB, 8 * kGiB, ProgressUnit::kBytes, 0, 50) ==
          "leasectl defrag: .../big/disk.img 1.0/8.0 GiB 12%");
    CHECK(FormatProgress("leasectl defrag", path, kGiB, 8 * kGiB, ProgressUnit::kBytes, 0, 200) ==
          "leasectl defrag: " + path + " 1.0/8.0 GiB 12%");
    // Never in the middle of a UTF-8 character.
    CHECK(FormatProgress("t", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 1, 2,
                         ProgressUnit::kCount, 0, 20) == "t: ...\xc3\xa9\xc3\xa9 1/2 50%");
    // No room even for the numbers: the line is cut.
    CHECK(FormatProgress("fsck.leasefs", "inodes", 1, 2, ProgressUnit::kCount, 0, 10) ==
          "fsck.leas");
    CHECK(FormatProgress("fsck.leasefs", "inodes", 1, 2, ProgressUnit::kCount, 0, 0).empty());
  }

  TEST_CASE("FormatDuration: minutes and seconds, hours from one hour on") {
    CHECK(FormatDuration(0) == "0:00");
    CHECK(FormatDuration(59 * kSec + 999 * kMs) == "0:59");
    CHECK(FormatDuration(61 * kSec) == "1:01");
    CHECK(FormatDuration(3599 * kSec) == "59:59");
    CHECK(FormatDuration(3600 * kSec) == "1:00:00");
    CHECK(FormatDuration(3723 * kSec) == "1:02:03");
    CHECK(FormatDuration(-5 * kSec) == "0:00");
  }

  // A ProgressLine writing into a pipe, with a clock the test moves.
  struct Harness {
    int fds[2] = {-1, -1};
    int64_t now = 1000 * kSec;
    Harness() { REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0); }
    ~Harness() {
      close(fds[0]);
      close(fds[1]);
    }
    ProgressLine::Io Io() {
      ProgressLine::Io io;
      io.fd = fds[1];
      io.now_ns = [this] { return now; };
      io.columns = [] { return size_t{80}; };
      return io;
    }
    // What was written since the last call.
    std::string Written() {
      std::string s;
      char buf[4096];
      for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;)
        s.append(buf, static_cast<size_t>(n));
      return s;
    }
  };

  TEST_CASE(
      "ProgressLine: draws a phase at once, then at most every 100 ms, and erases at the end") {
    Harness h;
    {
      ProgressLine line("fsck.leasefs", true, h.Io());
      line.Update("inodes", 0, 8192);
      CHECK(h.Written() == "\rfsck.leasefs: inodes 0/8192 0%\x1b[K");
      h.now += 99 * kMs;
      line.Update("inodes", 4096, 8192);  // too soon
      CHECK(h.Written().empty());
      h.now += 1 * kMs;
      line.Update("inodes", 4096, 8192);
      CHECK(h.Written() == "\rfsck.leasefs: inodes 4096/8192 50%\x1b[K");
      h.now += 200 * kMs;
      line.Update("inodes", 4096, 8192);  // the same text: nothing to redraw
      CHECK(h.Written().empty());
      // A new phase draws at once, and its ETA counts from its own start.
      h.now += 1 * kMs;
      line.Update("refcounts", 0, 100);
      CHECK(h.Written() == "\rfsck.leasefs: refcounts 0/100 0%\x1b[K");
      h.now += 2 * kSec;
      line.Update("refcounts", 50, 100);
      CHECK(h.Written() == "\rfsck.leasefs: refcounts 50/100 50% ETA 0:02\x1b[K");
      line.Clear();
      CHECK(h.Written() == "\r\x1b[K");
      line.Clear();  // nothing drawn: nothing to erase
      CHECK(h.Written().empty());
      // After Clear the same phase starts afresh: drawn at once, ETA from now.
      line.Update("refcounts", 60, 100);
      CHECK(h.Written() == "\rfsck.leasefs: refcounts 60/100 60%\x1b[K");
    }
    CHECK(h.Written() == "\r\x1b[K");  // the destructor erases the line
  }

  TEST_CASE("ProgressLine: disabled, it writes nothing and its hook is empty") {
    Harness h;
    {
      ProgressLine line("mkfs.leasefs", false, h.Io());
      CHECK_FALSE(line.enabled());
      line.Update("writing metadata", 1, 2);
      line.Clear();
      CHECK_FALSE(line.Hook("writing metadata"));
    }
    CHECK(h.Written().empty());
  }

  TEST_CASE("ProgressLine: the hook updates the line with its phase and unit") {
    Harness h;
    ProgressLine line("mkfs.leasefs", true, h.Io());
    const auto hook = line.Hook("writing metadata", ProgressUnit::kBytes);
    REQUIRE(hook);
    hook(64 * kMiB, 128 * kMiB);
    CHECK(h.Written() == "\rmkfs.leasefs: writing metadata 64.0/128.0 MiB 50%\x1b[K");
    h.now += 100 * kMs;
    hook(128 * kMiB, 128 * kMiB);
    CHECK(h.Written() == "\rmkfs.leasefs: writing metadata 128.0/128.0 MiB 100%\x1b[K");
  }

  TEST_CASE("ProgressLine: the terminal's width is asked at each draw") {
    Harness h;
    size_t columns = 80;
    ProgressLine::Io io = h.Io();
    io.columns = [&columns] { return columns; };
    ProgressLine line("leasectl defrag", true, io);
    line.Update("/mnt/leasefs/projects/big/disk.img", kGiB, 8 * kGiB, ProgressUnit::kBytes);
    CHECK(h.Written() ==
          "\rleasectl defrag: /mnt/leasefs/projects/big/disk.img 1.0/8.0 GiB 12%\x1b[K");
    columns = 50;  // the window got narrower (SIGWINCH is not needed)
    h.now += 100 * kMs;
    line.Update("/mnt/leasefs/projects/big/disk.img", 2 * kGiB, 8 * kGiB, ProgressUnit::kBytes);
    CHECK(h.Written() == "\rleasectl defrag: .../big/disk.img 2.0/8.0 GiB 25%\x1b[K");
  }
}

}  // namespace
}  // namespace leasefs::tools
