// The pin socket (pin/context_server.h) with real processes: the hello, a
// context that ends with its last descriptor (and not before, when a fork's
// child or an SCM_RIGHTS receiver still holds it), what a client writes, and
// the per-user cap as an unprivileged user.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "lease/lease_table.h"
#include "leasefs/ioctl.h"
#include "pin/context_server.h"
#include "pin/pin_table.h"

namespace leasefs::pin {
namespace {

using std::chrono::milliseconds;
constexpr engine::Ino kIno = 7;

int Connect(const std::string& name) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The hello on a fresh connection: false if none came within 2 s (the
// server closed it, or said nothing).
bool ReadHello(int fd, ContextId* id, Token* token) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 2000) != 1) return false;
  uint8_t buf[48];
  if (recv(fd, buf, sizeof(buf), MSG_WAITALL) != 48) return false;
  uint16_t type;
  std::memcpy(&type, buf + 6, 2);
  if (type != 1) return false;
  std::memcpy(id, buf + 8, 8);
  std::memcpy(token->data(), buf + 32, 16);
  return true;
}

// Sends `fd` over unix socket `sock` with SCM_RIGHTS (returns 0), or, for
// fd -1, receives one (returns it); -1 on failure.
int PassFd(int sock, int fd) {
  char c = 'f';
  char ctl[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{&c, 1};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  if (fd < 0) {
    if (recvmsg(sock, &m, 0) != 1 || CMSG_FIRSTHDR(&m) == nullptr) return -1;
    int got = -1;
    std::memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
    return got;
  }
  cmsghdr* cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

template <typename Pred>
bool Eventually(Pred pred, milliseconds limit = milliseconds(3000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return pred();
}

struct Fixture {
  Fixture() : leases(lease::Options{}, nullptr), table(&leases, nullptr), server(&table) {
    REQUIRE(server.Start().ok());
    lease::Holder h{1, kIno, 0, 0, true};
    lease::LeaseRequest r;
    r.type = LEASEFS_LEASE_WRITE;
    r.flags = LEASEFS_LEASE_EXCLUSIVE;
    REQUIRE(leases.SetLease(h, r, nullptr).ok());
  }
  // A declared pin of open file 1 through context (id, token); its memory
  // counts `released`.
  Status PinIt(ContextId id, const Token& token, std::atomic<int>* released) {
    PinTable::PinRequest r;
    r.context = id;
    r.token = token;
    r.open_file = 1;
    r.ino = kIno;
    r.uid = getuid();
    r.length = 4096;
    r.provider = Provider::kDeclared;
    return table.Pin(r, PinTable::Region{mem, 4096, [released] { released->fetch_add(1); }})
        .status();
  }
  // A new context with one declared pin: the client's descriptor.
  int PinnedContext(std::atomic<int>* released) {
    const int fd = Connect(server.name());
    REQUIRE(fd >= 0);
    ContextId id = 0;
    Token token{};
    REQUIRE(ReadHello(fd, &id, &token));
    REQUIRE(PinIt(id, token, released).ok());
    return fd;
  }
  lease::LeaseTable leases;
  PinTable table;
  ContextServer server;
  char mem[4096] = {};
};

TEST_SUITE("pin") {

TEST_CASE("ContextServer: a connection is a context; its last close drops its pins") {
  Fixture fx;
  CHECK(fx.server.name().size() >= 1);
  std::atomic<int> released{0};
  const int fd = fx.PinnedContext(&released);
  CHECK(fx.table.PinsOf(1) == 1);
  auto list = fx.table.List(0);
  REQUIRE(list.size() == 1);
  CHECK(list[0].creator_pid == getpid());  // from SO_PEERCRED
  // What a client writes is dropped; the context stays.
  CHECK(write(fd, "garbage", 7) == 7);
  std::this_thread::sleep_for(milliseconds(50));
  CHECK(fx.table.PinsOf(1) == 1);
  close(fd);
  CHECK(Eventually([&] { return released.load() == 1; }));
  CHECK(fx.table.PinsOf(1) == 0);
  CHECK(fx.leases.GetLease(1, 0).pins == 0);
  CHECK(fx.server.open_contexts() == 0);
}

TEST_CASE("ContextServer: a server starts once") {
  Fixture fx;
  CHECK(fx.server.Start().err() == EINVAL);
  fx.server.Stop();
  CHECK(fx.server.Start().err() == EINVAL);
  fx.server.Stop();
  CHECK(Connect(fx.server.name()) < 0);  // nobody listens any more
}

TEST_CASE("ContextServer: a fork's child keeps the context after the parent's close") {
  Fixture fx;
  std::atomic<int> released{0};
  const int fd = fx.PinnedContext(&released);
  const pid_t child = fork();
  if (child == 0) {
    for (;;) pause();  // holds the inherited descriptor
  }
  REQUIRE(child > 0);
  close(fd);
  std::this_thread::sleep_for(milliseconds(200));
  CHECK(released.load() == 0);
  CHECK(fx.table.PinsOf(1) == 1);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  CHECK(Eventually([&] { return released.load() == 1; }));
  CHECK(fx.server.open_contexts() == 0);
}

TEST_CASE("ContextServer: an SCM_RIGHTS receiver keeps the context until it closes it") {
  Fixture fx;
  std::atomic<int> released{0};
  const int fd = fx.PinnedContext(&released);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  const pid_t child = fork();
  if (child == 0) {
    // Holds no copy from the fork; receives the context, says so, and
    // keeps it until told to drop it.
    close(fd);
    close(sv[0]);
    const int got = PassFd(sv[1], -1);
    if (got < 0) _exit(1);
    char c = 0;
    if (write(sv[1], "r", 1) != 1 || read(sv[1], &c, 1) != 1) _exit(1);
    close(got);
    if (write(sv[1], "c", 1) != 1) _exit(1);
    _exit(0);
  }
  REQUIRE(child > 0);
  close(sv[1]);
  REQUIRE(PassFd(sv[0], fd) == 0);
  char c = 0;
  REQUIRE(read(sv[0], &c, 1) == 1);
  close(fd);
  std::this_thread::sleep_for(milliseconds(200));
  CHECK(released.load() == 0);  // the child's copy keeps it
  REQUIRE(write(sv[0], "d", 1) == 1);
  REQUIRE(read(sv[0], &c, 1) == 1);
  CHECK(Eventually([&] { return released.load() == 1; }));
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  close(sv[0]);
}

TEST_CASE("ContextServer: an unprivileged user gets 256 contexts at once, no more") {
  if (getuid() != 0) {
    MESSAGE("skipped: needs root to run a child as another user");
    return;
  }
  Fixture fx;
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  const pid_t child = fork();
  if (child == 0) {
    close(pipefd[0]);
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    std::vector<int> fds;
    int hellos = 0;
    for (int i = 0; i < 300; ++i) {
      const int fd = Connect(fx.server.name());
      if (fd < 0) continue;
      fds.push_back(fd);
      ContextId id;
      Token token;
      hellos += ReadHello(fd, &id, &token) ? 1 : 0;
    }
    if (write(pipefd[1], &hellos, sizeof(hellos)) != sizeof(hellos)) _exit(1);
    for (;;) pause();
  }
  REQUIRE(child > 0);
  close(pipefd[1]);
  int hellos = -1;
  REQUIRE(read(pipefd[0], &hellos, sizeof(hellos)) == sizeof(hellos));
  CHECK(hellos == static_cast<int>(ContextServer::kMaxContextsPerUser));
  CHECK(fx.server.open_contexts() == ContextServer::kMaxContextsPerUser);
  // Root is not capped meanwhile.
  const int fd = Connect(fx.server.name());
  ContextId id;
  Token token;
  CHECK(ReadHello(fd, &id, &token));
  close(fd);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(pipefd[0]);
  CHECK(Eventually([&] { return fx.server.open_contexts() == 0; }));
}

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::pin
