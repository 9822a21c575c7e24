// File data on a mounted leasefs: exact bytes, sparse files, offsets past
// 4 GiB, large writes, O_APPEND, truncate, fsync, fallocate, SEEK_DATA /
// SEEK_HOLE and mmap.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr off_t kGiB = off_t{1} << 30;
constexpr off_t kMaxFileSize = off_t{1} << 60;  // leasefs (docs/pool_format.md)

Fd Create(TestFs& fs, const std::string& name, int flags = O_RDWR) {
  Fd fd(open(fs.path(name).c_str(), O_CREAT | flags, 0644));
  REQUIRE(fd.ok());
  return fd;
}

struct stat Fstat(const Fd& fd) {
  struct stat st {};
  REQUIRE(fstat(fd.get(), &st) == 0);
  return st;
}

bool AllZero(const std::string& s) { return s.find_first_not_of('\0') == std::string::npos; }

// lseek(SEEK_DATA/SEEK_HOLE) as "offset" or the errno name.
std::string Seek(const Fd& fd, off_t off, int whence) {
  errno = 0;
  off_t r = lseek(fd.get(), off, whence);
  return r < 0 ? ErrnoName(errno) : std::to_string(r);
}

std::string Falloc(const Fd& fd, int mode, off_t off, off_t len) {
  return SYS(fallocate(fd.get(), mode, off, len));
}

