// Block-map operations through the engine API, on an in-memory pool: clone
// and copy on write, every fallocate mode, unshare, defrag, move-extents and
// the block map itself, with exact maps, bytes and errnos.
#include <fcntl.h>

#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <linux/falloc.h>

#include "leasefs/ioctl.h"
#include "engine/filesystem.h"
#include "engine/layout.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;
using Run = Filesystem::BlockMapRun;

constexpr uint64_t B = kBlockSize;

std::string Pattern(size_t n, char seed) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7) % 61);
  return s;
}

std::vector<Run> Map(Filesystem& fs, Ino ino) {
  auto r = fs.BlockMap(ino, 0, 100000);
  REQUIRE(r.ok());
  return r->runs;
}

uint64_t Size(Filesystem& fs, Ino ino) {
  auto e = fs.GetAttr(ino);
  REQUIRE(e.ok());
  return static_cast<uint64_t>(e->attr.st_size);
}

uint64_t StBlocks(Filesystem& fs, Ino ino) {
  auto e = fs.GetAttr(ino);
  REQUIRE(e.ok());
  return static_cast<uint64_t>(e->attr.st_blocks) / (B / 512);
}

uint64_t FreeBlocks(Filesystem& fs) { return fs.StatFs().f_bfree; }

// A file of `blocks` blocks made of `blocks` separate extents: each block is
// written while another file grows in between, so no two are contiguous.
Ino Fragmented(Filesystem& fs, const std::string& name, uint64_t blocks, std::string* data) {
  const Ino f = MustCreate(fs, 1, name);
  const Ino spacer = MustCreate(fs, 1, name + ".spacer");
  *data = Pattern(blocks * B, 'a');
  for (uint64_t i = 0; i < blocks; ++i) {
    MustWrite(fs, f, i * B, data->substr(i * B, B));
    MustWrite(fs, spacer, i * B, std::string(B, 's'));
  }
  return f;
}

struct Fixture {
  std::unique_ptr<Filesystem> fs = MustMount(FormattedPool(16 << 20));
};

TEST_CASE("a clone shares every block with refcount 2 and statfs counts them once") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  const std::string data = Pattern(3 * B + 100, 'x');
  MustWrite(fs, a, 0, data);
  const uint64_t free_before = FreeBlocks(fs);
  auto n = fs.CloneRange(kRoot, a, 0, b, 0, 0);
  REQUIRE(n.ok());
  CHECK(*n == data.size());
  CHECK(FreeBlocks(fs) == free_before);  // nothing new allocated
  CHECK(Size(fs, b) == data.size());
  CHECK((ReadAll(fs, b) == data));
  const auto ma = Map(fs, a), mb = Map(fs, b);
  REQUIRE(ma.size() == 1);
  CHECK(ma == mb);
  CHECK(ma[0].length == 4);
  CHECK(ma[0].refcount == 2);
  CHECK(ma[0].flags == LEASEFS_EXTENT_SHARED);
  CHECK(StBlocks(fs, a) == 4);
  CHECK(StBlocks(fs, b) == 4);
}

TEST_CASE("a write into a shared block copies only that block") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  const std::string data = Pattern(4 * B, 'x');
  MustWrite(fs, a, 0, data);
  REQUIRE(fs.CloneRange(kRoot, a, 0, b, 0, 0).ok());
  const uint64_t pool = Map(fs, a)[0].pool_block;
  const uint64_t free_before = FreeBlocks(fs);
  MustWrite(fs, b, B + 10, "hello");
  CHECK(FreeBlocks(fs) == free_before - 1);
  std::string want = data;
  want.replace(B + 10, 5, "hello");
  CHECK((ReadAll(fs, b) == want));
  CHECK((ReadAll(fs, a) == data));  // the source never changes
  const auto mb = Map(fs, b);
  REQUIRE(mb.size() == 3);
  CHECK(mb[0] == Run{0, pool, 1, LEASEFS_EXTENT_SHARED, 2});
  CHECK(mb[1].file_block == 1);
  CHECK(mb[1].length == 1);
  CHECK(mb[1].pool_block != pool + 1);
  CHECK(mb[1].refcount == 1);
  CHECK(mb[1].flags == 0);
  CHECK(mb[2] == Run{2, pool + 2, 2, LEASEFS_EXTENT_SHARED, 2});
  const auto ma = Map(fs, a);
  REQUIRE(ma.size() == 3);
  CHECK(ma[1] == Run{1, pool + 1, 1, 0, 1});
}

