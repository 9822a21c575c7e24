// The lease table's rules that need no waiting: validation, the conflicts
// between leases, conversion, release, the per-uid limit, the conflicts of
// layout changes with leases (MayChange, and Break where it does not wait),
// and the event log.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "tests/lease/test_util.h"

namespace leasefs::lease::test {
namespace {

using engine::LayoutChangeKind;

class CountingNotifier : public BreakNotifier {
 public:
  void LeaseBreaking(OpenFileId of) noexcept override { calls.push_back(of); }
  std::vector<OpenFileId> calls;
};

TEST_SUITE("lease") {

TEST_CASE("LeaseTable: malformed requests are EINVAL") {
  LeaseTable t(Opts(), nullptr);
  CHECK(Err(t.SetLease(H(1), Req(3, 0, 10), nullptr)) == EINVAL);
  CHECK(Err(t.SetLease(H(1), Req(R, 0, 10, 0x8), nullptr)) == EINVAL);
  CHECK(Err(t.SetLease(H(1), Req(R, UINT64_MAX - 10, 100), nullptr)) == EINVAL);
  CHECK(Err(t.SetLease(H(1), Req(R, 1, UINT64_MAX), nullptr)) == EINVAL);
  CHECK(Err(t.SetLease(H(1), Req(LEASEFS_LEASE_UNLOCK, 0, 0, X), nullptr)) == EINVAL);
  LeaseRequest unlock_with_id = Unlock(0, 0);
  unlock_with_id.convert = 1;
  CHECK(Err(t.SetLease(H(1), unlock_with_id, nullptr)) == EINVAL);
  LeaseRequest bad_signal = Req(R, 0, 10);
  bad_signal.signal = -1;
  CHECK(Err(t.SetLease(H(1), bad_signal, nullptr)) == EINVAL);
  bad_signal.signal = 4096;
  CHECK(Err(t.SetLease(H(1), bad_signal, nullptr)) == EINVAL);
  CHECK(Err(t.SetLease(H(0), Req(R, 0, 10), nullptr)) == EINVAL);
  // EINVAL comes before EACCES.
  CHECK(Err(t.SetLease(H(1, false), Req(R, UINT64_MAX, 2, U), nullptr)) == EINVAL);
  CHECK(t.List(0, 100, nullptr).empty());
  // The largest range that does not overflow is fine.
  CHECK(t.SetLease(H(1), Req(R, 1, UINT64_MAX - 1), nullptr).ok());
}

TEST_CASE("LeaseTable: EXCLUSIVE and UNBREAKABLE need may_unbreak (EACCES)") {
  LeaseTable t(Opts(), nullptr);
  CHECK(Err(t.SetLease(H(1, false), Req(R, 0, 10, X), nullptr)) == EACCES);
  CHECK(Err(t.SetLease(H(1, false), Req(W, 0, 10, U), nullptr)) == EACCES);
  CHECK(Err(t.SetLease(H(1, false), Req(R, 0, 10, U), nullptr)) == EACCES);
  CHECK(t.SetLease(H(1, false), Req(W, 0, 10), nullptr).ok());
  CHECK(t.SetLease(H(2, false), Req(R, 0, 10), nullptr).ok());
  CHECK(t.SetLease(H(3, true), Req(R, 100, 10, U), nullptr).ok());
}

TEST_CASE("LeaseTable: a request overlapping the open file's own lease is EEXIST") {
  LeaseTable t(Opts(), nullptr);
  REQUIRE(t.SetLease(H(1), Req(R, 100, 100), nullptr).ok());
  CHECK(Err(t.SetLease(H(1), Req(R, 150, 10), nullptr)) == EEXIST);
  CHECK(Err(t.SetLease(H(1), Req(W, 0, 101), nullptr)) == EEXIST);
  CHECK(Err(t.SetLease(H(1), Req(R, 199, 0), nullptr)) == EEXIST);
  CHECK(Err(t.SetLease(H(1), Req(R, 0, 0), nullptr)) == EEXIST);
  // Adjacent ranges do not overlap.
  CHECK(t.SetLease(H(1), Req(R, 0, 100), nullptr).ok());
  CHECK(t.SetLease(H(1), Req(W, 200, 50), nullptr).ok());
  // Another open file may share the range.
  CHECK(t.SetLease(H(2), Req(R, 150, 10), nullptr).ok());
}

// The five kinds, as the proposals name them.
struct KindCase {
  const char* name;
  uint32_t type;
  uint32_t flags;
};
const KindCase kKinds[] = {
    {"READ", R, 0},       {"READ|UNBREAKABLE", R, U}, {"WRITE", W, 0},
    {"WRITE|UNBREAKABLE", W, U}, {"READ|EXCLUSIVE", R, X}, {"WRITE|EXCLUSIVE", W, X},
};
// kCoexist[held][asked]: whether `asked` is granted beside `held`
// (include/leasefs/ioctl.h, "Conflicts"; [Sep19] for the UNBREAKABLE ones).
const bool kCoexist[6][6] = {
    // R     RU     W      WU     RX     WX
    {true, true, true, false, false, false},      // R held
    {true, true, true, false, false, false},      // RU held
    {true, true, false, false, false, false},     // W held
    {false, false, false, false, false, false},   // WU held
    {false, false, false, false, false, false},   // RX held
    {false, false, false, false, false, false},   // WX held
};

TEST_CASE("LeaseTable: conflicts between leases of different open files are EAGAIN") {
  for (int held = 0; held < 6; ++held) {
    for (int asked = 0; asked < 6; ++asked) {
      CAPTURE(std::string(kKinds[held].name) + " held, " + kKinds[asked].name + " asked");
      LeaseTable t(Opts(), nullptr);
      REQUIRE(t.SetLease(H(1), Req(kKinds[held].type, 100, 100, kKinds[held].flags), nullptr).ok());
      auto r = t.SetLease(H(2), Req(kKinds[asked].type, 150, 50, kKinds[asked].flags), nullptr);
      if (kCoexist[held][asked]) {
        CHECK(r.ok());
      } else {
        CHECK(Err(r) == EAGAIN);
      }
      // Whatever the kinds, ranges that do not overlap never conflict.
      CHECK(t.SetLease(H(3), Req(kKinds[asked].type, 200, 0, kKinds[asked].flags), nullptr).ok());
      CHECK(t.SetLease(H(4), Req(kKinds[asked].type, 0, 100, kKinds[asked].flags), nullptr).ok());
    }
  }
}

TEST_CASE("LeaseTable: READs share with one WRITE; a second WRITE is EAGAIN") {
  LeaseTable t(Opts(), nullptr);
  for (OpenFileId of = 1; of <= 5; ++of) REQUIRE(t.SetLease(H(of), Req(R, 0, 0), nullptr).ok());
  REQUIRE(t.SetLease(H(6), Req(W, 4096, 4096), nullptr).ok());
  CHECK(Err(t.SetLease(H(7), Req(W, 8191, 1), nullptr)) == EAGAIN);
  CHECK(t.SetLease(H(7), Req(W, 8192, 1), nullptr).ok());
  SUBCASE("READ|UNBREAKABLE coexists with the READs and the breakable WRITE") {
    CHECK(t.SetLease(H(8), Req(R, 0, 0, U), nullptr).ok());
    CHECK(t.SetLease(H(9), Req(R, 0, 0, U), nullptr).ok());
  }
  SUBCASE("WRITE|UNBREAKABLE and EXCLUSIVE coexist with nothing") {
    CHECK(Err(t.SetLease(H(8), Req(W, 100000, 1, U), nullptr)) == EAGAIN);
    CHECK(Err(t.SetLease(H(8), Req(R, 100000, 1, X), nullptr)) == EAGAIN);
  }
}

TEST_CASE("LeaseTable: scenario 15, WRITE converts to unbreakable unless broken") {
  LeaseTable t(Opts(), nullptr);
  auto p = t.SetLease(H(1), Req(W, 0, 1 << 20), nullptr);
  REQUIRE(p.ok());
  LeaseRequest to_ru = Req(R, 0, 1 << 20, U);
  to_ru.convert = *p;

  SUBCASE("the conversion keeps the id and changes type and flags") {
    auto c = t.SetLease(H(1), to_ru, nullptr);
    REQUIRE(c.ok());
    CHECK(*c == *p);
    LeaseInfo i = t.GetLease(1, 4096);
    CHECK(i.id == *p);
    CHECK(i.type == R);
    CHECK(i.flags == U);
    CHECK(i.state == LEASEFS_STATE_ACTIVE);
    // R takes READ|UNBREAKABLE too; S's WRITE|UNBREAKABLE fails.
    CHECK(t.SetLease(H(2), Req(R, 0, 1 << 20, U), nullptr).ok());
    CHECK(Err(t.SetLease(H(3), Req(W, 0, 1 << 20, U), nullptr)) == EAGAIN);
    // A non-owner asking for UNBREAKABLE gets EACCES.
    CHECK(Err(t.SetLease(H(4, false), Req(R, 0, 1 << 20, U), nullptr)) == EACCES);
  }
  SUBCASE("a conversion after somebody broke the lease is EAGAIN") {
    CHECK(Err(t.Break(By(2), Unmap(0, 4096), true, nullptr)) == EWOULDBLOCK);
    CHECK(Err(t.SetLease(H(1), to_ru, nullptr)) == EAGAIN);
  }
  SUBCASE("a conversion that would conflict with others is EAGAIN") {
    REQUIRE(t.SetLease(H(2), Req(R, 4096, 1), nullptr).ok());
    LeaseRequest to_wu = Req(W, 0, 1 << 20, U);
    to_wu.convert = *p;
    CHECK(Err(t.SetLease(H(1), to_wu, nullptr)) == EAGAIN);
    CHECK(t.GetLease(1, 0).flags == 0);  // unchanged
    CHECK(t.SetLease(H(1), to_ru, nullptr).ok());
  }
  SUBCASE("a conversion of a lease that is gone or not ours is EAGAIN") {
    CHECK(Err(t.SetLease(H(2), to_ru, nullptr)) == EAGAIN);
    REQUIRE(t.SetLease(H(1), Unlock(0, 1 << 20), nullptr).ok());
    CHECK(Err(t.SetLease(H(1), to_ru, nullptr)) == EAGAIN);
  }
  SUBCASE("a conversion must keep the range (EINVAL) and needs may_unbreak (EACCES)") {
    LeaseRequest other_range = to_ru;
    other_range.length = 4096;
    CHECK(Err(t.SetLease(H(1), other_range, nullptr)) == EINVAL);
    CHECK(Err(t.SetLease(H(1, false), to_ru, nullptr)) == EACCES);
  }
}

TEST_CASE("LeaseTable: UNLOCK releases an exact range, or all with offset = length = 0") {
  LeaseTable t(Opts(), nullptr);
  CHECK(Err(t.SetLease(H(1), Unlock(0, 0), nullptr)) == ENOENT);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 100), nullptr).ok());
  REQUIRE(t.SetLease(H(1), Req(W, 100, 100), nullptr).ok());
  REQUIRE(t.SetLease(H(1), Req(R, 1000, 0), nullptr).ok());
  CHECK(Err(t.SetLease(H(1), Unlock(0, 50), nullptr)) == ENOENT);
  CHECK(Err(t.SetLease(H(1), Unlock(10, 100), nullptr)) == ENOENT);
  CHECK(Err(t.SetLease(H(2), Unlock(0, 100), nullptr)) == ENOENT);
  CHECK(t.SetLease(H(1), Unlock(0, 100), nullptr).ok());
  CHECK(t.GetLease(1, 50).state == LEASEFS_STATE_NONE);
  CHECK(t.GetLease(1, 150).state == LEASEFS_STATE_ACTIVE);
  CHECK(t.SetLease(H(1), Unlock(0, 0), nullptr).ok());
  CHECK(t.List(0, 100, nullptr).empty());
  CHECK_FALSE(t.AnyLeases(kIno));
}

