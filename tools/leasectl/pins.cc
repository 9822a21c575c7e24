// leasectl pins and file_pins: the pins of a mount (LEASEFS_IOC_PIN_LIST),
// as a table and in the shape of the proposed /proc/<pid>/file_pins.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <sys/stat.h>

#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/mount_view.h"
#include "tools/leasectl/pin_format.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace pins_cmd {

constexpr const char* kPinsManPage = R"man(leasectl pins - list the pins of a leasefs mount

SYNOPSIS
  leasectl pins [--json] [MOUNT_OR_FILE]

DESCRIPTION
  Lists the pins (registered memory regions, docs/pins.md) of the mount that
  MOUNT_OR_FILE belongs to (default: the current directory), in pin id order
  (LEASEFS_IOC_PIN_LIST); a regular file lists only the pins of that file.
  A user other than root sees the pins of its own pin contexts.

    PIN CONTEXT PID  UID PROVIDER INODE PATH        RANGE    LEASE LEASE-STATE FLAGS      RKEY               OPS BYTES REFUSED
    3   1       1234 0   softnic  12    /mnt/pmem/f 0..65535 2     active      write,read 0x5f0e4c1d2a3b9c87 4   16384 0
    contexts: 1
    soft NIC refusals: bad rkey 2, fenced 0, other 0; malformed frames 0

  CONTEXT is the pin context that owns the pin, PID and UID the process that
  created it and its user. PROVIDER is softnic (the daemon's soft NIC serves
  it), declared (an engine of the client's own) or verbs (the client's RDMA
  device, through rdma-core). PATH is where the file is
  open in the lease's holder or the context's creator (/proc/PID/fd), else
  where a walk of the mount (at most 100000 entries) met it, else "?". RANGE
  is the first and last byte. LEASE is the lease the pin is counted on, with
  its state from the lease list (active, breaking, revoked, zombie; "?" when
  not listed). FLAGS: fenced (a break fenced it: its rkey is refused), write
  and read (what peers may do), closed (the open file it was made through is
  closed), or "-". RKEY (softnic only) is shown to root and to the context's
  user only, else "-". OPS, BYTES: operations the soft NIC served on it and
  bytes moved; REFUSED: operations naming it that it refused. "no pins" when
  there are none. The last lines: the contexts open (the caller's own, unless
  root), and every operation the soft NIC refused for any user: naming no
  rkey it knows (a peer guessing or replaying rkeys shows here), a fenced
  one, out of bounds or permission; frames it could not parse.

  --json prints {"contexts", "softnic_refused": {"bad_rkey", "fenced",
  "other", "malformed_frames"}, "pins": [{"id", "context", "creator_pid",
  "uid", "provider", "ino", "file", "offset", "length", "lease_id",
  "lease_state", "open_file", "flags": [...], "rkey", "ops", "bytes",
  "refused"}]}; "file", "lease_state" and "rkey" are null where the table
  says "?" or "-"; rkey is a string, "0x" and 16 hex digits.

EXIT STATUS
  0 listed; 1 the path cannot be opened, is not on leasefs, or its daemon
  has no pins; 2 usage error.)man";

constexpr const char* kFilePinsManPage =
    R"man(leasectl file_pins - the pins of a mount by owner, as /proc/PID/file_pins was proposed

SYNOPSIS
  leasectl file_pins [--json] [--pid PID] MOUNT

DESCRIPTION
  The pins of the mount that MOUNT (any file or directory on it) belongs to,
  in the shape of the /proc/<pid>/file_pins the 2019 pin-accounting patches
  proposed (semantics-2019.md §1 I.32): one block per owner, then the pinned
  data files beneath it with a tab indent. leasefs's owner is a pin context;
  beneath each file come its pinned ranges, which the proposal left out,
  with two tabs:

    context 1: creator 1234 uid 0
    	/mnt/pmem/f
    		pin 3 bytes 0..65535 softnic write,read lease 2 active
    		pin 5 bytes 1048576..1114111 softnic fenced,write,read lease 2 revoked
    	inode 14
    		pin 4 bytes 0..4095 declared lease 7 zombie

  Contexts come in id order, files in the order of their first pin, ranges
  in pin id order. A file's path is found as `leasectl pins` finds it;
  "inode N" where it cannot be. After the range: the provider, the pin's
  flags (fenced, write, read, closed; none: nothing), and the lease it is
  counted on with its state ("?" when the lease list does not have it).
  "no pins" when there are none. --pid PID shows only the contexts PID
  created. A user other than root sees only its own contexts.

  --json prints {"owners": [{"context", "creator_pid", "uid", "files":
  [{"ino", "file" (null when not found), "ranges": [{"pin", "offset",
  "length", "provider", "flags": [...], "lease_id", "lease_state"}]}]}]}.

EXIT STATUS
  0 listed; 1 MOUNT cannot be opened, is not on leasefs, or its daemon has
  no pins; 2 usage error.)man";

struct Args {
  std::string path = ".";
  bool json = false;
  pid_t pid = 0;  // file_pins --pid; 0: every process
};

// A failed PIN_LIST, with a hint where the errno alone misleads. (A
// directory of leasefs answers, so ENOTTY on one is another filesystem.)
int FailList(const std::string& cmd, const std::string& path, int err) {
  if (err == EOPNOTSUPP) return Fail(cmd, path, err, "this leasefs daemon has no pins");
  return Fail(cmd, path, err);
}

