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
// time, telling `progress` (if any) how far it got.
void ZeroBlocks(Media& m, uint64_t start, uint64_t count,
                const std::function<void(uint64_t, uint64_t)>& progress = nullptr) {
  char* const from = m.base() + start * kBlockSize;
  const uint64_t total = count * kBlockSize;
  for (uint64_t done = 0; done < total;) {
    const uint64_t n = std::min(total - done, kFormatPieceBytes);
    m.SetFlush(from + done, 0, n);
    done += n;
    if (progress) progress(done, total);
  }
}

}  // namespace

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

  // 2. Metadata regions start zeroed: an empty journal, free inode slots,
  //    refcount 0 (free) for every data block, no quarantine entries.
  ZeroBlocks(media, sb.journal_start, 1);
  ZeroBlocks(media, sb.inode_start, sb.data_start - sb.inode_start, opts.progress);

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
  media.CopyFlush(media.base() + kBackupSuperBlock * kBlockSize, &sb, sizeof(sb));
  media.Drain();
  media.CopyFlush(media.base() + kSuperBlock * kBlockSize, &sb, sizeof(sb));
  media.Drain();
  return Status::Ok();
}

}  // namespace leasefs::engine
