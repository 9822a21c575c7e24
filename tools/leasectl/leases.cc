// leasectl leases: every layout lease of a mount (LEASEFS_IOC_LIST_LEASES).
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "lease/client/leasefs_lease.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/mount_view.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace leases_cmd {

constexpr const char* kManPage = R"man(leasectl leases - list every layout lease of a leasefs mount

SYNOPSIS
  leasectl leases [--json] PATH

DESCRIPTION
  Lists the layout leases of the whole mount that PATH (any file or
  directory on it) belongs to (LEASEFS_IOC_LIST_LEASES), in the order they
  were granted:

    ID FILE        RANGE   TYPE              STATE    PID  OPEN-FILE BREAK
    7  /mnt/pmem/a 0..end  read              active   1234 3         -
    9  inode 12    0..4095 write,unbreakable breaking 1240 5         since 1.250s, deadline in 43.750s

  FILE is found among the open files of the holder (/proc/PID/fd), which
  needs the right to look at that process; else it reads "inode N". RANGE is
  the first and last byte ("..end": to the end of the file, whatever its
  size). STATE is active, breaking (the holder was told and has until the
  deadline to release it) or revoked (the break time ran out; the lease is
  gone but stays listed until its holder releases it). PID is the process
  that took the lease and OPEN-FILE the daemon's id of the open file
  description it belongs to. "no leases" when there are none. When DAX
  mappings are recorded, a last line gives the bytes in quarantine (blocks
  no file owns that a mapping may still reach) and the number of records;
  `leasectl dax` lists them.

  --json prints {"monotonic_now", "leases": [{"id", "file" (null when not
  found), "ino", "offset", "length", "type", "flags": [...], "state",
  "holder_pid", "open_file", "breaking_since", "break_deadline", "pins"}],
  "dax_records", "quarantined_bytes"} instead;
  the times are CLOCK_MONOTONIC nanoseconds (0: none), as is
  "monotonic_now", the time of the listing.

EXIT STATUS
  0 listed; 1 PATH cannot be opened or is not on leasefs; 2 usage error.)man";

struct Args {
  std::string path;
  bool json = false;
};

// The leases with their files' paths where the holders' /proc shows them.
std::vector<LeaseRow> Rows(const std::vector<leasefs_lease_info>& leases, dev_t dev) {
  std::map<pid_t, std::map<uint64_t, std::string>> open_files;  // by holder
  std::vector<LeaseRow> rows;
  for (const leasefs_lease_info& l : leases) {
    auto it = open_files.find(l.holder_pid);
    if (it == open_files.end() && l.holder_pid > 0)
      it = open_files.emplace(l.holder_pid, OpenFilesOf(l.holder_pid, dev)).first;
    LeaseRow row{l, ""};
    if (it != open_files.end()) {
      if (auto f = it->second.find(l.ino); f != it->second.end()) row.file = f->second;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

int Run(const Args& a) {
  const UniqueFd fd = Open(a.path, O_RDONLY);
  if (!fd.valid()) return Fail("leases", a.path, errno);
  std::vector<leasefs_lease_info> leases;
  if (const int err = ListLeases(fd.get(), &leases); err != 0) return Fail("leases", a.path, err);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Fail("leases", a.path, errno);
  const std::vector<LeaseRow> rows = Rows(leases, st.st_dev);
  const uint64_t now = MonotonicNs();
  // The quarantine, where a lease's blocks go when a revoked holder may
  // still reach them (docs/dax.md); `leasectl dax` lists it in full.
  auto dax = std::make_unique<leasefs_dax_list>();
  const bool have_dax = ioctl(fd.get(), LEASEFS_IOC_DAX_LIST, dax.get()) == 0;
  if (a.json) {
    auto j = LeasesJson(rows, now);
    if (have_dax) {
      j["dax_records"] = dax->records_total;
      j["quarantined_bytes"] = dax->quarantined_total;
    }
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{}", FormatLeases(rows, now));
    if (have_dax && dax->records_total > 0) {
      fmt::print("quarantine: {} bytes kept from reuse; DAX records: {} (leasectl dax)\n",
                 dax->quarantined_total, dax->records_total);
    }
  }
  return kExitOk;
}

}  // namespace leases_cmd

void AddLeasesCommand(CLI::App& app, int* rc) {
  using namespace leases_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("leases", kManPage);
  sub->add_option("PATH", args->path, "any file or directory on the mount")->required();
  sub->add_flag("--json", args->json, "print JSON instead of the table");
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
