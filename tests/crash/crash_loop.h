// The crash loop: run a workload in a child process, crash whatever serves
// the tree at a random moment, recover, and check that the tree is what the
// model says (every completed operation present, the one in flight wholly
// done or wholly absent), then carry on from there.
//
// The child records "op k done" in memory shared with the parent after each
// operation returns; that record survives anything that happens to the file
// system. The parent sets a "crashing" flag before it crashes the target, so
// that the child can tell errors caused by the crash (expected) from outcomes
// the model did not predict (a bug).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

#include "tests/crash/workload.h"

namespace leasefs::crashtest {

// What the loop crashes and recovers.
class CrashTarget {
 public:
  virtual ~CrashTarget() = default;
  // The tree the workload runs in (absolute path).
  virtual std::string root() const = 0;
  // Crashes the target while the workload process `child` runs on it.
  virtual void Crash(pid_t child) = 0;
  // Brings the tree back after a crash. Returns "" or what went wrong.
  virtual std::string Recover(int iteration) = 0;
  // Extra text for a failure report (logs, kept images).
  virtual std::string Diagnostics(int iteration) {
    (void)iteration;
    return {};
  }
};

struct CrashLoopOptions {
  uint64_t seed = 1;
  int iterations = 40;
  uint64_t max_delay_us = 250000;  // the crash comes after [0, max) µs
  int progress_every = 1;          // print a line every N iterations (0: never)
  // An interrupted write may leave any size between the old and the new one
  // (true of tmpfs when the writer is killed; leasefs promises old or new).
  bool short_writes = false;
  // The operations the workload draws (OpSet).
  unsigned ops = kAllOps;
};

struct CrashLoopResult {
  int iterations = 0;         // crashes survived
  uint64_t ops = 0;           // operations completed (the model's op count)
  int in_flight_done = 0;     // times the operation in flight was found done
  int in_flight_partial = 0;  // ... a write found partly applied
  std::string failure;        // empty when every check passed
};

// Runs `opts.iterations` crash/recover/verify rounds, starting from `model`
// after `ops` operations; on return both describe the tree as verified last.
CrashLoopResult RunCrashLoop(CrashTarget& target, const CrashLoopOptions& opts, Model& model,
                             uint64_t& ops);

// Runs ops [first, last] of workload `seed` on `root` without crashes,
// checking each outcome against the model. Returns "" or the first mismatch.
std::string RunWorkload(const std::string& root, uint64_t seed, uint64_t first, uint64_t last,
                        Model& model, unsigned ops = kAllOps);

// Environment knobs: LEASEFS_CRASH_SEED, LEASEFS_CRASH_ITERATIONS.
uint64_t SeedFromEnv(uint64_t fallback);
int IterationsFromEnv(int fallback);

}  // namespace leasefs::crashtest
