// The kernel's page cache of leasefs files, which exists only for mappings:
// every read and write is direct I/O, but with shared mappings on
// (fuse_io.h) the kernel keeps the pages a mapping touches, dirty ones
// included, and writes them back later as WRITE requests. The kernel keeps
// those pages coherent with its own requests (docs/mmap.md); the changes it
// does not know of are the leasefs ioctls, which end here.
#include <fuse_lowlevel.h>

#include <cerrno>

#include "fusefs/daemon/fuse_io.h"
#include "fusefs/daemon/server.h"

namespace leasefs::daemon {

namespace {

// Whether the kernel may hold dirty pages of our files.
bool SharedMmapOn() { return InitFlagsOutcome().granted & kFuseDirectIoAllowMmap; }

}  // namespace

bool Server::SharedMappings() noexcept { return SharedMmapOn(); }

void Server::DropCachedPages(const std::vector<PageRange>& ranges) noexcept {
  for (const PageRange& r : ranges) {
    // The kernel writes back the dirty pages of the range (launder) before
    // it drops them, waiting for each WRITE's reply; ENOENT says the kernel
    // has no inode for it, so nothing is cached.
    const auto len = static_cast<off_t>(r.length);
    fuse_lowlevel_notify_inval_inode(se_, r.ino, static_cast<off_t>(r.offset), len);
  }
}

int Server::WithPageCache(fuse_req_t req, const engine::Cred& cred, bool nonblock,
                          std::vector<PageRange> stale, LayoutCall call) {
  // Without shared mappings the kernel caches only clean pages (of private
  // mappings): dropping them sends nothing, so the loop may do it.
  if (stale.empty() || !SharedMmapOn()) return WithBreaks(req, cred, nonblock, std::move(call));
  engine::Cred later = CredWithGroups(req);  // the caller may be gone later
  later.set_open_file(cred.open_file());
  LayoutCall flushed = [this, stale = std::move(stale), call = std::move(call)](
                           fuse_req_t r, const engine::Cred& c) {
    // Dirty pages reach the pool before the change reads or moves their
    // bytes, and none of the old bytes stays cached.
    DropCachedPages(stale);
    return call(r, c);
  };
  flushers_.Submit(req, [this, later = std::move(later), nonblock,
                         flushed = std::move(flushed)](fuse_req_t r) {
    const int rc = flushed(r, later);
    if (rc != ERESTART) return rc;
    // A lease is in the way: break it here, waiting on this thread.
    if (nonblock) return BreakThenRetry(r, later, /*nonblock=*/true, flushed);
    std::optional<engine::LayoutChange> change = LeaseEdge::TakeRefused();
    return change ? BreakAndRetry(r, later, flushed, *change) : EIO;
  });
  return 0;
}

}  // namespace leasefs::daemon
