#include "tools/leasectl/scenario_actor.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/falloc.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <thread>
#include <memory>
#include <utility>

#include "lease/client/leasefs_dax.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "pin/softnic_peer.h"

namespace leasefs::leasectl {

namespace {

constexpr size_t kMaxMessage = 64 * 1024;
// What an actor sends starts with one byte saying what it is.
const std::string kReply = "R";
const std::string kNotice = "N";
// The signal a lease taken with notify=true is broken with (si_value: the
// descriptor), as F_SETSIG would deliver it.
const int kBreakSignal = SIGRTMIN + 2;

uint64_t NowNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// JSON text of `j`; bytes that are not UTF-8 (a file's garbage read back)
// become U+FFFD instead of an exception.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Sends one message, with a descriptor when `fd` >= 0.
int SendMessage(int sock, const std::string& text, int fd) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// Receives one message (0 bytes: the other end closed); a descriptor that
// came with it goes to *fd (else -1).
ssize_t ReceiveMessage(int sock, std::string* text, int* fd, int flags) {
  text->resize(kMaxMessage);
  iovec iov{text->data(), text->size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  *fd = -1;
  if (n < 0) return n;
  text->resize(static_cast<size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (*fd < 0)
        *fd = got;
      else
        close(got);  // one descriptor per message; more are not ours to keep
    }
  }
  return n;
}

// What an actor process holds between requests.
class ActorProcess {
 public:
  ActorProcess(std::string name, std::string mnt, int channel)
      : name_(std::move(name)), mnt_(std::move(mnt)), channel_(channel) {}

  [[noreturn]] void Main();

 private:
  struct Held {
    int fd = -1;
    bool answer_breaks = false;  // release the open file's leases when a break comes
  };

  Json Handle(const Json& req, int* pass_fd);
  Json DoOpen(const Json& req);
  Json DoLease(const Json& req);
  Json DoFallocate(const Json& req);
  Json DoFork(const Json& req, int* pass_fd);
  Json DoSend(const Json& req);
  Json DoReceive(const Json& req);
  Json DoPeerWrite(const Json& req);
  void OnSignal();
  void ReapChildren();
  void Notice(Json n);
  int Fd(const Json& req, const char* key) const;
  std::string NameOfFd(int fd) const;

