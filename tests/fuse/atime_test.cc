// atime under each atime mount option, as a local filesystem keeps it:
// relatime (the default), strictatime, noatime and nodiratime, for read(2),
// exec and directory listings (getdents). FUSE leaves atime to the daemon, so
// these hold only if the daemon sees and applies the options.
//
// Each case starts from an atime set with utimensat (which sets ctime to now)
// and lets the clock tick (TickClock) before the access, so that an update
// shows as a new value and "unchanged" can be checked exactly. relatime's
// third condition, an atime a day old that is still after ctime, cannot be
// set up without moving the clock, and is not tested here.
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr int64_t kSlackNs = 50'000'000;  // coarse clock granularity and skew
constexpr int64_t kOldAtime = 1'000'000'000LL * 1'000'000'000 + 333;  // 2001, before any ctime

int64_t NowNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return Nanos(ts);
}

int64_t AtimeOf(const std::string& path) { return Nanos(Lstat(path).st_atim); }

// Sets the atime of `path` to kOldAtime and leaves mtime alone.
void SetOldAtime(const std::string& path) {
  struct timespec ts[2] = {{kOldAtime / 1'000'000'000, kOldAtime % 1'000'000'000}, {0, UTIME_OMIT}};
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), ts, 0) == 0);
  REQUIRE(AtimeOf(path) == kOldAtime);
}

// A test filesystem mounted with `options` (the daemon's -o, or tmpfs's
// mount flags in reference mode) holding a file "f" ("abc"), a program
// "prog" (a copy of /bin/true) and a directory "d" with one entry; each with
// an old atime, and the clock ticked since.
struct AtimeFs {
  explicit AtimeFs(const std::string& options) : fs(Options(options)) {
    bool ok = false;
    const std::string program = ReadFile("/bin/true", &ok);
    REQUIRE(ok);
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    REQUIRE(WriteFile(fs.path("prog"), program, 0755) == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d/x"), "") == "");
    for (const char* n : {"f", "prog", "d"}) SetOldAtime(fs.path(n));
    TickClock();
  }
  static FsOptions Options(const std::string& options) {
    FsOptions o;
    o.mount_options = options;
    return o;
  }
  TestFs fs;
};

// The accesses under test. Each REQUIREs that it worked.
void ReadAll(const std::string& path) {
  bool ok = false;
  ReadFile(path, &ok);  // read(2) until it returns 0
  REQUIRE(ok);
}

void Exec(const std::string& path) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char* argv[] = {const_cast<char*>("prog"), nullptr};
    execv(path.c_str(), argv);
    _exit(127);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

void List(const std::string& path) { REQUIRE(ListDir(path) == std::vector<std::string>{"x"}); }

// A read(2) at the end of the file: it returns 0 bytes.
void ReadAtEnd(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY));
  REQUIRE(fd.ok());
  char c;
  REQUIRE(pread(fd.get(), &c, 1, 3) == 0);
}

// Checks that `access` sets the atime of `path` to now.
void CheckUpdates(const std::string& path, void (*access)(const std::string&)) {
  const int64_t t0 = NowNs();
  access(path);
  const int64_t t1 = NowNs();
  const int64_t a = AtimeOf(path);
  CHECK_MESSAGE(a >= t0 - kSlackNs, "atime " << a << " not updated (access at " << t0 << ")");
  CHECK(a <= t1 + kSlackNs);
}

// Checks that `access` leaves the atime of `path` exactly as it was.
void CheckKeeps(const std::string& path, void (*access)(const std::string&)) {
  const int64_t before = AtimeOf(path);
  access(path);
  CHECK(AtimeOf(path) == before);
}

