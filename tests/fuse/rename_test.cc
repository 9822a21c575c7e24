// rename(2) and renameat2(2) on a mounted leasefs: replacement rules, the
// errors Linux gives for each bad combination, RENAME_NOREPLACE and
// RENAME_EXCHANGE (including '..' and link counts of directories moved
// between parents).
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

// glibc has renameat2(), but call the syscall so the flags reach the kernel
// unchanged whatever the C library does.
long Renameat2(const std::string& from, const std::string& to, unsigned flags) {
  return syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags);
}

TEST_SUITE("fuse.rename") {
  TEST_CASE("Rename: a file moves to a new name; the old name is gone") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "payload") == "");
    const ino_t ino = Lstat(fs.path("a")).st_ino;
    REQUIRE(SYS(rename(fs.path("a").c_str(), fs.path("b").c_str())) == "OK");
    CHECK(SYS(access(fs.path("a").c_str(), F_OK)) == "ENOENT");
    CHECK(Lstat(fs.path("b")).st_ino == ino);
    CHECK(ReadFile(fs.path("b")) == "payload");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"b"});
  }

  TEST_CASE("Rename: over an existing file replaces it; an open fd keeps the old data") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "new") == "");
    REQUIRE(WriteFile(fs.path("b"), "old contents") == "");
    Fd old(open(fs.path("b").c_str(), O_RDONLY));
    REQUIRE(old.ok());
    REQUIRE(SYS(rename(fs.path("a").c_str(), fs.path("b").c_str())) == "OK");
    CHECK(ReadFile(fs.path("b")) == "new");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"b"});
    struct stat st {};
    REQUIRE(fstat(old.get(), &st) == 0);
    CHECK(st.st_nlink == 0);
    CHECK(PreadAll(old.get(), 100, 0) == "old contents");
  }

  TEST_CASE("Rename: a replaced file that has other links loses one link") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    REQUIRE(WriteFile(fs.path("b"), "b") == "");
    REQUIRE(link(fs.path("b").c_str(), fs.path("b2").c_str()) == 0);
    REQUIRE(SYS(rename(fs.path("a").c_str(), fs.path("b").c_str())) == "OK");
    CHECK(Lstat(fs.path("b2")).st_nlink == 1);
    CHECK(ReadFile(fs.path("b2")) == "b");
  }

  TEST_CASE("Rename: a directory over an empty directory replaces it") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("a").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("a/inside"), "x") == "");
    REQUIRE(mkdir(fs.path("b").c_str(), 0755) == 0);
    const nlink_t root_links = Lstat(fs.root()).st_nlink;
    REQUIRE(SYS(rename(fs.path("a").c_str(), fs.path("b").c_str())) == "OK");
    CHECK(ReadFile(fs.path("b/inside")) == "x");
    CHECK(SYS(access(fs.path("a").c_str(), F_OK)) == "ENOENT");
    CHECK(Lstat(fs.root()).st_nlink == root_links - 1);
  }

  TEST_CASE("Rename: a directory over a non-empty directory is ENOTEMPTY") {
    TestFs fs;
    // POSIX allows EEXIST or ENOTEMPTY; ext4 and tmpfs say ENOTEMPTY, xfs EEXIST.
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs answers EEXIST");
    REQUIRE(mkdir(fs.path("a").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("b").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("b/f"), "") == "");
    CHECK(SYS(rename(fs.path("a").c_str(), fs.path("b").c_str())) == "ENOTEMPTY");
    CHECK(S_ISDIR(Lstat(fs.path("a")).st_mode));
    CHECK(ListDir(fs.path("b")) == std::vector<std::string>{"f"});
  }

  TEST_CASE("Rename: a file over a directory is EISDIR") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(SYS(rename(fs.path("f").c_str(), fs.path("d").c_str())) == "EISDIR");
    CHECK(S_ISREG(Lstat(fs.path("f")).st_mode));
    CHECK(S_ISDIR(Lstat(fs.path("d")).st_mode));
  }

  TEST_CASE("Rename: a directory over a file is ENOTDIR") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(SYS(rename(fs.path("d").c_str(), fs.path("f").c_str())) == "ENOTDIR");
    REQUIRE(symlink("d", fs.path("l").c_str()) == 0);
    CHECK(SYS(rename(fs.path("d").c_str(), fs.path("l").c_str())) == "ENOTDIR");
    CHECK(S_ISDIR(Lstat(fs.path("d")).st_mode));
  }

  TEST_CASE("Rename: a directory into its own subtree is EINVAL") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("a").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("a/b").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("a/b/c").c_str(), 0755) == 0);
    CHECK(SYS(rename(fs.path("a").c_str(), fs.path("a/b/c/a").c_str())) == "EINVAL");
    CHECK(SYS(rename(fs.path("a").c_str(), fs.path("a/x").c_str())) == "EINVAL");
    // Onto an existing (non-empty) ancestor: ENOTEMPTY.
    CHECK(SYS(rename(fs.path("a/b/c").c_str(), fs.path("a").c_str())) == "ENOTEMPTY");
    CHECK(S_ISDIR(Lstat(fs.path("a/b/c")).st_mode));
  }

  TEST_CASE("Rename: two names of the same inode is a no-op that keeps both") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "x") == "");
    REQUIRE(link(fs.path("a").c_str(), fs.path("b").c_str()) == 0);
    CHECK(SYS(rename(fs.path("a").c_str(), fs.path("b").c_str())) == "OK");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"a", "b"});
    CHECK(Lstat(fs.path("a")).st_nlink == 2);
    CHECK(SYS(rename(fs.path("a").c_str(), fs.path("a").c_str())) == "OK");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"a", "b"});
  }

  TEST_CASE("Rename: hard links of one inode in different directories is a no-op too") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d1").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("d2").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d1/x"), "x") == "");
    REQUIRE(link(fs.path("d1/x").c_str(), fs.path("d2/y").c_str()) == 0);
    CHECK(SYS(rename(fs.path("d1/x").c_str(), fs.path("d2/y").c_str())) == "OK");
    CHECK(ListDir(fs.path("d1")) == std::vector<std::string>{"x"});
    CHECK(ListDir(fs.path("d2")) == std::vector<std::string>{"y"});
    CHECK(Lstat(fs.path("d2/y")).st_nlink == 2);
  }

  TEST_CASE("Rename: missing source or target directory is ENOENT; file in path ENOTDIR") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(SYS(rename(fs.path("missing").c_str(), fs.path("x").c_str())) == "ENOENT");
    CHECK(SYS(rename(fs.path("f").c_str(), fs.path("nodir/x").c_str())) == "ENOENT");
    CHECK(SYS(rename(fs.path("f").c_str(), fs.path("f/x").c_str())) == "ENOTDIR");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"f"});
  }

  TEST_CASE("Rename: a moved directory's '..' points at its new parent") {
    TestFs fs;
    for (const char* d : {"p1", "p2", "p1/d"}) REQUIRE(mkdir(fs.path(d).c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("p1/d/f"), "f") == "");
    REQUIRE(SYS(rename(fs.path("p1/d").c_str(), fs.path("p2/d").c_str())) == "OK");
    CHECK(Lstat(fs.path("p2/d/..")).st_ino == Lstat(fs.path("p2")).st_ino);
    CHECK(ReadFile(fs.path("p2/d/../d/f")) == "f");
    // p1 can now be removed: nothing refers to it any more.
    CHECK(SYS(rmdir(fs.path("p1").c_str())) == "OK");
  }

  TEST_CASE("Rename: a symlink moves as a link, not its target") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(symlink("../target", fs.path("l").c_str()) == 0);
    REQUIRE(SYS(rename(fs.path("l").c_str(), fs.path("d/l").c_str())) == "OK");
    char buf[64];
    ssize_t n = readlink(fs.path("d/l").c_str(), buf, sizeof buf);
    CHECK(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0) == "../target");
  }

  // --- renameat2 flags -------------------------------------------------------------

  TEST_CASE("RENAME_NOREPLACE: an existing target is EEXIST and nothing moves") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    REQUIRE(WriteFile(fs.path("b"), "b") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("e").c_str(), 0755) == 0);
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("b"), RENAME_NOREPLACE)) == "EEXIST");
    CHECK(SYS(Renameat2(fs.path("d"), fs.path("e"), RENAME_NOREPLACE)) == "EEXIST");
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("d"), RENAME_NOREPLACE)) == "EEXIST");
    CHECK(ReadFile(fs.path("a")) == "a");
    CHECK(ReadFile(fs.path("b")) == "b");
  }

  TEST_CASE("RENAME_NOREPLACE: a free target name works like rename") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("c"), RENAME_NOREPLACE)) == "OK");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"c"});
  }

  TEST_CASE("RENAME_EXCHANGE: two files swap names atomically") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "AAA") == "");
    REQUIRE(WriteFile(fs.path("b"), "BB") == "");
    const ino_t ia = Lstat(fs.path("a")).st_ino, ib = Lstat(fs.path("b")).st_ino;
    REQUIRE(SYS(Renameat2(fs.path("a"), fs.path("b"), RENAME_EXCHANGE)) == "OK");
    CHECK(ReadFile(fs.path("a")) == "BB");
    CHECK(ReadFile(fs.path("b")) == "AAA");
    CHECK(Lstat(fs.path("a")).st_ino == ib);
    CHECK(Lstat(fs.path("b")).st_ino == ia);
    CHECK(Lstat(fs.path("a")).st_nlink == 1);
  }

  TEST_CASE("RENAME_EXCHANGE: directories in different parents swap '..' and link counts") {
    TestFs fs;
    for (const char* d : {"p1", "p2", "p1/a", "p2/b", "p2/b/sub"})
      REQUIRE(mkdir(fs.path(d).c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("p1/a/fa"), "fa") == "");
    REQUIRE(SYS(Renameat2(fs.path("p1/a"), fs.path("p2/b"), RENAME_EXCHANGE)) == "OK");
    CHECK(ReadFile(fs.path("p2/b/fa")) == "fa");
    CHECK(S_ISDIR(Lstat(fs.path("p1/a/sub")).st_mode));
    CHECK(Lstat(fs.path("p1/a/..")).st_ino == Lstat(fs.path("p1")).st_ino);
    CHECK(Lstat(fs.path("p2/b/..")).st_ino == Lstat(fs.path("p2")).st_ino);
    // Each parent still has exactly one subdirectory.
    CHECK(Lstat(fs.path("p1")).st_nlink == 3);
    CHECK(Lstat(fs.path("p2")).st_nlink == 3);
    CHECK(Lstat(fs.path("p1/a")).st_nlink == 3);
    CHECK(Lstat(fs.path("p2/b")).st_nlink == 2);
  }

  TEST_CASE("RENAME_EXCHANGE: a directory and a file in different parents move one link") {
    TestFs fs;
    for (const char* d : {"p1", "p2", "p1/dir"}) REQUIRE(mkdir(fs.path(d).c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("p2/file"), "f") == "");
    REQUIRE(SYS(Renameat2(fs.path("p1/dir"), fs.path("p2/file"), RENAME_EXCHANGE)) == "OK");
    CHECK(S_ISREG(Lstat(fs.path("p1/dir")).st_mode));
    CHECK(S_ISDIR(Lstat(fs.path("p2/file")).st_mode));
    CHECK(Lstat(fs.path("p1")).st_nlink == 2);
    CHECK(Lstat(fs.path("p2")).st_nlink == 3);
    CHECK(Lstat(fs.path("p2/file/..")).st_ino == Lstat(fs.path("p2")).st_ino);
    // p1 holds only a file now: it can be emptied and removed.
    REQUIRE(unlink(fs.path("p1/dir").c_str()) == 0);
    CHECK(SYS(rmdir(fs.path("p1").c_str())) == "OK");
  }

  TEST_CASE("RENAME_EXCHANGE: a missing side is ENOENT and nothing changes") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("missing"), RENAME_EXCHANGE)) == "ENOENT");
    CHECK(SYS(Renameat2(fs.path("missing"), fs.path("a"), RENAME_EXCHANGE)) == "ENOENT");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"a"});
    CHECK(ReadFile(fs.path("a")) == "a");
  }

  TEST_CASE("RENAME_EXCHANGE: a directory with its own descendant is EINVAL") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("a").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("a/b").c_str(), 0755) == 0);
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("a/b"), RENAME_EXCHANGE)) == "EINVAL");
    CHECK(SYS(Renameat2(fs.path("a/b"), fs.path("a"), RENAME_EXCHANGE)) == "EINVAL");
    CHECK(S_ISDIR(Lstat(fs.path("a/b")).st_mode));
  }

  TEST_CASE("Renameat2: EXCHANGE together with NOREPLACE, or unknown flags, is EINVAL") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "a") == "");
    REQUIRE(WriteFile(fs.path("b"), "b") == "");
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("b"), RENAME_EXCHANGE | RENAME_NOREPLACE)) ==
          "EINVAL");
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("b"), 1u << 30)) == "EINVAL");
    CHECK(ReadFile(fs.path("a")) == "a");
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
