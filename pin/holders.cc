// Who holds a pin context, and what a closing process is doing (holders.h).
#include "pin/holders.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace leasefs::pin {
namespace {

// A directory stream closed on every path.
struct Dir {
  explicit Dir(const std::string& path) : d(opendir(path.c_str())) {}
  ~Dir() {
    if (d != nullptr) closedir(d);
  }
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  DIR* d;
};

// A decimal name ("1234"), or 0.
uint64_t Number(const char* name) {
  uint64_t n = 0;
  const char* end = name + std::strlen(name);
  auto [p, ec] = std::from_chars(name, end, n);
  return ec == std::errc() && p == end ? n : 0;
}

// Whether descriptor `fd` of `pid` was opened with O_PATH: such a
// descriptor (of /proc/<other>/fd/N, say) names the socket without holding
// it as a context, and its process could not use it.
bool OpenedWithPath(pid_t pid, const char* fd) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/fdinfo/" + fd);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags:", 0) != 0) continue;
    const unsigned long flags = std::strtoul(line.c_str() + 6, nullptr, 8);
    return (flags & O_PATH) != 0;
  }
  return true;  // gone, or unreadable: not a holder to act on
}

bool HoldsSocket(pid_t pid, const std::string& want) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  Dir fds(dir);
  if (fds.d == nullptr) return false;
  char link[64];
  while (dirent* e = readdir(fds.d)) {
    if (e->d_name[0] == '.') continue;
    const ssize_t n = readlinkat(dirfd(fds.d), e->d_name, link, sizeof(link));
    if (n > 0 && want.compare(0, std::string::npos, link, static_cast<size_t>(n)) == 0 &&
        !OpenedWithPath(pid, e->d_name)) {
      return true;
    }
  }
  return false;
}

// Whether `pid`'s real or saved uid is `uid` (the "Uid:" line of its
// status: real, effective, saved, filesystem), as kill(2) asks of a sender
// that is not privileged.
bool HasUid(pid_t pid, uid_t uid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) != 0) continue;
    unsigned long real = 0, effective = 0, saved = 0;
    if (std::sscanf(line.c_str() + 4, "%lu %lu %lu", &real, &effective, &saved) != 3) return false;
    return real == uid || saved == uid;
  }
  return false;
}

}  // namespace

Result<uint64_t> PeerInode(uint64_t own_inode) {
  UniqueFd nl(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) return Status::FromErrno("netlink socket");
  struct {
    nlmsghdr hdr;
    unix_diag_req req;
  } msg{};
  msg.hdr.nlmsg_len = sizeof(msg);
  msg.hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.hdr.nlmsg_flags = NLM_F_REQUEST;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = ~0u;
  msg.req.udiag_ino = static_cast<uint32_t>(own_inode);
  msg.req.udiag_show = UDIAG_SHOW_PEER;
  msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = ~0u;  // no cookie: by inode alone
  if (send(nl.get(), &msg, sizeof(msg), 0) != static_cast<ssize_t>(sizeof(msg))) {
    return Status::FromErrno("sock_diag request");
  }
  alignas(nlmsghdr) char buf[8192];
  const ssize_t n = recv(nl.get(), buf, sizeof(buf), 0);
  if (n < 0) return Status::FromErrno("sock_diag answer");
  auto* h = reinterpret_cast<nlmsghdr*>(buf);
  if (!NLMSG_OK(h, static_cast<size_t>(n))) return Status::Error(EIO, "short sock_diag answer");
  if (h->nlmsg_type == NLMSG_ERROR) {
    const int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
    if (err == ENOENT) return Status::Error(ENOENT, "no such socket");
    return Status::Error(err == 0 ? EIO : (err == EINVAL ? EPROTONOSUPPORT : err),
                         "sock_diag refused the request");
  }
  if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return Status::Error(EIO, "unexpected sock_diag answer");
  auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
  int left = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
  for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
      uint32_t peer = 0;
      std::memcpy(&peer, RTA_DATA(a), sizeof(peer));
      if (peer != 0) return uint64_t{peer};
    }
  }
  return Status::Error(ENOENT, "the socket has no peer");
}

std::vector<Holder> HoldersOf(uint64_t socket_inode, std::optional<uid_t> uid) {
  std::vector<Holder> out;
  const std::string want = "socket:[" + std::to_string(socket_inode) + "]";
  const pid_t self = getpid();
  Dir proc("/proc");
  if (proc.d == nullptr) return out;
  while (dirent* e = readdir(proc.d)) {
    const auto pid = static_cast<pid_t>(Number(e->d_name));
    if (pid <= 0 || pid == self) continue;
    // The pidfd first: if `pid` is another process by the time its
    // descriptors are read, a signal through the pidfd goes nowhere.
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd.valid()) continue;
    // Another user's processes first, before their descriptors are read.
    if (uid.has_value() && !HasUid(pid, *uid)) continue;
    if (HoldsSocket(pid, want)) out.push_back(Holder{pid, std::move(pidfd)});
  }
  return out;
}

bool StatFlags(std::string_view stat, uint64_t* flags) {
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return false;
  // Fields 3 (state) to 9 (flags) follow, one space before each.
  size_t pos = close + 1;
  for (int field = 3; field < 9; ++field) {
    pos = stat.find(' ', pos + 1);
    if (pos == std::string_view::npos) return false;
  }
  ++pos;
  const size_t end = stat.find(' ', pos);
  const std::string_view f = stat.substr(pos, end == std::string_view::npos ? end : end - pos);
  auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), *flags);
  return ec == std::errc() && p == f.data() + f.size() && !f.empty();
}

bool TaskExiting(pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(tid) + "/stat");
  if (!in) return true;  // gone: nothing of it is left to wait for
  std::string text;
  std::getline(in, text);
  uint64_t flags = 0;
  return StatFlags(text, &flags) && (flags & kTaskExiting) != 0;
}

Result<bool> HoldsInode(pid_t tgid, dev_t dev, uint64_t ino) {
  const std::string dir = "/proc/" + std::to_string(tgid) + "/fd";
  Dir fds(dir);
  if (fds.d == nullptr) return Status::Error(errno == ENOENT ? ESRCH : errno, "cannot read " + dir);
  while (dirent* e = readdir(fds.d)) {
    if (e->d_name[0] == '.') continue;
    struct statx stx {};
    if (statx(dirfd(fds.d), e->d_name, AT_STATX_DONT_SYNC, STATX_INO, &stx) != 0) continue;
    if (stx.stx_ino == ino && makedev(stx.stx_dev_major, stx.stx_dev_minor) == dev) return true;
  }
  return false;
}

}  // namespace leasefs::pin
