// Breaks that wait, with real threads and a short break time (200 ms):
// responsive and ignoring holders, nonblocking breakers, interrupts, new
// leases during a break, many holders, racing breakers.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/lease/test_util.h"

namespace leasefs::lease::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A notifier whose notices holder threads can wait for.
class QueueNotifier : public BreakNotifier {
 public:
  void LeaseBreaking(OpenFileId of) noexcept override {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(of);
      ++total_;
    }
    cv_.notify_all();
  }
  // The next notice, or 0 after `timeout`.
  OpenFileId Next(milliseconds timeout = milliseconds(2000)) {
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_for(l, timeout, [this] { return !queue_.empty(); })) return 0;
    OpenFileId of = queue_.front();
    queue_.pop_front();
    return of;
  }
  int total() {
    std::lock_guard<std::mutex> l(mu_);
    return total_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<OpenFileId> queue_;
  int total_ = 0;
};

int CountEvents(LeaseTable& t, uint32_t type, LeaseId id = 0) {
  auto ev = t.Events(0, LEASEFS_EVENTS_KEPT, milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  int n = 0;
  for (const Event& e : *ev) n += e.type == type && (id == 0 || e.lease_id == id);
  return n;
}

TEST_SUITE("lease") {

TEST_CASE("Break: a holder that releases during the break lets the breaker go at once") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(5000)), &n);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 4096), nullptr).ok());
  std::thread holder([&] {
    REQUIRE(n.Next() == 1);
    CHECK(t.Pollpri(1));
    CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING);
    std::this_thread::sleep_for(milliseconds(50));
    CHECK(t.SetLease(H(1), Unlock(0, 4096), nullptr).ok());
  });
  const auto t0 = Clock::now();
  CHECK(t.Break(By(2), Unmap(0, 1), false, nullptr).ok());
  const double ms = MsSince(t0);
  holder.join();
  CHECK(ms >= 45);
  CHECK(ms < 1000);
  CHECK_FALSE(t.Pollpri(1));
  CHECK(t.List(0, 10, nullptr).empty());
  CHECK(CountEvents(t, LEASEFS_EVENT_BREAK_DONE) == 1);
}

TEST_CASE("Break: a holder that ignores the break is revoked at the deadline") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(200)), &n);
  auto id = t.SetLease(H(1), Req(W, 0, 0), nullptr);
  REQUIRE(id.ok());
  const auto t0 = Clock::now();
  CHECK(t.Break(By(2), Truncate(8192, 0), false, nullptr).ok());
  const double ms = MsSince(t0);
  CHECK(ms >= 190);
  CHECK(ms < 700);
  CHECK(n.total() == 1);
  LeaseInfo i = t.GetLease(1, 12345);
  CHECK(i.id == *id);
  CHECK(i.state == LEASEFS_STATE_REVOKED);
  CHECK(i.break_deadline - i.breaking_since == 200'000'000u);
  CHECK(t.Pollpri(1));
  // Revoked leases never conflict, and stop counting for the write path.
  CHECK(t.MayChange(By(2), Unmap(0, 1)).ok());
  CHECK_FALSE(t.AnyLeases(kIno));
  CHECK(t.SetLease(H(3), Req(W, 0, 0, X), nullptr).ok());
  // The tombstone stays on its open file until released.
  CHECK(Err(t.SetLease(H(1), Req(R, 0, 10), nullptr)) == EEXIST);
  CHECK(CountEvents(t, LEASEFS_EVENT_REVOKE, *id) == 1);
  CHECK(t.SetLease(H(1), Unlock(0, 0), nullptr).ok());
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_NONE);
  CHECK_FALSE(t.Pollpri(1));
}

TEST_CASE("Break: a nonblocking breaker gets EWOULDBLOCK; the table revokes alone") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(200)), &n);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 4096), nullptr).ok());
  const auto t0 = Clock::now();
  CHECK(Err(t.Break(By(2), Unmap(0, 1), true, nullptr)) == EWOULDBLOCK);
  CHECK(MsSince(t0) < 100);
  CHECK(n.Next(milliseconds(0)) == 1);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING);
  // A second breaker does not notify again: once per lease per break.
  CHECK(Err(t.Break(By(3), Unmap(0, 1), true, nullptr)) == EWOULDBLOCK);
  CHECK(n.total() == 1);
  CHECK(Eventually([&] { return t.GetLease(1, 0).state == LEASEFS_STATE_REVOKED; }));
  const double ms = MsSince(t0);
  CHECK(ms >= 190);
  CHECK(ms < 700);
  CHECK(t.Break(By(2), Unmap(0, 1), true, nullptr).ok());
}

