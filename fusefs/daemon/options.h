// The leasefs daemon's settings: what the command line asked for, and the
// -o option list split into leasefs's own options and those for libfuse.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/filesystem.h"

namespace leasefs::daemon {

// How long the kernel may trust what a reply told it, in seconds.
struct Timeouts {
  double attr = 1.0;      // attributes (getattr, entries)
  double entry = 1.0;     // a name -> inode binding
  double negative = 1.0;  // "no such name" (0: not cached)
};

// Layout leases (docs/leases.md): the rules the 2019 debate left open, as
// the mount chooses them.
struct LeaseMountOptions {
  // lease_break_time=SECONDS: how long a breaker waits for a holder to
  // release before the lease is revoked (as /proc/sys/fs/lease-break-time);
  // 0: never revoked.
  double break_time = 45;
  // write_break=unmap-only (default): only writes that allocate break
  // leases ([Dan], [Sep19]); xfs-faithful: every write does (XFS's
  // BREAK_WRITE).
  bool every_write_breaks = false;
  // pinned_break=refuse|fence|wait: what a break that meets pins does
  // (docs/pins.md "Breaks and pins").
  enum class Pinned { kRefuse, kFence, kWait } pinned_break = Pinned::kRefuse;
};

// Pins (docs/pins.md).
struct PinMountOptions {
  // softnic=ADDRESS:PORT or softnic=off: where the soft NIC listens (IPv4;
  // port 0: one the kernel picks). Loopback unless told otherwise: any
  // local user can connect to a listening socket.
  bool softnic = true;
  bool softnic_given = false;  // asked for explicitly: failing to start fails the mount
  std::string softnic_address = "127.0.0.1";
  uint16_t softnic_port = 0;
  // close_with_pins=zombie|block-close|kill-on-close: what the close of an
  // open file with pins does (docs/pins.md "Closing a file with pins").
  enum class Close { kZombie, kBlockClose, kKillOnClose } close_with_pins = Close::kZombie;
  // pin_passing=follow-fd|strict: what becomes of a context's pins when its
  // creator dies and others hold it (docs/pins.md "Passing a context").
  bool strict_passing = false;
};

struct DaemonOptions {
  std::string pool;        // as given on the command line
  std::string mountpoint;  // as given on the command line
  bool foreground = false;
  bool debug = false;      // libfuse request log; implies foreground
  // Loop threads; 1 = fuse_session_loop. 0 until FinishOptions: one per CPU
  // the daemon may run on (docs/threading.md).
  unsigned threads = 0;
  bool read_only = false;  // -o ro: the engine refuses changes too
  // The atime options as the kernel keeps them for a local filesystem: flags
  // that "no..." forms clear, combined by EngineOptions. FUSE leaves atime
  // to the daemon, so the engine applies them.
  bool noatime = false;
  bool strictatime = false;
  bool nodiratime = false;
  // The kernel checks permissions too (see ApplyOption). On by default.
  bool default_permissions = true;
  // -o mmap=shared (the default): mmap(MAP_SHARED) of a file works, the
  // kernel caching the mapped pages (docs/mmap.md); mmap=private-only: it
  // fails with ENODEV, as FUSE has it for direct-I/O files.
  bool shared_mmap = true;
  Timeouts timeouts;
  LeaseMountOptions leases;
  PinMountOptions pins;
  // Options for libfuse, each already escaped as fuse_opt expects ("\,").
  std::vector<std::string> fuse_options;
  bool has_fsname = false;            // the user chose fsname=, keep it
  bool has_subtype = false;           // the user chose subtype=, keep it
  bool has_entry_timeout = false;     // the user chose entry_timeout=
  bool has_negative_timeout = false;  // the user chose negative_timeout=
  // -o remount: change the options of the running mount at `mountpoint`
  // (remount.h) instead of mounting; `items` are the -o items as given.
  bool remount = false;
  std::vector<std::string> items;
};

// Splits one -o argument at the commas that are not escaped by a backslash.
// Items keep their escapes; empty items are dropped.
std::vector<std::string> SplitOptionList(std::string_view list);

// Applies one -o item to *opts: threads=, attr_timeout=, entry_timeout=,
// negative_timeout=, lease_break_time=, write_break=, pinned_break=, softnic=,
// close_with_pins=, pin_passing=, mmap=,
// default_permissions and no_default_permissions are leasefs's; "ro"/"rw" set read_only and also go to libfuse; the atime
// options (noatime, atime, relatime, norelatime, strictatime, nostrictatime,
// nodiratime, diratime) set the flags above, and FuseArgs passes the kernel
// what it knows of the result; lazytime is accepted and changes nothing, as
// leasefs persists the timestamps reads and overwrites set lazily anyway;
// everything else goes to libfuse unchanged (libfuse rejects what it does
// not know). Errors: EINVAL (bad value of one of leasefs's options).
//
// default_permissions is on unless turned off: the kernel walks cached names
// (entry_timeout) without asking the daemon, so only the kernel can enforce
// search permission on them. Its checks are exact, as every attribute change
// goes through this daemon; the engine checks everything again.
Status ApplyOption(std::string_view item, DaemonOptions* opts);

// Settles what depends on several options, once all are applied: the
// thread count unless given (one per CPU the daemon may run on, at most 8);
// with no_default_permissions, names are not cached (entry_timeout and
// negative_timeout 0 unless given), so that every path walk reaches the
// engine's search-permission check.
void FinishOptions(DaemonOptions* opts);

// What the engine is mounted with: read-only, and the atime rule as the
// kernel combines the flags, in any order: strictatime wins over noatime,
// which wins over relatime (the default).
engine::MountOptions EngineOptions(const DaemonOptions& opts);

// The mount point's own flags, which the kernel keeps per mount and a
// remount sets with mount(2) (nosuid, nodev, noexec, sync, dirsync, and
// their opposites), and the options of mount(8) and fstab that mean nothing
// to a filesystem (defaults, x-*, comment=...).
bool IsMountPointOption(std::string_view item);

// A remount of a mount whose options are `now`, with the -o `items` of
// `mount -o remount,...` (docs/mount.md): *next gets `now` with the changes
// a mounted leasefs can make live. As mount(2) takes a remount's flags, the
// items are the whole new state of those: read-only only if "ro" is named;
// the atime rule as the atime options name it, in order, or `now`'s when
// none is named (a relatime named after noatime or strictatime returns to
// relatime, as MS_RELATIME does). What mount(8) repeats of the mount's own
// state passes: "remount", the mount point's flags (IsMountPointOption; the
// kernel's part), user_id= and group_id= naming `uid` and `gid` (the kernel
// shows the mounting user's), and any other option that names what the
// mount already has. Errors: EINVAL, naming the first option that would
// change something else (or has a bad value).
Status PlanRemount(const DaemonOptions& now, const std::vector<std::string>& items, uid_t uid,
                   gid_t gid, DaemonOptions* next);

// Escapes ',' and '\' so that `value` survives fuse_opt's option splitting.
std::string EscapeOptionValue(std::string_view value);

// The argument vector for fuse_session_new: program name, "-o" with the
// libfuse options plus fsname=`fsname` and subtype=leasefs unless the user
// chose them, default_permissions unless turned off, noatime when that is
// the atime rule (so that /proc/mounts shows it; libfuse 3.14 refuses the
// other atime options, so there the mount shows the kernel's "relatime"
// whatever the rule), and "-d" for debug.
std::vector<std::string> FuseArgs(const DaemonOptions& opts, std::string_view fsname);

}  // namespace leasefs::daemon
