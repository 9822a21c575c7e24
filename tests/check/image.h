// Image: builds small leasefs pools for the checker tests by writing the
// layout.h structs directly, the way a correct engine would leave them, so
// that a test can then break exactly one thing.
//
// Every builder call keeps the pool consistent (reference counts, link counts,
// blocks, sizes), except the raw ones documented as such.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "engine/check/check.h"
#include "engine/format.h"
#include "engine/layout.h"
#include "engine/sim_media.h"

namespace doctest {
// Prints expected and actual finding lists one per line on a mismatch.
template <>
struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& v) {
    std::string s = "\n";
    for (const std::string& line : v) s += "    " + line + "\n";
    return String(s.c_str());
  }
};
}  // namespace doctest

namespace leasefs::testing {

class Image {
 public:
  // A freshly formatted in-memory pool of `bytes` (formatted with `fo`).
  explicit Image(size_t bytes = 8 << 20);
  Image(size_t bytes, const engine::FormatOptions& fo);
  // A pool holding `bytes` (e.g. a crash image), as volatile and durable
  // contents alike. REQUIRES: its superblock is valid.
  static Image Load(const std::vector<char>& bytes);

  engine::SimMedia& media() { return *media_; }
  const layout::Superblock& sb() const { return sb_; }
  char* base() { return media_->base(); }
  layout::Superblock* super(uint64_t copy = 0);
  layout::Inode* inode(uint64_t ino);
  char* block(uint64_t pool_block);
  uint32_t* refcount(uint64_t pool_block);
  layout::QuarantineRecord* quarantine(uint64_t index);
  layout::Extent* inline_extent(uint64_t ino, uint32_t slot);
  // The pool offset of `p`, which points into the pool.
  uint64_t offset(const void* p) const;

  // Unused data blocks, contiguous; their refcounts are left alone. The
  // refcount mark rises over them as the engine would raise it.
  uint64_t AllocBlocks(uint32_t count = 1);
  // An allocated inode of `mode`, nlink 0, no entry (raw). The inode mark
  // rises over it as the engine would raise it.
  uint64_t NewInode(uint32_t mode);
  // Stores `inodes` and `refcount_blocks` as the marks in both superblock
  // copies, valid words whatever they say (raw).
  void SetMarks(uint64_t inodes, uint64_t refcount_blocks);

  uint64_t Mkdir(uint64_t parent, const std::string& name);
  // A regular file; with `blocks`, one extent of that many fresh blocks at
  // file block 0 and size blocks * 4096.
  uint64_t Create(uint64_t parent, const std::string& name, uint32_t blocks = 0);
  uint64_t Symlink(uint64_t parent, const std::string& name, const std::string& target);
  uint64_t Mknod(uint64_t parent, const std::string& name, uint32_t mode);
  // Another name for non-directory `ino`; nlink + 1.
  void Link(uint64_t dir, const std::string& name, uint64_t ino);

  // Adds an entry without touching any link count (raw); grows the directory
  // by a block when no slot run is free. Returns the entry's pool offset.
  uint64_t AddEntry(uint64_t dir, const std::string& name, uint64_t ino, uint8_t type);
  // The entry `name` in `dir`, or null.
  layout::DirEntryHeader* FindEntry(uint64_t dir, const std::string& name);
  // Pool block of file block `index` of `ino`, or 0.
  uint64_t FileBlock(uint64_t ino, uint64_t index);

  // Maps [file_block, +length) to [pool_block, +length) in a free inline slot,
  // else in the extent chain (growing it); blocks += length and each block's
  // refcount + 1.
  layout::Extent* AddExtent(uint64_t ino, uint64_t file_block, uint64_t pool_block, uint32_t length,
                            uint32_t flags = 0);
  // Appends an empty extent block to the chain of `ino` (refcount 1).
  uint64_t AddChainBlock(uint64_t ino);
  // Gives `ino` an xattr block holding `attrs` (refcount 1).
  uint64_t SetXattrs(uint64_t ino, const std::vector<std::pair<std::string, std::string>>& attrs);
  // A reach record over [pool_block, +length) (map id `map_id`, owner pid
  // 7); every block of it that is free (refcount 0) becomes quarantined
  // (refcount 1), as when its file let go of it.
  uint32_t AddQuarantine(uint64_t pool_block, uint32_t length, uint64_t map_id = 1);

  // Commits `tx` to the journal up to the commit point only, as a crash right
  // after it would leave it: nothing is applied.
  void CommitWithoutApplying(const std::vector<std::pair<uint64_t, std::vector<char>>>& copies);

  std::vector<char> Snapshot() const { return media_->Snapshot(); }

 private:
  explicit Image(std::unique_ptr<engine::SimMedia> media);

  std::unique_ptr<engine::SimMedia> media_;
  layout::Superblock sb_{};
  uint64_t next_block_;
  uint64_t next_ino_ = 2;
};

// A consistent tree that uses every kind of structure:
//   /dir/file (3 blocks, 2 xattrs, also named /hard), /dir/sub/deep,
//   /short and /long (symlinks, inline and in a block), /fifo, /chr,
//   /frag (10 one-block extents, so an extent chain, and an unwritten one),
//   /clone (reflink of /dir/file's blocks), /big (70 files with two-slot
//   names: 3 directory blocks), and a quarantine entry over 2 free blocks.
struct Tree {
  uint64_t dir, file, sub, deep, shortlink, longlink, fifo, chr, frag, clone, big;
  uint64_t chain;        // the extent block of /frag
  uint64_t xattr;        // the xattr block of /dir/file
  uint64_t quarantined;  // first of the 2 quarantined blocks
};
Tree BuildTree(Image& img);

// Runs the checker. REQUIRES: it returns a report.
check::CheckReport Check(Image& img, bool repair = false, bool preen = false);
// The report's findings that are not notes, as "where: what".
std::vector<std::string> Problems(const check::CheckReport& r);
// The report's notes, as "where: what".
std::vector<std::string> Notes(const check::CheckReport& r);

// Expects a check of `img` to report exactly `problems` (as "where: what") as
// errors and write nothing; a repair to fix exactly those; and a check after
// it to find the pool clean.
void ExpectRepaired(Image& img, const std::vector<std::string>& problems);

}  // namespace leasefs::testing