TEST_SUITE("fuse.data") {
  // --- read / write ----------------------------------------------------------------

  TEST_CASE("Write: bytes written at unaligned offsets read back exactly") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    std::string model;
    auto put = [&](off_t off, const std::string& data) {
      REQUIRE(PwriteAll(fd.get(), data, off) == "");
      if (model.size() < static_cast<size_t>(off) + data.size())
        model.resize(static_cast<size_t>(off) + data.size(), '\0');
      model.replace(static_cast<size_t>(off), data.size(), data);
    };
    put(0, Pattern(100, 1));
    put(4090, Pattern(10000, 2));  // straddles three block boundaries
    put(12345, Pattern(1, 3));
    put(50, Pattern(8192, 4));     // overwrite across a boundary
    put(40000, Pattern(4096, 5));  // block-sized but unaligned
    CHECK(Fstat(fd).st_size == static_cast<off_t>(model.size()));
    CHECK(Diff(PreadAll(fd.get(), model.size() + 100, 0), model) == "");
    // Reads at every small offset around a block boundary.
    for (off_t off = 4090; off < 4100; ++off)
      CHECK(PreadAll(fd.get(), 7, off) == model.substr(static_cast<size_t>(off), 7));
  }

  TEST_CASE("Read: at or past EOF returns 0 bytes; across EOF is short") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "0123456789", 0) == "");
    char buf[32];
    CHECK(pread(fd.get(), buf, sizeof buf, 10) == 0);
    CHECK(pread(fd.get(), buf, sizeof buf, 1 << 20) == 0);
    CHECK(pread(fd.get(), buf, sizeof buf, 8 * kGiB) == 0);
    CHECK(pread(fd.get(), buf, sizeof buf, 6) == 4);
    CHECK(std::string(buf, 4) == "6789");
  }

  TEST_CASE("Write: writev and readv move every segment in order") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    std::string a = Pattern(3000, 1), b = Pattern(5000, 2), c = Pattern(1, 3);
    struct iovec out[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
    CHECK(pwritev(fd.get(), out, 3, 100) == 8001);
    std::string x(8001 - 2, '\0'), y(2, '\0');
    struct iovec in[2] = {{x.data(), x.size()}, {y.data(), y.size()}};
    CHECK(preadv(fd.get(), in, 2, 100) == 8001);
    CHECK(x + y == a + b + c);
  }

  TEST_CASE("Write: a 64 MiB sequential file reads back checksum-identical") {
    TestFs fs;
    constexpr size_t kChunk = 1 << 20, kChunks = 64;
    uint64_t want = 1469598103934665603ull;
    {
      Fd fd = Create(fs, "big", O_WRONLY);
      for (size_t i = 0; i < kChunks; ++i) {
        const std::string chunk = Pattern(kChunk, 1000 + i);
        want = Fnv1a(chunk, want);
        REQUIRE(PwriteAll(fd.get(), chunk, static_cast<off_t>(i * kChunk)) == "");
      }
      CHECK(SYS(fsync(fd.get())) == "OK");
      CHECK(fd.Close() == "OK");
    }
    Fd fd(open(fs.path("big").c_str(), O_RDONLY));
    REQUIRE(fd.ok());
    uint64_t got = 1469598103934665603ull;
    for (size_t i = 0; i < kChunks; ++i) {
      const std::string chunk = PreadAll(fd.get(), kChunk, static_cast<off_t>(i * kChunk));
      REQUIRE(chunk.size() == kChunk);
      got = Fnv1a(chunk, got);
    }
    CHECK(got == want);
    CHECK(Fstat(fd).st_size == static_cast<off_t>(kChunk * kChunks));
    CHECK(Fstat(fd).st_blocks == static_cast<blkcnt_t>(kChunk * kChunks / 512));
  }

  TEST_CASE("Write: a single 16 MiB write call is stored whole") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    const std::string data = Pattern(16 << 20, 16);
    CHECK(pwrite(fd.get(), data.data(), data.size(), 4096 + 7) ==
          static_cast<ssize_t>(data.size()));
    std::string back(data.size(), '\0');
    CHECK(pread(fd.get(), back.data(), back.size(), 4096 + 7) == static_cast<ssize_t>(back.size()));
    CHECK(Fnv1a(back) == Fnv1a(data));
  }

  TEST_CASE("O_APPEND: every write lands at the current end, whichever descriptor") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("log"), "start;") == "");
    Fd a(open(fs.path("log").c_str(), O_WRONLY | O_APPEND));
    Fd b(open(fs.path("log").c_str(), O_WRONLY | O_APPEND));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(write(a.get(), "a1;", 3) == 3);
    CHECK(write(b.get(), "b1;", 3) == 3);
    CHECK(write(a.get(), "a2;", 3) == 3);
    CHECK(lseek(a.get(), 0, SEEK_CUR) == 15);
    // Linux: pwrite on an O_APPEND descriptor appends and ignores the offset.
    CHECK(pwrite(b.get(), "p;", 2, 0) == 2);
    CHECK(ReadFile(fs.path("log")) == "start;a1;b1;a2;p;");
  }

  // --- sparse files -------------------------------------------------------------------

  TEST_CASE("Sparse: holes read as zeros and st_blocks counts only written blocks") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "tail", (1 << 20) + 100) == "");
    struct stat st = Fstat(fd);
    CHECK(st.st_size == (1 << 20) + 104);
    CHECK(st.st_blocks == 8);
    const std::string hole = PreadAll(fd.get(), 1 << 20, 0);
    CHECK(hole.size() == (1u << 20));
    CHECK(AllZero(hole));
    CHECK(PreadAll(fd.get(), 200, (1 << 20)) == std::string(100, '\0') + "tail");
    REQUIRE(PwriteAll(fd.get(), "head", 0) == "");
    CHECK(Fstat(fd).st_blocks == 16);
  }

  TEST_CASE("Sparse: offsets past 4 GiB keep their bytes, and the holes stay zeros") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    const std::string edge = Pattern(8192, 7), far = Pattern(5000, 8), tera = "terabyte";
    REQUIRE(PwriteAll(fd.get(), edge, 4 * kGiB - 4096) == "");  // straddles 2^32
    REQUIRE(PwriteAll(fd.get(), far, 6 * kGiB + 12345) == "");
    REQUIRE(PwriteAll(fd.get(), tera, off_t{1} << 40) == "");
    struct stat st = Fstat(fd);
    CHECK(st.st_size == (off_t{1} << 40) + 8);
    // xfs preallocates speculatively past each write while the file is open.
    if (FsType(fs) != "xfs") CHECK(st.st_blocks == (2 + 2 + 1) * 8);
    CHECK(PreadAll(fd.get(), edge.size(), 4 * kGiB - 4096) == edge);
    CHECK(PreadAll(fd.get(), far.size(), 6 * kGiB + 12345) == far);
    CHECK(PreadAll(fd.get(), 100, off_t{1} << 40) == tera);
    CHECK(AllZero(PreadAll(fd.get(), 1 << 20, 5 * kGiB)));
    CHECK(AllZero(PreadAll(fd.get(), 12345, 6 * kGiB)));
    CHECK(AllZero(PreadAll(fd.get(), 4096, 4 * kGiB + 4096)));
  }

  TEST_CASE("Sparse: a write of zeros is data, not a hole") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), std::string(8192, '\0'), 0) == "");
    CHECK(Fstat(fd).st_blocks == 16);
    CHECK(Seek(fd, 0, SEEK_DATA) == "0");
  }

  TEST_CASE("Sparse: a file of 5,000 separate extents reads, seeks, fills and truncates right") {
    // Far more extents than fit in the inode: the lookups go through the
    // extent chain, and must stay correct at this size.
    TestFs fs;
    // (xfs's speculative preallocation makes its st_blocks larger here.)
    const bool exact_blocks = FsType(fs) != "xfs";
    Fd fd = Create(fs, "f");
    constexpr int kExtents = 5000;
    for (int i = 0; i < kExtents; ++i)
      REQUIRE(PwriteAll(fd.get(), Pattern(4096, i), off_t{i} * 2 * 4096) == "");
    if (exact_blocks) CHECK(Fstat(fd).st_blocks == kExtents * 8);
    int bad = 0;
    for (int i = 0; i < kExtents; i += 7) {
      bad += PreadAll(fd.get(), 4096, off_t{i} * 8192) != Pattern(4096, i);
      if (i + 1 < kExtents) bad += !AllZero(PreadAll(fd.get(), 4096, off_t{i} * 8192 + 4096));
    }
    CHECK(bad == 0);
    CHECK(Seek(fd, 4096, SEEK_DATA) == "8192");
    CHECK(Seek(fd, off_t{4321} * 8192, SEEK_HOLE) == std::to_string(off_t{4321} * 8192 + 4096));
    // A read spanning many extents and holes.
    const std::string span = PreadAll(fd.get(), 64 * 8192, off_t{2000} * 8192);
    REQUIRE(span.size() == 64 * 8192u);
    for (int i = 0; i < 64; ++i) {
      CHECK(Diff(span.substr(static_cast<size_t>(i) * 8192, 4096), Pattern(4096, 2000 + i)) == "");
      CHECK(AllZero(span.substr(static_cast<size_t>(i) * 8192 + 4096, 4096)));
    }
    // Filling holes in the middle, then cutting the file there.
    for (int i = 2500; i < 2600; ++i)
      REQUIRE(PwriteAll(fd.get(), Pattern(4096, 100000 + i), off_t{i} * 8192 + 4096) == "");
    if (exact_blocks) CHECK(Fstat(fd).st_blocks == (kExtents + 100) * 8);
    CHECK(Diff(PreadAll(fd.get(), 4096, off_t{2550} * 8192 + 4096), Pattern(4096, 102550)) == "");
    REQUIRE(ftruncate(fd.get(), off_t{2550} * 8192 + 100) == 0);
    if (exact_blocks) CHECK(Fstat(fd).st_blocks == (2550 + 1 + 50) * 8);
    CHECK(PreadAll(fd.get(), 8192, off_t{2549} * 8192 + 4096) ==
          Pattern(4096, 102549) + Pattern(100, 2550));
    CHECK(Seek(fd, off_t{2550} * 8192, SEEK_HOLE) == std::to_string(off_t{2550} * 8192 + 100));
  }

  // --- truncate -------------------------------------------------------------------------

  TEST_CASE("Ftruncate: shrinking then growing reads zeros past the cut, inside the block too") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), std::string(3 * 4096, '\xAA'), 0) == "");
    REQUIRE(SYS(ftruncate(fd.get(), 100)) == "OK");
    CHECK(Fstat(fd).st_size == 100);
    CHECK(Fstat(fd).st_blocks == 8);
    REQUIRE(SYS(ftruncate(fd.get(), 3 * 4096)) == "OK");
    const std::string all = PreadAll(fd.get(), 3 * 4096, 0);
    REQUIRE(all.size() == 3 * 4096u);
    CHECK(all.substr(0, 100) == std::string(100, '\xAA'));
    CHECK(AllZero(all.substr(100)));
    CHECK(Fstat(fd).st_blocks == 8);  // growing allocates nothing
  }

  TEST_CASE("Write: extending a file that was cut mid-block shows zeros, not the old bytes") {
    TestFs fs;
    {
      Fd fd = Create(fs, "f");
      REQUIRE(PwriteAll(fd.get(), std::string(3 * 4096, '\xAA'), 0) == "");
      REQUIRE(ftruncate(fd.get(), 100) == 0);
    }
    REQUIRE(fs.Remount() == "");  // the cut must be durable, not only cached
    Fd fd(open(fs.path("f").c_str(), O_RDWR));
    REQUIRE(fd.ok());
    REQUIRE(PwriteAll(fd.get(), "end", 2 * 4096 + 10) == "");
    const std::string all = PreadAll(fd.get(), 3 * 4096, 0);
    REQUIRE(all.size() == 2 * 4096 + 13u);
    CHECK(all.substr(0, 100) == std::string(100, '\xAA'));
    CHECK(AllZero(all.substr(100, 2 * 4096 + 10 - 100)));
    CHECK(all.substr(2 * 4096 + 10) == "end");
  }

  TEST_CASE("Ftruncate: a file grown by truncate is one hole and allocates nothing") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(SYS(ftruncate(fd.get(), 5 * kGiB)) == "OK");
    struct stat st = Fstat(fd);
    CHECK(st.st_size == 5 * kGiB);
    CHECK(st.st_blocks == 0);
    CHECK(AllZero(PreadAll(fd.get(), 65536, 5 * kGiB - 65536)));
    CHECK(PreadAll(fd.get(), 10, 5 * kGiB).empty());
  }

  TEST_CASE("Ftruncate: shrinking frees whole blocks beyond the new size") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), Pattern(10 * 4096, 1), 0) == "");
    CHECK(Fstat(fd).st_blocks == 80);
    REQUIRE(ftruncate(fd.get(), 4096 + 1) == 0);
    CHECK(Fstat(fd).st_blocks == 16);
    REQUIRE(ftruncate(fd.get(), 0) == 0);
    CHECK(Fstat(fd).st_blocks == 0);
    CHECK(PreadAll(fd.get(), 10, 0).empty());
  }

  TEST_CASE("Truncate: a directory is EISDIR, a negative length EINVAL") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    CHECK(SYS(truncate(fs.path("d").c_str(), 0)) == "EISDIR");
    CHECK(SYS(truncate(fs.path("f").c_str(), -1)) == "EINVAL");
    CHECK(SYS(truncate(fs.path("missing").c_str(), 0)) == "ENOENT");
    CHECK(ReadFile(fs.path("f")) == "abc");
  }

  TEST_CASE("Truncate: beyond the maximum file size (2^60) is EFBIG") {
    TestFs fs;
    // ext4 gives EFBIG too (its limit is 16 TiB); tmpfs and xfs allow 2^63-1.
    LEASEFS_ONLY(fs, "the limit is leasefs's own");
    REQUIRE(WriteFile(fs.path("f"), "abc") == "");
    CHECK(SYS(truncate(fs.path("f").c_str(), kMaxFileSize + 1)) == "EFBIG");
    CHECK(SYS(truncate(fs.path("f").c_str(), kMaxFileSize)) == "OK");
    CHECK(Lstat(fs.path("f")).st_size == kMaxFileSize);
    Fd fd(open(fs.path("f").c_str(), O_RDWR));
    CHECK(SYS(pwrite(fd.get(), "x", 1, kMaxFileSize)) == "EFBIG");
    CHECK(SYS(fallocate(fd.get(), 0, kMaxFileSize - 4096, 8192)) == "EFBIG");
    CHECK(Lstat(fs.path("f")).st_blocks == 8);  // just "abc"
    // A write that would cross the limit is cut short at it, as on ext4.
    CHECK(pwrite(fd.get(), "xy", 2, kMaxFileSize - 1) == 1);
    CHECK(Lstat(fs.path("f")).st_size == kMaxFileSize);
  }

  // --- fsync ------------------------------------------------------------------------------

  TEST_CASE("Fsync: fsync and fdatasync return 0 on files and directories") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "data", 0) == "");
    CHECK(SYS(fsync(fd.get())) == "OK");
    CHECK(SYS(fdatasync(fd.get())) == "OK");
    Fd ro(open(fs.path("f").c_str(), O_RDONLY));
    CHECK(SYS(fsync(ro.get())) == "OK");
    Fd dir(open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
    CHECK(SYS(fsync(dir.get())) == "OK");
    CHECK(SYS(fdatasync(dir.get())) == "OK");
    CHECK(SYS(syncfs(fd.get())) == "OK");
  }

  // --- fallocate ---------------------------------------------------------------------------

  TEST_CASE("Fallocate: mode 0 extends the size, allocates the blocks and reads zeros") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "abc", 0) == "");
    CHECK(Falloc(fd, 0, 0, 1 << 20) == "OK");
    struct stat st = Fstat(fd);
    CHECK(st.st_size == (1 << 20));
    CHECK(st.st_blocks == (1 << 20) / 512);
    const std::string all = PreadAll(fd.get(), 1 << 20, 0);
    CHECK(all.substr(0, 3) == "abc");
    CHECK(AllZero(all.substr(3)));
    // Writing into preallocated space allocates nothing more.
    REQUIRE(PwriteAll(fd.get(), Pattern(100000, 1), 300000) == "");
    CHECK(Fstat(fd).st_blocks == (1 << 20) / 512);
    CHECK(Diff(PreadAll(fd.get(), 100000, 300000), Pattern(100000, 1)) == "");
  }

  TEST_CASE("Fallocate: a range past EOF extends the size; the gap reads zeros") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "abc", 0) == "");
    CHECK(Falloc(fd, 0, 8192, 4096) == "OK");
    CHECK(Fstat(fd).st_size == 12288);
    const std::string all = PreadAll(fd.get(), 20000, 0);
    CHECK(all.size() == 12288u);
    CHECK(all.substr(0, 3) == "abc");
    CHECK(AllZero(all.substr(3)));
  }

  TEST_CASE("Fallocate: over existing data changes neither data nor size") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    const std::string data = Pattern(10000, 9);
    REQUIRE(PwriteAll(fd.get(), data, 0) == "");
    CHECK(Falloc(fd, 0, 100, 5000) == "OK");
    CHECK(Fstat(fd).st_size == 10000);
    CHECK(Diff(PreadAll(fd.get(), 20000, 0), data) == "");
  }

  TEST_CASE("Fallocate: KEEP_SIZE allocates past EOF without changing the size") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "abc", 0) == "");
    CHECK(Falloc(fd, FALLOC_FL_KEEP_SIZE, 0, 64 * 4096) == "OK");
    struct stat st = Fstat(fd);
    CHECK(st.st_size == 3);
    CHECK(st.st_blocks == 64 * 8);
    CHECK(PreadAll(fd.get(), 100, 0) == "abc");
    // Growing into the preallocated space reads zeros and allocates nothing.
    REQUIRE(ftruncate(fd.get(), 10 * 4096) == 0);
    CHECK(AllZero(PreadAll(fd.get(), 10 * 4096 - 3, 3)));
    CHECK(Fstat(fd).st_blocks == 64 * 8);
  }

  TEST_CASE("Fallocate: truncating below preallocated space frees it") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "abcdef", 0) == "");
    REQUIRE(Falloc(fd, FALLOC_FL_KEEP_SIZE, 0, 64 * 4096) == "OK");
    REQUIRE(Fstat(fd).st_blocks == 64 * 8);
    REQUIRE(ftruncate(fd.get(), 3) == 0);
    CHECK(Fstat(fd).st_blocks == 8);
    CHECK(PreadAll(fd.get(), 100, 0) == "abc");
    REQUIRE(ftruncate(fd.get(), 3 * 4096) == 0);
    CHECK(AllZero(PreadAll(fd.get(), 3 * 4096, 3)));
  }

  TEST_CASE("Fallocate: the reserved blocks leave the free count immediately") {
    TestFs fs;
    // xfs's free count also moves by its metadata reservations.
    LEASEFS_AND_REFERENCE(fs, "tmpfs,ext4", "xfs block accounting is not exact");
    Fd fd = Create(fs, "f");
    struct statvfs before {
    }, after{};
    REQUIRE(statvfs(fs.root().c_str(), &before) == 0);
    REQUIRE(Falloc(fd, FALLOC_FL_KEEP_SIZE, 0, 256 * 4096) == "OK");
    REQUIRE(statvfs(fs.root().c_str(), &after) == 0);
    CHECK(before.f_bfree - after.f_bfree == 256);
  }

  TEST_CASE("Fallocate: bad arguments give the VFS errors") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    CHECK(Falloc(fd, 0, 0, 0) == "EINVAL");
    CHECK(Falloc(fd, 0, -1, 4096) == "EINVAL");
    CHECK(Falloc(fd, 0, 0, -4096) == "EINVAL");
    Fd ro(open(fs.path("f").c_str(), O_RDONLY));
    CHECK(Falloc(ro, 0, 0, 4096) == "EBADF");
    Fd dir(open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
    CHECK(Falloc(dir, 0, 0, 4096) == "EBADF");
    REQUIRE(mkfifo(fs.path("fifo").c_str(), 0644) == 0);
    Fd fifo(open(fs.path("fifo").c_str(), O_RDWR));
    CHECK(Falloc(fifo, 0, 0, 4096) == "ESPIPE");
    CHECK(Fstat(fd).st_size == 0);
  }

  TEST_CASE("Fallocate: PUNCH_HOLE frees the whole blocks and zeroes the range") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    const std::string data = Pattern(4 * 4096, 5);
    REQUIRE(PwriteAll(fd.get(), data, 0) == "");
    CHECK(Falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192) == "OK");
    CHECK(Fstat(fd).st_blocks == 16);
    CHECK(AllZero(PreadAll(fd.get(), 8192, 4096)));
    CHECK(Diff(PreadAll(fd.get(), 4096, 0), data.substr(0, 4096)) == "");
    CHECK(Diff(PreadAll(fd.get(), 4096, 3 * 4096), data.substr(3 * 4096)) == "");
    CHECK(Fstat(fd).st_size == 4 * 4096);
    // Unaligned edges are zeroed in place; the blocks stay.
    CHECK(Falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 50) == "OK");
    CHECK(AllZero(PreadAll(fd.get(), 50, 100)));
    CHECK(Fstat(fd).st_blocks == 16);
    // Without KEEP_SIZE, PUNCH_HOLE is invalid everywhere.
    CHECK(Falloc(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096) == "EOPNOTSUPP");
  }

  TEST_CASE("Fallocate: ZERO_RANGE zeroes and may grow; COLLAPSE and INSERT never reach FUSE") {
    TestFs fs;
    // tmpfs refuses ZERO_RANGE; ext4 and xfs implement it as leasefs does.
    LEASEFS_ONLY(fs, "tmpfs has no ZERO_RANGE");
    Fd fd = Create(fs, "f");
    const std::string data = Pattern(4 * 4096, 6);
    REQUIRE(PwriteAll(fd.get(), data, 0) == "");
    CHECK(Falloc(fd, FALLOC_FL_ZERO_RANGE, 4096 + 7, 4096) == "OK");
    std::string want = data;
    want.replace(4096 + 7, 4096, std::string(4096, '\0'));
    CHECK(Diff(PreadAll(fd.get(), data.size() + 1, 0), want) == "");
    CHECK(Falloc(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 6 * 4096, 4096) == "OK");
    CHECK(Fstat(fd).st_size == 4 * 4096);
    CHECK(Falloc(fd, FALLOC_FL_ZERO_RANGE, 6 * 4096, 4096) == "OK");
    CHECK(Fstat(fd).st_size == 7 * 4096);
    CHECK(AllZero(PreadAll(fd.get(), 3 * 4096, 4 * 4096)));
    // The kernel answers these for every FUSE filesystem; leasefs offers
    // them as ioctls instead (tools/leasectl, docs/block_map.md).
    CHECK(Falloc(fd, FALLOC_FL_COLLAPSE_RANGE, 4096, 4096) == "EOPNOTSUPP");
    CHECK(Falloc(fd, FALLOC_FL_INSERT_RANGE, 4096, 4096) == "EOPNOTSUPP");
    CHECK(Falloc(fd, FALLOC_FL_UNSHARE_RANGE, 4096, 4096) == "EOPNOTSUPP");
    CHECK(Fstat(fd).st_size == 7 * 4096);
  }

  // --- SEEK_DATA / SEEK_HOLE ---------------------------------------------------------------

  TEST_CASE("Lseek: SEEK_DATA and SEEK_HOLE walk the data and holes of a sparse file") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    constexpr off_t kMiB = 1 << 20;
    REQUIRE(PwriteAll(fd.get(), Pattern(4096, 1), 0) == "");
    REQUIRE(PwriteAll(fd.get(), Pattern(8192, 2), kMiB) == "");
    REQUIRE(ftruncate(fd.get(), 2 * kMiB) == 0);
    CHECK(Seek(fd, 0, SEEK_DATA) == "0");
    CHECK(Seek(fd, 0, SEEK_HOLE) == "4096");
    CHECK(Seek(fd, 100, SEEK_HOLE) == "4096");
    CHECK(Seek(fd, 4096, SEEK_DATA) == std::to_string(kMiB));
    CHECK(Seek(fd, 5000, SEEK_HOLE) == "5000");  // already in a hole
    CHECK(Seek(fd, kMiB, SEEK_HOLE) == std::to_string(kMiB + 8192));
    CHECK(Seek(fd, kMiB + 5000, SEEK_DATA) == std::to_string(kMiB + 5000));
    // The hole at the end: no more data; SEEK_HOLE stays put.
    CHECK(Seek(fd, kMiB + 8192, SEEK_DATA) == "ENXIO");
    CHECK(Seek(fd, kMiB + 8192, SEEK_HOLE) == std::to_string(kMiB + 8192));
    CHECK(Seek(fd, 2 * kMiB - 1, SEEK_HOLE) == std::to_string(2 * kMiB - 1));
    // At or past EOF: ENXIO for both.
    CHECK(Seek(fd, 2 * kMiB, SEEK_DATA) == "ENXIO");
    CHECK(Seek(fd, 2 * kMiB, SEEK_HOLE) == "ENXIO");
    CHECK(Seek(fd, 10 * kGiB, SEEK_DATA) == "ENXIO");
    CHECK(Seek(fd, -1, SEEK_DATA) == "ENXIO");
  }

  TEST_CASE("Lseek: data is found at block granularity past 4 GiB") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "x", 5 * kGiB + 5000) == "");
    CHECK(Seek(fd, 0, SEEK_DATA) == std::to_string(5 * kGiB + 4096));
    CHECK(Seek(fd, 0, SEEK_HOLE) == "0");
    CHECK(Seek(fd, 5 * kGiB + 4096, SEEK_HOLE) == std::to_string(5 * kGiB + 5001));
  }

  TEST_CASE("Lseek: a fully written file has its only hole at EOF (the exact size)") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), Pattern(10000, 3), 0) == "");
    CHECK(Seek(fd, 0, SEEK_HOLE) == "10000");
    CHECK(Seek(fd, 9999, SEEK_DATA) == "9999");
    CHECK(Seek(fd, 10000, SEEK_DATA) == "ENXIO");
    CHECK(Seek(fd, 10000, SEEK_HOLE) == "ENXIO");
  }

  TEST_CASE("Lseek: an empty file has neither data nor hole (ENXIO)") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    CHECK(Seek(fd, 0, SEEK_DATA) == "ENXIO");
    CHECK(Seek(fd, 0, SEEK_HOLE) == "ENXIO");
  }

  TEST_CASE("Lseek: preallocated (unwritten) ranges count as holes") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(Falloc(fd, 0, 0, 16 * 4096) == "OK");
    REQUIRE(PwriteAll(fd.get(), "x", 8 * 4096) == "");
    CHECK(Seek(fd, 0, SEEK_DATA) == std::to_string(8 * 4096));
    CHECK(Seek(fd, 0, SEEK_HOLE) == "0");
    CHECK(Seek(fd, 8 * 4096, SEEK_HOLE) == std::to_string(9 * 4096));
  }

  // --- other I/O paths ------------------------------------------------------------------------

  TEST_CASE("O_DIRECT: aligned reads and writes work and see the same bytes as buffered I/O") {
    TestFs fs;
    Fd fd(open(fs.path("f").c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644));
    REQUIRE_MESSAGE(fd.ok(), "open O_DIRECT: " << ErrnoName(errno));
    void* buf = nullptr;
    REQUIRE(posix_memalign(&buf, 4096, 3 * 4096) == 0);
    const std::string data = Pattern(3 * 4096, 77);
    std::memcpy(buf, data.data(), data.size());
    CHECK(pwrite(fd.get(), buf, 3 * 4096, 4096) == 3 * 4096);
    std::memset(buf, 0, 3 * 4096);
    CHECK(pread(fd.get(), buf, 3 * 4096, 4096) == 3 * 4096);
    CHECK(Diff(std::string(static_cast<char*>(buf), 3 * 4096), data) == "");
    free(buf);
    CHECK(Diff(ReadFile(fs.path("f")), std::string(4096, '\0') + data) == "");
  }

  TEST_CASE("Copy_file_range: copies bytes between files of the mount") {
    TestFs fs;
    const std::string data = Pattern(300000, 12);
    REQUIRE(WriteFile(fs.path("src"), data) == "");
    Fd in(open(fs.path("src").c_str(), O_RDONLY));
    Fd out = Create(fs, "dst", O_WRONLY);
    loff_t off_in = 1000, off_out = 5000;
    size_t left = 200000;
    while (left > 0) {
      ssize_t n = copy_file_range(in.get(), &off_in, out.get(), &off_out, left, 0);
      REQUIRE_MESSAGE(n > 0, "copy_file_range: " << (n < 0 ? ErrnoName(errno) : "0"));
      left -= static_cast<size_t>(n);
    }
    CHECK(ReadFile(fs.path("dst")) == std::string(5000, '\0') + data.substr(1000, 200000));
  }

  TEST_CASE("Locks: fcntl record locks and flock conflict between processes") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(PwriteAll(fd.get(), "0123456789", 0) == "");
    struct flock lk {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = 2;
    lk.l_len = 3;
    REQUIRE(SYS(fcntl(fd.get(), F_SETLK, &lk)) == "OK");
    REQUIRE(SYS(flock(fd.get(), LOCK_EX)) == "OK");
    const std::string path = fs.path("f");
    const std::string failures = AsUser(0, 0, {}, [&](ChildChecks& k) {
      Fd other(open(path.c_str(), O_RDWR));
      struct flock want {};
      want.l_type = F_WRLCK;
      want.l_whence = SEEK_SET;
      want.l_start = 4;
      want.l_len = 1;
      KSYS(k, fcntl(other.get(), F_SETLK, &want), "EAGAIN");
      KSYS(k, fcntl(other.get(), F_GETLK, &want), "OK");
      KTRUE(k, want.l_type == F_WRLCK && want.l_start == 2 && want.l_len == 3);
      want.l_type = F_WRLCK;
      want.l_start = 5;
      want.l_len = 5;
      KSYS(k, fcntl(other.get(), F_SETLK, &want), "OK");
      KSYS(k, flock(other.get(), LOCK_EX | LOCK_NB), "EAGAIN");  // = EWOULDBLOCK
    });
    CHECK(failures == "");
  }

  // --- mmap -----------------------------------------------------------------------------------

  TEST_CASE("Mmap: a private mapping reads the file's bytes") {
    TestFs fs;
    const std::string data = Pattern(3 * 4096 + 5, 21);
    REQUIRE(WriteFile(fs.path("f"), data) == "");
    Fd fd(open(fs.path("f").c_str(), O_RDONLY));
    void* p = mmap(nullptr, data.size(), PROT_READ, MAP_PRIVATE, fd.get(), 0);
    const std::string mmap_result = p == MAP_FAILED ? ErrnoName(errno) : "OK";
    REQUIRE(mmap_result == "OK");
    CHECK(Diff(std::string(static_cast<const char*>(p), data.size()), data) == "");
    munmap(p, data.size());
  }

  TEST_CASE("Mmap: shared stores reach read() and the file after msync") {
    TestFs fs;
    Fd fd = Create(fs, "f");
    REQUIRE(ftruncate(fd.get(), 3 * 4096) == 0);
    void* p = mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    const std::string mmap_result = p == MAP_FAILED ? ErrnoName(errno) : "OK";
    // leasefs too: it grants the kernel FUSE_DIRECT_IO_ALLOW_MMAP
    // (docs/mmap.md; tests/fuse/mmap_test.cc has the rest).
    REQUIRE(mmap_result == "OK");
    std::memcpy(static_cast<char*>(p) + 4000, "mapped!", 7);
    CHECK(SYS(msync(p, 3 * 4096, MS_SYNC)) == "OK");
    munmap(p, 3 * 4096);
    CHECK(PreadAll(fd.get(), 7, 4000) == "mapped!");
    fd = Fd();
    CHECK(ReadFile(fs.path("f")).substr(4000, 7) == "mapped!");
  }
}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
