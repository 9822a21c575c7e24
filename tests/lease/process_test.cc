// Leases held by real processes: the break signal a child receives, the
// release of a child's leases when it is SIGKILLed while a breaker waits, and
// how the holder's process is found from its thread.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <thread>

#include "base/unique_fd.h"
#include "lease/process.h"
#include "tests/lease/test_util.h"

namespace leasefs::lease::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// What the child saw, written to the parent through a pipe.
struct Report {
  int signo;
  int code;
  int fd;
  pid_t pid;
  uid_t uid;
  uint64_t value;
  int extra;  // further signals within 300 ms
};

int BreakSignal() { return SIGRTMIN + 3; }

// A child process that holds leases (by its pid). It is born with the break
// signal blocked, waits for it up to 5 s, reports what it got, and then
// waits to be killed. Only async-signal-safe calls after fork.
class Child {
 public:
  Child() {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, BreakSignal());
    pthread_sigmask(SIG_BLOCK, &set, &old);
    pid_ = fork();
    if (pid_ == 0) Run(fds[1], set);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    close(fds[1]);
    from_child_.reset(fds[0]);
    REQUIRE(pid_ > 0);
  }
  ~Child() {
    if (pid_ > 0) Kill();
  }

  pid_t pid() const { return pid_; }

  bool Read(Report* r) {
    return read(from_child_.get(), r, sizeof(*r)) == static_cast<ssize_t>(sizeof(*r));
  }

  void Kill() {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  [[noreturn]] static void Run(int to_parent, const sigset_t& set) {
    Report r;
    std::memset(&r, 0, sizeof(r));
    siginfo_t info;
    const timespec wait_first{5, 0};
    const timespec wait_more{0, 300'000'000};
    if (sigtimedwait(&set, &info, &wait_first) > 0) {
      r.signo = info.si_signo;
      r.code = info.si_code;
      r.fd = info.si_fd;
      r.pid = info.si_pid;
      r.uid = info.si_uid;
      r.value = reinterpret_cast<uintptr_t>(info.si_value.sival_ptr);
      while (sigtimedwait(&set, &info, &wait_more) > 0) ++r.extra;
    }
    if (write(to_parent, &r, sizeof(r)) != sizeof(r)) _exit(1);
    for (;;) pause();
  }

  pid_t pid_ = -1;
  UniqueFd from_child_;
};

Holder ChildHolder(const Child& c, OpenFileId of, engine::Ino ino = kIno) {
  // Taken as the child's own user: the break signal goes only where its
  // taker could send it.
  Holder h = H(of, true, getuid());
  h.tid = c.pid();
  h.ino = ino;
  return h;
}

TEST_SUITE("lease") {

TEST_CASE("Process: a break queues the holder's signal once, with its value in si_fd") {
  LeaseTable t(Opts(milliseconds(5000)), nullptr);
  Child child;
  LeaseRequest req = Req(R, 0, 4096);
  req.signal = BreakSignal();
  req.sigval = 0x12345678'00000007u;
  REQUIRE(t.SetLease(ChildHolder(child, 1), req, nullptr).ok());
  CHECK(t.GetLease(1, 0).holder_pid == child.pid());
  CHECK(Err(t.Break(By(2), Unmap(0, 1), true, nullptr)) == EWOULDBLOCK);
  CHECK(Err(t.Break(By(3), Unmap(0, 1), true, nullptr)) == EWOULDBLOCK);
  Report r;
  REQUIRE(child.Read(&r));
  CHECK(r.signo == BreakSignal());
  CHECK(r.code == SI_QUEUE);
  CHECK(r.fd == 7);
  CHECK(r.value == 0x12345678'00000007u);
  CHECK(r.pid == getpid());
  CHECK(r.uid == getuid());
  CHECK(r.extra == 0);
}

TEST_CASE("Process: a holder SIGKILLed while a breaker waits lets the breaker go at once") {
  LeaseTable t(Opts(milliseconds(5000)), nullptr);
  Child child;
  REQUIRE(t.SetLease(ChildHolder(child, 1), Req(R, 0, 4096), nullptr).ok());
  REQUIRE(t.SetLease(ChildHolder(child, 2, kIno + 1), Req(W, 0, 0), nullptr).ok());
  REQUIRE(t.SetLease(H(3), Req(R, 0, 4096), nullptr).ok());  // not the child's
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(4), Unmap(0, 1), true, nullptr);
  });
  CHECK(Err(breaker.get()) == EWOULDBLOCK);  // marks both; the next one waits
  t.CloseOpenFile(3);
  breaker = std::async(std::launch::async, [&] {
    return t.Break(By(4), Unmap(0, 1), false, nullptr);
  });
  CHECK(breaker.wait_for(milliseconds(100)) == std::future_status::timeout);
  const auto t0 = Clock::now();
  child.Kill();
  CHECK(breaker.get().ok());
  CHECK(MsSince(t0) < 1000);
  CHECK(t.List(0, 10, nullptr).empty());
  auto ev = t.Events(0, 100, milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  int exits = 0;
  for (const Event& e : *ev) {
    if (e.type == LEASEFS_EVENT_RELEASE && e.why == LEASEFS_WHY_EXIT) {
      ++exits;
      CHECK(e.holder_pid == e.actor_pid);
    }
  }
  CHECK(exits == 2);
}

