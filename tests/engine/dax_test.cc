// The DAX path and the quarantine in the engine: what MapForDax hands out
// and changes (exact runs, zeroed blocks, the one guard question), the reach
// records it leaves, the rule that keeps a covered block from reuse when its
// file lets go of it, DropReach, remount, fsck, and the upgrade of a
// version-1 pool.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <linux/falloc.h>

#include "engine/check/check.h"
#include "engine/filesystem.h"
#include "engine/layout.h"
#include "engine/layout_guard.h"
#include "engine/media.h"
#include "engine/superblock.h"
#include "leasefs/ioctl.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using Run = Filesystem::DaxRun;

constexpr uint64_t B = layout::kBlockSize;
const Filesystem::ReachOwner kOwner{4242, 777, 0xb007};

class RecordingGuard final : public LayoutGuard {
 public:
  Status MayChange(const Cred&, const LayoutChange& change) override {
    asked.push_back(change);
    return answer ? Status::Error(answer, "test guard") : Status::Ok();
  }
  std::vector<LayoutChange> asked;
  int answer = 0;
};

std::string Pattern(size_t n, char seed) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7) % 61);
  return s;
}

std::string Describe(const std::vector<Run>& runs) {
  std::string s;
  for (const Run& r : runs)
    s += "{" + std::to_string(r.file_block) + " " +
         (r.hole ? std::string("hole") : std::to_string(r.pool_block)) + " " +
         std::to_string(r.length) + "}";
  return s;
}

Run R(uint64_t fb, uint64_t pb, uint64_t len) { return {fb, pb, len, false}; }
Run Hole(uint64_t fb, uint64_t len) { return {fb, 0, len, true}; }

// Pool block of file block `fb` of `ino` (0: a hole).
uint64_t PoolOf(Filesystem& fs, Ino ino, uint64_t fb) {
  auto map = fs.BlockMap(ino, fb, 1);
  REQUIRE(map.ok());
  if (map->runs.empty() || map->runs[0].file_block > fb) return 0;
  return map->runs[0].pool_block + (fb - map->runs[0].file_block);
}

std::string MapDump(Filesystem& fs, Ino ino) {
  auto map = fs.BlockMap(ino, 0, SIZE_MAX);
  REQUIRE(map.ok());
  std::string s = "size " + std::to_string(map->file_size);
  for (const auto& r : map->runs)
    s += " [" + std::to_string(r.file_block) + " " + std::to_string(r.pool_block) + " " +
         std::to_string(r.length) + " f" + std::to_string(r.flags) + " rc" +
         std::to_string(r.refcount) + "]";
  return s;
}

uint64_t FreeBlocks(Filesystem& fs) { return fs.StatFs().f_bfree; }

Filesystem::DaxMapping MustMap(Filesystem& fs, Ino ino, uint64_t off, uint64_t len, bool writable,
                               uint64_t map_id, size_t max_runs = 256) {
  auto m = fs.MapForDax(kRoot, ino, off, len, writable, map_id, kOwner, max_runs);
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  return *m;
}

// fsck's errors on a copy of the pool `raw` holds ("" if none), and its report.
std::string Fsck(SimMedia* raw, check::CheckReport* out = nullptr) {
  auto copy = SimMedia::FromImage(raw->Snapshot());
  auto report = check::CheckPool(*copy, check::CheckOptions{});
  if (!report.ok()) return report.status().ToString();
  std::string errors;
  for (const auto& f : report->findings)
    if (f.kind != check::Finding::kNote) errors += f.ToString() + "\n";
  if (out) *out = *report;
  return errors;
}

// A pool whose first data blocks go, in order, to /f: blocks 0-1 written
// (pool d, d+1), 2-3 a hole, 4-5 preallocated (d+2, d+3), 6 written in part
// (d+4; size 6 blocks + 100 bytes). The preallocated blocks hold stale bytes.
struct Layout {
  std::unique_ptr<Filesystem> fs;
  SimMedia* raw = nullptr;
  Ino f = 0;
  uint64_t d = 0;
};

Layout MakeLayout(size_t pool = 8 << 20) {
  Layout l;
  l.fs = MustMount(FormattedPool(pool), &l.raw);
  Filesystem& fs = *l.fs;
  l.f = MustCreate(fs, 1, "f");
  MustWrite(fs, l.f, 0, Pattern(2 * B, 'a'));
  REQUIRE(fs.Fallocate(kRoot, l.f, FALLOC_FL_KEEP_SIZE, 4 * B, 2 * B).ok());
  MustWrite(fs, l.f, 6 * B, Pattern(100, 'z'));
  l.d = PoolOf(fs, l.f, 0);
  REQUIRE(PoolOf(fs, l.f, 4) == l.d + 2);
  REQUIRE(PoolOf(fs, l.f, 6) == l.d + 4);
  std::memset(l.raw->base() + (l.d + 2) * B, 0x5a, 2 * B);  // stale, unwritten
  return l;
}

std::string Expected() {
  return Pattern(2 * B, 'a') + std::string(4 * B, '\0') + Pattern(100, 'z');
}

bool ZeroOnMedia(SimMedia* raw, uint64_t block, uint64_t count) {
  const char* p = raw->base() + block * B;
  return std::all_of(p, p + count * B, [](char c) { return c == 0; });
}

