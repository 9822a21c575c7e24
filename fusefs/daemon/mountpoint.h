// Mount point preparation: canonical paths, and the stale mount a killed
// daemon leaves behind.
#pragma once

#include <string>

#include "base/result.h"

namespace leasefs::daemon {

// The absolute path of `path` with symlinks resolved. Works for a stale FUSE
// mount point too (whose own stat fails): only its parent is resolved then.
// Errors: those of realpath(3) on the path or its parent.
Result<std::string> CanonicalPath(const std::string& path);

// True if /proc/self/mountinfo lists a FUSE filesystem (type "fuse" or
// "fuse.*") mounted exactly on `canonical_path`.
bool IsFuseMountPoint(const std::string& canonical_path);

// Makes `canonical_path` usable as a mount point. When a FUSE daemon died
// (kill -9) its mount stays, and every request fails with ENOTCONN; such
// mounts (several, if they were stacked) are detached (umount2 MNT_DETACH as
// root, else fusermount3 -u -z). Returns OK once statfs of the path works.
// Errors: ENOTCONN (not a FUSE mount, or detaching failed), and statfs's.
Status ClearStaleMount(const std::string& canonical_path);

}  // namespace leasefs::daemon