TEST_CASE("Process: a child's leases go when it dies, with no breaker") {
  LeaseTable t(Opts(milliseconds(5000)), nullptr);
  Child child;
  REQUIRE(t.SetLease(ChildHolder(child, 1), Req(R, 0, 4096), nullptr).ok());
  child.Kill();
  const auto until = Clock::now() + milliseconds(1000);
  while (t.AnyLeases(kIno) && Clock::now() < until) std::this_thread::sleep_for(milliseconds(2));
  CHECK_FALSE(t.AnyLeases(kIno));
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_NONE);
}

TEST_CASE("Process: a lease taken by any thread belongs to the thread's process") {
  LeaseTable t(Opts(), nullptr);
  pid_t tid = 0;
  std::thread other([&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    Holder h = H(1);
    h.tid = tid;
    CHECK(t.SetLease(h, Req(R, 0, 10), nullptr).ok());
  });
  other.join();
  CHECK(tid != getpid());
  CHECK(t.GetLease(1, 0).holder_pid == getpid());
  // The thread is gone; its process lives on, and so does the lease.
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_ACTIVE);
}

TEST_CASE("Process: a thread that is gone cannot take a lease (ESRCH)") {
  LeaseTable t(Opts(), nullptr);
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  Holder h = H(1);
  h.tid = pid;
  CHECK(Err(t.SetLease(h, Req(R, 0, 10), nullptr)) == ESRCH);
  CHECK(t.List(0, 10, nullptr).empty());
}

TEST_CASE("Process: a uid has at most max_processes_per_uid processes holding leases") {
  Options o = Opts();
  o.max_processes_per_uid = 2;
  LeaseTable t(o, nullptr);
  Child a, b, c, d;
  auto as_user = [](const Child& ch, OpenFileId of, uid_t uid) {
    Holder h = ChildHolder(ch, of);
    h.uid = uid;
    return h;
  };
  REQUIRE(t.SetLease(as_user(a, 1, 1000), Req(R, 0, 10), nullptr).ok());
  REQUIRE(t.SetLease(as_user(b, 2, 1000), Req(R, 0, 10), nullptr).ok());
  CHECK(Err(t.SetLease(as_user(c, 3, 1000), Req(R, 0, 10), nullptr)) == ENOLCK);
  CHECK(t.SetLease(as_user(c, 3, 1001), Req(R, 0, 10), nullptr).ok());  // another uid
  CHECK(Err(t.SetLease(as_user(d, 4, 1000), Req(R, 0, 10), nullptr)) == ENOLCK);
  // A process whose leases are gone makes room.
  REQUIRE(t.SetLease(as_user(a, 1, 1000), Unlock(0, 0), nullptr).ok());
  CHECK(t.SetLease(as_user(d, 4, 1000), Req(R, 0, 10), nullptr).ok());
}

TEST_CASE("Process: a signal goes only where the lease's taker could send it now") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to change a child's uids");
    return;
  }
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // As a set-uid program would: real 1000, saved 1001 (effective 1001).
    if (setresuid(1000, 1001, 1001) != 0) _exit(1);
    char c = 'r';
    (void)!write(ready[1], &c, 1);
    pause();
    _exit(0);
  }
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  auto pidfd = OpenPidfd(child);
  REQUIRE(pidfd.ok());
  CHECK(MaySignal(0, child, pidfd->get()));
  CHECK(MaySignal(1000, child, pidfd->get()));   // its real uid
  CHECK(MaySignal(1001, child, pidfd->get()));   // its saved uid
  CHECK(!MaySignal(1002, child, pidfd->get()));  // a stranger
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  CHECK(!MaySignal(1000, child, pidfd->get()));  // gone: its pid may be another's
  close(ready[0]);
  close(ready[1]);
}

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::lease::test
