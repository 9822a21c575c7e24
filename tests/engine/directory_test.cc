#include "engine/directory.h"

#include <dirent.h>

#include <cstring>
#include <set>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/journal.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace layout;

// Directory inode 2 with its blocks mapped by an extent map, as the engine
// does it, but driven directly.
struct Fixture {
  std::unique_ptr<SimMedia> media = testing::FormattedPool();
  PoolView pool{media.get(), reinterpret_cast<const Superblock*>(media->base())};
  Journal journal{*media, *pool.sb};
  ExtentMap map;
  Directory dir;
  uint64_t next_block = pool.sb->data_start;

  Fixture() {
    Inode* in = pool.inode(2);
    in->mode = S_IFDIR | 0755;
    in->nlink = 2;
    map.InitEmpty(pool, 2, true);
    dir.InitEmpty(pool, 2);
  }
  void Add(const std::string& name, uint64_t ino) {
    Tx tx = journal.Begin();
    Directory::Spot spot = dir.FindSpot(name.size());
    if (spot.new_block) {
      dir.AddBlock(next_block);
      map.Insert(tx, {spot.pos.block, next_block, 1, 0});
      pool.inode(2)->size += kBlockSize;
      pool.inode(2)->blocks += 1;
      ++next_block;
    }
    dir.Insert(tx, spot, name, ino, DT_REG);
    journal.Commit(tx);
  }
  void Del(const std::string& name) {
    Tx tx = journal.Begin();
    dir.Remove(tx, name);
    journal.Commit(tx);
  }
  std::vector<std::string> List(const Directory& d) {
    std::vector<std::string> out;
    for (auto e = d.Next({0, 1}); e; e = d.Next({e->pos.block, e->pos.slot + 1}))
      out.emplace_back(e->name);
    return out;
  }
  Directory Reloaded() {
    ExtentMap m;
    REQUIRE(m.Load(pool, 2).ok());
    Directory d;
    Status s = d.Load(pool, 2, m);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    return d;
  }
};

TEST_SUITE("directory") {
  TEST_CASE("Directory: entries are found by name and listed in slot order") {
    Fixture f;
    f.Add("a", 10);
    f.Add(std::string(200, 'b'), 11);  // spans 4 slots
    f.Add("c", 12);
    CHECK(f.dir.size() == 3);
    auto b = f.dir.Find(std::string(200, 'b'));
    REQUIRE(b);
    CHECK(b->ino == 11);
    CHECK(b->pos.slot == 2);
    CHECK(f.dir.Find("c")->pos.slot == 6);
    CHECK_FALSE(f.dir.Find("d"));
    CHECK(f.List(f.dir) == std::vector<std::string>{"a", std::string(200, 'b'), "c"});
    Directory again = f.Reloaded();
    CHECK(f.List(again) == f.List(f.dir));
    CHECK(again.Find("c")->ino == 12);
  }

  TEST_CASE("Directory: a freed run is reused only by an entry that fits in it") {
    Fixture f;
    f.Add("a", 10);
    f.Add(std::string(100, 'b'), 11);  // slots 2..3
    f.Add("c", 12);                    // slot 4
    f.Del(std::string(100, 'b'));
    CHECK(f.dir.FindSpot(150).pos.slot == 5);  // 3 slots do not fit in 2..3
    f.Add("d", 13);
    CHECK(f.dir.Find("d")->pos.slot == 2);
    Directory again = f.Reloaded();
    CHECK(again.size() == 3);
    CHECK(again.Find("d")->pos.slot == 2);
  }

  TEST_CASE("Directory: a full block makes the directory grow by one") {
    Fixture f;
    for (int i = 0; i < 63; ++i) f.Add("n" + std::to_string(i), 100 + i);
    CHECK(f.dir.block_count() == 1);
    f.Add("more", 500);
    CHECK(f.dir.block_count() == 2);
    CHECK(f.dir.Find("more")->pos.block == 1);
    CHECK(f.Reloaded().size() == 64);
  }

  TEST_CASE("Directory: a cookie stays valid while other entries come and go") {
    Fixture f;
    for (int i = 0; i < 100; ++i) f.Add("e" + std::to_string(i), 100 + i);
    // List half, change the directory, list the rest from the cookie.
    std::set<std::string> seen;
    DirPos pos{0, 1};
    for (int i = 0; i < 50; ++i) {
      auto e = f.dir.Next(pos);
      REQUIRE(e);
      seen.insert(std::string(e->name));
      pos = DirPos::FromCookie(e->pos.cookie() + 1);
    }
    f.Del("e10");  // already listed
    f.Del("e90");  // not yet listed
    f.Add("new", 999);
    for (auto e = f.dir.Next(pos); e; e = f.dir.Next(DirPos::FromCookie(e->pos.cookie() + 1))) {
      CHECK(seen.insert(std::string(e->name)).second);  // never twice
    }
    for (int i = 0; i < 100; ++i)
      if (i != 90) CHECK(seen.count("e" + std::to_string(i)) == 1);
    CHECK(seen.count("e90") == 0);
  }

  TEST_CASE("Directory: retargeting an entry keeps its name and slot") {
    Fixture f;
    f.Add("x", 10);
    Tx tx = f.journal.Begin();
    f.dir.Retarget(tx, "x", 77, DT_DIR);
    f.journal.Commit(tx);
    Directory again = f.Reloaded();
    auto e = again.Find("x");
    REQUIRE(e);
    CHECK(e->ino == 77);
    CHECK(e->type == DT_DIR);
  }

  TEST_CASE("Directory: load refuses damaged blocks") {
    Fixture f;
    f.Add("a", 10);
    f.Add("b", 11);
    char* block = f.pool.BlockPtr(f.pool.sb->data_start);
    auto* second = reinterpret_cast<DirEntryHeader*>(block + 2 * kDirSlotSize);
    SUBCASE("bad magic") { block[0] = 'X'; }
    SUBCASE("wrong owner") { reinterpret_cast<DirBlockHeader*>(block)->owner_ino = 5; }
    SUBCASE("duplicate name") { block[2 * kDirSlotSize + 16] = 'a'; }
    SUBCASE("slash in a name") { block[2 * kDirSlotSize + 16] = '/'; }
    SUBCASE("slot count that does not match the name") { second->slot_count = 3; }
    SUBCASE("entry running off the block") {
      second->name_len = 255;
      second->slot_count = 5;
      std::memmove(block + 62 * kDirSlotSize, second, 16);
      std::memset(second, 0, 16);
    }
    SUBCASE("unknown type") { second->type = 3; }
    SUBCASE("inode number past the table") { second->ino = f.pool.sb->inode_count; }
    ExtentMap m;
    REQUIRE(m.Load(f.pool, 2).ok());
    Directory d;
    CHECK(d.Load(f.pool, 2, m).err() == EUCLEAN);
  }

  TEST_CASE("ValidName: rejects what a directory may not hold") {
    CHECK(ValidName("a"));
    CHECK(ValidName(std::string(255, 'x')));
    CHECK_FALSE(ValidName(std::string(256, 'x')));
    CHECK_FALSE(ValidName(""));
    CHECK_FALSE(ValidName("."));
    CHECK_FALSE(ValidName(".."));
    CHECK_FALSE(ValidName("a/b"));
    CHECK_FALSE(ValidName(std::string("a\0b", 3)));
    CHECK(ValidName("..."));
  }
}

}  // namespace
}  // namespace leasefs::engine
