// leasectl events: the lease event log of a mount (LEASEFS_IOC_EVENTS).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/core.h>

#include "lease/client/leasefs_lease.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/lease_format.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace events_cmd {

constexpr const char* kManPage =
    R"man(leasectl events - print what happens to the layout leases of a mount

SYNOPSIS
  leasectl events [--json] [--follow] PATH

DESCRIPTION
  Prints the lease event log of the mount that PATH (any file or directory
  on it) belongs to (LEASEFS_IOC_EVENTS): the events the daemon still keeps
  (the last 4096), oldest first, one line each, then exits. With --follow it
  goes on printing events as they happen until it is interrupted.

    04:16:54.123456 #1 grant lease 7 inode 12 bytes 0..end read holder 1234 by 1234
    04:16:55.000020 #2 break lease 7 inode 12 bytes 0..end read holder 1234 by 1240 (unmap)
    04:16:55.000410 #3 release lease 7 inode 12 bytes 0..end read holder 1234 by 1234 (unlock)
    04:16:55.000502 #4 break-done inode 12 bytes 4096..end by 1240 (unmap)

  Each line: the local time, the event's number, what happened (grant,
  break, release, revoke, refused, break-done), the lease (its id and kind)
  with its inode and range, the process holding it and the one that caused
  the event, and in parentheses why: for release unlock, close or exit; for
  break, refused and break-done the kind of layout change (unmap,
  allocating-write, overwrite). An error the event carries follows a colon
  (refused: Text file busy). break-done is the breaker going on: its range
  is the change's. If events were forgotten before they could be printed,
  a line "(N events lost)" says so.

  --json prints one JSON object per line instead: {"seq", "time" (realtime
  nanoseconds), "type", "why", "lease_id", "ino", "offset", "length",
  "lease_type" (null without a lease), "lease_flags", "holder_pid",
  "actor_pid", "err", "error"}, and {"lost": N} for lost events.

EXIT STATUS
  0 printed; 1 PATH cannot be opened or is not on leasefs, or reading the
  log failed; 2 usage error.)man";

struct Args {
  std::string path;
  bool json = false;
  bool follow = false;
};

// The daemon waits at most this long per request.
constexpr uint32_t kWaitMs = 1000;

void PrintLost(uint64_t lost, bool json) {
  if (json)
    fmt::print("{{\"lost\":{}}}\n", lost);
  else
    fmt::print("({} event{} lost)\n", lost, lost == 1 ? "" : "s");
}

int Run(const Args& a) {
  const UniqueFd fd = Open(a.path, O_RDONLY);
  if (!fd.valid()) return Fail("events", a.path, errno);
  auto events = std::make_unique<leasefs_event[]>(LEASEFS_EVENTS_MAX);
  uint64_t after = 0;
  for (;;) {
    size_t n = 0;
    uint64_t lost = 0;
    const int rc = leasefs_read_events(fd.get(), after, a.follow ? kWaitMs : 0, events.get(),
                                       LEASEFS_EVENTS_MAX, &n, &lost);
    // EBUSY: too many readers wait in the daemon at once; EINTR: a signal
    // we did not die of. Both: ask again.
    if (a.follow && (rc == -EBUSY || rc == -EINTR)) {
      usleep(100'000);
      continue;
    }
    if (rc != 0) return Fail("events", a.path, -rc);
    if (lost != 0) PrintLost(lost, a.json);
    for (size_t i = 0; i < n; ++i)
      fmt::print("{}\n", a.json ? EventJson(events[i]).dump() : FormatEvent(events[i]));
    if (std::fflush(stdout) != 0) return Fail("events", "stdout", errno);
    // Lost events are gone for good: go on after them.
    after = n > 0 ? events[n - 1].seq : after + lost;
    if (n == 0 && !a.follow) return kExitOk;
  }
}

}  // namespace events_cmd

void AddEventsCommand(CLI::App& app, int* rc) {
  using namespace events_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("events", kManPage);
  sub->add_option("PATH", args->path, "any file or directory on the mount")->required();
  sub->add_flag("--json", args->json, "one JSON object per event");
  sub->add_flag("--follow,-f", args->follow, "print new events as they happen");
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
