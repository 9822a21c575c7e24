// Unmount and remount: everything is still there, byte for byte and stat for
// stat, and fsck.leasefs finds the pool clean.
//
// The tests build trees with every kind of inode and attribute, take a
// snapshot (a text rendering of each inode: type, mode, owner, links, size,
// blocks, inode number, mtime, ctime, device, symlink target, data/hole map
// and data checksum, xattrs, directory entries), remount, and compare.
// atime is left out of snapshots (reading files to checksum them may change
// it under relatime); one test checks an unread file's atime explicitly.
//
// In reference mode Remount() does nothing, so the snapshot comparisons pass
// trivially there; the explicit content checks still validate the trees.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr off_t kGiB = off_t{1} << 30;

// --- snapshots ---------------------------------------------------------------------

// The data/hole map of an open regular file: "[start,end)" ranges of data.
std::vector<std::pair<off_t, off_t>> DataMap(int fd, off_t size) {
  std::vector<std::pair<off_t, off_t>> map;
  off_t pos = 0;
  while (pos < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = size;
    map.emplace_back(data, hole);
    pos = hole;
  }
  return map;
}

std::string XattrText(const std::string& path) {
  std::vector<char> names(70000);
  ssize_t n = llistxattr(path.c_str(), names.data(), names.size());
  if (n < 0) return "listxattr:" + ErrnoName(errno);
  std::vector<std::string> list;
  for (ssize_t i = 0; i < n;) {
    list.emplace_back(names.data() + i);
    i += static_cast<ssize_t>(list.back().size()) + 1;
  }
  std::sort(list.begin(), list.end());
  std::ostringstream out;
  for (const auto& name : list) {
    std::vector<char> v(70000);
    ssize_t len = lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    out << " x[" << name << "]=";
    if (len < 0)
      out << ErrnoName(errno);
    else
      out << len << ":" << std::hex << Fnv1a(std::string(v.data(), static_cast<size_t>(len)))
          << std::dec;
  }
  return out.str();
}

std::string RegularText(const std::string& path, off_t size) {
  Fd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW));
  if (!fd.ok()) return " open:" + ErrnoName(errno);
  std::ostringstream out;
  uint64_t h = Fnv1a("");
  for (const auto& [start, end] : DataMap(fd.get(), size)) {
    out << " data[" << start << "," << end << ")";
    // Checksum data ranges, at most 64 MiB of each.
    const off_t len = std::min<off_t>(end - start, 64 << 20);
    for (off_t off = start; off < start + len; off += 1 << 20) {
      h = Fnv1a(
          PreadAll(fd.get(), static_cast<size_t>(std::min<off_t>(1 << 20, start + len - off)), off),
          h);
    }
  }
  out << " sum=" << std::hex << h << std::dec;
  return out.str();
}

// One line per inode property; `skip_data` leaves file contents unread.
std::string NodeText(const std::string& path, bool skip_data) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return "lstat:" + ErrnoName(errno);
  std::ostringstream out;
  out << "mode=" << std::oct << st.st_mode << std::dec << " nlink=" << st.st_nlink
      << " uid=" << st.st_uid << " gid=" << st.st_gid << " size=" << st.st_size
      << " blocks=" << st.st_blocks << " ino=" << st.st_ino << " mtime=" << Nanos(st.st_mtim)
      << " ctime=" << Nanos(st.st_ctim);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
    out << " rdev=" << major(st.st_rdev) << ":" << minor(st.st_rdev);
  if (S_ISLNK(st.st_mode)) {
    std::string t(5000, '\0');
    ssize_t n = readlink(path.c_str(), t.data(), t.size());
    t.resize(n > 0 ? static_cast<size_t>(n) : 0);
    out << " target=" << t.size() << ":" << std::hex << Fnv1a(t) << std::dec;
  }
  if (S_ISREG(st.st_mode) && !skip_data) out << RegularText(path, st.st_size);
  if (S_ISDIR(st.st_mode)) {
    out << " entries=";
    for (const auto& n : ListDir(path))
      out << n.size() << ":" << std::hex << Fnv1a(n) << std::dec << ",";
  }
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) out << XattrText(path);
  return out.str();
}

