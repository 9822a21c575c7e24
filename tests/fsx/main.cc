// leasefs-fsx: randomized data and block-map operations on a leasefs pool of
// its own, each file checked byte for byte against a model after every step.
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "tests/fsx/exerciser.h"
#include "tests/fsx/pool_run.h"
#include "tools/common/size_arg.h"

namespace {

using namespace leasefs;

constexpr const char* kDescription =
    R"(leasefs-fsx - randomized exerciser of leasefs data and block-map operations

SYNOPSIS
  leasefs-fsx [--seed N] [--ops N] [--max-size BYTES] [--remount-every N]
              [--only OPS] [--skip OPS] [--verbose]
  leasefs-fsx --dir DIR [--kernel-ops] ...

DESCRIPTION
  Formats a pool in /dev/shm, mounts it, and runs a seeded random sequence of
  pwrite, pread, ftruncate, fallocate (mode 0, KEEP_SIZE, PUNCH_HOLE,
  ZERO_RANGE with and without KEEP_SIZE), the leasefs ioctls (collapse,
  insert, unshare, clone, defrag), copy_file_range and remounts over a few
  files. After every step each file is read back whole and compared with an
  in-memory model, and its fstat size checked. Some calls get arguments they
  must refuse, and the errno is checked. After clones the block map
  (LEASEFS_IOC_BMAP) must show shared blocks, and writes must copy them.
  Every remount checks the pool with fsck.leasefs -n.

  The seed is printed first: run again with --seed to replay a failure, and
  --verbose to see every step. A failure prints the step, the last 20
  operations and the first differing byte.

  --dir runs in an existing directory instead (no remounts). With
  --kernel-ops, collapse, insert and unshare go through fallocate(2) and clone
  through FICLONERANGE, so the model can be checked against xfs.

  Needs root and /dev/fuse. The binaries are LEASEFS_BIN, MKFS_LEASEFS_BIN and
  FSCK_LEASEFS_BIN, else those of the build directory leasefs-fsx is in.

OPERATIONS (for --only and --skip, comma-separated)
  )";

std::optional<fsx::OpMask> ParseMask(const std::string& list, const char* flag) {
  std::string bad;
  auto m = fsx::ParseOps(list, &bad);
  if (!m) std::fprintf(stderr, "leasefs-fsx: %s: unknown operation '%s'\n", flag, bad.c_str());
  return m;
}

// The command line that was run, with --seed set to `seed`.
std::string ReplayCommand(int argc, char** argv, uint64_t seed) {
  std::string cmd = fmt::format("leasefs-fsx --seed {}", seed);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seed") {
      ++i;
      continue;
    }
    if (a.rfind("--seed=", 0) == 0) continue;
    cmd += " " + a;
  }
  return cmd;
}

void PrintCounts(const fsx::RunResult& r) {
  std::string line;
  for (int i = 0; i < static_cast<int>(fsx::Op::kCount); ++i) {
    if (r.op_counts[i] == 0) continue;
    line += fmt::format("{}{} {}", line.empty() ? "" : ", ", fsx::OpName(static_cast<fsx::Op>(i)),
                        r.op_counts[i]);
  }
  fmt::print(
      "{}\n{} refused as expected, {} clones' block maps checked, {} copy-on-write "
      "writes checked\n",
      line, r.refused, r.shared_checks, r.cow_checks);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription + fsx::AllOpNames() + "\n", "leasefs-fsx");
  fsx::Options opts;
  opts.seed = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch() /
                                    std::chrono::microseconds(1));
  opts.remount_every = 1000;
  std::string max_size = "256K", pool_size = "256M", only, skip, mount_options;
  bool no_fsck = false, no_bmap = false;
  app.add_option("--seed", opts.seed, "random seed (default: from the clock)");
  app.add_option("--ops", opts.ops, "steps to run")->capture_default_str();
  app.add_option("--max-size", max_size, "largest file size (K, M, G suffixes)")
      ->capture_default_str();
  app.add_option("--remount-every", opts.remount_every, "remount every N steps; 0: never")
      ->capture_default_str();
  app.add_option("--files", opts.files, "files to work on (1-8)")->capture_default_str();
  app.add_option("--invalid-rate", opts.invalid_rate,
                 "probability of arguments the call must refuse")
      ->capture_default_str();
  app.add_option("--only", only, "run only these operations");
  app.add_option("--skip", skip, "never run these operations");
  app.add_flag("--no-fsck", no_fsck, "do not run fsck.leasefs at remounts");
  app.add_flag("--no-bmap-checks", no_bmap, "do not check the block map after clones");
  app.add_option("--pool-size", pool_size, "size of the pool")->capture_default_str();
  app.add_option("-o,--mount-options", mount_options, "extra -o options for the daemon");
  app.add_option("--dir", opts.dir, "run in this directory; mount nothing");
  app.add_flag("--kernel-ops", opts.kernel_ops,
               "use fallocate(2) and FICLONERANGE (with --dir, on xfs)");
  app.add_flag("-v,--verbose", opts.verbose, "print every step");
  app.add_option("--progress", opts.progress_every, "say how far it got every N steps");
  CLI11_PARSE(app, argc, argv);

  auto size = tools::ParseSize(max_size);
  if (!size || *size < 8192) {
    std::fprintf(stderr, "leasefs-fsx: --max-size: want a size of at least 8K\n");
    return 2;
  }
  opts.max_size = *size;
  if (!only.empty()) {
    auto m = ParseMask(only, "--only");
    if (!m) return 2;
    opts.mask = *m;
  }
  if (!skip.empty()) {
    auto m = ParseMask(skip, "--skip");
    if (!m) return 2;
    opts.mask &= ~*m;
  }
  opts.check_block_map = !no_bmap;

  fmt::print("seed {}\n", opts.seed);
  std::fflush(stdout);
  fsx::RunResult r;
  try {
    if (!opts.dir.empty()) {
      r = fsx::Exerciser(opts).Run();
    } else {
      if (!testing::CanMountFuse()) {
        std::fprintf(stderr, "leasefs-fsx: needs root and /dev/fuse (or --dir)\n");
        return 77;
      }
      fsx::FindToolsNextTo("/proc/self/exe");
      testing::MountOptions mo;
      mo.pool_size = pool_size;
      if (!mount_options.empty()) mo.options += "," + mount_options;
      r = fsx::RunOnOwnPool(opts, mo, !no_fsck);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "leasefs-fsx: %s\n", e.what());
    return 2;
  }
  if (!r.ok) {
    std::fputs(r.report.c_str(), stdout);
    fmt::print("replay: {}\n", ReplayCommand(argc, argv, opts.seed));
    return 1;
  }
  PrintCounts(r);
  fmt::print("{} ops passed\n", r.steps);
  return 0;
}
