// `leasefs POOL MNT -o remount,...`: what mount(8) runs, through mount.fuse3,
// for `mount -o remount,... MNT` on a leasefs mount (docs/mount.md).
#pragma once

#include <string>
#include <vector>

namespace leasefs::daemon {

// Remounts the leasefs mount at `mountpoint` with the -o `items`: the
// daemon serving it takes its part (LEASEFS_IOC_REMOUNT: ro/rw and the atime
// rules; every other option must name what the mount has), and this process
// makes the kernel's (mount(2) with MS_REMOUNT: read-only and the mount
// point's flags), in the order that leaves nothing changed when either
// refuses. Prints why it failed. Returns the exit status: 0, or 1.
int Remount(const std::string& mountpoint, const std::vector<std::string>& items);

}  // namespace leasefs::daemon
