// Taking a file descriptor of the process that sent a request: the clone
// source or move donor a leasefs ioctl names by number, as FICLONERANGE and
// EXT4_IOC_MOVE_EXT do (the rule is written once, in include/leasefs/ioctl.h).
//
// A number means nothing on its own: another thread of the caller can dup2()
// a different file onto it at any moment. So the daemon never looks the
// number up and then acts on what it found; it takes its own duplicate of the
// caller's open file in one step (pidfd_open + pidfd_getfd) and makes every
// check on that duplicate: F_GETFL for the access mode and O_PATH, statx for
// the filesystem and the inode. Nothing the caller does afterwards changes
// what the duplicate is, and holding it keeps the inode from going away
// while the command runs.
//
// The pid in a request names the calling thread, and a thread killed while
// its request waits frees its pid for reuse. Before taking anything, the
// daemon checks through the pidfd (which keeps naming the task it was opened
// on) that the task still has the request's fsuid and fsgid, so that a
// recycled pid cannot lend the caller another user's descriptors.
//
// Taking a descriptor needs the right to ptrace the caller (root has it). A
// daemon that lacks it refuses the command with EPERM and logs why; there is
// no weaker fallback.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"

namespace leasefs::daemon {

class Closer;

// The daemon's duplicate of a caller's open file, and what it is.
// Closing a file of another filesystem can block (a FUSE daemon that never
// answers FLUSH), so such files are closed on a thread of their own, a few
// per user at most (see Closer in peer_fd.cc).
class PeerFile {
 public:
  PeerFile() = default;
  PeerFile(PeerFile&&) noexcept = default;
  PeerFile& operator=(PeerFile&&) noexcept = default;
  ~PeerFile();

  uint64_t ino = 0;      // the inode number (the engine's, when same_fs)
  mode_t type = 0;       // S_IFMT bits
  int flags = 0;         // the open file's flags (F_GETFL)
  bool same_fs = false;  // open on this daemon's filesystem

  bool readable() const noexcept { return (flags & O_ACCMODE) != O_WRONLY; }
  bool writable() const noexcept { return (flags & O_ACCMODE) != O_RDONLY; }

 private:
  friend class PeerFiles;
  UniqueFd fd_;
  std::shared_ptr<Closer> closer_;  // for files of other filesystems
  uid_t owner_ = 0;                 // whose descriptor it was
};

class PeerFiles {
 public:
  // `mountpoint`: where this daemon's filesystem is mounted (canonical path).
  explicit PeerFiles(std::string mountpoint);
  ~PeerFiles();
  PeerFiles(const PeerFiles&) = delete;
  PeerFiles& operator=(const PeerFiles&) = delete;

  // Takes the daemon's own duplicate of descriptor `fd` of the thread that
  // sent the request described by `ctx`.
  // Errors: EBADF (not an open descriptor, or opened O_PATH); EPERM (the
  // daemon may not take the caller's descriptors, or the caller is no longer
  // the task that sent the request: logged); ESRCH (the caller is gone);
  // EAGAIN (files of other filesystems that this user named are still
  // closing, as many as allowed: logged); EMFILE/ENFILE (the daemon is out
  // of descriptors).
  Result<PeerFile> Take(const fuse_ctx& ctx, int64_t fd);
  // Whether this daemon's own files get FLUSH on close (no noflush:
  // close_with_pins=block-close): then the duplicates of them are closed
  // off the request threads too, since closing one sends a FLUSH that a
  // request thread must answer. REQUIRES: before the session loop starts.
  void SetOwnFilesFlush(bool on) { own_files_flush_ = on; }

  // This daemon's mount's device, from /proc/self/mountinfo (looked up once,
  // on first use, when the mount certainly exists).
  Result<dev_t> OwnDevice();

 private:

  std::string mountpoint_;
  Mutex mu_;  // requests arrive on several threads
  std::optional<dev_t> own_device_ GUARDED_BY(mu_);
  std::shared_ptr<Closer> closer_;
  bool own_files_flush_ = false;
};

// The "major:minor" field of the last FUSE mount on `path` that user
// `mounter` made (its superblock options say "user_id=<mounter>", as libfuse
// and fusermount3 write the mounting user's uid), in a mountinfo text (paths
// are compared after mountinfo's octal escapes are undone), or "". Mounts
// of other users stacked on the same path are not ours.
std::string DeviceOfMountPoint(const std::string& mountinfo, const std::string& path,
                               uid_t mounter);

// The fsuid and fsgid (the fourth field of "Uid:" and "Gid:") in the text of
// /proc/<pid>/status; false if either is missing.
bool FsIdsFromStatus(const std::string& status, uid_t* fsuid, gid_t* fsgid);

}  // namespace leasefs::daemon
