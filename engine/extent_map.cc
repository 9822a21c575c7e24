#include "engine/extent_map.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string>
#include <unordered_set>

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr uint32_t kMaxExtentLength = UINT32_MAX;

Status Bad(uint64_t ino, const std::string& what) {
  return Status::Corruption("inode " + std::to_string(ino) + ": " + what);
}

}  // namespace

void ExtentMap::FreeSlots::Clear() {
  words_.clear();
  count_ = 0;
  first_ = 0;
}

void ExtentMap::FreeSlots::Add(uint32_t slot) {
  const size_t w = slot / 64;
  if (w >= words_.size()) words_.resize(w + 1, 0);
  assert(!(words_[w] & (uint64_t{1} << (slot % 64))));
  words_[w] |= uint64_t{1} << (slot % 64);
  ++count_;
  first_ = std::min(first_, w);
}

uint32_t ExtentMap::FreeSlots::Take() {
  assert(count_ > 0);
  while (words_[first_] == 0) ++first_;
  const uint32_t bit = static_cast<uint32_t>(__builtin_ctzll(words_[first_]));
  words_[first_] &= words_[first_] - 1;
  --count_;
  return static_cast<uint32_t>(first_ * 64) + bit;
}

size_t ExtentMap::FreeSlots::CountRange(uint32_t begin, uint32_t end) const {
  size_t n = 0;
  for (uint32_t s = begin; s < end && s / 64 < words_.size(); ++s)
    n += (words_[s / 64] >> (s % 64)) & 1;
  return n;
}

void ExtentMap::FreeSlots::Truncate(uint32_t begin) {
  count_ -= CountRange(begin, static_cast<uint32_t>(words_.size() * 64));
  if (begin / 64 < words_.size()) {
    words_[begin / 64] &= (uint64_t{1} << (begin % 64)) - 1;
    words_.resize(begin / 64 + 1);
  }
  first_ = std::min(first_, words_.empty() ? 0 : words_.size() - 1);
}

Extent* ExtentMap::SlotPtr(uint32_t slot) const {
  if (slot < kInlineExtents) return reinterpret_cast<Extent*>(inode_->inline_area) + slot;
  const uint32_t i = slot - kInlineExtents;
  auto* block = reinterpret_cast<ExtentBlock*>(pool_.BlockPtr(chain_[i / kExtentsPerBlock]));
  return &block->slots[i % kExtentsPerBlock];
}

Status ExtentMap::LoadSlot(uint32_t slot, const Extent& e) {
  if (e.length == 0) {
    free_.Add(slot);
    return Status::Ok();
  }
  if ((e.flags & ~kKnownExtentFlags) != 0) return Bad(ino_, "extent with unknown flags");
  if (!pool_.InData(e.pool_block, e.length))
    return Bad(ino_, "extent points outside the data area");
  if (e.file_block > (kMaxFileSize >> kBlockShift) ||
      e.length > (kMaxFileSize >> kBlockShift) - e.file_block)
    return Bad(ino_, "extent beyond the maximum file size");
  auto next = index_.lower_bound(e.file_block);
  if (next != index_.end() && next->first < e.file_block + e.length)
    return Bad(ino_, "overlapping extents");
  if (next != index_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.length > e.file_block) return Bad(ino_, "overlapping extents");
  }
  index_.emplace_hint(next, e.file_block, Rec{e.pool_block, e.length, e.flags, slot});
  mapped_ += e.length;
  return Status::Ok();
}

void ExtentMap::Reset(const PoolView& pool, uint64_t ino) {
  pool_ = pool;
  ino_ = ino;
  inode_ = pool.inode(ino);
  index_.clear();
  chain_.clear();
  free_.Clear();
  mapped_ = 0;
}

Status ExtentMap::Load(const PoolView& pool, uint64_t ino) {
  Reset(pool, ino);
  if (!(inode_->flags & kInodeInlineData)) {
    for (uint32_t s = 0; s < kInlineExtents; ++s) {
      Extent e;
      std::memcpy(&e, SlotPtr(s), sizeof(e));
      LFS_RETURN_IF_ERROR(LoadSlot(s, e));
    }
  }
  std::unordered_set<uint64_t> seen;
  for (uint64_t b = inode_->extent_block; b != 0;) {
    if (!pool.InData(b, 1)) return Bad(ino, "extent chain leaves the data area");
    if (!seen.insert(b).second) return Bad(ino, "extent chain loops");
    const auto* blk = reinterpret_cast<const ExtentBlock*>(pool.BlockPtr(b));
    if (std::memcmp(blk->header.magic, kExtentBlockMagic, 8) != 0)
      return Bad(ino, "extent block " + std::to_string(b) + " has a bad magic");
    if (blk->header.owner_ino != ino)
      return Bad(ino, "extent block " + std::to_string(b) + " belongs to another inode");
    chain_.push_back(b);
    const uint32_t base =
        kInlineExtents + (static_cast<uint32_t>(chain_.size()) - 1) * kExtentsPerBlock;
    for (uint32_t s = 0; s < kExtentsPerBlock; ++s) {
      Extent e;
      std::memcpy(&e, &blk->slots[s], sizeof(e));
      LFS_RETURN_IF_ERROR(LoadSlot(base + s, e));
    }
    b = blk->header.next_block;
  }
  return Status::Ok();
}

