// What `leasectl top` shows of a mount, gathered: the leases, the pins, the
// DAX runs with quarantined blocks and the end of the event log, with the
// paths of their files (top_format.h lays them out).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include <sys/types.h>

#include "leasefs/ioctl.h"
#include "tools/leasectl/top_format.h"

namespace leasefs::leasectl {

// TopWatcher::Look's error when the path is no longer on the mount it was
// on (unmounted: the path now leads to the directory below).
inline constexpr int kUnmounted = -1;

// Looks at the mount that a path is on, again and again. Keeps what it
// learns from one look to the next: the events read so far (the last 512),
// and where the walk of the mount found files.
//
// Thread safety: none; one thread at a time.
class TopWatcher {
 public:
  // `path` is on the mount whose device is `dev`.
  TopWatcher(std::string path, dev_t dev) : path_(std::move(path)), dev_(dev) {}

  // One look into *out. Returns 0, an errno value (what opening the path,
  // LEASEFS_IOC_LIST_LEASES or the other lists gave: ENOTTY on another
  // filesystem, ENOTCONN once the daemon is gone), or kUnmounted. A daemon
  // without pins or without the DAX list gives have_pins or have_dax false,
  // not an error. The path is opened anew each time: a descriptor kept open
  // would make the mount busy, and its unmount fail.
  int Look(TopData* out);

 private:
  int LookPins(int fd, const std::vector<leasefs_lease_info>& leases, TopData* out);
  int LookDax(int fd, TopData* out);
  int ReadEvents(int fd);
  void FindFiles(TopData* out);

  std::string path_;
  dev_t dev_;
  uint64_t after_ = 0;  // the last event read
  std::deque<leasefs_event> events_;
  struct Walked {
    std::string path;  // "" when the walk did not meet it
    uint64_t at_ns;    // CLOCK_MONOTONIC
  };
  std::map<uint64_t, Walked> walked_;  // by inode
};

// Why top stopped watching a mount that answered before: "the mount went
// away (...)" for a dead daemon (ENOTCONN), an unmount (kUnmounted) or a
// path that is gone; else the error's text (ErrorText).
std::string LostText(int err);

}  // namespace leasefs::leasectl