TEST_CASE("LeaseTable: a uid holds at most max_leases_per_uid leases (ENOLCK)") {
  Options o = Opts();
  o.max_leases_per_uid = 3;
  LeaseTable t(o, nullptr);
  for (uint64_t i = 0; i < 3; ++i) REQUIRE(t.SetLease(H(1), Req(R, i * 10, 10), nullptr).ok());
  CHECK(Err(t.SetLease(H(2), Req(R, 100, 10), nullptr)) == ENOLCK);
  CHECK(t.SetLease(H(2, true, 2000), Req(R, 100, 10), nullptr).ok());
  REQUIRE(t.SetLease(H(1), Unlock(0, 10), nullptr).ok());
  CHECK(t.SetLease(H(2), Req(R, 200, 10), nullptr).ok());
}

TEST_CASE("LeaseTable: GetLease and List report leases") {
  LeaseTable t(Opts(), nullptr);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_NONE);
  auto a = t.SetLease(H(1), Req(R, 4096, 4096), nullptr);
  auto b = t.SetLease(H(2), Req(W, 0, 0, U), nullptr);
  REQUIRE(a.ok());
  CHECK(Err(b) == EAGAIN);
  b = t.SetLease(H(2), Req(W, 0, 4096), nullptr);
  REQUIRE(b.ok());
  CHECK(*b > *a);
  LeaseInfo i = t.GetLease(1, 8191);
  CHECK(i.id == *a);
  CHECK(i.ino == kIno);
  CHECK(i.offset == 4096);
  CHECK(i.length == 4096);
  CHECK(i.type == R);
  CHECK(i.open_file == 1);
  CHECK(i.holder_pid == 0);
  CHECK(i.breaking_since == 0);
  CHECK(t.GetLease(1, 8192).state == LEASEFS_STATE_NONE);
  CHECK(t.GetLease(1, 4095).state == LEASEFS_STATE_NONE);
  CHECK(t.GetLease(2, 4096).state == LEASEFS_STATE_NONE);
  bool more = false;
  auto first = t.List(0, 1, &more);
  REQUIRE(first.size() == 1);
  CHECK(first[0].id == *a);
  CHECK(more);
  auto rest = t.List(first[0].id, 10, &more);
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].id == *b);
  CHECK_FALSE(more);
}

