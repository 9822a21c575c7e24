// Pins counted on leases (docs/pins.md): which leases may count them, what
// UNLOCK, conversion, close and the holder's death do to a pinned lease, and
// what a change meets under each -o pinned_break= policy, with real threads,
// a real child process and a short break time.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/lease/test_util.h"

namespace leasefs::lease::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Stands in for pin/: records what the table asked it to fence and says it
// fenced `count` pins of each.
class RecordingFencer : public PinFencer {
 public:
  explicit RecordingFencer(size_t count = 1) : count_(count) {}
  size_t FenceLease(LeaseId lease) noexcept override {
    std::lock_guard<std::mutex> l(mu_);
    fenced_.push_back(lease);
    return count_;
  }
  std::vector<LeaseId> fenced() {
    std::lock_guard<std::mutex> l(mu_);
    return fenced_;
  }

 private:
  const size_t count_;
  std::mutex mu_;
  std::vector<LeaseId> fenced_;
};

Options Policy(PinnedBreak p, milliseconds break_time = milliseconds(200)) {
  Options o = Opts(break_time);
  o.pinned_break = p;
  return o;
}

// An EXCLUSIVE WRITE lease of open file 1 over [0, 1 MiB) with one pin.
LeaseId PinnedLease(LeaseTable& t) {
  auto id = t.SetLease(H(1), Req(W, 0, 1 << 20, X), nullptr);
  REQUIRE(id.ok());
  auto pinned = t.AddPin(1, 0, 1 << 20);
  REQUIRE(pinned.ok());
  REQUIRE(*pinned == *id);
  return *id;
}

