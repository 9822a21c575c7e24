// Superblock geometry, checksums and validation, shared by mkfs, the engine's
// mount path and fsck.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "engine/layout.h"

namespace leasefs::engine {

struct GeometryOptions {
  uint64_t inode_count = 0;    // 0: one inode per 16 KiB of pool
  uint64_t journal_bytes = 0;  // 0: 1/256 of the pool, within [256 KiB, 64 MiB]
};

// Computes region placement for a pool of `pool_bytes` into `sb` (geometry
// fields only).
// Errors: EINVAL when the pool is too small for the requested regions, or the
// requested inode count or journal size is out of range.
Status ComputeGeometry(uint64_t pool_bytes, const GeometryOptions& opts, layout::Superblock* sb);

uint64_t SuperblockChecksum(const layout::Superblock& sb);

// Checks magic, version, checksum, features and that every region lies inside
// a pool of `media_bytes` without overlapping another.
// Errors: EUCLEAN (not a leasefs pool, corrupt, or inconsistent geometry) and
// EOPNOTSUPP (a newer format version or incompatible feature), each with a
// one-line reason.
Status ValidateSuperblock(const layout::Superblock& sb, uint64_t media_bytes);

}  // namespace leasefs::engine
