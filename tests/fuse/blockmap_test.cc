// The block-map operations through a mounted leasefs: copy_file_range, the
// leasefs ioctls (include/leasefs/ioctl.h) with their fd and errno rules,
// online defrag under a concurrent reader, and fio's e4defrag engine.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr size_t B = 4096;

std::vector<leasefs_extent> Bmap(int fd) {
  std::vector<leasefs_extent> out;
  leasefs_bmap b{};
  for (;;) {
    REQUIRE(ioctl(fd, LEASEFS_IOC_BMAP, &b) == 0);
    out.insert(out.end(), b.extents, b.extents + b.count);
    if (!(b.flags & LEASEFS_BMAP_MORE)) return out;
    b.start = b.next;
  }
}

std::string Clone(int dst, int src, uint64_t so, uint64_t len, uint64_t dof) {
  leasefs_clone_range c{src, so, len, dof};
  return SYS(ioctl(dst, LEASEFS_IOC_CLONE_RANGE, &c));
}

std::string Range(int fd, unsigned long cmd, uint64_t off, uint64_t len) {
  leasefs_range r{off, len};
  return SYS(ioctl(fd, cmd, &r));
}

TEST_SUITE("blockmap") {
  TEST_CASE("copy_file_range shares aligned blocks; statfs counts them once") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    Fd a(open(fs.path("a").c_str(), O_RDWR | O_CREAT, 0644));
    Fd b(open(fs.path("b").c_str(), O_RDWR | O_CREAT, 0644));
    const std::string data = Pattern(8 * B, 1);
    REQUIRE(PwriteAll(a.get(), data, 0) == "");
    struct statvfs before {};
    REQUIRE(fstatvfs(a.get(), &before) == 0);
    loff_t in = 0, out = 0;
    CHECK(copy_file_range(a.get(), &in, b.get(), &out, 8 * B, 0) == static_cast<ssize_t>(8 * B));
    struct statvfs after {};
    REQUIRE(fstatvfs(a.get(), &after) == 0);
    CHECK(after.f_bfree == before.f_bfree);
    CHECK(Diff(PreadAll(b.get(), 8 * B + 1, 0), data) == "");
    const auto ma = Bmap(a.get()), mb = Bmap(b.get());
    REQUIRE(ma.size() == 1);
    REQUIRE(mb.size() == 1);
    CHECK(ma[0].pool_offset == mb[0].pool_offset);
    CHECK(ma[0].refcount == 2);
    CHECK(mb[0].flags == LEASEFS_EXTENT_SHARED);
    // A write through b copies one block; a is untouched.
    REQUIRE(PwriteAll(b.get(), "X", 3 * B + 1) == "");
    CHECK(Diff(PreadAll(a.get(), 8 * B, 0), data) == "");
    const auto mb2 = Bmap(b.get());
    REQUIRE(mb2.size() == 3);
    CHECK(mb2[1].file_offset == 3 * B);
    CHECK(mb2[1].length == B);
    CHECK(mb2[1].refcount == 1);
    CHECK(mb2[1].pool_offset != ma[0].pool_offset + 3 * B);
  }

  TEST_CASE("clone ioctl: fd modes, other filesystems and bad ranges") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    Fd a(open(fs.path("a").c_str(), O_RDWR | O_CREAT, 0644));
    REQUIRE(PwriteAll(a.get(), Pattern(4 * B, 2), 0) == "");
    Fd b(open(fs.path("b").c_str(), O_RDWR | O_CREAT, 0644));
    Fd a_wo(open(fs.path("a").c_str(), O_WRONLY));
    Fd b_ro(open(fs.path("b").c_str(), O_RDONLY));
    CHECK(Clone(b.get(), a_wo.get(), 0, B, 0) == "EBADF");  // source not readable
    CHECK(Clone(b_ro.get(), a.get(), 0, B, 0) == "EBADF");  // destination not writable
    CHECK(Clone(b.get(), 9999, 0, B, 0) == "EBADF");        // no such fd
    CHECK(Clone(b.get(), -1, 0, B, 0) == "EBADF");
    const std::string other = "/dev/shm/leasefs-blockmap-other";
    Fd o(open(other.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
    REQUIRE(PwriteAll(o.get(), Pattern(B, 3), 0) == "");
    CHECK(Clone(b.get(), o.get(), 0, B, 0) == "EXDEV");  // source on tmpfs
    unlink(other.c_str());
    CHECK(Clone(b.get(), a.get(), 1, B, 0) == "EINVAL");
    CHECK(Clone(b.get(), a.get(), 0, 5 * B, 0) == "EINVAL");
    CHECK(Clone(a.get(), a.get(), 0, 2 * B, B) == "EINVAL");  // overlap
    Fd dir(open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
    CHECK(Clone(b.get(), dir.get(), 0, B, 0) == "EISDIR");
    CHECK(Stat(fs.path("b")).st_size == 0);
    // Size changes made by ioctls are visible at once.
    CHECK(Clone(b.get(), a.get(), 0, 0, 2 * B) == "OK");
    struct stat st {};
    REQUIRE(fstat(b.get(), &st) == 0);
    CHECK(st.st_size == static_cast<off_t>(6 * B));
    CHECK(Range(b.get(), LEASEFS_IOC_COLLAPSE_RANGE, 0, 2 * B) == "OK");
    REQUIRE(fstat(b.get(), &st) == 0);
    CHECK(st.st_size == static_cast<off_t>(4 * B));
    CHECK(Diff(PreadAll(b.get(), 5 * B, 0), Pattern(4 * B, 2)) == "");
    CHECK(Range(b.get(), LEASEFS_IOC_INSERT_RANGE, B, B) == "OK");
    CHECK(Stat(fs.path("b")).st_size == static_cast<off_t>(5 * B));
    CHECK(Range(b_ro.get(), LEASEFS_IOC_INSERT_RANGE, B, B) == "EBADF");
    CHECK(Range(b.get(), LEASEFS_IOC_COLLAPSE_RANGE, 0, 0) == "EINVAL");
    // Fields reserved for later must be zero, and nothing changes.
    for (leasefs_range bad : {leasefs_range{B, B, 1, 0}, leasefs_range{B, B, 0, 1}}) {
      CHECK(SYS(ioctl(b.get(), LEASEFS_IOC_INSERT_RANGE, &bad)) == "EINVAL");
      CHECK(SYS(ioctl(b.get(), LEASEFS_IOC_COLLAPSE_RANGE, &bad)) == "EINVAL");
    }
    CHECK(Stat(fs.path("b")).st_size == static_cast<off_t>(5 * B));
    // Not ours, or on a directory: ENOTTY.
    uint32_t word = 0;
    CHECK(SYS(ioctl(b.get(), _IOW('L', 0x80, uint32_t), &word)) == "ENOTTY");
    leasefs_bmap bm{};
    CHECK(SYS(ioctl(dir.get(), LEASEFS_IOC_BMAP, &bm)) == "ENOTTY");
    bm.reserved = 1;  // reserved fields must be zero
    CHECK(SYS(ioctl(b.get(), LEASEFS_IOC_BMAP, &bm)) == "EINVAL");
    bm.reserved = 0;
    CHECK(SYS(ioctl(b.get(), LEASEFS_IOC_BMAP, &bm)) == "OK");
  }

  TEST_CASE("the ABI version answers on files and directories") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    Fd f(open(fs.path("f").c_str(), O_RDONLY | O_CREAT, 0644));
    Fd dir(open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
    for (int fd : {f.get(), dir.get()}) {
      leasefs_version v;
      std::memset(&v, 0xff, sizeof(v));
      REQUIRE(SYS(ioctl(fd, LEASEFS_IOC_VERSION, &v)) == "OK");
      CHECK(v.abi_version == LEASEFS_ABI_VERSION);
      CHECK((v.features & LEASEFS_FEATURE_BLOCK_MAP) != 0);
      CHECK(v.reserved0 == 0);
      for (uint64_t r : v.reserved) CHECK(r == 0);
    }
  }

  TEST_CASE("clone between two leasefs mounts is EXDEV") {
    TestFs one, two;
    LEASEFS_ONLY(one, "leasefs ioctls");
    Fd a(open(one.path("a").c_str(), O_RDWR | O_CREAT, 0644));
    REQUIRE(PwriteAll(a.get(), Pattern(B, 4), 0) == "");
    Fd b(open(two.path("b").c_str(), O_RDWR | O_CREAT, 0644));
    CHECK(Clone(b.get(), a.get(), 0, B, 0) == "EXDEV");
    CHECK(Clone(a.get(), a.get(), 0, B, B) == "OK");  // same mount: fine
  }

  TEST_CASE("defrag runs online: a concurrent reader always sees the file's bytes") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    Fd f(open(fs.path("frag").c_str(), O_RDWR | O_CREAT, 0644));
    Fd g(open(fs.path("spacer").c_str(), O_RDWR | O_CREAT, 0644));
    const size_t blocks = 4000;
    const std::string data = Pattern(blocks * B, 5);
    for (size_t i = 0; i < blocks; ++i) {
      REQUIRE(PwriteAll(f.get(), data.substr(i * B, B), static_cast<off_t>(i * B)) == "");
      REQUIRE(PwriteAll(g.get(), "s", static_cast<off_t>(i * B)) == "");
    }
    REQUIRE(Bmap(f.get()).size() == blocks);
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0}, reads{0};
    std::thread reader([&] {
      Fd r(open(fs.path("frag").c_str(), O_RDONLY));
      for (size_t i = 0; !stop.load(); i = (i + 97) % blocks) {
        if (PreadAll(r.get(), B, static_cast<off_t>(i * B)) != data.substr(i * B, B)) ++bad;
        ++reads;
      }
    });
    while (reads.load() == 0) std::this_thread::yield();  // the reader is going
    leasefs_defrag d{};
    const std::string rc = SYS(ioctl(f.get(), LEASEFS_IOC_DEFRAG, &d));
    stop = true;
    reader.join();
    CHECK(rc == "OK");
    CHECK(bad.load() == 0);
    CHECK(d.extents_before == blocks);
    CHECK(d.extents_after == 1);
    CHECK(d.blocks_moved == blocks);
    CHECK(Bmap(f.get()).size() == 1);
    CHECK(Diff(PreadAll(f.get(), data.size() + 1, 0), data) == "");
    f.Close();
    g.Close();
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("fio's e4defrag engine runs against leasefs (EXT4_IOC_MOVE_EXT)") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    if (access("/usr/bin/fio", X_OK) != 0) {
      MESSAGE("skipped: fio is not installed");
      return;
    }
    const std::string data = Pattern(2 << 20, 6);
    {
      Fd f(open(fs.path("orig").c_str(), O_RDWR | O_CREAT, 0644));
      Fd g(open(fs.path("spacer").c_str(), O_RDWR | O_CREAT, 0644));
      for (size_t i = 0; i < data.size() / B; ++i) {
        REQUIRE(PwriteAll(f.get(), data.substr(i * B, B), static_cast<off_t>(i * B)) == "");
        REQUIRE(PwriteAll(g.get(), "s", static_cast<off_t>(i * B)) == "");
      }
    }
    const ProcessResult r =
        Run({"/usr/bin/fio", "--name=e4", "--ioengine=e4defrag", "--directory=" + fs.root(),
             "--filename=orig", "--donorname=orig.donor", "--size=2M", "--filesize=2M",
             "--bs=64k", "--rw=write", "--inplace=0"});
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find("err= 0") != std::string::npos);
    {
      Fd f(open(fs.path("orig").c_str(), O_RDONLY));
      CHECK(Diff(PreadAll(f.get(), data.size() + 1, 0), data) == "");
      CHECK(Bmap(f.get()).size() < 16);  // 512 extents before
    }
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("defrag by a user who may write the file only through a supplementary group") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    constexpr uid_t kAlice = 1000;
    constexpr gid_t kAliceGid = 1000, kShared = 2000;
    const std::string p = fs.path("grp");
    {
      Fd f(open(p.c_str(), O_RDWR | O_CREAT, 0644));
      Fd g(open(fs.path("spacer").c_str(), O_RDWR | O_CREAT, 0644));
      for (size_t i = 0; i < 8; ++i) {
        REQUIRE(PwriteAll(f.get(), Pattern(B, i), static_cast<off_t>(i * B)) == "");
        REQUIRE(PwriteAll(g.get(), "s", static_cast<off_t>(i * B)) == "");
      }
    }
    REQUIRE(chown(p.c_str(), 0, kShared) == 0);
    REQUIRE(chmod(p.c_str(), 0660) == 0);
    // The defrag runs on a worker thread after the request was received; it
    // must still see the caller's groups.
    CHECK_AS(kAlice, kAliceGid, {kShared}, [&](ChildChecks& k) {
      Fd f(open(p.c_str(), O_RDWR));
      KTRUE(k, f.ok());
      leasefs_defrag d{};
      KSYS(k, ioctl(f.get(), LEASEFS_IOC_DEFRAG, &d), "OK");
      KTRUE(k, d.extents_before == 8 && d.extents_after == 1);
    });
  }

  TEST_CASE("the block map and the size it reports come from one moment") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    constexpr size_t kBlocks = 16;
    const std::string data = Pattern(kBlocks * B, 15);
    Fd f(open(fs.path("t").c_str(), O_RDWR | O_CREAT, 0644));
    std::atomic<bool> stop{false};
    std::thread changer([&] {
      Fd w(open(fs.path("t").c_str(), O_RDWR));
      while (!stop.load()) {
        (void)PwriteAll(w.get(), data, 0);
        (void)ftruncate(w.get(), 0);
      }
    });
    // Truncating to 0 frees every block, and writing gives all of them back
    // before the size can be kFull: so a size of 0 comes with no runs, and
    // runs that reach the end come with the full size.
    int torn = 0, full = 0, empty = 0;
    for (int i = 0; i < 3000 && torn == 0; ++i) {
      leasefs_bmap b{};
      REQUIRE(ioctl(f.get(), LEASEFS_IOC_BMAP, &b) == 0);
      uint64_t mapped = 0;
      for (uint32_t j = 0; j < b.count; ++j) mapped += b.extents[j].length;
      if (b.file_size == 0 && mapped != 0) ++torn;
      if (mapped > b.file_size) ++torn;
      full += b.file_size == kBlocks * B;
      empty += b.file_size == 0;
    }
    stop = true;
    changer.join();
    CHECK(torn == 0);
    MESSAGE("bmap snapshots: " << full << " full, " << empty << " empty");
  }
}

}  // namespace
}  // namespace leasefs::testing