  std::string name_;
  std::string mnt_;
  int channel_;
  int signal_fd_ = -1;
  int passed_fd_ = -1;  // a descriptor that came with the request being handled
  pid_t daemon_pid_ = 0;  // PIN_INFO's: who may send break signals (0: unknown)
  std::map<std::string, Held> fds_;
  std::map<std::string, leasefs_dax_mapping> maps_;
  std::map<std::string, leasefs_pin_context> contexts_;
  std::unique_ptr<pin::SoftNicPeer> peer_;
};

uint32_t LeaseFlags(const Json& flags) {
  uint32_t f = 0;
  for (const auto& x : flags) {
    if (x == "exclusive") f |= LEASEFS_LEASE_EXCLUSIVE;
    if (x == "unbreakable") f |= LEASEFS_LEASE_UNBREAKABLE;
    if (x == "nonblock") f |= LEASEFS_LEASE_NONBLOCK;
  }
  return f;
}

uint32_t LeaseType(const Json& t) {
  return t == "read" ? LEASEFS_LEASE_READ : t == "write" ? LEASEFS_LEASE_WRITE : 99u;
}

Json Answer(int rc) {
  const int err = rc < 0 ? -rc : rc;
  return Json{{"rc", err}, {"err", ErrnoName(err)}};
}

// A helper thread's notice and the main thread's reply may be sent at once:
// each is one SOCK_SEQPACKET message, which the kernel sends whole, so no lock
// (a lock held by that thread at a fork would stay locked in the child).
void ActorProcess::Notice(Json n) {
  n["notice"] = true;
  n["actor"] = name_;
  n["time"] = NowNs(CLOCK_REALTIME);
  (void)SendMessage(channel_, kNotice + Dump(n), -1);
}

int ActorProcess::Fd(const Json& req, const char* key) const {
  const auto it = fds_.find(req.value(key, std::string()));
  return it == fds_.end() ? -1 : it->second.fd;
}

std::string ActorProcess::NameOfFd(int fd) const {
  for (const auto& [n, h] : fds_)
    if (h.fd == fd) return n;
  return "fd " + std::to_string(fd);
}

Json ActorProcess::DoOpen(const Json& req) {
  const std::string flags = req.value("flags", "r");
  int f = O_CLOEXEC;
  if (flags.rfind("rw", 0) == 0)
    f |= O_RDWR;
  else if (flags.rfind("w", 0) == 0)
    f |= O_WRONLY;
  if (flags.find("nonblock") != std::string::npos) f |= O_NONBLOCK;
  if (flags.find("creat") != std::string::npos) f |= O_CREAT;
  const std::string path = mnt_ + "/" + req.value("path", "");
  const int fd = open(path.c_str(), f, 0666);
  if (fd < 0) return Answer(errno);
  const std::string as = req.value("as", req.value("path", ""));
  if (auto it = fds_.find(as); it != fds_.end()) close(it->second.fd);
  fds_[as] = Held{fd, false};
  return Answer(0);
}

Json ActorProcess::DoLease(const Json& req) {
  const int fd = Fd(req, "fd");
  if (fd < 0) return Answer(EBADF);
  const bool notify = req.value("notify", false);
  uint64_t id = 0;
  const int rc = leasefs_set_lease(fd, req.value("off", 0ull), req.value("len", 0ull),
                                   LeaseType(req["type"]), LeaseFlags(req.value("flags", Json::array())),
                                   notify ? kBreakSignal : 0, static_cast<uint64_t>(fd), &id);
  if (rc == 0) fds_[req.value("fd", "")].answer_breaks = req.value("answer", "ignore") == "release";
  Json r = Answer(rc);
  if (rc == 0) r["value"] = id;
  return r;
}

Json ActorProcess::DoFallocate(const Json& req) {
  const int fd = Fd(req, "fd");
  if (fd < 0) return Answer(EBADF);
  const std::string mode = req.value("mode", "");
  const uint64_t off = req.value("off", 0ull), len = req.value("len", 0ull);
  leasefs_range range{};
  range.offset = off;
  range.length = len;
  int rc = 0;
  if (mode == "punch")
    rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0 ? 0 : errno;
  else if (mode == "zero")
    rc = fallocate(fd, FALLOC_FL_ZERO_RANGE, off, len) == 0 ? 0 : errno;
  else if (mode == "alloc")
    rc = fallocate(fd, 0, off, len) == 0 ? 0 : errno;
  else if (mode == "collapse")
    rc = ioctl(fd, LEASEFS_IOC_COLLAPSE_RANGE, &range) == 0 ? 0 : errno;
  else if (mode == "insert")
    rc = ioctl(fd, LEASEFS_IOC_INSERT_RANGE, &range) == 0 ? 0 : errno;
  else if (mode == "unshare")
    rc = ioctl(fd, LEASEFS_IOC_UNSHARE_RANGE, &range) == 0 ? 0 : errno;
  else
    rc = EINVAL;
  return Answer(rc);
}

Json ActorProcess::DoFork(const Json& req, int* pass_fd) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return Answer(errno);
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(sv[0]);
    close(sv[1]);
    return Answer(err);
  }
  if (pid == 0) {
    // The child: the same descriptors, mappings and contexts (inherited, as
    // fork gives them, its links to the other actors too), a channel of its own.
    close(sv[0]);
    close(channel_);
    channel_ = sv[1];
    name_ = req.value("name", name_ + "'");
    peer_.reset();  // the parent's connection is the parent's
    Main();
  }
  close(sv[1]);
  *pass_fd = sv[0];
  Json r = Answer(0);
  r["value"] = pid;
  return r;
}

