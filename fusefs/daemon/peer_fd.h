// Resolving a file descriptor of the process that sent a request: the clone
// source or move donor a leasefs ioctl names by fd (as FICLONERANGE and
// EXT4_IOC_MOVE_EXT do). The daemon cannot use the fd itself, so it reads
// what the kernel says of it in /proc/<pid>/fdinfo/<fd> (inode number, open
// flags, mount id) and checks, through /proc/<pid>/mountinfo, that the mount
// is a mount of this daemon's filesystem (same device number).
//
// The kernel answers these reads itself; they never come back to this daemon
// as FUSE requests, so they are safe on a loop thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "base/result.h"

namespace leasefs::daemon {

struct PeerFile {
  uint64_t ino = 0;
  int flags = 0;  // open flags (O_ACCMODE and the rest)
};

class PeerFiles {
 public:
  // `mountpoint`: where this daemon's filesystem is mounted (canonical path).
  explicit PeerFiles(std::string mountpoint) : mountpoint_(std::move(mountpoint)) {}

  // The file `fd` of process `pid` is open on.
  // Errors: EBADF (no such fd), EXDEV (not on this filesystem), EPERM
  // (cannot read the process's /proc entries).
  Result<PeerFile> Resolve(pid_t pid, int fd);

 private:
  // major:minor of this daemon's mount, from /proc/self/mountinfo (looked up
  // once, on first use, when the mount certainly exists).
  Result<std::string> OwnDevice();

  std::string mountpoint_;
  std::mutex mu_;  // guards own_device_ (requests arrive on several threads)
  std::string own_device_;
};

// The "major:minor" field of mount `mnt_id` in a mountinfo text, or "".
std::string DeviceOfMount(const std::string& mountinfo, uint64_t mnt_id);
// The "major:minor" field of the last mount on `path` in a mountinfo text
// (paths are compared after mountinfo's octal escapes are undone), or "".
std::string DeviceOfMountPoint(const std::string& mountinfo, const std::string& path);

}  // namespace leasefs::daemon
