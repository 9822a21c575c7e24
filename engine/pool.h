// PoolView: where the regions of a mounted pool are, and typed access to
// them. A thin, copyable description shared by the engine's parts.
#pragma once

#include <cstdint>

#include "engine/layout.h"
#include "engine/media.h"

namespace leasefs::engine {

struct PoolView {
  Media* media = nullptr;
  const layout::Superblock* sb = nullptr;

  char* base() const { return media->base(); }
  char* BlockPtr(uint64_t block) const { return media->base() + block * layout::kBlockSize; }
  layout::Inode* inode(uint64_t ino) const {
    return reinterpret_cast<layout::Inode*>(BlockPtr(sb->inode_start)) + ino;
  }
  uint32_t* refcount(uint64_t block) const {
    return reinterpret_cast<uint32_t*>(BlockPtr(sb->refcount_start)) + (block - sb->data_start);
  }
  // The quarantine table (version 2: reach records).
  layout::QuarantineRecord* quarantine() const {
    return reinterpret_cast<layout::QuarantineRecord*>(BlockPtr(sb->quarantine_start));
  }
  uint64_t quarantine_count() const { return sb->quarantine_blocks * layout::kQuarantinePerBlock; }
  // True if [block, block + count) lies inside the data area.
  bool InData(uint64_t block, uint64_t count) const {
    const uint64_t first = sb->data_start, end = first + sb->data_blocks;
    return count > 0 && block >= first && block < end && count <= end - block;
  }
};

}  // namespace leasefs::engine
