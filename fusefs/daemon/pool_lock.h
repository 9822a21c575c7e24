// The pool's lock: one daemon serves a pool at a time.
//
// The lock is flock(LOCK_EX) on the open pool, which mkfs.leasefs and
// fsck.leasefs take too, held for the daemon's life. umount (and fusermount3
// -u) returns as soon as the kernel has dropped the mount, while the daemon
// that served it is still finishing: it writes back inode timestamps and marks
// the pool clean, which takes a while on a large pool. So `umount MNT &&
// leasefs POOL MNT` may find the lock still held, by a daemon that serves
// nothing any more.
//
// To tell that daemon from one that still serves, each daemon publishes a
// holder record once its mount is up: its pid, the mount's ID and the mount
// point, in /run/leasefs/pool-DEV-INO (root) or $XDG_RUNTIME_DIR/leasefs/
// (anyone else; no record without it). A daemon that finds the lock held
// waits, up to a bound, only when all of this holds:
//   - /proc/locks names the record's pid as the holder of the pool's lock
//     (so a record left behind by a killed daemon, even with its pid reused,
//     is never believed);
//   - that process's /proc/PID/mountinfo no longer lists the recorded mount
//     (the mount ID together with the mount point: IDs are reused).
// In every other case (a daemon that still serves or has not mounted yet,
// fsck or mkfs at work, no record) it refuses at once, as before.
//
// The record is removed after the engine has marked the pool clean, just
// before the lock goes; a reader that finds no record in that instant tries
// the lock a few more times before it refuses.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <utility>

#include <sys/types.h>

#include "base/result.h"
#include "base/unique_fd.h"

namespace leasefs::daemon {

class PoolLock {
 public:
  // Called once, with the holder's pid, when Acquire starts waiting.
  using WaitNotice = std::function<void(pid_t holder)>;

  // Takes the lock on the open pool `fd` (`pool` names it in messages). If a
  // daemon whose mount is gone holds it, waits up to `max_wait` for it to
  // exit, calling `notice` once. Errors: EWOULDBLOCK with the message "POOL
  // is in use by another leasefs daemon", or "POOL is still held by the
  // leasefs daemon that served it (pid N) after S s"; errno of dup or flock.
  static Result<PoolLock> Acquire(int fd, const std::string& pool,
                                  std::chrono::milliseconds max_wait, const WaitNotice& notice);

  // Removes the holder record, then lets go of the lock. The pool's other
  // descriptors (the engine's) must be closed by then: flock's lock lives
  // until the last descriptor of the open file is closed.
  ~PoolLock();
  PoolLock(PoolLock&& o) noexcept
      : fd_(std::move(o.fd_)),
        record_(std::move(o.record_)),
        published_(std::exchange(o.published_, false)) {}
  PoolLock& operator=(PoolLock&&) = delete;
  PoolLock(const PoolLock&) = delete;
  PoolLock& operator=(const PoolLock&) = delete;

  // Publishes the holder record for this daemon's mount, the newest FUSE
  // mount on `canonical_mountpoint`. Call once the mount is up. Best effort:
  // without a record a successor refuses instead of waiting, as it always
  // did; the reason is returned for the log.
  Status Publish(const std::string& canonical_mountpoint);

 private:
  PoolLock(UniqueFd fd, std::string record) : fd_(std::move(fd)), record_(std::move(record)) {}

  UniqueFd fd_;         // a dup of the pool's descriptor: keeps the lock
  std::string record_;  // the holder record's path; empty: no place for one
  bool published_ = false;
};

}  // namespace leasefs::daemon
