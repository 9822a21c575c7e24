// The randomized model run of tests/fuse/mmap_model.h as a program of its
// own, so that tests/run/model_test.cc can run it under leasefs-run (its
// mapping then DAX) and without (plain mmap), on a mount the test made. It
// mounts nothing itself: it is a doctest binary only for posix_fs's helpers
// and main, and is not a meson test.
//
// Environment:
//   LEASEFS_MODEL_DIR    the directory (on the mount) for its two files
//   LEASEFS_MMAP_SEED    the seed (default 20261205), printed on failure
//   LEASEFS_MODEL_STEPS  steps (default 1500)
//   LEASEFS_MODEL_POOL   the pool's path: pages of the mapping backed by it
//                        (/proc/self/maps) are DAX pages
//   LEASEFS_MODEL_REMAP  1: after a step that leaves the mapping not DAX
//                        (the shim replaced it on a break), map again, as a
//                        program does that maps again after changing its
//                        file's size
// Prints one line "model: seed S steps N dax D degraded G" once every step
// held: D counts the steps that began with every page of the file's bytes
// in the mapping a DAX page, G those that ended with none of them one; a
// step that ends with only some of them DAX fails the run, and so does, with
// LEASEFS_MODEL_REMAP, a new mapping that is not DAX.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <doctest/doctest.h>

#include "tests/fuse/mmap_model.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? v : fallback;
}

// Bytes of [p, p + len) that /proc/self/maps shows as mappings of `path`.
size_t BytesBackedBy(const char* p, size_t len, const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), b = a + len;
  size_t n = 0;
  for (std::string line; std::getline(maps, line);) {
    std::istringstream in(line);
    std::string range, perms, off, dev, ino, name;
    in >> range >> perms >> off >> dev >> ino >> name;
    if (name != path) continue;
    const uintptr_t lo = std::stoull(range, nullptr, 16);
    const uintptr_t hi = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    const uintptr_t s = lo > a ? lo : a, e = hi < b ? hi : b;
    if (s < e) n += e - s;
  }
  return n;
}

TEST_CASE("model run on LEASEFS_MODEL_DIR") {
  const std::string dir = Env("LEASEFS_MODEL_DIR", "");
  REQUIRE_MESSAGE(!dir.empty(), "LEASEFS_MODEL_DIR is not set (tests/run/model_test.cc sets it)");
  const uint64_t seed = std::strtoull(Env("LEASEFS_MMAP_SEED", "20261205").c_str(), nullptr, 10);
  const int steps = std::atoi(Env("LEASEFS_MODEL_STEPS", "1500").c_str());
  const std::string pool = Env("LEASEFS_MODEL_POOL", "");
  // A SIGBUS or SIGSEGV kills the run: the seed is out first.
  std::fprintf(stderr, "LEASEFS_MMAP_SEED=%llu\n", static_cast<unsigned long long>(seed));
  const bool remap = Env("LEASEFS_MODEL_REMAP", "0") == "1";
  RandomRun run(dir, seed);
  int dax = 0, degraded = 0;
  // Bytes of the mapping over the file's pages that are the pool's, and of
  // how many.
  auto backed = [&](size_t* bytes) {
    *bytes = (run.size() + RandomRun::kBlock - 1) / RandomRun::kBlock * RandomRun::kBlock;
    return pool.empty() ? 0 : BytesBackedBy(run.mapping(), *bytes, pool);
  };
  bool dax_now = false;  // the mapping is DAX over the file's bytes
  for (int i = 0; i < steps; ++i) {
    if (dax_now) ++dax;
    const std::string err = run.Step(i);
    if (!err.empty()) FAIL("seed " << seed << ": " << err);
    size_t bytes = 0;
    const size_t b = backed(&bytes);
    if (b != 0 && b != bytes)
      FAIL("seed " << seed << ": step " << i << ": " << b << " of " << bytes
                   << " bytes of the mapping are the pool's");
    dax_now = bytes != 0 && b == bytes;
    if (bytes == 0 || dax_now) continue;
    ++degraded;
    if (!remap) continue;
    run.Remap();
    if (backed(&bytes) != bytes) FAIL("seed " << seed << ": step " << i << ": a new mapping is not DAX");
    dax_now = true;
  }
  std::printf("model: seed %llu steps %d dax %d degraded %d\n",
              static_cast<unsigned long long>(seed), steps, dax, degraded);
  std::fflush(stdout);
}

}  // namespace
}  // namespace leasefs::testing
