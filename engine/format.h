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
  // Called as the metadata regions are zeroed, with the bytes done so far
  // and their total, a piece (kFormatPieceBytes) at a time and once at the
  // end: mkfs.leasefs draws its progress line with it. May be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// How much Format zeroes between two calls of FormatOptions::progress.
inline constexpr uint64_t kFormatPieceBytes = uint64_t{64} << 20;

// Formats the whole of `media`. Ordering: the old superblock is invalidated
// first and the new one written last, so a crash part way leaves a pool that
// mounts as nothing rather than as half a filesystem.
// Errors: EINVAL (pool too small, bad options, label too long).
Status Format(Media& media, const FormatOptions& opts);

// True when the first block of `media` holds a leasefs superblock magic.
bool LooksLikePool(const Media& media);

}  // namespace leasefs::engine