TEST_CASE("LeaseTable: closing the open file releases its leases") {
  LeaseTable t(Opts(), nullptr);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 10), nullptr).ok());
  REQUIRE(t.SetLease(H(1), Req(R, 10, 10), nullptr).ok());
  REQUIRE(t.SetLease(H(2), Req(R, 0, 10), nullptr).ok());
  t.CloseOpenFile(1);
  auto all = t.List(0, 10, nullptr);
  REQUIRE(all.size() == 1);
  CHECK(all[0].open_file == 2);
  uint64_t lost = 1;
  auto ev = t.Events(0, 100, std::chrono::milliseconds(0), nullptr, &lost);
  REQUIRE(ev.ok());
  REQUIRE(ev->size() == 5);
  CHECK(lost == 0);
  CHECK((*ev)[3].type == LEASEFS_EVENT_RELEASE);
  CHECK((*ev)[3].why == LEASEFS_WHY_CLOSE);
  CHECK((*ev)[4].why == LEASEFS_WHY_CLOSE);
}

// ---------------------------------------------------------------- changes

// The verdict of MayChange for `change` by open file `by` against one lease
// of open file 1, of the given kind.
int Verdict(uint32_t type, uint32_t flags, OpenFileId by, const engine::LayoutChange& change,
            WriteBreak mode = WriteBreak::kUnmapOnly, uint64_t offset = 0, uint64_t length = 4096) {
  Options o = Opts();
  o.write_break = mode;
  LeaseTable t(o, nullptr);
  REQUIRE(t.SetLease(H(1), Req(type, offset, length, flags), nullptr).ok());
  return Err(t.MayChange(By(by), change));
}

