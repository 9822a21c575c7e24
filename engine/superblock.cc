#include "engine/superblock.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr uint64_t DivRoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

Status ComputeGeometry(uint64_t pool_bytes, const GeometryOptions& opts, Superblock* sb) {
  if (pool_bytes < kMinPoolBytes)
    return Status::Error(EINVAL,
                         "a pool needs at least " + std::to_string(kMinPoolBytes >> 20) + " MiB");
  const uint64_t total = pool_bytes / kBlockSize;
  uint64_t journal = opts.journal_bytes ? DivRoundUp(opts.journal_bytes, kBlockSize)
                                        : std::clamp<uint64_t>(total / 256, 64, 16384);
  if (journal < 16 || journal > (1u << 20))
    return Status::Error(EINVAL, "journal size must be between 64 KiB and 4 GiB");
  if (opts.bytes_per_inode != 0 &&
      (opts.bytes_per_inode < 1024 || opts.bytes_per_inode > (uint64_t{1} << 30)))
    return Status::Error(EINVAL, "bytes per inode must be between 1 KiB and 1 GiB");
  const uint64_t ratio = opts.bytes_per_inode ? opts.bytes_per_inode : 16384;
  uint64_t inodes =
      opts.inode_count ? opts.inode_count + 1 : std::max<uint64_t>(pool_bytes / ratio, 64);
  if (inodes < 16 || inodes > (uint64_t{1} << 32))
    return Status::Error(EINVAL, "inode count must be between 15 and 2^32-1");
  inodes = DivRoundUp(inodes, kInodesPerBlock) * kInodesPerBlock;
  // About one table block per 8192 pool blocks: 128 to 8192 reach records.
  const uint64_t quarantine = std::clamp<uint64_t>(total / 8192, 2, 128);

  sb->pool_bytes = total * kBlockSize;
  sb->total_blocks = total;
  sb->journal_start = 2;  // after the two superblock copies
  sb->journal_blocks = journal;
  sb->inode_start = sb->journal_start + journal;
  sb->inode_count = inodes;
  sb->quarantine_start = sb->inode_start + inodes / kInodesPerBlock;
  sb->quarantine_blocks = quarantine;
  sb->refcount_start = sb->quarantine_start + quarantine;
  // Refcounts cover the data area, which is what remains after them.
  const uint64_t before_refcounts = sb->refcount_start;
  if (before_refcounts + 2 >= total)
    return Status::Error(EINVAL, "pool too small for its journal and inode table");
  const uint64_t rest = total - before_refcounts;
  // r refcount blocks describe up to r*1024 data blocks: r = ceil(rest/1025).
  const uint64_t refcount = DivRoundUp(rest, kRefcountsPerBlock + 1);
  sb->refcount_blocks = refcount;
  sb->data_start = sb->refcount_start + refcount;
  sb->data_blocks = total - sb->data_start;
  if (sb->data_blocks < 16) return Status::Error(EINVAL, "pool too small for any data");
  return Status::Ok();
}

uint64_t SuperblockChecksum(const Superblock& sb) { return XXH64(&sb, kSuperChecksummedBytes, 0); }

Superblock Upgraded(const Superblock& old) {
  Superblock now = old;
  now.version = kFormatVersion;
  now.checksum = SuperblockChecksum(now);
  return now;
}

Superblock WithFeatures(const Superblock& sb, uint64_t ro_compat, uint64_t incompat) {
  Superblock out = sb;
  out.feature_ro_compat |= ro_compat;
  out.feature_incompat |= incompat;
  out.checksum = SuperblockChecksum(out);
  return out;
}

bool IsTornUpgrade(const Superblock& primary, const Superblock& backup) {
  if (backup.version < kFormatVersionV2 || backup.version > kFormatVersion ||
      SuperblockChecksum(backup) != backup.checksum)
    return false;
  if (primary.version < kFormatVersionV1 || primary.version > backup.version) return false;
  if ((primary.feature_ro_compat & ~backup.feature_ro_compat) != 0 ||
      (primary.feature_incompat & ~backup.feature_incompat) != 0)
    return false;
  Superblock p = primary;
  p.version = backup.version;
  p.feature_ro_compat = backup.feature_ro_compat;
  p.feature_incompat = backup.feature_incompat;
  p.checksum = backup.checksum;
  return std::memcmp(&p, &backup, kSuperChecksummedBytes + 8) == 0 &&
         SuperblockChecksum(primary) != primary.checksum;
}

namespace {

Status Bad(const std::string& why) { return Status::Corruption(why); }

bool RegionOk(uint64_t start, uint64_t count, uint64_t total) {
  return count > 0 && start < total && count <= total - start;
}

}  // namespace

// ---------------------------------------------------------------------------
// Marks

namespace {

// The check code of mark `value` at `field`: the top 20 bits of its XXH64,
// seeded with the pool's uuid and the field's offset, so that a word from
// another pool, another field or a stray store fails it.
uint64_t MarkCheck(const Superblock& sb, size_t field, uint64_t value) {
  uint64_t seed;
  std::memcpy(&seed, sb.uuid, sizeof(seed));
  return XXH64(&value, sizeof(value), seed + field) >> kMarkValueBits;
}

const uint64_t* MarkWord(const char* pool, uint64_t copy, size_t field) {
  return reinterpret_cast<const uint64_t*>(pool + copy * kBlockSize + field);
}

std::optional<uint64_t> Larger(const std::optional<uint64_t> (&v)[2]) {
  if (v[0] && v[1]) return std::max(*v[0], *v[1]);
  return v[0] ? v[0] : v[1];
}

}  // namespace

uint64_t CoveredDataBlocks(const Superblock& sb, uint64_t refcount_blocks) {
  return std::min<uint64_t>(refcount_blocks * kRefcountsPerBlock, sb.data_blocks);
}

