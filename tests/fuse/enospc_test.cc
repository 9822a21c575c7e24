// A full leasefs: running out of blocks or inodes gives ENOSPC and nothing
// else breaks. Pools are 8 MiB (reference mode: an 8 MiB tmpfs), so they
// fill in a fraction of a second. After each test the pool is unmounted and
// fsck.leasefs must find it clean.
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr size_t kPoolBytes = 8 << 20;

FsOptions SmallPool() { return {.pool_size = "8M", .ref_tmpfs_bytes = kPoolBytes}; }

FsOptions FewInodes() {
  return {.pool_size = "8M",
          .mkfs_args = {"-N", "31"},
          .ref_tmpfs_bytes = kPoolBytes,
          .ref_tmpfs_inodes = 32};
}

struct statvfs StatFs(const TestFs& fs) {
  struct statvfs sv {};
  REQUIRE(statvfs(fs.root().c_str(), &sv) == 0);
  return sv;
}

struct Fill {
  std::string data;   // everything the filesystem accepted, from the start offset
  std::string error;  // errno name of the write that failed
};

// Appends 64 KiB chunks to `fd` from `off` until a write fails. Gives up
// (error "never full") after `limit` bytes.
Fill FillUntilFull(int fd, off_t off, uint64_t seed, size_t limit = 2 * kPoolBytes) {
  Fill f;
  for (uint64_t i = 0; f.data.size() < limit; ++i) {
    const std::string chunk = Pattern(65536, seed + i);
    errno = 0;
    ssize_t n = pwrite(fd, chunk.data(), chunk.size(), off + static_cast<off_t>(f.data.size()));
    if (n < 0) {
      f.error = ErrnoName(errno);
      return f;
    }
    f.data.append(chunk, 0, static_cast<size_t>(n));
  }
  f.error = "never full";
  return f;
}

// Waits until at least `blocks` blocks are free (an unlinked inode's blocks
// come back when the kernel lets go of it).
bool WaitFree(const TestFs& fs, fsblkcnt_t blocks) {
  for (int i = 0; i < 200; ++i) {
    if (StatFs(fs).f_bfree >= blocks) return true;
    TickClock();
  }
  return false;
}

