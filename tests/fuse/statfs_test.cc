// statfs(2) on a mounted leasefs: the geometry it reports and that its block
// and inode counts are true counts (they move by exactly what an operation
// allocates or frees).
//
// Reference notes: tmpfs and ext4 agree with every expectation here. xfs
// allocates inodes dynamically (f_files moves with free space) and its
// delayed allocation reserves extra blocks for metadata, so the exact-count
// tests are not meaningful there; we follow ext4.
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

struct statvfs StatFs(const TestFs& fs) {
  struct statvfs sv {};
  REQUIRE(statvfs(fs.root().c_str(), &sv) == 0);
  return sv;
}

// Makes sure freed space has been returned (the kernel may release an
// unlinked inode a moment after the last close).
struct statvfs StatFsAfterRelease(const TestFs& fs, fsblkcnt_t want_bfree) {
  struct statvfs sv = StatFs(fs);
  for (int i = 0; i < 100 && sv.f_bfree < want_bfree; ++i) {
    TickClock();
    sv = StatFs(fs);
  }
  return sv;
}

TEST_SUITE("fuse.statfs") {
  TEST_CASE("Statfs: 4 KiB blocks, 255-byte names, free <= total") {
    TestFs fs;
    struct statvfs sv = StatFs(fs);
    CHECK(sv.f_bsize == 4096);
    CHECK(sv.f_frsize == 4096);
    CHECK(sv.f_namemax == 255);
    CHECK(sv.f_blocks > 0);
    CHECK(sv.f_bfree <= sv.f_blocks);
    CHECK(sv.f_bavail <= sv.f_bfree);
    CHECK(sv.f_files > 0);
    CHECK(sv.f_ffree < sv.f_files);  // the root directory is in use
  }

  TEST_CASE("Statfs: the pool's size shows in f_blocks") {
    TestFs fs(FsOptions{.pool_size = "64M", .ref_tmpfs_bytes = 64 << 20});
    struct statvfs sv = StatFs(fs);
    // Metadata regions (journal, inode table, refcounts) take a few percent.
    CHECK(sv.f_blocks <= 16384);
    CHECK(sv.f_blocks >= 16384 * 9 / 10);
  }

  TEST_CASE("Statfs: f_bfree drops by exactly the blocks a write allocates") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs counts are not exact (see top)");
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_WRONLY, 0644));
    REQUIRE(fd.ok());
    REQUIRE(fsync(fd.get()) == 0);
    const struct statvfs before = StatFs(fs);
    REQUIRE(PwriteAll(fd.get(), Pattern(10 * 4096, 1), 0) == "");
    REQUIRE(fsync(fd.get()) == 0);
    struct statvfs after = StatFs(fs);
    CHECK(before.f_bfree - after.f_bfree == 10);
    CHECK(before.f_bavail - after.f_bavail == 10);
    CHECK(after.f_blocks == before.f_blocks);
    // Overwriting allocated blocks allocates nothing.
    REQUIRE(PwriteAll(fd.get(), Pattern(10 * 4096, 2), 0) == "");
    REQUIRE(fsync(fd.get()) == 0);
    CHECK(StatFs(fs).f_bfree == after.f_bfree);
    // A sparse write far away allocates one block.
    REQUIRE(PwriteAll(fd.get(), "x", off_t{5} << 30) == "");
    REQUIRE(fsync(fd.get()) == 0);
    CHECK(after.f_bfree - StatFs(fs).f_bfree == 1);
    fd = Fd();
    REQUIRE(unlink(fs.path("f").c_str()) == 0);
    after = StatFsAfterRelease(fs, before.f_bfree);
    CHECK(after.f_bfree == before.f_bfree);
  }

  TEST_CASE("Statfs: truncate returns exactly the blocks it frees") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs counts are not exact (see top)");
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.ok());
    REQUIRE(PwriteAll(fd.get(), Pattern(20 * 4096, 3), 0) == "");
    REQUIRE(fsync(fd.get()) == 0);
    const struct statvfs before = StatFs(fs);
    REQUIRE(ftruncate(fd.get(), 5 * 4096) == 0);
    REQUIRE(fsync(fd.get()) == 0);
    CHECK(StatFs(fs).f_bfree - before.f_bfree == 15);
  }

  TEST_CASE("Statfs: f_ffree drops by one per new inode; f_files stays") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs counts are not exact (see top)");
    const struct statvfs s0 = StatFs(fs);
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    struct statvfs s = StatFs(fs);
    CHECK(s0.f_ffree - s.f_ffree == 1);
    CHECK(s.f_files == s0.f_files);
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    REQUIRE(mkfifo(fs.path("p").c_str(), 0644) == 0);
    CHECK(s0.f_ffree - StatFs(fs).f_ffree == 4);
    // A hard link is a name, not an inode. (tmpfs charges each link against
    // its inode limit; ext4 and xfs do not, and neither does leasefs.)
    REQUIRE(link(fs.path("f").c_str(), fs.path("f2").c_str()) == 0);
    const fsfilcnt_t link_cost = FsType(fs) == "tmpfs" ? 1 : 0;
    CHECK(s0.f_ffree - StatFs(fs).f_ffree == 4 + link_cost);
    REQUIRE(unlink(fs.path("f2").c_str()) == 0);
    CHECK(s0.f_ffree - StatFs(fs).f_ffree == 4);
    REQUIRE(unlink(fs.path("f").c_str()) == 0);
    REQUIRE(rmdir(fs.path("d").c_str()) == 0);
    for (int i = 0; i < 100 && s0.f_ffree - StatFs(fs).f_ffree != 2; ++i) TickClock();
    CHECK(s0.f_ffree - StatFs(fs).f_ffree == 2);
    CHECK(StatFs(fs).f_files == s0.f_files);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
