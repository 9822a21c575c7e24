// leasectl dax: the DAX mappings of a mount and the quarantine
// (LEASEFS_IOC_DAX_LIST; docs/dax.md).
#include <fcntl.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "leasefs/ioctl.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/mount_view.h"
#include "tools/leasectl/snapshot.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace dax_cmd {

constexpr const char* kManPage = R"man(leasectl dax - list the DAX mappings of a leasefs mount and its quarantine

SYNOPSIS
  leasectl dax [--json] PATH

DESCRIPTION
  Lists every range of pool blocks handed out for direct access on the
  mount that PATH (any file or directory on it) belongs to
  (LEASEFS_IOC_DAX_LIST), one line per contiguous run, in mapping order:

    MAP INODE FILE-RANGE  POOL-OFFSET LENGTH QUARANTINED PID  STATE
    3   12    0..1048575  0x2a00000   1M     0           1234 write,leased
    5   14    0..65535    0x3100000   64K    64K         1240 read,unleased

  QUARANTINED is how much of the run its file has let go while the process
  may still reach it: those blocks belong to no file and stay out of use
  until PID confirms its unmap or dies. STATE says whether the run was
  handed out for writing, whether a lease of its open file still covers it
  (leased, unleased), "closed" once that open file is closed, and "restart"
  for runs handed out before the daemon last started. The last line gives
  the totals: records in use of the table's capacity, and bytes quarantined.

  --json prints {"records_total", "records_max", "quarantined_bytes",
  "records": [{"map_id", "ino", "file_offset", "pool_offset", "length",
  "quarantined", "owner_pid", "write", "leased", "closed", "restart",
  "open_file"}]}.

EXIT STATUS
  0 listed; 1 PATH cannot be opened or is not on leasefs; 2 usage error.)man";

struct Args {
  std::string path;
  bool json = false;
};

std::string Size(uint64_t b) {
  if (b != 0 && b % (1ull << 30) == 0) return fmt::format("{}G", b >> 30);
  if (b != 0 && b % (1ull << 20) == 0) return fmt::format("{}M", b >> 20);
  if (b != 0 && b % (1ull << 10) == 0) return fmt::format("{}K", b >> 10);
  return std::to_string(b);
}

int Run(const Args& a) {
  const UniqueFd fd = Open(a.path, O_RDONLY);
  if (!fd.valid()) return Fail("dax", a.path, errno);
  DaxListing dax;
  if (const int err = ListDax(fd.get(), &dax); err != 0) return Fail("dax", a.path, err);
  if (a.json) {
    fmt::print("{}\n", DaxJson(dax).dump(2));
    return kExitOk;
  }
  const std::vector<leasefs_dax_record>& records = dax.records;
  if (records.empty()) {
    fmt::print("no DAX mappings\n");
  } else {
    fmt::print("{:<5} {:<8} {:<23} {:<13} {:<7} {:<11} {:<7} {}\n", "MAP", "INODE", "FILE-RANGE",
               "POOL-OFFSET", "LENGTH", "QUARANTINED", "PID", "STATE");
    for (const auto& r : records) {
      std::string state = (r.flags & LEASEFS_DAX_REC_WRITE) ? "write" : "read";
      state += (r.flags & LEASEFS_DAX_REC_UNLEASED) ? ",unleased" : ",leased";
      if (r.flags & LEASEFS_DAX_REC_CLOSED) state += ",closed";
      if (r.flags & LEASEFS_DAX_REC_RESTART) state += ",restart";
      fmt::print("{:<5} {:<8} {:<23} {:<13} {:<7} {:<11} {:<7} {}\n", r.map_id, r.ino,
                 fmt::format("{}..{}", r.file_offset, r.file_offset + r.length - 1),
                 fmt::format("{:#x}", r.pool_offset), Size(r.length), Size(r.quarantined),
                 r.owner_pid, state);
    }
  }
  fmt::print("{} of {} records in use, {} quarantined\n", dax.records_total, dax.records_max,
             Size(dax.quarantined_total));
  return kExitOk;
}

}  // namespace dax_cmd

void AddDaxCommand(CLI::App& app, int* rc) {
  using namespace dax_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("dax", kManPage);
  sub->add_option("PATH", args->path, "any file or directory on the mount")->required();
  sub->add_flag("--json", args->json, "print JSON instead of the table");
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
