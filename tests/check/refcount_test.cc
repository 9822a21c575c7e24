// Invariant 7: exact reference counts, reach records, and metadata blocks
// that something else references too.
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
  // Blocks shared by reflink: one reference per extent that maps them

  // /a: 3 blocks of its own; /b: a block of its own, then /a's middle block
  // (a reflink: refcount 2).
  struct Shared {
    uint64_t a, b;
    uint64_t a_first;  // /a's first pool block
    uint64_t block;    // the shared one
  };
  Shared BuildShared(Image & img) {
    Shared s;
    s.a = img.Create(kRootIno, "a", 3);
    s.b = img.Create(kRootIno, "b", 1);
    s.a_first = img.inline_extent(s.a, 0)->pool_block;
    s.block = s.a_first + 1;
    img.AddExtent(s.b, 1, s.block, 1);
    img.inode(s.b)->size = 2 * kBlockSize;
    return s;
  }

  TEST_CASE("Shared block: refcount 2 for the two files that map it is clean") {
    Image img;
    const uint64_t a = img.Create(kRootIno, "a", 3);
    const uint64_t b = img.Create(kRootIno, "b", 1);
    const uint64_t used = Check(img).data_blocks_used;
    const uint64_t block = img.inline_extent(a, 0)->pool_block + 1;
    img.AddExtent(b, 1, block, 1);
    img.inode(b)->size = 2 * kBlockSize;
    CHECK(*img.refcount(block) == 2);
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.clean());
    CHECK(r.data_blocks_used == used);  // a shared block is one block in use
  }

  TEST_CASE("Shared block: refcount 1 but mapped by two files is set to 2") {
    Image img;
    const Shared s = BuildShared(img);
    *img.refcount(s.block) = 1;
    ExpectRepaired(img, {"block " + to_string(s.block) + ": refcount 1 but 2 references"});
    CHECK(*img.refcount(s.block) == 2);
  }

  TEST_CASE("Shared block: refcount 3 but mapped by two files is set to 2") {
    Image img;
    const Shared s = BuildShared(img);
    *img.refcount(s.block) = 3;
    ExpectRepaired(img, {"block " + to_string(s.block) + ": refcount 3 but 2 references"});
    CHECK(*img.refcount(s.block) == 2);
  }

  TEST_CASE("Shared block: refcount 0 but mapped by two files is set to 2") {
    Image img;
    const Shared s = BuildShared(img);
    *img.refcount(s.block) = 0;
    ExpectRepaired(img, {"block " + to_string(s.block) +
                         ": refcount 0 but 2 references (in use but marked free)"});
    CHECK(*img.refcount(s.block) == 2);
  }

  TEST_CASE("Shared block: a file that maps a block twice holds two references") {
    Image img;
    const Shared s = BuildShared(img);
    img.AddExtent(s.a, 5, s.a_first, 1);  // a clone within /a
    img.inode(s.a)->size = 6 * kBlockSize;
    CHECK(*img.refcount(s.a_first) == 2);
    CHECK(Check(img).findings.empty());
    *img.refcount(s.a_first) = 1;
    ExpectRepaired(img, {"block " + to_string(s.a_first) + ": refcount 1 but 2 references"});
    CHECK(*img.refcount(s.a_first) == 2);
  }

  TEST_CASE("Shared block: a run shared in part by three files is checked block by block") {
    Image img;
    const Shared s = BuildShared(img);
    // /c maps /a's first two blocks: refcounts 2, 3, 1 for /a's three blocks.
    const uint64_t c = img.Create(kRootIno, "c");
    img.AddExtent(c, 0, s.a_first, 2);
    img.inode(c)->size = 2 * kBlockSize;
    CHECK(*img.refcount(s.a_first) == 2);
    CHECK(*img.refcount(s.a_first + 1) == 3);
    CHECK(*img.refcount(s.a_first + 2) == 1);
    CHECK(Check(img).findings.empty());
    for (uint64_t i = 0; i < 3; ++i) *img.refcount(s.a_first + i) = 2;
    ExpectRepaired(img, {"block " + to_string(s.a_first + 1) + ": refcount 2 but 3 references",
                         "block " + to_string(s.a_first + 2) + ": refcount 2 but 1 reference"});
  }

  TEST_CASE("Shared block: reclaiming an orphan drops only its own reference") {
    Image img;
    const Shared s = BuildShared(img);
    const uint64_t orphan = img.NewInode(S_IFREG | 0644);  // nlink 0, no entry
    img.AddExtent(orphan, 0, s.block, 1);
    img.inode(orphan)->size = kBlockSize;
    CHECK(*img.refcount(s.block) == 3);
    const check::CheckReport look = Check(img);
    CHECK(Problems(look).empty());
    const check::CheckReport fix = Check(img, /*repair=*/true);
    CHECK(Problems(fix).empty());
    CHECK(fix.orphans == 1);
    CHECK(img.inode(orphan)->mode == 0);
    CHECK(*img.refcount(s.block) == 2);
    CHECK(Check(img).findings.empty());
  }

  // ---------------------------------------------------------------------------
  // A pending intent in inode slot 0 (docs/pool_format.md "Intents")

  Intent* IntentOf(Image & img) { return reinterpret_cast<Intent*>(img.inode(0)); }

  TEST_CASE("Intent: a pending clone is noted, not an error, and repair leaves it") {
    Image img;
    const Shared s = BuildShared(img);
    // A clone of /a's 3 blocks over /b, interrupted after its first piece
    // (/b's block 1 already shares /a's block 1).
    Intent* it = IntentOf(img);
    it->type = kIntentClone;
    it->ino = s.b;
    it->src_ino = s.a;
    it->src_block = 0;
    it->first_block = 0;
    it->count = 3;
    it->cursor = 2;
    it->new_size = 3 * kBlockSize;
    const std::vector<std::string> note = {"inode 0: a pending clone of blocks 0-2 of inode " +
                                           to_string(s.b) + " from block 0 of inode " +
                                           to_string(s.a) +
                                           " (a crash interrupted it); the next mount finishes it"};
    const std::vector<char> before = img.Snapshot();
    const check::CheckReport look = Check(img);
    CHECK(Problems(look).empty());
    CHECK(Notes(look) == note);
    CHECK(look.ExitCode() == 0);
    const check::CheckReport fix = Check(img, /*repair=*/true);
    CHECK(Problems(fix).empty());
    CHECK(fix.ExitCode() == 0);
    CHECK(img.Snapshot() == before);  // the record stays for the mount
  }

  TEST_CASE("Intent: each kind of pending change is noted") {
    const struct {
      uint32_t type;
      const char* name;
    } kinds[] = {{kIntentPunch, "punch"},
                 {kIntentZero, "zero range"},
                 {kIntentCollapse, "collapse"},
                 {kIntentInsert, "insert"}};
    for (const auto& k : kinds) {
      CAPTURE(k.name);
      Image img;
      const Shared s = BuildShared(img);
      Intent* it = IntentOf(img);
      it->type = k.type;
      it->ino = s.a;
      it->first_block = 1;
      it->count = 1;
      it->new_size = 3 * kBlockSize;
      const check::CheckReport r = Check(img);
      CHECK(Problems(r).empty());
      CHECK(Notes(r) == std::vector<std::string>{"inode 0: a pending " + std::string(k.name) +
                                                 " of blocks 1-1 of inode " + to_string(s.a) +
                                                 " (a crash interrupted it); the next mount "
                                                 "finishes it"});
    }
  }

  TEST_CASE("Intent: a record that names no regular file is noted for the mount to drop") {
    Image img;
    const Tree t = BuildTree(img);
    Intent* it = IntentOf(img);
    it->type = kIntentPunch;
    it->ino = t.dir;  // a directory
    it->count = 1;
    const std::vector<std::string> note = {
        "inode 0: a pending block-map change (intent type 2) that names no regular file to "
        "change; the next mount discards it"};
    CHECK(Problems(Check(img)).empty());
    CHECK(Notes(Check(img)) == note);
    it->type = 77;  // unknown
    it->ino = t.file;
    CHECK(Problems(Check(img)).empty());
    CHECK(Notes(Check(img)).size() == 1);
  }

  TEST_CASE("Intent: a mode in slot 0 is still slot 0 in use, intent or not") {
    Image img;
    IntentOf(img)->type = kIntentPunch;
    img.inode(0)->mode = S_IFREG | 0644;
    ExpectRepaired(img, {"inode 0: slot 0 is in use (mode 0100644)"});
    CHECK(IntentOf(img)->type == 0);
  }

  TEST_CASE("Intent: repair keeps the orphan a pending clone reads from") {
    Image img;
    const Shared s = BuildShared(img);
    // The source was unlinked while open, then the daemon died part way
    // through a clone from it into /b.
    const uint64_t src = img.NewInode(S_IFREG | 0644);
    const uint64_t first = img.AllocBlocks(2);
    img.AddExtent(src, 0, first, 2);
    img.inode(src)->size = 2 * kBlockSize;
    Intent* it = IntentOf(img);
    it->type = kIntentClone;
    it->ino = s.b;
    it->src_ino = src;
    it->count = 2;
    it->new_size = 2 * kBlockSize;
    const check::CheckReport fix = Check(img, /*repair=*/true);
    CHECK(Problems(fix).empty());
    CHECK(img.inode(src)->mode == (S_IFREG | 0644));  // still there for the mount
    CHECK(*img.refcount(first) == 1);
    const std::vector<std::string> notes = Notes(fix);
    REQUIRE(notes.size() == 2);
    CHECK(notes[1] == "inode " + to_string(src) +
                          ": orphan regular file (nlink 0: unlinked while open); kept for the "
                          "pending change in slot 0: the next mount finishes that, then "
                          "reclaims it");
    // Without the intent, repair reclaims it as usual.
    *it = Intent{};
    Check(img, /*repair=*/true);
    CHECK(img.inode(src)->mode == 0);
    CHECK(*img.refcount(first) == 0);
  }

  // ---------------------------------------------------------------------------
  // Quarantine

  TEST_CASE("Quarantine: a record holds one reference on the blocks no file references") {
    Image img;
    const Tree t = BuildTree(img);
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.reach_records == 1);
    CHECK(r.quarantined_blocks == 2);
    *img.refcount(t.quarantined + 1) = 0;
    ExpectRepaired(img, {"block " + to_string(t.quarantined + 1) +
                         ": refcount 0 but 1 reference (in use but marked free)"});
  }

  TEST_CASE("Quarantine: a quarantined block counts once, however many records cover it") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddQuarantine(t.quarantined, 2, 2);  // a second mapping of the same blocks
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.reach_records == 2);
    CHECK(r.quarantined_blocks == 2);
    *img.refcount(t.quarantined) = 2;
    ExpectRepaired(img, {"block " + to_string(t.quarantined) + ": refcount 2 but 1 reference"});
  }

  TEST_CASE("Quarantine: a record over blocks a file still maps adds no reference") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t b = img.inline_extent(t.file, 0)->pool_block;  // shared with /clone
    img.AddQuarantine(b, 3);
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.reach_records == 2);
    CHECK(r.quarantined_blocks == 2);
    CHECK(*img.refcount(b) == 2);
    *img.refcount(b) = 3;
    ExpectRepaired(img, {"block " + to_string(b) + ": refcount 3 but 2 references"});
  }

  TEST_CASE("Quarantine: a record outside the data area is removed") {
    Image img;
    BuildTree(img);
    const uint32_t i = img.AddQuarantine(img.sb().data_start, 1);
    img.quarantine(i)->pool_block = 3;
    img.quarantine(i)->length = 2;
    ExpectRepaired(img, {"quarantine record 1: 2 blocks from block 3 lie outside the data area"});
    CHECK(img.quarantine(i)->length == 0);
  }

  TEST_CASE("Quarantine: a record running past the end of the pool is removed") {
    Image img;
    const uint32_t i = img.AddQuarantine(img.sb().total_blocks - 1, 1);
    img.quarantine(i)->length = 2;
    ExpectRepaired(img, {"quarantine record 0: 2 blocks from block " +
                             to_string(img.sb().total_blocks - 1) + " lie outside the data area",
                         "block " + to_string(img.sb().total_blocks - 1) +
                             ": refcount 1 but nothing references it (leaked)"});
    CHECK(*img.refcount(img.sb().total_blocks - 1) == 0);
  }

  TEST_CASE("Quarantine: a record without a map id or an owner is removed, freeing its blocks") {
    Image img;
    const Tree t = BuildTree(img);
    SUBCASE("map id 0") { img.quarantine(0)->map_id = 0; }
    SUBCASE("owner pid 0") { img.quarantine(0)->owner_pid = 0; }
    SUBCASE("unknown flags") { img.quarantine(0)->flags = 6; }
    const std::string what = img.quarantine(0)->map_id == 0      ? "map id 0"
                             : img.quarantine(0)->owner_pid == 0 ? "owner pid 0"
                                                                 : "unknown flags 6";
    ExpectRepaired(img, {"quarantine record 0: " + what,
                         "blocks " + to_string(t.quarantined) + "-" + to_string(t.quarantined + 1) +
                             ": refcount 1 but nothing references it (leaked)"});
    CHECK(*img.refcount(t.quarantined) == 0);
    CHECK(img.quarantine(0)->length == 0);
  }

  TEST_CASE("Quarantine: a record covering metadata is removed") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddQuarantine(t.chain, 1);
    ExpectRepaired(img, {"quarantine record 1: covers block " + to_string(t.chain) +
                         ", which holds metadata"});
  }

  TEST_CASE("Quarantine: a repair that frees a file's blocks leaves covered ones quarantined") {
    Image img;
    BuildTree(img);
    const uint64_t orphan = img.NewInode(S_IFREG | 0644);  // unlinked while open
    const uint64_t b = img.AllocBlocks(1);
    img.AddExtent(orphan, 0, b, 1);
    img.AddQuarantine(b, 1);
    Check(img, /*repair=*/true);
    CHECK(img.inode(orphan)->mode == 0);
    CHECK(*img.refcount(b) == 1);
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.quarantined_blocks == 3);
  }

  // A version-1 pool: what mkfs of that version left (the same geometry; the
  // table read as 32-byte entries that nothing wrote).
  void MakeV1(Image& img) {
    for (uint64_t copy : {0, 1}) {
      img.super(copy)->version = kFormatVersionV1;
      img.super(copy)->checksum = engine::SuperblockChecksum(*img.super(copy));
    }
  }

  TEST_CASE("Quarantine: a version-1 pool is checked as version 1") {
    Image img;
    img.Create(kRootIno, "f", 2);
    MakeV1(img);
    CHECK(Check(img).findings.empty());
    SUBCASE("an entry in its table is removed") {
      auto* e = reinterpret_cast<QuarantineEntryV1*>(img.quarantine(0)) + 129;
      e->pool_block = img.sb().data_start;
      e->length = 1;
      e->reason = 1;
      ExpectRepaired(img, {"quarantine entry 129: a format version 1 pool never uses its "
                           "quarantine table"});
      CHECK(e->length == 0);
      CHECK(e->reason == 0);
    }
    SUBCASE("a backup already upgraded is the first step of the mount's upgrade") {
      *img.super(1) = engine::Upgraded(*img.super(0));
      const check::CheckReport r = Check(img);
      CHECK(Problems(r).empty());
      CHECK(Notes(r) == std::vector<std::string>{
                            "superblock: the backup is upgraded (or part way) to format version "
                            "3; the next mount finishes the upgrade"});
    }
    SUBCASE("a backup torn between the version and the checksum is part of it too") {
      *img.super(1) = engine::Upgraded(*img.super(0));
      img.super(1)->checksum = img.super(0)->checksum;
      const check::CheckReport r = Check(img);
      CHECK(Problems(r).empty());
      CHECK(Notes(r).size() == 1);
    }
    SUBCASE("a primary torn between the version and the checksum is restored from the backup") {
      *img.super(1) = engine::Upgraded(*img.super(0));
      img.super(0)->version = kFormatVersion;  // the checksum did not land
      const check::CheckReport r = Check(img);
      CHECK(Problems(r).empty());
      CHECK(Notes(r) == std::vector<std::string>{
                            "superblock: an upgrade to format version 3 was interrupted; the "
                            "backup holds it"});
      const check::CheckReport fixed = Check(img, /*repair=*/true);
      CHECK(Problems(fixed).empty());
      CHECK(img.super(0)->checksum == img.super(1)->checksum);
      CHECK(Check(img).findings.empty());
    }
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