TEST_SUITE("fuse.atime") {
  TEST_CASE("Atime: relatime, the default: an atime not after mtime or ctime is updated, once") {
    // Also with the options that change nothing here.
    for (const char* options : {"", "relatime", "lazytime"}) {
      CAPTURE(options);
      AtimeFs t(options);
      TestFs& fs = t.fs;
      CheckUpdates(fs.path("f"), ReadAll);
      CheckUpdates(fs.path("prog"), Exec);
      CheckUpdates(fs.path("d"), List);
      TickClock();
      // Now atime is after mtime and ctime, and recent.
      CheckKeeps(fs.path("f"), ReadAll);
      CheckKeeps(fs.path("f"), ReadAtEnd);
      CheckKeeps(fs.path("prog"), Exec);
      CheckKeeps(fs.path("d"), List);
    }
  }

  TEST_CASE("Atime: relatime: a change since the last read lets the next read update atime") {
    AtimeFs t("");
    TestFs& fs = t.fs;
    ReadAll(fs.path("f"));
    List(fs.path("d"));
    TickClock();
    SUBCASE("a write (mtime and ctime)") {
      Fd fd(open(fs.path("f").c_str(), O_WRONLY));
      REQUIRE(PwriteAll(fd.get(), "x", 0) == "");
      REQUIRE(WriteFile(fs.path("d/y"), "") == "");
      REQUIRE(unlink(fs.path("d/y").c_str()) == 0);
    }
    SUBCASE("a chmod (ctime only)") {
      REQUIRE(chmod(fs.path("f").c_str(), 0600) == 0);
      REQUIRE(chmod(fs.path("d").c_str(), 0700) == 0);
    }
    TickClock();
    CheckUpdates(fs.path("f"), ReadAll);
    CheckUpdates(fs.path("d"), List);
  }

  TEST_CASE("Atime: relatime: a read at the end of the file counts as a read") {
    AtimeFs t("");
    CheckUpdates(t.fs.path("f"), ReadAtEnd);
  }

  TEST_CASE("Atime: strictatime: every read, exec and listing updates atime") {
    AtimeFs t("strictatime");
    TestFs& fs = t.fs;
    for (int round = 0; round < 2; ++round) {
      CAPTURE(round);
      CheckUpdates(fs.path("f"), ReadAll);
      CheckUpdates(fs.path("prog"), Exec);
      CheckUpdates(fs.path("d"), List);
      TickClock();
      CheckUpdates(fs.path("f"), ReadAtEnd);
      TickClock();
    }
  }

  TEST_CASE("Atime: noatime: read, exec and listing never change atime") {
    AtimeFs t("noatime");
    TestFs& fs = t.fs;
    for (int round = 0; round < 2; ++round) {
      CAPTURE(round);
      CheckKeeps(fs.path("f"), ReadAll);
      CheckKeeps(fs.path("f"), ReadAtEnd);
      CheckKeeps(fs.path("prog"), Exec);
      CheckKeeps(fs.path("d"), List);
      CHECK(AtimeOf(fs.path("f")) == kOldAtime);
      TickClock();
    }
    // Setting it explicitly still works.
    struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    const int64_t t0 = NowNs();
    REQUIRE(utimensat(AT_FDCWD, fs.path("f").c_str(), now, 0) == 0);
    CHECK(AtimeOf(fs.path("f")) >= t0 - kSlackNs);
  }

  TEST_CASE("Atime: strictatime wins over noatime, in either order, as in the kernel") {
    for (const char* options : {"noatime,strictatime", "strictatime,noatime"}) {
      CAPTURE(options);
      AtimeFs t(options);
      CheckUpdates(t.fs.path("f"), ReadAll);
      TickClock();
      CheckUpdates(t.fs.path("f"), ReadAll);
    }
  }

  TEST_CASE("Atime: nodiratime: listing never changes a directory's atime; files keep the rule") {
    for (const char* options : {"nodiratime", "nodiratime,strictatime"}) {
      CAPTURE(options);
      AtimeFs t(options);
      TestFs& fs = t.fs;
      CheckKeeps(fs.path("d"), List);
      CHECK(AtimeOf(fs.path("d")) == kOldAtime);
      CheckUpdates(fs.path("f"), ReadAll);
    }
  }
}

}  // namespace
}  // namespace leasefs::testing