// Links are socket pairs leasectl made between two actors and gave one end
// each ("link Q" in P, "link P" in Q): nobody else can reach them.
Json ActorProcess::DoSend(const Json& req) {
  const std::string what = req.value("what", "");
  int fd = -1;
  if (auto it = contexts_.find(what); it != contexts_.end()) fd = it->second.fd;
  if (auto it = fds_.find(what); it != fds_.end()) fd = it->second.fd;
  const auto link = fds_.find("link " + req.value("to", ""));
  if (fd < 0 || link == fds_.end()) return Answer(EBADF);
  Json body{{"name", what}};
  if (auto it = contexts_.find(what); it != contexts_.end()) {
    body["context"] = it->second.id;
    // As numbers: a JSON binary value does not survive dump() and parse()
    // (it comes back an object), and the receiver would hold a zero token.
    body["token"] = std::vector<int>(it->second.token, it->second.token + 16);
  }
  return Answer(SendMessage(link->second.fd, Dump(body), fd));
}

Json ActorProcess::DoReceive(const Json& req) {
  std::vector<pollfd> links;
  for (const auto& [name, held] : fds_)
    if (name.rfind("link ", 0) == 0) links.push_back({held.fd, POLLIN, 0});
  if (links.empty()) return Answer(EBADF);
  if (poll(links.data(), links.size(), req.value("timeout_ms", 5000)) <= 0)
    return Answer(ETIMEDOUT);
  int from = -1;
  for (const pollfd& p : links)
    if (p.revents & POLLIN) from = p.fd;
  if (from < 0) return Answer(EPIPE);
  std::string text;
  int fd = -1;
  if (ReceiveMessage(from, &text, &fd, MSG_DONTWAIT) <= 0 || fd < 0) {
    if (fd >= 0) close(fd);
    return Answer(EPROTO);
  }
  const Json body = Json::parse(text, nullptr, false);
  const std::string as =
      req.value("as", body.is_object() ? body.value("name", "received") : "received");
  if (body.is_object() && body.contains("context")) {
    leasefs_pin_context c{};
    c.fd = fd;
    c.id = body["context"].get<uint64_t>();
    // The token travels with the descriptor only so that this process can
    // name the context in its own PIN requests, as the sender could.
    if (body.contains("token") && body["token"].is_array()) {
      const Json& t = body["token"];
      for (size_t i = 0; i < std::min<size_t>(t.size(), 16); ++i)
        c.token[i] = static_cast<uint8_t>(t[i].get<int>());
    }
    contexts_[as] = c;
  } else {
    fds_[as] = Held{fd, false};
  }
  return Answer(0);
}

Json ActorProcess::DoPeerWrite(const Json& req) {
  if (!peer_) {
    const int dir = open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return Answer(errno);
    leasefs_pin_info info{};
    const int rc = leasefs_pin_get_info(dir, &info);
    close(dir);
    if (rc != 0) return Answer(rc);
    auto peer = pin::SoftNicPeer::Connect(info.softnic_address, info.softnic_port);
    if (!peer.ok()) return Answer(peer.status().err());
    peer_ = std::make_unique<pin::SoftNicPeer>(std::move(*peer));
  }
  const std::string text = req.value("text", "");
  auto c = peer_->Write(req.value("rkey", 0ull), req.value("off", 0ull), text.data(),
                        static_cast<uint32_t>(text.size()));
  if (!c.ok()) {
    peer_.reset();
    return Answer(c.status().err());
  }
  Json r = Answer(0);
  // A NIC's completion status, as ibv_wc_status_str would name it.
  r["text"] = c->ok() ? "success" : "remote access error";
  r["value"] = c->ok() ? 0 : 10;  // IBV_WC_REM_ACCESS_ERR
  return r;
}

