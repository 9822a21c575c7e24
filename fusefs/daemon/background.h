// Going to the background so that `leasefs POOL MNT && ls MNT` works: the
// command returns only once the mount is ready, with the daemon's verdict.
//
// We fork at the very start, before anything opens the pool or starts a
// thread (a fork keeps only the calling thread, and the engine may start
// threads at mount), rather than after the mount as fuse_daemonize(3) does.
// The parent then waits for the child to report.
#pragma once

#include "base/result.h"
#include "base/unique_fd.h"

namespace leasefs::daemon {

class Background {
 public:
  // Forks. The parent never returns: it waits until the child calls Ready()
  // (then exits 0) or exits (then exits with the child's status, 1 if it was
  // killed). The child returns, as the leader of a new session, with stdio
  // still on the caller's terminal so it can report errors.
  // Errors: those of pipe(2) and fork(2).
  static Result<Background> Start();

  // Child: the mount is ready. Detaches stdio (to /dev/null) and the working
  // directory (to /), then lets the parent exit 0. Call once.
  void Ready();

 private:
  explicit Background(UniqueFd ready) : ready_(std::move(ready)) {}
  UniqueFd ready_;  // the pipe's write end; a byte written = mounted
};

}  // namespace leasefs::daemon
