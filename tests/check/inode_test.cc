// Invariant 3: every allocated inode by type, its extents, extent chain and
// xattr block.
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
std::string Leaked(uint64_t first, uint64_t last) {
  return (first == last ? "block " + to_string(first)
                        : "blocks " + to_string(first) + "-" + to_string(last)) +
         ": refcount 1 but nothing references it (leaked)";
}
std::string Ext(const Extent& e) {
  return "extent {file block " + to_string(e.file_block) + ", pool block " +
         to_string(e.pool_block) + ", length " + to_string(e.length) + "}";
}

TEST_SUITE("check") {
  TEST_CASE("Inode: an unknown file type clears the inode and its entry") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.fifo)->mode = 0170000 | 0644;
    ExpectRepaired(img, {In(t.fifo) + "unknown file type 0170000",
                         In(1) + "entry 'fifo' (block 0, slot 5) names inode " + to_string(t.fifo) +
                             ", which is free"});
    CHECK(img.inode(t.fifo)->mode == 0);
    CHECK(img.inode(t.fifo)->generation == 1);  // a free slot keeps its generation
    CHECK(img.FindEntry(1, "fifo") == nullptr);
  }

  TEST_CASE("Inode: mode bits beyond type and permissions are cleared") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->mode |= 0x10000;
    ExpectRepaired(img, {In(t.file) + "mode 0300644 has bits beyond the type and permissions"});
    CHECK(img.inode(t.file)->mode == (S_IFREG | 0644));
  }

  TEST_CASE("Inode: unknown flags are cleared") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->flags = 0x30;
    ExpectRepaired(img, {In(t.file) + "unknown flags 0x30"});
    CHECK(img.inode(t.file)->flags == 0);
  }

  TEST_CASE("Inode: INLINE_DATA is only for symlinks") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->flags = kInodeInlineData;
    ExpectRepaired(img, {In(t.file) + "INLINE_DATA flag on a regular file"});
  }

  TEST_CASE("Inode: only directories have a parent") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.fifo)->parent = 5;
    ExpectRepaired(img, {In(t.fifo) + "parent is 5 but only directories have one"});
    CHECK(img.inode(t.fifo)->parent == 0);
  }

  TEST_CASE("Inode: slot 0 must stay free") {
    Image img;
    img.inode(0)->mode = S_IFREG | 0644;
    ExpectRepaired(img, {"inode 0: slot 0 is in use (mode 0100644)"});
  }

  TEST_CASE("Inode: blocks must equal the sum of the extent lengths") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.frag)->blocks = 7;
    ExpectRepaired(img, {In(t.frag) + "blocks is 7 but its extents map 12"});
    CHECK(img.inode(t.frag)->blocks == 12);
  }

  TEST_CASE("Inode: a regular file larger than 2^60 is cut to its last extent") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.frag)->size = (uint64_t{1} << 60) + 1;
    ExpectRepaired(img, {In(t.frag) + "size 1152921504606846977 is larger than 2^60"});
    CHECK(img.inode(t.frag)->size == 42 * kBlockSize);
  }

  // ---------------------------------------------------------------------------
  // Extents

  TEST_CASE("Extent: one outside the data area is cleared and its block leaks") {
    Image img;
    const Tree t = BuildTree(img);
    Extent* e = img.inline_extent(t.frag, 0);
    const uint64_t was = e->pool_block;
    e->pool_block = 3;
    ExpectRepaired(
        img,
        {In(t.frag) + "extent {file block 0, pool block 3, length 1} lies outside the data area",
         Leaked(was, was)});
    CHECK(e->length == 0);
    CHECK(img.inode(t.frag)->blocks == 11);
    CHECK(*img.refcount(was) == 0);
  }

  TEST_CASE("Extent: one running past the end of the pool is cleared") {
    Image img;
    const Tree t = BuildTree(img);
    Extent* e = img.inline_extent(t.file, 0);
    const uint64_t first = e->pool_block;
    e->length = static_cast<uint32_t>(img.sb().total_blocks);
    // The clone still holds the blocks: their refcount drops from 2 to 1.
    ExpectRepaired(
        img, {In(t.file) + "extent {file block 0, pool block " + to_string(first) + ", length " +
                  to_string(img.sb().total_blocks) + "} lies outside the data area",
              "blocks " + to_string(first) + "-" + to_string(first + 2) +
                  ": refcount 2 but 1 reference"});
  }

  TEST_CASE("Extent: one beyond the largest file size is cleared") {
    Image img;
    const Tree t = BuildTree(img);
    Extent* e = img.inline_extent(t.frag, 1);
    const uint64_t pool = e->pool_block;
    e->file_block = uint64_t{1} << 48;
    ExpectRepaired(img, {In(t.frag) + "extent {file block 281474976710656, pool block " +
                             to_string(pool) + ", length 1} lies beyond the largest file size",
                         Leaked(pool, pool)});
  }

  TEST_CASE("Extent: of two overlapping extents the later slot is cleared") {
    Image img;
    const Tree t = BuildTree(img);
    const uint64_t extra = img.AllocBlocks(1);
    const Extent added = *img.AddExtent(t.frag, 0, extra, 1);  // file block 0 is mapped already
    ExpectRepaired(img, {In(t.frag) + Ext(added) + " overlaps the file blocks of another extent",
                         Leaked(extra, extra)});
    CHECK(img.FileBlock(t.frag, 0) == img.inline_extent(t.frag, 0)->pool_block);
  }

  TEST_CASE("Extent: unknown flags are cleared, the extent kept") {
    Image img;
    const Tree t = BuildTree(img);
    Extent* e = img.inline_extent(t.frag, 2);
    e->flags = 0x6;
    ExpectRepaired(img, {In(t.frag) + Ext(*e) + " has unknown flags 0x6"});
    CHECK(e->flags == 0);
    CHECK(e->length == 1);
  }

  TEST_CASE("Extent chain: a block with a bad magic cuts the chain") {
    Image img;
    const Tree t = BuildTree(img);
    img.block(t.chain)[0] = 'X';
    // The chain held the 7th to 10th extents and the unwritten one; their
    // blocks were allocated around the chain block, 7 blocks in a row.
    const uint64_t first = t.chain - 1, last = t.chain + 5;
    ExpectRepaired(img,
                   {In(t.frag) + "extent chain block " + to_string(t.chain) + " has a bad magic",
                    Leaked(first, last)});
    CHECK(img.inode(t.frag)->extent_block == 0);
    CHECK(img.inode(t.frag)->blocks == 6);
  }

  TEST_CASE("Extent chain: a block owned by another inode cuts the chain") {
    Image img;
    const Tree t = BuildTree(img);
    reinterpret_cast<ExtentBlock*>(img.block(t.chain))->header.owner_ino = 99;
    ExpectRepaired(
        img, {In(t.frag) + "extent chain block " + to_string(t.chain) + " belongs to inode 99",
              Leaked(t.chain - 1, t.chain + 5)});
  }

  TEST_CASE("Extent chain: a link outside the data area cuts the chain") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.frag)->extent_block = img.sb().inode_start;
    ExpectRepaired(img, {In(t.frag) + "extent chain block " + to_string(img.sb().inode_start) +
                             " lies outside the data area",
                         Leaked(t.chain - 1, t.chain + 5)});
  }

  TEST_CASE("Extent chain: a loop is cut where it closes") {
    Image img;
    const Tree t = BuildTree(img);
    auto* eb = reinterpret_cast<ExtentBlock*>(img.block(t.chain));
    eb->header.next_block = t.chain;
    ExpectRepaired(img, {In(t.frag) + "extent chain block " + to_string(t.chain) +
                         " appears twice (the chain loops)"});
    CHECK(eb->header.next_block == 0);
    CHECK(img.inode(t.frag)->blocks == 12);
  }

  TEST_CASE("Extent chain: a loop through two blocks is cut") {
    Image img;
    const uint64_t f = img.Create(1, "f");
    for (uint32_t i = 0; i < 6 + 169 + 1; ++i) img.AddExtent(f, i, img.AllocBlocks(1), 1);
    const uint64_t c1 = img.inode(f)->extent_block;
    auto* b1 = reinterpret_cast<ExtentBlock*>(img.block(c1));
    const uint64_t c2 = b1->header.next_block;
    reinterpret_cast<ExtentBlock*>(img.block(c2))->header.next_block = c1;
    ExpectRepaired(
        img, {In(f) + "extent chain block " + to_string(c1) + " appears twice (the chain loops)"});
  }

  TEST_CASE("Extent chain: two inodes sharing a chain block") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.clone)->extent_block = t.chain;  // owner says frag
    ++*img.refcount(t.chain);
    ExpectRepaired(img, {In(t.clone) + "extent chain block " + to_string(t.chain) +
                             " belongs to inode " + to_string(t.frag),
                         "block " + to_string(t.chain) + ": refcount 2 but 1 reference"});
  }

  // ---------------------------------------------------------------------------
  // Xattr blocks

  TEST_CASE("Xattr: a block with a bad magic is dropped") {
    Image img;
    const Tree t = BuildTree(img);
    img.block(t.xattr)[1] = 'x';
    ExpectRepaired(img, {In(t.file) + "xattr block " + to_string(t.xattr) + " has a bad magic",
                         Leaked(t.xattr, t.xattr)});
    CHECK(img.inode(t.file)->xattr_block == 0);
  }

  TEST_CASE("Xattr: a block owned by another inode is dropped") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.deep)->xattr_block = t.xattr;
    ++*img.refcount(t.xattr);
    ExpectRepaired(img, {In(t.deep) + "xattr block " + to_string(t.xattr) + " belongs to inode " +
                             to_string(t.file),
                         "block " + to_string(t.xattr) + ": refcount 2 but 1 reference"});
  }

  TEST_CASE("Xattr: malformed blocks are dropped") {
    Image img;
    const uint64_t f = img.Create(1, "f");
    const uint64_t x = img.SetXattrs(f, {{"user.a", "1"}, {"user.b", "22"}});
    auto* h = reinterpret_cast<XattrBlockHeader*>(img.block(x));
    char* entries = img.block(x) + sizeof(XattrBlockHeader);
    std::string why;
    SUBCASE("more used bytes than fit") {
      h->used_bytes = 5000;
      why = "claims 5000 bytes of entries (at most 4064 fit)";
    }
    SUBCASE("entry count") {
      h->entry_count = 3;
      why = "holds 2 entries but says 3";
    }
    SUBCASE("truncated entry") {
      h->used_bytes += 2;  // entries take 12 + 16 bytes
      why = "has a truncated entry at byte 24";
    }
    SUBCASE("entry past the used bytes") {
      h->used_bytes -= 4;
      why = "has an entry at byte 12 running past its used bytes";
    }
    SUBCASE("empty name") {
      entries[12] = 0;
      why = "has an entry with an empty name at byte 12";
    }
    SUBCASE("NUL in a name") {
      entries[12 + 4 + 2] = 0;
      why = "has a name containing NUL at byte 12";
    }
    SUBCASE("repeated name") {
      entries[12 + 4 + 5] = 'a';
      why = "has two attributes named 'user.a'";
    }
    ExpectRepaired(img, {In(f) + "xattr block " + to_string(x) + " " + why, Leaked(x, x)});
  }

  // ---------------------------------------------------------------------------
  // Symlinks and special files

  TEST_CASE("Symlink: a short target not stored inline clears the symlink") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.shortlink)->flags = 0;
    ExpectRepaired(img, {In(t.shortlink) + "symlink target of 8 bytes is not stored inline",
                         In(1) + "entry 'short' (block 0, slot 3) names inode " +
                             to_string(t.shortlink) + ", which is free"});
  }

  TEST_CASE("Symlink: an empty or overlong target clears the symlink") {
    Image img;
    const Tree t = BuildTree(img);
    uint64_t size = 0;
    SUBCASE("empty") { size = 0; }
    SUBCASE("overlong") { size = 4096; }
    img.inode(t.shortlink)->size = size;
    ExpectRepaired(img, {In(t.shortlink) + "symlink target of " + to_string(size) +
                             " bytes (must be 1 to 4095)",
                         In(1) + "entry 'short' (block 0, slot 3) names inode " +
                             to_string(t.shortlink) + ", which is free"});
  }

  TEST_CASE("Symlink: a long target must be one written block at file block 0") {
    Image img;
    const Tree t = BuildTree(img);
    Extent* e = img.inline_extent(t.longlink, 0);
    const uint64_t block = e->pool_block;
    SUBCASE("unwritten") { e->flags = kExtentUnwritten; }
    SUBCASE("not at file block 0") { e->file_block = 1; }
    ExpectRepaired(
        img,
        {In(t.longlink) + "symlink target of 200 bytes is not in one written block at file block 0",
         In(1) + "entry 'long' (block 0, slot 4) names inode " + to_string(t.longlink) +
             ", which is free",
         Leaked(block, block)});
  }

  TEST_CASE("Symlink: a long target marked inline clears the symlink") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.longlink)->flags = kInodeInlineData;
    const uint64_t block = img.inline_extent(t.longlink, 0)->pool_block;
    ExpectRepaired(
        img, {In(t.longlink) + "symlink target of 200 bytes is marked inline (at most 144 fit)",
              In(1) + "entry 'long' (block 0, slot 4) names inode " + to_string(t.longlink) +
                  ", which is free",
              Leaked(block, block)});
  }

  TEST_CASE("Symlink: an inline symlink loses a stray extent chain") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.shortlink)->extent_block = t.quarantined + 5;
    ExpectRepaired(img, {In(t.shortlink) + "inline symlink has an extent chain"});
  }

  TEST_CASE("Special file: size and extents are dropped") {
    Image img;
    const Tree t = BuildTree(img);
    SUBCASE("size") {
      img.inode(t.chr)->size = 5;
      ExpectRepaired(img, {In(t.chr) + "a character device with size 5"});
    }
    SUBCASE("extents") {
      const uint64_t b = img.AllocBlocks(1);
      img.AddExtent(t.fifo, 0, b, 1);
      ExpectRepaired(img, {In(t.fifo) + "a FIFO with extents", Leaked(b, b)});
      CHECK(img.inode(t.fifo)->blocks == 0);
    }
  }

  // ---------------------------------------------------------------------------
  // The root

  TEST_CASE("Root: a missing root is replaced and the tree moves to /lost+found") {
    Image img;
    const uint64_t d = img.Mkdir(1, "d");
    const uint64_t f = img.Create(1, "f", 1);
    const uint64_t root_block = img.FileBlock(1, 0);
    std::memset(img.inode(1), 0, sizeof(Inode));
    ExpectRepaired(
        img, {"inode 1: the root directory is missing (free slot)",
              In(d) + "directory is not reachable from the root (no entry names it)",
              In(f) + "nlink 1 but no directory entry names it", Leaked(root_block, root_block)});
    const DirEntryHeader* lf = img.FindEntry(1, "lost+found");
    REQUIRE(lf != nullptr);
    CHECK(img.FindEntry(lf->ino, "#" + to_string(d)) != nullptr);
    CHECK(img.FindEntry(lf->ino, "#" + to_string(f)) != nullptr);
    CHECK(img.inode(1)->nlink == 3);
    CHECK(img.inode(lf->ino)->nlink == 3);
    CHECK(img.inode(d)->parent == lf->ino);
  }

  TEST_CASE("Root: a root that is not a directory is replaced") {
    Image img;
    const uint64_t f = img.Create(1, "f");
    const uint64_t root_block = img.FileBlock(1, 0);
    img.inode(1)->mode = S_IFREG | 0644;
    ExpectRepaired(
        img, {"inode 1: the root is a regular file, not a directory",
              In(f) + "nlink 1 but no directory entry names it", Leaked(root_block, root_block)});
  }

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::testing
