// Timestamps on a mounted leasefs: which operations set atime, mtime and
// ctime, of which inodes, and utimensat's UTIME_NOW / UTIME_OMIT / explicit
// nanosecond times.
//
// "Changed" is checked by making the clock tick (TickClock) between the old
// and the new value; "now" means within the interval the operation ran in,
// with a margin for the kernel's coarse clock.
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

int64_t NowNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return Nanos(ts);
}

constexpr int64_t kSlackNs = 50'000'000;  // coarse clock granularity and skew

struct Times {
  int64_t a, m, c;
};

Times TimesOf(const std::string& path) {
  struct stat st = Lstat(path);
  return {Nanos(st.st_atim), Nanos(st.st_mtim), Nanos(st.st_ctim)};
}

bool Within(int64_t t, int64_t lo, int64_t hi) { return t >= lo - kSlackNs && t <= hi + kSlackNs; }

// Sets atime and mtime of `path` to fixed old values (so later changes show).
void SetOld(const std::string& path) {
  struct timespec ts[2] = {{1000000000, 111}, {1000000000, 222}};
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

TEST_SUITE("fuse.times") {
  TEST_CASE(
      "Times: creating a file sets atime = mtime = ctime = now, and the parent's mtime/ctime") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    SetOld(fs.path("d"));
    TickClock();
    const int64_t t0 = NowNs();
    REQUIRE(WriteFile(fs.path("d/f"), "") == "");
    const int64_t t1 = NowNs();
    Times f = TimesOf(fs.path("d/f"));
    CHECK(Within(f.a, t0, t1));
    CHECK(f.a == f.m);
    CHECK(f.m == f.c);
    Times d = TimesOf(fs.path("d"));
    CHECK(Within(d.m, t0, t1));
    CHECK(d.m == d.c);
    CHECK(d.a == 1000000000LL * 1000000000 + 111);
  }

  TEST_CASE("Times: mkdir and symlink set all three times and the parent's mtime/ctime") {
    TestFs fs;
    SetOld(fs.root());
    TickClock();
    const int64_t t0 = NowNs();
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(symlink("target", fs.path("l").c_str()) == 0);
    const int64_t t1 = NowNs();
    for (const char* n : {"d", "l"}) {
      CAPTURE(n);
      Times t = TimesOf(fs.path(n));
      CHECK(Within(t.c, t0, t1));
      CHECK(t.a == t.m);
      CHECK(t.m == t.c);
    }
    CHECK(Within(TimesOf(fs.root()).m, t0, t1));
  }

  TEST_CASE("Times: write updates mtime and ctime but not atime") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    SetOld(fs.path("f"));
    const Times before = TimesOf(fs.path("f"));
    TickClock();
    const int64_t t0 = NowNs();
    {
      Fd fd(open(fs.path("f").c_str(), O_WRONLY));
      REQUIRE(PwriteAll(fd.get(), "xyz", 1) == "");
    }
    const int64_t t1 = NowNs();
    Times after = TimesOf(fs.path("f"));
    CHECK(after.a == before.a);
    CHECK(Within(after.m, t0, t1));
    CHECK(after.c > before.c);
    CHECK(after.m == after.c);
  }

  TEST_CASE("Times: writing a file leaves its directory's times alone") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d/f"), "abc") == "");
    const Times d0 = TimesOf(fs.path("d"));
    TickClock();
    REQUIRE(WriteFile(fs.path("d/f"), "longer content") == "");
    REQUIRE(truncate(fs.path("d/f").c_str(), 2) == 0);
    const Times d1 = TimesOf(fs.path("d"));
    CHECK(d1.m == d0.m);
    CHECK(d1.c == d0.c);
  }

  TEST_CASE("Times: read changes neither mtime nor ctime") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    const Times before = TimesOf(fs.path("f"));
    TickClock();
    CHECK(ReadFile(fs.path("f")) == "abc");
    Times after = TimesOf(fs.path("f"));
    CHECK(after.m == before.m);
    CHECK(after.c == before.c);
  }

  TEST_CASE("Times: truncate to a new size updates mtime and ctime") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "abcdef") == "");
    SetOld(fs.path("f"));
    const Times before = TimesOf(fs.path("f"));
    TickClock();
    REQUIRE(truncate(fs.path("f").c_str(), 2) == 0);
    Times after = TimesOf(fs.path("f"));
    CHECK(after.m > before.m);
    CHECK(after.c > before.c);
    CHECK(after.a == before.a);
  }

  TEST_CASE("Times: O_TRUNC of a non-empty file updates mtime and ctime") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "abcdef") == "");
    SetOld(fs.path("f"));
    const Times before = TimesOf(fs.path("f"));
    TickClock();
    Fd fd(open(fs.path("f").c_str(), O_WRONLY | O_TRUNC));
    REQUIRE(fd.ok());
    Times after = TimesOf(fs.path("f"));
    CHECK(after.m > before.m);
    CHECK(after.c > before.c);
  }

  TEST_CASE("Times: chmod and chown update ctime only") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    SetOld(fs.path("f"));
    Times before = TimesOf(fs.path("f"));
    TickClock();
    REQUIRE(chmod(fs.path("f").c_str(), 0600) == 0);
    Times after = TimesOf(fs.path("f"));
    CHECK(after.a == before.a);
    CHECK(after.m == before.m);
    CHECK(after.c > before.c);
    before = after;
    TickClock();
    REQUIRE(chown(fs.path("f").c_str(), 1000, 1000) == 0);
    after = TimesOf(fs.path("f"));
    CHECK(after.a == before.a);
    CHECK(after.m == before.m);
    CHECK(after.c > before.c);
  }

  TEST_CASE("Times: rename updates the moved inode's ctime and both parents' mtime/ctime") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("p1").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("p2").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("p1/f"), "x") == "");
    REQUIRE(WriteFile(fs.path("p1/other"), "y") == "");
    for (const char* n : {"p1", "p2", "p1/f"}) SetOld(fs.path(n));
    const Times f0 = TimesOf(fs.path("p1/f")), p10 = TimesOf(fs.path("p1")),
                p20 = TimesOf(fs.path("p2")), o0 = TimesOf(fs.path("p1/other"));
    TickClock();
    const int64_t t0 = NowNs();
    REQUIRE(rename(fs.path("p1/f").c_str(), fs.path("p2/f").c_str()) == 0);
    const int64_t t1 = NowNs();
    const Times f1 = TimesOf(fs.path("p2/f")), p11 = TimesOf(fs.path("p1")),
                p21 = TimesOf(fs.path("p2")), o1 = TimesOf(fs.path("p1/other"));
    CHECK(Within(f1.c, t0, t1));
    CHECK(f1.m == f0.m);
    CHECK(f1.a == f0.a);
    CHECK(Within(p11.m, t0, t1));
    CHECK(Within(p11.c, t0, t1));
    CHECK(Within(p21.m, t0, t1));
    CHECK(Within(p21.c, t0, t1));
    CHECK(p11.a == p10.a);
    CHECK(p21.a == p20.a);
    CHECK(o1.c == o0.c);  // bystanders keep their times
  }

  TEST_CASE("Times: rename over a file updates the replaced inode's ctime") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    REQUIRE(WriteFile(fs.path("b"), "b") == "");
    REQUIRE(link(fs.path("b").c_str(), fs.path("b2").c_str()) == 0);
    const Times b0 = TimesOf(fs.path("b2"));
    TickClock();
    REQUIRE(rename(fs.path("a").c_str(), fs.path("b").c_str()) == 0);
    const Times b1 = TimesOf(fs.path("b2"));
    CHECK(b1.c > b0.c);
    CHECK(b1.m == b0.m);
  }

  TEST_CASE("Times: RENAME_EXCHANGE updates both inodes' ctime") {
    TestFs fs;
    // ext4 and tmpfs do; xfs leaves exchanged files' ctime alone. We follow ext4.
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs does not touch the exchanged inodes");
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    REQUIRE(WriteFile(fs.path("b"), "b") == "");
    const Times a0 = TimesOf(fs.path("a")), b0 = TimesOf(fs.path("b"));
    TickClock();
    REQUIRE(syscall(SYS_renameat2, AT_FDCWD, fs.path("a").c_str(), AT_FDCWD, fs.path("b").c_str(),
                    RENAME_EXCHANGE) == 0);
    // Names swapped: "b" is the old a.
    CHECK(TimesOf(fs.path("b")).c > a0.c);
    CHECK(TimesOf(fs.path("a")).c > b0.c);
    CHECK(TimesOf(fs.path("b")).m == a0.m);
  }

  TEST_CASE("Times: rename within one directory updates that directory's mtime/ctime") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d/a"), "x") == "");
    SetOld(fs.path("d"));
    const Times d0 = TimesOf(fs.path("d"));
    TickClock();
    REQUIRE(rename(fs.path("d/a").c_str(), fs.path("d/b").c_str()) == 0);
    const Times d1 = TimesOf(fs.path("d"));
    CHECK(d1.m > d0.m);
    CHECK(d1.c > d0.c);
  }

  TEST_CASE("Times: link and unlink update the inode's ctime and the directory's mtime/ctime") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    SetOld(fs.path("f"));
    SetOld(fs.path("d"));
    Times f0 = TimesOf(fs.path("f")), d0 = TimesOf(fs.path("d"));
    TickClock();
    REQUIRE(link(fs.path("f").c_str(), fs.path("d/g").c_str()) == 0);
    Times f1 = TimesOf(fs.path("f")), d1 = TimesOf(fs.path("d"));
    CHECK(f1.c > f0.c);
    CHECK(f1.m == f0.m);
    CHECK(d1.m > d0.m);
    CHECK(d1.c > d0.c);
    TickClock();
    REQUIRE(unlink(fs.path("d/g").c_str()) == 0);
    Times f2 = TimesOf(fs.path("f")), d2 = TimesOf(fs.path("d"));
    CHECK(f2.c > f1.c);
    CHECK(f2.m == f0.m);
    CHECK(d2.m > d1.m);
    CHECK(d2.c > d1.c);
  }

  TEST_CASE("Times: rmdir updates the parent's mtime and ctime") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("p").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("p/d").c_str(), 0755) == 0);
    SetOld(fs.path("p"));
    const Times p0 = TimesOf(fs.path("p"));
    TickClock();
    REQUIRE(rmdir(fs.path("p/d").c_str()) == 0);
    const Times p1 = TimesOf(fs.path("p"));
    CHECK(p1.m > p0.m);
    CHECK(p1.c > p0.c);
  }

  TEST_CASE("Utimensat: explicit times keep nanoseconds, and ctime becomes now") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    struct timespec ts[2] = {{1234567890, 123456789}, {1500000000, 987654321}};
    const int64_t t0 = NowNs();
    REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)) == "OK");
    const int64_t t1 = NowNs();
    struct stat st = Lstat(fs.path("f"));
    CHECK(st.st_atim.tv_sec == 1234567890);
    CHECK(st.st_atim.tv_nsec == 123456789);
    CHECK(st.st_mtim.tv_sec == 1500000000);
    CHECK(st.st_mtim.tv_nsec == 987654321);
    CHECK(Within(Nanos(st.st_ctim), t0, t1));
  }

  TEST_CASE("Utimensat: times before 1970 and after 2038 round-trip") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    // 1960-01-01 and 2100-01-01. Both fit ext4 (256-byte inodes), xfs
    // (bigtime) and leasefs's int64 nanoseconds.
    struct timespec ts[2] = {{-315619200, 5}, {4102444800, 999999999}};
    REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)) == "OK");
    struct stat st = Lstat(fs.path("f"));
    CHECK(st.st_atim.tv_sec == -315619200);
    CHECK(st.st_atim.tv_nsec == 5);
    CHECK(st.st_mtim.tv_sec == 4102444800);
    CHECK(st.st_mtim.tv_nsec == 999999999);
  }

  TEST_CASE("Utimensat: UTIME_NOW sets now; UTIME_OMIT leaves that time alone") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    SetOld(fs.path("f"));
    TickClock();
    SUBCASE("atime now, mtime omitted") {
      struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
      const int64_t t0 = NowNs();
      REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)) == "OK");
      const int64_t t1 = NowNs();
      Times t = TimesOf(fs.path("f"));
      CHECK(Within(t.a, t0, t1));
      CHECK(t.m == 1000000000LL * 1000000000 + 222);
      CHECK(Within(t.c, t0, t1));
    }
    SUBCASE("atime omitted, mtime explicit") {
      struct timespec ts[2] = {{0, UTIME_OMIT}, {42, 42}};
      REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)) == "OK");
      Times t = TimesOf(fs.path("f"));
      CHECK(t.a == 1000000000LL * 1000000000 + 111);
      CHECK(t.m == 42000000042LL);
    }
    SUBCASE("both now (NULL times)") {
      const int64_t t0 = NowNs();
      REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), nullptr, 0)) == "OK");
      const int64_t t1 = NowNs();
      Times t = TimesOf(fs.path("f"));
      CHECK(Within(t.a, t0, t1));
      CHECK(Within(t.m, t0, t1));
      CHECK(t.a == t.m);
    }
    SUBCASE("both omitted changes nothing, not even ctime") {
      const Times before = TimesOf(fs.path("f"));
      struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
      REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)) == "OK");
      Times t = TimesOf(fs.path("f"));
      CHECK(t.a == before.a);
      CHECK(t.m == before.m);
      CHECK(t.c == before.c);
    }
  }

  TEST_CASE("Utimensat: an out-of-range tv_nsec is EINVAL") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    struct timespec ts[2] = {{0, 1000000000}, {0, 0}};
    CHECK(SYS(utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0)) == "EINVAL");
    CHECK(SYS(utimensat(AT_FDCWD, fs.path("missing").c_str(), nullptr, 0)) == "ENOENT");
  }

  TEST_CASE("Utimensat: AT_SYMLINK_NOFOLLOW sets the symlink's own times") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    const Times f0 = TimesOf(fs.path("f"));
    struct timespec ts[2] = {{7, 7}, {8, 8}};
    REQUIRE(SYS(utimensat(AT_FDCWD, fs.path("l").c_str(), ts, AT_SYMLINK_NOFOLLOW)) == "OK");
    CHECK(TimesOf(fs.path("l")).m == 8000000008LL);
    CHECK(TimesOf(fs.path("f")).m == f0.m);
  }

  TEST_CASE("Futimens: works on an open file descriptor") {
    TestFs fs;
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.ok());
    struct timespec ts[2] = {{100, 1}, {200, 2}};
    REQUIRE(SYS(futimens(fd.get(), ts)) == "OK");
    struct stat st {};
    REQUIRE(fstat(fd.get(), &st) == 0);
    CHECK(Nanos(st.st_atim) == 100000000001LL);
    CHECK(Nanos(st.st_mtim) == 200000000002LL);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
