// Engine behaviour through its public API, on an in-memory pool.
#include "engine/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include "engine/layout.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;

std::string Pattern(size_t n, char seed) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7) % 61);
  return s;
}

int Err(const Status& s) { return s.err(); }
template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

// Writes 1 MiB chunks to a new file `name` until the pool refuses; returns
// the bytes written.
uint64_t FillPool(Filesystem& fs, const std::string& name) {
  const Ino fill = MustCreate(fs, 1, name);
  const std::string chunk(1 << 20, 'f');
  uint64_t off = 0;
  for (;;) {
    iovec iov{const_cast<char*>(chunk.data()), chunk.size()};
    auto w = fs.Write(kRoot, fill, off, &iov, 1);
    if (!w.ok()) return off;
    off += *w;
  }
}

std::vector<char> Unmounted(std::unique_ptr<Filesystem>& fs, SimMedia* raw) {
  fs->Unmount();
  std::vector<char> img = raw->Snapshot();
  fs.reset();
  return img;
}

TEST_SUITE("filesystem") {
  TEST_CASE("Format: reports the metadata it zeroes, at most 64 MiB apart, and the end") {
    // A sparse 8 GiB pool file with its inode table fixed (-N): 128 MiB of
    // it to zero, skipped where the file has holes.
    const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    const std::string path = dir + "/leasefs-format-test-" + std::to_string(getpid());
    MapOptions o;
    o.create = true;
    o.create_size = uint64_t{8} << 30;
    auto m = OpenPool(path, o);
    unlink(path.c_str());
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    FormatOptions fo;
    fo.geometry.inode_count = (uint64_t{8} << 30) / 16384 - 1;
    fo.progress = [&calls](uint64_t done, uint64_t total) { calls.emplace_back(done, total); };
    REQUIRE(Format(**m, fo).ok());
    const uint64_t piece = uint64_t{64} << 20;
    REQUIRE(calls.size() >= 3);
    const uint64_t total = calls.back().second;
    CHECK(total >= (uint64_t{128} << 20));
    CHECK(calls.back().first == total);
    uint64_t before = 0;
    for (const auto& [done, of] : calls) {
      CHECK(of == total);
      CHECK(done > before);
      CHECK(done - before <= piece);
      before = done;
    }
    // A small pool: its end is reported too.
    calls.clear();
    FormatOptions small_opts;
    small_opts.progress = fo.progress;
    auto small = FormattedPool(8 << 20, small_opts);
    REQUIRE(!calls.empty());
    CHECK(calls.back().first == calls.back().second);
  }

  TEST_CASE("Filesystem: everything survives unmount and remount byte for byte") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(16 << 20), &raw);
    const Ino d = MustMkdir(*fs, 1, "dir");
    const Ino f = MustCreate(*fs, d, "file");
    MustWrite(*fs, f, 0, Pattern(300000, 'a'));
    MustWrite(*fs, f, 1 << 20, "tail");
    REQUIRE(fs->Symlink(kRoot, 1, "s", std::string(1000, 'p')).ok());
    REQUIRE(fs->Link(kRoot, f, 1, "hard").ok());
    REQUIRE(fs->SetXattr(kRoot, f, "user.k", "v", 0).ok());
    REQUIRE(fs->Mknod(kRoot, 1, "fifo", S_IFIFO | 0600, 0).ok());
    const std::string before = Observe(*fs);
    MountReport rep;
    auto fs2 = MustMount(SimMedia::FromImage(Unmounted(fs, raw)), nullptr, &rep);
    CHECK(rep.was_clean);
    CHECK_FALSE(rep.journal_replayed);
    CHECK(Observe(*fs2) == before);
  }

  TEST_CASE("Filesystem: holes read as zeros and offsets past 4 GiB work") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "sparse");
    const uint64_t far = (5ull << 30) + 123;
    MustWrite(*fs, f, far, "far away");
    auto st = fs->GetAttr(f);
    REQUIRE(st.ok());
    CHECK(st->attr.st_size == static_cast<off_t>(far + 8));
    CHECK(st->attr.st_blocks == 8);  // one 4 KiB block
    CHECK(ReadAll(*fs, f, far - 10, 18) == std::string(10, '\0') + "far away");
    CHECK(ReadAll(*fs, f, 1 << 30, 4096) == std::string(4096, '\0'));
    auto data = fs->Lseek(f, 0, SEEK_DATA);
    REQUIRE(data.ok());
    CHECK(*data == far / kBlockSize * kBlockSize);  // block granularity, as on ext4
    auto hole = fs->Lseek(f, far, SEEK_HOLE);
    REQUIRE(hole.ok());
    CHECK(*hole == far + 8);  // end of file
    CHECK(Err(fs->Lseek(f, far + 8, SEEK_DATA)) == ENXIO);
  }

  TEST_CASE("Filesystem: a partial block written after a shrink shows zeros, not old bytes") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, std::string(8192, 'x'));
    SetAttrArgs a;
    a.valid = SetAttrArgs::kSize;
    a.size = 100;
    REQUIRE(fs->SetAttr(kRoot, f, a).ok());
    SUBCASE("by writing past the end") {
      MustWrite(*fs, f, 3000, "y");
      CHECK(ReadAll(*fs, f) == std::string(100, 'x') + std::string(2900, '\0') + "y");
    }
    SUBCASE("by growing with truncate") {
      a.size = 5000;
      REQUIRE(fs->SetAttr(kRoot, f, a).ok());
      CHECK(ReadAll(*fs, f) == std::string(100, 'x') + std::string(4900, '\0'));
    }
  }

  TEST_CASE("Filesystem: a full pool gives ENOSPC, a short write, and nothing breaks") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(8 << 20), &raw);
    const Ino keep = MustCreate(*fs, 1, "keep");
    MustWrite(*fs, keep, 0, Pattern(10000, 'k'));
    const Ino full = MustMkdir(*fs, 1, "full");
    for (int i = 0; i < 63; ++i) MustCreate(*fs, full, std::to_string(i));  // one full block
    const Ino big = MustCreate(*fs, 1, "big");
    const std::string chunk(1 << 20, 'z');
    uint64_t off = 0;
    for (;;) {
      iovec iov{const_cast<char*>(chunk.data()), chunk.size()};
      auto w = fs->Write(kRoot, big, off, &iov, 1);
      if (!w.ok()) {
        CHECK(w.status().err() == ENOSPC);
        break;
      }
      off += *w;
      if (*w < chunk.size()) CHECK(*w % kBlockSize == 0);  // a short write before ENOSPC
    }
    CHECK(fs->StatFs().f_bavail == 0);
    CHECK(fs->StatFs().f_bfree > 0);  // the reserve for extent-chain growth
    CHECK(Err(fs->Create(kRoot, full, "one-more", 0644, O_RDWR)) == ENOSPC);  // needs a block
    CHECK(Err(fs->SetXattr(kRoot, keep, "user.x", "1", 0)) == ENOSPC);
    CHECK(fs->Mkdir(kRoot, 1, "still-works", 0755).ok());  // needs no block
    CHECK(fs->Rename(kRoot, 1, "still-works", 1, "renamed", 0).ok());
    CHECK(ReadAll(*fs, keep) == Pattern(10000, 'k'));
    CHECK(ReadAll(*fs, big, 0, 10) == std::string(10, 'z'));
    const std::string before = Observe(*fs);
    // Freeing space makes room again, and the pool still mounts cleanly.
    REQUIRE(fs->Unlink(kRoot, 1, "big").ok());
    fs->Forget(big, 1);
    CHECK(fs->StatFs().f_bfree > 1000);
    MustWrite(*fs, keep, 10000, "more");
    auto fs2 = MustMount(SimMedia::FromImage(Unmounted(fs, raw)));
    CHECK(ReadAll(*fs2, MustLookup(*fs2, 1, "keep")) == Pattern(10000, 'k') + "more");
    (void)before;
  }

  TEST_CASE("Filesystem: running out of inodes gives ENOSPC") {
    FormatOptions fo;
    fo.geometry.inode_count = 20;  // rounds up to 31 usable
    auto fs = MustMount(FormattedPool(8 << 20, fo));
    int made = 0;
    for (;; ++made) {
      auto e = fs->Create(kRoot, 1, "f" + std::to_string(made), 0644, O_RDWR);
      if (!e.ok()) {
        CHECK(e.status().err() == ENOSPC);
        break;
      }
    }
    CHECK(made == 30);  // 32 slots minus slot 0 and the root
    CHECK(fs->StatFs().f_ffree == 0);
    const Ino f3 = MustLookup(*fs, 1, "f3");  // now two references: create and lookup
    REQUIRE(fs->Unlink(kRoot, 1, "f3").ok());
    CHECK(Err(fs->Create(kRoot, 1, "again", 0644, O_RDWR)) == ENOSPC);  // f3 is still referenced
    fs->Forget(f3, 2);
    CHECK(fs->Create(kRoot, 1, "again", 0644, O_RDWR).ok());
  }

  TEST_CASE("Filesystem: an unlinked file stays readable while referenced and is reclaimed after") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");  // one reference (the create)
    MustWrite(*fs, f, 0, Pattern(50000, 'o'));
    const uint64_t free_before = fs->StatFs().f_bfree;
    REQUIRE(fs->Unlink(kRoot, 1, "f").ok());
    CHECK(ReadAll(*fs, f) == Pattern(50000, 'o'));
    CHECK(fs->GetAttr(f)->attr.st_nlink == 0);
    CHECK(fs->StatFs().f_bfree == free_before);
    SUBCASE("forget frees it") {
      fs->Forget(f, 1);
      CHECK(Err(fs->GetAttr(f)) == ENOENT);
      CHECK(fs->StatFs().f_bfree == free_before + 13);
    }
    SUBCASE("a restart reclaims it") {
      MountReport rep;
      std::vector<char> img = raw->Snapshot();  // the daemon "dies" here
      fs.reset();
      auto fs2 = MustMount(SimMedia::FromImage(img), nullptr, &rep);
      CHECK(rep.orphans_reclaimed == 1);
      CHECK_FALSE(rep.was_clean);
      CHECK(fs2->StatFs().f_bfree == free_before + 13);
    }
  }

  TEST_CASE("Filesystem: truncating a file with many extents spans several transactions") {
    FormatOptions fo;
    fo.geometry.journal_bytes = 64 << 10;  // the smallest journal
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(16 << 20, fo), &raw);
    const Ino a = MustCreate(*fs, 1, "a");
    const Ino b = MustCreate(*fs, 1, "b");
    // Interleave two files block by block: each ends up with 1500 extents.
    for (uint64_t i = 0; i < 1500; ++i) {
      MustWrite(*fs, a, i * kBlockSize, std::string(kBlockSize, 'a'));
      MustWrite(*fs, b, i * kBlockSize, std::string(kBlockSize, 'b'));
    }
    const uint64_t free_before = fs->StatFs().f_bfree;
    SetAttrArgs t;
    t.valid = SetAttrArgs::kSize;
    t.size = 10;
    REQUIRE(fs->SetAttr(kRoot, a, t).ok());
    CHECK(fs->StatFs().f_bfree == free_before + 1499 + 9);  // data, and the chain blocks left empty
    CHECK(ReadAll(*fs, a) == std::string(10, 'a'));
    CHECK(ReadAll(*fs, b, 1499 * kBlockSize) == std::string(kBlockSize, 'b'));
    auto fs2 = MustMount(SimMedia::FromImage(Unmounted(fs, raw)));
    CHECK(fs2->GetAttr(MustLookup(*fs2, 1, "a"))->attr.st_blocks == 8);
  }

  TEST_CASE("Filesystem: preallocated space reads as zeros and is counted") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    SUBCASE("plain: the size grows") {
      REQUIRE(fs->Fallocate(kRoot, f, 0, 1000, 100000).ok());
      auto st = fs->GetAttr(f);
      CHECK(st->attr.st_size == 101000);
      CHECK(st->attr.st_blocks == 25 * 8);
      CHECK(ReadAll(*fs, f) == std::string(101000, '\0'));
      MustWrite(*fs, f, 5000, "x");
      CHECK(ReadAll(*fs, f, 4096, 4096) == std::string(904, '\0') + "x" + std::string(3191, '\0'));
      CHECK(fs->GetAttr(f)->attr.st_blocks == 25 * 8);
    }
    SUBCASE("KEEP_SIZE: blocks past the end, size unchanged") {
      REQUIRE(fs->Fallocate(kRoot, f, FALLOC_FL_KEEP_SIZE, 0, 65536).ok());
      CHECK(fs->GetAttr(f)->attr.st_size == 0);
      CHECK(fs->GetAttr(f)->attr.st_blocks == 16 * 8);
      MustWrite(*fs, f, 0, "abc");
      CHECK(fs->GetAttr(f)->attr.st_blocks == 16 * 8);
      CHECK(ReadAll(*fs, f) == "abc");
    }
    CHECK(Err(fs->Fallocate(kRoot, f, 0x100, 0, 4096)) == EOPNOTSUPP);  // no such mode
    CHECK(Err(fs->Fallocate(kRoot, f, 0, 0, 0)) == EINVAL);
    CHECK(Err(fs->Fallocate(kRoot, f, 0, 0, 100ull << 30)) == ENOSPC);
    CHECK(Err(fs->Fallocate(kRoot, 1, 0, 0, 10)) == EISDIR);
  }

  TEST_CASE("Filesystem: writes into preallocated space succeed on a full pool") {
    auto fs = MustMount(FormattedPool(8 << 20));
    const Ino pre = MustCreate(*fs, 1, "pre");
    REQUIRE(fs->Fallocate(kRoot, pre, 0, 0, 128 * kBlockSize).ok());
    FillPool(*fs, "fill");
    CHECK(fs->StatFs().f_bavail == 0);
    // Every other block splits the preallocated extent: hundreds of extents.
    std::string expect(128 * kBlockSize, '\0');
    for (int pass = 0; pass < 2; ++pass) {
      for (uint64_t b = pass; b < 128; b += 2) {
        const std::string data(kBlockSize, static_cast<char>('a' + b % 26));
        MustWrite(*fs, pre, b * kBlockSize, data);
        expect.replace(b * kBlockSize, kBlockSize, data);
      }
    }
    CHECK(ReadAll(*fs, pre) == expect);
  }

  TEST_CASE("Filesystem: with no extent slot to spare, a write converts a whole unwritten extent") {
    MountOptions mo;
    mo.reserve_blocks = 0;  // so that nothing is kept back for chain growth
    auto mounted = Filesystem::Mount(FormattedPool(8 << 20), mo);
    REQUIRE(mounted.ok());
    auto fs = std::move(mounted).value();
    const Ino pre = MustCreate(*fs, 1, "pre");
    // 173 separate 3-block unwritten extents: the six inline slots and all
    // but two slots of the first chain block. Then fill the pool.
    constexpr uint64_t kExtents = 173;
    for (uint64_t i = 0; i < kExtents; ++i)
      REQUIRE(fs->Fallocate(kRoot, pre, 0, i * 4 * kBlockSize, 3 * kBlockSize).ok());
    FillPool(*fs, "fill");
    CHECK(fs->StatFs().f_bfree == 0);
    // A write into the middle block of an extent splits it in three (two
    // new slots). The first write takes the last two free slots; the others
    // find none and no block for a chain, so each converts its whole extent.
    for (uint64_t i = 0; i < 10; ++i) MustWrite(*fs, pre, (i * 4 + 1) * kBlockSize + 5, "mid");
    for (uint64_t i = 0; i < 10; ++i) {
      std::string want(3 * kBlockSize, '\0');
      want.replace(kBlockSize + 5, 3, "mid");
      CHECK(ReadAll(*fs, pre, i * 4 * kBlockSize, 3 * kBlockSize) == want);
    }
    CHECK(fs->GetAttr(pre)->attr.st_blocks == static_cast<blkcnt_t>(kExtents * 3 * 8));
  }

  TEST_CASE("Filesystem: rename corner cases") {
    auto fs = MustMount(FormattedPool());
    const Ino d1 = MustMkdir(*fs, 1, "d1");
    const Ino d2 = MustMkdir(*fs, 1, "d2");
    const Ino sub = MustMkdir(*fs, d1, "sub");
    const Ino f = MustCreate(*fs, d1, "f");
    MustCreate(*fs, d2, "g");
    CHECK(Err(fs->Rename(kRoot, 1, "d1", sub, "x", 0)) == EINVAL);  // into itself
    CHECK(Err(fs->Rename(kRoot, d1, "f", d2, "g", RENAME_NOREPLACE)) == EEXIST);
    CHECK(Err(fs->Rename(kRoot, d1, "f", d2, "none", RENAME_EXCHANGE)) == ENOENT);
    CHECK(Err(fs->Rename(kRoot, d1, "sub", d2, "g", 0)) == ENOTDIR);
    CHECK(Err(fs->Rename(kRoot, d1, "f", 1, "d2", 0)) == EISDIR);
    CHECK(Err(fs->Rename(kRoot, 1, "d2", 1, "d1", 0)) == ENOTEMPTY);
    CHECK(Err(fs->Rename(kRoot, d1, "f", d2, "g", RENAME_NOREPLACE | RENAME_EXCHANGE)) == EINVAL);
    // Moving a directory moves its "..", and link counts follow.
    REQUIRE(fs->Rename(kRoot, d1, "sub", d2, "sub2", 0).ok());
    CHECK(fs->GetAttr(d1)->attr.st_nlink == 2);
    CHECK(fs->GetAttr(d2)->attr.st_nlink == 3);
    CHECK(MustLookup(*fs, sub, "..") == d2);
    // Exchange a file and a directory across parents.
    REQUIRE(fs->Rename(kRoot, d1, "f", d2, "sub2", RENAME_EXCHANGE).ok());
    CHECK(MustLookup(*fs, d1, "f") == sub);
    CHECK(MustLookup(*fs, d2, "sub2") == f);
    CHECK(MustLookup(*fs, sub, "..") == d1);
    CHECK(fs->GetAttr(d1)->attr.st_nlink == 3);
    CHECK(fs->GetAttr(d2)->attr.st_nlink == 2);
    // Two names of one file: nothing happens.
    REQUIRE(fs->Link(kRoot, f, 1, "alias").ok());
    REQUIRE(fs->Rename(kRoot, 1, "alias", d2, "sub2", 0).ok());
    CHECK(MustLookup(*fs, 1, "alias") == f);
    CHECK(fs->GetAttr(f)->attr.st_nlink == 2);
    // Replacing a file drops the victim's link.
    const Ino g = MustLookup(*fs, d2, "g");
    REQUIRE(fs->Rename(kRoot, 1, "alias", d2, "g", 0).ok());
    CHECK(fs->GetAttr(g)->attr.st_nlink == 0);
    CHECK(Err(fs->Lookup(kRoot, 1, "alias")) == ENOENT);
  }

  TEST_CASE("Filesystem: permissions for an unprivileged caller") {
    auto fs = MustMount(FormattedPool());
    const Cred alice(1000, 1000), bob(1001, 1001);
    const Ino tmp = MustMkdir(*fs, 1, "tmp", 01777);
    SetAttrArgs m;
    m.valid = SetAttrArgs::kMode;
    m.mode = 01777;
    REQUIRE(fs->SetAttr(kRoot, tmp, m).ok());
    auto af = fs->Create(alice, tmp, "alice", 0600, O_RDWR);
    REQUIRE(af.ok());
    CHECK(af->attr.st_uid == 1000);
    CHECK(Err(fs->Unlink(bob, tmp, "alice")) == EPERM);  // sticky
    CHECK(Err(fs->Rename(bob, tmp, "alice", tmp, "mine", 0)) == EPERM);
    CHECK(Err(fs->Open(bob, af->attr.st_ino, O_RDONLY)) == EACCES);
    CHECK(Err(fs->SetAttr(bob, af->attr.st_ino, m)) == EPERM);
    SetAttrArgs own;
    own.valid = SetAttrArgs::kUid;
    own.uid = 1001;
    CHECK(Err(fs->SetAttr(alice, af->attr.st_ino, own)) == EPERM);
    SetAttrArgs touch;
    touch.valid = SetAttrArgs::kMtime;
    touch.mtime_ns = 5;
    CHECK(Err(fs->SetAttr(bob, af->attr.st_ino, touch)) == EPERM);
    touch.valid = SetAttrArgs::kMtimeNow | SetAttrArgs::kAtimeNow;
    CHECK(Err(fs->SetAttr(bob, af->attr.st_ino, touch)) == EACCES);
    CHECK(fs->Unlink(alice, tmp, "alice").ok());
    // setgid directories pass their group on.
    const Ino sg = MustMkdir(*fs, 1, "sg", 0777);
    SetAttrArgs grp;
    grp.valid = SetAttrArgs::kGid | SetAttrArgs::kMode;
    grp.gid = 50;
    grp.mode = 02777;
    REQUIRE(fs->SetAttr(kRoot, sg, grp).ok());
    auto sub = fs->Mkdir(alice, sg, "sub", 0755);
    REQUIRE(sub.ok());
    CHECK(sub->attr.st_gid == 50);
    CHECK((sub->attr.st_mode & S_ISGID) != 0);
    auto file = fs->Create(alice, sg, "file", 02755, O_RDWR);
    REQUIRE(file.ok());
    CHECK(file->attr.st_gid == 50);
    CHECK((file->attr.st_mode & S_ISGID) == 0);  // alice is not in group 50
    // A write by someone else clears setuid.
    SetAttrArgs suid;
    suid.valid = SetAttrArgs::kMode;
    suid.mode = 04777;
    REQUIRE(fs->SetAttr(alice, file->attr.st_ino, suid).ok());
    std::string x = "x";
    iovec iov{x.data(), 1};
    REQUIRE(fs->Write(bob, file->attr.st_ino, 0, &iov, 1).ok());
    CHECK((fs->GetAttr(file->attr.st_ino)->attr.st_mode & 07777) == 0777);
  }

  TEST_CASE("Filesystem: names and links at their limits") {
    auto fs = MustMount(FormattedPool());
    CHECK(fs->Create(kRoot, 1, std::string(255, 'n'), 0644, O_RDWR).ok());
    CHECK(Err(fs->Create(kRoot, 1, std::string(256, 'n'), 0644, O_RDWR)) == ENAMETOOLONG);
    CHECK(Err(fs->Lookup(kRoot, 1, std::string(256, 'n'))) == ENAMETOOLONG);
    CHECK(fs->Symlink(kRoot, 1, "l", std::string(4095, 't')).ok());
    CHECK(Err(fs->Symlink(kRoot, 1, "l2", std::string(4096, 't'))) == ENAMETOOLONG);
    CHECK(Err(fs->Mkdir(kRoot, 1, "l", 0755)) == EEXIST);
    const Ino d = MustMkdir(*fs, 1, "d");
    CHECK(Err(fs->Link(kRoot, d, 1, "dlink")) == EPERM);
    CHECK(Err(fs->Rmdir(kRoot, 1, "l")) == ENOTDIR);
    CHECK(Err(fs->Unlink(kRoot, 1, "d")) == EISDIR);
    MustCreate(*fs, d, "x");
    CHECK(Err(fs->Rmdir(kRoot, 1, "d")) == ENOTEMPTY);
  }

  TEST_CASE("Filesystem: xattrs follow Linux's rules") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f", 0666);
    const Cred user(1000, 1000);
    CHECK(fs->SetXattr(user, f, "user.a", "1", 0).ok());
    CHECK(Err(fs->SetXattr(user, f, "user.a", "2", XATTR_CREATE)) == EEXIST);
    CHECK(Err(fs->SetXattr(user, f, "user.b", "2", XATTR_REPLACE)) == ENODATA);
    CHECK(Err(fs->SetXattr(user, f, "trusted.t", "x", 0)) == EPERM);
    CHECK(fs->SetXattr(kRoot, f, "trusted.t", "x", 0).ok());
    CHECK(*fs->ListXattr(user, f) == std::string("user.a\0", 7));
    CHECK(*fs->ListXattr(kRoot, f) == std::string("user.a\0trusted.t\0", 17));
    CHECK(Err(fs->GetXattr(user, f, "trusted.t")) == ENODATA);
    CHECK(Err(fs->SetXattr(kRoot, f, "system.posix_acl_access", "x", 0)) == EINVAL);
    CHECK(fs->SetXattr(kRoot, f, "user.big", std::string(65536, 'v'), 0).ok());
    CHECK(Err(fs->SetXattr(kRoot, f, "user.huge", std::string(70000, 'v'), 0)) == E2BIG);
    auto l = fs->Symlink(kRoot, 1, "l", "f");
    CHECK(Err(fs->SetXattr(kRoot, l->attr.st_ino, "user.a", "1", 0)) == EPERM);
    CHECK(fs->RemoveXattr(user, f, "user.a").ok());
    CHECK(fs->RemoveXattr(user, f, "user.big").ok());
    CHECK(fs->RemoveXattr(kRoot, f, "trusted.t").ok());
    CHECK(Err(fs->RemoveXattr(kRoot, f, "trusted.t")) == ENODATA);
    CHECK(fs->ListXattr(kRoot, f)->empty());
  }

  TEST_CASE("Filesystem: readdir lists every entry once, with cookies that resume") {
    FormatOptions fo;
    fo.geometry.inode_count = 4000;
    auto fs = MustMount(FormattedPool(16 << 20, fo));
    const Ino d = MustMkdir(*fs, 1, "big");
    for (int i = 0; i < 3000; ++i) MustCreate(*fs, d, "entry-" + std::to_string(i));
    std::set<std::string> seen;
    uint64_t cookie = 0;
    for (bool more = true; more;) {
      int batch = 0;
      more = false;
      REQUIRE(fs->ReadDir(d, cookie, true, [&](const DirEntry& e) {
                  if (batch == 100) {
                    more = true;
                    return false;
                  }
                  ++batch;
                  CHECK(seen.insert(std::string(e.name)).second);
                  REQUIRE(e.entry);
                  CHECK(e.entry->attr.st_ino == e.ino);
                  cookie = e.next_cookie;
                  return true;
                }).ok());
    }
    CHECK(seen.size() == 3002);
    CHECK(seen.count(".") == 1);
    CHECK(seen.count("..") == 1);
  }

  TEST_CASE("Filesystem: mount refuses a pool whose refcounts lie") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, "data");
    std::vector<char> img = Unmounted(fs, raw);
    const auto& sb = *reinterpret_cast<const layout::Superblock*>(img.data());
    auto* rc = reinterpret_cast<uint32_t*>(img.data() + sb.refcount_start * kBlockSize);
    SUBCASE("a used block marked free") {
      uint64_t i = 0;
      while (rc[i] == 0) ++i;
      rc[i] = 0;
    }
    SUBCASE("a free block marked used") { rc[sb.data_blocks - 1] = 1; }
    auto bad = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().err() == EUCLEAN);
    CHECK(std::string(bad.status().message()).find("refcount") != std::string::npos);
  }

  TEST_CASE("Filesystem: mount refuses foreign and damaged superblocks") {
    auto img = FormattedPool()->Snapshot();
    SUBCASE("magic") { img[1] = 'X'; }
    SUBCASE("checksum") { img[100] ^= 1; }
    SUBCASE("zeros") { std::fill(img.begin(), img.begin() + 4096, 0); }
    auto bad = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().err() == EUCLEAN);
  }

  TEST_CASE("Filesystem: a newer format version is refused as such") {
    auto img = FormattedPool()->Snapshot();
    auto* sb = reinterpret_cast<layout::Superblock*>(img.data());
    sb->version = layout::kFormatVersion + 1;
    auto bad = Filesystem::Mount(SimMedia::FromImage(img), MountOptions{});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().err() == EOPNOTSUPP);
  }

  TEST_CASE("Filesystem: a read-only mount refuses changes with EROFS") {
    auto img = FormattedPool()->Snapshot();
    MountOptions ro;
    ro.read_only = true;
    auto fs = Filesystem::Mount(SimMedia::FromImage(img), ro);
    REQUIRE(fs.ok());
    CHECK(Err((*fs)->Mkdir(kRoot, 1, "d", 0755)) == EROFS);
    CHECK(Err((*fs)->Create(kRoot, 1, "f", 0644, O_RDWR)) == EROFS);
    CHECK(((*fs)->StatFs().f_flag & ST_RDONLY) != 0);
  }
}

}  // namespace
}  // namespace leasefs::engine
