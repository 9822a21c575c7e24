// The close policies for files with pins (-o close_with_pins=, docs/pins.md
// "Closing a file with pins"): block-close answers FLUSH, the one request a
// close(2) waits for; kill-on-close acts at RELEASE. zombie needs nothing
// here: the lease table keeps a pinned lease as ZOMBIE at RELEASE.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>

#include "fusefs/daemon/server.h"
#include "lease/process.h"
#include "pin/holders.h"

namespace leasefs::daemon {

namespace {

// What a FUSE INTERRUPT of a blocked close sets, and whom it wakes.
struct CloseWait {
  std::atomic<bool> interrupted{false};
  const pin::PinTable* pins = nullptr;
};

void InterruptClose(fuse_req_t, void* data) {
  auto* w = static_cast<CloseWait*>(data);
  w->interrupted.store(true);
  w->pins->Wake();
}

}  // namespace

int Server::DoFlush(fuse_req_t req, const fuse_file_info* fi) {
  const OpenFile* f = FileOf(fi);
  const fuse_ctx* ctx = fuse_req_ctx(req);
  const pid_t tid = ctx->pid;
  // A dying process's closes never wait, whatever order its descriptors
  // close in (semantics-2019 §5 scenario 6): it is in do_exit (PF_EXITING)
  // from the first of them on. Nor does anybody but the pins' own user (a
  // descriptor can be passed to a process that merely closes it), nor the
  // daemon itself (its duplicates of callers' files).
  if (close_with_pins_ != PinMountOptions::Close::kBlockClose || !pins_ || f == nullptr ||
      tid <= 0 || pins_->PinsOf(f->id()) == 0 || !pins_->PinnedBy(f->id(), ctx->uid) ||
      pin::TaskExiting(tid)) {
    fuse_reply_err(req, 0);
    return 0;
  }
  if (auto tgid = lease::ThreadGroupOf(tid); !tgid.ok() || *tgid == getpid()) {
    fuse_reply_err(req, 0);
    return 0;
  }
  // Each waiting close holds a worker, which lease breaks, UNPIN (the very
  // thing it waits for) and others need: at most a quarter of them wait
  // (beyond, the close goes through as under zombie).
  if (flush_waits_.fetch_add(1) >= static_cast<int>(kMaxWaitThreads / 4)) {
    flush_waits_.fetch_sub(1);
    fuse_reply_err(req, 0);
    return 0;
  }
  // Given back when the task goes, run or not (Defer may refuse it).
  std::shared_ptr<void> slot(nullptr, [this](void*) { flush_waits_.fetch_sub(1); });
  const uint64_t file_id = f->id();
  const engine::Ino ino = f->ino();
  Defer(req, [this, tid, file_id, ino, slot](fuse_req_t r) {
    return WaitUnpinned(r, tid, file_id, ino);
  });
  return 0;
}

int Server::WaitUnpinned(fuse_req_t req, pid_t tid, uint64_t file_id, engine::Ino ino) {
  // The closing process keeps another descriptor of the inode: this is not
  // its last close (the closest to "last" the daemon can see). The daemon's
  // own closes (its duplicates of callers' files) never wait either.
  auto tgid = lease::ThreadGroupOf(tid);
  bool other = !tgid.ok() || *tgid == getpid();
  if (!other && peers_) {
    auto dev = peers_->OwnDevice();
    if (dev.ok()) {
      auto holds = pin::HoldsInode(*tgid, *dev, ino);
      other = holds.ok() && *holds;  // unreadable: taken as the last close
    }
  }
  if (!other) {
    CloseWait w;
    w.pins = pins_.get();
    // Called at once if the INTERRUPT came already. The kernel waits for a
    // FLUSH's answer without a timeout once it sent INTERRUPT, so every
    // interrupt ends the wait (a fatal signal is how one comes).
    fuse_req_interrupt_func(req, InterruptClose, &w);
    const bool unpinned = pins_->WaitUnpinned(file_id, [&w] { return w.interrupted.load(); });
    fuse_req_interrupt_func(req, nullptr, nullptr);
    if (!unpinned) return EINTR;
  }
  fuse_reply_err(req, 0);
  return 0;
}

void Server::KillPinHolders(uint64_t file_id) {
  if (close_with_pins_ != PinMountOptions::Close::kKillOnClose || !pins_ ||
      pins_->PinsOf(file_id) == 0) {
    return;
  }
  // The holders of every context with a pin through this file, as lsof
  // finds them; then the pins go at once, whatever became of the holders.
  for (const auto& socket : pins_->ContextSocketsOf(file_id)) {
    auto peer = pin::PeerInode(socket.inode);
    if (!peer.ok()) continue;
    // Only processes the pins' own user could kill itself: a context's
    // descriptor can be passed to anybody (SCM_RIGHTS to a service that
    // keeps what it receives), and the daemon's right to kill is not the
    // pinner's. Root's contexts: whoever holds them.
    const std::optional<uid_t> only =
        socket.uid == 0 ? std::nullopt : std::optional<uid_t>(socket.uid);
    for (const pin::Holder& h : pin::HoldersOf(*peer, only)) {
      if (syscall(SYS_pidfd_send_signal, h.pidfd.get(), SIGKILL, nullptr, 0) == 0 || errno != EPERM) {
        continue;
      }
      // Never as root (CAP_KILL); otherwise only a holder that changed its
      // uids since its descriptors were read (docs/pins.md): it lives on,
      // its context without these pins.
      fuse_log(FUSE_LOG_WARNING,
               "leasefs: close_with_pins=kill-on-close: may not kill pid %d, which holds a "
               "context of pins on a closed file; its pins there are aborted\n",
               static_cast<int>(h.pid));
    }
  }
  (void)pins_->AbortPinsOf(file_id);
}

}  // namespace leasefs::daemon
