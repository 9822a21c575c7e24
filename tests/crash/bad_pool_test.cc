// Corrupt and foreign pools are refused at mount with one line saying why,
// never a crash, never a mount, and never a byte written to the pool.
//
// Each case starts `leasefs POOL MNT -f` on a damaged image and expects it to
// exit non-zero within a few seconds, not on a signal, having printed exactly
//   leasefs: cannot mount POOL: <reason>
// and to leave the mount point unmounted and the pool file byte-for-byte as
// it was. Damage inside the metadata (inodes, extents, directories) should be
// caught at mount too, since the engine loads all metadata then; if the daemon
// mounts anyway, the damaged file must give EIO or EUCLEAN (not a crash) and
// fsck must report the damage. The test says which of the two happened.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "engine/layout.h"
#include "tests/crash/crash_loop.h"
#include "tests/crash/fuse_util.h"
#include "tests/crash/workload.h"
#include "tests/support/mount.h"

namespace leasefs::crashtest {
namespace {

namespace L = leasefs::layout;
using namespace std::chrono_literals;

constexpr auto kMountLimit = 5s;

template <typename T>
T Get(const std::string& img, uint64_t off) {
  T v;
  REQUIRE(off + sizeof(T) <= img.size());
  std::memcpy(&v, img.data() + off, sizeof(T));
  return v;
}

template <typename T>
void Put(std::string& img, uint64_t off, const T& v) {
  REQUIRE(off + sizeof(T) <= img.size());
  std::memcpy(img.data() + off, &v, sizeof(T));
}

L::Superblock Sb(const std::string& img) { return Get<L::Superblock>(img, 0); }

// Writes `sb` as the primary superblock, with a valid checksum if `fix`.
void PutSb(std::string& img, L::Superblock sb, bool fix = true) {
  if (fix) sb.checksum = XXH64(&sb, L::kSuperChecksummedBytes, 0);
  Put(img, 0, sb);
}

uint64_t InodeOff(const L::Superblock& sb, uint64_t ino) {
  return sb.inode_start * L::kBlockSize + ino * sizeof(L::Inode);
}

// A small pool with a file, a directory and a fragmented file, cleanly
// unmounted; and the inode numbers of those.
struct BaseImage {
  std::string bytes;
  uint64_t file = 0, dir = 0, frag = 0, dir_a = 0, xat = 0;
  std::string file_data;  // contents of "file"
};

const BaseImage& Base() {
  static std::optional<BaseImage> base;
  if (base) return *base;
  testing::MountOptions mo;
  mo.pool_size = "16M";
  testing::TestMount m(mo);
  BaseImage b;
  auto ino = [&](const std::string& rel) {
    struct stat st {};
    REQUIRE(lstat(m.path(rel).c_str(), &st) == 0);
    return static_cast<uint64_t>(st.st_ino);
  };
  auto write_at = [&](const std::string& rel, uint64_t off, size_t len) {
    int fd = open(m.path(rel).c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    std::string data = PatternBytes(off + rel.size(), len);
    REQUIRE(pwrite(fd, data.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
    REQUIRE(close(fd) == 0);
  };
  write_at("file", 0, 3 * L::kBlockSize);
  REQUIRE(mkdir(m.path("dir").c_str(), 0755) == 0);
  write_at("dir/a", 0, 100);
  write_at("dir/b", 0, 100);
  // One block at every other file block: ten extents, more than fit inline.
  for (uint64_t i = 0; i < 10; ++i) write_at("frag", 2 * i * L::kBlockSize, L::kBlockSize);
  write_at("xat", 0, 10);
  const std::string value(100, 'v');
  REQUIRE(setxattr(m.path("xat").c_str(), "user.a", value.data(), value.size(), 0) == 0);
  b.file = ino("file");
  b.xat = ino("xat");
  b.file_data = PatternBytes(4, 3 * L::kBlockSize);
  REQUIRE(ReadWhole(m.path("file")) == b.file_data);
  b.dir = ino("dir");
  b.frag = ino("frag");
  b.dir_a = ino("dir/a");
  REQUIRE(m.Unmount() == 0);
  b.bytes = ReadWhole(m.pool());
  REQUIRE(b.bytes.size() == 16u << 20);
  base = std::move(b);
  return *base;
}

// The first in-use inline extent of inode `ino`.
uint64_t FirstExtentOff(const std::string& img, uint64_t ino) {
  const L::Superblock sb = Sb(img);
  const L::Inode in = Get<L::Inode>(img, InodeOff(sb, ino));
  REQUIRE((in.flags & L::kInodeInlineData) == 0);
  for (uint32_t i = 0; i < L::kInlineExtents; ++i) {
    const uint64_t off =
        InodeOff(sb, ino) + offsetof(L::Inode, inline_area) + i * sizeof(L::Extent);
    if (Get<L::Extent>(img, off).length != 0) return off;
  }
  FAIL("inode " << ino << " has no inline extent");
  return 0;
}

// A pool file on /dev/shm holding given bytes; removed at the end.
class PoolFile {
 public:
  explicit PoolFile(const std::string& bytes) {
    char t[] = "/dev/shm/leasefs-badpool-XXXXXX";
    int fd = mkstemp(t);
    REQUIRE(fd >= 0);
    close(fd);
    path_ = t;
    REQUIRE(WriteWhole(path_, bytes));
  }
  ~PoolFile() { unlink(path_.c_str()); }
  PoolFile(const PoolFile&) = delete;
  PoolFile& operator=(const PoolFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Checks a refusal: the exit, the one line, no mount, the pool untouched.
void CheckRefusal(const DaemonProcess& d, const std::string& pool, const std::string& mnt,
                  const std::string& image, const std::string& reason_part) {
  const testing::ProcessResult& r = d.result();
  CHECK_MESSAGE(!r.signaled(), "killed by signal " << r.term_signal << ": " << r.output);
  CHECK(r.exit_code != 0);
  const std::vector<std::string> lines = SplitLines(r.output);
  CHECK_MESSAGE(lines.size() == 1, "printed:\n" << r.output);
  CHECK(!r.output.empty());
  CHECK(r.output.back() == '\n');
  const std::string prefix = "leasefs: cannot mount " + pool + ": ";
  const std::string first = lines.empty() ? "" : lines[0];
  CHECK_MESSAGE(first.rfind(prefix, 0) == 0, "printed: " << first);
  CHECK_MESSAGE(first.size() > prefix.size() + 3, "no reason given: " << first);
  if (!reason_part.empty())
    CHECK_MESSAGE(first.find(reason_part) != std::string::npos,
                  "expected the reason to mention '" << reason_part << "': " << first);
  CHECK(!IsMounted(mnt));
  struct stat st {};
  if (stat(pool.c_str(), &st) == 0 && S_ISREG(st.st_mode))
    CHECK_MESSAGE(ReadWhole(pool) == image, "the refused mount changed the pool file");
  MESSAGE("refused: " << first);
}

// Mounting `image` must be refused.
void ExpectRefused(const std::string& image, const std::string& reason_part = {}) {
  PoolFile pool(image);
  ScratchDir mnt;
  DaemonProcess d(pool.path(), mnt.path());
  const DaemonProcess::State s = d.Await(kMountLimit);
  REQUIRE_MESSAGE(s != DaemonProcess::State::kStuck,
                  "the daemon neither exited nor mounted within 5 s: " << d.output());
  REQUIRE_MESSAGE(s == DaemonProcess::State::kExited,
                  "the corrupt pool was mounted: " << d.output());
  CheckRefusal(d, pool.path(), mnt.path(), image, reason_part);
}

std::vector<std::string> FsckArgv(const std::string& pool) {
  std::vector<std::string> argv = {testing::FsckBin()};
  for (const auto& a : FsckCheckArgs()) argv.push_back(a);
  argv.push_back(pool);
  return argv;
}

// Errno of the first failing access to `path` (lstat, read or readdir), or 0.
int AccessError(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) {
    DIR* d = opendir(path.c_str());
    if (!d) return errno;
    errno = 0;
    while (readdir(d)) {
    }
    const int err = errno;
    closedir(d);
    return err;
  }
  char names[4096];
  const ssize_t len = llistxattr(path.c_str(), names, sizeof names);
  if (len < 0) return errno;
  for (ssize_t pos = 0; pos < len; pos += static_cast<ssize_t>(std::strlen(names + pos)) + 1) {
    char value[65536];
    if (lgetxattr(path.c_str(), names + pos, value, sizeof value) < 0) return errno;
  }
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW);
  if (fd < 0) return errno;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
  }
  const int err = n < 0 ? errno : 0;
  close(fd);
  return err;
}

// What a mount that let damage through must at least do: the damaged entry
// errs with EIO or EUCLEAN.
void AccessFails(const std::string& mnt, const std::string& damaged) {
  const int err = AccessError(mnt + "/" + damaged);
  CHECK_MESSAGE((err == EIO || err == EUCLEAN), "accessing " << damaged << " gave "
                                                             << ErrnoName(err)
                                                             << ", expected EIO or EUCLEAN");
}

// Deep damage: refused at mount (the design), or contained: `contained`
// holds (by default: the damaged entry errs with EIO/EUCLEAN), the daemon
// survives, fsck reports the damage.
void ExpectRefusedOrContained(const std::string& image, const std::string& damaged,
                              const std::function<void(const std::string&)>& contained = {}) {
  PoolFile pool(image);
  ScratchDir mnt;
  DaemonProcess d(pool.path(), mnt.path());
  const DaemonProcess::State s = d.Await(kMountLimit);
  REQUIRE_MESSAGE(s != DaemonProcess::State::kStuck,
                  "the daemon neither exited nor mounted within 5 s: " << d.output());
  if (s == DaemonProcess::State::kExited) {
    CheckRefusal(d, pool.path(), mnt.path(), image, {});
    return;
  }
  WARN_MESSAGE(false, "mounted despite the damage; checking that it is contained");
  if (contained)
    contained(mnt.path());
  else
    AccessFails(mnt.path(), damaged);
  CHECK_MESSAGE(d.Await(100ms) == DaemonProcess::State::kMounted,
                "the daemon died: " << d.result().output);
  // The rest of the tree stays readable.
  CHECK(AccessError(mnt.path()) == 0);
  CHECK(d.Unmount() == 0);
  TimedResult f = RunFor(FsckArgv(pool.path()), 30s);
  CHECK(!f.timed_out);
  CHECK(!f.r.signaled());
  CHECK_MESSAGE(f.r.exit_code != 0, "fsck did not report the damage:\n" << f.r.output);
  MESSAGE("fsck said:\n" << Tail(f.r.output, 1500));
}

// A committed journal transaction with the given records; checksums valid
// unless `bad_body_checksum`.
struct Record {
  uint16_t type;
  uint32_t length;
  uint64_t dest;
  std::string payload;  // COPY: `length` bytes; FILL32: 4 bytes
};

void ForgeJournal(std::string& img, const std::vector<Record>& recs,
                  bool bad_body_checksum = false) {
  const L::Superblock sb = Sb(img);
  const uint64_t hdr_off = sb.journal_start * L::kBlockSize;
  std::string body;
  for (const Record& r : recs) {
    L::JournalRecord h{};
    h.type = r.type;
    h.length = r.length;
    h.dest = r.dest;
    body.append(reinterpret_cast<const char*>(&h), sizeof h);
    std::string p = r.payload;
    p.resize((p.size() + 7) / 8 * 8, '\0');
    body += p;
  }
  L::JournalHeader old = Get<L::JournalHeader>(img, hdr_off);
  L::JournalHeader h{};
  std::memcpy(h.magic, L::kJournalMagic, sizeof h.magic);
  h.seq = old.seq + 1;
  h.body_bytes = body.size();
  h.body_xxh64 = XXH64(body.data(), body.size(), h.seq) ^ (bad_body_checksum ? 1 : 0);
  h.record_count = static_cast<uint32_t>(recs.size());
  h.header_xxh64 = XXH64(&h, offsetof(L::JournalHeader, header_xxh64), 0);
  REQUIRE(hdr_off + L::kBlockSize + body.size() <= img.size());
  img.replace(hdr_off + L::kBlockSize, body.size(), body);
  Put(img, hdr_off, h);
}

// A COPY of a new mode into the inode of "file".
Record ChmodRecord(const std::string& img, uint64_t ino, uint32_t mode) {
  return {L::kRecCopy, 4, InodeOff(Sb(img), ino), std::string(reinterpret_cast<char*>(&mode), 4)};
}

TEST_SUITE("crash") {
  TEST_CASE("BadPool: files that are not leasefs pools are refused") {
    SUBCASE("an empty file") { ExpectRefused(""); }
    SUBCASE("a file of zeros") { ExpectRefused(std::string(16u << 20, '\0')); }
    SUBCASE("random bytes") { ExpectRefused(PatternBytes(1, 16u << 20)); }
    SUBCASE("a short text file") { ExpectRefused("this is a text file, not a pool\n"); }
    SUBCASE("a long text file") {
      std::string t;
      while (t.size() < (5u << 20)) t += "All work and no play makes Jack a dull boy.\n";
      ExpectRefused(t);
    }
    SUBCASE("the first 300 bytes of a pool") { ExpectRefused(Base().bytes.substr(0, 300)); }
  }

  // Needs mkfs.ext4: meson runs it alone, as test bad_pool_ext4, which is
  // skipped when the tool is missing (tests/crash/meson.build).
  TEST_CASE("BadPool: an ext4 image is refused" * doctest::test_suite("crash.mkfs_ext4")) {
    PoolFile tmp(std::string(16u << 20, '\0'));
    TimedResult r = RunFor({"/usr/sbin/mkfs.ext4", "-q", "-F", tmp.path()}, 30s);
    REQUIRE_MESSAGE(r.r.exit_code == 0, r.r.output);
    ExpectRefused(ReadWhole(tmp.path()));
  }

  TEST_CASE("BadPool: a damaged or foreign superblock is refused") {
    std::string img = Base().bytes;
    L::Superblock sb = Sb(img);
    SUBCASE("a pool truncated to half its size") {
      img.resize(img.size() / 2);
      ExpectRefused(img, "truncated");
    }
    SUBCASE("a pool one block short") {
      img.resize(img.size() - L::kBlockSize);
      ExpectRefused(img);
    }
    SUBCASE("bad magic") {
      img[1] = 'X';
      ExpectRefused(img, "magic");
    }
    SUBCASE("a newer format version") {
      sb.version = L::kFormatVersion + 1;
      PutSb(img, sb);
      ExpectRefused(img, "newer");
    }
    SUBCASE("format version 0") {
      sb.version = 0;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("a bad superblock checksum") {
      sb.label[3] ^= 0x20;
      PutSb(img, sb, /*fix=*/false);
      ExpectRefused(img, "checksum");
    }
    SUBCASE("an unknown incompatible feature") {
      sb.feature_incompat |= 1ull << 40;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("overlapping regions (checksum fixed up)") {
      sb.inode_start = sb.journal_start + 1;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("a data region past the end (checksum fixed up)") {
      sb.data_blocks += 1000;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("a pool size larger than the file (checksum fixed up)") {
      sb.total_blocks += 1024;
      sb.pool_bytes = sb.total_blocks * L::kBlockSize;
      sb.data_blocks += 1024;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("a wrong block size (checksum fixed up)") {
      sb.block_size = 8192;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("a wrong root inode (checksum fixed up)") {
      sb.root_ino = 5;
      PutSb(img, sb);
      ExpectRefused(img);
    }
    SUBCASE("both copies of the inode table's mark damaged") {
      // The mutable area is not checksummed: each mark word carries its own
      // check (docs/pool_format.md "Lazily initialized tables").
      for (uint64_t copy : {0, 1}) {
        L::Superblock c = Get<L::Superblock>(img, copy * L::kBlockSize);
        c.inode_mark ^= uint64_t{1} << 60;
        Put(img, copy * L::kBlockSize, c);
      }
      ExpectRefused(img, "inode table's mark is damaged in both copies: run fsck.leasefs -y");
    }
  }

  // A crash while a mount's upgrade (or a feature's addition) writes the
  // primary superblock can leave its version word old and its checksum new
  // (docs/pool_format.md "Upgrading an older pool"): the backup holds the
  // whole new copy. A read-only mount reads the pool by it, in its private
  // mapping, writing nothing; a writable one restores the primary.
  TEST_CASE("BadPool: a primary superblock torn by an upgrade mounts read-only, writing nothing") {
    std::string img = Base().bytes;
    L::Superblock sb = Sb(img);
    sb.version = L::kFormatVersionV2;
    PutSb(img, sb, /*fix=*/false);
    PoolFile pool(img);
    {
      ScratchDir mnt;
      DaemonProcess d(pool.path(), mnt.path(), {"-o", "ro"});
      REQUIRE_MESSAGE(d.Await(kMountLimit) == DaemonProcess::State::kMounted, d.output());
      CHECK(ReadWhole(mnt.path() + "/file") == Base().file_data);
      CHECK(d.Unmount() == 0);
    }
    CHECK_MESSAGE(ReadWhole(pool.path()) == img, "the read-only mount changed the pool file");
    {
      ScratchDir mnt;
      DaemonProcess d(pool.path(), mnt.path());
      REQUIRE_MESSAGE(d.Await(kMountLimit) == DaemonProcess::State::kMounted, d.output());
      CHECK(ReadWhole(mnt.path() + "/file") == Base().file_data);
      CHECK(d.Unmount() == 0);
    }
    // The primary's checksummed bytes are the backup's again.
    const std::string after = ReadWhole(pool.path());
    CHECK(after.compare(0, L::kSuperChecksummedBytes + 8, Base().bytes, 0,
                        L::kSuperChecksummedBytes + 8) == 0);
  }

  TEST_CASE(
      "BadPool: a committed journal transaction that writes outside the metadata is refused") {
    std::string img = Base().bytes;
    const L::Superblock sb = Sb(img);
    const std::string eight(8, 'Z');
    SUBCASE("a record aimed at the superblock") {
      ForgeJournal(img, {{L::kRecCopy, 8, 0, eight}});
      ExpectRefused(img);
    }
    SUBCASE("a record aimed at the journal itself") {
      ForgeJournal(img, {{L::kRecCopy, 8, sb.journal_start * L::kBlockSize + 512, eight}});
      ExpectRefused(img);
    }
    SUBCASE("a record running past the end of the pool") {
      ForgeJournal(img, {{L::kRecCopy, 8, sb.pool_bytes - 4, eight}});
      ExpectRefused(img);
    }
    SUBCASE("a fill record running past the end of the pool") {
      ForgeJournal(img, {{L::kRecFill32, 4096, sb.pool_bytes - 8192, std::string(4, '\1')}});
      ExpectRefused(img);
    }
    SUBCASE("a good record followed by a bad one: nothing is applied") {
      ForgeJournal(img, {ChmodRecord(img, Base().file, S_IFREG | 0600),
                         {L::kRecCopy, 8, L::kBlockSize, eight}});
      ExpectRefused(img);
    }
  }

  TEST_CASE("BadPool: a journal holding a crash's leftovers mounts") {
    std::string img = Base().bytes;
    const uint64_t file = Base().file;
    bool committed = true;
    SUBCASE("a committed transaction is replayed") { committed = true; }
    SUBCASE("a torn commit (body checksum fails) is ignored") { committed = false; }
    ForgeJournal(img, {ChmodRecord(img, file, S_IFREG | 0600)}, /*bad_body_checksum=*/!committed);
    PoolFile pool(img);
    ScratchDir mnt;
    {
      DaemonProcess d(pool.path(), mnt.path());
      REQUIRE_MESSAGE(d.Await(kMountLimit) == DaemonProcess::State::kMounted, d.output());
      struct stat st {};
      REQUIRE(lstat((mnt.path() + "/file").c_str(), &st) == 0);
      CHECK((st.st_mode & 07777) == (committed ? 0600u : 0644u));
      CHECK(st.st_size == 3 * L::kBlockSize);
      CHECK(AccessError(mnt.path() + "/dir") == 0);
      CHECK(d.Unmount() == 0);
    }
    TimedResult f = RunFor(FsckArgv(pool.path()), 30s);
    CHECK_MESSAGE(f.r.exit_code == 0, f.r.output);
  }

  TEST_CASE("BadPool: a journal replay killed at random moments still applies once") {
    std::string img = Base().bytes;
    const uint64_t file = Base().file;
    ForgeJournal(img, {ChmodRecord(img, file, S_IFREG | 0600)});
    PoolFile pool(img);
    ScratchDir mnt;
    Rng rng(SeedFromEnv(5));
    for (int i = 0; i < 20; ++i) {
      DaemonProcess d(pool.path(), mnt.path());
      std::this_thread::sleep_for(std::chrono::microseconds(rng.Below(30000)));
      // The destructor kills the daemon (SIGKILL) and detaches its mount.
    }
    DaemonProcess d(pool.path(), mnt.path());
    REQUIRE_MESSAGE(d.Await(kMountLimit) == DaemonProcess::State::kMounted, d.output());
    struct stat st {};
    REQUIRE(lstat((mnt.path() + "/file").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600u);
    CHECK(ReadWhole(mnt.path() + "/file") == Base().file_data);
    CHECK(d.Unmount() == 0);
    TimedResult f = RunFor(FsckArgv(pool.path()), 30s);
    CHECK_MESSAGE(f.r.exit_code == 0, f.r.output);
  }

  TEST_CASE("BadPool: damaged metadata is refused at mount, or at least contained") {
    std::string img = Base().bytes;
    const BaseImage& b = Base();
    const L::Superblock sb = Sb(img);
    SUBCASE("an inode with a garbage mode") {
      Put<uint32_t>(img, InodeOff(sb, b.file), 0170644);
      ExpectRefusedOrContained(img, "file");
    }
    SUBCASE("an extent pointing outside the pool") {
      const uint64_t off = FirstExtentOff(img, b.file);
      Put<uint64_t>(img, off + offsetof(L::Extent, pool_block), sb.total_blocks + 10);
      ExpectRefusedOrContained(img, "file");
    }
    SUBCASE("an extent pointing into the inode table") {
      const uint64_t off = FirstExtentOff(img, b.file);
      Put<uint64_t>(img, off + offsetof(L::Extent, pool_block), sb.inode_start);
      ExpectRefusedOrContained(img, "file");
    }
    SUBCASE("a directory block with a bad magic") {
      const L::Extent e = Get<L::Extent>(img, FirstExtentOff(img, b.dir));
      img[e.pool_block * L::kBlockSize] ^= 0x01;
      ExpectRefusedOrContained(img, "dir");
    }
    SUBCASE("a directory entry naming a free inode") {
      const L::Extent e = Get<L::Extent>(img, FirstExtentOff(img, b.dir));
      bool found = false;
      for (uint32_t slot = 1; slot < L::kDirSlotsPerBlock && !found; ++slot) {
        const uint64_t off = e.pool_block * L::kBlockSize + slot * L::kDirSlotSize;
        if (Get<L::DirEntryHeader>(img, off).ino == b.dir_a) {
          Put<uint64_t>(img, off, sb.inode_count - 1);
          found = true;
        }
      }
      REQUIRE_MESSAGE(found, "no entry for dir/a in the first block of dir");
      ExpectRefusedOrContained(img, "dir");
    }
    SUBCASE("an extent chain that loops back on itself") {
      const L::Inode in = Get<L::Inode>(img, InodeOff(sb, b.frag));
      REQUIRE_MESSAGE(in.extent_block != 0, "frag has no extent chain");
      Put<uint64_t>(img,
                    in.extent_block * L::kBlockSize + offsetof(L::ExtentBlockHeader, next_block),
                    in.extent_block);
      ExpectRefusedOrContained(img, "frag");
    }
    SUBCASE("an xattr leaf with a bad magic") {
      const L::Inode in = Get<L::Inode>(img, InodeOff(sb, b.xat));
      REQUIRE_MESSAGE(in.xattr_block != 0, "xat has no xattr leaf");
      img[in.xattr_block * L::kBlockSize + 4] ^= 0x01;
      ExpectRefusedOrContained(img, "xat");
    }
    SUBCASE("an xattr entry that runs past its leaf") {
      const L::Inode in = Get<L::Inode>(img, InodeOff(sb, b.xat));
      REQUIRE_MESSAGE(in.xattr_block != 0, "xat has no xattr leaf");
      // slot_count of the entry in slot 1, the first after the header
      Put<uint8_t>(img, in.xattr_block * L::kBlockSize + L::kXattrSlotSize, 63);
      ExpectRefusedOrContained(img, "xat");
    }
    SUBCASE("an xattr value whose bytes changed") {
      const L::Inode in = Get<L::Inode>(img, InodeOff(sb, b.xat));
      REQUIRE_MESSAGE(in.xattr_block != 0, "xat has no xattr leaf");
      // A byte of the 100-byte value of "user.a", inline after the name.
      img[in.xattr_block * L::kBlockSize + L::kXattrSlotSize + sizeof(L::XattrLeafEntry) + 6 + 50] ^=
          0x01;
      ExpectRefusedOrContained(img, "xat");
    }
    SUBCASE("a data block in use whose reference count says free") {
      const L::Extent e = Get<L::Extent>(img, FirstExtentOff(img, b.file));
      Put<uint32_t>(img, sb.refcount_start * L::kBlockSize + (e.pool_block - sb.data_start) * 4, 0);
      // Mounted anyway, the block must not go to another file.
      ExpectRefusedOrContained(img, "file", [&](const std::string& mnt) {
        const std::string f = mnt + "/new";
        int fd = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
        REQUIRE(fd >= 0);
        const std::string chunk(1 << 20, 'N');
        for (int i = 0; i < 16; ++i)
          if (pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(i) << 20) <= 0) break;
        close(fd);
        CHECK_MESSAGE(ReadWhole(mnt + "/file") == b.file_data,
                      "a block marked free was handed to another file: file's data changed");
      });
    }
    SUBCASE("an extent block with a bad magic") {
      const L::Inode in = Get<L::Inode>(img, InodeOff(sb, b.frag));
      REQUIRE_MESSAGE(in.extent_block != 0, "frag has no extent chain");
      img[in.extent_block * L::kBlockSize + 2] ^= 0x40;
      ExpectRefusedOrContained(img, "frag");
    }
  }

  TEST_CASE("BadPool: paths that are not pool files are refused") {
    ScratchDir mnt;
    SUBCASE("a missing file") {
      DaemonProcess d("/dev/shm/leasefs-no-such-pool", mnt.path());
      REQUIRE(d.Await(kMountLimit) == DaemonProcess::State::kExited);
      CheckRefusal(d, "/dev/shm/leasefs-no-such-pool", mnt.path(), {}, {});
    }
    SUBCASE("a directory") {
      ScratchDir dir;
      DaemonProcess d(dir.path(), mnt.path());
      REQUIRE(d.Await(kMountLimit) == DaemonProcess::State::kExited);
      CheckRefusal(d, dir.path(), mnt.path(), {}, {});
    }
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::crashtest
