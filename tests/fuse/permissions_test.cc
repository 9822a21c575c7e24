// POSIX permissions on a mounted leasefs, as seen by unprivileged processes.
//
// The mount is made by root with allow_other. Tests set files up as root and
// then check, in a child running as another user (AsUser), exactly what a
// local filesystem allows and which errno it gives. meson runs this binary
// twice: once as is (the daemon alone enforces permissions) and once with
// LEASEFS_TEST_MOUNT_OPTIONS=default_permissions (the kernel checks too).
//
// Users: 1000 (group 1000) and 1001 (group 1001); group 2000 is a
// supplementary group some tests give them.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kAlice = 1000, kBob = 1001, kCarol = 1002;
constexpr gid_t kAliceGid = 1000, kBobGid = 1001, kShared = 2000;

// Creates `path` with `data`, then sets owner and mode (in that order, so the
// chown does not clear bits of `mode`).
void MakeFile(const std::string& path, const std::string& data, mode_t mode, uid_t uid = 0,
              gid_t gid = 0) {
  REQUIRE(WriteFile(path, data) == "");
  REQUIRE(chown(path.c_str(), uid, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

void MakeDir(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  REQUIRE(mkdir(path.c_str(), 0700) == 0);
  REQUIRE(chown(path.c_str(), uid, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

mode_t ModeOf(const std::string& path) { return Lstat(path).st_mode & 07777; }

// Opens, writes `data` at 0 and closes, as the caller.
std::string WriteAs(const std::string& path, const std::string& data) {
  Fd fd(open(path.c_str(), O_WRONLY));
  if (!fd.ok()) return ErrnoName(errno);
  std::string e = PwriteAll(fd.get(), data, 0);
  return e.empty() ? fd.Close() : e;
}

TEST_SUITE("fuse.permissions") {
  // --- read / write / search -------------------------------------------------------

  TEST_CASE("Permissions: open for read or write follows the owner/group/other class") {
    TestFs fs;
    MakeFile(fs.path("f"), "secret", 0640, 0, kAliceGid);
    MakeFile(fs.path("g"), "other-only", 0604, 0, kAliceGid);
    MakeFile(fs.path("own"), "owner-denied", 0077, kAlice, kAliceGid);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(fs.path("f")), "secret");
      KSYS(k, open(fs.path("f").c_str(), O_WRONLY), "EACCES");
      KSYS(k, open(fs.path("f").c_str(), O_RDWR), "EACCES");
      // The group class applies to a group member even when "other" allows more.
      KSYS(k, open(fs.path("g").c_str(), O_RDONLY), "EACCES");
      // The owner class applies to the owner even when group/other allow more.
      KSYS(k, open(fs.path("own").c_str(), O_RDONLY), "EACCES");
    });
    CHECK_AS(kBob, kBobGid, {}, [&](ChildChecks& k) {
      KSYS(k, open(fs.path("f").c_str(), O_RDONLY), "EACCES");
      KEQ(k, ReadFile(fs.path("g")), "other-only");
      KEQ(k, ReadFile(fs.path("own")), "owner-denied");
    });
  }

  TEST_CASE("Permissions: a supplementary group grants the group class") {
    TestFs fs;
    MakeFile(fs.path("f"), "group data", 0060, 0, kShared);
    CHECK_AS(kAlice, kAliceGid, {kShared}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(fs.path("f")), "group data");
      KEQ(k, WriteAs(fs.path("f"), "GROUP"), "OK");
    });
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KSYS(k, open(fs.path("f").c_str(), O_RDONLY), "EACCES"); });
    CHECK(ReadFile(fs.path("f")) == "GROUP data");
  }

  TEST_CASE("Permissions: O_CREAT on an existing file checks only the file, not the directory") {
    TestFs fs;
    MakeDir(fs.path("ro"), 0755);
    MakeFile(fs.path("ro/f"), "existing", 0644);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd fd(open(fs.path("ro/f").c_str(), O_CREAT | O_RDONLY, 0666));
      KTRUE(k, fd.ok());
      KSYS(k, open(fs.path("ro/f").c_str(), O_CREAT | O_WRONLY, 0666), "EACCES");
      KSYS(k, open(fs.path("ro/f").c_str(), O_CREAT | O_EXCL | O_RDONLY, 0666), "EEXIST");
    });
    CHECK(ReadFile(fs.path("ro/f")) == "existing");
  }

  TEST_CASE("Permissions: O_TRUNC and truncate need write permission (EACCES)") {
    TestFs fs;
    MakeFile(fs.path("f"), "keep", 0644);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, open(fs.path("f").c_str(), O_RDONLY | O_TRUNC), "EACCES");
      KSYS(k, truncate(fs.path("f").c_str(), 0), "EACCES");
      Fd fd(open(fs.path("f").c_str(), O_RDONLY));
      KTRUE(k, fd.ok());
      KSYS(k, ftruncate(fd.get(), 0), "EINVAL");  // fd not open for writing
    });
    CHECK(ReadFile(fs.path("f")) == "keep");
  }

  TEST_CASE("Permissions: a directory without search permission hides its entries (EACCES)") {
    TestFs fs;
    MakeDir(fs.path("d"), 0700);
    MakeFile(fs.path("d/f"), "x", 0644);
    MakeDir(fs.path("r"), 0744);  // others may list but not search
    MakeFile(fs.path("r/f"), "x", 0644);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      struct stat st {};
      KSYS(k, stat(fs.path("d/f").c_str(), &st), "EACCES");
      KSYS(k, open(fs.path("d/f").c_str(), O_RDONLY), "EACCES");
      KSYS(k, open(fs.path("d/new").c_str(), O_CREAT | O_WRONLY, 0644), "EACCES");
      KSYS(k, chdir(fs.path("d").c_str()), "EACCES");
      KTRUE(k, ListDir(fs.path("r")) == std::vector<std::string>{"f"});
      KSYS(k, stat(fs.path("r/f").c_str(), &st), "EACCES");
    });
  }

  TEST_CASE(
      "Permissions: a directory without read permission cannot be listed but can be searched") {
    TestFs fs;
    MakeDir(fs.path("d"), 0711);
    MakeFile(fs.path("d/f"), "known name", 0644);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, open(fs.path("d").c_str(), O_RDONLY | O_DIRECTORY), "EACCES");
      KEQ(k, ReadFile(fs.path("d/f")), "known name");
      KSYS(k, chdir(fs.path("d").c_str()), "OK");
    });
  }

  TEST_CASE("Permissions: creating, removing and renaming need write and search on the directory") {
    TestFs fs;
    MakeDir(fs.path("ro"), 0755);
    MakeFile(fs.path("ro/f"), "x", 0666);
    MakeDir(fs.path("ro/sub"), 0777);
    MakeDir(fs.path("wonly"), 0766);  // write without search
    MakeDir(fs.path("rw"), 0777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, open(fs.path("ro/new").c_str(), O_CREAT | O_WRONLY, 0644), "EACCES");
      KSYS(k, mkdir(fs.path("ro/newdir").c_str(), 0755), "EACCES");
      KSYS(k, symlink("x", fs.path("ro/newlink").c_str()), "EACCES");
      KSYS(k, mkfifo(fs.path("ro/fifo").c_str(), 0644), "EACCES");
      KSYS(k, unlink(fs.path("ro/f").c_str()), "EACCES");
      KSYS(k, rmdir(fs.path("ro/sub").c_str()), "EACCES");
      KSYS(k, rename(fs.path("ro/f").c_str(), fs.path("ro/g").c_str()), "EACCES");
      KSYS(k, rename(fs.path("ro/f").c_str(), fs.path("rw/g").c_str()), "EACCES");
      KSYS(k, link(fs.path("ro/f").c_str(), fs.path("ro/h").c_str()), "EACCES");
      KSYS(k, open(fs.path("wonly/new").c_str(), O_CREAT | O_WRONLY, 0644), "EACCES");
      // Writing the file itself only needs permission on the file.
      KEQ(k, WriteAs(fs.path("ro/f"), "y"), "OK");
      KSYS(k, open(fs.path("rw/new").c_str(), O_CREAT | O_WRONLY, 0644), "OK");
    });
    CHECK(ListDir(fs.path("ro")) == std::vector<std::string>{"f", "sub"});
    CHECK(Lstat(fs.path("rw/new")).st_uid == kAlice);
    CHECK(Lstat(fs.path("rw/new")).st_gid == kAliceGid);
  }

  TEST_CASE("Permissions: moving a directory to another parent needs write permission on it") {
    // The directory's '..' entry changes, so Linux checks write access to the
    // directory being moved (not only to both parents).
    TestFs fs;
    MakeDir(fs.path("a"), 0777);
    MakeDir(fs.path("b"), 0777);
    MakeDir(fs.path("a/theirs"), 0755);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, rename(fs.path("a/theirs").c_str(), fs.path("b/theirs").c_str()), "EACCES");
      // Renaming inside the same parent leaves '..' alone: allowed.
      KSYS(k, rename(fs.path("a/theirs").c_str(), fs.path("a/renamed").c_str()), "OK");
    });
    CHECK(S_ISDIR(Lstat(fs.path("a/renamed")).st_mode));
  }

  TEST_CASE("Permissions: execute needs an x bit, also for root") {
    TestFs fs;
    MakeFile(fs.path("noexec"), "#!/bin/sh\nexit 7\n", 0644);
    MakeFile(fs.path("script"), "#!/bin/sh\nexit 7\n", 0755);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      char* argv[] = {nullptr};
      KSYS(k, execve(fs.path("noexec").c_str(), argv, argv), "EACCES");
      pid_t pid = fork();
      if (pid == 0) {
        char* a[] = {const_cast<char*>("script"), nullptr};
        execve(fs.path("script").c_str(), a, a);
        _exit(99);
      }
      int status = 0;
      waitpid(pid, &status, 0);
      KTRUE(k, WIFEXITED(status) && WEXITSTATUS(status) == 7);
    });
    CHECK(SYS(access(fs.path("noexec").c_str(), X_OK)) == "EACCES");
  }

  TEST_CASE("Permissions: only root may create device nodes (EPERM)") {
    TestFs fs;
    MakeDir(fs.path("open"), 0777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, mknod(fs.path("open/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), "EPERM");
      KSYS(k, mknod(fs.path("open/blk").c_str(), S_IFBLK | 0600, makedev(7, 0)), "EPERM");
      KSYS(k, mknod(fs.path("open/fifo").c_str(), S_IFIFO | 0600, 0), "OK");
    });
    CHECK(SYS(mknod(fs.path("open/null").c_str(), S_IFCHR | 0666, makedev(1, 3))) == "OK");
    CHECK(Lstat(fs.path("open/null")).st_rdev == makedev(1, 3));
  }

  // --- root -------------------------------------------------------------------------

  TEST_CASE("Permissions: root reads, writes and searches regardless of mode bits") {
    TestFs fs;
    MakeFile(fs.path("f"), "locked", 0000, kAlice, kAliceGid);
    MakeDir(fs.path("d"), 0000, kAlice, kAliceGid);
    MakeFile(fs.path("d/inner"), "inner", 0000);
    CHECK(ReadFile(fs.path("f")) == "locked");
    CHECK(WriteAs(fs.path("f"), "LOCKED") == "OK");
    CHECK(ListDir(fs.path("d")) == std::vector<std::string>{"inner"});
    CHECK(ReadFile(fs.path("d/inner")) == "inner");
    CHECK(SYS(close(open(fs.path("d/new").c_str(), O_CREAT | O_WRONLY, 0644))) == "OK");
    CHECK(SYS(access(fs.path("f").c_str(), R_OK | W_OK)) == "OK");
    CHECK(SYS(access(fs.path("d").c_str(), X_OK)) == "OK");
    CHECK(SYS(access(fs.path("f").c_str(), X_OK)) == "EACCES");
  }

  // --- access(2) --------------------------------------------------------------------

  TEST_CASE("Access: reports exactly the permissions open would grant") {
    TestFs fs;
    MakeFile(fs.path("f640"), "", 0640, 0, kAliceGid);
    MakeFile(fs.path("f755"), "", 0755);
    MakeFile(fs.path("f000"), "", 0000, kAlice, kAliceGid);
    MakeDir(fs.path("d700"), 0700);
    MakeFile(fs.path("d700/f"), "", 0777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, access(fs.path("f640").c_str(), R_OK), "OK");
      KSYS(k, access(fs.path("f640").c_str(), W_OK), "EACCES");
      KSYS(k, access(fs.path("f640").c_str(), R_OK | W_OK), "EACCES");
      KSYS(k, access(fs.path("f640").c_str(), X_OK), "EACCES");
      KSYS(k, access(fs.path("f640").c_str(), F_OK), "OK");
      KSYS(k, access(fs.path("f755").c_str(), R_OK | X_OK), "OK");
      KSYS(k, access(fs.path("f755").c_str(), W_OK), "EACCES");
      KSYS(k, access(fs.path("f000").c_str(), R_OK), "EACCES");
      KSYS(k, access(fs.path("f000").c_str(), F_OK), "OK");
      KSYS(k, access(fs.path("d700/f").c_str(), F_OK), "EACCES");
      KSYS(k, access(fs.path("missing").c_str(), F_OK), "ENOENT");
    });
    CHECK_AS(kBob, kBobGid, {},
             [&](ChildChecks& k) { KSYS(k, access(fs.path("f640").c_str(), R_OK), "EACCES"); });
  }

  // --- chmod / chown ------------------------------------------------------------------

  TEST_CASE("Chmod: only the owner (or root) may change the mode (EPERM)") {
    TestFs fs;
    MakeFile(fs.path("mine"), "", 0644, kAlice, kAliceGid);
    MakeFile(fs.path("theirs"), "", 0666, kBob, kBobGid);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, chmod(fs.path("mine").c_str(), 0600), "OK");
      KSYS(k, chmod(fs.path("theirs").c_str(), 0600), "EPERM");
    });
    CHECK(ModeOf(fs.path("mine")) == 0600);
    CHECK(ModeOf(fs.path("theirs")) == 0666);
  }

  TEST_CASE("Chmod: setting S_ISGID when not in the file's group silently drops it") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 0755, kAlice, kShared);
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KSYS(k, chmod(fs.path("f").c_str(), 02755), "OK"); });
    CHECK(ModeOf(fs.path("f")) == 0755);
    CHECK_AS(kAlice, kAliceGid, {kShared},
             [&](ChildChecks& k) { KSYS(k, chmod(fs.path("f").c_str(), 02755), "OK"); });
    CHECK(ModeOf(fs.path("f")) == 02755);
  }

  TEST_CASE("Chown: a non-root owner cannot give a file away (EPERM)") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 0644, kAlice, kAliceGid);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, chown(fs.path("f").c_str(), kBob, static_cast<gid_t>(-1)), "EPERM");
      KSYS(k, chown(fs.path("f").c_str(), kBob, kAliceGid), "EPERM");
      // Chowning to oneself is allowed (nothing changes).
      KSYS(k, chown(fs.path("f").c_str(), kAlice, static_cast<gid_t>(-1)), "OK");
    });
    CHECK(Lstat(fs.path("f")).st_uid == kAlice);
  }

  TEST_CASE("Chown: the owner may change the group to one of their groups only") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 0644, kAlice, kAliceGid);
    CHECK_AS(kAlice, kAliceGid, {kShared}, [&](ChildChecks& k) {
      KSYS(k, chown(fs.path("f").c_str(), static_cast<uid_t>(-1), kBobGid), "EPERM");
      KSYS(k, chown(fs.path("f").c_str(), static_cast<uid_t>(-1), kShared), "OK");
    });
    CHECK(Lstat(fs.path("f")).st_gid == kShared);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, chown(fs.path("f").c_str(), static_cast<uid_t>(-1), kAliceGid), "OK");
    });
    CHECK(Lstat(fs.path("f")).st_gid == kAliceGid);
  }

  TEST_CASE("Chown: a non-owner cannot change the group, even to their own (EPERM)") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 0666, kAlice, kAliceGid);
    CHECK_AS(kBob, kBobGid, {}, [&](ChildChecks& k) {
      KSYS(k, chown(fs.path("f").c_str(), static_cast<uid_t>(-1), kBobGid), "EPERM");
      KSYS(k, chown(fs.path("f").c_str(), kBob, kBobGid), "EPERM");
    });
    CHECK(Lstat(fs.path("f")).st_gid == kAliceGid);
  }

  TEST_CASE("Chown: root's chown clears S_ISUID, and S_ISGID when group-executable") {
    TestFs fs;
    MakeFile(fs.path("suid"), "", 06755);
    MakeFile(fs.path("sgid-noexec"), "", 02644);
    MakeDir(fs.path("dir"), 02755);
    REQUIRE(chown(fs.path("suid").c_str(), kAlice, kAliceGid) == 0);
    REQUIRE(chown(fs.path("sgid-noexec").c_str(), kAlice, kAliceGid) == 0);
    REQUIRE(chown(fs.path("dir").c_str(), kAlice, kAliceGid) == 0);
    CHECK(ModeOf(fs.path("suid")) == 0755);
    // Without group execute, S_ISGID is not a set-group-ID bit: it stays.
    CHECK(ModeOf(fs.path("sgid-noexec")) == 02644);
    // Directories keep S_ISGID (it means inheritance there).
    CHECK(ModeOf(fs.path("dir")) == 02755);
  }

  TEST_CASE("Chown: an owner's chgrp clears S_ISUID and S_ISGID") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 06755, kAlice, kAliceGid);
    CHECK_AS(kAlice, kAliceGid, {kShared}, [&](ChildChecks& k) {
      KSYS(k, chown(fs.path("f").c_str(), static_cast<uid_t>(-1), kShared), "OK");
    });
    CHECK(ModeOf(fs.path("f")) == 0755);
  }

  // --- suid/sgid clearing on write -----------------------------------------------------

  TEST_CASE("Write: by a non-root user clears S_ISUID and group-executable S_ISGID") {
    TestFs fs;
    MakeFile(fs.path("both"), "0123456789", 06777);
    MakeFile(fs.path("own"), "0123456789", 04755, kAlice, kAliceGid);
    CHECK_AS(kBob, kBobGid, {},
             [&](ChildChecks& k) { KEQ(k, WriteAs(fs.path("both"), "x"), "OK"); });
    CHECK(ModeOf(fs.path("both")) == 0777);
    CHECK(ReadFile(fs.path("both")) == "x123456789");
    // The owner is not privileged either.
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KEQ(k, WriteAs(fs.path("own"), "y"), "OK"); });
    CHECK(ModeOf(fs.path("own")) == 0755);
  }

  TEST_CASE("Write: S_ISGID without group execute is cleared only for writers outside the group") {
    TestFs fs;
    MakeFile(fs.path("f"), "data", 02666, 0, kShared);
    CHECK_AS(kAlice, kAliceGid, {kShared},
             [&](ChildChecks& k) { KEQ(k, WriteAs(fs.path("f"), "D"), "OK"); });
    CHECK(ModeOf(fs.path("f")) == 02666);
    CHECK_AS(kBob, kBobGid, {}, [&](ChildChecks& k) { KEQ(k, WriteAs(fs.path("f"), "E"), "OK"); });
    CHECK(ModeOf(fs.path("f")) == 0666);
  }

  TEST_CASE("Write: root keeps S_ISUID and S_ISGID") {
    TestFs fs;
    MakeFile(fs.path("f"), "data", 06777, kAlice, kAliceGid);
    CHECK(WriteAs(fs.path("f"), "DATA") == "OK");
    CHECK(ModeOf(fs.path("f")) == 06777);
  }

  TEST_CASE("Truncate: by a non-root user clears S_ISUID") {
    TestFs fs;
    MakeFile(fs.path("f"), "0123456789", 04777);
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KSYS(k, truncate(fs.path("f").c_str(), 3), "OK"); });
    CHECK(ModeOf(fs.path("f")) == 0777);
    CHECK(Lstat(fs.path("f")).st_size == 3);
  }

  TEST_CASE("Truncate: O_TRUNC and ftruncate by a non-owner writer clear S_ISUID and S_ISGID") {
    TestFs fs;
    MakeFile(fs.path("otrunc"), "0123456789", 06777);
    MakeFile(fs.path("ftrunc"), "0123456789", 06777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd a(open(fs.path("otrunc").c_str(), O_WRONLY | O_TRUNC));
      KTRUE(k, a.ok());
      Fd b(open(fs.path("ftrunc").c_str(), O_WRONLY));
      KTRUE(k, b.ok());
      KSYS(k, ftruncate(b.get(), 4), "OK");
    });
    CHECK(ModeOf(fs.path("otrunc")) == 0777);
    CHECK(Lstat(fs.path("otrunc")).st_size == 0);
    CHECK(ModeOf(fs.path("ftrunc")) == 0777);
    CHECK(Lstat(fs.path("ftrunc")).st_size == 4);
  }

  TEST_CASE("Fchmod and fchown through an open descriptor follow the same rules") {
    TestFs fs;
    MakeFile(fs.path("theirs"), "", 0666, kBob, kBobGid);
    MakeFile(fs.path("mine"), "", 0644, kAlice, kAliceGid);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd t(open(fs.path("theirs").c_str(), O_RDWR));
      KSYS(k, fchmod(t.get(), 0600), "EPERM");
      KSYS(k, fchown(t.get(), kAlice, kAliceGid), "EPERM");
      Fd m(open(fs.path("mine").c_str(), O_RDONLY));
      KSYS(k, fchmod(m.get(), 0600), "OK");
      KSYS(k, fchown(m.get(), kBob, static_cast<gid_t>(-1)), "EPERM");
    });
    CHECK(ModeOf(fs.path("theirs")) == 0666);
    CHECK(ModeOf(fs.path("mine")) == 0600);
  }

  // --- utimensat ------------------------------------------------------------------------

  TEST_CASE("Utimensat: explicit times need ownership (EPERM), even with write permission") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 0666);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      struct timespec ts[2] = {{1, 0}, {2, 0}};
      KSYS(k, utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0), "EPERM");
      struct timespec half[2] = {{0, UTIME_OMIT}, {2, 0}};
      KSYS(k, utimensat(AT_FDCWD, fs.path("f").c_str(), half, 0), "EPERM");
    });
    CHECK(Lstat(fs.path("f")).st_mtim.tv_sec != 2);
  }

  TEST_CASE("Utimensat: UTIME_NOW needs ownership or write permission (EACCES)") {
    TestFs fs;
    MakeFile(fs.path("writable"), "", 0666);
    MakeFile(fs.path("readonly"), "", 0644);
    REQUIRE(utimensat(AT_FDCWD, fs.path("writable").c_str(),
                      std::array<struct timespec, 2>{{{5, 0}, {5, 0}}}.data(), 0) == 0);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, utimensat(AT_FDCWD, fs.path("writable").c_str(), nullptr, 0), "OK");
      KSYS(k, utimensat(AT_FDCWD, fs.path("readonly").c_str(), nullptr, 0), "EACCES");
      struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
      KSYS(k, utimensat(AT_FDCWD, fs.path("readonly").c_str(), now, 0), "EACCES");
    });
    CHECK(Lstat(fs.path("writable")).st_mtim.tv_sec > 5);
  }

  TEST_CASE("Utimensat: the owner may set explicit times without write permission") {
    TestFs fs;
    MakeFile(fs.path("f"), "", 0444, kAlice, kAliceGid);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      struct timespec ts[2] = {{11, 1}, {22, 2}};
      KSYS(k, utimensat(AT_FDCWD, fs.path("f").c_str(), ts, 0), "OK");
      KSYS(k, utimensat(AT_FDCWD, fs.path("f").c_str(), nullptr, 0), "OK");
    });
  }

  // --- sticky directories -----------------------------------------------------------------

  TEST_CASE("Sticky: others cannot remove or rename your files in a sticky directory (EPERM)") {
    TestFs fs;
    MakeDir(fs.path("tmp"), 01777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KEQ(k, WriteFile(fs.path("tmp/alice"), "a", 0666), "");
      KSYS(k, chmod(fs.path("tmp/alice").c_str(), 0666), "OK");
      KSYS(k, mkdir(fs.path("tmp/alicedir").c_str(), 0777), "OK");
    });
    CHECK_AS(kBob, kBobGid, {}, [&](ChildChecks& k) {
      KEQ(k, WriteFile(fs.path("tmp/bob"), "b", 0666), "");
      KSYS(k, unlink(fs.path("tmp/alice").c_str()), "EPERM");
      KSYS(k, rmdir(fs.path("tmp/alicedir").c_str()), "EPERM");
      KSYS(k, rename(fs.path("tmp/alice").c_str(), fs.path("tmp/stolen").c_str()), "EPERM");
      // Replacing her file by renaming over it is a removal too.
      KSYS(k, rename(fs.path("tmp/bob").c_str(), fs.path("tmp/alice").c_str()), "EPERM");
      // Her file is writable (0666): writing it is fine.
      KEQ(k, WriteAs(fs.path("tmp/alice"), "B"), "OK");
      // His own file he may rename and remove.
      KSYS(k, rename(fs.path("tmp/bob").c_str(), fs.path("tmp/bob2").c_str()), "OK");
      KSYS(k, unlink(fs.path("tmp/bob2").c_str()), "OK");
    });
    CHECK(ListDir(fs.path("tmp")) == std::vector<std::string>{"alice", "alicedir"});
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, unlink(fs.path("tmp/alice").c_str()), "OK");
      KSYS(k, rmdir(fs.path("tmp/alicedir").c_str()), "OK");
    });
  }

  TEST_CASE("Sticky: the directory's owner and root may remove anyone's files") {
    TestFs fs;
    MakeDir(fs.path("tmp"), 01777, kCarol, kCarol);
    MakeFile(fs.path("tmp/a1"), "", 0644, kAlice, kAliceGid);
    MakeFile(fs.path("tmp/a2"), "", 0644, kAlice, kAliceGid);
    MakeFile(fs.path("tmp/a3"), "", 0644, kAlice, kAliceGid);
    CHECK_AS(kCarol, kCarol, {}, [&](ChildChecks& k) {
      KSYS(k, unlink(fs.path("tmp/a1").c_str()), "OK");
      KSYS(k, rename(fs.path("tmp/a2").c_str(), fs.path("tmp/moved").c_str()), "OK");
    });
    CHECK(SYS(unlink(fs.path("tmp/a3").c_str())) == "OK");
    CHECK(ListDir(fs.path("tmp")) == std::vector<std::string>{"moved"});
  }

  TEST_CASE("Sticky: without the sticky bit anyone with write permission may remove") {
    TestFs fs;
    MakeDir(fs.path("open"), 0777);
    MakeFile(fs.path("open/a"), "", 0600, kAlice, kAliceGid);
    CHECK_AS(kBob, kBobGid, {},
             [&](ChildChecks& k) { KSYS(k, unlink(fs.path("open/a").c_str()), "OK"); });
  }

  // --- setgid directories ------------------------------------------------------------------

  TEST_CASE("Setgid dir: new entries take the directory's group; subdirectories inherit S_ISGID") {
    TestFs fs;
    MakeDir(fs.path("proj"), 02777, 0, kShared);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KEQ(k, WriteFile(fs.path("proj/f"), "x", 0644), "");
      KSYS(k, mkdir(fs.path("proj/sub").c_str(), 0755), "OK");
      KSYS(k, symlink("f", fs.path("proj/l").c_str()), "OK");
      KSYS(k, mkfifo(fs.path("proj/p").c_str(), 0644), "OK");
    });
    for (const char* n : {"proj/f", "proj/sub", "proj/l", "proj/p"}) {
      CAPTURE(n);
      CHECK(Lstat(fs.path(n)).st_uid == kAlice);
      CHECK(Lstat(fs.path(n)).st_gid == kShared);
    }
    CHECK(ModeOf(fs.path("proj/sub")) == 02755);
    CHECK(ModeOf(fs.path("proj/f")) == 0644);
    // And it propagates further down.
    REQUIRE(mkdir(fs.path("proj/sub/deeper").c_str(), 0700) == 0);
    CHECK(Lstat(fs.path("proj/sub/deeper")).st_gid == kShared);
    CHECK(ModeOf(fs.path("proj/sub/deeper")) == 02700);
  }

  TEST_CASE("Setgid dir: a non-member creating a group-executable S_ISGID file loses S_ISGID") {
    TestFs fs;
    MakeDir(fs.path("proj"), 02777, 0, kShared);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      umask(0);
      Fd fd(open(fs.path("proj/f").c_str(), O_CREAT | O_WRONLY, 02775));
      KTRUE(k, fd.ok());
    });
    CHECK(ModeOf(fs.path("proj/f")) == 0775);
    CHECK_AS(kAlice, kAliceGid, {kShared}, [&](ChildChecks& k) {
      umask(0);
      Fd fd(open(fs.path("proj/g").c_str(), O_CREAT | O_WRONLY, 02775));
      KTRUE(k, fd.ok());
    });
    CHECK(ModeOf(fs.path("proj/g")) == 02775);
  }

  TEST_CASE("Setgid dir: without S_ISGID new entries take the creator's group") {
    TestFs fs;
    MakeDir(fs.path("plain"), 0777, 0, kShared);
    CHECK_AS(kAlice, kAliceGid, {kShared}, [&](ChildChecks& k) {
      KEQ(k, WriteFile(fs.path("plain/f"), "x", 0644), "");
      KSYS(k, mkdir(fs.path("plain/d").c_str(), 0755), "OK");
    });
    CHECK(Lstat(fs.path("plain/f")).st_gid == kAliceGid);
    CHECK(Lstat(fs.path("plain/d")).st_gid == kAliceGid);
    CHECK(ModeOf(fs.path("plain/d")) == 0755);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
