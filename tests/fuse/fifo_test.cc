// FIFOs (and device nodes) under both permission modes.
//
// The kernel opens a FIFO or a device node itself: FUSE sends the daemon no
// OPEN for them. With default_permissions the kernel checks the mode bits
// first; with -o no_default_permissions its permission hook lets everything
// through but access(2) and exec, so nothing checks them. README.md and
// `leasefs --help` say so, and the "documented gap" case below asserts it,
// so that the documentation stays true. Everything else about a FIFO
// (creating it, the directories on the way, chmod, chown, times, removing
// and renaming it) reaches the daemon and is checked in both modes.
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kAlice = 1000, kBob = 1001;
constexpr gid_t kAliceGid = 1000, kBobGid = 1001;

void MakeDir(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  REQUIRE(mkdir(path.c_str(), 0700) == 0);
  REQUIRE(chown(path.c_str(), uid, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

// A FIFO owned by root with exactly `mode`.
void MakeFifo(const std::string& path, mode_t mode) {
  REQUIRE(mkfifo(path.c_str(), mode) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

// open(2) as Err() text; closes what it opened.
std::string OpenResult(const std::string& path, int flags) {
  Fd fd(open(path.c_str(), flags));
  return fd.ok() ? "OK" : ErrnoName(errno);
}

TEST_SUITE("fuse.fifo") {
  TEST_CASE("Fifo: creating one needs write and search permission on the directory (EACCES)") {
    TestFs fs;
    MakeDir(fs.path("ro"), 0755);
    MakeDir(fs.path("nosearch"), 0666);
    MakeDir(fs.path("open"), 0777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, mkfifo(fs.path("ro/p").c_str(), 0600), "EACCES");
      KSYS(k, mknod(fs.path("nosearch/p").c_str(), S_IFIFO | 0600, 0), "EACCES");
      KSYS(k, mkfifo(fs.path("open/p").c_str(), 0666), "OK");
    });
    const struct stat st = Lstat(fs.path("open/p"));
    CHECK(st.st_mode == (S_IFIFO | 0644));  // the child's umask is 022
    CHECK(st.st_uid == kAlice);
    CHECK(st.st_gid == kAliceGid);
    CHECK(Lstat(fs.path("ro/p")).st_ino == 0);
  }

  TEST_CASE("Fifo: a directory without search permission hides it (EACCES)") {
    TestFs fs;
    MakeDir(fs.path("private"), 0700);
    MakeFifo(fs.path("private/p"), 0666);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KEQ(k, OpenResult(fs.path("private/p"), O_RDONLY | O_NONBLOCK), "EACCES");
      KEQ(k, OpenResult(fs.path("private/p"), O_WRONLY | O_NONBLOCK), "EACCES");
      struct stat st {};
      KSYS(k, lstat(fs.path("private/p").c_str(), &st), "EACCES");
    });
  }

  TEST_CASE("Fifo: only its owner may chmod, chown or set its times (EPERM)") {
    TestFs fs;
    MakeDir(fs.path("open"), 0777);
    MakeFifo(fs.path("open/root"), 0600);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      const std::string p = fs.path("open/root");
      KSYS(k, chmod(p.c_str(), 0666), "EPERM");
      KSYS(k, chown(p.c_str(), kAlice, kAliceGid), "EPERM");
      KSYS(k, chown(p.c_str(), static_cast<uid_t>(-1), kAliceGid), "EPERM");
      struct timespec explicit_times[2] = {{1, 0}, {1, 0}};
      KSYS(k, utimensat(AT_FDCWD, p.c_str(), explicit_times, 0), "EPERM");
      // UTIME_NOW needs write permission (or ownership): she has neither.
      KSYS(k, utimensat(AT_FDCWD, p.c_str(), nullptr, 0), "EACCES");
      // Her own FIFO she may change.
      KSYS(k, mkfifo(fs.path("open/mine").c_str(), 0600), "OK");
      KSYS(k, chmod(fs.path("open/mine").c_str(), 0640), "OK");
    });
    CHECK(Lstat(fs.path("open/root")).st_mode == (S_IFIFO | 0600));
    CHECK(Lstat(fs.path("open/root")).st_uid == 0);
    CHECK(Lstat(fs.path("open/mine")).st_mode == (S_IFIFO | 0640));
  }

  TEST_CASE("Fifo: in a sticky directory others cannot remove or rename it (EPERM)") {
    TestFs fs;
    MakeDir(fs.path("tmp"), 01777);
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KSYS(k, mkfifo(fs.path("tmp/p").c_str(), 0666), "OK"); });
    CHECK_AS(kBob, kBobGid, {}, [&](ChildChecks& k) {
      KSYS(k, unlink(fs.path("tmp/p").c_str()), "EPERM");
      KSYS(k, rename(fs.path("tmp/p").c_str(), fs.path("tmp/q").c_str()), "EPERM");
    });
    CHECK(S_ISFIFO(Lstat(fs.path("tmp/p")).st_mode));
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KSYS(k, unlink(fs.path("tmp/p").c_str()), "OK"); });
  }

  TEST_CASE("Fifo: the documented gap: with no_default_permissions its mode is not checked") {
    TestFs fs;
    MakeDir(fs.path("d"), 0755);
    MakeFifo(fs.path("d/p"), 0600);
    const std::string p = fs.path("d/p");
    const bool unchecked = DaemonChecksAlone(fs);
    CAPTURE(unchecked);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      // access(2) reaches the daemon in both modes and reports the mode.
      KSYS(k, access(p.c_str(), R_OK), "EACCES");
      KSYS(k, access(p.c_str(), W_OK), "EACCES");
      if (!unchecked) {
        KEQ(k, OpenResult(p, O_RDONLY | O_NONBLOCK), "EACCES");
        KEQ(k, OpenResult(p, O_WRONLY | O_NONBLOCK), "EACCES");
        return;
      }
      // Unchecked: the opens get as far as the FIFO itself. With no reader,
      // a non-blocking open for writing fails with ENXIO, not EACCES.
      KEQ(k, OpenResult(p, O_WRONLY | O_NONBLOCK), "ENXIO");
      Fd reader(open(p.c_str(), O_RDONLY | O_NONBLOCK));
      KTRUE(k, reader.ok());
      Fd writer(open(p.c_str(), O_WRONLY | O_NONBLOCK));
      KTRUE(k, writer.ok());
      // Bytes pass through root's 0600 FIFO.
      KSYS(k, write(writer.get(), "x", 1), "OK");
      char c = 0;
      KSYS(k, read(reader.get(), &c, 1), "OK");
      KEQ(k, std::string(1, c), "x");
    });
  }

  TEST_CASE("Device nodes: the mount is nodev by default, so opening one fails (EACCES)") {
    TestFs fs;
    LEASEFS_ONLY(fs, "nodev is leasefs's default mount option, not the reference filesystem's");
    REQUIRE(mknod(fs.path("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
    CHECK(OpenResult(fs.path("null"), O_RDWR) == "EACCES");
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KEQ(k, OpenResult(fs.path("null"), O_WRONLY), "EACCES"); });
  }
}

}  // namespace
}  // namespace leasefs::testing
