// Superblock geometry, checksums and validation, shared by mkfs, the engine's
// mount path and fsck.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "engine/layout.h"
#include "engine/media.h"

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

// A version-1 superblock as the upgrade to version 2 rewrites it: the same
// bytes but the version and the checksum (docs/pool_format.md "Upgrading a
// version-1 pool"). The mutable area is copied unchanged.
layout::Superblock UpgradedFromV1(const layout::Superblock& v1);
// `sb` with the feature bits `ro_compat` and `incompat` added and its
// checksum recomputed: how a feature is added to a pool in place
// (docs/pool_format.md "Adding a feature"). The mutable area is copied
// unchanged.
layout::Superblock WithFeatures(const layout::Superblock& sb, uint64_t ro_compat,
                                uint64_t incompat);
// True if `primary` is an in-place update of the superblock (the upgrade to
// version 2, or added feature bits) torn by a crash: its checksum fails, it
// differs from `backup` (a version-2 superblock whose checksum holds) only
// in the version, feature_ro_compat, feature_incompat and checksum words,
// its version is 1 or 2, and its feature bits are a subset of the backup's
// (each 8-byte word holds its old or its new value). Restoring the primary
// from the backup finishes the update, which always writes the backup first.
bool IsTornUpgrade(const layout::Superblock& primary, const layout::Superblock& backup);
// Writes the checksummed bytes and the checksum of `sb` (not the mutable
// area) as the superblock copy in pool block `block` (layout::kSuperBlock or
// kBackupSuperBlock), and makes them durable before it returns.
void WriteSuperblockCopy(Media& media, uint64_t block, const layout::Superblock& sb);

// Checks magic, version, checksum, features and that every region lies inside
// a pool of `media_bytes` without overlapping another.
// Errors: EUCLEAN (not a leasefs pool, corrupt, or inconsistent geometry) and
// EOPNOTSUPP (a newer format version or incompatible feature), each with a
// one-line reason.
Status ValidateSuperblock(const layout::Superblock& sb, uint64_t media_bytes);

}  // namespace leasefs::engine
