// Superblock geometry, checksums and validation, shared by mkfs, the engine's
// mount path and fsck.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "base/status.h"
#include "engine/layout.h"
#include "engine/media.h"

namespace leasefs::engine {

struct GeometryOptions {
  uint64_t inode_count = 0;      // 0: one inode per bytes_per_inode of pool
  uint64_t bytes_per_inode = 0;  // 0: 16 KiB; else 1 KiB to 1 GiB (mke2fs -i)
  uint64_t journal_bytes = 0;    // 0: 1/256 of the pool, within [256 KiB, 64 MiB]
};

// Computes region placement for a pool of `pool_bytes` into `sb` (geometry
// fields only).
// Errors: EINVAL when the pool is too small for the requested regions, or the
// requested inode count, inode ratio or journal size is out of range.
Status ComputeGeometry(uint64_t pool_bytes, const GeometryOptions& opts, layout::Superblock* sb);

uint64_t SuperblockChecksum(const layout::Superblock& sb);

// An older (version 1 or 2) superblock as the upgrade to the current version
// rewrites it: the same bytes but the version and the checksum
// (docs/pool_format.md "Upgrading an older pool"). The mutable area is
// copied unchanged.
layout::Superblock Upgraded(const layout::Superblock& old);
// `sb` with the feature bits `ro_compat` and `incompat` added and its
// checksum recomputed: how a feature is added to a pool in place
// (docs/pool_format.md "Adding a feature"). The mutable area is copied
// unchanged.
layout::Superblock WithFeatures(const layout::Superblock& sb, uint64_t ro_compat,
                                uint64_t incompat);
// True if `primary` is an in-place update of the superblock (an upgrade, or
// added feature bits) torn by a crash: its checksum fails, it differs from
// `backup` (a version 2 or later superblock whose checksum holds) only in
// the version, feature_ro_compat, feature_incompat and checksum words, its
// version is at least 1 and at most the backup's, and its feature bits are a
// subset of the backup's (each 8-byte word holds its old or its new value).
// Restoring the primary from the backup finishes the update, which always
// writes the backup first.
bool IsTornUpgrade(const layout::Superblock& primary, const layout::Superblock& backup);
// Writes the checksummed bytes and the checksum of `sb` (not the mutable
// area) as the superblock copy in pool block `block` (layout::kSuperBlock or
// kBackupSuperBlock), and makes them durable before it returns.
void WriteSuperblockCopy(Media& media, uint64_t block, const layout::Superblock& sb);

// --- the marks of version 3 (docs/pool_format.md "Lazily initialized tables")

// How much of the inode table and of the refcount table is initialized.
struct Marks {
  uint64_t inodes = 0;           // inode slots [0, inodes)
  uint64_t refcount_blocks = 0;  // refcount blocks [0, refcount_blocks)
  bool operator==(const Marks&) const = default;
};
// Where each mark lives in a superblock copy.
inline constexpr size_t kInodeMarkField = offsetof(layout::Superblock, inode_mark);
inline constexpr size_t kRefcountMarkField = offsetof(layout::Superblock, refcount_mark);

// Data blocks whose refcounts `refcount_blocks` initialized refcount blocks
// hold: [sb.data_start, sb.data_start + the result).
uint64_t CoveredDataBlocks(const layout::Superblock& sb, uint64_t refcount_blocks);
// The marks of a pool whose tables are wholly initialized (every version
// before 3, and a fixed table).
Marks WholeTables(const layout::Superblock& sb);
// The 8-byte word that stores `value` as the mark at `field` (kInodeMarkField
// or kRefcountMarkField) of a pool with `sb`'s uuid: the value and its check
// code.
uint64_t EncodeMark(const layout::Superblock& sb, size_t field, uint64_t value);
// The value a mark word holds, or nullopt if its check code fails or the
// value does not fit `sb`'s geometry (inodes: a multiple of 16 in [16,
// inode_count]; refcount blocks: [1, refcount_blocks]).
std::optional<uint64_t> DecodeMark(const layout::Superblock& sb, size_t field, uint64_t word);

// The marks as both superblock copies of a version-3 pool hold them.
struct MarkCopies {
  std::optional<uint64_t> inodes[2];  // [0] the primary's, [1] the backup's
  std::optional<uint64_t> refcount_blocks[2];
  // Each mark: the larger of its valid copies (a raise stores both, and any
  // value ever stored lies over initialized space), nullopt if neither is.
  std::optional<uint64_t> inode_mark() const;
  std::optional<uint64_t> refcount_mark() const;
};
// Reads the mark words of both copies in `pool` (the mapped pool), judged by
// `sb` (the superblock the pool is read by).
MarkCopies ReadMarkCopies(const char* pool, const layout::Superblock& sb);
// Stores `m` in both copies' mark words (primary, then backup; each word one
// aligned 8-byte store) and makes them durable before it returns. Not part
// of any transaction: the caller has initialized what the marks cover.
void StoreMarks(Media& media, const layout::Superblock& sb, const Marks& m);

// Checks magic, version, checksum, features and that every region lies inside
// a pool of `media_bytes` without overlapping another.
// Errors: EUCLEAN (not a leasefs pool, corrupt, or inconsistent geometry) and
// EOPNOTSUPP (a newer format version or incompatible feature), each with a
// one-line reason.
Status ValidateSuperblock(const layout::Superblock& sb, uint64_t media_bytes);

}  // namespace leasefs::engine
