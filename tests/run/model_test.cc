// The randomized model run of shared mappings (tests/fuse/mmap_model.h) as
// an unmodified program on a real mount: under leasefs-run, where its
// mapping is DAX, and with plain mmap, both against the same model, every
// byte checked after every step. The program's own truncates, punches and
// extending writes break the shim's lease (its own open file description is
// not the program's): the shim replaces the mapping by the kernel's, and the
// program's next mmap is DAX again.
#include <cstdio>
#include <string>
#include <sys/stat.h>

#include <doctest/doctest.h>

#include "tests/run/asan_order.h"
#include "tests/run/probe.h"
#include "tests/support/mount.h"

namespace leasefs::testing {
namespace {

std::string ModelBin() { return ToolPath("MMAP_MODEL_BIN", "build/tests/run/mmap_model"); }

struct ModelResult {
  int exit_code = -1;
  int steps = -1;
  int dax = -1;
  int degraded = -1;
  std::string output;
};

// Runs the model program on a new directory `name` of the mount, under
// leasefs-run if `shim`. LEASEFS_MMAP_SEED in our environment repeats a run.
// With `remap`, the program maps again after a step that left its mapping
// not DAX (LEASEFS_MODEL_REMAP, tests/run/mmap_model_main.cc).
ModelResult RunModel(const TestMount& m, const std::string& name, bool shim, bool remap,
                     int steps) {
  const std::string dir = m.path(name);
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  const char* seed = std::getenv("LEASEFS_MMAP_SEED");
  std::vector<std::string> argv;
  if (shim) argv.push_back(RunBin());
  argv.insert(argv.end(), {"/usr/bin/env", "LEASEFS_MODEL_DIR=" + dir,
                           "LEASEFS_MODEL_STEPS=" + std::to_string(steps),
                           "LEASEFS_MODEL_POOL=" + m.pool(),
                           std::string("LEASEFS_MODEL_REMAP=") + (remap ? "1" : "0"),
                           std::string("LEASEFS_MMAP_SEED=") + (seed ? seed : "20261205"),
                           ModelBin()});
  ModelResult r;
  const ProcessResult p = Run(argv);
  r.exit_code = p.signaled() ? 128 + p.term_signal : p.exit_code;
  r.output = p.output;
  const size_t at = p.output.find("model: seed ");
  unsigned long long s = 0;
  if (at != std::string::npos)
    std::sscanf(p.output.c_str() + at, "model: seed %llu steps %d dax %d degraded %d", &s,
                &r.steps, &r.dax, &r.degraded);
  return r;
}

TEST_CASE("leasefs-run: the randomized mmap model run holds; breaks leave kernel mappings") {
  TestMount m(RunMountOptions());
  const ModelResult r = RunModel(m, "dax", true, false, 1500);
  CAPTURE(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.steps == 1500);
  // The program maps again only now and then (one step in 11): the first
  // ftruncate, punch or extending write after that breaks the lease, and
  // the rest of the steps until the next mmap run on the kernel's mapping.
  MESSAGE("DAX at " << r.dax << " of " << r.steps << " steps, " << r.degraded << " not");
  CHECK(r.dax > 100);
  CHECK(r.degraded > 100);
}

TEST_CASE("leasefs-run: the model run maps again after each break, and is DAX nearly throughout") {
  TestMount m(RunMountOptions());
  const ModelResult r = RunModel(m, "dax", true, true, 1500);
  CAPTURE(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.steps == 1500);
  MESSAGE("DAX at " << r.dax << " of " << r.steps << " steps, " << r.degraded << " degraded");
  // Only the steps on an empty file are not DAX.
  CHECK(r.dax * 10 > r.steps * 9);
  CHECK(r.degraded > 100);
}

TEST_CASE("plain mmap: the same model run holds, and no page of it is the pool's") {
  TestMount m(RunMountOptions());
  const ModelResult r = RunModel(m, "plain", false, false, 1500);
  CAPTURE(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.steps == 1500);
  CHECK(r.dax == 0);
  CHECK(r.degraded > 1000);
}

}  // namespace
}  // namespace leasefs::testing
