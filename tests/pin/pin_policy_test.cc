// What the pin table does for the daemon's close and passing policies
// (pin/pin_table.h, docs/pins.md): a close waiting for an open file's pins
// (block-close), aborting an open file's pins (kill-on-close), and keeping a
// passed context's pins only under a holder's own lease (pin_passing=strict).
// Over a real lease table and a real soft NIC.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "lease/lease_table.h"
#include "leasefs/ioctl.h"
#include "pin/pin_table.h"
#include "pin/softnic.h"
#include "tests/pin/pin_fixture.h"

namespace leasefs::pin {
namespace {

using std::chrono::milliseconds;
constexpr engine::Ino kIno = 9;
constexpr uint64_t kLen = 16 * 1024;

using Memory = PinMemory<kLen>;

// The pin table with one context of uid 1000, its hello read.
struct Fixture : PinTableFixture {
  Fixture() : PinTableFixture(lease::Options{}, kIno, kLen) {
    ctx = Context();
    REQUIRE(NextFrame() == LEASEFS_PIN_FRAME_HELLO);
  }
  // An EXCLUSIVE WRITE lease of open file `of` over [0, kLen), taken by
  // this process (tid: its pid) or by nobody (0).
  void Lease(lease::OpenFileId of, pid_t tid) {
    lease::Holder h{of, kIno, tid, 1000, true};
    lease::LeaseRequest r;
    r.type = LEASEFS_LEASE_WRITE;
    r.length = kLen;
    r.flags = LEASEFS_LEASE_EXCLUSIVE;
    REQUIRE(leases.SetLease(h, r, nullptr).ok());
  }
  PinId Pin(lease::OpenFileId of, Memory* m, Provider p = Provider::kSoftNic) {
    auto pinned = table.Pin(Req(ctx, of, p), m->Region());
    REQUIRE(pinned.ok());
    return pinned->id;
  }
  // The type of the next frame on the context's socket (0: none).
  uint16_t NextFrame(uint64_t* id = nullptr) {
    leasefs_pin_frame f{};
    if (recv(notices.get(), &f, sizeof(f), MSG_DONTWAIT) != sizeof(f)) return 0;
    if (id != nullptr) *id = f.id;
    return f.type;
  }
  size_t LiveLeases() {
    bool more = false;
    return leases.List(0, 100, &more).size();
  }
  PinTable::NewContext ctx;
};

TEST_CASE("PinTable: AbortPinsOf drops a soft NIC pin and fences a declared one; the zombie lease goes") {
  Fixture t;
  t.Lease(1, 0);
  Memory soft, declared;
  const PinId a = t.Pin(1, &soft);
  const PinId b = t.Pin(1, &declared, Provider::kDeclared);
  t.leases.CloseOpenFile(1);  // ZOMBIE, counting both
  REQUIRE(t.LiveLeases() == 1);
  CHECK(t.table.AbortPinsOf(1) == 2);
  CHECK(t.LiveLeases() == 0);  // its last pin stopped counting on it
  uint64_t id = 0;
  CHECK(t.NextFrame(&id) == LEASEFS_PIN_FRAME_FENCED);
  CHECK(id == a);
  CHECK(t.NextFrame(&id) == LEASEFS_PIN_FRAME_FENCED);
  CHECK(id == b);
  CHECK(t.NextFrame() == 0);
  CHECK(soft.released == 1);
  CHECK(declared.released == 0);  // its blocks stay out of reach
  const auto left = t.table.List(0);
  REQUIRE(left.size() == 1);
  CHECK(left[0].id == b);
  CHECK(left[0].fenced);
  CHECK(t.table.PinsOf(1) == 1);
  CHECK(t.table.AbortPinsOf(1) == 0);  // fenced already: nothing more
  CHECK(t.NextFrame() == 0);
  t.table.CloseContext(t.ctx.id);
  CHECK(declared.released == 1);
  CHECK(t.table.PinsOf(1) == 0);
}

TEST_CASE("PinTable: AbortPinsOf fences a VERBS pin as a declared one: listed and quarantined until unpinned") {
  Fixture t;
  t.Lease(1, 0);
  Memory verbs;
  const PinId v = t.Pin(1, &verbs, Provider::kVerbs);
  t.leases.CloseOpenFile(1);  // ZOMBIE, counting it
  CHECK(t.table.AbortPinsOf(1) == 1);
  CHECK(t.LiveLeases() == 0);  // the lease no longer counts it
  uint64_t id = 0;
  CHECK(t.NextFrame(&id) == LEASEFS_PIN_FRAME_FENCED);  // the holder deregisters on this
  CHECK(id == v);
  CHECK(verbs.released == 0);
  const auto left = t.table.List(0);
  REQUIRE(left.size() == 1);
  CHECK(left[0].fenced);
  REQUIRE(t.table.Unpin(t.ctx.id, t.ctx.token, 1000, v).ok());
  CHECK(verbs.released == 1);
  CHECK(t.table.PinsOf(1) == 0);
}

TEST_CASE("PinTable: WaitUnpinned returns when the open file's last pin goes, or when told to stop") {
  Fixture t;
  t.Lease(1, 0);
  Memory m1, m2;
  t.Pin(1, &m1);
  t.Pin(1, &m2);
  CHECK(t.table.WaitUnpinned(2, [] { return false; }));  // no pins there
  std::atomic<bool> unpinning{false};
  std::thread unpinner([&] {
    std::this_thread::sleep_for(milliseconds(100));
    unpinning = true;
    REQUIRE(t.table.Unpin(t.ctx.id, t.ctx.token, 1000, 0).ok());
  });
  CHECK(t.table.WaitUnpinned(1, [] { return false; }));
  CHECK(unpinning.load());
  unpinner.join();
  CHECK(m1.released == 1);
  CHECK(m2.released == 1);
  // Stopped: false, with the pin still there.
  Memory m3;
  t.Pin(1, &m3);
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(100));
    stop = true;
    t.table.Wake();
  });
  CHECK_FALSE(t.table.WaitUnpinned(1, [&] { return stop.load(); }));
  stopper.join();
  CHECK(t.table.PinsOf(1) == 1);
}

TEST_CASE("PinTable: AbortUnlessCovered keeps pins under a holder's own lease and aborts the others") {
  Fixture t;
  t.Lease(1, ::getpid());  // this process's lease
  Memory m;
  const PinId id = t.Pin(1, &m);
  CHECK(t.table.AbortUnlessCovered(t.ctx.id, {::getpid()}) == 0);
  CHECK(t.table.List(0).size() == 1);
  CHECK(t.NextFrame() == 0);
  // Holders without a lease of their own (pid 1 took none here).
  CHECK(t.table.AbortUnlessCovered(t.ctx.id, {}) == 1);
  uint64_t fenced = 0;
  CHECK(t.NextFrame(&fenced) == LEASEFS_PIN_FRAME_FENCED);
  CHECK(fenced == id);
  CHECK(t.table.List(0).empty());
  CHECK(m.released == 1);
  // The lease stays, counting nothing: it is the holder's, and active.
  bool more = false;
  const auto ls = t.leases.List(0, 10, &more);
  REQUIRE(ls.size() == 1);
  CHECK(ls[0].pins == 0);
  CHECK(t.table.AbortUnlessCovered(t.ctx.id + 1, {}) == 0);  // no such context
}

}  // namespace
}  // namespace leasefs::pin