// The files' paths, as `leases` finds them (the holder's open files) and
// then the context creators' open files and a bounded walk of the mount.
void FindPaths(const std::string& path, dev_t dev, const std::map<uint64_t, pid_t>& holders,
               std::vector<PinRow>* rows) {
  std::map<pid_t, std::map<uint64_t, std::string>> open_files;
  auto lookup = [&](pid_t pid, uint64_t ino) -> std::string {
    if (pid <= 0) return "";
    auto it = open_files.find(pid);
    if (it == open_files.end()) it = open_files.emplace(pid, OpenFilesOf(pid, dev)).first;
    auto f = it->second.find(ino);
    return f == it->second.end() ? "" : f->second;
  };
  std::set<uint64_t> missing;
  for (PinRow& r : *rows) {
    const auto h = holders.find(r.rec.lease_id);
    if (h != holders.end()) r.file = lookup(h->second, r.rec.ino);
    if (r.file.empty()) r.file = lookup(r.rec.creator_pid, r.rec.ino);
    if (r.file.empty()) missing.insert(r.rec.ino);
  }
  if (missing.empty()) return;
  const std::map<uint64_t, std::string> walked =
      FindInodes(MountRoot(path, dev), missing, kWalkBudget);
  for (PinRow& r : *rows) {
    if (const auto w = walked.find(r.rec.ino); r.file.empty() && w != walked.end())
      r.file = w->second;
  }
}

// The pins `cmd` shows, with their leases' states and their files' paths.
// Only the pins of inode `only_ino` when it is not 0, of contexts created by
// `only_pid` when it is not 0. Returns kExitOk or what Fail returned.
int Collect(const std::string& cmd, const std::string& path, uint64_t only_ino, pid_t only_pid,
            std::vector<PinRow>* rows, PinTotals* totals) {
  const UniqueFd fd = Open(path, O_RDONLY);
  if (!fd.valid()) return Fail(cmd, path, errno);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Fail(cmd, path, errno);
  PinListing listing;
  if (const int err = ListPins(fd.get(), &listing); err != 0)
    return FailList(cmd, path, err);
  *totals = {listing.contexts, listing.refused_bad_rkey, listing.refused_fenced,
             listing.refused_other, listing.malformed_frames};
  // The lease list gives each pin's lease state and holder; a failure only
  // leaves them unknown ("?").
  std::vector<leasefs_lease_info> leases;
  (void)ListLeases(fd.get(), &leases);
  std::map<uint64_t, const leasefs_lease_info*> by_id;
  for (const leasefs_lease_info& l : leases) by_id.emplace(l.id, &l);
  std::map<uint64_t, pid_t> holders;
  const uid_t me = geteuid();
  for (const leasefs_pin_record& p : listing.pins) {
    if ((only_ino != 0 && p.ino != only_ino) || (only_pid != 0 && p.creator_pid != only_pid))
      continue;
    PinRow row{p, "", LEASEFS_STATE_NONE, me == 0 || p.uid == me};
    if (const auto l = by_id.find(p.lease_id); l != by_id.end()) {
      row.lease_state = l->second->state;
      holders.emplace(p.lease_id, l->second->holder_pid);
    }
    rows->push_back(row);
  }
  FindPaths(path, st.st_dev, holders, rows);
  return kExitOk;
}

int RunPins(const Args& a) {
  struct stat st {};
  const uint64_t only_ino =
      stat(a.path.c_str(), &st) == 0 && S_ISREG(st.st_mode) ? st.st_ino : 0;
  std::vector<PinRow> rows;
  PinTotals totals;
  if (const int rc = Collect("pins", a.path, only_ino, 0, &rows, &totals); rc != kExitOk) return rc;
  if (a.json)
    fmt::print("{}\n", PinsJson(rows, totals).dump(2));
  else
    fmt::print("{}", FormatPins(rows, totals));
  return kExitOk;
}

int RunFilePins(const Args& a) {
  std::vector<PinRow> rows;
  PinTotals totals;
  if (const int rc = Collect("file_pins", a.path, 0, a.pid, &rows, &totals); rc != kExitOk)
    return rc;
  if (a.json)
    fmt::print("{}\n", FilePinsJson(rows).dump(2));
  else
    fmt::print("{}", FormatFilePins(rows));
  return kExitOk;
}

}  // namespace pins_cmd

void AddPinsCommand(CLI::App& app, int* rc) {
  using namespace pins_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("pins", kPinsManPage);
  sub->add_option("MOUNT_OR_FILE", args->path, "a file or directory on the mount (default: .)");
  sub->add_flag("--json", args->json, "print JSON instead of the table");
  sub->callback([args, rc] { *rc = RunPins(*args); });
}

void AddFilePinsCommand(CLI::App& app, int* rc) {
  using namespace pins_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("file_pins", kFilePinsManPage);
  sub->add_option("MOUNT", args->path, "any file or directory on the mount")->required();
  sub->add_option("--pid", args->pid, "only the contexts this process created")
      ->check(CLI::Validator(
          [](std::string& s) {
            pid_t pid = 0;
            return CLI::detail::lexical_cast(s, pid) && pid > 0 ? std::string()
                                                                : "'" + s + "' is not a process id";
          },
          "PID"));
  sub->add_flag("--json", args->json, "print JSON instead of the text");
  sub->callback([args, rc] { *rc = RunFilePins(*args); });
}

}  // namespace leasefs::leasectl