Json ActorProcess::Handle(const Json& req, int* pass_fd) {
  const std::string op = req.value("op", "");
  if (op == "open") return DoOpen(req);
  if (op == "close") {
    auto it = fds_.find(req.value("fd", ""));
    if (it == fds_.end()) return Answer(EBADF);
    const int rc = close(it->second.fd) == 0 ? 0 : errno;
    fds_.erase(it);
    return Answer(rc);
  }
  if (op == "lease") return DoLease(req);
  if (op == "convert") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    return Answer(leasefs_convert_lease(fd, req.value("id", 0ull), req.value("off", 0ull),
                                        req.value("len", 0ull), LeaseType(req["type"]),
                                        LeaseFlags(req.value("flags", Json::array())), 0, 0));
  }
  if (op == "unlock") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    return Answer(leasefs_release_lease(fd, req.value("off", 0ull), req.value("len", 0ull)));
  }
  if (op == "getlease") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    leasefs_lease_info info{};
    const int rc = leasefs_get_lease(fd, req.value("off", 0ull), &info);
    Json r = Answer(rc);
    r["value"] = info.state;
    return r;
  }
  if (op == "map") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    leasefs_dax_mapping m{};
    const int rc = leasefs_dax_map(fd, req.value("off", 0ull), req.value("len", 0ull),
                                   PROT_READ | PROT_WRITE, MAP_SHARED, nullptr, &m);
    if (rc == 0) maps_[req.value("as", "map")] = m;
    return Answer(rc);
  }
  if (op == "store") {
    auto it = maps_.find(req.value("map", ""));
    if (it == maps_.end()) return Answer(EBADF);
    const std::string text = req.value("text", "");
    const uint64_t off = req.value("off", 0ull);
    if (off + text.size() > it->second.length) return Answer(EFAULT);
    std::memcpy(static_cast<char*>(it->second.addr) + off, text.data(), text.size());
    return Answer(0);
  }
  if (op == "unmap") {
    auto it = maps_.find(req.value("map", ""));
    if (it == maps_.end()) return Answer(EBADF);
    const int fd = Fd(req, "fd");
    const int rc = leasefs_dax_unmap(fd, &it->second, 0);
    maps_.erase(it);
    return Answer(rc);
  }
  if (op == "context") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    leasefs_pin_context c{};
    const int rc = leasefs_pin_context_open(fd, &c);
    if (rc == 0) contexts_[req.value("as", "ctx")] = c;
    Json r = Answer(rc);
    if (rc == 0) r["value"] = c.id;
    return r;
  }
  if (op == "pin") {
    const int fd = Fd(req, "fd");
    auto it = contexts_.find(req.value("ctx", ""));
    if (fd < 0 || it == contexts_.end()) return Answer(EBADF);
    const bool declared = req.value("provider", "softnic") == "declared";
    uint64_t id = 0, rkey = 0;
    const int rc = leasefs_pin_register(
        fd, &it->second, req.value("off", 0ull), req.value("len", 0ull),
        declared ? LEASEFS_PIN_DECLARED : LEASEFS_PIN_SOFTNIC,
        declared ? 0u : LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ, &id, &rkey);
    Json r = Answer(rc);
    if (rc == 0) {
      r["value"] = id;
      r["rkey"] = rkey;
    }
    return r;
  }
  if (op == "unpin") {
    auto it = contexts_.find(req.value("ctx", ""));
    if (it == contexts_.end()) return Answer(EBADF);
    const int dir = open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return Answer(errno);
    const int rc = leasefs_pin_unregister(dir, &it->second, req.value("id", 0ull));
    close(dir);
    return Answer(rc);
  }
  if (op == "unpin_later") {
    // Another thread of this process ends the pin after a while: what a
    // program blocked in close(2) would need to get out (scenario 4).
    auto it = contexts_.find(req.value("ctx", ""));
    if (it == contexts_.end()) return Answer(EBADF);
    const leasefs_pin_context c = it->second;
    const uint64_t id = req.value("id", 0ull);
    const int ms = req.value("ms", 500);
    std::thread([this, c, id, ms] {
      usleep(static_cast<useconds_t>(ms) * 1000);
      const int dir = open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      const int rc = dir < 0 ? errno : -leasefs_pin_unregister(dir, &c, id);
      if (dir >= 0) close(dir);
      Notice(Json{{"what", "thread-unpin"}, {"err", ErrnoName(rc)}});
    }).detach();
    return Answer(0);
  }
  if (op == "context_close") {
    auto it = contexts_.find(req.value("ctx", ""));
    if (it == contexts_.end()) return Answer(EBADF);
    leasefs_pin_context_close(&it->second);
    contexts_.erase(it);
    return Answer(0);
  }
  if (op == "truncate") {
    const std::string path = mnt_ + "/" + req.value("path", "");
    return Answer(truncate(path.c_str(), req.value("size", 0ll)) == 0 ? 0 : errno);
  }
  if (op == "ftruncate") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    return Answer(ftruncate(fd, req.value("size", 0ll)) == 0 ? 0 : errno);
  }
  if (op == "fallocate") return DoFallocate(req);
  if (op == "clone") {
    const int dst = Fd(req, "dst"), src = Fd(req, "src");
    if (dst < 0 || src < 0) return Answer(EBADF);
    leasefs_clone_range c{};
    c.src_fd = src;
    c.src_offset = req.value("off", 0ull);
    c.src_length = req.value("len", 0ull);
    c.dest_offset = req.value("dstoff", 0ull);
    return Answer(ioctl(dst, LEASEFS_IOC_CLONE_RANGE, &c) == 0 ? 0 : errno);
  }
  if (op == "defrag") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    leasefs_defrag d{};
    return Answer(ioctl(fd, LEASEFS_IOC_DEFRAG, &d) == 0 ? 0 : errno);
  }
  if (op == "pwrite" || op == "pread") {
    const int fd = Fd(req, "fd");
    if (fd < 0) return Answer(EBADF);
    std::string buf(req.value("len", 0ull), req.value("byte", "x")[0]);
    const ssize_t n = op == "pwrite" ? pwrite(fd, buf.data(), buf.size(), req.value("off", 0ll))
                                     : pread(fd, buf.data(), buf.size(), req.value("off", 0ll));
    if (n < 0) return Answer(errno);
    Json r = Answer(0);
    r["value"] = n;
    if (op == "pread") r["text"] = buf.substr(0, static_cast<size_t>(n));
    return r;
  }
  if (op == "peer_write") return DoPeerWrite(req);
  if (op == "adopt") {
    // leasectl handed this process a descriptor (a link to another actor).
    if (passed_fd_ < 0) return Answer(EBADF);
    fds_[req.value("as", "passed")] = Held{passed_fd_, false};
    passed_fd_ = -1;
    return Answer(0);
  }
  if (op == "send") return DoSend(req);
  if (op == "receive") return DoReceive(req);
  if (op == "fork") return DoFork(req, pass_fd);
  if (op == "sleep") {
    usleep(static_cast<useconds_t>(req.value("ms", 0)) * 1000);
    return Answer(0);
  }
  if (op == "exit") {
    (void)SendMessage(channel_, kReply + Dump(Answer(0)), -1);
    _exit(req.value("code", 0));
  }
  return Answer(EINVAL);
}

