// leasectl defrag: LEASEFS_IOC_DEFRAG on each file named.
#include <fcntl.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <sys/ioctl.h>

#include "leasefs/ioctl.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace defrag_cmd {

constexpr const char* kManPage = R"(leasectl defrag - move a file's blocks together

SYNOPSIS
  leasectl defrag FILE...

DESCRIPTION
  Relocates the blocks of each FILE into as few contiguous runs of the pool
  as its free space allows, while the file stays in use (LEASEFS_IOC_DEFRAG).
  The contents never change; blocks shared with other files (reflinks) stay
  where they are. Each FILE is opened for reading and writing.

  Prints one line per file:
    FILE: N extents -> M extents, B blocks moved
  where extents are the runs `leasectl bmap` lists ("1 extent" and
  "1 block" in the singular). A file that fails gets an error line instead
  and the others are still done.

EXIT STATUS
  0 every file done; 1 some file failed; 2 usage error.)";

std::string Count(uint64_t n, const char* what) {
  return fmt::format("{} {}{}", n, what, n == 1 ? "" : "s");
}

int DefragOne(const std::string& file) {
  const UniqueFd fd = Open(file, O_RDWR);
  if (!fd.valid()) return Fail("defrag", file, errno);
  leasefs_defrag d{};
  if (ioctl(fd.get(), LEASEFS_IOC_DEFRAG, &d) != 0) {
    const int err = IoctlError(fd.get(), errno);
    const std::optional<FileFacts> f = Facts(fd.get());
    return Fail("defrag", file, err,
                err == EINVAL && f && !f->regular ? "not a regular file" : std::string());
  }
  fmt::print("{}: {} -> {}, {} moved\n", file, Count(d.extents_before, "extent"),
             Count(d.extents_after, "extent"), Count(d.blocks_moved, "block"));
  return kExitOk;
}

int Run(const std::vector<std::string>& files) {
  int rc = kExitOk;
  for (const std::string& f : files)
    if (DefragOne(f) != kExitOk) rc = kExitFailure;
  return rc;
}

}  // namespace defrag_cmd

void AddDefragCommand(CLI::App& app, int* rc) {
  using namespace defrag_cmd;
  auto files = std::make_shared<std::vector<std::string>>();
  CLI::App* sub = app.add_subcommand("defrag", kManPage);
  sub->add_option("FILE", *files, "files on leasefs")->required();
  sub->callback([files, rc] { *rc = Run(*files); });
}

}  // namespace leasefs::leasectl
