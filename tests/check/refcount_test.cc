// Invariant 7: exact reference counts, quarantine entries, and metadata blocks
// that something else references too.
#include <dirent.h>

#include <string>

#include <doctest/doctest.h>

#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;
using std::to_string;

std::string In(uint64_t ino) { return "inode " + to_string(ino) + ": "; }

TEST_SUITE("check") {
  TEST_CASE("Refcount: a free block with a count leaked") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t b = t.quarantined + 10;
    *img.refcount(b) = 1;
    ExpectRepaired(img,
                   {"block " + to_string(b) + ": refcount 1 but nothing references it (leaked)"});
    CHECK(*img.refcount(b) == 0);
  }

  TEST_CASE("Refcount: a used block marked free") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t b = img.inline_extent(t.deep, 0)->pool_block;
    *img.refcount(b) = 0;
    ExpectRepaired(
        img, {"block " + to_string(b) + ": refcount 0 but 1 reference (in use but marked free)"});
    CHECK(*img.refcount(b) == 1);
  }

  TEST_CASE("Refcount: a shared block counts each extent") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t b = img.inline_extent(t.clone, 0)->pool_block + 1;
    *img.refcount(b) = 1;
    ExpectRepaired(img, {"block " + to_string(b) + ": refcount 1 but 2 references"});
    CHECK(*img.refcount(b) == 2);
  }

  TEST_CASE("Refcount: neighbours wrong the same way are one finding") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t b = t.quarantined + 10;
    for (uint64_t i = 0; i < 100; ++i) *img.refcount(b + i) = 4;
    *img.refcount(b + 100) = 5;
    ExpectRepaired(
        img, {"blocks " + to_string(b) + "-" + to_string(b + 99) +
                  ": refcount 4 but nothing references it (leaked)",
              "block " + to_string(b + 100) + ": refcount 5 but nothing references it (leaked)"});
  }

  TEST_CASE("Refcount: chain links and xattr blocks count once each") {
    Image img;
    const Tree t = BuildTree(img);
    *img.refcount(t.chain) = 2;
    *img.refcount(t.xattr) = 0;
    ExpectRepaired(img, {"block " + to_string(t.xattr) +
                             ": refcount 0 but 1 reference (in use but marked free)",
                         "block " + to_string(t.chain) + ": refcount 2 but 1 reference"});
  }

  TEST_CASE("Refcount: a zeroed table is rebuilt") {
    Image img;
    BuildTree(img);
    const check::CheckReport before = Check(img);
    for (uint64_t b = img.sb().data_start; b < img.sb().total_blocks; ++b) *img.refcount(b) = 0;
    const check::CheckReport look = Check(img);
    CHECK(look.errors > 0);
    Check(img, true);
    const check::CheckReport after = Check(img);
    CHECK(after.clean());
    CHECK(after.data_blocks_used == before.data_blocks_used);
  }

  // ---------------------------------------------------------------------------
  // Quarantine

  TEST_CASE("Quarantine: entries count one reference per block") {
    Image img;
    const Tree t = BuildTree(img);
    *img.refcount(t.quarantined + 1) = 0;
    ExpectRepaired(img, {"block " + to_string(t.quarantined + 1) +
                         ": refcount 0 but 1 reference (in use but marked free)"});
  }

  TEST_CASE("Quarantine: an entry may cover blocks a file still maps") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddQuarantine(img.inline_extent(t.deep, 0)->pool_block, 1);
    CHECK(Check(img).findings.empty());
  }

  TEST_CASE("Quarantine: an entry outside the data area is removed") {
    Image img;
    BuildTree(img);
    const uint32_t i = img.AddQuarantine(img.sb().data_start, 1);
    --*img.refcount(img.sb().data_start);
    img.quarantine(i)->pool_block = 3;
    img.quarantine(i)->length = 2;
    ExpectRepaired(img, {"quarantine entry 1: 2 blocks from block 3 lie outside the data area"});
    CHECK(img.quarantine(i)->length == 0);
  }

  TEST_CASE("Quarantine: an entry running past the end of the pool is removed") {
    Image img;
    const uint32_t i = img.AddQuarantine(img.sb().total_blocks - 1, 1);
    *img.refcount(img.sb().total_blocks - 1) = 0;
    img.quarantine(i)->length = 2;
    ExpectRepaired(img, {"quarantine entry 0: 2 blocks from block " +
                         to_string(img.sb().total_blocks - 1) + " lie outside the data area"});
  }

  TEST_CASE("Quarantine: an entry covering metadata is removed") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddQuarantine(t.chain, 1);
    ExpectRepaired(
        img, {"quarantine entry 1: covers block " + to_string(t.chain) + ", which holds metadata",
              "block " + to_string(t.chain) + ": refcount 2 but 1 reference"});
  }

  // ---------------------------------------------------------------------------
  // Metadata blocks referenced by something else

  TEST_CASE("Shared metadata: a file extent over an xattr block is cleared") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddExtent(t.clone, 3, t.xattr, 1);
    ExpectRepaired(img,
                   {In(t.clone) + "extent {file block 3, pool block " + to_string(t.xattr) +
                        ", length 1} maps block " + to_string(t.xattr) + ", which holds metadata",
                    "block " + to_string(t.xattr) + ": refcount 2 but 1 reference"});
    CHECK(img.inode(t.clone)->blocks == 3);
  }

  TEST_CASE("Shared metadata: a file extent over a directory block is cleared") {
    Image img;
    const Tree t = BuildTree(img);
    // /dir/sub's block, and after it /dir/sub/deep's own block.
    const uint64_t dir_block = img.FileBlock(t.sub, 0);
    img.AddExtent(t.deep, 1, dir_block, 2);
    ExpectRepaired(img,
                   {In(t.deep) + "extent {file block 1, pool block " + to_string(dir_block) +
                        ", length 2} maps block " + to_string(dir_block) + ", which holds metadata",
                    "blocks " + to_string(dir_block) + "-" + to_string(dir_block + 1) +
                        ": refcount 2 but 1 reference"});
  }

  TEST_CASE("Shared metadata: a symlink whose block holds metadata is cleared") {
    Image img;
    const Tree t = BuildTree(img);
    Extent* e = img.inline_extent(t.longlink, 0);
    const uint64_t own = e->pool_block;
    --*img.refcount(own);
    e->pool_block = t.chain;
    ++*img.refcount(t.chain);
    ExpectRepaired(img, {In(t.longlink) + "symlink target block " + to_string(t.chain) +
                             " also holds metadata",
                         In(1) + "entry 'long' (block 0, slot 4) names inode " +
                             to_string(t.longlink) + ", which is free",
                         "block " + to_string(t.chain) + ": refcount 2 but 1 reference"});
  }

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::testing