void ActorProcess::OnSignal() {
  signalfd_siginfo si{};
  while (read(signal_fd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    if (static_cast<int>(si.ssi_signo) == SIGCHLD) {
      ReapChildren();
      continue;
    }
    // Only the daemon breaks leases: a signal of this number from anybody
    // else (another process of this actor's user) is told as such and
    // otherwise ignored.
    if (daemon_pid_ > 0 && static_cast<pid_t>(si.ssi_pid) != daemon_pid_) {
      Notice(Json{{"what", "forged-signal"}, {"pid", si.ssi_pid}});
      continue;
    }
    const int fd = si.ssi_int;
    const std::string file = NameOfFd(fd);
    Json n{{"what", "break-signal"}, {"file", file}, {"signal", "SIGRTMIN+2"}, {"si_fd", fd}};
    auto it = fds_.find(file);
    if (it != fds_.end() && it->second.answer_breaks) {
      // The cooperating holder: stop using the range, then give the lease back.
      const int rc = leasefs_release_all(fd);
      n["answer"] = "release";
      n["err"] = ErrnoName(rc < 0 ? -rc : rc);
    }
    Notice(std::move(n));
  }
}

void ActorProcess::ReapChildren() {
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    Json n{{"what", "child-exit"}, {"pid", pid}};
    if (WIFSIGNALED(status)) n["signal"] = WTERMSIG(status);
    if (WIFEXITED(status)) n["code"] = WEXITSTATUS(status);
    Notice(std::move(n));
  }
}