TEST_CASE("LeaseTable: what a change by another open file meets (MayChange)") {
  const auto c = Unmap(0, 1);
  CHECK(Verdict(R, 0, 2, c) == ERESTART);
  CHECK(Verdict(W, 0, 2, c) == ERESTART);
  CHECK(Verdict(R, U, 2, c) == ETXTBSY);
  CHECK(Verdict(W, U, 2, c) == ETXTBSY);
  CHECK(Verdict(R, X, 2, c) == ETXTBSY);
  CHECK(Verdict(W, X, 2, c) == ETXTBSY);
  // A change with no open file (truncate(2) by path) is somebody else's.
  CHECK(Verdict(W, 0, 0, c) == ERESTART);
  CHECK(Verdict(R, X, 0, c) == ETXTBSY);
}

TEST_CASE("LeaseTable: what the holder's own change meets (MayChange)") {
  const auto c = Unmap(0, 1);
  CHECK(Verdict(W, 0, 1, c) == 0);
  CHECK(Verdict(W, U, 1, c) == 0);
  CHECK(Verdict(R, X, 1, c) == EDEADLOCK);
  CHECK(Verdict(W, X, 1, c) == EDEADLOCK);
  CHECK(Verdict(R, U, 1, c) == EDEADLOCK);
  CHECK(Verdict(R, 0, 1, c) == ERESTART);
}