int CountEvents(LeaseTable& t, uint32_t type, uint32_t why = ~0u) {
  auto ev = t.Events(0, LEASEFS_EVENTS_KEPT, milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  int n = 0;
  for (const Event& e : *ev) n += e.type == type && (why == ~0u || e.why == why);
  return n;
}

// A child process that only waits to be killed: a lease holder that dies.
class Sleeper {
 public:
  Sleeper() {
    pid_ = fork();
    if (pid_ == 0) {
      for (;;) pause();
    }
    REQUIRE(pid_ > 0);
  }
  ~Sleeper() { Kill(); }
  pid_t pid() const { return pid_; }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// Open file 1's holder: process `child`.
Holder ChildHolder(const Sleeper& child) {
  Holder h = H(1, true, getuid());
  h.tid = child.pid();
  return h;
}

// An EXCLUSIVE WRITE lease of [0, 4096) taken by `h`, with one pin.
LeaseId PinnedChildLease(LeaseTable& t, const Holder& h) {
  auto id = t.SetLease(h, Req(W, 0, 4096, X), nullptr);
  REQUIRE(id.ok());
  REQUIRE(t.AddPin(1, 0, 4096).ok());
  return *id;
}

TEST_SUITE("lease") {

TEST_CASE("Pins: only an active lease nobody else can break counts them (scenarios 1, 2)") {
  LeaseTable t(Opts(), nullptr);
  CHECK(Err(t.AddPin(1, 0, 4096)) == EPERM);  // no lease at all
  REQUIRE(t.SetLease(H(1), Req(R, 0, 8192), nullptr).ok());
  REQUIRE(t.SetLease(H(2), Req(W, 0, 8192), nullptr).ok());
  REQUIRE(t.SetLease(H(3), Req(R, 0, 8192, U), nullptr).ok());
  CHECK(Err(t.AddPin(1, 0, 4096)) == EPERM);  // READ
  CHECK(Err(t.AddPin(2, 0, 4096)) == EPERM);  // WRITE
  CHECK(Err(t.AddPin(3, 0, 4096)) == EPERM);  // READ|UNBREAKABLE, shared
  auto rx = t.SetLease(H(4, true, 1000), Req(R, 1 << 20, 8192, X), nullptr);
  auto wu = t.SetLease(H(5), Req(W, 2 << 20, 8192, U), nullptr);
  auto wx = t.SetLease(H(6), Req(W, 3 << 20, 0, X), nullptr);
  REQUIRE(rx.ok());
  REQUIRE(wu.ok());
  REQUIRE(wx.ok());
  CHECK(t.AddPin(4, 1 << 20, 8192).value() == *rx);
  CHECK(t.AddPin(5, (2 << 20) + 4096, 4096).value() == *wu);
  CHECK(t.AddPin(6, 5ull << 40, 1 << 20).value() == *wx);  // a lease "to the end"
  CHECK(t.GetLease(4, 1 << 20).pins == 1);
  // The whole range must be covered, by this open file's lease.
  CHECK(Err(t.AddPin(4, 1 << 20, 8193)) == EPERM);
  CHECK(Err(t.AddPin(4, (1 << 20) - 1, 2)) == EPERM);
  CHECK(Err(t.AddPin(7, 1 << 20, 4096)) == EPERM);
  CHECK(Err(t.AddPin(4, 1 << 20, 0)) == EINVAL);
  CHECK(Err(t.AddPin(6, ~0ull - 10, 4096)) == EINVAL);
}

TEST_CASE("Pins: a pin names its lease's inode, or it is refused with EPERM") {
  LeaseTable t(Opts(), nullptr);
  const auto id = t.SetLease(H(1), Req(W, 0, 8192, X), nullptr);
  REQUIRE(id.ok());
  CHECK(Err(t.AddPin(1, 0, 4096, 0, kIno + 1)) == EPERM);
  CHECK(t.GetLease(1, 0).pins == 0);
  CHECK(t.AddPin(1, 0, 4096, 0, kIno).value() == *id);
  CHECK(t.AddPin(1, 0, 4096).value() == *id);  // 0: not checked
  CHECK(t.GetLease(1, 0).pins == 2);
}

TEST_CASE("Pins: UNLOCK and a conversion away from exclusive give EBUSY while pinned (scenario 14)") {
  LeaseTable t(Opts(), nullptr);
  const LeaseId id = PinnedLease(t);
  auto other = t.SetLease(H(1), Req(R, 2 << 20, 4096), nullptr);
  REQUIRE(other.ok());
  CHECK(Err(t.SetLease(H(1), Unlock(0, 1 << 20), nullptr)) == EBUSY);
  // Releasing all of the open file's leases is one step: none goes.
  CHECK(Err(t.SetLease(H(1), Unlock(0, 0), nullptr)) == EBUSY);
  CHECK(t.List(0, 10, nullptr).size() == 2);
  LeaseRequest conv = Req(R, 0, 1 << 20);
  conv.convert = id;
  CHECK(Err(t.SetLease(H(1), conv, nullptr)) == EBUSY);
  conv = Req(W, 0, 1 << 20, U);  // still refuses every change: allowed
  conv.convert = id;
  CHECK(t.SetLease(H(1), conv, nullptr).value() == id);
  CHECK(t.GetLease(1, 0).pins == 1);
  t.DropPin(id);
  CHECK(t.GetLease(1, 0).pins == 0);
  CHECK(t.SetLease(H(1), Unlock(0, 0), nullptr).ok());
  CHECK(t.List(0, 10, nullptr).empty());
  t.DropPin(id);  // unknown now: ignored
}

TEST_CASE("Pins: a pinned lease outlives its close as ZOMBIE and goes with its last pin") {
  LeaseTable t(Opts(), nullptr);
  const LeaseId id = PinnedLease(t);
  REQUIRE(t.AddPin(1, 4096, 4096).ok());
  t.CloseOpenFile(1);
  LeaseInfo i = t.GetLease(1, 0);
  CHECK(i.id == id);
  CHECK(i.state == LEASEFS_STATE_ZOMBIE);
  CHECK(i.pins == 2);
  CHECK(CountEvents(t, LEASEFS_EVENT_ZOMBIE, LEASEFS_WHY_CLOSE) == 1);
  CHECK(CountEvents(t, LEASEFS_EVENT_RELEASE) == 0);
  // Still refuses, as its kind does (pinned_break=refuse).
  CHECK(Err(t.Break(By(2), Truncate(1 << 20, 0), false, nullptr)) == ETXTBSY);
  CHECK(Err(t.MayChange(By(2), Unmap(0, 4096))) == ETXTBSY);
  t.DropPin(id);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_ZOMBIE);
  t.DropPin(id);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_NONE);
  CHECK_FALSE(t.AnyLeases(kIno));
  CHECK(CountEvents(t, LEASEFS_EVENT_RELEASE, LEASEFS_WHY_CLOSE) == 1);
  CHECK(t.Break(By(2), Truncate(1 << 20, 0), false, nullptr).ok());
}

TEST_CASE("Pins: a pinned lease outlives its holder's death as ZOMBIE (scenario 6 without the context's close)") {
  LeaseTable t(Opts(), nullptr);
  Sleeper child;
  const Holder h = ChildHolder(child);
  const LeaseId id = PinnedChildLease(t, h);
  auto plain = t.SetLease(h, Req(W, 8192, 4096, X), nullptr);
  REQUIRE(plain.ok());
  child.Kill();
  // The unpinned lease dies with its process; the pinned one stays.
  CHECK(Eventually([&] { return t.GetLease(1, 8192).state == LEASEFS_STATE_NONE; }));
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_ZOMBIE);
  CHECK(CountEvents(t, LEASEFS_EVENT_ZOMBIE, LEASEFS_WHY_EXIT) == 1);
  t.DropPin(id);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_NONE);
}

