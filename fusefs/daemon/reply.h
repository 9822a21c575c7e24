// The one rule of the FUSE edge: every request gets exactly one reply, and no
// C++ exception reaches libfuse's C frames.
#pragma once

#include <fuse_lowlevel.h>

#include <cerrno>
#include <new>

#include "base/status.h"

namespace leasefs::daemon {

// The errno to reply for a failed engine call (EIO if it carries none).
inline int ErrnoOf(const Status& s) noexcept { return s.err() > 0 ? s.err() : EIO; }

// Runs `body`, which sends its reply and returns 0, or sends none and returns
// the errno to reply with; replies that errno. bad_alloc becomes ENOMEM, any
// other exception EIO. A body must send its reply as its last action, so that
// nothing can throw after it.
template <typename Body>
void ReplyOnce(fuse_req_t req, Body&& body) noexcept {
  int err = 0;
  try {
    err = body();
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  } catch (...) {
    err = EIO;
  }
  if (err != 0) fuse_reply_err(req, err);
}

}  // namespace leasefs::daemon
