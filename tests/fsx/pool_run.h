// Running the exerciser on a pool of its own: format, mount, exercise with
// remounts, unmount. Shared by leasefs-fsx and the fsx test suite.
#pragma once

#include <string>

#include "tests/fsx/exerciser.h"
#include "tests/support/mount.h"

namespace leasefs::fsx {

// When LEASEFS_BIN, MKFS_LEASEFS_BIN and FSCK_LEASEFS_BIN are unset, points
// them at the binaries of the build directory that holds `self` (a path
// such as /proc/self/exe resolved: BUILD/tests/fsx/leasefs-fsx), if they
// exist there. tests/support/mount.h reads those variables.
void FindToolsNextTo(const std::string& self);

// A remount for Options::remount: unmounts `m`, checks the pool with
// `fsck.leasefs -n` if `fsck` (any problem fails the remount, with fsck's
// output), and mounts it again.
std::function<std::string()> Remounter(testing::TestMount& m, bool fsck);

// Formats and mounts a pool (`mount`), runs `opts` in its root with
// Remounter(fsck) unless opts.remount is already set, unmounts. Throws
// std::runtime_error when the pool cannot be formatted or mounted.
RunResult RunOnOwnPool(Options opts, const testing::MountOptions& mount, bool fsck);

}  // namespace leasefs::fsx
