// main() of the mounted doctest suites outside tests/fuse (crash, fsx, leasectl):
// meson's "skipped" (77) without FUSE.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>

#include <doctest/doctest.h>

#include "tests/support/mount.h"

int main(int argc, char** argv) {
  if (!leasefs::testing::CanMountFuse()) {
    std::fprintf(stderr, "skipped: needs root and /dev/fuse\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
