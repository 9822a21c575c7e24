// Mount point preparation: canonical paths, and the stale mount a killed
// daemon leaves behind.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace leasefs::daemon {

// The absolute path of `path` with symlinks resolved. Works for a stale FUSE
// mount point too (whose own stat fails): only its parent is resolved then.
// Errors: those of realpath(3) on the path or its parent.
Result<std::string> CanonicalPath(const std::string& path);

// True if /proc/self/mountinfo lists a FUSE filesystem (type "fuse" or
// "fuse.*") mounted exactly on `canonical_path`.
bool IsFuseMountPoint(const std::string& canonical_path);

// The mount IDs (first field) of the FUSE filesystems mounted exactly on
// `path`, oldest first, as `mountinfo` (a /proc/PID/mountinfo: the mounts PID
// sees, with paths as PID sees them) lists them. Errors: those of opening
// `mountinfo` (ENOENT when the process is gone).
Result<std::vector<uint64_t>> FuseMountIds(const std::string& mountinfo, const std::string& path);

// Makes `canonical_path` usable as a mount point. When a FUSE daemon died
// (kill -9) its mount stays, and every request fails with ENOTCONN; such
// mounts (several, if they were stacked) are detached (umount2 MNT_DETACH as
// root, else fusermount3 -u -z). Returns OK once statfs of the path works.
// Errors: ENOTCONN (not a FUSE mount, or detaching failed), and statfs's.
Status ClearStaleMount(const std::string& canonical_path);

}  // namespace leasefs::daemon