TEST_CASE("Pins: refuse gives ETXTBSY to others and EDEADLOCK to the holder, at once") {
  RecordingFencer fencer;
  LeaseTable t(Policy(PinnedBreak::kRefuse), nullptr);
  t.SetPinFencer(&fencer);
  PinnedLease(t);
  const auto t0 = Clock::now();
  CHECK(Err(t.Break(By(2), Unmap(0, 4096), false, nullptr)) == ETXTBSY);
  CHECK(Err(t.Break(By(1), Unmap(0, 4096), false, nullptr)) == EDEADLOCK);
  CHECK(MsSince(t0) < 100);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_ACTIVE);
  CHECK(fencer.fenced().empty());
}

TEST_CASE("Pins: fence recalls the pinned lease, fences at the break time, revokes, and the change goes") {
  RecordingFencer fencer;
  LeaseTable t(Policy(PinnedBreak::kFence), nullptr);
  t.SetPinFencer(&fencer);
  const LeaseId id = PinnedLease(t);
  CHECK(Err(t.MayChange(By(2), Unmap(0, 4096))) == ERESTART);
  // The holder's own change still may not free its pinned blocks.
  CHECK(Err(t.Break(By(1), Unmap(0, 4096), false, nullptr)) == EDEADLOCK);
  const auto t0 = Clock::now();
  CHECK(t.Break(By(2), Truncate(1 << 20, 0), false, nullptr).ok());
  const double ms = MsSince(t0);
  CHECK(ms >= 190);
  CHECK(ms < 1000);
  CHECK(fencer.fenced() == std::vector<LeaseId>{id});
  LeaseInfo i = t.GetLease(1, 0);
  CHECK(i.state == LEASEFS_STATE_REVOKED);
  CHECK(i.pins == 0);
  CHECK(CountEvents(t, LEASEFS_EVENT_FENCE) == 1);
  CHECK(CountEvents(t, LEASEFS_EVENT_REVOKE) == 1);
  // The tombstone is released like any other, nothing left to unpin.
  CHECK(t.SetLease(H(1), Unlock(0, 1 << 20), nullptr).ok());
}

TEST_CASE("Pins: under fence a holder that unpins and releases in time is never fenced") {
  RecordingFencer fencer;
  LeaseTable t(Policy(PinnedBreak::kFence, milliseconds(5000)), nullptr);
  t.SetPinFencer(&fencer);
  const LeaseId id = PinnedLease(t);
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 4096), false, nullptr);
  });
  REQUIRE(Eventually([&] { return t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING; }));
  // A breaking lease takes no new pin, and may not go before its pins.
  CHECK(Err(t.AddPin(1, 0, 4096)) == EPERM);
  CHECK(Err(t.SetLease(H(1), Unlock(0, 1 << 20), nullptr)) == EBUSY);
  t.DropPin(id);
  CHECK(t.SetLease(H(1), Unlock(0, 1 << 20), nullptr).ok());
  REQUIRE(breaker.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  CHECK(breaker.get().ok());
  CHECK(fencer.fenced().empty());
}

