// What the listing subcommands (leases, pins, file_pins) learn about a mount
// beyond one ioctl: every lease and every pin, page after page, and where
// files are: the paths processes have them open under, and a bounded walk of
// the mount for the rest.
#pragma once

#include <sys/types.h>

#include <dirent.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "leasefs/ioctl.h"
#include "tools/leasectl/bmap_format.h"

namespace leasefs::leasectl {

// Every lease of the mount of `fd` (LEASEFS_IOC_LIST_LEASES from 0, again
// from the last id while LEASEFS_LIST_MORE). Returns 0 or an errno value
// (EPROTO: a daemon that said "more" and gave nothing new).
int ListLeases(int fd, std::vector<leasefs_lease_info>* out);

// Every pin the caller may see, with the soft NIC's totals.
struct PinListing {
  std::vector<leasefs_pin_record> pins;  // in pin id order
  uint64_t contexts = 0;                 // contexts open (the caller's own, unless root)
  uint64_t refused_bad_rkey = 0;         // the soft NIC's refusals, all users
  uint64_t refused_fenced = 0;
  uint64_t refused_other = 0;
  uint64_t malformed_frames = 0;
};
// LEASEFS_IOC_PIN_LIST from 0, again from the last pin id while
// LEASEFS_LIST_MORE; the totals are the last page's. Returns 0 or an errno
// value (EOPNOTSUPP: a daemon without pins; ENOTTY: not leasefs; EPROTO as
// above).
int ListPins(int fd, PinListing* out);

// The block map of the file open on `fd` (LEASEFS_IOC_BMAP from 0, again
// from `next` while LEASEFS_BMAP_MORE): fills map->size, block_size and
// extents. Returns 0 or an errno value (IoctlError's; EPROTO: a daemon that
// broke the ABI's promises).
int ReadBlockMap(int fd, BlockMap* map);

// The DAX records of the mount and the quarantine's totals.
struct DaxListing {
  std::vector<leasefs_dax_record> records;  // in map id order
  uint64_t quarantined_total = 0;           // bytes, whole pool
  uint64_t records_total = 0;
  uint64_t records_max = 0;
};
// LEASEFS_IOC_DAX_LIST from 0, again from the last map id while
// LEASEFS_LIST_MORE; the totals are the last page's. Returns 0 or an errno
// value (ENOTTY: not leasefs; EPROTO as above).
int ListDax(int fd, DaxListing* out);

// The paths of process `pid`'s open files on device `dev`, by inode
// (readlink of /proc/PID/fd/N); empty where /proc does not show them (another
// user's process, a dead one).
std::map<uint64_t, std::string> OpenFilesOf(pid_t pid, dev_t dev);

// The directory the mount of `path` (on device `dev`) starts at: `path`'s
// real path, climbed while the parent is on the same device. "" when
// realpath fails.
std::string MountRoot(const std::string& path, dev_t dev);

// Called for each entry a walk meets: its path (the root's path, "/", then
// the names) and its directory entry; returns false to end the walk.
using WalkVisitor = std::function<bool(const std::string& path, const dirent& entry)>;

// Walks the tree under `root` breadth first, by what readdir gives (no stat
// per entry), without leaving `root`'s device, skipping directories it may
// not read, and looking at no more than `budget` entries. Returns the budget
// left: 0 when the walk stopped for want of it (there may be more).
size_t WalkMount(const std::string& root, size_t budget, const WalkVisitor& visit);

// Looks for the inodes `wanted` under `root`, breadth first, by the inode
// numbers readdir gives (no stat per entry), without leaving `root`'s device
// and looking at no more than `budget` entries. Returns the path of each one
// found (the first name met, for a file with several links); directories it
// may not read are skipped.
std::map<uint64_t, std::string> FindInodes(const std::string& root, std::set<uint64_t> wanted,
                                           size_t budget);

// Entries FindInodes looks at for leasectl's listings: a walk of a large
// tree stops there and the files not met read "?".
inline constexpr size_t kWalkBudget = 100000;

}  // namespace leasefs::leasectl
