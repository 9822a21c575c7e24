#include "engine/directory.h"

#include <dirent.h>

#include <cassert>
#include <cstring>

namespace leasefs::engine {

using namespace layout;

namespace {

Status Bad(uint64_t ino, const std::string& what) {
  return Status::Corruption("directory " + std::to_string(ino) + ": " + what);
}

bool KnownType(unsigned t) {
  switch (t) {
    case DT_REG:
    case DT_DIR:
    case DT_LNK:
    case DT_CHR:
    case DT_BLK:
    case DT_FIFO:
    case DT_SOCK:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxName || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

char* Directory::SlotPtr(DirPos p) const {
  return pool_.BlockPtr(pool_blocks_[p.block]) + p.slot * kDirSlotSize;
}

Status Directory::Load(const PoolView& pool, uint64_t ino, const ExtentMap& extents) {
  pool_ = pool;
  ino_ = ino;
  names_.clear();
  blocks_.clear();
  pool_blocks_.clear();
  nonfull_.clear();
  const Inode* inode = pool.inode(ino);
  const uint64_t nblocks = inode->size / kBlockSize;
  if (inode->size % kBlockSize != 0) return Bad(ino, "size is not a whole number of blocks");
  if (extents.mapped_blocks() != nblocks || extents.end_block() != nblocks)
    return Bad(ino, "blocks do not match its size");
  if (nblocks > UINT32_MAX / kDirSlotsPerBlock) return Bad(ino, "too many blocks");
  for (const Mapping& m : extents.All()) {
    if (m.unwritten()) return Bad(ino, "unwritten directory block");
    for (uint64_t i = 0; i < m.length; ++i) pool_blocks_.push_back(m.pool_block + i);
  }
  blocks_.resize(nblocks);
  // The entries are gathered first so that the index is sized once: grown
  // one entry at a time it rehashed ~20 times on the way to 300,000 names,
  // each time walking every node, and such a directory's mount took 13 %
  // longer (docs/scaling.md, "What must stay fast").
  std::vector<Listed> found;
  for (uint32_t b = 0; b < nblocks; ++b) LFS_RETURN_IF_ERROR(LoadBlock(b, &found));
  names_.reserve(found.size());
  for (const Listed& e : found) {
    if (!names_.emplace(std::string(e.name), Entry{e.ino, e.type, e.pos}).second)
      return Bad(ino, "duplicate name '" + std::string(e.name) + "'");
  }
  return Status::Ok();
}

void Directory::InitEmpty(const PoolView& pool, uint64_t ino) {
  pool_ = pool;
  ino_ = ino;
}

Status Directory::LoadBlock(uint32_t index, std::vector<Listed>* found) {
  const char* block = pool_.BlockPtr(pool_blocks_[index]);
  DirBlockHeader h;
  std::memcpy(&h, block, sizeof(h));
  const std::string where = "block " + std::to_string(index);
  if (std::memcmp(h.magic, kDirBlockMagic, 8) != 0) return Bad(ino_, where + " has a bad magic");
  if (h.owner_ino != ino_ || h.block_index != index) return Bad(ino_, where + " belongs elsewhere");
  for (uint32_t s = 1; s < kDirSlotsPerBlock;) {
    DirEntryHeader e;
    std::memcpy(&e, block + s * kDirSlotSize, sizeof(e));
    if (e.ino == 0) {
      ++s;
      continue;
    }
    const std::string_view name(block + s * kDirSlotSize + sizeof(e), e.name_len);
    if (e.slot_count != DirEntrySlots(e.name_len) || s + e.slot_count > kDirSlotsPerBlock ||
        !ValidName(name) || !KnownType(e.type) || e.ino >= pool_.sb->inode_count)
      return Bad(ino_, where + " slot " + std::to_string(s) + " holds a malformed entry");
    const DirPos pos{index, s};
    found->push_back({name, e.ino, e.type, pos});
    MarkUsed(pos, e.slot_count, true);
    s += e.slot_count;
  }
  if (blocks_[index].used != kAllSlots) nonfull_.insert(index);
  return Status::Ok();
}

void Directory::MarkUsed(DirPos p, uint32_t slots, bool used) {
  SlotBits& b = blocks_[p.block];
  const uint64_t mask = SlotMask(p.slot, slots);
  if (used) {
    b.used |= mask;
    b.starts |= uint64_t{1} << p.slot;
    if (b.used == kAllSlots) nonfull_.erase(p.block);
  } else {
    b.used &= ~mask;
    b.starts &= ~(uint64_t{1} << p.slot);
    nonfull_.insert(p.block);
  }
}

std::optional<Directory::Entry> Directory::Find(std::string_view name) const {
  auto it = names_.find(name);
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

Directory::Spot Directory::FindSpot(size_t name_len) const {
  const uint32_t k = DirEntrySlots(static_cast<uint32_t>(name_len));
  // Look at a few blocks with room, not all of them: a directory full of
  // one-slot holes must not make every create scan it.
  int tries = 0;
  for (uint32_t b : nonfull_) {
    if (++tries > 8) break;
    const uint64_t runs = RunStarts(blocks_[b].used, k);
    if (runs) return Spot{{b, static_cast<uint32_t>(__builtin_ctzll(runs))}, false};
  }
  return Spot{{block_count(), 1}, true};
}

void Directory::AddBlock(uint64_t pool_block) {
  char* block = pool_.BlockPtr(pool_block);
  std::memset(block, 0, kBlockSize);
  DirBlockHeader h{};
  std::memcpy(h.magic, kDirBlockMagic, 8);
  h.owner_ino = ino_;
  h.block_index = block_count();
  std::memcpy(block, &h, sizeof(h));
  pool_.media->Flush(block, kBlockSize);
  nonfull_.insert(block_count());
  blocks_.push_back(SlotBits{});
  pool_blocks_.push_back(pool_block);
}

void Directory::Insert(Tx& tx, const Spot& spot, std::string_view name, uint64_t ino,
                       unsigned type) {
  assert(!spot.new_block || spot.pos.block < block_count());
  const uint32_t k = DirEntrySlots(static_cast<uint32_t>(name.size()));
  char buf[5 * kDirSlotSize] = {};
  DirEntryHeader h{};
  h.ino = ino;
  h.slot_count = static_cast<uint8_t>(k);
  h.type = static_cast<uint8_t>(type);
  h.name_len = static_cast<uint8_t>(name.size());
  std::memcpy(buf, &h, sizeof(h));
  std::memcpy(buf + sizeof(h), name.data(), name.size());
  tx.Copy(SlotPtr(spot.pos), buf, sizeof(h) + name.size());
  MarkUsed(spot.pos, k, true);
  names_.emplace(std::string(name), Entry{ino, type, spot.pos});
}

void Directory::Remove(Tx& tx, std::string_view name) {
  auto it = names_.find(name);
  assert(it != names_.end());
  const DirPos pos = it->second.pos;
  const uint32_t k = DirEntrySlots(static_cast<uint32_t>(name.size()));
  static const char kZero[5 * kDirSlotSize] = {};
  tx.Copy(SlotPtr(pos), kZero, k * kDirSlotSize);
  MarkUsed(pos, k, false);
  names_.erase(it);
}

void Directory::Retarget(Tx& tx, std::string_view name, uint64_t ino, unsigned type) {
  auto it = names_.find(name);
  assert(it != names_.end());
  auto* h = reinterpret_cast<DirEntryHeader*>(SlotPtr(it->second.pos));
  tx.Put(&h->ino, ino);
  tx.Put(&h->type, static_cast<uint8_t>(type));
  it->second.ino = ino;
  it->second.type = type;
}

std::optional<Directory::Listed> Directory::Next(DirPos from) const {
  for (uint32_t b = from.block; b < block_count(); ++b) {
    uint64_t starts = blocks_[b].starts;
    if (b == from.block) starts &= from.slot >= 64 ? 0 : (kAllSlots << from.slot);
    if (!starts) continue;
    const DirPos pos{b, static_cast<uint32_t>(__builtin_ctzll(starts))};
    const char* slot = SlotPtr(pos);
    DirEntryHeader h;
    std::memcpy(&h, slot, sizeof(h));
    return Listed{std::string_view(slot + sizeof(h), h.name_len), h.ino, h.type, pos};
  }
  return std::nullopt;
}

}  // namespace leasefs::engine