TEST_CASE("Pins: wait keeps the breaker waiting past the break time until the pins go") {
  RecordingFencer fencer;
  LeaseTable t(Policy(PinnedBreak::kWait, milliseconds(100)), nullptr);
  t.SetPinFencer(&fencer);
  const LeaseId id = PinnedLease(t);
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 4096), false, nullptr);
  });
  CHECK(breaker.wait_for(milliseconds(400)) == std::future_status::timeout);
  LeaseInfo i = t.GetLease(1, 0);
  CHECK(i.state == LEASEFS_STATE_BREAKING);
  CHECK(i.break_deadline == 0);  // ran out; the pins hold it now
  t.DropPin(id);
  REQUIRE(breaker.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  CHECK(breaker.get().ok());
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_REVOKED);
  CHECK(fencer.fenced().empty());
}

TEST_CASE("Pins: a waiting breaker under wait is interrupted with EINTR") {
  LeaseTable t(Policy(PinnedBreak::kWait, milliseconds(50)), nullptr);
  PinnedLease(t);
  auto token = t.NewWaitToken();
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 4096), false, token.get());
  });
  std::this_thread::sleep_for(milliseconds(200));
  token->Cancel();
  REQUIRE(breaker.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  CHECK(Err(breaker.get()) == EINTR);
}

TEST_CASE("Pins: a ZOMBIE lease is fenced at once under fence, with nobody to recall") {
  RecordingFencer fencer(2);
  LeaseTable t(Policy(PinnedBreak::kFence, milliseconds(5000)), nullptr);
  t.SetPinFencer(&fencer);
  const LeaseId id = PinnedLease(t);
  REQUIRE(t.AddPin(1, 0, 4096).ok());
  t.CloseOpenFile(1);
  const auto t0 = Clock::now();
  CHECK(t.Break(By(2), Unmap(0, 4096), false, nullptr).ok());
  CHECK(MsSince(t0) < 1000);
  CHECK(fencer.fenced() == std::vector<LeaseId>{id});
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_NONE);
  CHECK(CountEvents(t, LEASEFS_EVENT_FENCE) == 1);
  CHECK(CountEvents(t, LEASEFS_EVENT_RELEASE, LEASEFS_WHY_CLOSE) == 1);
}

TEST_CASE("Pins: a ZOMBIE lease under wait holds the change until its last pin goes") {
  LeaseTable t(Policy(PinnedBreak::kWait, milliseconds(50)), nullptr);
  const LeaseId id = PinnedLease(t);
  t.CloseOpenFile(1);
  CHECK(Err(t.Break(By(2), Unmap(0, 4096), true, nullptr)) == EWOULDBLOCK);
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 4096), false, nullptr);
  });
  CHECK(breaker.wait_for(milliseconds(300)) == std::future_status::timeout);
  t.DropPin(id);
  REQUIRE(breaker.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  CHECK(breaker.get().ok());
  CHECK_FALSE(t.AnyLeases(kIno));
}

TEST_CASE("Pins: the holder's own change over pins is EDEADLOCK under WRITE|UNBREAKABLE too") {
  for (PinnedBreak p : {PinnedBreak::kRefuse, PinnedBreak::kFence, PinnedBreak::kWait}) {
    LeaseTable t(Policy(p), nullptr);
    auto id = t.SetLease(H(1), Req(W, 0, 8192, U), nullptr);
    REQUIRE(id.ok());
    // Unpinned, the holder's own change goes ahead under its WRITE lease.
    CHECK(t.MayChange(By(1), Unmap(0, 4096)).ok());
    REQUIRE(t.AddPin(1, 0, 8192).ok());
    CHECK(Err(t.Break(By(1), Truncate(8192, 0), false, nullptr)) == EDEADLOCK);
    CHECK(Err(t.MayChange(By(1), Unmap(0, 4096))) == EDEADLOCK);
    t.DropPin(*id);
    CHECK(t.MayChange(By(1), Unmap(0, 4096)).ok());
  }
}