TEST_CASE("clone argument rules") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  MustWrite(fs, a, 0, Pattern(4 * B + 10, 'a'));
  MustWrite(fs, b, 0, Pattern(8 * B, 'b'));
  const std::string before_b = ReadAll(fs, b);
  auto err = [&](Ino s, uint64_t so, Ino d, uint64_t dof, uint64_t len) {
    return fs.CloneRange(kRoot, s, so, d, dof, len).status().err();
  };
  CHECK(err(a, 1, b, 0, B) == EINVAL);              // unaligned source offset
  CHECK(err(a, 0, b, 7, B) == EINVAL);              // unaligned destination offset
  CHECK(err(a, 0, b, 0, B + 1) == EINVAL);          // unaligned length not at EOF
  CHECK(err(a, 0, b, 0, 5 * B) == EINVAL);          // past the source's EOF
  CHECK(err(a, 8 * B, b, 0, B) == EINVAL);          // starts past the source's EOF
  CHECK(err(a, 0, b, 0, 4 * B + 10) == EINVAL);     // ends at src EOF, inside dst
  CHECK(err(b, 0, b, B, 2 * B) == EINVAL);          // overlap within one file
  CHECK(err(1, 0, b, 0, B) == EISDIR);
  CHECK(err(a, 0, 999, 0, B) == ENOENT);
  CHECK((ReadAll(fs, b) == before_b));  // nothing changed
  // Ending at the source's EOF is fine when it covers the destination's.
  REQUIRE(fs.CloneRange(kRoot, a, 0, b, 4 * B, 4 * B + 10).ok());
  CHECK(Size(fs, b) == 8 * B + 10);
  CHECK((ReadAll(fs, b, 4 * B) == ReadAll(fs, a)));
  // Within one file, ranges that do not overlap.
  REQUIRE(fs.CloneRange(kRoot, b, 0, b, 2 * B, 2 * B).ok());
  CHECK((ReadAll(fs, b, 2 * B, 2 * B) == before_b.substr(0, 2 * B)));
  const auto mb = Map(fs, b);
  CHECK(mb[0].pool_block == mb[1].pool_block);
  CHECK(mb[0].refcount == 2);
}

TEST_CASE("clone past the destination's end fills the gap with zeros") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  MustWrite(fs, a, 0, Pattern(B, 'a'));
  MustWrite(fs, b, 0, "tail");
  REQUIRE(fs.CloneRange(kRoot, a, 0, b, 3 * B, B).ok());
  CHECK(Size(fs, b) == 4 * B);
  const std::string got = ReadAll(fs, b);
  CHECK(got.substr(0, 4) == "tail");
  CHECK(got.substr(4, 3 * B - 4) == std::string(3 * B - 4, '\0'));
  CHECK(got.substr(3 * B) == Pattern(B, 'a'));
}

TEST_CASE("copy_file_range shares the aligned middle and copies the edges") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  const std::string data = Pattern(6 * B, 'c');
  MustWrite(fs, a, 0, data);
  auto n = fs.CopyFileRange(kRoot, a, 100, b, 100, 4 * B);
  REQUIRE(n.ok());
  CHECK(*n == 4 * B);
  CHECK((ReadAll(fs, b, 100) == data.substr(100, 4 * B)));
  // Blocks 1..3 of b share a's; blocks 0 and 4 are b's own copies.
  const auto mb = Map(fs, b), ma = Map(fs, a);
  uint64_t shared = 0;
  for (const Run& r : mb) shared += (r.flags & LEASEFS_EXTENT_SHARED) ? r.length : 0;
  CHECK(shared == 3);
  // Misaligned by different amounts: all copied, nothing shared.
  const Ino c = MustCreate(fs, 1, "c");
  REQUIRE(fs.CopyFileRange(kRoot, a, 0, c, 1, 2 * B).ok());
  CHECK((ReadAll(fs, c, 1) == data.substr(0, 2 * B)));
  for (const Run& r : Map(fs, c)) CHECK(r.refcount == 1);
  // Past the source's end: 0 bytes; beyond it: short.
  CHECK(*fs.CopyFileRange(kRoot, a, 6 * B, c, 0, 10) == 0);
  CHECK(*fs.CopyFileRange(kRoot, a, 6 * B - 5, c, 0, 100) == 5);
  CHECK(fs.CopyFileRange(kRoot, a, 0, a, B, 2 * B).status().err() == EINVAL);
  (void)ma;
}

