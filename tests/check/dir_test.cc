// Invariants 4 to 6 and 8: directory blocks and entries, link counts, the
// single-entry rule for directories, connectivity, orphans, /lost+found.
#include <dirent.h>

#include <cstring>
#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;
using std::to_string;

std::string In(uint64_t ino) { return "inode " + to_string(ino) + ": "; }
std::string Leaked(uint64_t b) {
  return "block " + to_string(b) + ": refcount 1 but nothing references it (leaked)";
}
std::string Detached(uint64_t ino) { return In(ino) + "nlink 1 but no directory entry names it"; }

// A directory /d whose first block holds 31 two-slot entries and whose second
// holds one more, for /d/f31.
struct TwoBlockDir {
  uint64_t d, f31, block0, block1;
};
TwoBlockDir MakeTwoBlockDir(Image& img) {
  TwoBlockDir t{};
  t.d = img.Mkdir(1, "d");
  for (int i = 0; i < 32; ++i) {
    const uint64_t f = img.Create(
        t.d, "a-name-long-enough-to-need-two-directory-slots-in-any-case-" + to_string(i));
    if (i == 31) t.f31 = f;
  }
  t.block0 = img.FileBlock(t.d, 0);
  t.block1 = img.FileBlock(t.d, 1);
  return t;
}

