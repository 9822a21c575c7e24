// The marks of format version 3 (docs/pool_format.md "Lazily initialized
// tables"): fsck reads only what they cover, names a damaged copy, a mark
// too low for what the pool holds and an entry naming a slot past the mark,
// and mends them.
#include <dirent.h>

#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/superblock.h"
#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;
using std::to_string;

engine::FormatOptions Lazy(uint64_t inodes, uint64_t data_bytes = 0) {
  engine::FormatOptions fo;
  fo.init_inodes = inodes;
  fo.init_data_bytes = data_bytes;
  return fo;
}

std::vector<uint64_t> Words(Image& img) {
  const engine::MarkCopies c = engine::ReadMarkCopies(img.base(), img.sb());
  return {c.inodes[0].value_or(0), c.inodes[1].value_or(0), c.refcount_blocks[0].value_or(0),
          c.refcount_blocks[1].value_or(0)};
}

TEST_SUITE("check") {
  TEST_CASE("Marks: a pool initialized in part checks clean, reporting its marks") {
    Image img(64 << 20);
    img.Create(kRootIno, "f", 3);
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.inode_slots == 4095);
    CHECK(r.inode_mark == 1024);
    CHECK(r.refcount_mark == 16);
  }

  TEST_CASE("Marks: a damaged copy is named and rewritten from the other") {
    Image img(64 << 20);
    img.Create(kRootIno, "f", 3);
    SUBCASE("the primary's inode mark") {
      img.super(0)->inode_mark ^= 1;
      ExpectRepaired(img, {"superblock: the inode table's mark in the primary copy is damaged "
                           "(its check fails)"});
    }
    SUBCASE("the backup's refcount mark: a value the geometry cannot have") {
      img.super(1)->refcount_mark = engine::EncodeMark(img.sb(), engine::kRefcountMarkField, 17);
      ExpectRepaired(img, {"superblock: the refcount table's mark in the backup copy is damaged "
                           "(its check fails)"});
    }
    CHECK(Words(img) == std::vector<uint64_t>{1024, 1024, 16, 16});
  }

  TEST_CASE("Marks: copies that differ are what an interrupted raise leaves: a note") {
    Image img(64 << 20);
    img.super(1)->inode_mark = engine::EncodeMark(img.sb(), engine::kInodeMarkField, 512);
    const check::CheckReport r = Check(img);
    CHECK(Problems(r).empty());
    CHECK(Notes(r) == std::vector<std::string>{
                          "superblock: the inode table's mark is 1024 in the primary copy and "
                          "512 in the backup: a raise was interrupted; the larger holds"});
    CHECK(r.inode_mark == 1024);
  }

  TEST_CASE("Marks: an inode mark below live inodes is raised to the inodes the directories name") {
    Image img(64 << 20, Lazy(16));
    const uint64_t d = img.Mkdir(kRootIno, "d");  // inode 2
    uint64_t last = 0;
    for (int i = 0; i < 30; ++i) last = img.Create(d, "f" + to_string(i));
    REQUIRE(last == 32);
    SUBCASE("one directory names them") {
      img.SetMarks(16, 1);
      ExpectRepaired(img, {"superblock: the inode table's mark (16 slots) lies below inode 32, "
                           "named by entry 'f29' (block 0, slot 30) of inode 2"});
      CHECK(Words(img) == std::vector<uint64_t>{48, 48, 1, 1});
    }
    SUBCASE("a directory past the mark names more: one run per level") {
      for (int i = 33; i < 40; ++i) img.Create(d, "x" + to_string(i));
      const uint64_t e = img.Mkdir(d, "e");  // inode 40: the first run finds it
      REQUIRE(e == 40);
      for (int i = 0; i < 30; ++i) last = img.Create(e, "g" + to_string(i));
      REQUIRE(last == 70);  // the second run finds them
      img.SetMarks(32, 1);
      ExpectRepaired(img, {"superblock: the inode table's mark (32 slots) lies below inode 70, "
                           "named by entry 'g29' (block 0, slot 30) of inode 40"});
      CHECK(Words(img) == std::vector<uint64_t>{80, 80, 1, 1});
    }
    SUBCASE("both copies damaged: rebuilt from what the directories name") {
      img.super(0)->inode_mark = img.super(1)->inode_mark = 0;
      ExpectRepaired(img, {"superblock: the inode table's mark is damaged in both copies"});
      CHECK(Words(img) == std::vector<uint64_t>{48, 48, 16, 16});
    }
  }

  TEST_CASE("Marks: an entry naming a slot past the inode mark where no inode is, is removed") {
    Image img(64 << 20);
    img.AddEntry(kRootIno, "x", 2000, DT_REG);
    ExpectRepaired(img, {"inode 1: entry 'x' (block 0, slot 1) names inode 2000, past the inode "
                         "table's mark (1024 slots), where no inode was ever made"});
  }

  TEST_CASE(
      "Marks: a reference past the refcount mark raises it; the refcounts under it are checked") {
    Image img(64 << 20, Lazy(16, 4 << 20));
    const uint64_t f = img.Create(kRootIno, "f", 2);
    const uint64_t b = img.inline_extent(f, 0)->pool_block;
    img.SetMarks(16, 1);
    img.inline_extent(f, 0)->pool_block = img.sb().data_start + 5000;
    *img.refcount(b) = *img.refcount(b + 1) = 0;
    const std::string at = to_string(img.sb().data_start + 5000);
    ExpectRepaired(img, {"superblock: block " + to_string(img.sb().data_start + 5001) +
                             " is referenced but lies past the refcount table's mark (1 refcount "
                             "blocks: blocks " +
                             to_string(img.sb().data_start) + "-" +
                             to_string(img.sb().data_start + 1023) + ")",
                         "blocks " + at + "-" + to_string(img.sb().data_start + 5001) +
                             ": refcount 0 but 1 reference (in use but marked free)"});
    CHECK(Words(img) == std::vector<uint64_t>{16, 16, 5, 5});
  }
}

}  // namespace
}  // namespace leasefs::testing