TEST_CASE("punch hole: zeros in place at the edges, unmapped whole blocks, size kept") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a");
  std::string data = Pattern(5 * B, 'p');
  MustWrite(fs, a, 0, data);
  const uint64_t pool = Map(fs, a)[0].pool_block;
  REQUIRE(fs.Fallocate(kRoot, a, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, B - 10, 3 * B).ok());
  data.replace(B - 10, 3 * B, std::string(3 * B, '\0'));
  CHECK((ReadAll(fs, a) == data));
  CHECK(Size(fs, a) == 5 * B);
  // Blocks 1 and 2 are whole in the range: gone. The partial blocks 0 and 3
  // were copied to fresh blocks (so the change is one transaction); block 4
  // is untouched.
  const auto m = Map(fs, a);
  REQUIRE(m.size() == 3);
  CHECK(m[0].file_block == 0);
  CHECK(m[0].length == 1);
  CHECK(m[0].pool_block != pool);
  CHECK(m[1].file_block == 3);
  CHECK(m[1].length == 1);
  CHECK(m[1].pool_block != pool + 3);
  CHECK(m[2] == Run{4, pool + 4, 1, 0, 1});
  CHECK(StBlocks(fs, a) == 3);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_PUNCH_HOLE, 0, B).err() == EOPNOTSUPP);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                     0, B)
            .err() == EINVAL);
}

TEST_CASE("punching a shared block drops one reference and leaves the other file intact") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  const std::string data = Pattern(2 * B, 's');
  MustWrite(fs, a, 0, data);
  REQUIRE(fs.CloneRange(kRoot, a, 0, b, 0, 0).ok());
  REQUIRE(fs.Fallocate(kRoot, b, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * B).ok());
  CHECK(Map(fs, b).empty());
  CHECK((ReadAll(fs, b) == std::string(2 * B, '\0')));
  CHECK((ReadAll(fs, a) == data));
  const auto ma = Map(fs, a);
  REQUIRE(ma.size() == 1);
  CHECK(ma[0].refcount == 1);
  CHECK(ma[0].flags == 0);
  // A partial punch of a shared block copies it first.
  REQUIRE(fs.CloneRange(kRoot, a, 0, b, 0, 0).ok());
  REQUIRE(fs.Fallocate(kRoot, b, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10, 20).ok());
  CHECK((ReadAll(fs, a) == data));
  std::string want = data;
  want.replace(10, 20, std::string(20, '\0'));
  CHECK((ReadAll(fs, b) == want));
}

TEST_CASE("zero range turns written blocks unwritten in place and may grow the file") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a");
  std::string data = Pattern(4 * B, 'z');
  MustWrite(fs, a, 0, data);
  const uint64_t pool = Map(fs, a)[0].pool_block;
  const uint64_t free_before = FreeBlocks(fs);
  REQUIRE(fs.Fallocate(kRoot, a, FALLOC_FL_ZERO_RANGE, B, 2 * B).ok());
  data.replace(B, 2 * B, std::string(2 * B, '\0'));
  CHECK((ReadAll(fs, a) == data));
  CHECK(FreeBlocks(fs) == free_before);
  const std::vector<Run> want = {{0, pool, 1, 0, 1},
                                 {1, pool + 1, 2, LEASEFS_EXTENT_UNWRITTEN, 1},
                                 {3, pool + 3, 1, 0, 1}};
  CHECK(Map(fs, a) == want);
  // Without KEEP_SIZE past the end: the size grows, the new blocks are
  // unwritten; with KEEP_SIZE it does not.
  REQUIRE(fs.Fallocate(kRoot, a, FALLOC_FL_ZERO_RANGE, 4 * B, 2 * B + 7).ok());
  CHECK(Size(fs, a) == 6 * B + 7);
  REQUIRE(fs.Fallocate(kRoot, a, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 8 * B, 2 * B).ok());
  CHECK(Size(fs, a) == 6 * B + 7);
  CHECK((ReadAll(fs, a).substr(4 * B) == std::string(2 * B + 7, '\0')));
}

