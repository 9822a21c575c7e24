// The close policies for files with pins (-o close_with_pins=, docs/pins.md
// "Closing a file with pins"): block-close answers FLUSH, the one request a
// close(2) waits for; kill-on-close acts at RELEASE. zombie needs nothing
// here: the lease table keeps a pinned lease as ZOMBIE at RELEASE.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
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
  const pid_t tid = fuse_req_ctx(req)->pid;
  // A dying process's closes never wait, whatever order its descriptors
  // close in (semantics-2019 §5 scenario 6): it is in do_exit (PF_EXITING)
  // from the first of them on.
  if (close_with_pins_ != PinMountOptions::Close::kBlockClose || !pins_ || f == nullptr ||
      tid <= 0 || pins_->PinsOf(f->id()) == 0 || pin::TaskExiting(tid)) {
    fuse_reply_err(req, 0);
    return 0;
  }
  const uint64_t file_id = f->id();
  const engine::Ino ino = f->ino();
  Defer(req, [this, tid, file_id, ino](fuse_req_t r) { return WaitUnpinned(r, tid, file_id, ino); });
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
  for (uint64_t own : pins_->ContextSocketsOf(file_id)) {
    auto peer = pin::PeerInode(own);
    if (!peer.ok()) continue;
    for (const pin::Holder& h : pin::HoldersOf(*peer)) {
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