void ExtentMap::InitEmpty(const PoolView& pool, uint64_t ino, bool inline_slots) {
  Reset(pool, ino);
  if (inline_slots)
    for (uint32_t s = 0; s < kInlineExtents; ++s) free_.Add(s);
}

Mapping ExtentMap::ToMapping(Index::const_iterator it) {
  return Mapping{it->first, it->second.pool_block, it->second.length, it->second.flags};
}

std::optional<Mapping> ExtentMap::Find(uint64_t file_block) const {
  auto it = index_.upper_bound(file_block);
  if (it == index_.begin()) return std::nullopt;
  --it;
  if (file_block >= it->first + it->second.length) return std::nullopt;
  return ToMapping(it);
}

std::optional<Mapping> ExtentMap::NextFrom(uint64_t file_block) const {
  if (auto m = Find(file_block)) return m;
  auto it = index_.upper_bound(file_block);
  if (it == index_.end()) return std::nullopt;
  return ToMapping(it);
}

std::vector<Mapping> ExtentMap::Overlapping(uint64_t file_block, uint64_t count) const {
  std::vector<Mapping> out;
  const uint64_t end = file_block + count;
  auto it = index_.upper_bound(file_block);
  if (it != index_.begin() && std::prev(it)->first + std::prev(it)->second.length > file_block)
    --it;
  for (; it != index_.end() && it->first < end; ++it) {
    Mapping m = ToMapping(it);
    if (m.file_block < file_block) {
      const uint64_t cut = file_block - m.file_block;
      m.file_block += cut;
      m.pool_block += cut;
      m.length -= cut;
    }
    if (m.file_end() > end) m.length = end - m.file_block;
    out.push_back(m);
  }
  return out;
}

std::vector<Mapping> ExtentMap::All() const {
  std::vector<Mapping> out;
  out.reserve(index_.size());
  for (auto it = index_.begin(); it != index_.end(); ++it) out.push_back(ToMapping(it));
  return out;
}

uint64_t ExtentMap::end_block() const {
  if (index_.empty()) return 0;
  auto last = std::prev(index_.end());
  return last->first + last->second.length;
}

size_t ExtentMap::CountUnwritten(uint64_t file_block, uint64_t count) const {
  size_t n = 0;
  for (const Mapping& m : Overlapping(file_block, count)) n += m.unwritten() ? 1 : 0;
  return n;
}

uint64_t ExtentMap::ChainBlocksFor(size_t slots) const {
  if (free_.count() >= slots) return 0;
  const size_t missing = slots - free_.count();
  return (missing + kExtentsPerBlock - 1) / kExtentsPerBlock;
}

void ExtentMap::AddChainBlock(Tx& tx, uint64_t block) {
  // The block is fresh and nothing committed points at it yet, so it is
  // written in place; the link is journaled.
  auto* blk = reinterpret_cast<ExtentBlock*>(pool_.BlockPtr(block));
  std::memset(blk, 0, sizeof(*blk));
  std::memcpy(blk->header.magic, kExtentBlockMagic, 8);
  blk->header.owner_ino = ino_;
  pool_.media->Flush(blk, sizeof(*blk));
  if (chain_.empty()) {
    tx.Put(&inode_->extent_block, block);
  } else {
    auto* last = reinterpret_cast<ExtentBlock*>(pool_.BlockPtr(chain_.back()));
    tx.Put(&last->header.next_block, block);
  }
  const uint32_t base = kInlineExtents + static_cast<uint32_t>(chain_.size()) * kExtentsPerBlock;
  chain_.push_back(block);
  for (uint32_t s = 0; s < kExtentsPerBlock; ++s) free_.Add(base + s);
}

void ExtentMap::TrimChain(Tx& tx, std::vector<uint64_t>* blocks) {
  while (!chain_.empty()) {
    const uint32_t first =
        kInlineExtents + static_cast<uint32_t>(chain_.size() - 1) * kExtentsPerBlock;
    if (free_.CountRange(first, first + kExtentsPerBlock) != kExtentsPerBlock) return;
    free_.Truncate(first);
    blocks->push_back(chain_.back());
    chain_.pop_back();
    if (chain_.empty()) {
      tx.Put(&inode_->extent_block, uint64_t{0});
    } else {
      auto* last = reinterpret_cast<ExtentBlock*>(pool_.BlockPtr(chain_.back()));
      tx.Put(&last->header.next_block, uint64_t{0});
    }
  }
}