TEST_SUITE("check") {
  // ---------------------------------------------------------------------------
  // Directory blocks

  TEST_CASE("Directory: a block with a bad magic ends the directory") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    img.block(t.block1)[0] = 0;
    ExpectRepaired(img, {In(t.d) + "directory block 1 (pool block " + to_string(t.block1) +
                             ") has a bad magic",
                         Detached(t.f31), Leaked(t.block1)});
    CHECK(img.inode(t.d)->size == kBlockSize);
    CHECK(img.inode(t.d)->blocks == 1);
  }

  TEST_CASE("Directory: a block owned by another directory ends the directory") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    reinterpret_cast<DirBlockHeader*>(img.block(t.block1))->owner_ino = 1;
    ExpectRepaired(img, {In(t.d) + "directory block 1 (pool block " + to_string(t.block1) +
                             ") belongs to inode 1",
                         Detached(t.f31), Leaked(t.block1)});
  }

  TEST_CASE("Directory: a block with the wrong index is renumbered") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    reinterpret_cast<DirBlockHeader*>(img.block(t.block1))->block_index = 5;
    ExpectRepaired(img, {In(t.d) + "directory block 1 (pool block " + to_string(t.block1) +
                         ") says it is block 5"});
    CHECK(reinterpret_cast<DirBlockHeader*>(img.block(t.block1))->block_index == 1);
  }

  TEST_CASE("Directory: a hole ends the directory") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    img.inline_extent(t.d, 1)->file_block = 2;
    ExpectRepaired(img, {In(t.d) + "directory has no block 1", Detached(t.f31), Leaked(t.block1)});
  }

  TEST_CASE("Directory: an unwritten block ends the directory") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    img.inline_extent(t.d, 1)->flags = kExtentUnwritten;
    ExpectRepaired(img,
                   {In(t.d) + "directory block 1 is unwritten", Detached(t.f31), Leaked(t.block1)});
  }

  TEST_CASE("Directory: the size must match its blocks") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    SUBCASE("too large") {
      img.inode(t.d)->size = 3 * kBlockSize;
      ExpectRepaired(img, {In(t.d) + "size 12288 but its blocks hold 8192 bytes"});
    }
    SUBCASE("not a multiple of the block size") {
      img.inode(t.d)->size = 100;
      ExpectRepaired(img, {In(t.d) + "size 100 but its blocks hold 8192 bytes"});
    }
    CHECK(img.inode(t.d)->size == 2 * kBlockSize);
  }

  TEST_CASE("Directory: two directories mapping the same block") {
    Image img;
    const TwoBlockDir t = MakeTwoBlockDir(img);
    const uint64_t e = img.Mkdir(1, "e");
    img.AddExtent(e, 0, t.block0, 1);  // /e claims /d's first block
    img.inode(e)->size = kBlockSize;
    ExpectRepaired(img, {In(e) + "directory block 0 (pool block " + to_string(t.block0) +
                             ") belongs to inode " + to_string(t.d),
                         "block " + to_string(t.block0) + ": refcount 2 but 1 reference"});
  }

  // ---------------------------------------------------------------------------
  // Entries

  TEST_CASE("Entry: invalid names are removed and the inode reattached") {
    Image img;
    const Tree t = BuildTree(img);
    DirEntryHeader* e = img.FindEntry(1, "fifo");
    char* name = reinterpret_cast<char*>(e + 1);
    std::string shown;
    SUBCASE("slash") {
      name[1] = '/';
      shown = "'f/fo'";
    }
    SUBCASE("NUL") {
      name[2] = 0;
      shown = "'fi\\x00o'";
    }
    SUBCASE("dot") {
      e->name_len = 1;
      name[0] = '.';
      shown = "'.'";
    }
    SUBCASE("dot dot") {
      e->name_len = 2;
      name[0] = name[1] = '.';
      shown = "'..'";
    }
    ExpectRepaired(img, {In(1) + "entry " + shown + " (block 0, slot 5) has an invalid name",
                         Detached(t.fifo)});
    const DirEntryHeader* lf = img.FindEntry(1, "lost+found");
    REQUIRE(lf != nullptr);
    CHECK(img.FindEntry(lf->ino, "#" + to_string(t.fifo))->ino == t.fifo);
  }

  TEST_CASE("Entry: a repeated name is removed") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddEntry(1, "fifo", t.chr, DT_CHR);
    ++img.inode(t.chr)->nlink;
    ExpectRepaired(img, {In(1) + "entry 'fifo' (block 0, slot 10) repeats an earlier name",
                         In(t.chr) + "nlink 2 but 1 entry names it"});
    CHECK(img.FindEntry(1, "fifo")->ino == t.fifo);
  }

  TEST_CASE("Entry: one naming a free inode is removed") {
    Image img;
    BuildTree(img);
    img.AddEntry(1, "ghost", 300, DT_REG);
    ExpectRepaired(img,
                   {In(1) + "entry 'ghost' (block 0, slot 10) names inode 300, which is free"});
    CHECK(img.FindEntry(1, "ghost") == nullptr);
  }

  TEST_CASE("Entry: one naming an inode beyond the table is removed") {
    Image img;
    BuildTree(img);
    img.AddEntry(1, "far", uint64_t{1} << 40, DT_REG);
    ExpectRepaired(
        img, {In(1) +
              "entry 'far' (block 0, slot 10) names inode 1099511627776, beyond the inode table"});
  }

  TEST_CASE("Entry: one naming the root is removed") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddEntry(t.sub, "up", 1, DT_DIR);
    ExpectRepaired(img, {In(t.sub) + "entry 'up' (block 0, slot 2) names the root directory"});
  }

  TEST_CASE("Entry: the type must be the inode's") {
    Image img;
    const Tree t = BuildTree(img);
    img.FindEntry(1, "fifo")->type = DT_REG;
    ExpectRepaired(img, {In(1) + "entry 'fifo' (block 0, slot 5) has type 8 but inode " +
                         to_string(t.fifo) + " is a FIFO"});
    CHECK(img.FindEntry(1, "fifo")->type == DT_FIFO);
  }

  TEST_CASE("Entry: malformed entries are removed slot by slot") {
    Image img;
    const Tree t = BuildTree(img);
    DirEntryHeader* e = img.FindEntry(1, "fifo");
    std::string why;
    SUBCASE("slot count") {
      e->slot_count = 3;
      why = "spans 3 slots but a name of 4 bytes needs 1";
    }
    SUBCASE("empty name") {
      e->name_len = 0;
      why = "has an empty name";
    }
    ExpectRepaired(img, {In(1) + "entry (block 0, slot 5) " + why, Detached(t.fifo)});
  }

  TEST_CASE("Entry: one running past the end of its block is removed") {
    Image img;
    const Tree t = BuildTree(img);
    char* slot63 = img.block(img.FileBlock(1, 0)) + 63 * kDirSlotSize;
    const DirEntryHeader h{t.fifo, 2, DT_FIFO, 60, {}};
    std::memcpy(slot63, &h, sizeof(h));
    ExpectRepaired(img, {In(1) + "entry (block 0, slot 63) runs past the end of its block"});
  }

  TEST_CASE("Entry: a free slot must have slot_count 0") {
    Image img;
    BuildTree(img);
    auto* h = reinterpret_cast<DirEntryHeader*>(img.block(img.FileBlock(1, 0)) + 20 * kDirSlotSize);
    h->slot_count = 1;
    ExpectRepaired(img, {In(1) + "free slot (block 0, slot 20) has slot_count 1"});
  }

  // ---------------------------------------------------------------------------
  // Link counts

  TEST_CASE("Links: a file's nlink is the number of entries naming it") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 1;
    ExpectRepaired(img, {In(t.file) + "nlink 1 but 2 entries name it"});
    CHECK(img.inode(t.file)->nlink == 2);
  }

  TEST_CASE("Links: a named file with nlink 0 is not an orphan") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.deep)->nlink = 0;
    ExpectRepaired(img, {In(t.deep) + "nlink 0 but 1 entry names it"});
  }

  TEST_CASE("Links: a directory's nlink is 2 plus its subdirectories") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.dir)->nlink = 2;
    img.inode(1)->nlink = 9;
    ExpectRepaired(img, {In(1) + "nlink 9 but it has 2 subdirectories (expected 4)",
                         In(t.dir) + "nlink 2 but it has 1 subdirectory (expected 3)"});
  }

  // ---------------------------------------------------------------------------
  // Directories: one entry, in the parent

  TEST_CASE("Directory names: a second entry for a directory is removed") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddEntry(1, "dir2", t.dir, DT_DIR);
    ExpectRepaired(img, {In(1) + "entry 'dir2' names directory " + to_string(t.dir) +
                         ", which already has an entry in directory 1"});
    CHECK(img.FindEntry(1, "dir2") == nullptr);
  }

  TEST_CASE("Directory names: the entry in the parent wins") {
    Image img;
    const Tree t = BuildTree(img);
    img.AddEntry(t.big, "alias", t.sub, DT_DIR);
    img.inode(t.sub)->parent = t.big;
    ExpectRepaired(img, {In(t.dir) + "entry 'sub' names directory " + to_string(t.sub) +
                             ", which already has an entry in directory " + to_string(t.big),
                         In(t.dir) + "nlink 3 but it has 0 subdirectories (expected 2)",
                         In(t.big) + "nlink 2 but it has 1 subdirectory (expected 3)"});
    CHECK(img.FindEntry(t.dir, "sub") == nullptr);
    CHECK(img.FindEntry(t.big, "alias")->ino == t.sub);
  }

  TEST_CASE("Directory names: the parent field follows the entry") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.sub)->parent = t.big;
    ExpectRepaired(img, {In(t.sub) + "parent is " + to_string(t.big) +
                         " but its entry is in directory " + to_string(t.dir)});
    CHECK(img.inode(t.sub)->parent == t.dir);
  }

  TEST_CASE("Directory names: an out-of-range parent field is fixed") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.sub)->parent = uint64_t{1} << 50;
    ExpectRepaired(img, {In(t.sub) + "parent is 1125899906842624 but its entry is in directory " +
                         to_string(t.dir)});
  }

  TEST_CASE("Directory names: the root's parent is itself") {
    Image img;
    img.inode(1)->parent = 5;
    ExpectRepaired(img, {"inode 1: parent is 5 but the root's is itself"});
  }

  // ---------------------------------------------------------------------------
  // Connectivity and /lost+found

  TEST_CASE("Connectivity: a file no entry names goes to a new /lost+found") {
    Image img;
    BuildTree(img);
    const uint64_t f = img.NewInode(S_IFREG | 0600);
    img.inode(f)->nlink = 1;
    img.AddExtent(f, 0, img.AllocBlocks(1), 1);
    ExpectRepaired(img, {Detached(f)});
    const DirEntryHeader* lf = img.FindEntry(1, "lost+found");
    REQUIRE(lf != nullptr);
    const Inode* dir = img.inode(lf->ino);
    CHECK(dir->mode == (S_IFDIR | 0700));
    CHECK(dir->uid == 0);
    CHECK(dir->nlink == 2);
    CHECK(dir->parent == 1);
    CHECK(img.FindEntry(lf->ino, "#" + to_string(f))->type == DT_REG);
    CHECK(img.inode(1)->nlink == 5);
  }

  TEST_CASE("Connectivity: an existing /lost+found is used") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t lf = img.Mkdir(1, "lost+found");
    img.Create(lf, "#999");
    const uint64_t d = img.NewInode(S_IFDIR | 0755);
    img.inode(d)->nlink = 2;
    img.inode(d)->parent = t.big;
    ExpectRepaired(img, {In(d) + "directory is not reachable from the root (no entry names it)"});
    CHECK(img.FindEntry(lf, "#" + to_string(d))->ino == d);
    CHECK(img.inode(lf)->nlink == 3);
    CHECK(img.inode(d)->parent == lf);
  }

  TEST_CASE("Connectivity: a name clash in /lost+found gets a suffix") {
    Image img;
    const uint64_t lf = img.Mkdir(1, "lost+found");
    const uint64_t f = img.NewInode(S_IFREG | 0600);
    img.inode(f)->nlink = 1;
    img.Create(lf, "#" + to_string(f));  // takes the name f would get
    ExpectRepaired(img, {Detached(f)});
    CHECK(img.FindEntry(lf, "#" + to_string(f) + ".1")->ino == f);
  }

  TEST_CASE("Connectivity: a directory cycle is broken and reattached") {
    Image img;
    const uint64_t d1 = img.Mkdir(1, "d1");
    const uint64_t d2 = img.Mkdir(d1, "d2");
    std::memset(img.FindEntry(1, "d1"), 0, kDirSlotSize);  // d1 leaves the root ...
    --img.inode(1)->nlink;
    img.AddEntry(d2, "d1", d1, DT_DIR);  // ... and hangs below its own child
    img.inode(d1)->parent = d2;
    ++img.inode(d2)->nlink;
    ExpectRepaired(
        img, {In(d1) +
              "directory is not reachable from the root (its entry is inside its own subtree)"});
    const DirEntryHeader* lf = img.FindEntry(1, "lost+found");
    REQUIRE(lf != nullptr);
    CHECK(img.FindEntry(lf->ino, "#" + to_string(d1))->ino == d1);
    CHECK(img.FindEntry(d2, "d1") == nullptr);
    CHECK(img.inode(d2)->nlink == 2);
    CHECK(img.inode(d1)->parent == lf->ino);
  }

  TEST_CASE("Connectivity: a non-empty directory with nlink 0 is reattached, not reclaimed") {
    Image img;
    const uint64_t d = img.Mkdir(1, "d");
    const uint64_t f = img.Create(d, "f");
    std::memset(img.FindEntry(1, "d"), 0, kDirSlotSize);
    --img.inode(1)->nlink;
    img.inode(d)->nlink = 0;
    ExpectRepaired(img, {In(d) + "directory is not reachable from the root (no entry names it)",
                         In(d) + "nlink 0 but it has 0 subdirectories (expected 2)"});
    CHECK(img.inode(f)->mode != 0);
  }

  TEST_CASE("Connectivity: no /lost+found when its name is taken by a file") {
    Image img;
    const uint64_t owner = img.Create(1, "lost+found");
    const uint64_t f = img.NewInode(S_IFREG | 0600);
    img.inode(f)->nlink = 1;
    const std::string problem = Detached(f) +
                                "; cannot move it to /lost+found: that name is taken by inode " +
                                to_string(owner);
    for (bool repair : {false, true}) {
      const check::CheckReport r = Check(img, repair);
      CHECK(Problems(r) == std::vector<std::string>{problem});
      CHECK(r.ExitCode() == 4);
    }
    CHECK(img.inode(f)->nlink == 1);  // never lowered to 0: that would lose the file
  }

  TEST_CASE("Connectivity: /lost+found and the root grow as needed") {
    Image img(32 << 20);
    // Fill the root's only block with 63 one-slot entries; the last is a file
    // that maps every other block after the used ones, so that free space is
    // fragmented and each new directory block needs an extent of its own.
    for (int i = 0; i < 62; ++i) img.Create(1, "r" + to_string(i));
    const uint64_t spacer = img.Create(1, "spacer");
    for (uint32_t i = 0; i < 40; ++i) img.AddExtent(spacer, i, img.AllocBlocks(2), 1);
    // 9 blocks' worth of lost files.
    std::vector<std::string> problems;
    std::vector<uint64_t> lost;
    for (int i = 0; i < 63 * 9; ++i) {
      const uint64_t f = img.NewInode(S_IFREG | 0600);
      img.inode(f)->nlink = 1;
      lost.push_back(f);
      problems.push_back(Detached(f));
    }
    ExpectRepaired(img, problems);
    const DirEntryHeader* lf = img.FindEntry(1, "lost+found");
    REQUIRE(lf != nullptr);
    CHECK(img.inode(1)->size == 2 * kBlockSize);
    CHECK(img.inode(lf->ino)->size == 9 * kBlockSize);
    CHECK(img.inode(lf->ino)->blocks == 9);
    CHECK(img.inode(lf->ino)->extent_block != 0);  // 6 inline extents were not enough
    for (uint64_t f : lost) CHECK(img.FindEntry(lf->ino, "#" + to_string(f))->ino == f);
  }

  // ---------------------------------------------------------------------------
  // Orphans

  TEST_CASE("Orphans: are notes in a check and reclaimed by a repair") {
    Image img;
    BuildTree(img);
    const uint64_t o = img.NewInode(S_IFREG | 0600);
    const uint64_t first = img.AllocBlocks(2);
    img.AddExtent(o, 0, first, 2);
    img.SetXattrs(o, {{"user.x", "y"}});
    const std::vector<char> before = img.Snapshot();

    const check::CheckReport look = Check(img);
    CHECK(look.clean());
    CHECK(look.orphans == 1);
    CHECK(Notes(look) ==
          std::vector<std::string>{
              In(o) +
              "orphan regular file (nlink 0: unlinked while open); the next mount reclaims it"});
    CHECK(img.Snapshot() == before);

    const check::CheckReport fix = Check(img, true);
    CHECK(fix.ExitCode() == 0);
    CHECK(Problems(fix).empty());
    CHECK(Notes(fix) ==
          std::vector<std::string>{
              In(o) +
              "orphan regular file (nlink 0: unlinked while open): reclaimed it and its 2 blocks"});
    CHECK(img.inode(o)->mode == 0);
    CHECK(*img.refcount(first) == 0);
    CHECK(*img.refcount(first + 1) == 0);
    const check::CheckReport again = Check(img);
    CHECK(again.findings.empty());
    CHECK(again.orphans == 0);
  }

  TEST_CASE("Orphans: an empty directory with nlink 0 is an orphan") {
    Image img;
    const uint64_t d = img.NewInode(S_IFDIR | 0755);
    img.inode(d)->parent = 1;
    const check::CheckReport r = Check(img);
    CHECK(r.clean());
    CHECK(
        Notes(r) ==
        std::vector<std::string>{
            In(d) + "orphan directory (nlink 0: unlinked while open); the next mount reclaims it"});
  }

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::testing
