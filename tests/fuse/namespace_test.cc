// Namespace operations on a mounted leasefs: open flags, mkdir/rmdir/unlink,
// link counts, hard links, symlinks. Every expectation here was checked
// against tmpfs, ext4 and xfs in reference mode (see posix_fs.h).
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

TEST_SUITE("fuse.namespace") {
  // --- open / create -------------------------------------------------------------

  TEST_CASE("Open: O_CREAT makes an empty regular file with mode & ~umask") {
    TestFs fs;
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_WRONLY, 0666));
    REQUIRE(fd.ok());
    struct stat st = Lstat(fs.path("f"));
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 0644);  // umask 022
    CHECK(st.st_size == 0);
    CHECK(st.st_nlink == 1);
    CHECK(st.st_uid == 0);
    CHECK(st.st_gid == 0);
    CHECK(st.st_blocks == 0);
    CHECK(st.st_blksize == 4096);
  }

  TEST_CASE("Open: O_CREAT|O_EXCL on an existing name is EEXIST") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "data") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(symlink("nowhere", fs.path("dangling").c_str()) == 0);
    CHECK(SYS(open(fs.path("f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == "EEXIST");
    CHECK(SYS(open(fs.path("d").c_str(), O_CREAT | O_EXCL | O_RDONLY, 0644)) == "EEXIST");
    // O_EXCL does not follow a symlink, even a dangling one.
    CHECK(SYS(open(fs.path("dangling").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == "EEXIST");
    CHECK(SYS(access(fs.path("nowhere").c_str(), F_OK)) == "ENOENT");
    CHECK(ReadFile(fs.path("f")) == "data");
  }

  TEST_CASE("Open: O_CREAT without O_EXCL opens an existing file unchanged") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "keep me", 0600) == "");
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_RDWR, 0777));
    REQUIRE(fd.ok());
    CHECK(PreadAll(fd.get(), 100, 0) == "keep me");
    CHECK((Lstat(fs.path("f")).st_mode & 07777) == 0600);
  }

  TEST_CASE("Open: O_CREAT through a dangling symlink creates its target") {
    TestFs fs;
    REQUIRE(symlink("target", fs.path("link").c_str()) == 0);
    Fd fd(open(fs.path("link").c_str(), O_CREAT | O_WRONLY, 0644));
    REQUIRE(fd.ok());
    CHECK(S_ISREG(Lstat(fs.path("target")).st_mode));
    CHECK(S_ISLNK(Lstat(fs.path("link")).st_mode));
  }

  TEST_CASE("Open: O_TRUNC empties an existing file and frees its blocks") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), Pattern(20000, 1)) == "");
    Fd fd(open(fs.path("f").c_str(), O_WRONLY | O_TRUNC));
    REQUIRE(fd.ok());
    struct stat st {};
    REQUIRE(fstat(fd.get(), &st) == 0);
    CHECK(st.st_size == 0);
    CHECK(st.st_blocks == 0);
    CHECK(ReadFile(fs.path("f")) == "");
  }

  TEST_CASE("Open: O_TRUNC with O_RDONLY on a read-write file still truncates (Linux)") {
    // POSIX leaves O_RDONLY|O_TRUNC unspecified; Linux truncates when the
    // caller could open for writing.
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    Fd fd(open(fs.path("f").c_str(), O_RDONLY | O_TRUNC));
    REQUIRE(fd.ok());
    CHECK(Lstat(fs.path("f")).st_size == 0);
  }

  TEST_CASE("Open: O_DIRECTORY on a non-directory is ENOTDIR") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    CHECK(SYS(open(fs.path("f").c_str(), O_RDONLY | O_DIRECTORY)) == "ENOTDIR");
    CHECK(SYS(open(fs.path("l").c_str(), O_RDONLY | O_DIRECTORY)) == "ENOTDIR");
    CHECK(SYS(open(fs.path("missing").c_str(), O_RDONLY | O_DIRECTORY)) == "ENOENT");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    Fd d(open(fs.path("d").c_str(), O_RDONLY | O_DIRECTORY));
    CHECK(d.ok());
  }

  TEST_CASE("Open: O_CREAT in a missing directory is ENOENT") {
    TestFs fs;
    CHECK(SYS(open(fs.path("nodir/f").c_str(), O_CREAT | O_WRONLY, 0644)) == "ENOENT");
    CHECK(SYS(open(fs.path("missing").c_str(), O_RDONLY)) == "ENOENT");
    CHECK(ListDir(fs.root()).empty());
  }

  TEST_CASE("Open: a path through a regular file is ENOTDIR") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    CHECK(SYS(open(fs.path("f/x").c_str(), O_CREAT | O_WRONLY, 0644)) == "ENOTDIR");
    CHECK(SYS(open(fs.path("f/").c_str(), O_RDONLY)) == "ENOTDIR");
    CHECK(SYS(mkdir(fs.path("f/d").c_str(), 0755)) == "ENOTDIR");
  }

  TEST_CASE("Open: a directory cannot be opened for writing (EISDIR)") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(SYS(open(fs.path("d").c_str(), O_WRONLY)) == "EISDIR");
    CHECK(SYS(open(fs.path("d").c_str(), O_RDWR)) == "EISDIR");
    CHECK(SYS(open(fs.path("d").c_str(), O_CREAT | O_WRONLY, 0644)) == "EISDIR");
  }

  TEST_CASE("Open: O_NOFOLLOW on a symlink is ELOOP") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    CHECK(SYS(open(fs.path("l").c_str(), O_RDONLY | O_NOFOLLOW)) == "ELOOP");
  }

  TEST_CASE("Mknod: FIFOs are created with their type and mode") {
    TestFs fs;
    REQUIRE(SYS(mkfifo(fs.path("fifo").c_str(), 0640)) == "OK");
    struct stat st = Lstat(fs.path("fifo"));
    CHECK(S_ISFIFO(st.st_mode));
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(st.st_size == 0);
    CHECK(SYS(mkfifo(fs.path("fifo").c_str(), 0640)) == "EEXIST");
  }

  // --- mkdir / rmdir / unlink ----------------------------------------------------

  TEST_CASE("Mkdir: a new directory is empty with nlink 2 and mode & ~umask") {
    TestFs fs;
    REQUIRE(SYS(mkdir(fs.path("d").c_str(), 0777)) == "OK");
    struct stat st = Lstat(fs.path("d"));
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 0755);
    CHECK(st.st_nlink == 2);
    CHECK(ListDir(fs.path("d")).empty());
    CHECK(Lstat(fs.path("d/..")).st_ino == Lstat(fs.root()).st_ino);
  }

  TEST_CASE("Mkdir: the sticky bit in the mode is kept") {
    TestFs fs;
    umask(0);
    int rc = mkdir(fs.path("t").c_str(), 01777);
    umask(022);
    REQUIRE(rc == 0);
    CHECK((Lstat(fs.path("t")).st_mode & 07777) == 01777);
  }

  TEST_CASE("Mkdir: an existing name is EEXIST whatever its type") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(symlink("d", fs.path("l").c_str()) == 0);
    CHECK(SYS(mkdir(fs.path("d").c_str(), 0755)) == "EEXIST");
    CHECK(SYS(mkdir(fs.path("f").c_str(), 0755)) == "EEXIST");
    CHECK(SYS(mkdir(fs.path("l").c_str(), 0755)) == "EEXIST");
    CHECK(SYS(mkdir(fs.path("missing/d").c_str(), 0755)) == "ENOENT");
  }

  TEST_CASE("Rmdir: a non-empty directory is ENOTEMPTY and stays intact") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d/f"), "x") == "");
    CHECK(SYS(rmdir(fs.path("d").c_str())) == "ENOTEMPTY");
    CHECK(ListDir(fs.path("d")) == std::vector<std::string>{"f"});
    REQUIRE(mkdir(fs.path("e").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("e/sub").c_str(), 0755) == 0);
    CHECK(SYS(rmdir(fs.path("e").c_str())) == "ENOTEMPTY");
  }

  TEST_CASE("Rmdir: a file is ENOTDIR, a missing name ENOENT, '.' EINVAL") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(symlink("d", fs.path("l").c_str()) == 0);
    CHECK(SYS(rmdir(fs.path("f").c_str())) == "ENOTDIR");
    CHECK(SYS(rmdir(fs.path("l").c_str())) == "ENOTDIR");
    CHECK(SYS(rmdir(fs.path("missing").c_str())) == "ENOENT");
    CHECK(SYS(rmdir(fs.path("d/.").c_str())) == "EINVAL");
    CHECK(S_ISDIR(Lstat(fs.path("d")).st_mode));
  }

  TEST_CASE("Rmdir: an empty directory goes away and its parent loses a link") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("p").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("p/d").c_str(), 0755) == 0);
    CHECK(Lstat(fs.path("p")).st_nlink == 3);
    CHECK(SYS(rmdir(fs.path("p/d").c_str())) == "OK");
    CHECK(Lstat(fs.path("p")).st_nlink == 2);
    CHECK(SYS(access(fs.path("p/d").c_str(), F_OK)) == "ENOENT");
  }

  TEST_CASE("Rmdir: a directory removed while open keeps a valid fd; creating in it is ENOENT") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    Fd fd(open(fs.path("d").c_str(), O_RDONLY | O_DIRECTORY));
    REQUIRE(fd.ok());
    REQUIRE(rmdir(fs.path("d").c_str()) == 0);
    struct stat st {};
    CHECK(SYS(fstat(fd.get(), &st)) == "OK");
    CHECK(st.st_nlink == 0);
    CHECK(SYS(openat(fd.get(), "new", O_CREAT | O_WRONLY, 0644)) == "ENOENT");
  }

  TEST_CASE("Unlink: a directory is EISDIR, a missing name ENOENT") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(SYS(unlink(fs.path("d").c_str())) == "EISDIR");
    CHECK(SYS(unlink(fs.path("missing").c_str())) == "ENOENT");
    CHECK(SYS(unlink(fs.path("d/missing").c_str())) == "ENOENT");
    CHECK(S_ISDIR(Lstat(fs.path("d")).st_mode));
  }

  TEST_CASE("Unlink: an open file stays readable and writable until closed") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "still here") == "");
    Fd fd(open(fs.path("f").c_str(), O_RDWR));
    REQUIRE(fd.ok());
    REQUIRE(unlink(fs.path("f").c_str()) == 0);
    CHECK(SYS(access(fs.path("f").c_str(), F_OK)) == "ENOENT");
    struct stat st {};
    REQUIRE(fstat(fd.get(), &st) == 0);
    CHECK(st.st_nlink == 0);
    CHECK(PreadAll(fd.get(), 100, 0) == "still here");
    CHECK(PwriteAll(fd.get(), "more", 10) == "");
    CHECK(PreadAll(fd.get(), 100, 0) == "still heremore");
    CHECK(ListDir(fs.root()).empty());
  }

  TEST_CASE("Unlink: freed blocks return to the filesystem once the last fd closes") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), Pattern(1 << 20, 3)) == "");
    REQUIRE(fsync(Fd(open(fs.root().c_str(), O_RDONLY)).get()) == 0);
    struct statvfs before {};
    REQUIRE(statvfs(fs.root().c_str(), &before) == 0);
    {
      Fd fd(open(fs.path("f").c_str(), O_RDONLY));
      REQUIRE(unlink(fs.path("f").c_str()) == 0);
      CHECK(PreadAll(fd.get(), 4, 0) == Pattern(4, 3));
    }
    struct statvfs after {};
    // The kernel releases the inode asynchronously (FUSE: FORGET); give it a moment.
    for (int i = 0; i < 100; ++i) {
      REQUIRE(statvfs(fs.root().c_str(), &after) == 0);
      if (after.f_bfree >= before.f_bfree + 256) break;
      TickClock();
    }
    CHECK(after.f_bfree >= before.f_bfree + 256);
  }

  // --- link counts ----------------------------------------------------------------

  TEST_CASE("Link count: a directory has 2 + its subdirectories; files do not count") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("p").c_str(), 0755) == 0);
    const nlink_t root0 = Lstat(fs.root()).st_nlink;
    CHECK(Lstat(fs.path("p")).st_nlink == 2);
    for (const char* d : {"p/a", "p/b", "p/c"}) REQUIRE(mkdir(fs.path(d).c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("p/f"), "") == "");
    REQUIRE(symlink("a", fs.path("p/l").c_str()) == 0);
    CHECK(Lstat(fs.path("p")).st_nlink == 5);
    REQUIRE(rmdir(fs.path("p/b").c_str()) == 0);
    CHECK(Lstat(fs.path("p")).st_nlink == 4);
    CHECK(Lstat(fs.root()).st_nlink == root0);
  }

  TEST_CASE("Link count: renaming a directory across parents moves one link") {
    TestFs fs;
    for (const char* d : {"a", "b", "a/sub", "a/sub/x"})
      REQUIRE(mkdir(fs.path(d).c_str(), 0755) == 0);
    CHECK(Lstat(fs.path("a")).st_nlink == 3);
    CHECK(Lstat(fs.path("b")).st_nlink == 2);
    REQUIRE(SYS(rename(fs.path("a/sub").c_str(), fs.path("b/sub").c_str())) == "OK");
    CHECK(Lstat(fs.path("a")).st_nlink == 2);
    CHECK(Lstat(fs.path("b")).st_nlink == 3);
    CHECK(Lstat(fs.path("b/sub")).st_nlink == 3);
    CHECK(Lstat(fs.path("b/sub/..")).st_ino == Lstat(fs.path("b")).st_ino);
    // Within one parent nothing changes.
    REQUIRE(SYS(rename(fs.path("b/sub").c_str(), fs.path("b/sub2").c_str())) == "OK");
    CHECK(Lstat(fs.path("b")).st_nlink == 3);
  }

  TEST_CASE("Link count: a directory renamed over an empty directory in another parent") {
    TestFs fs;
    for (const char* d : {"a", "b", "a/src", "b/dst"})
      REQUIRE(mkdir(fs.path(d).c_str(), 0755) == 0);
    const ino_t src = Lstat(fs.path("a/src")).st_ino;
    REQUIRE(SYS(rename(fs.path("a/src").c_str(), fs.path("b/dst").c_str())) == "OK");
    CHECK(Lstat(fs.path("a")).st_nlink == 2);
    CHECK(Lstat(fs.path("b")).st_nlink == 3);
    CHECK(Lstat(fs.path("b/dst")).st_ino == src);
    CHECK(Lstat(fs.path("b/dst/..")).st_ino == Lstat(fs.path("b")).st_ino);
  }

  // --- hard links ------------------------------------------------------------------

  TEST_CASE("Link: both names share the inode and the data; nlink counts them") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "one") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(SYS(link(fs.path("a").c_str(), fs.path("b").c_str())) == "OK");
    REQUIRE(SYS(link(fs.path("a").c_str(), fs.path("d/c").c_str())) == "OK");
    CHECK(Lstat(fs.path("a")).st_nlink == 3);
    CHECK(Lstat(fs.path("b")).st_ino == Lstat(fs.path("a")).st_ino);
    CHECK(Lstat(fs.path("d/c")).st_ino == Lstat(fs.path("a")).st_ino);
    REQUIRE(WriteFile(fs.path("d/c"), "two, longer") == "");
    CHECK(ReadFile(fs.path("a")) == "two, longer");
    REQUIRE(unlink(fs.path("a").c_str()) == 0);
    CHECK(Lstat(fs.path("b")).st_nlink == 2);
    CHECK(ReadFile(fs.path("b")) == "two, longer");
    CHECK(Lstat(fs.path("d")).st_nlink == 2);  // hard links do not count for dirs
  }

  TEST_CASE("Link: a directory cannot be hard-linked (EPERM)") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(SYS(link(fs.path("d").c_str(), fs.path("d2").c_str())) == "EPERM");
    CHECK(Lstat(fs.path("d")).st_nlink == 2);
    CHECK(SYS(access(fs.path("d2").c_str(), F_OK)) == "ENOENT");
  }

  TEST_CASE("Link: errors for an existing new name, a missing source or parent") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    REQUIRE(WriteFile(fs.path("b"), "b") == "");
    CHECK(SYS(link(fs.path("a").c_str(), fs.path("b").c_str())) == "EEXIST");
    CHECK(SYS(link(fs.path("missing").c_str(), fs.path("c").c_str())) == "ENOENT");
    CHECK(SYS(link(fs.path("a").c_str(), fs.path("nodir/c").c_str())) == "ENOENT");
    CHECK(SYS(link(fs.path("a").c_str(), fs.path("b/c").c_str())) == "ENOTDIR");
    CHECK(Lstat(fs.path("a")).st_nlink == 1);
    CHECK(ReadFile(fs.path("b")) == "b");
  }

  TEST_CASE("Link: linkat without AT_SYMLINK_FOLLOW links the symlink itself") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    REQUIRE(SYS(linkat(AT_FDCWD, fs.path("l").c_str(), AT_FDCWD, fs.path("l2").c_str(), 0)) ==
            "OK");
    CHECK(S_ISLNK(Lstat(fs.path("l2")).st_mode));
    CHECK(Lstat(fs.path("l")).st_nlink == 2);
    CHECK(Lstat(fs.path("f")).st_nlink == 1);
    REQUIRE(SYS(linkat(AT_FDCWD, fs.path("l").c_str(), AT_FDCWD, fs.path("f2").c_str(),
                       AT_SYMLINK_FOLLOW)) == "OK");
    CHECK(Lstat(fs.path("f")).st_nlink == 2);
    CHECK(Lstat(fs.path("f2")).st_ino == Lstat(fs.path("f")).st_ino);
  }

  TEST_CASE("Link: an unlinked-but-open file cannot be linked back (ENOENT)") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    Fd fd(open(fs.path("f").c_str(), O_RDONLY));
    REQUIRE(unlink(fs.path("f").c_str()) == 0);
    const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    CHECK(SYS(linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, fs.path("back").c_str(),
                     AT_SYMLINK_FOLLOW)) == "ENOENT");
  }

  // --- symlinks --------------------------------------------------------------------

  TEST_CASE("Symlink: readlink returns the target exactly and lstat size is its length") {
    TestFs fs;
    const std::string target = "some/relative/../target with spaces";
    REQUIRE(SYS(symlink(target.c_str(), fs.path("l").c_str())) == "OK");
    struct stat st = Lstat(fs.path("l"));
    CHECK(S_ISLNK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0777);
    CHECK(st.st_size == static_cast<off_t>(target.size()));
    CHECK(st.st_nlink == 1);
    char buf[256];
    ssize_t n = readlink(fs.path("l").c_str(), buf, sizeof buf);
    CHECK(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0) == target);
    // A short buffer gets a truncated target, no NUL, no error.
    n = readlink(fs.path("l").c_str(), buf, 4);
    CHECK(n == 4);
    CHECK(std::string(buf, 4) == "some");
  }

  TEST_CASE("Symlink: dangling links lstat fine and stat/open give ENOENT") {
    TestFs fs;
    REQUIRE(symlink("missing", fs.path("l").c_str()) == 0);
    struct stat st {};
    CHECK(SYS(lstat(fs.path("l").c_str(), &st)) == "OK");
    CHECK(SYS(stat(fs.path("l").c_str(), &st)) == "ENOENT");
    CHECK(SYS(open(fs.path("l").c_str(), O_RDONLY)) == "ENOENT");
    REQUIRE(WriteFile(fs.path("missing"), "now here") == "");
    CHECK(ReadFile(fs.path("l")) == "now here");
  }

  TEST_CASE("Symlink: links are followed through directories; a loop is ELOOP") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d/f"), "via link") == "");
    REQUIRE(symlink("d", fs.path("ld").c_str()) == 0);
    REQUIRE(symlink(fs.path("d/f").c_str(), fs.path("abs").c_str()) == 0);
    CHECK(ReadFile(fs.path("ld/f")) == "via link");
    CHECK(ReadFile(fs.path("abs")) == "via link");
    REQUIRE(symlink("b", fs.path("a").c_str()) == 0);
    REQUIRE(symlink("a", fs.path("b").c_str()) == 0);
    CHECK(SYS(open(fs.path("a").c_str(), O_RDONLY)) == "ELOOP");
  }

  TEST_CASE("Symlink: a 4095-byte target works; 4096 bytes is ENAMETOOLONG") {
    TestFs fs;
    // ext4 and tmpfs take 4095-byte targets (PATH_MAX - 1); xfs stops at 1023.
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs limits symlink targets to 1023 bytes");
    std::string t4095(4095, 'x');
    for (size_t i = 100; i < t4095.size(); i += 100) t4095[i] = '/';
    REQUIRE(SYS(symlink(t4095.c_str(), fs.path("ok").c_str())) == "OK");
    CHECK(Lstat(fs.path("ok")).st_size == 4095);
    std::string buf(5000, '\0');
    ssize_t n = readlink(fs.path("ok").c_str(), buf.data(), buf.size());
    REQUIRE(n == 4095);
    CHECK(buf.substr(0, 4095) == t4095);
    const std::string t4096(4096, 'y');
    CHECK(SYS(symlink(t4096.c_str(), fs.path("long").c_str())) == "ENAMETOOLONG");
    CHECK(SYS(access(fs.path("long").c_str(), F_OK)) == "ENOENT");
  }

  TEST_CASE("Symlink: targets around the inline size keep every byte") {
    TestFs fs;
    // leasefs stores targets up to 144 bytes in the inode, longer ones in a block.
    for (size_t len : {1u, 143u, 144u, 145u, 1000u}) {
      CAPTURE(len);
      const std::string t = Pattern(len, len);
      std::string target;
      for (char c : t) target += static_cast<char>('a' + static_cast<unsigned char>(c) % 26);
      const std::string name = "l" + std::to_string(len);
      REQUIRE(symlink(target.c_str(), fs.path(name).c_str()) == 0);
      std::string buf(2000, '\0');
      ssize_t n = readlink(fs.path(name).c_str(), buf.data(), buf.size());
      CHECK(n == static_cast<ssize_t>(len));
      CHECK(buf.substr(0, len) == target);
    }
  }

  TEST_CASE("Symlink: an existing name is EEXIST; an empty target ENOENT") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(SYS(symlink("x", fs.path("f").c_str())) == "EEXIST");
    CHECK(SYS(symlink("", fs.path("empty").c_str())) == "ENOENT");
    CHECK(SYS(symlink("x", fs.path("nodir/l").c_str())) == "ENOENT");
  }

  TEST_CASE("Readlink: a non-symlink is EINVAL, a missing name ENOENT") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    char buf[16];
    CHECK(SYS(readlink(fs.path("f").c_str(), buf, sizeof buf)) == "EINVAL");
    CHECK(SYS(readlink(fs.path("d").c_str(), buf, sizeof buf)) == "EINVAL");
    CHECK(SYS(readlink(fs.path("missing").c_str(), buf, sizeof buf)) == "ENOENT");
  }

  TEST_CASE("Lchown: changes the symlink, not its target") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    REQUIRE(SYS(lchown(fs.path("l").c_str(), 1000, 1001)) == "OK");
    CHECK(Lstat(fs.path("l")).st_uid == 1000);
    CHECK(Lstat(fs.path("l")).st_gid == 1001);
    CHECK(Lstat(fs.path("f")).st_uid == 0);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
