#include "fusefs/daemon/lease_edge.h"

#include <cerrno>

namespace leasefs::daemon {

namespace {

// The change the guard refused last on this thread. The engine calls its
// guard on the thread that called the engine, and the daemon reads this
// right after that call returned.
thread_local std::optional<engine::LayoutChange> refused;

void CancelToken(fuse_req_t, void* token) { static_cast<lease::WaitToken*>(token)->Cancel(); }

}  // namespace

Status LeaseEdge::MayChange(const engine::Cred& by, const engine::LayoutChange& change) {
  Status s = table_.MayChange(by, change);
  if (s.err() == ERESTART) refused = change;
  return s;
}

std::optional<engine::LayoutChange> LeaseEdge::TakeRefused() {
  std::optional<engine::LayoutChange> c;
  c.swap(refused);
  return c;
}

void LeaseEdge::LeaseBreaking(lease::OpenFileId id) noexcept {
  // Holding a reference: the file may be released meanwhile.
  if (auto f = files_->Find(id)) f->NotifyPoll();
}

InterruptScope::InterruptScope(fuse_req_t req, lease::WaitToken* token) : req_(req) {
  // Called at once if the INTERRUPT came already.
  fuse_req_interrupt_func(req, CancelToken, token);
}

InterruptScope::~InterruptScope() {
  // libfuse runs the callback under the request's own lock, which this
  // takes too: once it returns, no callback runs or will run.
  fuse_req_interrupt_func(req_, nullptr, nullptr);
}

}  // namespace leasefs::daemon