Marks WholeTables(const Superblock& sb) { return Marks{sb.inode_count, sb.refcount_blocks}; }

uint64_t EncodeMark(const Superblock& sb, size_t field, uint64_t value) {
  return (value & kMarkValueMask) | (MarkCheck(sb, field, value) << kMarkValueBits);
}

std::optional<uint64_t> DecodeMark(const Superblock& sb, size_t field, uint64_t word) {
  const uint64_t value = word & kMarkValueMask;
  if (word >> kMarkValueBits != MarkCheck(sb, field, value)) return std::nullopt;
  if (field == kInodeMarkField) {
    if (value < kInodesPerBlock || value % kInodesPerBlock != 0 || value > sb.inode_count)
      return std::nullopt;
  } else if (value < 1 || value > sb.refcount_blocks) {
    return std::nullopt;
  }
  return value;
}

std::optional<uint64_t> MarkCopies::inode_mark() const { return Larger(inodes); }
std::optional<uint64_t> MarkCopies::refcount_mark() const { return Larger(refcount_blocks); }

MarkCopies ReadMarkCopies(const char* pool, const Superblock& sb) {
  MarkCopies c;
  for (uint64_t copy : {kSuperBlock, kBackupSuperBlock}) {
    const uint64_t i = copy == kSuperBlock ? 0 : 1;
    c.inodes[i] =
        DecodeMark(sb, kInodeMarkField,
                   __atomic_load_n(MarkWord(pool, copy, kInodeMarkField), __ATOMIC_RELAXED));
    c.refcount_blocks[i] =
        DecodeMark(sb, kRefcountMarkField,
                   __atomic_load_n(MarkWord(pool, copy, kRefcountMarkField), __ATOMIC_RELAXED));
  }
  return c;
}

void StoreMarks(Media& media, const Superblock& sb, const Marks& m) {
  const uint64_t words[2] = {EncodeMark(sb, kInodeMarkField, m.inodes),
                             EncodeMark(sb, kRefcountMarkField, m.refcount_blocks)};
  for (uint64_t copy : {kSuperBlock, kBackupSuperBlock}) {
    auto* at = reinterpret_cast<uint64_t*>(media.base() + copy * kBlockSize + kInodeMarkField);
    static_assert(kRefcountMarkField == kInodeMarkField + 8);
    // One aligned 8-byte store per word: a crash leaves each word old or new.
    __atomic_store_n(&at[0], words[0], __ATOMIC_RELAXED);
    __atomic_store_n(&at[1], words[1], __ATOMIC_RELAXED);
    media.Flush(at, sizeof(words));
  }
  media.Drain();
}

void WriteSuperblockCopy(Media& media, uint64_t block, const Superblock& sb) {
  media.CopyFlush(media.base() + block * kBlockSize, &sb, kSuperChecksummedBytes + 8);
  media.Drain();
}

Status ValidateSuperblock(const Superblock& sb, uint64_t media_bytes) {
  if (std::memcmp(sb.magic, kSuperMagic, sizeof(kSuperMagic)) != 0)
    return Bad("not a leasefs pool (bad magic)");
  if (sb.version > kFormatVersion)
    return Status::Error(EOPNOTSUPP, "pool format version " + std::to_string(sb.version) +
                                         " is newer than this leasefs (" +
                                         std::to_string(kFormatVersion) + ")");
  if (sb.version == 0) return Bad("pool format version 0 is invalid");
  if (SuperblockChecksum(sb) != sb.checksum) return Bad("superblock checksum mismatch");
  if (sb.feature_incompat & ~kKnownIncompat)
    return Status::Error(EOPNOTSUPP, "pool uses unknown incompatible features");
  if (sb.block_size != kBlockSize)
    return Bad("unsupported block size " + std::to_string(sb.block_size));
  if (sb.inode_size != sizeof(Inode)) return Bad("unsupported inode size");
  if (sb.pool_bytes != sb.total_blocks * kBlockSize) return Bad("inconsistent pool size");
  if (sb.pool_bytes > media_bytes)
    return Bad("pool claims " + std::to_string(sb.pool_bytes) + " bytes but the file has " +
               std::to_string(media_bytes) + " (truncated?)");
  const uint64_t total = sb.total_blocks;
  if (sb.journal_start != 2 || !RegionOk(sb.journal_start, sb.journal_blocks, total) ||
      sb.journal_blocks < 16)
    return Bad("journal region out of bounds");
  if (sb.inode_count < 16 || sb.inode_count % kInodesPerBlock != 0 ||
      sb.inode_start != sb.journal_start + sb.journal_blocks ||
      !RegionOk(sb.inode_start, sb.inode_count / kInodesPerBlock, total))
    return Bad("inode table out of bounds");
  if (sb.quarantine_start != sb.inode_start + sb.inode_count / kInodesPerBlock ||
      !RegionOk(sb.quarantine_start, sb.quarantine_blocks, total))
    return Bad("quarantine region out of bounds");
  if (sb.refcount_start != sb.quarantine_start + sb.quarantine_blocks ||
      !RegionOk(sb.refcount_start, sb.refcount_blocks, total))
    return Bad("refcount table out of bounds");
  if (sb.data_start != sb.refcount_start + sb.refcount_blocks ||
      sb.data_blocks != total - sb.data_start || sb.data_blocks == 0 ||
      sb.data_blocks > sb.refcount_blocks * kRefcountsPerBlock)
    return Bad("data region out of bounds");
  if (sb.root_ino != kRootIno) return Bad("bad root inode number");
  if (sb.max_name != kMaxName) return Bad("unsupported name length limit");
  return Status::Ok();
}

}  // namespace leasefs::engine