TEST_CASE("Break: cancelling the wait gives EINTR and leaves the lease breaking") {
  LeaseTable t(Opts(milliseconds(5000)), nullptr);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 4096), nullptr).ok());
  SUBCASE("while waiting") {
    auto token = t.NewWaitToken();
    auto breaker = std::async(std::launch::async, [&] {
      return t.Break(By(2), Unmap(0, 1), false, token.get());
    });
    REQUIRE(Eventually([&] { return t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING; }));
    std::this_thread::sleep_for(milliseconds(20));
    const auto t0 = Clock::now();
    token->Cancel();
    CHECK(Err(breaker.get()) == EINTR);
    CHECK(MsSince(t0) < 200);
  }
  SUBCASE("before waiting") {
    auto token = t.NewWaitToken();
    token->Cancel();
    CHECK(Err(t.Break(By(2), Unmap(0, 1), false, token.get())) == EINTR);
  }
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING);
  auto ev = t.Events(0, 100, milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  CHECK(ev->back().type == LEASEFS_EVENT_BREAK_DONE);
  CHECK(ev->back().err == EINTR);
}

TEST_CASE("Break: Shutdown ends every wait with ESHUTDOWN") {
  LeaseTable t(Opts(milliseconds(0)), nullptr);  // never times out
  REQUIRE(t.SetLease(H(1), Req(R, 0, 4096), nullptr).ok());
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 1), false, nullptr);
  });
  auto reader = std::async(std::launch::async, [&] {
    return t.Events(1000, 10, milliseconds(60000), nullptr, nullptr).status();
  });
  REQUIRE(Eventually([&] { return t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING; }));
  std::this_thread::sleep_for(milliseconds(20));
  CHECK(t.GetLease(1, 0).break_deadline == 0);
  t.Shutdown();
  CHECK(Err(breaker.get()) == ESHUTDOWN);
  CHECK(Err(reader.get()) == ESHUTDOWN);
}

TEST_CASE("Break: new leases on the range wait while a break is in progress") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(5000)), &n);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 4096), nullptr).ok());
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(2), Unmap(0, 8192), false, nullptr);
  });
  REQUIRE(n.Next() == 1);
  // Within the breaker's range but beside the breaking lease: waits too.
  CHECK(Err(t.SetLease(H(3), Req(R, 5000, 10, NB), nullptr)) == EWOULDBLOCK);
  CHECK(Err(t.SetLease(H(3), Req(W, 100, 10, NB), nullptr)) == EWOULDBLOCK);
  // Outside it: granted at once.
  CHECK(t.SetLease(H(3), Req(W, 8192, 10), nullptr).ok());
  auto waiter = std::async(std::launch::async, [&] {
    return t.SetLease(H(4), Req(R, 0, 10), nullptr).status();
  });
  CHECK(waiter.wait_for(milliseconds(100)) == std::future_status::timeout);
  SUBCASE("until the holder releases") {
    CHECK(t.SetLease(H(1), Unlock(0, 4096), nullptr).ok());
  }
  SUBCASE("until the waiter is interrupted") {
    auto token = t.NewWaitToken();
    auto interrupted = std::async(std::launch::async, [&] {
      return t.SetLease(H(5), Req(R, 0, 10), token.get()).status();
    });
    std::this_thread::sleep_for(milliseconds(20));
    token->Cancel();
    CHECK(Err(interrupted.get()) == EINTR);
    CHECK(t.SetLease(H(1), Unlock(0, 4096), nullptr).ok());
  }
  CHECK(breaker.get().ok());
  CHECK(waiter.get().ok());
  // The waiter was granted after the break was over.
  auto ev = t.Events(0, 100, milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  REQUIRE(ev->size() >= 2);
  CHECK((*ev)[ev->size() - 2].type == LEASEFS_EVENT_BREAK_DONE);
  CHECK(ev->back().type == LEASEFS_EVENT_GRANT);
  CHECK(ev->back().offset == 0);
  CHECK(ev->back().length == 10);
}

TEST_CASE("Break: a conversion beside a break in progress goes through at once") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(5000)), &n);
  auto w = t.SetLease(H(1), Req(W, 0, 4096), nullptr);
  REQUIRE(w.ok());
  REQUIRE(t.SetLease(H(2), Req(R, 8192, 4096), nullptr).ok());
  auto breaker = std::async(std::launch::async, [&] {
    return t.Break(By(3), Unmap(8192, 1), false, nullptr);
  });
  REQUIRE(n.Next() == 2);
  // Not on the breaking range: the conversion goes through at once.
  LeaseRequest up = Req(W, 0, 4096, U);
  up.convert = *w;
  CHECK(t.SetLease(H(1), up, nullptr).ok());
  CHECK(t.SetLease(H(2), Unlock(8192, 4096), nullptr).ok());
  CHECK(breaker.get().ok());
}