using Snapshot = std::map<std::string, std::string>;

void Walk(const std::string& root, const std::string& rel, Snapshot* snap) {
  const std::string path = rel.empty() ? root : root + "/" + rel;
  (*snap)[rel.empty() ? "/" : rel] = NodeText(path, rel.find("noread") != std::string::npos);
  if (!S_ISDIR(Lstat(path).st_mode)) return;
  for (const auto& name : ListDir(path)) Walk(root, rel.empty() ? name : rel + "/" + name, snap);
}

Snapshot Take(const TestFs& fs) {
  Snapshot s;
  Walk(fs.root(), "", &s);
  return s;
}

// Checks every path of `want` against `got`, naming the path on failure.
void CompareSnapshots(const Snapshot& want, const Snapshot& got) {
  // No structured bindings: CAPTURE's lambdas capture the names, which
  // clang 14 does not allow for bindings.
  for (const auto& entry : want) {
    const std::string& path = entry.first;
    CAPTURE(path);
    auto it = got.find(path);
    REQUIRE_MESSAGE(it != got.end(), "missing after remount: " << path);
    CHECK(it->second == entry.second);
  }
  for (const auto& entry : got) {
    const std::string& path = entry.first;
    CAPTURE(path);
    CHECK_MESSAGE(want.count(path) == 1, "appeared after remount: " << path);
  }
}

// --- tree building ------------------------------------------------------------------------

