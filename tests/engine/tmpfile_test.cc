// The engine's O_TMPFILE (Tmpfile, and Link of one), RENAME_WHITEOUT and
// birth times, through its public API on an in-memory pool.
#include <fcntl.h>

#include <doctest/doctest.h>
#include <linux/fs.h>
#include <sys/sysmacros.h>

#include "engine/filesystem.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;

const Cred kUser(1000, 1000);

int Err(const Status& s) { return s.err(); }
template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

Ino MustTmpfile(Filesystem& fs, Ino dir, int flags = O_RDWR, const Cred& c = kRoot) {
  auto e = fs.Tmpfile(c, dir, 0600, flags);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  return e->attr.st_ino;
}

uint64_t FreeInodes(Filesystem& fs) { return fs.StatFs().f_ffree; }

TEST_SUITE("tmpfile") {
  TEST_CASE("Tmpfile: an inode with no link and no entry, holding data; freed on its last Forget") {
    auto fs = MustMount(FormattedPool());
    const uint64_t free_before = FreeInodes(*fs);
    const Ino t = MustTmpfile(*fs, 1);
    auto st = fs->GetAttr(t);
    REQUIRE(st.ok());
    CHECK(st->attr.st_nlink == 0);
    CHECK(st->attr.st_mode == (S_IFREG | 0600));
    MustWrite(*fs, t, 0, "data");
    CHECK(ReadAll(*fs, t) == "data");
    CHECK(Observe(*fs) == Observe(*MustMount(FormattedPool())));  // nothing named
    CHECK(FreeInodes(*fs) == free_before - 1);
    fs->Forget(t, 1);
    CHECK(FreeInodes(*fs) == free_before);
    CHECK(Err(fs->GetAttr(t)) == ENOENT);
  }

  TEST_CASE("Tmpfile: Link names it once (nlink 0 -> 1); O_EXCL or a lost name make it unlinkable") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d");
    const Ino t = MustTmpfile(*fs, d);
    auto e = fs->Link(kRoot, t, d, "named");
    REQUIRE(e.ok());
    CHECK(e->attr.st_nlink == 1);
    CHECK(MustLookup(*fs, d, "named") == t);
    REQUIRE(fs->Unlink(kRoot, d, "named").ok());
    CHECK(Err(fs->Link(kRoot, t, d, "again")) == ENOENT);  // an ordinary orphan now
    const Ino x = MustTmpfile(*fs, d, O_RDWR | O_EXCL);
    CHECK(Err(fs->Link(kRoot, x, d, "x")) == ENOENT);
  }

  TEST_CASE("Tmpfile: the creator's rights on the directory, and its group if setgid") {
    auto fs = MustMount(FormattedPool());
    const Ino ro = MustMkdir(*fs, 1, "ro", 0755);
    CHECK(Err(fs->Tmpfile(kUser, ro, 0600, O_RDWR)) == EACCES);
    const Ino sg = MustMkdir(*fs, 1, "sg", 02777);
    SetAttrArgs a;
    a.valid = SetAttrArgs::kGid;
    a.gid = 77;
    REQUIRE(fs->SetAttr(kRoot, sg, a).ok());
    const Ino t = MustTmpfile(*fs, sg, O_RDWR, kUser);
    auto st = fs->GetAttr(t);
    REQUIRE(st.ok());
    CHECK(st->attr.st_uid == 1000);
    CHECK(st->attr.st_gid == 77);
    const Ino f = MustCreate(*fs, 1, "file");
    CHECK(Err(fs->Tmpfile(kRoot, f, 0600, O_RDWR)) == ENOTDIR);
    CHECK(Err(fs->Tmpfile(kRoot, 999999, 0600, O_RDWR)) == ENOENT);
    // A removed directory (still open) takes one, but nothing links into it.
    const Ino gone = MustMkdir(*fs, 1, "gone");
    MustLookup(*fs, 1, "gone");  // a reference, as the kernel's open holds
    REQUIRE(fs->Rmdir(kRoot, 1, "gone").ok());
    const Ino t2 = MustTmpfile(*fs, gone);
    CHECK(Err(fs->Link(kRoot, t2, gone, "x")) == ENOENT);
  }

  TEST_CASE("Tmpfile: an unlinked one is reclaimed by the next mount; a linked one is kept") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino gone = MustTmpfile(*fs, 1);
    MustWrite(*fs, gone, 0, std::string(50000, 'g'));
    const Ino kept = MustTmpfile(*fs, 1);
    MustWrite(*fs, kept, 0, "kept");
    REQUIRE(fs->Link(kRoot, kept, 1, "kept").ok());
    // A crash: the image as it is, references and all.
    MountReport rep;
    auto fs2 = MustMount(SimMedia::FromImage(raw->Snapshot()), nullptr, &rep);
    CHECK(rep.orphans_reclaimed == 1);
    CHECK(Err(fs2->GetAttr(gone)) == ENOENT);
    CHECK(ReadAll(*fs2, MustLookup(*fs2, 1, "kept")) == "kept");
  }

  TEST_CASE("Rename WHITEOUT: a 0/0 character device of the caller's takes the source name") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d", 0777);
    const Ino f = MustCreate(*fs, d, "f");
    REQUIRE(fs->Rename(kUser, d, "f", d, "g", RENAME_WHITEOUT).ok());
    CHECK(MustLookup(*fs, d, "g") == f);
    const Ino w = MustLookup(*fs, d, "f");
    auto st = fs->GetAttr(w);
    REQUIRE(st.ok());
    CHECK(st->attr.st_mode == S_IFCHR);
    CHECK(st->attr.st_rdev == makedev(0, 0));
    CHECK(st->attr.st_uid == 1000);
    CHECK(st->attr.st_nlink == 1);
  }

  TEST_CASE("Rename flags: EXCHANGE goes with no other flag; unknown bits are EINVAL") {
    auto fs = MustMount(FormattedPool());
    MustCreate(*fs, 1, "a");
    MustCreate(*fs, 1, "b");
    CHECK(Err(fs->Rename(kRoot, 1, "a", 1, "b", RENAME_EXCHANGE | RENAME_WHITEOUT)) == EINVAL);
    CHECK(Err(fs->Rename(kRoot, 1, "a", 1, "b", RENAME_EXCHANGE | RENAME_NOREPLACE)) == EINVAL);
    CHECK(Err(fs->Rename(kRoot, 1, "a", 1, "b", 1u << 3)) == EINVAL);
    CHECK(Err(fs->Rename(kRoot, 1, "a", 1, "b", RENAME_NOREPLACE | RENAME_WHITEOUT)) == EEXIST);
    CHECK(Err(fs->Rename(kRoot, 1, "a", 1, "c", RENAME_EXCHANGE)) == ENOENT);
    // The same inode under both names: nothing happens, not even a whiteout.
    REQUIRE(fs->Link(kRoot, MustLookup(*fs, 1, "a"), 1, "a2").ok());
    const std::string before = Observe(*fs);
    REQUIRE(fs->Rename(kRoot, 1, "a", 1, "a2", RENAME_WHITEOUT).ok());
    CHECK(Observe(*fs) == before);
  }

  TEST_CASE("Rename WHITEOUT: with no inode left for the whiteout, ENOSPC and nothing moves") {
    FormatOptions fo;
    fo.geometry.inode_count = 64;
    auto fs = MustMount(FormattedPool(8 << 20, fo));
    MustCreate(*fs, 1, "src");
    for (int i = 0; MustCreate(*fs, 1, "fill" + std::to_string(i)) && FreeInodes(*fs) > 0; ++i) {
    }
    REQUIRE(FreeInodes(*fs) == 0);
    const std::string before = Observe(*fs);
    CHECK(Err(fs->Rename(kRoot, 1, "src", 1, "dst", RENAME_WHITEOUT)) == ENOSPC);
    CHECK(Observe(*fs) == before);
    REQUIRE(fs->Rename(kRoot, 1, "src", 1, "dst", 0).ok());
  }

  TEST_CASE("Mknod: a whiteout needs no privilege; another device does") {
    auto fs = MustMount(FormattedPool());
    const Ino d = MustMkdir(*fs, 1, "d", 0777);
    CHECK(fs->Mknod(kUser, d, "wh", S_IFCHR, makedev(0, 0)).ok());
    CHECK(Err(fs->Mknod(kUser, d, "null", S_IFCHR | 0666, makedev(1, 3))) == EPERM);
    CHECK(Err(fs->Mknod(kUser, d, "blk", S_IFBLK | 0600, makedev(0, 0))) == EPERM);
  }

  TEST_CASE("Birth time: set at create, kept by writes, chmod, rename and a remount") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    auto e = fs->GetAttr(f);
    REQUIRE(e.ok());
    const int64_t born = e->btime_ns;
    CHECK(born > 0);
    CHECK(born == int64_t{e->attr.st_mtim.tv_sec} * 1'000'000'000 + e->attr.st_mtim.tv_nsec);
    MustWrite(*fs, f, 0, "more");
    SetAttrArgs a;
    a.valid = SetAttrArgs::kMode;
    a.mode = 0600;
    REQUIRE(fs->SetAttr(kRoot, f, a).ok());
    REQUIRE(fs->Rename(kRoot, 1, "f", 1, "g", 0).ok());
    CHECK(fs->GetAttr(f)->btime_ns == born);
    CHECK(fs->GetAttr(f)->attr.st_ctim.tv_sec * 1'000'000'000LL + fs->GetAttr(f)->attr.st_ctim.tv_nsec >=
          born);
    fs->Unmount();
    auto fs2 = MustMount(SimMedia::FromImage(raw->Snapshot()));
    CHECK(fs2->GetAttr(f)->btime_ns == born);
  }
}

}  // namespace
}  // namespace leasefs::engine
