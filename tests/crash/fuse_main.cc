// main() of the mounted doctest suites outside tests/fuse (crash, fsx, leasectl):
// meson's "skipped" (77) without FUSE, or without what the test declares it
// needs (tests/support/needs.h).
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>
#include <string>

#include <doctest/doctest.h>

#include "tests/support/mount.h"
#include "tests/support/needs.h"

int main(int argc, char** argv) {
  if (!leasefs::testing::CanMountFuse()) {
    std::fprintf(stderr, "skipped: needs root and /dev/fuse\n");
    return 77;
  }
  if (const std::string missing = leasefs::testing::UnmetNeeds(); !missing.empty()) {
    std::fprintf(stderr, "skipped: %s\n", missing.c_str());
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
