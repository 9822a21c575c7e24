// The mount policies for pins that involve processes (docs/pins.md):
// -o close_with_pins=zombie|block-close|kill-on-close (semantics-2019 §5
// scenarios 3, 4, 5), a pinning process SIGKILLed with its descriptors
// closing in every order the test can force, under each of them (scenario
// 6), and -o pin_passing=strict|follow-fd for a context passed by fork and
// by SCM_RIGHTS (scenarios 7 and 8). Real processes on a real mount: every
// pin is made by a child (a process holding a context is what kill-on-close
// kills, and the test must not be one), and every wait is bounded.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "pin/softnic_peer.h"
#include "tests/fuse/pin_fixture.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

using Clock = std::chrono::steady_clock;

// A pin mount with its root open: every pin and lease is listed through it.
struct RootMounted : Mounted {
  explicit RootMounted(const std::string& extra) : Mounted(extra) {
    dir = open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir >= 0);
  }
  ~RootMounted() { close(dir); }
  int dir = -1;
};

std::vector<leasefs_lease_info> Leases(int fd) {
  auto list = std::make_unique<leasefs_lease_list>();
  REQUIRE(ioctl(fd, LEASEFS_IOC_LIST_LEASES, list.get()) == 0);
  return std::vector<leasefs_lease_info>(list->leases, list->leases + list->count);
}

// The file's leases as "STATE/pins" words, in id order ("" for none).
std::string LeaseStates(int fd) {
  std::string out;
  for (const auto& l : Leases(fd)) {
    static const char* const kNames[] = {"NONE", "ACTIVE", "BREAKING", "REVOKED", "ZOMBIE"};
    if (!out.empty()) out += " ";
    out += std::string(l.state < 5 ? kNames[l.state] : "?") + "/" + std::to_string(l.pins);
  }
  return out;
}

// Nothing left of any pin: no pin, no lease, and another process's
// truncate of `path` goes through.
void CheckAllGone(const RootMounted& t, const std::string& path) {
  CHECK(Eventually([&] { return Pins(t.dir).empty(); }));
  CHECK(Eventually([&] { return Leases(t.dir).empty(); }));
  CHECK(LeaseStates(t.dir) == "");
  CHECK(SYS(truncate(path.c_str(), B)) == "OK");
  CHECK(kill(t.m.daemon_pid(), 0) == 0);
}

// --- passing a descriptor and a context's name over a unix socket

bool SendContext(int sock, const leasefs_pin_context& c) {
  char data[sizeof(c.id) + sizeof(c.token)];
  std::memcpy(data, &c.id, sizeof(c.id));
  std::memcpy(data + sizeof(c.id), c.token, sizeof(c.token));
  iovec iov{data, sizeof(data)};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  cmsghdr* h = CMSG_FIRSTHDR(&m);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(h), &c.fd, sizeof(int));
  return sendmsg(sock, &m, 0) == static_cast<ssize_t>(sizeof(data));
}

bool ReceiveContext(int sock, leasefs_pin_context* c) {
  char data[sizeof(c->id) + sizeof(c->token)];
  iovec iov{data, sizeof(data)};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != static_cast<ssize_t>(sizeof(data))) return false;
  cmsghdr* h = CMSG_FIRSTHDR(&m);
  if (h == nullptr || h->cmsg_type != SCM_RIGHTS) return false;
  std::memcpy(&c->fd, CMSG_DATA(h), sizeof(int));
  std::memcpy(&c->id, data, sizeof(c->id));
  std::memcpy(c->token, data + sizeof(c->id), sizeof(c->token));
  return true;
}

// --- a child process run by commands