void ActorProcess::Main() {
  prctl(PR_SET_NAME, ("actor " + name_).substr(0, 15).c_str());
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kBreakSignal);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  if (signal_fd_ >= 0) close(signal_fd_);
  signal_fd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (const int dir = open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    leasefs_pin_info info{};
    if (leasefs_pin_get_info(dir, &info) == 0) daemon_pid_ = info.daemon_pid;
    close(dir);
  }
  for (;;) {
    pollfd p[2] = {{channel_, POLLIN, 0}, {signal_fd_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents & POLLIN) OnSignal();
    if (!(p[0].revents & (POLLIN | POLLHUP))) continue;
    std::string text;
    int got = -1;
    const ssize_t n = ReceiveMessage(channel_, &text, &got, MSG_DONTWAIT);
    if (n == 0) _exit(0);  // the coordinator is gone
    if (n < 0) continue;
    passed_fd_ = got;
    const Json req = Json::parse(text, nullptr, false);
    const uint64_t t0 = NowNs(CLOCK_MONOTONIC);
    int pass_fd = -1;
    Json reply = req.is_object() ? Handle(req, &pass_fd) : Answer(EINVAL);
    if (passed_fd_ >= 0) close(passed_fd_);  // not adopted: not kept
    passed_fd_ = -1;
    reply["ns"] = NowNs(CLOCK_MONOTONIC) - t0;
    reply["end"] = NowNs(CLOCK_REALTIME);
    (void)SendMessage(channel_, kReply + Dump(reply), pass_fd);
    if (pass_fd >= 0) close(pass_fd);
  }
}

}  // namespace

std::string ErrnoName(int err) {
  if (err == 0) return "OK";
  // One number, two names: the debate (and [v2]) says EDEADLOCK.
  if (err == EDEADLK) return "EDEADLOCK";
  const char* n = strerrorname_np(err);
  return n != nullptr ? n : "errno " + std::to_string(err);
}

Actor::Actor(std::string name, pid_t pid, UniqueFd channel)
    : name_(std::move(name)), pid_(pid), channel_(std::move(channel)),
      pidfd_(static_cast<int>(syscall(SYS_pidfd_open, pid, 0))) {}

Actor::Actor(std::string name, pid_t pid, UniqueFd channel, UniqueFd pidfd)
    : name_(std::move(name)), pid_(pid), channel_(std::move(channel)), pidfd_(std::move(pidfd)) {}