TEST_CASE("collapse range removes the range and shifts the rest down") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a");
  std::string data = Pattern(6 * B + 50, 'k');
  MustWrite(fs, a, 0, data);
  const uint64_t pool = Map(fs, a)[0].pool_block;
  const uint64_t free_before = FreeBlocks(fs);
  REQUIRE(fs.Fallocate(kRoot, a, FALLOC_FL_COLLAPSE_RANGE, B, 2 * B).ok());
  data.erase(B, 2 * B);
  CHECK(Size(fs, a) == data.size());
  CHECK((ReadAll(fs, a) == data));
  CHECK(FreeBlocks(fs) == free_before + 2);
  const std::vector<Run> want = {{0, pool, 1, 0, 1}, {1, pool + 3, 4, 0, 1}};
  CHECK(Map(fs, a) == want);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_COLLAPSE_RANGE, 1, B).err() == EINVAL);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_COLLAPSE_RANGE, B, 100).err() == EINVAL);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_COLLAPSE_RANGE, B, 4 * B).err() == EINVAL);  // past EOF
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_COLLAPSE_RANGE, 0, 4 * B + 50).err() == EINVAL);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_KEEP_SIZE, 0, B).err() ==
        EINVAL);
  CHECK((ReadAll(fs, a) == data));
}

TEST_CASE("insert range shifts up and leaves a hole") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a");
  std::string data = Pattern(3 * B + 9, 'i');
  MustWrite(fs, a, 0, data);
  const uint64_t pool = Map(fs, a)[0].pool_block;
  REQUIRE(fs.Fallocate(kRoot, a, FALLOC_FL_INSERT_RANGE, B, 2 * B).ok());
  data.insert(B, std::string(2 * B, '\0'));
  CHECK(Size(fs, a) == data.size());
  CHECK((ReadAll(fs, a) == data));
  const std::vector<Run> want = {{0, pool, 1, 0, 1}, {3, pool + 1, 3, 0, 1}};
  CHECK(Map(fs, a) == want);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_INSERT_RANGE, data.size(), B).err() == EINVAL);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_INSERT_RANGE, B, 5).err() == EINVAL);
  CHECK(fs.Fallocate(kRoot, a, FALLOC_FL_INSERT_RANGE, 0, layout::kMaxFileSize & ~(B - 1))
            .err() == EFBIG);
  CHECK((ReadAll(fs, a) == data));
}

TEST_CASE("unshare gives the range blocks of its own; a full pool changes nothing") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  const std::string data = Pattern(8 * B, 'u');
  MustWrite(fs, a, 0, data);
  REQUIRE(fs.CloneRange(kRoot, a, 0, b, 0, 0).ok());
  REQUIRE(fs.Fallocate(kRoot, b, FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE, 2 * B, 2 * B).ok());
  CHECK((ReadAll(fs, b) == data));
  uint64_t own = 0;
  for (const Run& r : Map(fs, b)) own += r.refcount == 1 ? r.length : 0;
  CHECK(own == 2);
  // Fill the pool, then ask to unshare the rest: ENOSPC, nothing copied.
  const Ino fill = MustCreate(fs, 1, "fill");
  for (uint64_t off = 0;; off += B) {
    const std::string blk(B, 'f');
    struct iovec v = {const_cast<char*>(blk.data()), blk.size()};
    if (!fs.Write(kRoot, fill, off, &v, 1).ok()) break;
  }
  const auto map_before = Map(fs, b);
  CHECK(fs.Fallocate(kRoot, b, FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE, 0, 8 * B).err() ==
        ENOSPC);
  CHECK(Map(fs, b) == map_before);
  CHECK((ReadAll(fs, b) == data));
}