// A forked child running `body` with one end of a socket pair; commands
// and their one-line answers go over it. The destructor SIGKILLs and reaps
// it if it is still there.
class Proc {
 public:
  explicit Proc(const std::function<int(int sock)>& body) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      close(sv[0]);
      _exit(body(sv[1]));
    }
    close(sv[1]);
    sock_ = sv[0];
  }
  // A process started elsewhere (a holder's own child, which the test
  // reaps as its subreaper once the holder is gone), commanded over `sock`.
  Proc(pid_t pid, int sock) : pid_(pid), sock_(sock) {}
  // A child that does not end within 2 s (stuck in a request the daemon
  // never answers: a failed test) is left to the unmount to free.
  ~Proc() {
    if (pid_ > 0) Kill(2000);
    close(sock_);
  }
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;

  pid_t pid() const { return pid_; }
  void Send(const std::string& cmd) { SayLine(sock_, cmd); }
  std::string Reply(int timeout_ms = 10000) {
    std::string line;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{sock_, POLLIN, 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return "TIMEOUT";
      char c;
      if (read(sock_, &c, 1) != 1) return "EOF";
      if (c == '\n') return line;
      line += c;
    }
  }
  std::string Ask(const std::string& cmd, int timeout_ms = 10000) {
    Send(cmd);
    return Reply(timeout_ms);
  }
  // Waits up to `ms` for the child to end: its wait status, or -1.
  int Wait(int ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
    while (pid_ > 0) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      if (Clock::now() > deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }
  // SIGKILL, then Wait(ms).
  int Kill(int ms = 5000) {
    kill(pid_, SIGKILL);
    return Wait(ms);
  }

 private:
  pid_t pid_ = -1;
  int sock_ = -1;
};

