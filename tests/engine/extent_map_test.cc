#include "engine/extent_map.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/journal.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace layout;

// An inode (number 2) with an empty extent map over a formatted pool; each
// Change() runs one committed transaction.
struct Fixture {
  std::unique_ptr<SimMedia> media = testing::FormattedPool();
  PoolView pool{media.get(), reinterpret_cast<const Superblock*>(media->base())};
  Journal journal{*media, *pool.sb};
  ExtentMap map;
  uint64_t d = pool.sb->data_start;  // first data block

  Fixture() {
    pool.inode(2)->mode = S_IFREG | 0644;
    map.InitEmpty(pool, 2, true);
  }
  template <typename F>
  void Change(F f) {
    Tx tx = journal.Begin();
    f(tx);
    journal.Commit(tx);
  }
  // The map as stored on media, read back.
  std::vector<Mapping> Reloaded() {
    ExtentMap fresh;
    Status s = fresh.Load(pool, 2);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    return fresh.All();
  }
};

TEST_SUITE("extent_map") {
  TEST_CASE("ExtentMap: an insert that continues a neighbour extends it") {
    Fixture f;
    f.Change([&](Tx& tx) { f.map.Insert(tx, {0, f.d, 4, 0}); });
    f.Change([&](Tx& tx) { f.map.Insert(tx, {4, f.d + 4, 4, 0}); });
    CHECK(f.map.All() == std::vector<Mapping>{{0, f.d, 8, 0}});
    CHECK(f.map.free_slots() == 5);
    CHECK(f.Reloaded() == f.map.All());
  }

  TEST_CASE("ExtentMap: an insert that bridges two extents merges all three") {
    Fixture f;
    f.Change([&](Tx& tx) {
      f.map.Insert(tx, {0, f.d, 2, 0});
      f.map.Insert(tx, {4, f.d + 4, 2, 0});
    });
    CHECK(f.map.extent_count() == 2);
    f.Change([&](Tx& tx) { f.map.Insert(tx, {2, f.d + 2, 2, 0}); });
    CHECK(f.map.All() == std::vector<Mapping>{{0, f.d, 6, 0}});
    CHECK(f.map.free_slots() == 5);
    CHECK(f.Reloaded() == f.map.All());
  }

  TEST_CASE("ExtentMap: runs that are not contiguous in the pool stay apart") {
    Fixture f;
    f.Change([&](Tx& tx) {
      f.map.Insert(tx, {0, f.d, 2, 0});
      f.map.Insert(tx, {2, f.d + 10, 2, 0});
      f.map.Insert(tx, {4, f.d + 12, 2, kExtentUnwritten});  // flags differ
    });
    CHECK(f.map.extent_count() == 3);
    CHECK(f.map.mapped_blocks() == 6);
    CHECK(f.Reloaded() == f.map.All());
  }

  TEST_CASE("ExtentMap: removal trims heads, tails and middles and reports what it cut") {
    Fixture f;
    f.Change([&](Tx& tx) { f.map.Insert(tx, {10, f.d, 10, 0}); });
    std::vector<Mapping> cut;
    SUBCASE("head") {
      f.Change([&](Tx& tx) { f.map.Remove(tx, 0, 13, &cut); });
      CHECK(cut == std::vector<Mapping>{{10, f.d, 3, 0}});
      CHECK(f.map.All() == std::vector<Mapping>{{13, f.d + 3, 7, 0}});
    }
    SUBCASE("tail") {
      f.Change([&](Tx& tx) { f.map.Remove(tx, 17, 100, &cut); });
      CHECK(cut == std::vector<Mapping>{{17, f.d + 7, 3, 0}});
      CHECK(f.map.All() == std::vector<Mapping>{{10, f.d, 7, 0}});
    }
    SUBCASE("middle splits the extent in two") {
      f.Change([&](Tx& tx) { f.map.Remove(tx, 12, 3, &cut); });
      CHECK(cut == std::vector<Mapping>{{12, f.d + 2, 3, 0}});
      CHECK(f.map.All() == std::vector<Mapping>{{10, f.d, 2, 0}, {15, f.d + 5, 5, 0}});
      CHECK(f.map.free_slots() == 4);
    }
    SUBCASE("whole") {
      f.Change([&](Tx& tx) { f.map.Remove(tx, 0, 1000, &cut); });
      CHECK(cut == std::vector<Mapping>{{10, f.d, 10, 0}});
      CHECK(f.map.empty());
      CHECK(f.map.free_slots() == 6);
    }
    CHECK(f.Reloaded() == f.map.All());
    uint64_t total = 0;
    for (const Mapping& m : f.map.All()) total += m.length;
    CHECK(f.map.mapped_blocks() == total);
  }

  TEST_CASE("ExtentMap: removal across several extents") {
    Fixture f;
    f.Change([&](Tx& tx) {
      for (uint64_t i = 0; i < 5; ++i) f.map.Insert(tx, {i * 10, f.d + i * 20, 5, 0});
    });
    std::vector<Mapping> cut;
    f.Change([&](Tx& tx) { f.map.Remove(tx, 12, 21, &cut); });  // [12, 33)
    CHECK(cut ==
          std::vector<Mapping>{{12, f.d + 22, 3, 0}, {20, f.d + 40, 5, 0}, {30, f.d + 60, 3, 0}});
    CHECK(f.map.All() ==
          std::vector<Mapping>{
              {0, f.d, 5, 0}, {10, f.d + 20, 2, 0}, {33, f.d + 63, 2, 0}, {40, f.d + 80, 5, 0}});
    CHECK(f.Reloaded() == f.map.All());
  }

  TEST_CASE("ExtentMap: marking the middle of an unwritten extent written splits it in three") {
    Fixture f;
    f.Change([&](Tx& tx) { f.map.Insert(tx, {0, f.d, 10, kExtentUnwritten}); });
    CHECK(f.map.CountUnwritten(3, 2) == 1);
    f.Change([&](Tx& tx) { f.map.MarkWritten(tx, 3, 2); });
    CHECK(f.map.All() == std::vector<Mapping>{{0, f.d, 3, kExtentUnwritten},
                                              {3, f.d + 3, 2, 0},
                                              {5, f.d + 5, 5, kExtentUnwritten}});
    f.Change([&](Tx& tx) { f.map.MarkWritten(tx, 0, 10); });
    CHECK(f.map.All() == std::vector<Mapping>{{0, f.d, 10, 0}});
    CHECK(f.Reloaded() == f.map.All());
  }

  TEST_CASE("ExtentMap: many extents spill into chained extent blocks and reload exactly") {
    Fixture f;
    // Every other pool block, so nothing merges: 400 extents need 3 blocks.
    const size_t n = 400;
    CHECK(f.map.ChainBlocksFor(n) == 3);
    f.Change([&](Tx& tx) {
      for (uint64_t b = 0; b < 3; ++b) f.map.AddChainBlock(tx, f.d + 1000 + b);
      for (uint64_t i = 0; i < n; ++i) f.map.Insert(tx, {i, f.d + 2 * i, 1, 0});
    });
    CHECK(f.map.extent_count() == n);
    CHECK(f.map.chain().size() == 3);
    CHECK(f.Reloaded() == f.map.All());
    auto m = f.map.Find(257);
    REQUIRE(m);
    CHECK(m->pool_block == f.d + 514);
    CHECK_FALSE(f.map.Find(n));
    auto next = f.map.NextFrom(n + 5);
    CHECK_FALSE(next);
  }

  TEST_CASE("ExtentMap: load refuses overlapping extents, strays and loops") {
    Fixture f;
    f.Change([&](Tx& tx) { f.map.Insert(tx, {0, f.d, 4, 0}); });
    auto* slots = reinterpret_cast<Extent*>(f.pool.inode(2)->inline_area);
    ExtentMap fresh;
    SUBCASE("overlap") {
      slots[1] = Extent{2, f.d + 100, 4, 0};
      CHECK(fresh.Load(f.pool, 2).err() == EUCLEAN);
    }
    SUBCASE("outside the data area") {
      slots[1] = Extent{10, f.pool.sb->total_blocks, 1, 0};
      CHECK(fresh.Load(f.pool, 2).err() == EUCLEAN);
    }
    SUBCASE("metadata block") {
      slots[1] = Extent{10, f.pool.sb->inode_start, 1, 0};
      CHECK(fresh.Load(f.pool, 2).err() == EUCLEAN);
    }
    SUBCASE("unknown flags") {
      slots[1] = Extent{10, f.d + 50, 1, 0x80};
      CHECK(fresh.Load(f.pool, 2).err() == EUCLEAN);
    }
    SUBCASE("a chain that loops") {
      f.Change([&](Tx& tx) { f.map.AddChainBlock(tx, f.d + 500); });
      auto* blk = reinterpret_cast<ExtentBlock*>(f.pool.BlockPtr(f.d + 500));
      blk->header.next_block = f.d + 500;
      Status s = fresh.Load(f.pool, 2);
      CHECK(s.err() == EUCLEAN);
      CHECK(std::string(s.message()).find("loops") != std::string::npos);
    }
    SUBCASE("a chain block of another inode") {
      f.Change([&](Tx& tx) { f.map.AddChainBlock(tx, f.d + 500); });
      reinterpret_cast<ExtentBlock*>(f.pool.BlockPtr(f.d + 500))->header.owner_ino = 3;
      CHECK(fresh.Load(f.pool, 2).err() == EUCLEAN);
    }
  }
}

}  // namespace
}  // namespace leasefs::engine