TEST_CASE("defrag makes a fragmented file one extent and keeps its bytes") {
  auto t = MustMount(FormattedPool(64 << 20));
  Filesystem& fs = *t;
  std::string data;
  const Ino f = Fragmented(fs, "frag", 3000, &data);  // several pieces
  REQUIRE(Map(fs, f).size() == 3000);
  auto rep = fs.Defrag(kRoot, f);
  REQUIRE(rep.ok());
  CHECK(rep->extents_before == 3000);
  CHECK(rep->extents_after == 1);
  CHECK(rep->blocks_moved == 3000);
  CHECK((ReadAll(fs, f) == data));
  CHECK(Map(fs, f).size() == 1);
  // Again: nothing to do.
  rep = fs.Defrag(kRoot, f);
  REQUIRE(rep.ok());
  CHECK(rep->blocks_moved == 0);
  CHECK(rep->extents_after == 1);
}

TEST_CASE("defrag of a range moves only the blocks in it; range after range makes one run") {
  auto t = MustMount(FormattedPool(64 << 20));
  Filesystem& fs = *t;
  std::string data;
  const Ino f = Fragmented(fs, "frag", 3000, &data);
  // Blocks [1000, 2000): the extents on either side stay where they are.
  const auto before = Map(fs, f);
  auto rep = fs.Defrag(kRoot, f, 1000, 1000);
  REQUIRE(rep.ok());
  CHECK(rep->extents_before == 3000);
  CHECK(rep->extents_after == 2001);  // 1000 + the new run + 1000
  CHECK(rep->blocks_moved == 1000);
  auto after = Map(fs, f);
  REQUIRE(after.size() == 2001);
  for (size_t i = 0; i < 1000; ++i) CHECK(after[i] == before[i]);
  CHECK(after[1000].file_block == 1000);
  CHECK(after[1000].length == 1000);
  for (size_t i = 0; i < 1000; ++i) CHECK(after[1001 + i] == before[2000 + i]);
  CHECK((ReadAll(fs, f) == data));
  // A range past the end of file, and an empty one, move nothing.
  for (auto [from, count] : {std::pair<uint64_t, uint64_t>{5000, 10}, {10, 0}}) {
    rep = fs.Defrag(kRoot, f, from, count);
    REQUIRE(rep.ok());
    CHECK(rep->blocks_moved == 0);
    CHECK(rep->extents_after == 2001);
  }
  CHECK(Map(fs, f) == after);
}

TEST_CASE("defrag range after range, in order, makes the file one run as a whole defrag does") {
  auto t = MustMount(FormattedPool(64 << 20));
  Filesystem& fs = *t;
  std::string data;
  const Ino f = Fragmented(fs, "frag", 3000, &data);
  uint64_t moved = 0;
  // The last range runs past the end of file. Each lands right after the
  // one before (the pool block after the one mapping the range's first
  // block - 1).
  for (const auto& range : {std::pair<uint64_t, uint64_t>{0, 1000}, {1000, 1000}, {2000, 5000}}) {
    const uint64_t from = range.first, count = range.second;
    CAPTURE(from);
    auto rep = fs.Defrag(kRoot, f, from, count);
    REQUIRE(rep.ok());
    CHECK(rep->blocks_moved == 1000);
    moved += rep->blocks_moved;
    CHECK(rep->extents_after == 1 + (3000 - from - 1000));
  }
  CHECK(moved == 3000);
  const auto after = Map(fs, f);
  REQUIRE(after.size() == 1);
  CHECK(after[0].length == 3000);
  CHECK((ReadAll(fs, f) == data));
}

TEST_CASE("defrag of preallocated extents in the inline slots keeps them unwritten") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino f = MustCreate(fs, 1, "f"), s = MustCreate(fs, 1, "s");
  for (uint64_t i = 0; i < 5; ++i) {  // five extents: all inline, no chain
    REQUIRE(fs.Fallocate(kRoot, f, FALLOC_FL_KEEP_SIZE, i * B, B).ok());
    MustWrite(fs, s, i * B, "x");
  }
  REQUIRE(Map(fs, f).size() == 5);
  auto rep = fs.Defrag(kRoot, f);
  REQUIRE(rep.ok());
  const auto m = Map(fs, f);
  REQUIRE(m.size() == 1);
  CHECK(m[0].length == 5);
  CHECK(m[0].flags == LEASEFS_EXTENT_UNWRITTEN);
  CHECK(ReadAll(fs, f).empty());
}

