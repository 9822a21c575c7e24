// leasectl: control a leasefs file's blocks and layout leases from the
// command line.
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"

namespace {

using namespace leasefs::leasectl;

constexpr const char* kManPage = R"(leasectl - control the blocks and layout leases of leasefs files

SYNOPSIS
  leasectl SUBCOMMAND [OPTIONS] ARGS...
  leasectl SUBCOMMAND --help

DESCRIPTION
  Sends leasefs's own ioctls (include/leasefs/ioctl.h) to files on a
  mounted leasefs: the fallocate modes and the reflinks the kernel does not
  pass to FUSE filesystems, online defragmentation, the block map, and
  layout leases.

    fallocate  collapse, insert, unshare, punch, zero or allocate a range
    reflink    share a file's blocks with another file (cp --reflink)
    defrag     move a file's blocks together
    bmap       print where a file's blocks are in the pool
    hold       hold a layout lease on a file, like flock(1)
    leases     list every layout lease of a mount
    events     print what happens to the layout leases of a mount
    dax        list the DAX mappings of a mount and its quarantine
    pins       list the pins of a mount (registered memory regions)
    file_pins  the pins of a mount by owner, as /proc/PID/file_pins
    report     draw a mount's blocks and lease history as an HTML page
    scenario   run the 2019 debate's scenarios on a scratch pool
    top        watch a mount live: leases, breaks, pins, quarantine

  Errors are one line on stderr: "leasectl: SUBCOMMAND: FILE: reason". A file
  on any other filesystem gives "not a leasefs file".

EXIT STATUS
  0 done; 1 an operation failed; 2 usage error.)";

// Every subcommand, in the order --help lists them.
constexpr AddCommandFn kCommands[] = {
    AddFallocateCommand,
    AddReflinkCommand,
    AddDefragCommand,
    AddBmapCommand,
    AddHoldCommand,
    AddLeasesCommand,
    AddEventsCommand,
    AddDaxCommand,
    AddPinsCommand,
    AddFilePinsCommand,
    AddReportCommand,
    AddScenarioCommand,
    AddTopCommand,
};

bool HasSubcommand(const CLI::App& app, const std::string& name) {
  for (const CLI::App* sub : app.get_subcommands({}))
    if (sub->get_name() == name) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kManPage, "leasectl");
  app.formatter(std::make_shared<HelpFormatter>());  // before the subcommands copy it
  app.failure_message(UsageMessage);
  app.require_subcommand(1);
  int rc = kExitOk;
  for (AddCommandFn add : kCommands) add(app, &rc);
  // CLI11 would only say that a subcommand is required.
  if (argc > 1 && argv[1][0] != '-' && !HasSubcommand(app, argv[1])) {
    fmt::print(stderr,
               "leasectl: unknown subcommand '{}'\nRun 'leasectl --help' for more information.\n",
               argv[1]);
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (std::fflush(stdout) != 0) {
    std::perror("leasectl: stdout");
    return kExitFailure;
  }
  return rc;
}