TEST_SUITE("fuse.enospc") {
  TEST_CASE("ENOSPC: writing until full fails with ENOSPC and keeps every accepted byte") {
    TestFs fs(SmallPool());
    REQUIRE(WriteFile(fs.path("keep"), Pattern(1 << 20, 1)) == "");
    Fd fd(open(fs.path("fill").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.ok());
    Fill f = FillUntilFull(fd.get(), 0, 100);
    CHECK(f.error == "ENOSPC");
    CHECK(f.data.size() > 4u << 20);
    // f_bfree keeps counting the few blocks leasefs holds back for extent
    // chains (as ext4 counts its reserved blocks); nothing is available.
    CHECK(StatFs(fs).f_bavail == 0);
    // Once full, it stays full: the next write fails the same way.
    CHECK(SYS(pwrite(fd.get(), "x", 1, static_cast<off_t>(f.data.size()))) == "ENOSPC");
    CHECK(Lstat(fs.path("fill")).st_size == static_cast<off_t>(f.data.size()));
    CHECK(Diff(PreadAll(fd.get(), f.data.size() + 10, 0), f.data) == "");
    CHECK(Diff(ReadFile(fs.path("keep")), Pattern(1 << 20, 1)) == "");
    CHECK(SYS(fsync(fd.get())) == "OK");
    // Freeing space makes writes work again.
    REQUIRE(unlink(fs.path("keep").c_str()) == 0);
    REQUIRE(WaitFree(fs, 256));
    const std::string more = Pattern(512 << 10, 2);
    CHECK(PwriteAll(fd.get(), more, static_cast<off_t>(f.data.size())) == "");
    CHECK(Diff(PreadAll(fd.get(), more.size(), static_cast<off_t>(f.data.size())), more) == "");
    CHECK(fd.Close() == "OK");
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(Diff(ReadFile(fs.path("fill")), f.data + more) == "");
  }

  TEST_CASE("ENOSPC: a full pool still serves metadata operations and overwrites") {
    TestFs fs(SmallPool());
    REQUIRE(WriteFile(fs.path("small"), "small file") == "");
    REQUIRE(mkdir(fs.path("dir").c_str(), 0755) == 0);
    REQUIRE(setxattr(fs.path("small").c_str(), "user.a", "before", 6, 0) == 0);
    Fd fd(open(fs.path("fill").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.ok());
    Fill f = FillUntilFull(fd.get(), 0, 200);
    REQUIRE(f.error == "ENOSPC");
    // Overwriting blocks that are already allocated needs no space.
    const std::string over = Pattern(65536, 999);
    CHECK(PwriteAll(fd.get(), over, 4096) == "");
    f.data.replace(4096, over.size(), over);
    CHECK(Diff(PreadAll(fd.get(), f.data.size(), 0), f.data) == "");
    // Metadata.
    CHECK(SYS(chmod(fs.path("small").c_str(), 0600)) == "OK");
    CHECK(SYS(chown(fs.path("small").c_str(), 1000, 1000)) == "OK");
    CHECK(SYS(utimensat(AT_FDCWD, fs.path("small").c_str(), nullptr, 0)) == "OK");
    CHECK(SYS(rename(fs.path("small").c_str(), fs.path("renamed").c_str())) == "OK");
    CHECK(SYS(link(fs.path("renamed").c_str(), fs.path("linked").c_str())) == "OK");
    CHECK(SYS(unlink(fs.path("linked").c_str())) == "OK");
    CHECK(SYS(close(open(fs.path("empty").c_str(), O_CREAT | O_WRONLY, 0644))) == "OK");
    CHECK(SYS(symlink("short", fs.path("shortlink").c_str())) == "OK");
    CHECK(SYS(truncate(fs.path("empty").c_str(), 1 << 20)) == "OK");  // sparse: no blocks
    CHECK(SYS(rmdir(fs.path("dir").c_str())) == "OK");
    // An attribute that already has its block can be replaced and removed.
    CHECK(SYS(setxattr(fs.path("renamed").c_str(), "user.a", "after!", 6, XATTR_REPLACE)) == "OK");
    std::string v(16, '\0');
    CHECK(getxattr(fs.path("renamed").c_str(), "user.a", v.data(), v.size()) == 6);
    CHECK(v.substr(0, 6) == "after!");
    CHECK(SYS(setxattr(fs.path("renamed").c_str(), "user.b", "2", 1, 0)) == "OK");
    CHECK(SYS(removexattr(fs.path("renamed").c_str(), "user.b")) == "OK");
    // Things that need a new block fail cleanly.
    Fd e(open(fs.path("new").c_str(), O_CREAT | O_WRONLY, 0644));
    REQUIRE(e.ok());
    CHECK(SYS(write(e.get(), "x", 1)) == "ENOSPC");
    CHECK(Lstat(fs.path("new")).st_size == 0);
    CHECK(Lstat(fs.path("new")).st_blocks == 0);
    CHECK(SYS(fallocate(e.get(), 0, 0, 4096)) == "ENOSPC");
    CHECK(SYS(symlink(std::string(1000, 't').c_str(), fs.path("longlink").c_str())) == "ENOSPC");
    CHECK(SYS(access(fs.path("longlink").c_str(), F_OK)) == "ENOENT");
    // The first attribute of a file needs an xattr block in leasefs (tmpfs
    // keeps attributes outside its block count).
    if (!fs.reference()) {
      CHECK(SYS(setxattr(fs.path("empty").c_str(), "user.x", "v", 1, 0)) == "ENOSPC");
      CHECK(listxattr(fs.path("empty").c_str(), nullptr, 0) == 0);
    }
    // Creating in an empty directory may need a directory block: each create
    // either works or fails with ENOSPC, and no inode leaks either way.
    REQUIRE(mkdir(fs.path("grow").c_str(), 0755) == 0);
    const fsfilcnt_t ffree = StatFs(fs).f_ffree;
    int created = 0, other_errors = 0;
    for (int i = 0; i < 100; ++i) {
      const std::string r =
          SYS(mknod(fs.path("grow/" + std::to_string(i)).c_str(), S_IFREG | 0644, 0));
      created += r == "OK";
      other_errors += r != "OK" && r != "ENOSPC";
    }
    CHECK(other_errors == 0);
    CHECK(ListDir(fs.path("grow")).size() == static_cast<size_t>(created));
    CHECK(ffree - StatFs(fs).f_ffree == static_cast<fsfilcnt_t>(created));
    // A rename that needs a new directory block fails without losing the source.
    const std::string rr = SYS(rename(fs.path("shortlink").c_str(), fs.path("grow/moved").c_str()));
    CHECK((rr == "OK" || rr == "ENOSPC"));
    CHECK(S_ISLNK(Lstat(fs.path(rr == "OK" ? "grow/moved" : "shortlink")).st_mode));
    if (rr == "OK")
      REQUIRE(rename(fs.path("grow/moved").c_str(), fs.path("shortlink").c_str()) == 0);
    for (int i = 0; i < created; ++i)
      REQUIRE(unlink(fs.path("grow/" + std::to_string(i)).c_str()) == 0);
    REQUIRE(rmdir(fs.path("grow").c_str()) == 0);
    // (Removing the last attribute frees a block in leasefs: do it last.)
    CHECK(SYS(removexattr(fs.path("renamed").c_str(), "user.a")) == "OK");
    CHECK(ReadFile(fs.path("renamed")) == "small file");
    CHECK(ListDir(fs.root()) ==
          std::vector<std::string>{"empty", "fill", "new", "renamed", "shortlink"});
    e = Fd();
    fd = Fd();
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(Diff(ReadFile(fs.path("fill")), f.data) == "");
  }

  TEST_CASE("ENOSPC: fallocate larger than the free space fails and allocates nothing") {
    TestFs fs(SmallPool());
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.ok());
    const fsblkcnt_t free_blocks = StatFs(fs).f_bfree;
    REQUIRE(free_blocks > 100);
    CHECK(SYS(fallocate(fd.get(), 0, 0, static_cast<off_t>((free_blocks + 10) * 4096))) ==
          "ENOSPC");
    CHECK(StatFs(fs).f_bfree == free_blocks);
    struct stat st {};
    REQUIRE(fstat(fd.get(), &st) == 0);
    CHECK(st.st_size == 0);
    CHECK(st.st_blocks == 0);
    CHECK(SYS(fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0,
                        static_cast<off_t>((free_blocks + 10) * 4096))) == "ENOSPC");
    CHECK(StatFs(fs).f_bfree == free_blocks);
    CHECK(SYS(fallocate(fd.get(), 0, 0, static_cast<off_t>(free_blocks / 2 * 4096))) == "OK");
    CHECK(StatFs(fs).f_bfree == free_blocks - free_blocks / 2);
    fd = Fd();
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("ENOSPC: writes into preallocated space succeed on a full pool") {
    // fallocate(2): "subsequent writes into the range ... are guaranteed not
    // to fail because of lack of disk space" -- also when they split the
    // preallocated range into many pieces.
    TestFs fs(SmallPool());
    Fd pre(open(fs.path("pre").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(pre.ok());
    REQUIRE(SYS(fallocate(pre.get(), 0, 0, 128 * 4096)) == "OK");
    Fd fill(open(fs.path("fill").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(FillUntilFull(fill.get(), 0, 300).error == "ENOSPC");
    std::string model(128 * 4096, '\0');
    int failed = 0;
    std::string first_failure;
    // Every other block first (128 -> 64 written + 64 unwritten pieces), then the rest.
    for (int pass = 0; pass < 2; ++pass) {
      for (int b = pass; b < 128; b += 2) {
        const std::string data = Pattern(4096, 7000 + b);
        const std::string e = PwriteAll(pre.get(), data, off_t{b} * 4096);
        if (!e.empty() && failed++ == 0) first_failure = "block " + std::to_string(b) + ": " + e;
        model.replace(static_cast<size_t>(b) * 4096, 4096, data);
      }
    }
    CHECK_MESSAGE(failed == 0, failed << " of 128 writes failed, first " << first_failure);
    CHECK(Diff(PreadAll(pre.get(), model.size(), 0), model) == "");
    CHECK(StatFs(fs).f_bavail == 0);
    pre = Fd();
    fill = Fd();
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(Diff(ReadFile(fs.path("pre")), model) == "");
  }

  TEST_CASE("ENOSPC: when inodes run out, every kind of create fails; unlink frees one") {
    TestFs fs(FewInodes());
    int made = 0;
    for (; made < 1000; ++made) {
      Fd fd(open(fs.path("f" + std::to_string(made)).c_str(), O_CREAT | O_WRONLY, 0644));
      if (!fd.ok()) {
        CHECK(ErrnoName(errno) == "ENOSPC");
        break;
      }
    }
    CHECK(made >= 20);
    CHECK(made < 40);
    CHECK(StatFs(fs).f_ffree == 0);
    CHECK(SYS(mkdir(fs.path("d").c_str(), 0755)) == "ENOSPC");
    CHECK(SYS(symlink("x", fs.path("l").c_str())) == "ENOSPC");
    CHECK(SYS(mkfifo(fs.path("p").c_str(), 0644)) == "ENOSPC");
    CHECK(SYS(open(fs.path("g").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == "ENOSPC");
    CHECK(ListDir(fs.root()).size() == static_cast<size_t>(made));
    // Existing files keep working.
    CHECK(WriteFile(fs.path("f0"), "still writable") == "");
    CHECK(SYS(rename(fs.path("f1").c_str(), fs.path("renamed").c_str())) == "OK");
    // tmpfs charges hard links against nr_inodes; ext4 and leasefs do not.
    if (FsType(fs) != "tmpfs") {
      CHECK(SYS(link(fs.path("f0").c_str(), fs.path("hardlink").c_str())) == "OK");
      REQUIRE(unlink(fs.path("hardlink").c_str()) == 0);
    }
    REQUIRE(unlink(fs.path("f2").c_str()) == 0);
    bool created = false;
    for (int i = 0; i < 100 && !created; ++i) {
      created = mkdir(fs.path("d").c_str(), 0755) == 0;
      if (!created) TickClock();
    }
    CHECK(created);
    CHECK(ReadFile(fs.path("f0")) == "still writable");
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(ListDir(fs.root()).size() == static_cast<size_t>(made));
  }

  TEST_CASE("ENOSPC: a full pool of one-block extents can still be truncated and unlinked") {
    // Freeing thousands of extents at once must not need space the full pool
    // no longer has (nor more journal than a small pool has).
    TestFs fs(SmallPool());
    REQUIRE(WriteFile(fs.path("warmup"), "") == "");  // the root's directory block
    REQUIRE(unlink(fs.path("warmup").c_str()) == 0);
    const fsblkcnt_t free0 = StatFs(fs).f_bfree;
    int written = 0;
    {
      Fd fd(open(fs.path("frag").c_str(), O_CREAT | O_WRONLY, 0644));
      REQUIRE(fd.ok());
      std::string error;
      for (; written < 100000; ++written) {
        errno = 0;
        if (pwrite(fd.get(), Pattern(4096, written).data(), 4096, off_t{written} * 8192) != 4096) {
          error = ErrnoName(errno);
          break;
        }
      }
      CHECK(error == "ENOSPC");
      CHECK(written > 1000);
      CHECK(StatFs(fs).f_bavail == 0);
      REQUIRE(SYS(ftruncate(fd.get(), off_t{written / 2} * 8192)) == "OK");
      CHECK(StatFs(fs).f_bfree >= static_cast<fsblkcnt_t>(written - written / 2));
    }
    Fd fd(open(fs.path("frag").c_str(), O_RDONLY));
    int bad = 0;
    for (int i = 0; i < written / 2; i += 13)
      bad += PreadAll(fd.get(), 4096, off_t{i} * 8192) != Pattern(4096, i);
    CHECK(bad == 0);
    fd = Fd();
    REQUIRE(SYS(unlink(fs.path("frag").c_str())) == "OK");
    CHECK(WaitFree(fs, free0));
    CHECK(StatFs(fs).f_bfree == free0);
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("ENOSPC: filling with many small files ends in ENOSPC and every file survives") {
    TestFs fs(SmallPool());
    int made = 0;
    std::string error;
    for (; made < 100000; ++made) {
      const std::string name = "small" + std::to_string(made);
      Fd fd(open(fs.path(name).c_str(), O_CREAT | O_WRONLY, 0644));
      if (!fd.ok()) {
        error = ErrnoName(errno);
        break;
      }
      errno = 0;
      if (pwrite(fd.get(), name.data(), name.size(), 0) != static_cast<ssize_t>(name.size())) {
        error = ErrnoName(errno);
        fd = Fd();
        REQUIRE(unlink(fs.path(name).c_str()) == 0);
        break;
      }
    }
    CHECK(error == "ENOSPC");
    CHECK(made > 100);
    int bad = 0;
    for (int i = 0; i < made; ++i) {
      const std::string name = "small" + std::to_string(i);
      bad += ReadFile(fs.path(name)) != name;
    }
    CHECK(bad == 0);
    CHECK(ListDir(fs.root()).size() == static_cast<size_t>(made));
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(ListDir(fs.root()).size() == static_cast<size_t>(made));
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