TEST_CASE("LeaseTable: which changes reach a lease") {
  const auto alloc = Change(LayoutChangeKind::kAllocatingWrite, 0, 10);
  const auto over = Change(LayoutChangeKind::kOverwrite, 0, 10);
  SUBCASE("overwrites break only in xfs-faithful mode (scenario 12)") {
    CHECK(Verdict(W, X, 2, over) == 0);
    CHECK(Verdict(W, X, 2, over, WriteBreak::kXfsFaithful) == ETXTBSY);
    CHECK(Verdict(R, 0, 2, over, WriteBreak::kXfsFaithful) == ERESTART);
    CHECK(Verdict(W, X, 2, alloc) == ETXTBSY);
    CHECK(Verdict(R, 0, 2, alloc) == ERESTART);
    CHECK(Verdict(R, X, 1, over, WriteBreak::kXfsFaithful) == EDEADLOCK);
  }
  SUBCASE("ranges must overlap") {
    CHECK(Verdict(R, X, 2, Unmap(4096, 4096)) == 0);
    CHECK(Verdict(R, X, 2, Unmap(4095, 1)) == ETXTBSY);
    CHECK(Verdict(R, X, 2, Unmap(0, 0)) == 0);
    CHECK(Verdict(R, X, 2, Unmap(100, engine::LayoutChange::kToEnd)) == ETXTBSY);
    CHECK(Verdict(R, X, 2, Unmap(8192, 10), WriteBreak::kUnmapOnly, 4096, 0) == ETXTBSY);
    CHECK(Verdict(R, X, 2, Unmap(0, 4096), WriteBreak::kUnmapOnly, 4096, 0) == 0);
  }
  SUBCASE("another file's change never does (scenario 13)") {
    CHECK(Verdict(R, X, 2, Change(LayoutChangeKind::kUnmap, 0, 10, kIno + 1)) == 0);
  }
  SUBCASE("a size change reaches leases that reach the smaller size") {
    // Lease [0, 4096): a shrink to 4096 moves its end of file.
    CHECK(Verdict(R, X, 2, Truncate(8192, 4096)) == ETXTBSY);
    CHECK(Verdict(R, X, 2, Truncate(4096, 8192)) == ETXTBSY);
    CHECK(Verdict(R, X, 2, Truncate(8192, 4097)) == 0);
    CHECK(Verdict(R, X, 2, Truncate(1, 0)) == ETXTBSY);
    // A lease to the end reaches everything from its offset on.
    CHECK(Verdict(R, X, 2, Truncate(8192, 4096), WriteBreak::kUnmapOnly, 1 << 20, 0) == ETXTBSY);
    // An extending write reaches a lease that ends at the old size.
    auto extend = Change(LayoutChangeKind::kAllocatingWrite, 4096, 10);
    extend.size_changes = true;
    extend.old_size = 4096;
    extend.new_size = 4106;
    CHECK(Verdict(R, 0, 2, extend) == ERESTART);
    CHECK(Verdict(R, 0, 2, extend, WriteBreak::kUnmapOnly, 0, 4095) == 0);
  }
}