bool KilledBySigkill(int status) { return status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

// What a pinning child does, command by command. It holds file `path` (its
// own open file), a pin context and its pins; `peer` is a socket to another
// child for SCM_RIGHTS (-1: none). Each command answers one line.
class Holder {
 public:
  Holder(std::string path, int peer) : path_(std::move(path)), peer_(peer) {}

  int Run(int sock) {
    sock_ = sock;
    std::string line;
    while (ReadLine(sock, &line)) {
      std::istringstream in(line);
      std::string cmd;
      in >> cmd;
      if (cmd == "exit") return 0;
      if (cmd == "die") _exit(3);  // at once, holding whatever it holds
      if (cmd == "close-file") {
        SayLine(sock, "closing");  // the close may block
        SayLine(sock, SYS(close(fd_)));
        fd_ = -1;
        continue;
      }
      SayLine(sock, Do(cmd, in));
    }
    return 0;
  }

 private:
  std::string Do(const std::string& cmd, std::istringstream& in) {
    if (cmd == "open") {
      fd_ = open(path_.c_str(), O_RDWR);
      return fd_ >= 0 ? "OK" : Errno(errno);
    }
    if (cmd == "lease") {  // an EXCLUSIVE lease over the whole file
      return Errno(Lease(fd_, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE));
    }
    if (cmd == "context") return Errno(leasefs_pin_context_open(fd_, &ctx_));
    if (cmd == "pin") {  // pin OFF LEN [declared]
      uint64_t off = 0, len = 0;
      std::string kind;
      in >> off >> len >> kind;
      const bool declared = kind == "declared";
      uint64_t id = 0;
      const int rc = leasefs_pin_register(fd_, &ctx_, off, len,
                                          declared ? LEASEFS_PIN_DECLARED : LEASEFS_PIN_SOFTNIC,
                                          declared ? 0 : kRW, &id, nullptr);
      return rc == 0 ? "OK " + std::to_string(id) : Errno(rc);
    }
    if (cmd == "setup") {  // open, lease, context, pin the first LEN bytes
      uint64_t len = 0;
      in >> len;
      for (const char* step : {"open", "lease", "context"}) {
        std::istringstream none;
        if (const std::string r = Do(step, none); r != "OK") return std::string(step) + " " + r;
      }
      std::istringstream args("0 " + std::to_string(len));
      return Do("pin", args);
    }
    if (cmd == "close-context") {
      leasefs_pin_context_close(&ctx_);
      return "OK";
    }
    if (cmd == "fds") {  // fds FILE CTX: move both to these numbers
      int file = 0, context = 0;
      in >> file >> context;
      if (dup2(fd_, file) < 0 || dup2(ctx_.fd, context) < 0) return Errno(errno);
      close(fd_);
      close(ctx_.fd);
      fd_ = file;
      ctx_.fd = context;
      return "OK";
    }
    if (cmd == "become") {  // become UID: this user from now on (and its group)
      uid_t uid = 0;
      in >> uid;
      return setgid(uid) == 0 && setuid(uid) == 0 ? "OK" : Errno(errno);
    }
    if (cmd == "send-file") {  // the file's descriptor, over `peer`
      const leasefs_pin_context file{fd_, 0, {}};
      return SendContext(peer_, file) ? "OK" : Errno(errno);
    }
    if (cmd == "receive-file") {
      leasefs_pin_context file{-1, 0, {}};
      if (!ReceiveContext(peer_, &file)) return "EPROTO";
      fd_ = file.fd;
      return "OK";
    }
    if (cmd == "send-context") return SendContext(peer_, ctx_) ? "OK" : Errno(errno);
    if (cmd == "receive-context") return ReceiveContext(peer_, &ctx_) ? "OK" : "EPROTO";
    if (cmd == "fenced") {  // fenced MS: the next FENCED notice on the context
      int ms = 0;
      in >> ms;
      uint64_t id = 0;
      const int rc = leasefs_pin_wait_fenced(&ctx_, ms, &id, nullptr);
      return rc == 0 ? "OK " + std::to_string(id) : Errno(rc);
    }
    if (cmd == "unpin") {  // through any file of the mount: the file's directory
      const int dir = open(path_.substr(0, path_.rfind('/')).c_str(), O_RDONLY | O_DIRECTORY);
      const int rc = leasefs_pin_unregister(dir, &ctx_, 0);
      close(dir);
      return Errno(rc);
    }
    if (cmd == "fork-serve") {  // a child that inherits everything, commanded over `peer`
      const pid_t child = fork();
      if (child == 0) {
        close(sock_);  // its parent's answers are its parent's
        _exit(Run(peer_));
      }
      return child > 0 ? std::to_string(child) : Errno(errno);
    }
    return "?";
  }

  const std::string path_;
  const int peer_;
  int sock_ = -1;  // where commands come from
  int fd_ = -1;
  leasefs_pin_context ctx_{-1, 0, {}};
};

// A child holding `path` through a Holder.
std::unique_ptr<Proc> StartHolder(const std::string& path, int peer = -1) {
  return std::make_unique<Proc>([path, peer](int sock) { return Holder(path, peer).Run(sock); });
}

std::string MakeFile(const RootMounted& t, const std::string& name, uint64_t len) {
  const std::string path = t.m.path(name);
  REQUIRE(WriteFile(path, std::string(len, 'a'), 0666) == "");
  return path;
}

// Orphans (a holder's own children) come back to the test to be reaped.
struct Subreaper {
  Subreaper() { REQUIRE(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
  ~Subreaper() {
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
};

TEST_CASE("close_with_pins= and pin_passing=: bad values refuse the mount") {
  if (!CanMountFuse()) return;
  MountOptions o;
  TestMount m(o);
  REQUIRE(m.Unmount() == 0);
  std::string out;
  CHECK_FALSE(m.Mount(&out, "close_with_pins=block"));
  CHECK_FALSE(m.Mount(&out, "close_with_pins="));
  CHECK_FALSE(m.Mount(&out, "pin_passing=loose"));
  CHECK(m.Mount(&out, "close_with_pins=kill-on-close,pin_passing=strict"));
}

TEST_CASE("scenario 3, zombie: the close returns at once, the lease stays ZOMBIE until the pin goes") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=zombie");
  const std::string f = MakeFile(t, "f", 8 * B);
  auto p = StartHolder(f);
  REQUIRE(p->Ask("setup " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
  CHECK(LeaseStates(t.dir) == "ACTIVE/1");
  const auto t0 = Clock::now();
  REQUIRE(p->Ask("close-file") == "closing");
  CHECK(p->Reply() == "OK");
  CHECK(Clock::now() - t0 < std::chrono::milliseconds(500));
  CHECK(Eventually([&] { return LeaseStates(t.dir) == "ZOMBIE/1"; }));
  CHECK(Pins(t.dir).size() == 1);
  CHECK(SYS(truncate(f.c_str(), 0)) == "ETXTBSY");
  CHECK(p->Ask("unpin") == "OK");
  CHECK(LeaseStates(t.dir) == "");
  CheckAllGone(t, f);
}

TEST_CASE("scenario 4, block-close: close waits until another thread unpins, and not while another descriptor is kept") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=block-close");
  const std::string f = MakeFile(t, "f", 8 * B);
  // In the test process itself: no policy here kills a holder.
  const int fd = open(f.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, nullptr) == 0);
  // A descriptor of the same open file is kept: not the last close.
  const int dup_fd = dup(fd);
  REQUIRE(dup_fd >= 0);
  auto t0 = Clock::now();
  CHECK(SYS(close(fd)) == "OK");
  CHECK(Clock::now() - t0 < std::chrono::milliseconds(500));
  CHECK(Pins(t.dir).size() == 1);
  // Nor while another open file of the inode is kept.
  const int other = open(f.c_str(), O_RDONLY);
  REQUIRE(other >= 0);
  const int dup2_fd = dup(dup_fd);
  REQUIRE(dup2_fd >= 0);
  t0 = Clock::now();
  CHECK(SYS(close(dup_fd)) == "OK");
  CHECK(Clock::now() - t0 < std::chrono::milliseconds(500));
  close(other);
  // The last one blocks until the unpin, made 400 ms later by another
  // thread.
  std::atomic<bool> unpinning{false};
  std::thread unpinner([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    unpinning = true;
    CHECK(leasefs_pin_unregister(t.dir, &c, id) == 0);
  });
  t0 = Clock::now();
  const std::string closed = SYS(close(dup2_fd));
  const auto waited = Clock::now() - t0;
  const bool after_unpin = unpinning.load();
  unpinner.join();
  CHECK(closed == "OK");
  CHECK(after_unpin);
  CHECK(waited >= std::chrono::milliseconds(350));
  CHECK(waited < std::chrono::seconds(5));
  leasefs_pin_context_close(&c);
  CheckAllGone(t, f);
}

TEST_CASE("block-close: a single-threaded daemon's own duplicate of a caller's file (a clone source) closes without deadlock") {
  if (!CanMountFuse()) return;
  // Files get FLUSH now; the daemon takes its own descriptor of the clone
  // source, and closing it sends a FLUSH that only the loop thread can
  // answer. (mmap=private-only: the clone then runs on the loop thread
  // itself, not on a flusher. Should the daemon close its duplicate there,
  // this test hangs, and meson's timeout reports it.)
  RootMounted t("close_with_pins=block-close,threads=1,mmap=private-only");
  const std::string a = MakeFile(t, "a", 8 * B);
  REQUIRE(WriteFile(t.m.path("b"), "") == "");
  const int src = open(a.c_str(), O_RDONLY);
  const int dst = open(t.m.path("b").c_str(), O_RDWR);
  REQUIRE(src >= 0);
  REQUIRE(dst >= 0);
  for (int i = 0; i < 20; ++i) {
    leasefs_clone_range r{src, 0, 8 * B, static_cast<uint64_t>(i) * 8 * B};
    REQUIRE(SYS(ioctl(dst, LEASEFS_IOC_CLONE_RANGE, &r)) == "OK");
  }
  CHECK(ReadFile(t.m.path("b")) == std::string(20 * 8 * B, 'a'));
  close(src);
  close(dst);
}

TEST_CASE("scenario 4, block-close: SIGKILL ends a blocked close, and the dying process's other closes do not block") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=block-close");
  const std::string f = MakeFile(t, "f", 8 * B);
  auto p = StartHolder(f);
  REQUIRE(p->Ask("setup " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
  REQUIRE(p->Ask("close-file") == "closing");
  CHECK(p->Reply(500) == "TIMEOUT");  // blocked
  CHECK(p->Wait(0) == -1);
  CHECK(Pins(t.dir).size() == 1);
  CHECK(LeaseStates(t.dir) == "ACTIVE/1");
  CHECK(KilledBySigkill(p->Kill(5000)));
  CheckAllGone(t, f);
}

TEST_CASE("scenario 5, kill-on-close: the file's last close kills the holders of its pins' contexts, and the pins and lease go") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=kill-on-close");
  const std::string f = MakeFile(t, "f", 8 * B);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto p = StartHolder(f, sv[0]);
  auto q = StartHolder(f, sv[1]);  // will hold the context, not the file
  close(sv[0]);
  close(sv[1]);
  auto bystander = StartHolder(f);  // holds the file, not the context
  REQUIRE(bystander->Ask("open") == "OK");
  REQUIRE(p->Ask("setup " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
  REQUIRE(p->Ask("send-context") == "OK");
  REQUIRE(q->Ask("receive-context") == "OK");
  bool closer_holds = true;
  SUBCASE("the closer holds the context too") {}
  SUBCASE("the closer let its descriptor of the context go first") {
    closer_holds = false;
    REQUIRE(p->Ask("close-context") == "OK");
  }
  CHECK(LeaseStates(t.dir) == "ACTIVE/1");
  REQUIRE(p->Ask("close-file") == "closing");
  CHECK(KilledBySigkill(q->Wait(5000)));  // by the daemon: the test sent nothing
  if (closer_holds) {
    CHECK(KilledBySigkill(p->Wait(5000)));
  } else {
    CHECK(p->Reply() == "OK");
    CHECK(p->Wait(200) == -1);  // not a holder: not killed
  }
  CHECK(bystander->Wait(0) == -1);
  CheckAllGone(t, f);
}

TEST_CASE("kill-on-close kills only processes of the pins' own user: a context passed to another user's process does not get it killed") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=kill-on-close");
  const std::string f = MakeFile(t, "f", 8 * B);
  REQUIRE(chown(f.c_str(), 1000, 1000) == 0);  // EXCLUSIVE leases are the owner's
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto p = StartHolder(f, sv[0]);
  auto q = StartHolder(f, sv[1]);  // a service of another user that keeps what it receives
  close(sv[0]);
  close(sv[1]);
  REQUIRE(p->Ask("become 1000") == "OK");
  REQUIRE(q->Ask("become 65534") == "OK");
  REQUIRE(p->Ask("setup " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
  REQUIRE(p->Ask("send-context") == "OK");
  REQUIRE(q->Ask("receive-context") == "OK");
  REQUIRE(p->Ask("close-context") == "OK");
  REQUIRE(p->Ask("close-file") == "closing");
  CHECK(p->Reply() == "OK");
  CHECK(q->Wait(500) == -1);  // alive
  CHECK(p->Wait(0) == -1);
  CheckAllGone(t, f);  // the pins were aborted all the same
  CHECK(q->Ask("close-context") == "OK");
}

TEST_CASE("block-close waits only for the pins' own user: another user's process closing a passed descriptor returns at once") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=block-close");
  const std::string f = MakeFile(t, "f", 8 * B);
  REQUIRE(chown(f.c_str(), 1000, 1000) == 0);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto p = StartHolder(f, sv[0]);
  auto q = StartHolder(f, sv[1]);  // a service of another user that closes what it receives
  close(sv[0]);
  close(sv[1]);
  REQUIRE(p->Ask("become 1000") == "OK");
  REQUIRE(q->Ask("become 65534") == "OK");
  REQUIRE(p->Ask("setup " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
  REQUIRE(p->Ask("send-file") == "OK");
  REQUIRE(q->Ask("receive-file") == "OK");
  REQUIRE(p->Ask("close-file") == "closing");  // the pinner keeps... nothing: it waits
  CHECK(p->Reply(300) == "TIMEOUT");
  const auto t0 = Clock::now();
  REQUIRE(q->Ask("close-file") == "closing");
  CHECK(q->Reply(2000) == "OK");
  CHECK(Clock::now() - t0 < std::chrono::milliseconds(1000));
  CHECK(Pins(t.dir).size() == 1);
  REQUIRE(p->Kill(5000) != -1);  // its blocked close ends with it
  CheckAllGone(t, f);
}

TEST_CASE("scenario 5, kill-on-close: a declared pin stays fenced, its blocks quarantined, until its holders are gone") {
  if (!CanMountFuse()) return;
  RootMounted t("close_with_pins=kill-on-close");
  const std::string f = MakeFile(t, "f", 8 * B);
  auto p = StartHolder(f);
  REQUIRE(p->Ask("open") == "OK");
  REQUIRE(p->Ask("lease") == "OK");
  REQUIRE(p->Ask("context") == "OK");
  REQUIRE(p->Ask("pin 0 " + std::to_string(8 * B) + " declared").rfind("OK ", 0) == 0);
  REQUIRE(p->Ask("close-file") == "closing");
  CHECK(KilledBySigkill(p->Wait(5000)));
  CheckAllGone(t, f);
  // The killed holder's records go when the daemon sees its death, which
  // may come after the pin's end: wait for it, then check exactly.
  leasefs_dax_list l{};
  CHECK(Eventually([&] {
    return ioctl(t.dir, LEASEFS_IOC_DAX_LIST, &l) == 0 && l.records_total == 0 &&
           l.quarantined_total == 0;
  }));
  REQUIRE(ioctl(t.dir, LEASEFS_IOC_DAX_LIST, &l) == 0);
  CHECK(l.records_total == 0);
  CHECK(l.quarantined_total == 0);
}

// One way a pinning process dies, its descriptors closing in one order.
struct DeathOrder {
  const char* name;
  std::vector<std::string> before;  // commands, in order
  bool killed;  // SIGKILLed; else it exits by itself (no signal pending:
                // nothing but PF_EXITING says that its closes must not wait)
};

TEST_CASE("scenario 6: a pinning process SIGKILLed with its descriptors closing in every order, under every close policy: no deadlock, nothing left") {
  if (!CanMountFuse()) return;
  // exit closes descriptors in ascending order
  const DeathOrder orders[] = {
      {"context closed, then killed", {"close-context"}, true},
      {"file closed (maybe blocking), then killed", {"close-file"}, true},
      {"killed holding both, the file's descriptor first", {"fds 100 101"}, true},
      {"killed holding both, the context's descriptor first", {"fds 101 100"}, true},
      {"killed holding both, as they were opened", {}, true},
      {"exits holding both, the file's descriptor first", {"fds 100 101"}, false},
      {"exits holding both, the context's descriptor first", {"fds 101 100"}, false},
  };
  for (const std::string policy : {"zombie", "block-close", "kill-on-close"}) {
    CAPTURE(policy);
    RootMounted t("close_with_pins=" + policy);
    int round = 0;
    for (const DeathOrder& order : orders) {
      const std::string name = order.name;
      CAPTURE(name);
      const std::string f = MakeFile(t, "f" + std::to_string(round++), 8 * B);
      auto p = StartHolder(f);
      REQUIRE(p->Ask("setup " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
      for (const std::string& cmd : order.before) {
        if (cmd == "close-file") {
          REQUIRE(p->Ask(cmd) == "closing");
          (void)p->Reply(300);  // answered, blocked, or killed by kill-on-close
        } else {
          CHECK(p->Ask(cmd) == "OK");
        }
      }
      if (order.killed) {
        CHECK(KilledBySigkill(p->Kill(5000)));
      } else {
        p->Send("die");
        const int status = p->Wait(5000);
        CHECK((status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3));
      }
      CHECK(kill(t.m.daemon_pid(), 0) == 0);
      CheckAllGone(t, f);
    }
  }
}

// Kept: listed with the creator, unfenced (`flags`: whether the open file
// they were made through is closed), and the zombie lease refuses changes.
void CheckKept(const RootMounted& t, const std::string& f, pid_t creator, uint32_t flags) {
  CHECK(Eventually([&] { return LeaseStates(t.dir) == "ZOMBIE/1"; }));
  const auto pins = Pins(t.dir);
  REQUIRE(pins.size() == 1);
  CHECK((pins[0].flags & (LEASEFS_PIN_REC_FENCED | LEASEFS_PIN_REC_CLOSED)) == flags);
  CHECK(pins[0].creator_pid == static_cast<uint32_t>(creator));
  CHECK(SYS(truncate(f.c_str(), 0)) == "ETXTBSY");
}

TEST_CASE("scenario 7: a context passed by SCM_RIGHTS, its creator gone: follow-fd keeps the pins, strict aborts them") {
  if (!CanMountFuse()) return;
  bool strict = false;
  SUBCASE("follow-fd") {}
  SUBCASE("strict") { strict = true; }
  RootMounted t(strict ? "pin_passing=strict" : "pin_passing=follow-fd");
  const std::string f = MakeFile(t, "f", 8 * B);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto p = StartHolder(f, sv[0]);
  auto q = StartHolder(f, sv[1]);
  close(sv[0]);
  close(sv[1]);
  const std::string pinned = p->Ask("setup " + std::to_string(8 * B));
  REQUIRE(pinned.rfind("OK ", 0) == 0);
  const pid_t creator = p->pid();
  REQUIRE(p->Ask("send-context") == "OK");
  REQUIRE(q->Ask("receive-context") == "OK");
  REQUIRE(q->Ask("open") == "OK");
  CHECK(p->Ask("exit") == "EOF");
  CHECK(p->Wait(5000) == 0);
  if (!strict) {
    CheckKept(t, f, creator, LEASEFS_PIN_REC_CLOSED);
    // The receiver pins nothing more without a lease of its own, and the
    // zombie lease leaves it none to take.
    CHECK(q->Ask("pin 0 4096") == "EPERM");
    CHECK(q->Ask("lease") == "EAGAIN");
    CHECK(q->Ask("close-context") == "OK");
  } else {
    CHECK(q->Ask("fenced 3000") == pinned);  // told, with the pin's id, once it is gone
    CHECK(Pins(t.dir).empty());
    CHECK(LeaseStates(t.dir) == "");
  }
  CheckAllGone(t, f);
  if (strict) {
    // The context lives on; pins under the receiver's own lease are its own.
    REQUIRE(WriteFile(f, std::string(8 * B, 'b')) == "");
    CHECK(q->Ask("lease") == "OK");
    CHECK(q->Ask("pin 0 4096").rfind("OK ", 0) == 0);
    CHECK(Pins(t.dir).size() == 1);
  }
}

TEST_CASE("scenario 7, strict: pins a receiver made under its own lease outlive the context's creator") {
  if (!CanMountFuse()) return;
  RootMounted t("pin_passing=strict");
  const std::string f = MakeFile(t, "f", 8 * B);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto p = StartHolder(f, sv[0]);
  auto q = StartHolder(f, sv[1]);
  close(sv[0]);
  close(sv[1]);
  REQUIRE(p->Ask("open") == "OK");
  REQUIRE(p->Ask("context") == "OK");
  REQUIRE(p->Ask("send-context") == "OK");
  REQUIRE(q->Ask("receive-context") == "OK");
  REQUIRE(q->Ask("open") == "OK");
  REQUIRE(q->Ask("lease") == "OK");
  REQUIRE(q->Ask("pin 0 " + std::to_string(8 * B)).rfind("OK ", 0) == 0);
  CHECK(p->Ask("exit") == "EOF");
  CHECK(p->Wait(5000) == 0);
  CHECK(q->Ask("fenced 1000") == "ETIMEDOUT");  // the daemon saw the death by now
  const auto pins = Pins(t.dir);
  REQUIRE(pins.size() == 1);
  CHECK((pins[0].flags & (LEASEFS_PIN_REC_FENCED | LEASEFS_PIN_REC_CLOSED)) == 0);
  CHECK(LeaseStates(t.dir) == "ACTIVE/1");
  CHECK(SYS(truncate(f.c_str(), 0)) == "ETXTBSY");
  CHECK(q->Ask("unpin") == "OK");
  CHECK(q->Ask("exit") == "EOF");
  CheckAllGone(t, f);
}

TEST_CASE("scenario 8: a context inherited by fork, its creator gone: follow-fd keeps the pins, strict aborts them") {
  if (!CanMountFuse()) return;
  bool strict = false;
  SUBCASE("follow-fd") {}
  SUBCASE("strict") { strict = true; }
  RootMounted t(strict ? "pin_passing=strict" : "pin_passing=follow-fd");
  Subreaper reaper;
  const std::string f = MakeFile(t, "f", 8 * B);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto p = StartHolder(f, sv[1]);
  const std::string pinned = p->Ask("setup " + std::to_string(8 * B));
  REQUIRE(pinned.rfind("OK ", 0) == 0);
  const pid_t creator = p->pid();
  // The child serves commands on the other socket, holding what it
  // inherited: the open file (with the lease its parent took) and the
  // context.
  const pid_t child = static_cast<pid_t>(std::stol(p->Ask("fork-serve")));
  REQUIRE(child > 0);
  Proc c(child, sv[0]);
  close(sv[1]);
  CHECK(p->Ask("exit") == "EOF");
  CHECK(p->Wait(5000) == 0);
  if (!strict) {
    CheckKept(t, f, creator, 0);  // the child keeps the open file
    // Not its lease: the child pins nothing more (scenario 7's last line).
    CHECK(c.Ask("pin 0 4096") == "EPERM");
    CHECK(c.Ask("close-context") == "OK");
  } else {
    // Told once the pin is gone: fenced at the soft NIC and no longer
    // counted on the zombie lease, which went with it.
    CHECK(c.Ask("fenced 3000") == pinned);
    CHECK(Pins(t.dir).empty());
    CHECK(LeaseStates(t.dir) == "");
  }
  // The pins go first, then the zombie lease they held: a listing between
  // the two shows the lease without pins.
  CHECK(Eventually([&] { return Pins(t.dir).empty() && LeaseStates(t.dir).empty(); }));
  CHECK(LeaseStates(t.dir) == "");
  CHECK(c.Ask("exit") == "EOF");
  CHECK(c.Wait(5000) == 0);
  CheckAllGone(t, f);
}

}  // namespace
}  // namespace leasefs::testing