TEST_CASE("Break: 100 holders on one range, all responsive") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(5000)), &n);
  for (OpenFileId of = 1; of <= 100; ++of) {
    REQUIRE(t.SetLease(H(of), Req(of % 2 ? R : W, 0, 0), nullptr).ok() == (of % 2 == 1 || of == 2));
  }
  // 50 READs and one WRITE were granted.
  REQUIRE(t.List(0, 1000, nullptr).size() == 51);
  std::vector<std::thread> holders;
  std::atomic<int> released{0};
  for (int i = 0; i < 4; ++i) {
    holders.emplace_back([&] {
      for (OpenFileId of; (of = n.Next(milliseconds(300))) != 0;) {
        std::this_thread::sleep_for(milliseconds(1));
        if (t.SetLease(H(of), Unlock(0, 0), nullptr).ok()) ++released;
      }
    });
  }
  const auto t0 = Clock::now();
  CHECK(t.Break(By(1000), Unmap(4096, 4096), false, nullptr).ok());
  CHECK(MsSince(t0) < 2000);
  for (auto& h : holders) h.join();
  CHECK(released == 51);
  CHECK(t.List(0, 1000, nullptr).empty());
  CHECK(CountEvents(t, LEASEFS_EVENT_BREAK) == 51);
  CHECK(CountEvents(t, LEASEFS_EVENT_REVOKE) == 0);
}

TEST_CASE("Break: breakers racing on one range each wait; the lease is notified once") {
  QueueNotifier n;
  LeaseTable t(Opts(milliseconds(5000)), &n);
  auto id = t.SetLease(H(1), Req(R, 0, 4096), nullptr);
  REQUIRE(id.ok());
  std::vector<std::future<Status>> breakers;
  for (OpenFileId by = 2; by < 10; ++by) {
    breakers.push_back(std::async(std::launch::async, [&t, by] {
      return t.Break(By(by), Unmap(by * 100, 10), false, nullptr);
    }));
  }
  REQUIRE(n.Next() == 1);
  std::this_thread::sleep_for(milliseconds(100));
  for (auto& b : breakers) CHECK(b.wait_for(milliseconds(0)) == std::future_status::timeout);
  CHECK(t.SetLease(H(1), Unlock(0, 4096), nullptr).ok());
  for (auto& b : breakers) CHECK(b.get().ok());
  CHECK(n.total() == 1);
  CHECK(CountEvents(t, LEASEFS_EVENT_BREAK, *id) == 1);
  CHECK(CountEvents(t, LEASEFS_EVENT_BREAK_DONE) == 8);
}

TEST_CASE("Break: a breaker that raced a grant is sent round again by MayChange") {
  LeaseTable t(Opts(milliseconds(200)), nullptr);
  CHECK(t.Break(By(2), Unmap(0, 10), false, nullptr).ok());
  REQUIRE(t.SetLease(H(1), Req(R, 0, 10), nullptr).ok());  // slipped in
  CHECK(Err(t.MayChange(By(2), Unmap(0, 10))) == ERESTART);
  CHECK(t.Break(By(2), Unmap(0, 10), false, nullptr).ok());  // revoked after 200 ms
  CHECK(t.MayChange(By(2), Unmap(0, 10)).ok());
}

TEST_CASE("Events: a reader waits for the next event, or is interrupted") {
  LeaseTable t(Opts(), nullptr);
  SUBCASE("an event arrives") {
    auto reader = std::async(std::launch::async, [&] {
      return t.Events(0, 10, milliseconds(5000), nullptr, nullptr);
    });
    std::this_thread::sleep_for(milliseconds(50));
    REQUIRE(t.SetLease(H(1), Req(R, 0, 10), nullptr).ok());
    auto ev = reader.get();
    REQUIRE(ev.ok());
    REQUIRE(ev->size() == 1);
    CHECK((*ev)[0].type == LEASEFS_EVENT_GRANT);
  }
  SUBCASE("the timeout passes") {
    const auto t0 = Clock::now();
    auto ev = t.Events(0, 10, milliseconds(100), nullptr, nullptr);
    REQUIRE(ev.ok());
    CHECK(ev->empty());
    CHECK(MsSince(t0) >= 95);
  }
  SUBCASE("interrupted") {
    auto token = t.NewWaitToken();
    auto reader = std::async(std::launch::async, [&] {
      return t.Events(0, 10, milliseconds(5000), token.get(), nullptr).status();
    });
    std::this_thread::sleep_for(milliseconds(50));
    token->Cancel();
    CHECK(Err(reader.get()) == EINTR);
  }
}

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::lease::test
