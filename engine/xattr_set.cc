#include "engine/xattr_set.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <unordered_set>

namespace leasefs::engine {

using namespace layout;

namespace {

uint64_t BlocksFor(uint64_t bytes) { return (bytes + kBlockSize - 1) / kBlockSize; }

// Bytes of an entry of the single block (header, name, value, padding).
uint32_t SingleEntryBytes(uint32_t name_len, uint32_t value_len) {
  return (static_cast<uint32_t>(sizeof(XattrEntryHeader)) + name_len + value_len + 3) & ~3u;
}

std::string Quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

}  // namespace

// ---------------------------------------------------------------------------
// Loading

Status XattrSet::Load(const PoolView& pool, uint64_t ino, uint64_t block) {
  InitEmpty(pool, ino);
  if (!pool_.InData(block, 1))
    return Status::Corruption("inode " + std::to_string(ino) + ": xattr block " +
                              std::to_string(block) + " lies outside the data area");
  const char* p = pool_.BlockPtr(block);
  if (std::memcmp(p, kXattrBlockMagic, 8) == 0) return LoadSingle(block);
  if (std::memcmp(p, kXattrLeafMagic, 8) == 0) return LoadChain(block);
  return Status::Corruption("inode " + std::to_string(ino) + ": xattr block " +
                            std::to_string(block) + " has a bad magic");
}

void XattrSet::InitEmpty(const PoolView& pool, uint64_t ino) {
  pool_ = pool;
  ino_ = ino;
  single_ = 0;
  names_.clear();
  chain_.clear();
  leaves_.clear();
  nonfull_.clear();
}

Status XattrSet::LoadSingle(uint64_t block) {
  const std::string where =
      "inode " + std::to_string(ino_) + ": xattr block " + std::to_string(block);
  const char* p = pool_.BlockPtr(block);
  XattrBlockHeader h;
  std::memcpy(&h, p, sizeof(h));
  if (h.owner_ino != ino_) return Status::Corruption(where + " belongs to another inode");
  if (h.used_bytes > kXattrSpace) return Status::Corruption(where + " overruns its block");
  single_ = block;
  uint32_t off = 0, count = 0;
  while (off < h.used_bytes) {
    XattrEntryHeader e;
    if (h.used_bytes - off < sizeof(e)) return Status::Corruption(where + " has a cut entry");
    std::memcpy(&e, p + sizeof(h) + off, sizeof(e));
    const uint32_t bytes = SingleEntryBytes(e.name_len, e.value_len);
    if (e.name_len == 0 || bytes > h.used_bytes - off)
      return Status::Corruption(where + " holds a malformed entry at byte " + std::to_string(off));
    const std::string_view name(p + sizeof(h) + off + sizeof(e), e.name_len);
    if (name.find('\0') != std::string_view::npos)
      return Status::Corruption(where + " holds a name with a NUL");
    Entry entry;
    entry.block = block;
    entry.pos = static_cast<uint32_t>(sizeof(h)) + off;
    entry.value_len = e.value_len;
    if (!names_.emplace(std::string(name), std::move(entry)).second)
      return Status::Corruption(where + " holds " + Quoted(name) + " twice");
    off += bytes;
    ++count;
  }
  if (count != h.entry_count) return Status::Corruption(where + " miscounts its entries");
  return Status::Ok();
}

Status XattrSet::LoadChain(uint64_t block) {
  std::unordered_set<uint64_t> seen;
  for (uint64_t leaf = block; leaf != 0;) {
    const std::string where =
        "inode " + std::to_string(ino_) + ": xattr leaf " + std::to_string(leaf);
    if (!pool_.InData(leaf, 1)) return Status::Corruption(where + " lies outside the data area");
    if (!seen.insert(leaf).second) return Status::Corruption(where + " appears twice (a loop)");
    XattrLeafHeader h;
    std::memcpy(&h, pool_.BlockPtr(leaf), sizeof(h));
    if (std::memcmp(h.magic, kXattrLeafMagic, 8) != 0)
      return Status::Corruption(where + " has a bad magic");
    if (h.owner_ino != ino_) return Status::Corruption(where + " belongs to another inode");
    chain_.push_back(leaf);
    leaves_[leaf] = SlotBits{};
    LFS_RETURN_IF_ERROR(LoadLeaf(leaf));
    leaf = h.next_block;
  }
  return Status::Ok();
}

Status XattrSet::LoadLeaf(uint64_t leaf) {
  for (uint32_t s = 1; s < kXattrSlotsPerLeaf;) {
    uint32_t slots = 0;
    LFS_RETURN_IF_ERROR(LoadEntry(leaf, s, &slots));
    s += slots == 0 ? 1 : slots;
  }
  if (leaves_[leaf].used != kAllSlots) nonfull_.insert(leaf);
  return Status::Ok();
}

// Validates the entry at `slot` of `leaf` (if one starts there) and indexes
// it; *slots is the slots it spans (0 for a free slot).
Status XattrSet::LoadEntry(uint64_t leaf, uint32_t slot, uint32_t* slots) {
  const char* p = pool_.BlockPtr(leaf) + slot * kXattrSlotSize;
  XattrLeafEntry e;
  std::memcpy(&e, p, sizeof(e));
  *slots = e.slot_count;
  if (e.slot_count == 0) return Status::Ok();
  const std::string where = "inode " + std::to_string(ino_) + ": xattr leaf " +
                            std::to_string(leaf) + " slot " + std::to_string(slot);
  const bool remote = e.flags & kXattrRemote;
  const uint32_t bytes = remote ? XattrRemoteBytes(e.name_len, e.run_count)
                                : XattrInlineBytes(e.name_len, e.value_len);
  const bool shape_ok =
      e.name_len != 0 && (e.flags & ~kKnownXattrFlags) == 0 && e.value_len <= kXattrMaxValue &&
      slot + e.slot_count <= kXattrSlotsPerLeaf && e.slot_count == XattrSlots(bytes) &&
      (remote ? e.run_count >= 1 && e.run_count <= kXattrMaxRuns && e.value_len > 0
              : e.run_count == 0 && bytes <= kXattrInlineMax);
  if (!shape_ok) return Status::Corruption(where + " holds a malformed entry");
  const std::string_view name(p + sizeof(e), e.name_len);
  if (name.find('\0') != std::string_view::npos)
    return Status::Corruption(where + " holds a name with a NUL");
  Entry entry;
  entry.block = leaf;
  entry.pos = slot;
  entry.slots = e.slot_count;
  entry.value_len = e.value_len;
  if (remote) {
    const char* runs = p + XattrRemoteBytes(e.name_len, 0);
    uint64_t blocks = 0;
    for (uint32_t i = 0; i < e.run_count; ++i) {
      XattrRun r;
      std::memcpy(&r, runs + i * sizeof(r), sizeof(r));
      if (!pool_.InData(r.pool_block, r.length))
        return Status::Corruption(where + ": a value run lies outside the data area");
      entry.runs.push_back({r.pool_block, r.length});
      blocks += r.length;
    }
    if (blocks != BlocksFor(e.value_len))
      return Status::Corruption(where + ": the value runs do not match its length");
  }
  if (!names_.emplace(std::string(name), std::move(entry)).second)
    return Status::Corruption("inode " + std::to_string(ino_) + ": xattr " + Quoted(name) +
                              " appears twice");
  MarkUsed(leaf, slot, e.slot_count, true);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Reading

const XattrSet::Entry* XattrSet::Find(std::string_view name) const {
  auto it = names_.find(name);
  return it == names_.end() ? nullptr : &it->second;
}

void XattrSet::ForEachBlock(const std::function<void(BlockRange)>& f) const {
  if (single_) f({single_, 1});
  for (uint64_t leaf : chain_) f({leaf, 1});
  for (const auto& [name, e] : names_)
    for (const BlockRange& r : e.runs) f(r);
}

void XattrSet::ForEachName(const std::function<bool(std::string_view)>& f) const {
  std::unordered_map<uint64_t, size_t> index;
  for (size_t i = 0; i < chain_.size(); ++i) index[chain_[i]] = i;
  std::vector<std::pair<std::pair<size_t, uint32_t>, const std::string*>> order;
  order.reserve(names_.size());
  for (const auto& [name, e] : names_)
    order.push_back({{single_ ? 0 : index[e.block], e.pos}, &name});
  std::sort(order.begin(), order.end());
  for (const auto& o : order)
    if (!f(*o.second)) return;
}

Status XattrSet::Damaged(std::string_view name, const std::string& what) const {
  return Status::Error(EIO, "inode " + std::to_string(ino_) + ": xattr " + Quoted(name) + " " +
                                what + " (the pool was changed behind the daemon's back)");
}

Result<std::string> XattrSet::ReadValue(std::string_view name, const Entry& e) const {
  return single_ ? ReadSingleValue(name, e) : ReadLeafValue(name, e);
}

Result<std::string> XattrSet::ReadSingleValue(std::string_view name, const Entry& e) const {
  const char* p = pool_.BlockPtr(e.block) + e.pos;
  XattrEntryHeader h;
  std::memcpy(&h, p, sizeof(h));
  // The index bounds the entry (validated at mount); the bytes must agree.
  if (h.name_len != name.size() || h.value_len != e.value_len ||
      std::memcmp(p + sizeof(h), name.data(), name.size()) != 0)
    return Damaged(name, "no longer matches its entry");
  return std::string(p + sizeof(h) + name.size(), e.value_len);
}

Result<std::string> XattrSet::ReadLeafValue(std::string_view name, const Entry& e) const {
  // One copy of the entry's bytes (the index bounds them), checked; then the
  // value, copied before it is hashed, so that what is checked is what is
  // returned even if someone writes the pool meanwhile.
  char buf[kXattrSlotsPerLeaf * kXattrSlotSize];
  std::memcpy(buf, pool_.BlockPtr(e.block) + e.pos * kXattrSlotSize, e.slots * kXattrSlotSize);
  XattrLeafEntry h;
  std::memcpy(&h, buf, sizeof(h));
  const bool remote = !e.runs.empty();
  if (h.slot_count != e.slots || h.name_len != name.size() || h.value_len != e.value_len ||
      (h.flags & kXattrRemote) != (remote ? kXattrRemote : 0) ||
      h.run_count != e.runs.size() || std::memcmp(buf + sizeof(h), name.data(), name.size()) != 0)
    return Damaged(name, "no longer matches its entry");
  std::string value;
  if (!remote) {
    value.assign(buf + sizeof(h) + name.size(), e.value_len);
  } else {
    const char* runs = buf + XattrRemoteBytes(h.name_len, 0);
    value.resize(e.value_len);
    uint64_t at = 0;
    for (size_t i = 0; i < e.runs.size(); ++i) {
      XattrRun r;
      std::memcpy(&r, runs + i * sizeof(r), sizeof(r));
      if (r.pool_block != e.runs[i].start || r.length != e.runs[i].count)
        return Damaged(name, "no longer matches its value blocks");
      const uint64_t n = std::min<uint64_t>(e.value_len - at, r.length * uint64_t{kBlockSize});
      std::memcpy(value.data() + at, pool_.BlockPtr(r.pool_block), n);
      at += n;
    }
  }
  if (XXH64(value.data(), value.size(), 0) != h.value_xxh64)
    return Damaged(name, "fails its checksum");
  return value;
}

// ---------------------------------------------------------------------------
// Writing leaves

bool XattrSet::IsRemote(size_t name_len, size_t value_len) {
  return XattrInlineBytes(static_cast<uint32_t>(name_len), static_cast<uint32_t>(value_len)) >
         kXattrInlineMax;
}

uint32_t XattrSet::EntrySlots(size_t name_len, size_t value_len, size_t runs) {
  const auto n = static_cast<uint32_t>(name_len);
  return XattrSlots(runs ? XattrRemoteBytes(n, static_cast<uint32_t>(runs))
                         : XattrInlineBytes(n, static_cast<uint32_t>(value_len)));
}

XattrSet::Spot XattrSet::FindSpot(uint32_t slots, const Entry* replacing) const {
  assert(!single_ && slots >= 1 && slots <= kXattrMaxSlots);
  // The replaced entry's own leaf first: it usually has room where the
  // entry was. Then a few leaves with room, not all of them: an inode full
  // of one-slot holes must not make every set scan it.
  if (replacing) {
    const uint64_t used =
        leaves_.at(replacing->block).used & ~SlotMask(replacing->pos, replacing->slots);
    if (const uint64_t runs = RunStarts(used, slots))
      return Spot{replacing->block, static_cast<uint32_t>(__builtin_ctzll(runs)), false};
  }
  int tries = 0;
  for (uint64_t leaf : nonfull_) {
    if (++tries > 8) break;
    if (const uint64_t runs = RunStarts(leaves_.at(leaf).used, slots))
      return Spot{leaf, static_cast<uint32_t>(__builtin_ctzll(runs)), false};
  }
  return Spot{0, 1, true};
}

uint64_t* XattrSet::LinkTo(size_t index) const {
  if (index == 0) return &pool_.inode(ino_)->xattr_block;
  return &reinterpret_cast<XattrLeafHeader*>(pool_.BlockPtr(chain_[index - 1]))->next_block;
}

void XattrSet::AddLeaf(Tx& tx, uint64_t block) {
  assert(!single_);
  char* p = pool_.BlockPtr(block);
  std::memset(p, 0, kBlockSize);
  XattrLeafHeader h{};
  std::memcpy(h.magic, kXattrLeafMagic, 8);
  h.owner_ino = ino_;
  std::memcpy(p, &h, sizeof(h));
  pool_.media->Flush(p, kBlockSize);
  tx.Put(LinkTo(chain_.size()), block);
  chain_.push_back(block);
  leaves_[block] = SlotBits{};
  nonfull_.insert(block);
}

void XattrSet::MarkUsed(uint64_t leaf, uint32_t slot, uint32_t slots, bool used) {
  SlotBits& b = leaves_.at(leaf);
  const uint64_t mask = SlotMask(slot, slots);
  if (used) {
    b.used |= mask;
    b.starts |= uint64_t{1} << slot;
    if (b.used == kAllSlots) nonfull_.erase(leaf);
  } else {
    b.used &= ~mask;
    b.starts &= ~(uint64_t{1} << slot);
    nonfull_.insert(leaf);
  }
}

void XattrSet::Insert(Tx& tx, const Spot& spot, std::string_view name, std::string_view value,
                      const std::vector<BlockRange>& runs) {
  assert(!single_ && !spot.new_leaf && names_.find(name) == names_.end());
  const uint32_t slots = EntrySlots(name.size(), value.size(), runs.size());
  char buf[kXattrMaxSlots * kXattrSlotSize] = {};
  XattrLeafEntry h{};
  h.slot_count = static_cast<uint8_t>(slots);
  h.name_len = static_cast<uint8_t>(name.size());
  h.flags = runs.empty() ? 0 : kXattrRemote;
  h.run_count = static_cast<uint8_t>(runs.size());
  h.value_len = static_cast<uint32_t>(value.size());
  h.value_xxh64 = XXH64(value.data(), value.size(), 0);
  std::memcpy(buf, &h, sizeof(h));
  std::memcpy(buf + sizeof(h), name.data(), name.size());
  if (runs.empty()) {
    std::memcpy(buf + sizeof(h) + name.size(), value.data(), value.size());
  } else {
    char* at = buf + XattrRemoteBytes(h.name_len, 0);
    for (size_t i = 0; i < runs.size(); ++i) {
      const XattrRun r{runs[i].start, static_cast<uint32_t>(runs[i].count), 0};
      std::memcpy(at + i * sizeof(r), &r, sizeof(r));
    }
  }
  // The whole of the entry's slots, padding included: no stale bytes of an
  // entry that had them before survive in them.
  tx.Copy(pool_.BlockPtr(spot.leaf) + spot.slot * kXattrSlotSize, buf, slots * kXattrSlotSize);
  MarkUsed(spot.leaf, spot.slot, slots, true);
  Entry e;
  e.block = spot.leaf;
  e.pos = spot.slot;
  e.slots = slots;
  e.value_len = h.value_len;
  e.runs = runs;
  names_.emplace(std::string(name), std::move(e));
}

void XattrSet::Remove(Tx& tx, std::string_view name, std::vector<BlockRange>* freed) {
  assert(!single_);
  auto it = names_.find(name);
  assert(it != names_.end());
  const Entry& e = it->second;
  char* p = pool_.BlockPtr(e.block) + e.pos * kXattrSlotSize;
  tx.Fill32(reinterpret_cast<uint32_t*>(p), 0, e.slots * kXattrSlotSize / 4);
  MarkUsed(e.block, e.pos, e.slots, false);
  freed->insert(freed->end(), e.runs.begin(), e.runs.end());
  names_.erase(it);
}

bool XattrSet::DropIfEmpty(Tx& tx, uint64_t leaf, std::vector<BlockRange>* freed) {
  auto it = leaves_.find(leaf);
  if (it == leaves_.end() || it->second.starts != 0) return false;
  const size_t i = static_cast<size_t>(std::find(chain_.begin(), chain_.end(), leaf) - chain_.begin());
  assert(i < chain_.size());
  const uint64_t next = i + 1 < chain_.size() ? chain_[i + 1] : 0;
  tx.Put(LinkTo(i), next);
  chain_.erase(chain_.begin() + static_cast<ptrdiff_t>(i));
  leaves_.erase(it);
  nonfull_.erase(leaf);
  freed->push_back({leaf, 1});
  return true;
}

std::unordered_map<uint64_t, size_t> XattrSet::RunsPerLeaf() const {
  std::unordered_map<uint64_t, size_t> n;
  for (const auto& [name, e] : names_) n[e.block] += e.runs.size();
  return n;
}

void XattrSet::DropHead(Tx& tx, size_t count, std::vector<BlockRange>* freed) {
  assert(!single_ && count <= chain_.size());
  const std::unordered_set<uint64_t> gone(chain_.begin(), chain_.begin() + static_cast<ptrdiff_t>(count));
  for (auto it = names_.begin(); it != names_.end();) {
    if (!gone.count(it->second.block)) {
      ++it;
      continue;
    }
    freed->insert(freed->end(), it->second.runs.begin(), it->second.runs.end());
    it = names_.erase(it);
  }
  tx.Put(LinkTo(0), count < chain_.size() ? chain_[count] : uint64_t{0});
  for (uint64_t leaf : gone) {
    freed->push_back({leaf, 1});
    leaves_.erase(leaf);
    nonfull_.erase(leaf);
  }
  chain_.erase(chain_.begin(), chain_.begin() + static_cast<ptrdiff_t>(count));
}

// ---------------------------------------------------------------------------
// The single block

void XattrSet::RemoveFromSingle(Tx& tx, std::string_view name, std::vector<BlockRange>* freed) {
  assert(single_);
  auto gone = names_.find(name);
  assert(gone != names_.end());
  names_.erase(gone);
  if (names_.empty()) {
    tx.Put(&pool_.inode(ino_)->xattr_block, uint64_t{0});
    freed->push_back({single_, 1});
    single_ = 0;
    return;
  }
  // Re-encode the others in their order, each from the bytes the index
  // bounds; the block is rewritten whole through the journal.
  std::vector<std::pair<uint32_t, Names::iterator>> order;
  for (auto it = names_.begin(); it != names_.end(); ++it) order.push_back({it->second.pos, it});
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  const char* old = pool_.BlockPtr(single_);
  char buf[kBlockSize] = {};
  XattrBlockHeader h{};
  std::memcpy(h.magic, kXattrBlockMagic, 8);
  h.owner_ino = ino_;
  h.entry_count = static_cast<uint32_t>(order.size());
  uint32_t off = sizeof(h);
  for (auto& [pos, it] : order) {
    const auto name_len = static_cast<uint32_t>(it->first.size());
    const uint32_t bytes = SingleEntryBytes(name_len, it->second.value_len);
    const XattrEntryHeader e{static_cast<uint8_t>(name_len), 0,
                             static_cast<uint16_t>(it->second.value_len)};
    std::memcpy(buf + off, &e, sizeof(e));
    std::memcpy(buf + off + sizeof(e), it->first.data(), name_len);
    std::memcpy(buf + off + sizeof(e) + name_len, old + pos + sizeof(e) + name_len,
                it->second.value_len);
    it->second.pos = off;
    off += bytes;
  }
  h.used_bytes = off - static_cast<uint32_t>(sizeof(h));
  std::memcpy(buf, &h, sizeof(h));
  tx.Copy(pool_.BlockPtr(single_), buf, off);
}

}  // namespace leasefs::engine