TEST_CASE("Pins: a process pins only under a lease it took itself") {
  LeaseTable t(Opts(), nullptr);
  Holder h = H(1, true, getuid());
  h.tid = getpid();
  REQUIRE(t.SetLease(h, Req(W, 0, 4096, X), nullptr).ok());
  Sleeper other;  // say, a fork's child sharing the open file
  CHECK(Err(t.AddPin(1, 0, 4096, other.pid())) == EPERM);
  CHECK(t.AddPin(1, 0, 4096, getpid()).ok());
}

TEST_CASE("Pins: a zombie left by a dead holder costs the table's thread no CPU") {
  LeaseTable t(Opts(), nullptr);
  Sleeper child;
  const LeaseId id = PinnedChildLease(t, ChildHolder(child));
  const pid_t pid = child.pid();
  child.Kill();
  REQUIRE(Eventually([&] { return t.GetLease(1, 0).state == LEASEFS_STATE_ZOMBIE &&
                                  t.GetLease(1, 0).holder_pid == 0; }));
  CHECK(pid != 0);
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(milliseconds(300));
  getrusage(RUSAGE_SELF, &after);
  auto us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000L + r.ru_utime.tv_usec +
           r.ru_stime.tv_usec;
  };
  // A thread spinning on the dead process's pidfd would burn ~300 ms.
  CHECK(us(after) - us(before) < 100'000);
  t.DropPin(id);
}

TEST_CASE("Pins: under fence a recall in progress is waited for after its pins went") {
  LeaseTable t(Policy(PinnedBreak::kFence, milliseconds(5000)), nullptr);
  const LeaseId id = PinnedLease(t);
  auto first = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 4096), false, nullptr);
  });
  REQUIRE(Eventually([&] { return t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING; }));
  t.DropPin(id);
  // A second breaker waits for the lease too, instead of ETXTBSY.
  auto second = std::async(std::launch::async, [&] {
    return t.Break(By(3), Unmap(0, 4096), false, nullptr);
  });
  CHECK(second.wait_for(milliseconds(100)) == std::future_status::timeout);
  CHECK(t.SetLease(H(1), Unlock(0, 1 << 20), nullptr).ok());
  REQUIRE(first.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  REQUIRE(second.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  CHECK(first.get().ok());
  CHECK(second.get().ok());
}

TEST_CASE("Pins: racing pins, unpins, releases and breaks under fence leave no count behind") {
  RecordingFencer fencer(0);  // a fence that finds the pin not yet counted
  LeaseTable t(Policy(PinnedBreak::kFence, milliseconds(20)), nullptr);
  t.SetPinFencer(&fencer);
  std::atomic<bool> stop{false};
  std::thread pinner([&] {
    for (OpenFileId of = 100; !stop.load(); ++of) {
      auto id = t.SetLease(H(of), Req(W, 0, 4096, X), nullptr);
      if (!id.ok()) continue;  // EAGAIN while the last one is still around
      auto pinned = t.AddPin(of, 0, 4096);
      if (pinned.ok()) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        t.DropPin(*pinned);
      }
      (void)t.SetLease(H(of), Unlock(0, 0), nullptr);
    }
  });
  int ok = 0;
  for (int i = 0; i < 200; ++i) {
    const Status s = t.Break(By(1), Unmap(0, 4096), false, nullptr);
    // An unpinned EXCLUSIVE lease refuses; a pinned one is recalled.
    CHECK((s.ok() || s.err() == ETXTBSY));
    ok += s.ok();
  }
  stop = true;
  pinner.join();
  CHECK(ok > 0);
  for (const LeaseInfo& i : t.List(0, 1000, nullptr)) CHECK(i.pins == 0);
}

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::lease::test
