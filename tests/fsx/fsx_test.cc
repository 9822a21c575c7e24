// The exerciser on a real mount (suite fuse): a few fixed seeds and one
// from the clock, with remounts (each checked by fsck.leasefs -n).
//
// Environment: LEASEFS_FSX_OPS=N steps per seed (default 1500),
// LEASEFS_FSX_SEED=N to run that seed alone, LEASEFS_FSX_SKIP=ops to leave
// operations out (leasefs-fsx --skip), and the binaries of
// tests/support/mount.h.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <doctest/doctest.h>

#include "tests/fsx/exerciser.h"
#include "tests/fsx/pool_run.h"

namespace leasefs::fsx {
namespace {

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

void RunSeed(uint64_t seed) {
  Options o;
  o.seed = EnvNumber("LEASEFS_FSX_SEED", seed);
  o.ops = EnvNumber("LEASEFS_FSX_OPS", 1500);
  o.max_size = 256 << 10;
  o.remount_every = 300;
  if (const char* skip = std::getenv("LEASEFS_FSX_SKIP")) {
    auto m = ParseOps(skip);
    REQUIRE_MESSAGE(m, "LEASEFS_FSX_SKIP: unknown operation");
    o.mask &= ~*m;
  }
  std::printf("fsx: seed %llu, %llu ops\n", static_cast<unsigned long long>(o.seed),
              static_cast<unsigned long long>(o.ops));
  std::fflush(stdout);
  testing::MountOptions mo;
  mo.pool_size = "64M";
  RunResult r = RunOnOwnPool(o, mo, /*fsck=*/true);
  {
    INFO("replay: leasefs-fsx --seed ", o.seed, " --ops ", o.ops,
         " --max-size 262144 --remount-every 300");
    INFO(r.report);
    REQUIRE(r.ok);
  }
  CHECK(r.steps == o.ops);
  // Each kind of step ran (a mask aside): the run exercised what it claims.
  for (int i = 0; i < static_cast<int>(Op::kCount); ++i) {
    if (!(o.mask & Bit(static_cast<Op>(i)))) continue;
    CAPTURE(OpName(static_cast<Op>(i)));
    CHECK(r.op_counts[i] > 0);
  }
}

TEST_SUITE("fsx") {
  TEST_CASE("fsx: seed 1") { RunSeed(1); }
  TEST_CASE("fsx: seed 2") { RunSeed(2); }
  TEST_CASE("fsx: seed 20191203") { RunSeed(20191203); }
  TEST_CASE("fsx: seed 0xfeedface") { RunSeed(0xfeedface); }
  TEST_CASE("fsx: a seed from the clock") {
    RunSeed(static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch() /
                                  std::chrono::microseconds(1)));
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::fsx