Result<Actor> Actor::Spawn(const std::string& name, const std::string& mnt, uid_t uid) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return Status::FromErrno("socketpair");
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const Status s = Status::FromErrno("fork");
    close(sv[0]);
    close(sv[1]);
    return s;
  }
  if (pid == 0) {
    // Nothing of leasectl's but the channel: not the other actors'
    // channels, not the mount's directory, not the reader of its output.
    if (dup2(sv[1], 3) != 3) _exit(1);
    close_range(4, ~0u, 0);
    sv[1] = 3;
    const int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3 && null >= 0; ++fd) dup2(null, fd);
    if (null > 2) close(null);
    // The mount's directory, opened before any change of user: the actor
    // reaches the mount through it (/proc/self/fd/N), so that the mountpoint
    // can sit in a directory only leasectl's user may enter.
    const int dir = open(mnt.c_str(), O_RDONLY | O_DIRECTORY);
    if (dir < 0) _exit(1);
    if (uid != static_cast<uid_t>(-1)) {
      const gid_t gid = static_cast<gid_t>(uid);
      if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(126);
    }
    // An actor dies with its coordinator, whatever ends it (and if that
    // happened already, now). After setuid, which clears it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    ActorProcess(name, "/proc/self/fd/" + std::to_string(dir), sv[1]).Main();
  }
  close(sv[1]);
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  return Actor(name, pid, UniqueFd(sv[0]), std::move(pidfd));
}

Status Actor::Send(const Json& request, int fd) {
  const int rc = SendMessage(channel_.get(), request.dump(), fd);
  if (rc != 0) {
    gone_ = true;
    return Status::Error(rc, "sending to " + name_);
  }
  return Status::Ok();
}

std::optional<Json> Actor::Reply(int timeout_ms, std::vector<Json>* notices, UniqueFd* passed) {
  const uint64_t deadline = NowNs(CLOCK_MONOTONIC) +
                            static_cast<uint64_t>(timeout_ms < 0 ? 0 : timeout_ms) * 1'000'000u;
  for (;;) {
    int wait = -1;
    if (timeout_ms >= 0) {
      const uint64_t now = NowNs(CLOCK_MONOTONIC);
      wait = now >= deadline ? 0 : static_cast<int>((deadline - now + 999'999) / 1'000'000);
    }
    pollfd p{channel_.get(), POLLIN, 0};
    const int r = poll(&p, 1, wait);
    if (r < 0 && errno == EINTR) return std::nullopt;  // the caller checks why
    if (r <= 0) return std::nullopt;
    std::string text;
    int fd = -1;
    const ssize_t n = ReceiveMessage(channel_.get(), &text, &fd, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      gone_ = true;
      return std::nullopt;
    }
    if (n < 0) continue;
    Json msg = Json::parse(text.empty() ? text : text.substr(1), nullptr, false);
    if (text.rfind(kNotice, 0) == 0) {
      if (fd >= 0) close(fd);
      if (notices != nullptr) notices->push_back(std::move(msg));
      continue;
    }
    if (passed != nullptr)
      *passed = UniqueFd(fd);
    else if (fd >= 0)
      close(fd);
    return msg;
  }
}

void Actor::Drain(std::vector<Json>* notices) {
  for (;;) {
    // Peek at the kind: a reply must stay for Reply().
    char kind = 0;
    const ssize_t peek = recv(channel_.get(), &kind, 1, MSG_PEEK | MSG_DONTWAIT);
    if (peek == 0) gone_ = true;
    if (peek <= 0 || kind != kNotice[0]) return;
    std::string text;
    int fd = -1;
    if (ReceiveMessage(channel_.get(), &text, &fd, MSG_DONTWAIT) <= 0) return;
    if (fd >= 0) close(fd);
    if (notices != nullptr) notices->push_back(Json::parse(text.substr(1), nullptr, false));
  }
}

bool Actor::Exited() const {
  if (!pidfd_.valid()) return kill(pid_, 0) != 0 && errno == ESRCH;
  pollfd p{pidfd_.get(), POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

int Actor::Signal(int sig) const {
  if (pidfd_.valid())
    return syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) == 0 ? 0 : errno;
  return kill(pid_, sig) == 0 ? 0 : errno;
}

}  // namespace leasefs::leasectl