TEST_CASE("LeaseTable: the breaker's own lease wins over others' (EDEADLOCK)") {
  LeaseTable t(Opts(), nullptr);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 10, U), nullptr).ok());
  REQUIRE(t.SetLease(H(2), Req(R, 0, 10, U), nullptr).ok());
  CHECK(Err(t.MayChange(By(1), Unmap(0, 1))) == EDEADLOCK);
  CHECK(Err(t.Break(By(1), Unmap(0, 1), false, nullptr)) == EDEADLOCK);
  CHECK(Err(t.MayChange(By(3), Unmap(0, 1))) == ETXTBSY);
}

TEST_CASE("LeaseTable: an unbreakable lease refuses at once and nothing is marked") {
  CountingNotifier n;
  LeaseTable t(Opts(), &n);
  auto read = t.SetLease(H(1), Req(R, 0, 100), nullptr);
  REQUIRE(t.SetLease(H(2), Req(R, 50, 100, U), nullptr).ok());
  REQUIRE(read.ok());
  CHECK(Err(t.Break(By(3), Unmap(0, 200), false, nullptr)) == ETXTBSY);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_ACTIVE);
  CHECK(t.GetLease(2, 50).state == LEASEFS_STATE_ACTIVE);
  CHECK(n.calls.empty());
  CHECK_FALSE(t.Pollpri(1));
  auto ev = t.Events(0, 100, std::chrono::milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  REQUIRE(ev->size() == 3);
  CHECK(ev->back().type == LEASEFS_EVENT_REFUSED);
  CHECK(ev->back().err == ETXTBSY);
  CHECK(ev->back().why == static_cast<uint32_t>(LayoutChangeKind::kUnmap));
  // The READ lease can still be converted: nobody broke it.
  LeaseRequest up = Req(R, 0, 100, U);
  up.convert = *read;
  CHECK(t.SetLease(H(1), up, nullptr).ok());
}

TEST_CASE("LeaseTable: the breaker's own breakable READ is marked, then EWOULDBLOCK") {
  CountingNotifier n;
  LeaseTable t(Opts(std::chrono::milliseconds(10000)), &n);
  REQUIRE(t.SetLease(H(1), Req(R, 0, 100), nullptr).ok());
  REQUIRE(t.SetLease(H(2), Req(R, 0, 100), nullptr).ok());
  CHECK(Err(t.Break(By(1), Unmap(0, 1), false, nullptr)) == EWOULDBLOCK);
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_BREAKING);
  CHECK(t.GetLease(2, 0).state == LEASEFS_STATE_BREAKING);
  CHECK(n.calls == std::vector<OpenFileId>{2, 1});
  CHECK(t.Pollpri(1));
  CHECK(t.Pollpri(2));
  // Still breaking: the engine's guard sends the breaker round again.
  CHECK(Err(t.MayChange(By(3), Unmap(0, 1))) == ERESTART);
}

