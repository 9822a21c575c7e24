// The words and lines of leasectl hold, leases and events, without a mount.
#include "tools/leasectl/lease_format.h"

#include <stdlib.h>
#include <time.h>

#include <doctest/doctest.h>

#include "tools/leasectl/args.h"

namespace leasefs::leasectl {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

// 2026-12-05 04:16:54 UTC, and a little.
constexpr uint64_t kWhen = 1796444214ull * kSec + 123456789;

void InUtc() {
  setenv("TZ", "UTC", 1);
  tzset();
}

leasefs_lease_info Info(uint64_t id, uint32_t type, uint32_t flags, uint32_t state) {
  leasefs_lease_info l{};
  l.id = id;
  l.ino = 12;
  l.offset = 4096;
  l.length = 4096;
  l.type = type;
  l.flags = flags;
  l.state = state;
  l.holder_pid = 1234;
  l.open_file = 5;
  return l;
}

TEST_SUITE("leasectl") {
  TEST_CASE("ParseLeaseRange: OFF:LEN, with suffixes; LEN 0 to the end") {
    CHECK(ParseLeaseRange("0:0") == LeaseRangeArg{0, 0});
    CHECK(ParseLeaseRange("4K:1M") == LeaseRangeArg{4096, 1048576});
    CHECK(!ParseLeaseRange("4096"));
    CHECK(!ParseLeaseRange("1:2:3"));
    CHECK(!ParseLeaseRange(":4096"));
    CHECK(!ParseLeaseRange("0:9223372036854775808"));
  }

  TEST_CASE("lease words: types, flags, states, events, why") {
    CHECK(LeaseKind(LEASEFS_LEASE_READ, 0) == "read");
    CHECK(LeaseKind(LEASEFS_LEASE_WRITE, LEASEFS_LEASE_UNBREAKABLE) == "write,unbreakable");
    CHECK(LeaseKind(LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE | 0x10) == "read,exclusive,0x10");
    CHECK(LeaseKind(7, 0) == "type 7");
    CHECK(LeaseStateName(LEASEFS_STATE_BREAKING) == "breaking");
    CHECK(LeaseStateName(LEASEFS_STATE_REVOKED) == "revoked");
    CHECK(LeaseStateName(9) == "state 9");
    CHECK(EventTypeName(LEASEFS_EVENT_BREAK_DONE) == "break-done");
    CHECK(EventTypeName(LEASEFS_EVENT_REFUSED) == "refused");
    CHECK(EventWhy(LEASEFS_EVENT_RELEASE, LEASEFS_WHY_EXIT) == "exit");
    CHECK(EventWhy(LEASEFS_EVENT_BREAK, 1) == "allocating-write");
    CHECK(EventWhy(LEASEFS_EVENT_REFUSED, 3) == "change 3");
    CHECK(EventWhy(LEASEFS_EVENT_GRANT, 0) == "");
  }

  TEST_CASE("RangeText: first..last, or ..end") {
    CHECK(RangeText(0, 4096) == "0..4095");
    CHECK(RangeText(4096, 0) == "4096..end");
    CHECK(RangeText(4096, UINT64_MAX) == "4096..end");
    CHECK(RangeText(0, UINT64_MAX) == "0..18446744073709551614");
    CHECK(SecondsText(1'250'000'000) == "1.250s");
  }

  TEST_CASE("FormatEvent: one line, the parts an event has") {
    InUtc();
    CHECK(TimeOfDay(kWhen, 3) == "04:16:54.123");
    leasefs_event e{};
    e.seq = 2;
    e.time = kWhen;
    e.type = LEASEFS_EVENT_BREAK;
    e.why = 0;
    e.lease_id = 7;
    e.ino = 12;
    e.lease_type = LEASEFS_LEASE_WRITE | (LEASEFS_LEASE_UNBREAKABLE << 8);
    e.holder_pid = 1234;
    e.actor_pid = 1240;
    CHECK(FormatEvent(e) ==
          "04:16:54.123456 #2 break lease 7 inode 12 bytes 0..end write,unbreakable holder 1234 "
          "by 1240 (unmap)");
    leasefs_event done{};
    done.seq = 3;
    done.time = kWhen;
    done.type = LEASEFS_EVENT_BREAK_DONE;
    done.ino = 12;
    done.offset = 4096;
    done.length = UINT64_MAX;
    done.actor_pid = 1240;
    done.err = EINTR;
    CHECK(FormatEvent(done) ==
          "04:16:54.123456 #3 break-done inode 12 bytes 4096..end by 1240 (unmap): Interrupted "
          "system call");
    const auto j = EventJson(done);
    CHECK(j["type"] == "break-done");
    CHECK(j["lease_type"].is_null());
    CHECK(j["err"] == EINTR);
    CHECK(j["length"] == UINT64_MAX);
  }

  TEST_CASE("FormatLeases: a padded table, or no leases") {
    CHECK(FormatLeases({}, 0) == "no leases\n");
    leasefs_lease_info breaking = Info(9, LEASEFS_LEASE_WRITE, 0, LEASEFS_STATE_BREAKING);
    breaking.length = 0;
    breaking.breaking_since = 10 * kSec;
    breaking.break_deadline = 55 * kSec;
    leasefs_lease_info revoked = Info(11, LEASEFS_LEASE_READ, 0, LEASEFS_STATE_REVOKED);
    revoked.breaking_since = 5 * kSec;
    const std::vector<LeaseRow> rows = {
        {Info(7, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE, LEASEFS_STATE_ACTIVE), "/mnt/a"},
        {breaking, ""},
        {revoked, "/mnt/b"},
    };
    CHECK(FormatLeases(rows, 11'250'000'000) ==
          "ID FILE     RANGE      TYPE           STATE    PID  OPEN-FILE BREAK\n"
          "7  /mnt/a   4096..8191 read,exclusive active   1234 5         -\n"
          "9  inode 12 4096..end  write          breaking 1234 5         since 1.250s, deadline "
          "in 43.750s\n"
          "11 /mnt/b   4096..8191 read           revoked  1234 5         since 6.250s\n");
    const auto j = LeasesJson(rows, 42);
    CHECK(j["monotonic_now"] == 42);
    REQUIRE(j["leases"].size() == 3);
    CHECK(j["leases"][0]["file"] == "/mnt/a");
    CHECK(j["leases"][0]["flags"] == nlohmann::ordered_json::array({"exclusive"}));
    CHECK(j["leases"][1]["file"].is_null());
    CHECK(j["leases"][1]["state"] == "breaking");
    CHECK(j["leases"][1]["break_deadline"] == 55 * kSec);
  }
}

}  // namespace
}  // namespace leasefs::leasectl
