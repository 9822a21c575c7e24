// The pin socket (context_server.h).
#include "pin/context_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <utility>
#include <vector>

#include "pin/holders.h"

namespace leasefs::pin {
namespace {

constexpr uint64_t kWakeKey = ~0ull;
constexpr uint64_t kListenKey = ~0ull - 1;
// Added to a context's descriptor: the key of its creator's pidfd.
constexpr uint64_t kCreatorKey = 1ull << 32;

// SO_PEERPIDFD (Linux 6.5): a pidfd of the process that connected, taken at
// connect time, so that it names that process even if it is gone already.
constexpr int kSoPeerPidfd = 77;

}  // namespace

ContextServer::ContextServer(PinTable* table, PinPassing passing)
    : table_(table), passing_(passing) {}

ContextServer::~ContextServer() { Stop(); }

Status ContextServer::Start() {
  {
    MutexLock l(&mu_);
    if (started_ || stop_) return Status::Error(EINVAL, "the pin socket starts once");
    started_ = true;
  }
  listen_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_.valid()) return Status::FromErrno("socket");
  // Only the family: the kernel picks a free abstract name (autobind).
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(sa_family_t)) != 0)
    return Status::FromErrno("bind");
  if (listen(listen_.get(), 64) != 0) return Status::FromErrno("listen");
  socklen_t len = sizeof(addr);
  if (getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return Status::FromErrno("getsockname");
  const size_t name_len = len - offsetof(sockaddr_un, sun_path);
  if (name_len < 2 || addr.sun_path[0] != '\0')
    return Status::Error(EINVAL, "the kernel gave the pin socket no abstract name");
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_.valid() || !wake_.valid()) return Status::FromErrno("epoll/eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeKey;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0)
    return Status::FromErrno("epoll_ctl");
  ev.data.u64 = kListenKey;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_.get(), &ev) != 0)
    return Status::FromErrno("epoll_ctl");
  {
    MutexLock l(&mu_);
    name_.assign(addr.sun_path + 1, name_len - 1);
  }
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void ContextServer::Stop() {
  {
    MutexLock l(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
  listen_.reset();
  std::vector<int> fds;
  {
    MutexLock l(&mu_);
    for (const auto& [fd, conn] : conns_) fds.push_back(fd);
  }
  for (int fd : fds) Close(fd);
}

std::string ContextServer::name() const {
  MutexLock l(&mu_);
  return name_;
}

size_t ContextServer::open_contexts() const {
  MutexLock l(&mu_);
  return conns_.size();
}

void ContextServer::Loop() {
  epoll_event events[32];
  for (;;) {
    const int n = epoll_wait(epoll_.get(), events, 32, -1);
    {
      MutexLock l(&mu_);
      if (stop_) return;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kWakeKey) continue;
      if (key == kListenKey) {
        Accept();
        continue;
      }
      if ((key & kCreatorKey) != 0) {
        CreatorDied(static_cast<int>(key & ~kCreatorKey));
        continue;
      }
      const int fd = static_cast<int>(key);
      if ((events[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) != 0 || Drained(fd)) Close(fd);
    }
  }
}

void ContextServer::Accept() {
  for (;;) {
    UniqueFd conn(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn.valid()) {
      if (errno == EMFILE || errno == ENFILE) Listen(false);  // until a context closes
      return;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) continue;
    {
      MutexLock l(&mu_);
      if (conns_.size() >= kMaxContexts) continue;  // closed
      auto u = per_uid_.find(cred.uid);
      if (cred.uid != 0 && u != per_uid_.end() && u->second >= kMaxContextsPerUser) continue;
    }
    // The table owns the descriptor (its notices go there); the server
    // polls it until it asks the table to close the context.
    const int fd = conn.get();
    auto context = table_->AddContext(cred.pid, cred.uid, std::move(conn));
    if (!context.ok()) continue;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = static_cast<uint64_t>(fd);
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      table_->CloseContext(context->id);
      continue;
    }
    Conn c{context->id, cred.uid, UniqueFd()};
    if (passing_ == PinPassing::kStrict) WatchCreator(fd, cred.pid, &c);
    MutexLock l(&mu_);
    ++per_uid_[cred.uid];
    conns_[fd] = std::move(c);
  }
}

void ContextServer::WatchCreator(int fd, pid_t pid, Conn* conn) {
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, kSoPeerPidfd, &pidfd, &len) != 0) {
    pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  }
  // Without a pidfd the creator's death is not seen: its pins then follow
  // the context, as under follow-fd (the descriptors ran out).
  if (pidfd < 0) return;
  conn->creator.reset(pidfd);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kCreatorKey | static_cast<uint64_t>(fd);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, pidfd, &ev) != 0) conn->creator.reset();
}

void ContextServer::CreatorDied(int fd) {
  ContextId context = 0;
  {
    MutexLock l(&mu_);
    auto it = conns_.find(fd);
    if (it == conns_.end() || !it->second.creator.valid()) return;
    // An event fetched for a descriptor that was closed and reused within
    // the same wake names another context: only an exited creator counts.
    pollfd p{it->second.creator.get(), POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return;
    (void)epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.creator.get(), nullptr);
    it->second.creator.reset();
    context = it->second.context;
  }
  // A process's descriptors are closed before its pidfd reads as exited:
  // if the creator held the last one, end-of-file is here already.
  if (Drained(fd)) {
    Close(fd);
    return;
  }
  struct stat st {};
  std::vector<pid_t> pids;
  if (fstat(fd, &st) == 0) {
    if (auto peer = PeerInode(st.st_ino); peer.ok()) {
      for (const Holder& h : HoldersOf(*peer)) pids.push_back(h.pid);
    }
  }
  // Holders the daemon cannot see (or no sock_diag) hold no lease it can
  // count: the pins are aborted, so none outlives its lease.
  (void)table_->AbortUnlessCovered(context, pids);
}

void ContextServer::Listen(bool on) {
  {
    MutexLock l(&mu_);
    if (paused_ == !on) return;
    paused_ = !on;
  }
  epoll_event ev{};
  ev.events = on ? static_cast<uint32_t>(EPOLLIN) : 0u;
  ev.data.u64 = kListenKey;
  (void)epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listen_.get(), &ev);
}

bool ContextServer::Drained(int fd) {
  char buf[4096];
  // A bounded amount per wake, so that a client that writes without pause
  // does not keep the thread from the others (epoll wakes it again).
  for (int i = 0; i < 16; ++i) {
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) continue;  // clients write nothing; what they do write goes
    if (n == 0) return true;
    return errno != EAGAIN && errno != EINTR;
  }
  return false;
}

void ContextServer::Close(int fd) {
  Conn conn;
  {
    MutexLock l(&mu_);
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    conn = std::move(it->second);
    conns_.erase(it);
    if (conn.creator.valid()) {
      (void)epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, conn.creator.get(), nullptr);
    }
    if (auto u = per_uid_.find(conn.uid); u != per_uid_.end() && --u->second == 0) per_uid_.erase(u);
  }
  (void)epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  table_->CloseContext(conn.context);  // closes fd
  if (listen_.valid()) Listen(true);   // a descriptor is free again
}

}  // namespace leasefs::pin
