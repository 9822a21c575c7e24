// The break watcher: one thread that polls POLLPRI on every leased
// descriptor of the shim and, on a break, degrades the inode's mappings and
// releases its lease (shim.h).
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "lease/client/leasefs_lease.h"
#include "tools/run/shim.h"

namespace leasefs::run {
namespace {

// What the watcher polls, copied out of the tables under the lock.
struct PollSet {
  pollfd fds[kMaxInodes + 1];
  int inode[kMaxInodes + 1];
  uint32_t gen[kMaxInodes + 1];
  nfds_t n = 0;
  bool any_shared = false;
};

// How often the lease of an open file shared with a fork is looked at.
constexpr int kSharedCheckMs = 20;

void Build(PollSet* s) {
  s->n = 0;
  s->any_shared = false;
  s->fds[s->n++] = pollfd{g_state.wake_fd, POLLIN, 0};
  for (int i = 0; i < kMaxInodes; ++i) {
    const Inode& n = g_state.inodes[i];
    if (!n.used || n.lease_type == 0 || n.fd < 0) continue;
    s->inode[s->n] = i;
    s->gen[s->n] = n.gen;
    s->any_shared = s->any_shared || n.shared;
    s->fds[s->n++] = pollfd{n.fd, POLLPRI, 0};
  }
}

// Whether the lease of a shared open file is no longer the one this
// process maps under. POLLPRI reaches every process polling the file, but
// only while the lease is breaking: if the other process released it first,
// this one's poll never returns.
bool SharedLeaseGone(const Inode& n) {
  if (!n.shared) return false;
  leasefs_lease_info info{};
  if (leasefs_get_lease(n.fd, 0, &info) != 0) return false;  // ask again later
  return info.id != n.lease_id || info.state != LEASEFS_STATE_ACTIVE;
}

// A break (POLLPRI), a dead daemon (POLLERR, POLLHUP), or a shared lease
// gone: either way the mapping must not stay.
void Handle(const PollSet& s) {
  for (nfds_t k = 1; k < s.n; ++k) {
    const int i = s.inode[k];
    const Inode& n = g_state.inodes[i];
    if (!n.used || n.gen != s.gen[k] || n.fd != s.fds[k].fd) continue;  // gone meanwhile
    if ((s.fds[k].revents & (POLLPRI | POLLERR | POLLHUP)) == 0 && !SharedLeaseGone(n)) continue;
    Log("break on inode %llu (revents %#x): dropping its DAX mappings",
        static_cast<unsigned long long>(n.ino), static_cast<unsigned>(s.fds[k].revents));
    DegradeInode(i);
  }
}

PollSet g_poll;  // the watcher's alone (one watcher per process)

void* Watch(void*) {
  InShimScope scope;  // every mmap call of this thread is the shim's own
  PollSet& s = g_poll;
  for (;;) {
    pthread_mutex_lock(&g_mu);
    Build(&s);
    pthread_mutex_unlock(&g_mu);
    if (poll(s.fds, s.n, s.any_shared ? kSharedCheckMs : -1) < 0) continue;  // EINTR
    if ((s.fds[0].revents & POLLIN) != 0) {
      uint64_t v;
      (void)!read(g_state.wake_fd, &v, sizeof v);
    }
    pthread_mutex_lock(&g_mu);
    Handle(s);
    pthread_mutex_unlock(&g_mu);
  }
  return nullptr;
}

void Start() {
  if (g_state.wake_fd < 0) g_state.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g_state.wake_fd < 0) return;
  // The program's signals are not for this thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  if (pthread_create(&t, &attr, Watch, nullptr) == 0) {
    g_state.watcher_running = true;
    pthread_setname_np(t, "leasefs-watch");
  } else {
    Log("cannot start the break watcher: breaks will wait for the revocation");
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace

void WakeWatcher() {
  if (!g_state.watcher_running) {
    bool any = false;
    for (const Inode& n : g_state.inodes) any = any || (n.used && n.lease_type != 0);
    if (!any) return;
    Start();
  }
  const uint64_t one = 1;
  if (g_state.wake_fd >= 0) (void)!write(g_state.wake_fd, &one, sizeof one);
}

void ResetWatcherAfterFork() {
  // The parent's eventfd is shared with it: a wake read here would be lost there.
  if (g_state.wake_fd >= 0) close(g_state.wake_fd);
  g_state.wake_fd = -1;
  g_state.watcher_running = false;
}

}  // namespace leasefs::run
