// The fsx model on its own, and the exerciser on tmpfs (no leasefs): so that
// a failure of the mounted suite can be blamed on leasefs, not on the model.
#include "tests/fsx/model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>

#include <doctest/doctest.h>
#include <linux/falloc.h>

#include "tests/fsx/exerciser.h"

namespace leasefs::fsx {
namespace {

constexpr uint64_t B = kBlockSize;

FileModel Filled(uint64_t size, char base = 'a') {
  FileModel m;
  std::string s(size, '\0');
  for (uint64_t i = 0; i < size; ++i) s[i] = static_cast<char>(base + i % 23);
  m.Write(0, s);
  return m;
}

TEST_SUITE("fsx") {
  TEST_CASE(
      "FileModel: a write past end of file leaves zeros between; an empty one changes nothing") {
    FileModel m;
    m.Write(5, "xy");
    CHECK(m.bytes() == std::string("\0\0\0\0\0xy", 7));
    m.Write(100, "");
    CHECK(m.size() == 7);
  }

  TEST_CASE("FileModel: truncate and preallocation") {
    FileModel m = Filled(10);
    m.Truncate(4);
    m.Truncate(6);
    CHECK(m.bytes() == std::string("abcd\0\0", 6));
    m.Preallocate(2, 100, /*keep_size=*/true);
    CHECK(m.size() == 6);
    m.Preallocate(2, 100, /*keep_size=*/false);
    CHECK(m.size() == 102);
    CHECK(m.bytes().substr(0, 4) == "abcd");
  }

  TEST_CASE("FileModel: punch never changes the size; zero range grows it unless keep_size") {
    FileModel m = Filled(10);
    m.PunchHole(8, 100);
    CHECK(m.bytes() == std::string("abcdefgh\0\0", 10));
    m.ZeroRange(0, 2, false);
    m.ZeroRange(9, 10, true);
    CHECK(m.bytes() == std::string("\0\0cdefgh\0\0", 10));
    m.ZeroRange(9, 10, false);
    CHECK(m.size() == 19);
  }

  TEST_CASE("FileModel: collapse and insert move the tail") {
    FileModel m = Filled(3 * B);
    std::string third = m.bytes().substr(2 * B);
    m.Collapse(B, B);
    CHECK(m.size() == 2 * B);
    CHECK(m.bytes().substr(B) == third);
    m.Insert(B, 2 * B);
    CHECK(m.size() == 4 * B);
    CHECK(m.bytes().substr(B, 2 * B) == std::string(2 * B, '\0'));
    CHECK(m.bytes().substr(3 * B) == third);
  }

  TEST_CASE("FileModel: a copy within one file reads the source as it was") {
    FileModel m = Filled(8);  // abcdefgh
    m.CopyFrom(m, 0, 2, 6);
    CHECK(m.bytes() == "ababcdef");
    FileModel d = Filled(2, 'x');
    d.CopyFrom(m, 4, 6, 4);  // past d's end: a gap of zeros, then the bytes
    CHECK(d.bytes() == std::string("xy\0\0\0\0cdef", 10));
  }

  TEST_CASE("CollapseErrno: unaligned, empty, or reaching end of file is EINVAL") {
    CHECK(CollapseErrno(4 * B, B, B) == 0);
    CHECK(CollapseErrno(4 * B + 1, 3 * B, B) == 0);
    CHECK(CollapseErrno(4 * B, 3 * B, B) == EINVAL);  // ends at EOF
    CHECK(CollapseErrno(4 * B, 2 * B, 4 * B) == EINVAL);
    CHECK(CollapseErrno(4 * B, 1, B) == EINVAL);
    CHECK(CollapseErrno(4 * B, B, B + 1) == EINVAL);
    CHECK(CollapseErrno(4 * B, B, 0) == EINVAL);
  }

  TEST_CASE("InsertErrno: inside the file, aligned, within the size limit") {
    CHECK(InsertErrno(B + 1, B, B) == 0);
    CHECK(InsertErrno(B, B, B) == EINVAL);  // at EOF
    CHECK(InsertErrno(4 * B, B + 1, B) == EINVAL);
    CHECK(InsertErrno(4 * B, B, 100) == EINVAL);
    CHECK(InsertErrno(4 * B, 0, kMaxFileSize) == EFBIG);
  }

  TEST_CASE("Clone: the remap rules") {
    SUBCASE("whole blocks inside the source, anywhere in the destination") {
      CHECK(Clone(4 * B, B, 2 * B, 0, 5 * B, false).err == 0);
      CHECK(Clone(4 * B, B, 2 * B, 10 * B, 5 * B, false).len == 2 * B);
    }
    SUBCASE("unaligned offsets") {
      CHECK(Clone(4 * B, 1, B, 0, 0, false).err == EINVAL);
      CHECK(Clone(4 * B, 0, B, 0, 7, false).err == EINVAL);
    }
    SUBCASE("past the source's end of file") {
      CHECK(Clone(4 * B, 3 * B, 2 * B, 0, 0, false).err == EINVAL);
      CHECK(Clone(4 * B, 4 * B, B, 0, 0, false).err == EINVAL);
    }
    SUBCASE("an unaligned length only at the source's end of file") {
      CHECK(Clone(4 * B + 10, B, B + 1, 0, 0, false).err == EINVAL);
      CHECK(Clone(4 * B + 10, 4 * B, 10, 0, 0, false).err == 0);
      // ... and only when it reaches the destination's end of file too
      CHECK(Clone(4 * B + 10, 4 * B, 10, B + 10, B, false).err == 0);
      CHECK(Clone(4 * B + 10, 4 * B, 10, B + 11, B, false).err == EINVAL);
    }
    SUBCASE("length 0: to the source's end of file") {
      CHECK(Clone(4 * B + 10, 2 * B, 0, 0, 0, false).len == 2 * B + 10);
      CHECK(Clone(4 * B + 10, 2 * B, 0, 3 * B, 0, false).err == EINVAL);
      CHECK(Clone(4 * B, 4 * B, 0, 0, 0, false).len == 0);
    }
    SUBCASE("within one file the ranges, rounded to blocks, must not overlap") {
      CHECK(Clone(8 * B, 0, 2 * B, 8 * B, 2 * B, true).err == 0);
      CHECK(Clone(8 * B, 0, 2 * B, 8 * B, B, true).err == EINVAL);
      CHECK(Clone(8 * B, 2 * B, 2 * B, 8 * B, B, true).err == EINVAL);
      CHECK(Clone(3 * B + 1, 3 * B, 1, 3 * B + 1, 3 * B, true).err == EINVAL);
      CHECK(Clone(3 * B + 1, 3 * B, 1, 3 * B + 1, 4 * B, true).err == 0);
    }
  }

  TEST_CASE("CopyRange: clamped at the source's end of file; no overlap within one file") {
    CHECK(CopyRange(100, 10, 50, 0, false).len == 50);
    CHECK(CopyRange(100, 90, 50, 0, false).len == 10);
    CHECK(CopyRange(100, 100, 50, 0, false).len == 0);
    CHECK(CopyRange(100, 200, 50, 0, false).len == 0);
    CHECK(CopyRange(100, 0, 50, 50, true).err == 0);
    CHECK(CopyRange(100, 0, 50, 49, true).err == EINVAL);
    CHECK(CopyRange(100, 90, 50, 100, true).err == 0);  // clamped to 10 bytes first
  }

  // A fresh directory in /dev/shm (tmpfs), removed at the end.
  struct ShmDir {
    ShmDir() {
      char t[] = "/dev/shm/leasefs-fsx-XXXXXX";
      REQUIRE(mkdtemp(t) != nullptr);
      path = t;
    }
    ~ShmDir() { std::filesystem::remove_all(path); }
    std::string path;
  };

  Options TmpfsOptions(const std::string& dir, uint64_t seed) {
    Options o;
    o.dir = dir;
    o.seed = seed;
    o.ops = 2000;
    o.max_size = 64 << 10;
    // What tmpfs has: no ZERO_RANGE, no collapse/insert/unshare, no reflink.
    o.mask = *ParseOps(
        "write,read,truncate,falloc,falloc-keep,punch,copy,exchange,tmpfile-replace,xattr,"
        "remount");
    o.kernel_ops = true;
    return o;
  }

  TEST_CASE("Exerciser: tmpfs agrees with the model on the operations it has") {
    ShmDir d;
    for (uint64_t seed : {1, 2, 3}) {
      CAPTURE(seed);
      RunResult r = Exerciser(TmpfsOptions(d.path, seed)).Run();
      INFO(r.report);
      CHECK(r.ok);
      CHECK(r.steps == 2000);
      CHECK(r.op_counts[static_cast<int>(Op::kCopy)] > 0);
      CHECK(r.refused > 0);  // overlapping copies within one file
    }
  }

  TEST_CASE("Exerciser: the same seed runs the same steps") {
    ShmDir d;
    RunResult a = Exerciser(TmpfsOptions(d.path, 7)).Run();
    RunResult b = Exerciser(TmpfsOptions(d.path, 7)).Run();
    for (int i = 0; i < static_cast<int>(Op::kCount); ++i) CHECK(a.op_counts[i] == b.op_counts[i]);
    CHECK(a.refused == b.refused);
  }

  TEST_CASE("Exerciser: a byte changed behind its back is reported with the step and the log") {
    ShmDir d;
    Options o = TmpfsOptions(d.path, 11);
    o.remount_every = 50;
    std::string victim = d.path + "/fsx.1";
    o.remount = [&]() -> std::string {
      int fd = open(victim.c_str(), O_WRONLY);
      if (fd < 0) return "open failed";
      // Past any end of file, so the size changes too: always detectable.
      bool ok = pwrite(fd, "!", 1, 70000) == 1;
      close(fd);
      return ok ? "" : "pwrite failed";
    };
    RunResult r = Exerciser(o).Run();
    CHECK_FALSE(r.ok);
    CHECK(r.steps == 49);
    CHECK(r.report.find("seed 11, step 50") != std::string::npos);
    CHECK(r.report.find("f1: expected size") != std::string::npos);
    CHECK(r.report.find("remount = OK") != std::string::npos);
    CHECK(r.report.find("last 20 operations") != std::string::npos);
  }

  TEST_CASE("ParseOps: names, and the unknown one") {
    CHECK(ParseOps("write,clone") == (Bit(Op::kWrite) | Bit(Op::kClone)));
    std::string bad;
    CHECK_FALSE(ParseOps("write,klone", &bad));
    CHECK(bad == "klone");
    CHECK(ParseOps(AllOpNames()) == kAllOps);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::fsx
