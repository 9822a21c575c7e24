// Format: write an empty leasefs filesystem onto a pool (what mkfs.leasefs
// does).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <sys/types.h>

#include "base/status.h"
#include "engine/media.h"
#include "engine/superblock.h"

namespace leasefs::engine {

struct FormatOptions {
  GeometryOptions geometry;
  std::string label;   // up to 63 bytes
  uid_t root_uid = 0;  // owner of the root directory
  gid_t root_gid = 0;
  mode_t root_mode = 0755;
  // Inode slots initialized now (docs/pool_format.md "Lazily initialized
  // tables"); the rest are initialized as files are made. 0: the whole table
  // when `geometry` fixes its size (inode_count or bytes_per_inode, as
  // mke2fs -N and -i), else kDefaultInitInodes. Rounded up to a block of
  // slots, at most the table.
  uint64_t init_inodes = 0;
  // Bytes of the data area whose refcounts are initialized now, the rest as
  // blocks are first allocated. 0: kDefaultInitRefcountBlocks refcount
  // blocks (256 MiB of data). Rounded up to a refcount block (4 MiB of
  // data), at most the table.
  uint64_t init_data_bytes = 0;
  // Called as the metadata regions are zeroed, with the bytes done so far
  // and their total, a piece (kFormatPieceBytes) at a time and once at the
  // end: mkfs.leasefs draws its progress line with it. May be empty. (Only
  // a fixed inode table of a big pool takes long.)
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// How much Format zeroes between two calls of FormatOptions::progress.
inline constexpr uint64_t kFormatPieceBytes = uint64_t{64} << 20;

// The marks Format gives a pool of geometry `sb` with `opts`.
Marks InitialMarks(const layout::Superblock& sb, const FormatOptions& opts);

// Formats the whole of `media`. Ordering: the old superblock is invalidated
// first and the new one written last, so a crash part way leaves a pool that
// mounts as nothing rather than as half a filesystem. Writes the superblock
// copies, the journal header, the quarantine table and the initialized
// parts of the inode and refcount tables (InitialMarks), nothing else.
// Errors: EINVAL (pool too small, bad options, label too long).
Status Format(Media& media, const FormatOptions& opts);

// True when the first block of `media` holds a leasefs superblock magic.
bool LooksLikePool(const Media& media);

}  // namespace leasefs::engine