TEST_CASE("freeing a file that maps one block twice drops both references") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino a = MustCreate(fs, 1, "a");
  MustWrite(fs, a, 0, Pattern(B, 'd'));
  const uint64_t free_before = FreeBlocks(fs);
  REQUIRE(fs.CloneRange(kRoot, a, 0, a, 4 * B, B).ok());
  CHECK(Map(fs, a)[0].refcount == 2);
  SetAttrArgs args;
  args.valid = SetAttrArgs::kSize;
  args.size = 0;
  REQUIRE(fs.SetAttr(kRoot, a, args).ok());
  CHECK(FreeBlocks(fs) == free_before + 1);  // the block is free again
}

TEST_CASE("defrag leaves shared blocks where they are") {
  Fixture t;
  Filesystem& fs = *t.fs;
  std::string data;
  const Ino f = Fragmented(fs, "frag", 8, &data);
  const Ino g = MustCreate(fs, 1, "g");
  REQUIRE(fs.CloneRange(kRoot, f, 0, g, 0, 2 * B).ok());
  const auto before = Map(fs, f);
  auto rep = fs.Defrag(kRoot, f);
  REQUIRE(rep.ok());
  const auto after = Map(fs, f);
  CHECK(after[0] == before[0]);
  CHECK(after[1] == before[1]);
  CHECK(after.size() == 3);
  CHECK((ReadAll(fs, f) == data));
}

TEST_CASE("move extents gives the original the donor's blocks with its own bytes") {
  Fixture t;
  Filesystem& fs = *t.fs;
  const Ino o = MustCreate(fs, 1, "orig"), d = MustCreate(fs, 1, "donor");
  const std::string data = Pattern(4 * B, 'm');
  MustWrite(fs, o, 0, data);
  REQUIRE(fs.Fallocate(kRoot, d, 0, 0, 4 * B).ok());
  const uint64_t opool = Map(fs, o)[0].pool_block, dpool = Map(fs, d)[0].pool_block;
  auto n = fs.MoveExtents(kRoot, o, d, 0, 0, 4);
  REQUIRE(n.ok());
  CHECK(*n == 4);
  CHECK((ReadAll(fs, o) == data));
  const std::vector<Run> want_o = {{0, dpool, 4, 0, 1}};
  CHECK(Map(fs, o) == want_o);
  CHECK(Map(fs, d)[0].pool_block == opool);
  CHECK(fs.MoveExtents(kRoot, o, o, 0, 0, 1).status().err() == EINVAL);
  const Ino e = MustCreate(fs, 1, "empty");
  CHECK(fs.MoveExtents(kRoot, o, e, 0, 0, 1).status().err() == ENODATA);
}

TEST_CASE("clone of a file with thousands of extents spans several transactions") {
  // A small journal forces the intent path (several transactions).
  FormatOptions fo;
  fo.geometry.journal_bytes = 64 << 10;
  auto fs = MustMount(FormattedPool(32 << 20, fo));
  std::string data;
  const Ino f = Fragmented(*fs, "frag", 1500, &data);
  const Ino g = MustCreate(*fs, 1, "g");
  REQUIRE(fs->CloneRange(kRoot, f, 0, g, 0, 0).ok());
  CHECK((ReadAll(*fs, g) == data));
  const auto mf = Map(*fs, f), mg = Map(*fs, g);
  CHECK(mf.size() == 1500);
  CHECK(mf == mg);
  for (const Run& r : mg) CHECK(r.refcount == 2);
  // Collapse and insert of the same shape.
  REQUIRE(fs->Fallocate(kRoot, g, FALLOC_FL_COLLAPSE_RANGE, 0, 100 * B).ok());
  CHECK((ReadAll(*fs, g) == data.substr(100 * B)));
  REQUIRE(fs->Fallocate(kRoot, g, FALLOC_FL_INSERT_RANGE, 0, 100 * B).ok());
  CHECK((ReadAll(*fs, g) == std::string(100 * B, '\0') + data.substr(100 * B)));
  REQUIRE(fs->Fallocate(kRoot, g, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1500 * B).ok());
  CHECK(Map(*fs, g).empty());
  for (const Run& r : Map(*fs, f)) CHECK(r.refcount == 1);
}

}  // namespace
}  // namespace leasefs::engine

