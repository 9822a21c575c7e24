// LeaseEdge: the daemon's side of the lease layer. It owns the mount's lease
// table (lease/), stands between the engine and the table as the engine's
// layout guard, and carries break notices to holders blocked in poll(2).
//
// How a layout change meets the leases (docs/leases.md, "One path"):
//   1. The daemon calls the engine. Under its lock, before it changes
//      anything, the engine describes the change to its guard (MayChange).
//      With no lease in the way it goes ahead: this is the whole cost when
//      nobody holds a lease on the file.
//   2. If a breakable lease is in the way, the guard answers ERESTART and
//      this edge remembers, on the calling thread, the change it refused.
//      The engine returns ERESTART having changed nothing.
//   3. The daemon breaks the leases that conflict with that change, off the
//      FUSE loop and with no engine lock held (Server::WithBreaks), and
//      calls the engine again, which asks the guard again: a lease granted
//      while the daemon waited sends the operation round once more.
// So the engine, which alone knows what an operation changes (whether a
// write allocates, which blocks a clone shares), decides what is broken, and
// no operation can change a layout without the guard's yes.
#pragma once

#include <optional>

#include "engine/layout_guard.h"
#include "fusefs/daemon/open_file.h"
#include "lease/lease_table.h"

namespace leasefs::daemon {

class LeaseEdge final : public engine::LayoutGuard, public lease::BreakNotifier {
 public:
  LeaseEdge(const lease::Options& options, OpenFiles* files)
      : files_(files), table_(options, this) {}

  lease::LeaseTable& table() { return table_; }

  // engine::LayoutGuard: the table's answer; an ERESTART is remembered on
  // this thread for TakeRefused.
  Status MayChange(const engine::Cred& by, const engine::LayoutChange& change) override;
  // The change the guard last refused with ERESTART on this thread, once.
  static std::optional<engine::LayoutChange> TakeRefused();

  // lease::BreakNotifier: wakes the open file's poller.
  void LeaseBreaking(lease::OpenFileId id) noexcept override;

 private:
  OpenFiles* const files_;
  lease::LeaseTable table_;
};

// Lets a FUSE INTERRUPT of `req` cancel `token` while the scope lives. The
// scope must end before `req` is replied to: its end waits for a callback
// already running, so the token may go once it has ended.
class InterruptScope {
 public:
  InterruptScope(fuse_req_t req, lease::WaitToken* token);
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  fuse_req_t req_;
};

}  // namespace leasefs::daemon
