#include "engine/format.h"

#include <algorithm>
#include <cstring>
#include <random>

#include <sys/stat.h>

#include "base/clock.h"
#include "engine/layout.h"

namespace leasefs::engine {

using namespace layout;

namespace {

void FillUuid(uint8_t uuid[16]) {
  std::random_device rd;
  for (int i = 0; i < 16; i += 4) {
    const uint32_t r = rd();
    std::memcpy(uuid + i, &r, 4);
  }
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0f) | 0x40);  // RFC 4122 version 4
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3f) | 0x80);
}

// Zeroes `count` blocks from `start` (flushed, not drained), a piece at a
// time, telling opts.progress (if any) how far the whole format got: *done
// of `total` bytes.
void ZeroBlocks(Media& m, uint64_t start, uint64_t count, const FormatOptions& opts, uint64_t* done,
                uint64_t total) {
  char* const from = m.base() + start * kBlockSize;
  const uint64_t bytes = count * kBlockSize;
  for (uint64_t at = 0; at < bytes;) {
    const uint64_t n = std::min(bytes - at, kFormatPieceBytes);
    m.SetFlush(from + at, 0, n);
    at += n;
    *done += n;
    if (opts.progress) opts.progress(*done, total);
  }
}

constexpr uint64_t DivRoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

Marks InitialMarks(const Superblock& sb, const FormatOptions& opts) {
  const bool fixed = opts.geometry.inode_count != 0 || opts.geometry.bytes_per_inode != 0;
  const uint64_t inodes = opts.init_inodes ? opts.init_inodes
                          : fixed          ? sb.inode_count
                                           : kDefaultInitInodes;
  // Clamped to the table before rounding up: a request near 2^64 would
  // overflow the rounding and leave a mark of 0, which no mount accepts.
  // (inode_count is a multiple of kInodesPerBlock.)
  const uint64_t slots = std::min(inodes, sb.inode_count);
  const uint64_t data_per_block = uint64_t{kRefcountsPerBlock} * kBlockSize;
  const uint64_t data = std::min(opts.init_data_bytes, sb.refcount_blocks * data_per_block);
  const uint64_t refcounts =
      opts.init_data_bytes ? DivRoundUp(data, data_per_block) : kDefaultInitRefcountBlocks;
  return Marks{DivRoundUp(slots, kInodesPerBlock) * kInodesPerBlock,
               std::clamp<uint64_t>(refcounts, 1, sb.refcount_blocks)};
}

bool LooksLikePool(const Media& media) {
  return media.size() >= sizeof(Superblock) &&
         std::memcmp(media.base(), kSuperMagic, sizeof(kSuperMagic)) == 0;
}

Status Format(Media& media, const FormatOptions& opts) {
  if (opts.label.size() >= sizeof(Superblock::label))
    return Status::Error(EINVAL, "label longer than 63 bytes");
  Superblock sb{};
  LFS_RETURN_IF_ERROR(ComputeGeometry(media.size(), opts.geometry, &sb));

  // 1. Invalidate any previous filesystem; persist before anything else.
  media.SetFlush(media.base(), 0, 2 * kBlockSize);
  media.Drain();

  // 2. What the pool starts with is zeroed: an empty journal, no quarantine
  //    records, free inode slots and refcount 0 (free) up to the marks.
  //    Beyond the marks nothing is written: those slots and counts are
  //    initialized when a mark first rises over them.
  const Marks marks = InitialMarks(sb, opts);
  const uint64_t inode_blocks = marks.inodes / kInodesPerBlock;
  const uint64_t total =
      (1 + sb.quarantine_blocks + inode_blocks + marks.refcount_blocks) * kBlockSize;
  uint64_t done = 0;
  ZeroBlocks(media, sb.journal_start, 1, opts, &done, total);
  ZeroBlocks(media, sb.quarantine_start, sb.quarantine_blocks, opts, &done, total);
  ZeroBlocks(media, sb.inode_start, inode_blocks, opts, &done, total);
  ZeroBlocks(media, sb.refcount_start, marks.refcount_blocks, opts, &done, total);

  // 3. The root directory: empty, so it owns no blocks.
  const int64_t now = NowNs();
  auto* root = reinterpret_cast<Inode*>(media.base() + sb.inode_start * kBlockSize) + kRootIno;
  root->mode = S_IFDIR | (opts.root_mode & 07777);
  root->nlink = 2;
  root->uid = opts.root_uid;
  root->gid = opts.root_gid;
  root->atime_ns = root->mtime_ns = root->ctime_ns = root->btime_ns = now;
  root->parent = kRootIno;
  root->generation = 1;
  media.Flush(root, sizeof(*root));
  media.Drain();

  // 4. Publish: backup copy and primary superblock, primary last.
  std::memcpy(sb.magic, kSuperMagic, sizeof(kSuperMagic));
  sb.version = kFormatVersion;
  sb.block_size = kBlockSize;
  FillUuid(sb.uuid);
  sb.root_ino = kRootIno;
  sb.mkfs_time_ns = now;
  sb.inode_size = sizeof(Inode);
  sb.max_name = kMaxName;
  std::memcpy(sb.label, opts.label.data(), opts.label.size());
  sb.checksum = SuperblockChecksum(sb);
  sb.state = kStateClean;
  sb.inode_mark = EncodeMark(sb, kInodeMarkField, marks.inodes);
  sb.refcount_mark = EncodeMark(sb, kRefcountMarkField, marks.refcount_blocks);
  media.CopyFlush(media.base() + kBackupSuperBlock * kBlockSize, &sb, sizeof(sb));
  media.Drain();
  media.CopyFlush(media.base() + kSuperBlock * kBlockSize, &sb, sizeof(sb));
  media.Drain();
  return Status::Ok();
}

}  // namespace leasefs::engine
