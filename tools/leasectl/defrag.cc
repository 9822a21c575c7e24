// leasectl defrag: LEASEFS_IOC_DEFRAG on each file named.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <sys/ioctl.h>

#include "leasefs/ioctl.h"
#include "tools/common/progress.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace defrag_cmd {

constexpr const char* kManPage = R"(leasectl defrag - move a file's blocks together

SYNOPSIS
  leasectl defrag [-q] FILE...

DESCRIPTION
  Relocates the blocks of each FILE into as few contiguous runs of the pool
  as its free space allows, while the file stays in use (LEASEFS_IOC_DEFRAG).
  The contents never change; blocks shared with other files (reflinks) stay
  where they are. Each FILE is opened for reading and writing.

  The file is done 64 MiB at a time, in order, one ioctl each, each range
  placed right after the one before; meanwhile a progress line on the
  terminal shows how far through the file it is. It is erased when the file
  is done. There is none with -q, or when stdout or stderr is not a
  terminal. Interrupting it leaves the ranges done so far done.

  Prints one line per file:
    FILE: N extents -> M extents, B blocks moved
  where extents are the runs `leasectl bmap` lists ("1 extent" and
  "1 block" in the singular). A file that fails gets an error line instead
  and the others are still done.

OPTIONS
  -q, --quiet  no progress line

EXIT STATUS
  0 every file done; 1 some file failed; 2 usage error.)";

// Bytes of the file one ioctl covers: the engine's largest piece, so that
// the progress line moves at least once a piece.
constexpr uint64_t kRangeBytes = uint64_t{64} << 20;

std::string Count(uint64_t n, const char* what) {
  return fmt::format("{} {}{}", n, what, n == 1 ? "" : "s");
}

int DefragFailed(int fd, const std::string& file, int err) {
  err = IoctlError(fd, err);
  const std::optional<FileFacts> f = Facts(fd);
  return Fail("defrag", file, err,
              err == EINVAL && f && !f->regular ? "not a regular file" : std::string());
}

// Whether the daemon takes a range (LEASEFS_FEATURE_DEFRAG_RANGE); an
// older one is asked for the whole file at once, without progress.
bool TakesRange(int fd) {
  leasefs_version v{};
  return ioctl(fd, LEASEFS_IOC_VERSION, &v) == 0 && (v.features & LEASEFS_FEATURE_DEFRAG_RANGE);
}

// The file's size as the filesystem has it; nullopt if statx fails.
std::optional<uint64_t> SizeOf(int fd) {
  const std::optional<FileFacts> f = Facts(fd);
  if (!f) return std::nullopt;
  return f->size;
}

int DefragOne(const std::string& file, tools::ProgressLine& progress) {
  const UniqueFd fd = Open(file, O_RDWR);
  if (!fd.valid()) return Fail("defrag", file, errno);
  // Without ranges or the size, one call over the whole file (and no
  // progress).
  const std::optional<uint64_t> known =
      TakesRange(fd.get()) ? SizeOf(fd.get()) : std::optional<uint64_t>();
  uint64_t size = known.value_or(0);
  leasefs_defrag total{};
  for (uint64_t at = 0;; at += kRangeBytes) {
    if (size > 0) progress.Update(file, std::min(at, size), size, tools::ProgressUnit::kBytes);
    leasefs_defrag d{};
    d.start = at;
    d.length = known ? kRangeBytes : 0;
    if (ioctl(fd.get(), LEASEFS_IOC_DEFRAG, &d) != 0) {
      const int err = errno;
      progress.Clear();
      return DefragFailed(fd.get(), file, err);
    }
    if (at == 0) total.extents_before = d.extents_before;
    total.extents_after = d.extents_after;
    total.blocks_moved += d.blocks_moved;
    if (!known) break;
    // A writer may have moved the end of file on meanwhile.
    if (at + kRangeBytes >= size && at + kRangeBytes >= (size = SizeOf(fd.get()).value_or(0)))
      break;
  }
  progress.Clear();
  fmt::print("{}: {} -> {}, {} moved\n", file, Count(total.extents_before, "extent"),
             Count(total.extents_after, "extent"), Count(total.blocks_moved, "block"));
  std::fflush(stdout);
  return kExitOk;
}

int Run(const std::vector<std::string>& files, bool quiet) {
  tools::ProgressLine progress("leasectl defrag", tools::ProgressLine::Wanted(quiet));
  int rc = kExitOk;
  for (const std::string& f : files)
    if (DefragOne(f, progress) != kExitOk) rc = kExitFailure;
  return rc;
}

}  // namespace defrag_cmd

void AddDefragCommand(CLI::App& app, int* rc) {
  using namespace defrag_cmd;
  auto files = std::make_shared<std::vector<std::string>>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand("defrag", kManPage);
  sub->add_flag("-q,--quiet", *quiet, "no progress line");
  sub->add_option("FILE", *files, "files on leasefs")->required();
  sub->callback([files, quiet, rc] { *rc = Run(*files, *quiet); });
}

}  // namespace leasefs::leasectl