uint32_t ExtentMap::TakeSlot() { return free_.Take(); }

void ExtentMap::StageSlot(Tx& tx, uint32_t slot, uint64_t file_block, const Rec& r) {
  const Extent e{file_block, r.pool_block, static_cast<uint32_t>(r.length), r.flags};
  tx.Put(SlotPtr(slot), e);
}

void ExtentMap::StageFree(Tx& tx, uint32_t slot) {
  tx.Put(SlotPtr(slot), Extent{});
  free_.Add(slot);
}

ExtentMap::Index::iterator ExtentMap::Put(Tx& tx, uint64_t file_block, Rec r) {
  r.slot = TakeSlot();
  StageSlot(tx, r.slot, file_block, r);
  mapped_ += r.length;
  return index_.emplace(file_block, r).first;
}

ExtentMap::Index::iterator ExtentMap::Drop(Tx& tx, Index::iterator it) {
  StageFree(tx, it->second.slot);
  mapped_ -= it->second.length;
  return index_.erase(it);
}

void ExtentMap::Insert(Tx& tx, const Mapping& m) {
  assert(m.length > 0 && m.length <= kMaxExtentLength);
  auto next = index_.lower_bound(m.file_block);
  assert(next == index_.end() || next->first >= m.file_end());
  auto continues = [](uint64_t fa, const Rec& a, uint64_t fb, uint64_t pb, uint64_t len,
                      uint32_t flags) {
    return fa + a.length == fb && a.pool_block + a.length == pb && a.flags == flags &&
           a.length + len <= kMaxExtentLength;
  };
  if (next != index_.begin()) {
    auto prev = std::prev(next);
    if (continues(prev->first, prev->second, m.file_block, m.pool_block, m.length, m.flags)) {
      prev->second.length += m.length;
      mapped_ += m.length;
      // Absorb the right neighbour too if the new run bridges the gap.
      const bool bridges =
          next != index_.end() && continues(prev->first, prev->second, next->first,
                                            next->second.pool_block, next->second.length,
                                            next->second.flags);
      if (bridges) {
        prev->second.length += next->second.length;  // still mapped: mapped_ unchanged
        StageFree(tx, next->second.slot);
      }
      StageSlot(tx, prev->second.slot, prev->first, prev->second);
      if (bridges) index_.erase(next);  // last: it invalidates prev
      return;
    }
  }
  if (next != index_.end() && next->first == m.file_end() &&
      m.pool_block + m.length == next->second.pool_block && next->second.flags == m.flags &&
      next->second.length + m.length <= kMaxExtentLength) {
    Rec r = next->second;
    r.pool_block = m.pool_block;
    r.length += m.length;
    index_.erase(next);
    StageSlot(tx, r.slot, m.file_block, r);
    index_.emplace(m.file_block, r);
    mapped_ += m.length;
    return;
  }
  Put(tx, m.file_block, Rec{m.pool_block, m.length, m.flags, 0});
}

void ExtentMap::Remove(Tx& tx, uint64_t file_block, uint64_t count, std::vector<Mapping>* removed) {
  const uint64_t end = file_block + count;
  auto it = index_.upper_bound(file_block);
  if (it != index_.begin() && std::prev(it)->first + std::prev(it)->second.length > file_block)
    --it;
  while (it != index_.end() && it->first < end) {
    const uint64_t f = it->first;
    const Rec r = it->second;
    const uint64_t rend = f + r.length;
    const uint64_t cut_b = std::max(f, file_block), cut_e = std::min(rend, end);
    removed->push_back({cut_b, r.pool_block + (cut_b - f), cut_e - cut_b, r.flags});
    if (cut_b == f && cut_e == rend) {  // the whole extent goes
      it = Drop(tx, it);
      continue;
    }
    mapped_ -= cut_e - cut_b;
    const Rec tail{r.pool_block + (cut_e - f), rend - cut_e, r.flags, r.slot};
    if (cut_b == f) {  // the head goes: the tail keeps the slot under a new key
      index_.erase(it);
      StageSlot(tx, tail.slot, cut_e, tail);
      index_.emplace(cut_e, tail);
      return;  // the cut ended inside this extent
    }
    it->second.length = cut_b - f;  // the head stays
    StageSlot(tx, r.slot, f, it->second);
    if (cut_e < rend) {        // a cut in the middle: the tail needs a slot of its own
      mapped_ -= tail.length;  // Put counts it again
      Put(tx, cut_e, tail);
      return;
    }
    ++it;
  }
}

void ExtentMap::MarkWritten(Tx& tx, uint64_t file_block, uint64_t count) {
  for (const Mapping& m : Overlapping(file_block, count)) {
    if (!m.unwritten()) continue;
    std::vector<Mapping> out;
    Remove(tx, m.file_block, m.length, &out);
    Mapping w = m;
    w.flags &= ~kExtentUnwritten;
    Insert(tx, w);
  }
}

}  // namespace leasefs::engine