void Mk(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  REQUIRE(mkdir(path.c_str(), 0700) == 0);
  REQUIRE(chown(path.c_str(), uid, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

void Put(const std::string& path, const std::string& data, mode_t mode, uid_t uid = 0,
         gid_t gid = 0) {
  REQUIRE(WriteFile(path, data) == "");
  REQUIRE(chown(path.c_str(), uid, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

void PutAt(const std::string& path, const std::vector<std::pair<off_t, std::string>>& pieces,
           off_t size = -1) {
  Fd fd(open(path.c_str(), O_CREAT | O_WRONLY, 0644));
  REQUIRE(fd.ok());
  for (const auto& [off, data] : pieces) REQUIRE(PwriteAll(fd.get(), data, off) == "");
  if (size >= 0) REQUIRE(ftruncate(fd.get(), size) == 0);
}

void SetXattr(const std::string& path, const std::string& name, const std::string& value) {
  REQUIRE(lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) == 0);
}

void SetTimes(const std::string& path, int64_t a_ns, int64_t m_ns) {
  struct timespec ts[2] = {{a_ns / 1000000000, a_ns % 1000000000},
                           {m_ns / 1000000000, m_ns % 1000000000}};
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

// Every kind of inode, attribute and layout the engine stores differently.
void BuildTree(TestFs& fs) {
  Mk(fs.path("a"), 0755);
  Mk(fs.path("a/b"), 0700, 1000, 1000);
  Mk(fs.path("a/b/c"), 0750, 1001, 2000);
  Mk(fs.path("tmp"), 01777);
  Mk(fs.path("shared"), 02775, 0, 2000);
  Mk(fs.path("empty"), 0555);

  Put(fs.path("zero"), "", 0644);
  Put(fs.path("one"), "1", 0600, 1000, 1000);
  Put(fs.path("block"), Pattern(4096, 1), 0640, 1001, 2000);
  Put(fs.path("odd"), Pattern(12345, 2), 0444);
  Put(fs.path("suid"), "#!/bin/sh\n", 04755);
  Put(fs.path("sgid"), "#!/bin/sh\n", 02755);
  Put(fs.path("sticky-file"), "t", 01644);
  Put(fs.path("nothing"), "locked", 0000);
  Put(fs.path("a/b/c/deep"), Pattern(100000, 3), 0644, 1001, 2000);
  Put(fs.path("big"), Pattern(8 << 20, 4), 0644);
  // 60 separate extents: more than the inode's 6 inline slots.
  std::vector<std::pair<off_t, std::string>> pieces;
  for (int i = 0; i < 60; ++i) pieces.emplace_back(off_t{i} * 8192, Pattern(4096, 100 + i));
  PutAt(fs.path("fragmented"), pieces);
  PutAt(fs.path("sparse"), {{0, "head"}, {kGiB, Pattern(5000, 5)}, {5 * kGiB + 123, "far"}},
        6 * kGiB);
  {
    Fd fd(open(fs.path("prealloc").c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(PwriteAll(fd.get(), "data", 0) == "");
    REQUIRE(fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, 64 * 4096) == 0);
    REQUIRE(fallocate(fd.get(), 0, 1 << 20, 8 * 4096) == 0);
  }
  Put(fs.path("noread-timed"), "times", 0644);
  SetTimes(fs.path("noread-timed"), 1234567890123456789, 1111111111222222222);
  SetTimes(fs.path("odd"), 1500000000000000001, 1600000000000000002);

  REQUIRE(symlink("odd", fs.path("link-short").c_str()) == 0);
  REQUIRE(symlink(std::string(144, 's').c_str(), fs.path("link-144").c_str()) == 0);
  REQUIRE(symlink(std::string(145, 's').c_str(), fs.path("link-145").c_str()) == 0);
  // (xfs caps symlink targets at 1023 bytes; ext4, tmpfs and leasefs at 4095.)
  const size_t long_target = FsType(fs) == "xfs" ? 1023 : 4095;
  REQUIRE(symlink(std::string(long_target, 'L').c_str(), fs.path("link-4095").c_str()) == 0);
  REQUIRE(symlink("/nowhere/at/all", fs.path("a/dangling").c_str()) == 0);
  REQUIRE(lchown(fs.path("link-short").c_str(), 1000, 1000) == 0);
  SetTimes(fs.path("link-145"), 42, 43);

  REQUIRE(link(fs.path("odd").c_str(), fs.path("a/odd-link").c_str()) == 0);
  REQUIRE(link(fs.path("odd").c_str(), fs.path("a/b/odd-link2").c_str()) == 0);
  REQUIRE(mkfifo(fs.path("fifo").c_str(), 0620) == 0);
  REQUIRE(mknod(fs.path("null-dev").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
  REQUIRE(mknod(fs.path("blk-dev").c_str(), S_IFBLK | 0600, makedev(7, 200)) == 0);

  SetXattr(fs.path("odd"), "user.small", "v");
  SetXattr(fs.path("odd"), "user.binary", std::string("\0\xff\x01", 3));
  SetXattr(fs.path("odd"), "trusted.t", "root only");
  SetXattr(fs.path("a"), "user.on-dir", Pattern(1000, 6));
  SetXattr(fs.path("link-short"), "trusted.on-link", "l");
  if (!fs.reference()) SetXattr(fs.path("block"), "user.max", std::string(4064 - 4 - 8, 'm'));

  // A directory big enough for several directory blocks, with gaps.
  Mk(fs.path("many"), 0755);
  for (int i = 0; i < 1000; ++i)
    REQUIRE(WriteFile(fs.path("many/entry-" + std::to_string(i)), std::to_string(i)) == "");
  for (int i = 0; i < 1000; i += 3)
    REQUIRE(unlink(fs.path("many/entry-" + std::to_string(i)).c_str()) == 0);

  // Renames and an exchange leave their final state only.
  Put(fs.path("x1"), "x1", 0644);
  Put(fs.path("x2"), "x2", 0644);
  REQUIRE(syscall(SYS_renameat2, AT_FDCWD, fs.path("x1").c_str(), AT_FDCWD, fs.path("x2").c_str(),
                  RENAME_EXCHANGE) == 0);
  Put(fs.path("victim"), "replaced", 0644);
  Put(fs.path("winner"), "winner", 0644);
  REQUIRE(rename(fs.path("winner").c_str(), fs.path("victim").c_str()) == 0);
  REQUIRE(rename(fs.path("a/b/c").c_str(), fs.path("tmp/c-moved").c_str()) == 0);
  // Directories swapped between parents: '..' and link counts change.
  Mk(fs.path("p1"), 0755);
  Mk(fs.path("p2"), 0755);
  Mk(fs.path("p1/dir"), 0755);
  Mk(fs.path("p1/dir/sub"), 0755);
  Put(fs.path("p2/file"), "was in p2", 0644);
  REQUIRE(syscall(SYS_renameat2, AT_FDCWD, fs.path("p1/dir").c_str(), AT_FDCWD,
                  fs.path("p2/file").c_str(), RENAME_EXCHANGE) == 0);
  // A file that lives on only through its second name.
  Put(fs.path("first-name"), "second", 0644);
  REQUIRE(link(fs.path("first-name").c_str(), fs.path("a/second-name").c_str()) == 0);
  REQUIRE(unlink(fs.path("first-name").c_str()) == 0);
}

// What the tree must contain, checked against the bytes it was built from.
void CheckTreeContents(TestFs& fs) {
  CHECK(ReadFile(fs.path("zero")) == "");
  CHECK(ReadFile(fs.path("one")) == "1");
  CHECK(Diff(ReadFile(fs.path("block")), Pattern(4096, 1)) == "");
  CHECK(Diff(ReadFile(fs.path("odd")), Pattern(12345, 2)) == "");
  CHECK(Diff(ReadFile(fs.path("a/odd-link")), Pattern(12345, 2)) == "");
  CHECK(Lstat(fs.path("odd")).st_nlink == 3);
  CHECK(Diff(ReadFile(fs.path("tmp/c-moved/deep")), Pattern(100000, 3)) == "");
  CHECK(Fnv1a(ReadFile(fs.path("big"))) == Fnv1a(Pattern(8 << 20, 4)));
  {
    Fd fd(open(fs.path("fragmented").c_str(), O_RDONLY));
    for (int i = 0; i < 60; ++i) {
      CAPTURE(i);
      CHECK(Diff(PreadAll(fd.get(), 4096, off_t{i} * 8192), Pattern(4096, 100 + i)) == "");
      if (i < 59)
        CHECK(Diff(PreadAll(fd.get(), 4096, off_t{i} * 8192 + 4096), std::string(4096, '\0')) ==
              "");
    }
    // ext4 and xfs also count the extent-tree block(s) a file with this
    // many extents needs; leasefs (like tmpfs) counts mapped data only.
    if (!fs.reference() || FsType(fs) == "tmpfs")
      CHECK(Lstat(fs.path("fragmented")).st_blocks == 60 * 8);
  }
  {
    Fd fd(open(fs.path("sparse").c_str(), O_RDONLY));
    CHECK(PreadAll(fd.get(), 4, 0) == "head");
    CHECK(Diff(PreadAll(fd.get(), 5000, kGiB), Pattern(5000, 5)) == "");
    CHECK(PreadAll(fd.get(), 3, 5 * kGiB + 123) == "far");
    CHECK(Diff(PreadAll(fd.get(), 4096, 3 * kGiB), std::string(4096, '\0')) == "");
    CHECK(Lstat(fs.path("sparse")).st_size == 6 * kGiB);
    // (xfs keeps speculative preallocation for a while after close.)
    if (FsType(fs) != "xfs") CHECK(Lstat(fs.path("sparse")).st_blocks == (1 + 2 + 1) * 8);
  }
  CHECK(Lstat(fs.path("prealloc")).st_size == (1 << 20) + 8 * 4096);
  CHECK(Lstat(fs.path("prealloc")).st_blocks == (64 + 8) * 8);
  {
    const std::string p = ReadFile(fs.path("prealloc"));
    CHECK(p.substr(0, 4) == "data");
    CHECK(p.find_first_not_of('\0', 4) == std::string::npos);
  }
  CHECK((Lstat(fs.path("suid")).st_mode & 07777) == 04755);
  CHECK((Lstat(fs.path("sgid")).st_mode & 07777) == 02755);
  CHECK((Lstat(fs.path("tmp")).st_mode & 07777) == 01777);
  CHECK((Lstat(fs.path("shared")).st_mode & 07777) == 02775);
  CHECK(Lstat(fs.path("shared")).st_gid == 2000);
  CHECK(Lstat(fs.path("tmp/c-moved/..")).st_ino == Lstat(fs.path("tmp")).st_ino);
  CHECK(Lstat(fs.path("a")).st_nlink == 3);
  CHECK(Lstat(fs.path("tmp")).st_nlink == 3);
  CHECK(Lstat(fs.path("link-short")).st_uid == 1000);
  CHECK(Lstat(fs.path("link-4095")).st_size == (FsType(fs) == "xfs" ? 1023 : 4095));
  CHECK(Nanos(Lstat(fs.path("link-145")).st_mtim) == 43);
  CHECK(Lstat(fs.path("null-dev")).st_rdev == makedev(1, 3));
  CHECK(Lstat(fs.path("blk-dev")).st_rdev == makedev(7, 200));
  CHECK(S_ISFIFO(Lstat(fs.path("fifo")).st_mode));
  CHECK(Nanos(Lstat(fs.path("odd")).st_mtim) == 1600000000000000002);
  CHECK(ReadFile(fs.path("x1")) == "x2");
  CHECK(ReadFile(fs.path("x2")) == "x1");
  CHECK(ReadFile(fs.path("victim")) == "winner");
  CHECK(SYS(access(fs.path("winner").c_str(), F_OK)) == "ENOENT");
  CHECK(SYS(access(fs.path("a/b/c").c_str(), F_OK)) == "ENOENT");
  CHECK(ReadFile(fs.path("p1/dir")) == "was in p2");
  CHECK(S_ISDIR(Lstat(fs.path("p2/file/sub")).st_mode));
  CHECK(Lstat(fs.path("p2/file/..")).st_ino == Lstat(fs.path("p2")).st_ino);
  CHECK(Lstat(fs.path("p1")).st_nlink == 2);
  CHECK(Lstat(fs.path("p2")).st_nlink == 3);
  CHECK(ReadFile(fs.path("a/second-name")) == "second");
  CHECK(Lstat(fs.path("a/second-name")).st_nlink == 1);
  CHECK(ListDir(fs.path("many")).size() == 666u);
  CHECK(ReadFile(fs.path("many/entry-500")) == "500");
  CHECK(SYS(access(fs.path("many/entry-501").c_str(), F_OK)) == "ENOENT");
}

struct Counts {
  fsblkcnt_t bfree;
  fsfilcnt_t ffree;
  bool operator==(const Counts&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Counts& c) {
  return os << "{bfree " << c.bfree << ", ffree " << c.ffree << "}";
}

// Free blocks and inodes.
// In reference mode nothing is remounted, and the reference filesystem may
// be shared with other processes: counts are only compared on leasefs.
Counts CountsOf(const TestFs& fs) {
  if (fs.reference()) return {};
  struct statvfs sv {};
  REQUIRE(statvfs(fs.root().c_str(), &sv) == 0);
  return {sv.f_bfree, sv.f_ffree};
}

TEST_SUITE("fuse.persistence") {
  TEST_CASE("Persistence: a full tree survives unmount and remount stat for stat") {
    TestFs fs;
    BuildTree(fs);
    CheckTreeContents(fs);
    const Snapshot before = Take(fs);
    const Counts counts = CountsOf(fs);
    REQUIRE(fs.Remount() == "");
    // Before anything reads it: the unread file's atime is exactly as set.
    CHECK(Nanos(Lstat(fs.path("noread-timed")).st_atim) == 1234567890123456789);
    CHECK(Nanos(Lstat(fs.path("noread-timed")).st_mtim) == 1111111111222222222);
    CompareSnapshots(before, Take(fs));
    CheckTreeContents(fs);
    CHECK(CountsOf(fs) == counts);
  }

  TEST_CASE("Persistence: fsck.leasefs finds a used pool clean and the tree unchanged") {
    TestFs fs;
    BuildTree(fs);
    const Snapshot before = Take(fs);
    CHECK(fs.UnmountFsckRemount() == "");
    CompareSnapshots(before, Take(fs));
    CheckTreeContents(fs);
  }

  TEST_CASE("Persistence: changes made between remounts accumulate correctly") {
    TestFs fs;
    std::string log;
    for (int round = 0; round < 5; ++round) {
      CAPTURE(round);
      const std::string r = std::to_string(round);
      REQUIRE(mkdir(fs.path("d" + r).c_str(), 0755) == 0);
      REQUIRE(WriteFile(fs.path("d" + r + "/f"), Pattern(5000 + round, round)) == "");
      if (round > 0) {
        const std::string prev = std::to_string(round - 1);
        REQUIRE(rename(fs.path("d" + prev + "/f").c_str(),
                       fs.path("d" + r + "/from-prev").c_str()) == 0);
        unlink(fs.path("d" + prev + "/from-prev").c_str());  // absent in round 1
        REQUIRE(rmdir(fs.path("d" + prev).c_str()) == 0);
      }
      {
        Fd fd(open(fs.path("log").c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644));
        const std::string line = "round " + r + "\n";
        REQUIRE(write(fd.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size()));
        log += line;
      }
      const Snapshot before = Take(fs);
      REQUIRE(fs.Remount() == "");
      CompareSnapshots(before, Take(fs));
      CHECK(ReadFile(fs.path("log")) == log);
      CHECK(Diff(ReadFile(fs.path("d" + r + "/f")), Pattern(5000 + round, round)) == "");
      if (round > 0)
        CHECK(Diff(ReadFile(fs.path("d" + r + "/from-prev")),
                   Pattern(5000 + round - 1, round - 1)) == "");
    }
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"d4", "log"});
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("Persistence: deleted files and their space stay gone after remount") {
    TestFs fs;
    // Directories keep the blocks they grew (as on ext4): measure with the
    // root's first directory block already there.
    REQUIRE(WriteFile(fs.path("warmup"), "") == "");
    REQUIRE(unlink(fs.path("warmup").c_str()) == 0);
    REQUIRE(fs.Remount() == "");  // the kernel lets go of the unlinked inode
    const Counts empty = CountsOf(fs);
    REQUIRE(WriteFile(fs.path("gone"), Pattern(1 << 20, 1)) == "");
    REQUIRE(mkdir(fs.path("gonedir").c_str(), 0755) == 0);
    REQUIRE(symlink(std::string(500, 'z').c_str(), fs.path("gonelink").c_str()) == 0);
    REQUIRE(setxattr(fs.path("gonedir").c_str(), "user.x", "v", 1, 0) == 0);
    REQUIRE(unlink(fs.path("gone").c_str()) == 0);
    REQUIRE(rmdir(fs.path("gonedir").c_str()) == 0);
    REQUIRE(unlink(fs.path("gonelink").c_str()) == 0);
    REQUIRE(fs.Remount() == "");
    CHECK(ListDir(fs.root()).empty());
    CHECK(CountsOf(fs) == empty);
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("Persistence: a file unlinked while open is reclaimed, not resurrected") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("warmup"), "") == "");
    REQUIRE(unlink(fs.path("warmup").c_str()) == 0);
    REQUIRE(fs.Remount() == "");  // the kernel lets go of the unlinked inode
    const Counts empty = CountsOf(fs);
    {
      Fd fd(open(fs.path("orphan").c_str(), O_CREAT | O_RDWR, 0644));
      REQUIRE(fd.ok());
      REQUIRE(PwriteAll(fd.get(), Pattern(256 << 10, 1), 0) == "");
      REQUIRE(unlink(fs.path("orphan").c_str()) == 0);
      CHECK(PreadAll(fd.get(), 10, 0) == Pattern(10, 1));
    }
    REQUIRE(fs.Remount() == "");
    CHECK(ListDir(fs.root()).empty());
    CHECK(CountsOf(fs) == empty);
    CHECK(fs.UnmountFsckRemount() == "");
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