TEST_SUITE("dax") {
  TEST_CASE("MapForDax: read-only: exact runs, holes stay holes, unwritten blocks are zeroed") {
    Layout l = MakeLayout();
    Filesystem& fs = *l.fs;
    RecordingGuard guard;
    fs.SetLayoutGuard(&guard);
    const uint64_t free_before = FreeBlocks(fs);
    const auto m = MustMap(fs, l.f, 0, 16 * B, false, 5);
    CHECK(Describe(m.runs) == Describe({R(0, l.d, 2), Hole(2, 2), R(4, l.d + 2, 3)}));
    CHECK(m.covered == 7 * B);
    CHECK(m.file_size == 6 * B + 100);
    CHECK(guard.asked.empty());
    CHECK(FreeBlocks(fs) == free_before);
    CHECK(ReadAll(fs, l.f) == Expected());
    CHECK(ZeroOnMedia(l.raw, l.d + 2, 2));
    // Marked written and covered by the records.
    CHECK(MapDump(fs, l.f) == "size " + std::to_string(6 * B + 100) + " [0 " +
                                  std::to_string(l.d) + " 2 f4 rc1] [4 " +
                                  std::to_string(l.d + 2) + " 3 f4 rc1]");
    const auto recs = fs.ReachRecords();
    REQUIRE(recs.size() == 2);
    CHECK(recs[0].map_id == 5);
    CHECK(recs[0].ino == l.f);
    CHECK(recs[0].file_block == 0);
    CHECK(recs[0].pool_block == l.d);
    CHECK(recs[0].length == 2);
    CHECK(recs[0].quarantined == 0);
    CHECK_FALSE(recs[0].writable);
    CHECK(recs[0].owner == kOwner);
    CHECK(recs[1].file_block == 4);
    CHECK(recs[1].pool_block == l.d + 2);
    CHECK(recs[1].length == 3);
    const auto q = fs.Quarantine();
    CHECK(q.records == 2);
    CHECK(q.capacity == 128);
    CHECK(q.quarantined == 0);
    CHECK(Fsck(l.raw) == "");
  }

  TEST_CASE("MapForDax: max_runs and the end of the file cut what is handed out") {
    Layout l = MakeLayout();
    Filesystem& fs = *l.fs;
    SUBCASE("two runs") {
      const auto m = MustMap(fs, l.f, 0, 16 * B, false, 5, 2);
      CHECK(Describe(m.runs) == Describe({R(0, l.d, 2), Hole(2, 2)}));
      CHECK(m.covered == 4 * B);
      // Blocks past `covered` are left alone: 4-5 stay unwritten.
      CHECK(MapDump(fs, l.f).find("[4 " + std::to_string(l.d + 2) + " 2 f1 rc1]") !=
            std::string::npos);
      CHECK(fs.ReachRecords().size() == 1);
    }
    SUBCASE("from the middle of an extent") {
      const auto m = MustMap(fs, l.f, B, 2 * B, false, 5);
      CHECK(Describe(m.runs) == Describe({R(1, l.d + 1, 1), Hole(2, 1)}));
      CHECK(m.covered == 2 * B);
    }
    SUBCASE("at or past the end of the file: nothing") {
      const auto m = MustMap(fs, l.f, 7 * B, 4 * B, true, 5);
      CHECK(m.runs.empty());
      CHECK(m.covered == 0);
      CHECK(fs.Quarantine().records == 0);
    }
    SUBCASE("the last partial block is handed out whole") {
      const auto m = MustMap(fs, l.f, 6 * B, 4 * B, false, 5);
      CHECK(Describe(m.runs) == Describe({R(6, l.d + 4, 1)}));
      CHECK(m.covered == B);
    }
  }

  TEST_CASE("MapForDax: one call zeroes or copies at most 64 MiB; written blocks do not count") {
    constexpr uint64_t kCap = (uint64_t{64} << 20) / B;  // blocks
    auto fs = MustMount(FormattedPool(80 << 20));
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, Pattern(8 * B, 'w'));  // blocks 0-7 written, then a hole
    SetAttrArgs a;
    a.valid = SetAttrArgs::kSize;
    a.size = (8 + kCap + 8) * B;
    REQUIRE(fs->SetAttr(kRoot, f, a).ok());
    auto total = [](const Filesystem::DaxMapping& m) {
      uint64_t n = 0;
      for (const Run& r : m.runs) n += r.length;
      return n;
    };
    const uint64_t free_before = FreeBlocks(*fs);
    const auto m = MustMap(*fs, f, 0, (8 + kCap + 8) * B, true, 1);
    CHECK(m.covered == (8 + kCap) * B);
    CHECK(total(m) == 8 + kCap);
    CHECK(FreeBlocks(*fs) == free_before - kCap);
    const auto rest = MustMap(*fs, f, m.covered, (kCap + 16) * B, true, 2);
    CHECK(rest.covered == 8 * B);
    CHECK(total(rest) == 8);
    CHECK(FreeBlocks(*fs) == free_before - kCap - 8);
    // All of it has blocks now: nothing left to fill, one call covers it.
    CHECK(MustMap(*fs, f, 0, (8 + kCap + 8) * B, true, 3).covered == (8 + kCap + 8) * B);
  }

  TEST_CASE("Pmem2Media: zeroing a large range leaves the pool file's holes alone") {
    const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    const std::string path = dir + "/leasefs-zero-test-" + std::to_string(getpid());
    MapOptions o;
    o.create = true;
    o.create_size = 16 << 20;
    auto m = OpenPool(path, o);
    unlink(path.c_str());
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    char* base = (*m)->base();
    const int fd = (*m)->fd();
    const bool holes = lseek(fd, 0, SEEK_HOLE) == 0;  // a fresh file: all hole, if it can tell
    constexpr size_t K = 1024, M = 1024 * K;
    auto fill = [&](size_t at, size_t n, char c) { (*m)->SetFlush(base + at, c, n); };
    fill(508 * K, 4 * K, 'y');         // just before the range
    fill(M, 8 * K, 'x');               // data in it
    fill(3 * M + 4 * K, 4 * K, 'x');
    fill(4 * M + 512 * K, 4 * K, 'z');  // just after it
    (*m)->Drain();
    (*m)->SetFlush(base + 512 * K, 0, 4 * M);
    (*m)->Drain();
    // First (reading a tmpfs hole through a shared mapping allocates it):
    // the holes in the range were not written, the data around them was
    // zeroed a chunk (1 MiB) at a time.
    if (holes) {
      CHECK(lseek(fd, 512 * K, SEEK_DATA) == static_cast<off_t>(M));
      CHECK(lseek(fd, M, SEEK_HOLE) == static_cast<off_t>(2 * M));
      CHECK(lseek(fd, 2 * M, SEEK_DATA) == static_cast<off_t>(3 * M + 4 * K));
      CHECK(lseek(fd, 3 * M + 4 * K, SEEK_HOLE) == static_cast<off_t>(4 * M));
    } else {
      MESSAGE("the pool file's filesystem reports no holes: only the bytes were checked");
    }
    CHECK(std::all_of(base + 512 * K, base + 4 * M + 512 * K, [](char c) { return c == 0; }));
    CHECK(std::string(base + 508 * K, 4 * K) == std::string(4 * K, 'y'));
    CHECK(std::string(base + 4 * M + 512 * K, 4 * K) == std::string(4 * K, 'z'));
  }

  TEST_CASE("MapForDax: bad arguments") {
    Layout l = MakeLayout();
    Filesystem& fs = *l.fs;
    auto err = [&](Ino ino, uint64_t off, uint64_t len, uint64_t id, size_t runs = 4) {
      return fs.MapForDax(kRoot, ino, off, len, true, id, kOwner, runs).status().err();
    };
    CHECK(err(l.f, 1, B, 1) == EINVAL);
    CHECK(err(l.f, 0, B + 1, 1) == EINVAL);
    CHECK(err(l.f, 0, 0, 1) == EINVAL);
    CHECK(err(l.f, 0, B, 0) == EINVAL);
    CHECK(err(l.f, 0, B, 1, 0) == EINVAL);
    CHECK(err(1, 0, B, 1) == EISDIR);
    CHECK(err(999, 0, B, 1) == ENOENT);
    auto fifo = fs.Mknod(kRoot, 1, "p", S_IFIFO | 0644, 0);
    REQUIRE(fifo.ok());
    CHECK(err(fifo->attr.st_ino, 0, B, 1) == EINVAL);
    CHECK(fs.Quarantine().records == 0);
  }

  TEST_CASE("MapForDax: writable: holes get zeroed blocks, one guard question") {
    Layout l = MakeLayout();
    Filesystem& fs = *l.fs;
    RecordingGuard guard;
    fs.SetLayoutGuard(&guard);
    // Stale bytes where the hole's blocks will come from (the next free ones).
    std::memset(l.raw->base() + (l.d + 5) * B, 0x77, 2 * B);
    const uint64_t free_before = FreeBlocks(fs);
    const auto m = MustMap(fs, l.f, 0, 8 * B, true, 9);
    CHECK(Describe(m.runs) == Describe({R(0, l.d, 2), R(2, l.d + 5, 2), R(4, l.d + 2, 3)}));
    CHECK(m.covered == 7 * B);
    REQUIRE(guard.asked.size() == 1);
    const LayoutChange& ch = guard.asked[0];
    CHECK(ch.ino == l.f);
    CHECK(ch.kind == LayoutChangeKind::kAllocatingWrite);
    CHECK(ch.offset == 0);
    CHECK(ch.length == 7 * B);
    CHECK_FALSE(ch.size_changes);
    CHECK(ch.old_size == 6 * B + 100);
    CHECK(ch.new_size == 6 * B + 100);
    CHECK(FreeBlocks(fs) == free_before - 2);
    CHECK(ReadAll(fs, l.f) == Expected());
    CHECK(ZeroOnMedia(l.raw, l.d + 5, 2));
    CHECK(ZeroOnMedia(l.raw, l.d + 2, 2));
    auto e = fs.GetAttr(l.f);
    CHECK(e->attr.st_blocks == 7 * 8);
    const auto recs = fs.ReachRecords();
    REQUIRE(recs.size() == 3);
    CHECK(recs[1].pool_block == l.d + 2);  // by pool block within a map id
    CHECK(recs[2].pool_block == l.d + 5);
    CHECK(recs[2].file_block == 2);
    CHECK(recs[2].writable);
    CHECK(Fsck(l.raw) == "");

    SUBCASE("a second writable map of the same range allocates nothing and asks nothing") {
      const auto again = MustMap(fs, l.f, 0, 8 * B, true, 10);
      CHECK(Describe(again.runs) == Describe(m.runs));
      CHECK(guard.asked.size() == 1);
      CHECK(fs.Quarantine().records == 6);
    }
  }

  TEST_CASE("MapForDax: writable: blocks shared by reflink are copied") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f"), g = MustCreate(*fs, 1, "g");
    MustWrite(*fs, f, 0, Pattern(3 * B, 'c'));
    REQUIRE(fs->CloneRange(kRoot, f, B, g, 0, 2 * B).ok());  // g's 0-1 share f's 1-2
    const uint64_t d = PoolOf(*fs, f, 0);
    RecordingGuard guard;
    fs->SetLayoutGuard(&guard);
    const auto m = MustMap(*fs, g, 0, 2 * B, true, 3);
    REQUIRE(m.runs.size() == 1);
    CHECK(m.runs[0].length == 2);
    CHECK(m.runs[0].pool_block != d + 1);
    CHECK(ReadAll(*fs, g) == Pattern(3 * B, 'c').substr(B));
    CHECK(ReadAll(*fs, f) == Pattern(3 * B, 'c'));
    CHECK(MapDump(*fs, f) == "size " + std::to_string(3 * B) + " [0 " + std::to_string(d) +
                                 " 3 f0 rc1]");
    REQUIRE(guard.asked.size() == 1);
    CHECK(guard.asked[0].length == 2 * B);
  }

  TEST_CASE("MapForDax: writable over blocks of its own asks nothing") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, Pattern(3 * B, 'o'));
    REQUIRE(fs->Fallocate(kRoot, f, FALLOC_FL_KEEP_SIZE, 0, 3 * B).ok());
    RecordingGuard guard;
    fs->SetLayoutGuard(&guard);
    MustMap(*fs, f, 0, 3 * B, true, 3);
    CHECK(guard.asked.empty());
  }

  TEST_CASE("MapForDax: a guard refusal changes nothing") {
    for (int answer : {ETXTBSY, ERESTART}) {
      CAPTURE(answer);
      Layout l = MakeLayout();
      Filesystem& fs = *l.fs;
      RecordingGuard guard;
      guard.answer = answer;
      fs.SetLayoutGuard(&guard);
      const std::string map = MapDump(fs, l.f), bytes = ReadAll(fs, l.f);
      const uint64_t free_before = FreeBlocks(fs);
      const std::vector<char> before = l.raw->Snapshot();
      auto m = fs.MapForDax(kRoot, l.f, 0, 8 * B, true, 9, kOwner, 256);
      CHECK(m.status().err() == answer);
      CHECK(guard.asked.size() == 1);
      CHECK(MapDump(fs, l.f) == map);
      CHECK(ReadAll(fs, l.f) == bytes);
      CHECK(FreeBlocks(fs) == free_before);
      CHECK(fs.Quarantine().records == 0);
      CHECK(fs.ReachRecords().empty());
      // Not a byte of the pool changed (the stale unwritten bytes included).
      CHECK(l.raw->Snapshot() == before);
    }
  }

  TEST_CASE("MapForDax: a full quarantine table is ENOSPC and records nothing") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, Pattern(B, 'q'));
    const Ino h = MustCreate(*fs, 1, "h");
    SetAttrArgs a;
    a.valid = SetAttrArgs::kSize;
    a.size = 4 * B;
    REQUIRE(fs->SetAttr(kRoot, h, a).ok());  // all hole
    for (uint64_t id = 1; id <= 128; ++id) MustMap(*fs, f, 0, B, false, id);
    CHECK(fs->Quarantine().records == 128);
    const uint64_t free_before = FreeBlocks(*fs);
    const std::string hmap = MapDump(*fs, h);
    auto m = fs->MapForDax(kRoot, f, 0, B, false, 500, kOwner, 256);
    CHECK(m.status().err() == ENOSPC);
    CHECK(std::string(m.status().message()).find("quarantine table") != std::string::npos);
    auto w = fs->MapForDax(kRoot, h, 0, 4 * B, true, 501, kOwner, 256);
    CHECK(w.status().err() == ENOSPC);
    CHECK(MapDump(*fs, h) == hmap);
    CHECK(FreeBlocks(*fs) == free_before);
    CHECK(fs->ReachRecords().size() == 128);
    // A read-only map of holes needs no record.
    CHECK(MustMap(*fs, h, 0, 4 * B, false, 502).runs.size() == 1);
    CHECK(fs->DropReach(7) == 1);
    CHECK(MustMap(*fs, f, 0, B, false, 503).runs.size() == 1);
    CHECK(fs->Quarantine().records == 128);
  }

  TEST_CASE("MapForDax: ENOSPC for the holes changes nothing") {
    auto fs = MustMount(FormattedPool());
    const Ino big = MustCreate(*fs, 1, "big");
    const Ino h = MustCreate(*fs, 1, "h");
    SetAttrArgs a;
    a.valid = SetAttrArgs::kSize;
    a.size = 64 * B;
    REQUIRE(fs->SetAttr(kRoot, h, a).ok());
    // Fill the pool but for a few blocks.
    const uint64_t avail = fs->StatFs().f_bavail;
    MustWrite(*fs, big, 0, std::string((avail - 10) * B, 'x'));
    const uint64_t free_before = FreeBlocks(*fs);
    auto w = fs->MapForDax(kRoot, h, 0, 64 * B, true, 1, kOwner, 256);
    CHECK(w.status().err() == ENOSPC);
    CHECK(FreeBlocks(*fs) == free_before);
    CHECK(fs->Quarantine().records == 0);
  }

  // --- the rule: covered blocks a file lets go of are quarantined -----------

  struct Covered {
    std::unique_ptr<Filesystem> fs;
    SimMedia* raw = nullptr;
    Ino f = 0;
    uint64_t d = 0;  // /f: 8 blocks at pool d..d+7, mapped under map id 1
  };

  Covered MakeCovered() {
    Covered c;
    c.fs = MustMount(FormattedPool(), &c.raw);
    c.f = MustCreate(*c.fs, 1, "f");
    MustWrite(*c.fs, c.f, 0, Pattern(8 * B, 'k'));
    c.d = PoolOf(*c.fs, c.f, 0);
    REQUIRE(Describe(MustMap(*c.fs, c.f, 0, 8 * B, true, 1).runs) == Describe({R(0, c.d, 8)}));
    return c;
  }

  void Truncate(Filesystem& fs, Ino ino, uint64_t size) {
    SetAttrArgs a;
    a.valid = SetAttrArgs::kSize;
    a.size = size;
    REQUIRE(fs.SetAttr(kRoot, ino, a).ok());
  }

  // Fills the pool with a new file; REQUIREs that none of its blocks lies in
  // [first, first + count). Returns the file.
  Ino FillPoolAvoiding(Filesystem& fs, uint64_t first, uint64_t count) {
    const Ino fill = MustCreate(fs, 1, "fill");
    const uint64_t avail = fs.StatFs().f_bavail;
    MustWrite(fs, fill, 0, std::string(avail * B, 'F'));
    CHECK(fs.StatFs().f_bavail == 0);
    auto map = fs.BlockMap(fill, 0, SIZE_MAX);
    REQUIRE(map.ok());
    for (const auto& r : map->runs)
      REQUIRE_MESSAGE((r.pool_block + r.length <= first || r.pool_block >= first + count),
                      "block " << r.pool_block << " was quarantined");
    return fill;
  }

  TEST_CASE("Quarantine: blocks a covered file lets go of stay allocated until DropReach") {
    Covered c = MakeCovered();
    Filesystem& fs = *c.fs;
    const uint64_t free_before = FreeBlocks(fs);
    uint64_t held = 0, allocated = 0;
    SUBCASE("truncate") {
      Truncate(fs, c.f, 3 * B + 10);
      held = 4;  // blocks 4-7
    }
    SUBCASE("punch") {
      REQUIRE(fs.Fallocate(kRoot, c.f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * B, 3 * B)
                  .ok());
      held = 3;
    }
    SUBCASE("collapse") {
      REQUIRE(fs.Fallocate(kRoot, c.f, FALLOC_FL_COLLAPSE_RANGE, B, 2 * B).ok());
      held = 2;
    }
    SUBCASE("unlink and forget") {
      REQUIRE(fs.Unlink(kRoot, 1, "f").ok());
      fs.Forget(c.f, 1000);
      held = 8;
    }
    SUBCASE("a clone over it") {
      const Ino g = MustCreate(fs, 1, "g");
      MustWrite(fs, g, 0, Pattern(2 * B, 'g'));
      REQUIRE(fs.CloneRange(kRoot, g, 0, c.f, 0, 2 * B).ok());
      held = 2;
      allocated = 2;  // /g's own blocks
    }
    CHECK(fs.Quarantine().quarantined == held);
    const auto recs = fs.ReachRecords();
    REQUIRE(recs.size() == 1);
    CHECK(recs[0].quarantined == held);
    // Nothing the file let go of is free.
    CHECK(FreeBlocks(fs) == free_before - allocated);
    check::CheckReport report;
    CHECK(Fsck(c.raw, &report) == "");
    CHECK(report.reach_records == 1);
    CHECK(report.quarantined_blocks == held);
    const Ino fill = FillPoolAvoiding(fs, c.d, 8);
    REQUIRE(fs.Unlink(kRoot, 1, "fill").ok());
    fs.Forget(fill, 1000);
    CHECK(FreeBlocks(fs) == free_before - allocated);
    CHECK(fs.DropReach(1) == 1);
    CHECK(fs.DropReach(1) == 0);
    CHECK(FreeBlocks(fs) == free_before - allocated + held);
    CHECK(fs.Quarantine().quarantined == 0);
    CHECK(fs.Quarantine().records == 0);
    CHECK(Fsck(c.raw) == "");
  }

  TEST_CASE("Quarantine: defrag of a covered file quarantines the blocks it leaves") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f"), sp = MustCreate(*fs, 1, "sp");
    for (uint64_t i = 0; i < 6; ++i) {
      MustWrite(*fs, f, i * B, Pattern(B, static_cast<char>('a' + i)));
      MustWrite(*fs, sp, i * B, Pattern(B, 's'));
    }
    REQUIRE(fs->Unlink(kRoot, 1, "sp").ok());
    fs->Forget(sp, 1000);
    const auto m = MustMap(*fs, f, 0, 6 * B, false, 2);
    CHECK(m.runs.size() == 6);
    const uint64_t free_before = FreeBlocks(*fs);
    auto r = fs->Defrag(kRoot, f);
    REQUIRE(r.ok());
    REQUIRE(r->blocks_moved > 0);
    CHECK(fs->Quarantine().quarantined == r->blocks_moved);
    const uint64_t after = FreeBlocks(*fs);
    CHECK(after < free_before);  // the blocks moved to are taken, the ones left are kept
    CHECK(fs->DropReach(2) == 6);
    CHECK(FreeBlocks(*fs) == after + r->blocks_moved);
    CHECK(fs->Quarantine().quarantined == 0);
  }

  TEST_CASE("Quarantine: of two overlapping records, dropping one keeps the blocks") {
    Covered c = MakeCovered();
    Filesystem& fs = *c.fs;
    MustMap(fs, c.f, 2 * B, 2 * B, false, 2);  // blocks 2-3 again
    const uint64_t free_before = FreeBlocks(fs);
    Truncate(fs, c.f, 0);
    CHECK(fs.Quarantine().quarantined == 8);
    CHECK(fs.DropReach(1) == 1);
    CHECK(fs.Quarantine().quarantined == 2);
    CHECK(FreeBlocks(fs) == free_before + 6);
    CHECK(Fsck(c.raw) == "");
    const auto recs = fs.ReachRecords();
    REQUIRE(recs.size() == 1);
    CHECK(recs[0].map_id == 2);
    CHECK(recs[0].quarantined == 2);
    CHECK(fs.DropReach(2) == 1);
    CHECK(FreeBlocks(fs) == free_before + 8);
  }

  TEST_CASE("Quarantine: a remount keeps records and quarantined blocks") {
    Covered c = MakeCovered();
    Truncate(*c.fs, c.f, B);
    const auto recs = c.fs->ReachRecords();
    c.fs->Unmount();
    const std::vector<char> image = c.raw->Snapshot();
    c.fs.reset();
    SimMedia* raw = nullptr;
    auto fs = MountImage(image, &raw);
    CHECK(fs->Quarantine().quarantined == 7);
    CHECK(fs->Quarantine().records == 1);
    const auto again = fs->ReachRecords();
    REQUIRE(again.size() == 1);
    CHECK(again[0].pool_block == recs[0].pool_block);
    CHECK(again[0].quarantined == 7);
    CHECK(again[0].owner == kOwner);
    CHECK(again[0].writable);
    FillPoolAvoiding(*fs, c.d, 8);
    const uint64_t full = fs->StatFs().f_bfree;  // the reserve for extent chains
    CHECK(fs->DropReach(1) == 1);
    CHECK(fs->StatFs().f_bfree == full + 7);
  }

  TEST_CASE("Quarantine: an orphan reclaimed at mount leaves its covered blocks quarantined") {
    Covered c = MakeCovered();
    REQUIRE(c.fs->Unlink(kRoot, 1, "f").ok());  // still referenced: an orphan
    const std::vector<char> image = c.raw->Snapshot();  // the daemon dies here
    c.fs.reset();
    SimMedia* raw = nullptr;
    MountReport report;
    auto fs = MustMount(SimMedia::FromImage(image), &raw, &report);
    CHECK(report.orphans_reclaimed == 1);
    CHECK(fs->Quarantine().quarantined == 8);
    CHECK(Fsck(raw) == "");
  }

  TEST_CASE("Quarantine: a damaged record is refused at mount and flagged by fsck") {
    Covered c = MakeCovered();
    c.fs->Unmount();
    std::vector<char> image = c.raw->Snapshot();
    c.fs.reset();
    layout::Superblock sb;
    std::memcpy(&sb, image.data(), sizeof(sb));
    auto* rec = reinterpret_cast<layout::QuarantineRecord*>(image.data() + sb.quarantine_start * B);
    REQUIRE(rec->map_id == 1);
    rec->map_id = 0;
    auto bad = Filesystem::Mount(SimMedia::FromImage(image), MountOptions{});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().err() == EUCLEAN);
    CHECK(std::string(bad.status().message()) ==
          "quarantine record 0 has map id 0 (fsck.leasefs -y removes it)");
    auto m = SimMedia::FromImage(image);
    auto report = check::CheckPool(*m, check::CheckOptions{});
    REQUIRE(report.ok());
    REQUIRE(report->errors == 1);
    CHECK(report->findings.back().ToString() == "error: quarantine record 0: map id 0");
  }

  TEST_CASE("Records: the user whose request made a mapping is kept, across a remount") {
    Covered c = MakeCovered();  // map id 1, by root
    Filesystem& fs = *c.fs;
    const Cred user(1000, 1000), high(4000000000u, 7);
    REQUIRE(fs.MapForDax(user, c.f, 0, 2 * B, false, 2, kOwner, 16).ok());
    REQUIRE(fs.MapForDax(high, c.f, 4 * B, 2 * B, true, 3, kOwner, 16).ok());
    auto uids = [](const std::vector<Filesystem::ReachRecord>& recs) {
      std::string s;
      for (const auto& r : recs) s += std::to_string(r.map_id) + ":" + std::to_string(r.uid) + " ";
      return s;
    };
    CHECK(uids(fs.ReachRecords()) == "1:0 2:1000 3:4000000000 ");
    // On media: the 4 bytes after owner_pid.
    layout::Superblock sb;
    std::memcpy(&sb, c.raw->base(), sizeof(sb));
    std::vector<uint32_t> raw;
    for (uint64_t i = 0; i < 3; ++i) {
      uint32_t u;
      std::memcpy(&u, c.raw->base() + sb.quarantine_start * B + i * 64 + 44, 4);
      raw.push_back(u);
    }
    CHECK(raw == std::vector<uint32_t>{0, 1000, 4000000000u});
    CHECK(Fsck(c.raw) == "");  // any uid is valid
    fs.Unmount();
    const std::vector<char> image = c.raw->Snapshot();
    c.fs.reset();
    auto again = MountImage(image);
    const auto recs = again->ReachRecords();
    CHECK(uids(recs) == "1:0 2:1000 3:4000000000 ");
    REQUIRE(recs.size() == 3);
    CHECK(recs[2].owner == kOwner);  // the owner is the process alone
  }

  // --- no second owner for a block a writable record covers ----------------

  // Covered, plus /g: 4 blocks of its own (pool g..g+3), the donor of moves.
  struct Shared : Covered {
    Ino g = 0;
    uint64_t gd = 0;
  };

  Shared MakeShared() {
    Shared s;
    static_cast<Covered&>(s) = MakeCovered();
    s.g = MustCreate(*s.fs, 1, "g");
    MustWrite(*s.fs, s.g, 0, Pattern(4 * B, 'g'));
    s.gd = PoolOf(*s.fs, s.g, 0);
    return s;
  }

  TEST_CASE("Clone: a source range a writable record covers is ETXTBSY, before the guard") {
    Shared s = MakeShared();
    Filesystem& fs = *s.fs;
    RecordingGuard guard;
    fs.SetLayoutGuard(&guard);
    const std::string fmap = MapDump(fs, s.f), gmap = MapDump(fs, s.g);
    const uint64_t free_before = FreeBlocks(fs);
    auto err = [&](Ino src, uint64_t src_off, Ino dst, uint64_t dst_off, uint64_t len) {
      auto r = fs.CloneRange(kRoot, src, src_off, dst, dst_off, len);
      return r.ok() ? 0 : r.status().err();
    };
    CHECK(err(s.f, 0, s.g, 0, 2 * B) == ETXTBSY);
    CHECK(err(s.f, 7 * B, s.g, 0, B) == ETXTBSY);    // the last block alone
    CHECK(err(s.f, 0, s.g, 0, 0) == ETXTBSY);        // to the end of file
    CHECK(err(s.f, 0, s.f, 8 * B, 2 * B) == ETXTBSY);  // onto itself, past its end
    auto r = fs.CloneRange(kRoot, s.f, 0, s.g, 0, 2 * B);
    CHECK(std::string(r.status().message()) ==
          "a range mapped for writing through DAX cannot be shared; clone it once the mapping "
          "is gone");
    CHECK(guard.asked.empty());
    CHECK(MapDump(fs, s.f) == fmap);
    CHECK(MapDump(fs, s.g) == gmap);
    CHECK(FreeBlocks(fs) == free_before);
    // The other way round shares nothing of /f's: /g's blocks replace them,
    // and /f's two blocks go to the quarantine.
    CHECK(err(s.g, 0, s.f, 0, 2 * B) == 0);
    CHECK(fs.Quarantine().quarantined == 2);
    // Once the mapping is gone, /f's remaining blocks may be shared.
    CHECK(fs.DropReach(1) == 1);
    CHECK(err(s.f, 2 * B, s.g, 0, 2 * B) == 0);
    CHECK(PoolOf(fs, s.g, 0) == s.d + 2);
    CHECK(Fsck(s.raw) == "");
  }

  TEST_CASE("Clone: a read-only record's blocks may be shared; a writable one's after remount not") {
    Shared s = MakeShared();
    Filesystem& fs = *s.fs;
    const Ino h = MustCreate(fs, 1, "h");
    MustWrite(fs, h, 0, Pattern(2 * B, 'h'));
    const uint64_t hd = PoolOf(fs, h, 0);
    MustMap(fs, h, 0, 2 * B, false, 2);
    REQUIRE(fs.CloneRange(kRoot, h, 0, s.g, 0, 2 * B).ok());
    CHECK(PoolOf(fs, s.g, 0) == hd);
    CHECK(MapDump(fs, h) == "size " + std::to_string(2 * B) + " [0 " + std::to_string(hd) +
                                " 2 f6 rc2]");
    // A writable record survives a remount, and so does the rule.
    fs.Unmount();
    const std::vector<char> image = s.raw->Snapshot();
    s.fs.reset();
    auto again = MountImage(image);
    auto r = again->CloneRange(kRoot, s.f, 3 * B, MustLookup(*again, 1, "h"), 0, B);
    CHECK(r.status().err() == ETXTBSY);
    CHECK(again->CloneRange(kRoot, MustLookup(*again, 1, "h"), 0, s.f, 0, B).ok());
  }

  TEST_CASE("Clone: a covered block made unwritten is not shared, so the clone goes ahead") {
    Shared s = MakeShared();
    Filesystem& fs = *s.fs;
    // Zero range keeps /f's own blocks, marked unwritten.
    REQUIRE(fs.Fallocate(kRoot, s.f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 2 * B).ok());
    REQUIRE(PoolOf(fs, s.f, 0) == s.d);
    auto r = fs.CloneRange(kRoot, s.f, 0, s.g, 0, 2 * B);
    REQUIRE(r.ok());
    CHECK(PoolOf(fs, s.g, 0) == 0);  // a hole, as unwritten blocks clone
    CHECK(ReadAll(fs, s.g) == std::string(2 * B, '\0') + Pattern(4 * B, 'g').substr(2 * B));
    // One block further the clone would share a written covered block.
    CHECK(fs.CloneRange(kRoot, s.f, 0, s.g, 0, 3 * B).status().err() == ETXTBSY);
  }

  TEST_CASE("copy_file_range: a middle a writable record covers is copied, not shared") {
    Shared s = MakeShared();
    Filesystem& fs = *s.fs;
    RecordingGuard guard;
    fs.SetLayoutGuard(&guard);
    const Ino h = MustCreate(fs, 1, "h");
    // Offsets alike within their blocks: without the record, blocks 1-6 of
    // /f would be shared.
    auto n = fs.CopyFileRange(kRoot, s.f, B + 100, h, B + 100, 6 * B);
    REQUIRE(n.ok());
    CHECK(*n == 6 * B);
    CHECK(ReadAll(fs, h) ==
          std::string(B + 100, '\0') + Pattern(8 * B, 'k').substr(B + 100, 6 * B));
    auto map = fs.BlockMap(h, 0, SIZE_MAX);
    REQUIRE(map.ok());
    for (const auto& r : map->runs) {
      CHECK(r.refcount == 1);
      CHECK((r.pool_block + r.length <= s.d || r.pool_block >= s.d + 8));
    }
    CHECK(MapDump(fs, s.f).find(" rc1]") != std::string::npos);
    CHECK(MapDump(fs, s.f).find("rc2") == std::string::npos);
    // Asked as one write of /h: /f's layout does not change, its holder
    // keeps its lease.
    REQUIRE(guard.asked.size() == 1);
    CHECK(guard.asked[0].ino == h);
    CHECK(guard.asked[0].kind == LayoutChangeKind::kAllocatingWrite);
    CHECK(guard.asked[0].offset == 0);  // from the old end of file, in whole blocks
    CHECK(guard.asked[0].length == 8 * B);
    CHECK(guard.asked[0].new_size == 7 * B + 100);

    SUBCASE("a read-only record's blocks are shared as before") {
      const Ino ro = MustCreate(fs, 1, "ro"), to = MustCreate(fs, 1, "to");
      MustWrite(fs, ro, 0, Pattern(3 * B, 'r'));
      MustMap(fs, ro, 0, 3 * B, false, 2);
      REQUIRE(fs.CopyFileRange(kRoot, ro, 0, to, 0, 3 * B).ok());
      CHECK(PoolOf(fs, to, 0) == PoolOf(fs, ro, 0));
    }
    SUBCASE("once the mapping is gone, the middle is shared") {
      REQUIRE(fs.DropReach(1) == 1);
      const Ino to = MustCreate(fs, 1, "to");
      REQUIRE(fs.CopyFileRange(kRoot, s.f, 0, to, 0, 8 * B).ok());
      CHECK(PoolOf(fs, to, 0) == s.d);
    }
    CHECK(Fsck(s.raw) == "");
  }

  TEST_CASE("MoveExtents: a block a writable record covers, in either range, is EBUSY") {
    Shared s = MakeShared();
    Filesystem& fs = *s.fs;
    const Ino o = MustCreate(fs, 1, "o");
    MustWrite(fs, o, 0, Pattern(4 * B, 'o'));
    RecordingGuard guard;
    fs.SetLayoutGuard(&guard);
    const std::string fmap = MapDump(fs, s.f), gmap = MapDump(fs, s.g), omap = MapDump(fs, o);
    auto move = [&](Ino orig, Ino donor, uint64_t ob, uint64_t db, uint64_t count) {
      auto r = fs.MoveExtents(kRoot, orig, donor, ob, db, count);
      if (!r.ok()) return std::string(r.status().message()) + " " + std::to_string(r.status().err());
      return std::to_string(*r);
    };
    const std::string busy = "blocks mapped for writing through DAX " + std::to_string(EBUSY);
    CHECK(move(s.f, s.g, 6, 0, 4) == busy);  // the original's (cut to /f's end: 6-7)
    CHECK(move(o, s.f, 0, 4, 4) == busy);    // the donor's
    CHECK(guard.asked.empty());
    CHECK(MapDump(fs, s.f) == fmap);
    CHECK(MapDump(fs, s.g) == gmap);
    CHECK(MapDump(fs, o) == omap);
    CHECK(move(o, s.g, 0, 0, 4) == "4");  // neither covered
    SUBCASE("read-only records do not stop it") {
      MustMap(fs, o, 0, 4 * B, false, 2);
      CHECK(move(o, s.g, 0, 0, 4) == "4");
    }
    SUBCASE("once the mapping is gone, it moves") {
      REQUIRE(fs.DropReach(1) == 1);
      CHECK(move(s.f, s.g, 0, 0, 4) == "4");
    }
    CHECK(Fsck(s.raw) == "");
  }

  // --- version 1 ------------------------------------------------------------

  std::vector<char> V1Image() {
    SimMedia* raw = nullptr;
    auto fs = MustMount(FormattedPool(), &raw);
    MustWrite(*fs, MustCreate(*fs, 1, "f"), 0, Pattern(3 * B, '1'));
    fs->Unmount();
    std::vector<char> image = raw->Snapshot();
    for (uint64_t copy : {0, 1}) {
      auto* sb = reinterpret_cast<layout::Superblock*>(image.data() + copy * B);
      sb->version = layout::kFormatVersionV1;
      sb->checksum = SuperblockChecksum(*sb);
    }
    return image;
  }

  uint32_t Version(const char* pool, uint64_t copy) {
    layout::Superblock sb;
    std::memcpy(&sb, pool + copy * B, sizeof(sb));
    return sb.version;
  }

  TEST_CASE("Upgrade: a writable mount upgrades a version-1 pool, backup then primary") {
    const std::vector<char> image = V1Image();
    {
      auto m = SimMedia::FromImage(image);
      auto report = check::CheckPool(*m, check::CheckOptions{});
      REQUIRE(report.ok());
      CHECK(report->findings.empty());
    }
    SUBCASE("read-only: nothing is written") {
      MountOptions ro;
      ro.read_only = true;
      auto m = SimMedia::FromImage(image);
      SimMedia* raw = m.get();
      MountReport report;
      auto fs = Filesystem::Mount(std::move(m), ro, &report);
      REQUIRE(fs.ok());
      CHECK_FALSE(report.upgraded);
      CHECK(Version(raw->base(), 0) == 1);
      CHECK((*fs)->Quarantine().records == 0);
      CHECK(raw->Snapshot() == image);
    }
    SUBCASE("writable") {
      SimMedia* raw = nullptr;
      MountReport report;
      auto fs = MustMount(SimMedia::FromImage(image), &raw, &report);
      CHECK(report.upgraded);
      CHECK(Version(raw->base(), 0) == 3);
      CHECK(Version(raw->base(), 1) == 3);
      CHECK(ReadAll(*fs, MustLookup(*fs, 1, "f")) == Pattern(3 * B, '1'));
      CHECK(fs->Quarantine().capacity == 128);
      CHECK(Fsck(raw) == "");
    }
    SUBCASE("a table with anything in it is refused, naming the command") {
      std::vector<char> bad = image;
      layout::Superblock sb;
      std::memcpy(&sb, bad.data(), sizeof(sb));
      bad[sb.quarantine_start * B + 100] = 1;
      auto fs = Filesystem::Mount(SimMedia::FromImage(bad), MountOptions{});
      REQUIRE_FALSE(fs.ok());
      CHECK(fs.status().err() == EUCLEAN);
      CHECK(std::string(fs.status().message()).find("fsck.leasefs -y") != std::string::npos);
    }
  }

  TEST_CASE("Upgrade: a crash at any point of it leaves a pool that mounts and checks clean") {
    const std::vector<char> image = V1Image();
    uint64_t points = 0;
    {
      auto m = SimMedia::FromImage(image);
      SimMedia* raw = m.get();
      auto fs = Filesystem::Mount(std::move(m), MountOptions{});
      REQUIRE(fs.ok());
      points = raw->persist_points();
    }
    REQUIRE(points >= 3);
    for (uint64_t k = 1; k <= points; ++k) {
      for (uint64_t seed = 0; seed < 6; ++seed) {
        CAPTURE(k);
        CAPTURE(seed);
        auto m = SimMedia::FromImage(image);
        SimMedia* raw = m.get();
        raw->ArmCrash(k);
        auto crashing = Filesystem::Mount(std::move(m), MountOptions{});
        REQUIRE(crashing.ok());
        const std::vector<char> crashed = raw->CrashImage(seed, seed != 0);
        {
          auto copy = SimMedia::FromImage(crashed);
          auto report = check::CheckPool(*copy, check::CheckOptions{});
          REQUIRE(report.ok());
          CHECK(report->errors == 0);
        }
        SimMedia* after = nullptr;
        auto fs = MustMount(SimMedia::FromImage(crashed), &after);
        CHECK(Version(after->base(), 0) == 3);
        CHECK(Version(after->base(), 1) == 3);
        CHECK(ReadAll(*fs, MustLookup(*fs, 1, "f")) == Pattern(3 * B, '1'));
        fs->Unmount();
        CHECK(Fsck(after) == "");
      }
    }
  }
}

}  // namespace
}  // namespace leasefs::engine
