// What a mounted test needs beyond root and /dev/fuse (a tool, a device),
// as meson declares it for the test in LEASEFS_TEST_NEEDS, so that a test
// whose tool or device is missing reports "skipped" (exit 77) instead of
// passing without having run.
#pragma once

#include <string>

namespace leasefs::testing {

// Checks LEASEFS_TEST_NEEDS: paths separated by spaces, each a program that
// must be executable or a device node (such as /dev/loop-control) that must
// exist. Returns "" when every one is there (or none is declared), else what
// is missing, e.g. "needs /usr/sbin/mkfs.ext4".
std::string UnmetNeeds();

}  // namespace leasefs::testing
