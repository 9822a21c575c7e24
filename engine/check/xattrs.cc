// Phase "inodes", extended attributes: an inode's single xattr block (the
// older format) or its chain of xattr leaves, their entries and the value
// blocks those name (docs/pool_format.md "Extended attributes").
//
// Leaves and value blocks are claimed like other metadata, so a block two
// entries (or an entry and anything else) name is caught. A bad leaf cuts
// the chain there; a bad entry is cleared; a value whose bytes fail their
// checksum is cleared too (the daemon answers EIO for it).
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "engine/acl.h"
#include "engine/check/checker.h"
#include "engine/check/util.h"
#include "engine/superblock.h"

namespace leasefs::check::internal {

using namespace layout;

namespace {

uint64_t BlocksFor(uint64_t bytes) { return (bytes + kBlockSize - 1) / kBlockSize; }

// What is wrong with the shape of leaf entry `e` at `slot` ("" if nothing).
std::string LeafEntryProblem(const XattrLeafEntry& e, uint32_t slot) {
  const bool remote = e.flags & kXattrRemote;
  if (e.flags & ~kKnownXattrFlags) return "has unknown flags " + Hex(e.flags);
  if (e.name_len == 0) return "has an empty name";
  if (e.value_len > kXattrMaxValue)
    return "has a value of " + std::to_string(e.value_len) + " bytes (at most 65536)";
  const uint32_t bytes = remote ? XattrRemoteBytes(e.name_len, e.run_count)
                                : XattrInlineBytes(e.name_len, e.value_len);
  if (remote && (e.run_count == 0 || e.run_count > kXattrMaxRuns || e.value_len == 0))
    return "has " + std::to_string(e.run_count) + " value runs for " +
           std::to_string(e.value_len) + " bytes";
  if (!remote && (e.run_count != 0 || bytes > kXattrInlineMax))
    return "holds an inline value too big for an entry";
  if (e.slot_count != XattrSlots(bytes))
    return "spans " + std::to_string(e.slot_count) + " slots but needs " +
           std::to_string(XattrSlots(bytes));
  if (slot + e.slot_count > kXattrSlotsPerLeaf) return "runs past the end of its leaf";
  return "";
}

}  // namespace

void Checker::CheckXattr(InodeScan& s) {
  const uint64_t block = s.in.xattr_block;
  if (block == 0) return;
  if (InData(block, 1) && std::memcmp(BlockPtr(block), kXattrLeafMagic, 8) == 0) {
    CheckXattrLeaves(s);
    return;
  }
  std::string why = XattrProblem(s.ino, block);
  if (why.empty() && !blocks_->Claim(block)) why = "is already in use by other metadata";
  if (!why.empty()) {
    Problem(InodeWhere(s.ino), "xattr block " + std::to_string(block) + " " + why,
            "dropped it; the extended attributes are lost", true);
    s.in.xattr_block = 0;
    writer_->Put(&s.at->xattr_block, uint64_t{0});
    return;
  }
  s.meta.push_back({block, Offset(&s.at->xattr_block), 1, RefKind::kXattr});
}

// The single xattr block of the older format.
std::string Checker::XattrProblem(uint64_t ino, uint64_t block) const {
  if (!InData(block, 1)) return "lies outside the data area";
  const char* p = BlockPtr(block);
  XattrBlockHeader h;
  std::memcpy(&h, p, sizeof(h));
  if (std::memcmp(h.magic, kXattrBlockMagic, sizeof(h.magic)) != 0) return "has a bad magic";
  if (h.owner_ino != ino) return "belongs to inode " + std::to_string(h.owner_ino);
  if (h.used_bytes > kXattrSpace)
    return "claims " + std::to_string(h.used_bytes) + " bytes of entries (at most 4064 fit)";
  const char* entries = p + sizeof(h);
  std::unordered_set<std::string_view> names;
  uint32_t off = 0, count = 0;
  while (off < h.used_bytes) {
    const std::string at = "at byte " + std::to_string(off);
    if (h.used_bytes - off < sizeof(XattrEntryHeader)) return "has a truncated entry " + at;
    XattrEntryHeader e;
    std::memcpy(&e, entries + off, sizeof(e));
    const uint32_t len = (sizeof(e) + e.name_len + e.value_len + 3u) & ~3u;
    if (e.name_len == 0) return "has an entry with an empty name " + at;
    if (len > h.used_bytes - off) return "has an entry " + at + " running past its used bytes";
    const std::string_view name(entries + off + sizeof(e), e.name_len);
    if (name.find('\0') != std::string_view::npos) return "has a name containing NUL " + at;
    if (!names.insert(name).second) return "has two attributes named " + Quote(name);
    const std::string_view value(entries + off + sizeof(e) + e.name_len, e.value_len);
    if (std::string acl = AclProblem(info_[ino].type, name, value); !acl.empty())
      return acl + " " + at;
    off += len;
    ++count;
  }
  if (count != h.entry_count)
    return "holds " + std::to_string(count) + " entries but says " + std::to_string(h.entry_count);
  return "";
}

std::string Checker::XattrLeafProblem(uint64_t ino, uint64_t leaf) const {
  if (!InData(leaf, 1)) return "lies outside the data area";
  XattrLeafHeader h;
  std::memcpy(&h, BlockPtr(leaf), sizeof(h));
  if (std::memcmp(h.magic, kXattrLeafMagic, sizeof(h.magic)) != 0) return "has a bad magic";
  if (h.owner_ino != ino) return "belongs to inode " + std::to_string(h.owner_ino);
  if (blocks_->claimed(leaf)) return "appears twice (the chain loops) or is other metadata";
  return "";
}

// Follows the chain from inode.xattr_block, claiming each leaf and checking
// its entries; cuts it at the first bad link.
void Checker::CheckXattrLeaves(InodeScan& s) {
  NeedIncompat(kIncompatXattrLeaves, "xattr leaves");
  std::unordered_set<std::string> names;
  uint64_t link = s.in.xattr_block;
  uint64_t link_loc = Offset(&s.at->xattr_block);
  while (link != 0) {
    const std::string why = XattrLeafProblem(s.ino, link);
    if (!why.empty()) {
      Problem(InodeWhere(s.ino), "xattr leaf " + std::to_string(link) + " " + why,
              "cut the chain there; the attributes beyond it are lost", true);
      writer_->Put(reinterpret_cast<uint64_t*>(Ptr(link_loc)), uint64_t{0});
      if (link_loc == Offset(&s.at->xattr_block)) s.in.xattr_block = 0;
      return;
    }
    blocks_->Claim(link);
    s.meta.push_back({link, link_loc, 1, RefKind::kXattr});
    for (uint32_t slot = 1; slot < kXattrSlotsPerLeaf;)
      slot += CheckXattrEntry(s, link, slot, &names);
    link_loc = Offset(BlockPtr(link) + offsetof(XattrLeafHeader, next_block));
    link = Read<uint64_t>(link_loc);
  }
}

// Checks the entry that may start at `slot` of `leaf`; returns the slots to
// move on by.
uint32_t Checker::CheckXattrEntry(InodeScan& s, uint64_t leaf, uint32_t slot,
                                  std::unordered_set<std::string>* names) {
  char* p = BlockPtr(leaf) + slot * kXattrSlotSize;
  XattrLeafEntry e;
  std::memcpy(&e, p, sizeof(e));
  if (e.slot_count == 0) return 1;
  const std::string where = "xattr leaf " + std::to_string(leaf) + " slot " + std::to_string(slot);
  // The slots a cleared entry gives up: its span when its slot_count agrees
  // with its name, value and runs and stays in the leaf; else only its first
  // slot, since a damaged count says nothing about where the next entry
  // starts. The slots after it are then checked one by one (the bad entry's
  // own bytes fail as entries of their own), and the good entries after it
  // are kept: one damaged byte must not cost the rest of the leaf.
  uint32_t span = 1;
  {
    const uint32_t bytes = (e.flags & kXattrRemote) ? XattrRemoteBytes(e.name_len, e.run_count)
                                                    : XattrInlineBytes(e.name_len, e.value_len);
    if (e.slot_count == XattrSlots(bytes) && slot + e.slot_count <= kXattrSlotsPerLeaf)
      span = e.slot_count;
  }
  auto clear = [&](const std::string& what) {
    Problem(InodeWhere(s.ino), where + " " + what, "cleared the entry; that attribute is lost",
            true);
    writer_->Zero(p, span * kXattrSlotSize);
    return span;
  };
  if (std::string why = LeafEntryProblem(e, slot); !why.empty()) return clear(why);
  const std::string name(p + sizeof(e), e.name_len);
  if (name.find('\0') != std::string::npos) return clear("has a name containing NUL");
  if (names->count(name)) return clear("holds a second attribute named " + Quote(name));
  // The mode's group bits are an access ACL's mask (docs/acl.md): with the
  // list gone they would go to the owning group, which the list may have
  // given less. So they go too, and the repair grants nobody more than the
  // daemon does with the damaged list (nothing beyond the owner's bits).
  auto clear_named = [&](const std::string& what) {
    const uint32_t n = clear(what);
    if (name == engine::acl::kAccessXattr && (s.in.mode & S_IRWXG) != 0) {
      const uint32_t mode = s.in.mode & ~uint32_t{S_IRWXG};
      Problem(InodeWhere(s.ino),
              "mode " + Octal(s.in.mode) + " holds the mask of the access ACL cleared above",
              "cleared the group bits (mode " + Octal(mode) + "); the owner may grant them again",
              true);
      s.in.mode = mode;
      writer_->Put(&s.at->mode, s.in.mode);
    }
    return n;
  };
  std::vector<XattrRun> runs(e.run_count);
  if (!runs.empty()) std::memcpy(runs.data(), p + XattrRemoteBytes(e.name_len, 0), runs.size() * sizeof(XattrRun));
  if (std::string why = XattrRunsProblem(runs, e.value_len); !why.empty())
    return clear_named(Quote(name) + " " + why);
  const std::string value = XattrValueOf(e, p, runs);
  if (XXH64(value.data(), value.size(), 0) != e.value_xxh64)
    return clear_named(Quote(name) + " fails its value checksum");
  if (std::string why = AclProblem(info_[s.ino].type, name, value); !why.empty())
    return clear_named(why);
  if (!ClaimRuns(runs)) return clear_named(Quote(name) + " names value blocks other metadata uses");
  for (size_t i = 0; i < runs.size(); ++i) {
    const uint64_t loc = Offset(p + XattrRemoteBytes(e.name_len, 0) + i * sizeof(XattrRun));
    s.meta.push_back({runs[i].pool_block, loc, runs[i].length, RefKind::kXattr});
  }
  names->insert(name);
  return span;
}

std::string Checker::XattrRunsProblem(const std::vector<XattrRun>& runs, uint32_t value_len) const {
  uint64_t blocks = 0;
  for (const XattrRun& r : runs) {
    if (r.length == 0 || !InData(r.pool_block, r.length))
      return "has a value run {block " + std::to_string(r.pool_block) + ", length " +
             std::to_string(r.length) + "} outside the data area";
    blocks += r.length;
  }
  if (blocks != BlocksFor(runs.empty() ? 0 : value_len))
    return "has value runs of " + std::to_string(blocks) + " blocks for " +
           std::to_string(value_len) + " bytes";
  return "";
}

// The value's bytes: inline after the name, or in the runs' blocks.
std::string Checker::XattrValueOf(const XattrLeafEntry& e, const char* entry,
                                  const std::vector<XattrRun>& runs) const {
  std::string value;
  if (runs.empty()) {
    value.assign(entry + sizeof(e) + e.name_len, e.value_len);
  } else {
    for (const XattrRun& r : runs) {
      const uint64_t n =
          std::min<uint64_t>(e.value_len - value.size(), r.length * uint64_t{kBlockSize});
      value.append(BlockPtr(r.pool_block), n);
    }
  }
  return value;
}

// Claims every value block, or none (returns false if another claim holds
// one of them).
bool Checker::ClaimRuns(const std::vector<XattrRun>& runs) {
  std::vector<uint64_t> got;
  for (const XattrRun& r : runs) {
    for (uint64_t b = r.pool_block; b < r.pool_block + r.length; ++b) {
      if (blocks_->Claim(b)) {
        got.push_back(b);
        continue;
      }
      for (uint64_t g : got) blocks_->Unclaim(g);
      return false;
    }
  }
  return true;
}

// A structure only a pool with feature bit `bit` may hold: the superblock
// must carry it (the engine sets it before it links the first one).
void Checker::NeedIncompat(uint64_t bit, const char* what) {
  if ((sb_.feature_incompat & bit) == bit) return;
  Problem("superblock", std::string("the pool holds ") + what + " but lacks their feature bit",
          "set it");
  sb_ = engine::WithFeatures(sb_, 0, bit);
  if (opts_.repair) {
    engine::WriteSuperblockCopy(media_, kBackupSuperBlock, sb_);
    engine::WriteSuperblockCopy(media_, kSuperBlock, sb_);
  }
}

}  // namespace leasefs::check::internal