TEST_CASE("LeaseTable: the holder's own change does not break its WRITE lease") {
  CountingNotifier n;
  LeaseTable t(Opts(), &n);
  REQUIRE(t.SetLease(H(1), Req(W, 0, 100), nullptr).ok());
  REQUIRE(t.SetLease(H(2), Req(W, 200, 100, U), nullptr).ok());
  CHECK(t.Break(By(1), Unmap(0, 100), false, nullptr).ok());
  CHECK(t.MayChange(By(1), Unmap(0, 100)).ok());
  CHECK(t.Break(By(2), Unmap(200, 100), false, nullptr).ok());
  CHECK(t.GetLease(1, 0).state == LEASEFS_STATE_ACTIVE);
  CHECK(n.calls.empty());
}

TEST_CASE("LeaseTable: no conflicting lease, no break") {
  CountingNotifier n;
  LeaseTable t(Opts(), &n);
  CHECK(t.Break(By(1), Unmap(0, 100), false, nullptr).ok());
  CHECK(t.MayChange(By(1), Unmap(0, 100)).ok());
  CHECK_FALSE(t.AnyLeases(kIno));
  REQUIRE(t.SetLease(H(1), Req(R, 1000, 100), nullptr).ok());
  CHECK(t.AnyLeases(kIno));
  CHECK_FALSE(t.AnyLeases(kIno + 1));
  CHECK(t.Break(By(2), Unmap(0, 1000), false, nullptr).ok());
  CHECK(n.calls.empty());
}

// ---------------------------------------------------------------- events

TEST_CASE("LeaseTable: the event log keeps the last 4096 events and counts the lost") {
  LeaseTable t(Opts(), nullptr);
  for (int i = 0; i < 2100; ++i) {
    REQUIRE(t.SetLease(H(1), Req(R, 0, 10), nullptr).ok());
    REQUIRE(t.SetLease(H(1), Unlock(0, 10), nullptr).ok());
  }
  uint64_t lost = 0;
  auto ev = t.Events(0, LEASEFS_EVENTS_MAX, std::chrono::milliseconds(0), nullptr, &lost);
  REQUIRE(ev.ok());
  CHECK(lost == 4200 - LEASEFS_EVENTS_KEPT);
  REQUIRE(ev->size() == LEASEFS_EVENTS_MAX);
  CHECK((*ev)[0].seq == lost + 1);
  for (size_t i = 1; i < ev->size(); ++i) CHECK((*ev)[i].seq == (*ev)[i - 1].seq + 1);
  CHECK((*ev)[0].type == LEASEFS_EVENT_GRANT);  // 105th pair's grant: seq 105 is odd
  CHECK((*ev)[1].type == LEASEFS_EVENT_RELEASE);
  CHECK((*ev)[1].why == LEASEFS_WHY_UNLOCK);
  CHECK((*ev)[1].lease_type == R);
  ev = t.Events(4199, 10, std::chrono::milliseconds(0), nullptr, &lost);
  REQUIRE(ev.ok());
  CHECK(lost == 0);
  REQUIRE(ev->size() == 1);
  CHECK((*ev)[0].seq == 4200);
  ev = t.Events(4200, 10, std::chrono::milliseconds(0), nullptr, &lost);
  REQUIRE(ev.ok());
  CHECK(ev->empty());
}

TEST_CASE("LeaseTable: an event reports the lease's type and flags and the actor") {
  LeaseTable t(Opts(), nullptr);
  REQUIRE(t.SetLease(H(1), Req(W, 5, 7, X), nullptr).ok());
  auto ev = t.Events(0, 10, std::chrono::milliseconds(0), nullptr, nullptr);
  REQUIRE(ev.ok());
  REQUIRE(ev->size() == 1);
  const Event& e = (*ev)[0];
  CHECK(e.seq == 1);
  CHECK(e.type == LEASEFS_EVENT_GRANT);
  CHECK(e.lease_type == (W | X << 8));
  CHECK(e.ino == kIno);
  CHECK(e.offset == 5);
  CHECK(e.length == 7);
  CHECK(e.time > 0);
}

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::lease::test
