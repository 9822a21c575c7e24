// The frame of leasectl top, without a mount: exact lines for a fixed look
// (a lease being broken with its countdown, a fenced pin, a quarantined
// run, the events), cut to a width and to a height.
#include "tools/leasectl/top_format.h"

#include <stdlib.h>
#include <time.h>

#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace leasefs::leasectl {
namespace {

constexpr uint64_t kSec = 1'000'000'000;
// 2026-12-05 04:16:54.123456789 UTC.
constexpr uint64_t kWhen = 1796444214ull * kSec + 123456789;

void InUtc() {
  setenv("TZ", "UTC", 1);
  tzset();
}

std::vector<std::string> Texts(const std::vector<TopLine>& lines) {
  std::vector<std::string> out;
  for (const TopLine& l : lines) out.push_back(l.text);
  return out;
}

leasefs_event Event(uint64_t seq, uint32_t type) {
  leasefs_event e{};
  e.seq = seq;
  e.time = kWhen;
  e.type = type;
  e.lease_id = 9;
  e.ino = 12;
  e.lease_type = LEASEFS_LEASE_WRITE;
  e.holder_pid = 1240;
  e.actor_pid = seq == 1 ? 1240 : 1250;
  return e;
}

// An active lease, a write lease being broken (deadline at 60 s of
// CLOCK_MONOTONIC) with a fenced pin on it, a revoked lease, a closed
// file's declared pin, one quarantined DAX run of three records, and three
// events.
TopData Look() {
  TopData d;
  d.mount = "/mnt/pmem";
  leasefs_lease_info a{};
  a.id = 7;
  a.ino = 11;
  a.type = LEASEFS_LEASE_READ;
  a.state = LEASEFS_STATE_ACTIVE;
  a.holder_pid = 1234;
  leasefs_lease_info b = a;
  b.id = 9;
  b.ino = 12;
  b.length = 65536;
  b.type = LEASEFS_LEASE_WRITE;
  b.flags = LEASEFS_LEASE_EXCLUSIVE;
  b.state = LEASEFS_STATE_BREAKING;
  b.holder_pid = 1240;
  b.pins = 1;
  b.breaking_since = 55 * kSec;
  b.break_deadline = 60 * kSec;
  leasefs_lease_info c = a;
  c.id = 11;
  c.state = LEASEFS_STATE_REVOKED;
  c.breaking_since = 10 * kSec;
  d.leases = {{a, "/mnt/pmem/a"}, {b, "/mnt/pmem/f"}, {c, ""}};
  d.have_pins = true;
  PinRow p;
  p.rec.pin_id = 3;
  p.rec.context = 1;
  p.rec.ino = 12;
  p.rec.length = 65536;
  p.rec.lease_id = 9;
  p.rec.creator_pid = 1240;
  p.rec.provider = LEASEFS_PIN_SOFTNIC;
  p.rec.flags = LEASEFS_PIN_REC_FENCED | LEASEFS_PIN_REC_WRITE | LEASEFS_PIN_REC_READ;
  p.rec.ops = 4;
  p.rec.bytes = 16384;
  p.file = "/mnt/pmem/f";
  PinRow q = p;
  q.rec.pin_id = 4;
  q.rec.ino = 14;
  q.rec.offset = 4096;
  q.rec.length = 4096;
  q.rec.lease_id = 13;
  q.rec.provider = LEASEFS_PIN_DECLARED;
  q.rec.flags = LEASEFS_PIN_REC_CLOSED;
  q.rec.ops = q.rec.bytes = 0;
  q.file = "";
  d.pins = {p, q};
  d.pin_totals.contexts = 1;
  d.pin_totals.refused_bad_rkey = 2;
  d.pin_totals.refused_fenced = 1;
  d.have_dax = true;
  leasefs_dax_record r{};
  r.map_id = 5;
  r.ino = 14;
  r.length = 65536;
  r.quarantined = 8192;
  r.owner_pid = 1250;
  r.flags = LEASEFS_DAX_REC_UNLEASED;
  d.quarantined = {r};
  d.dax_records = 3;
  d.quarantined_bytes = 8192;
  d.events = {Event(1, LEASEFS_EVENT_GRANT), Event(2, LEASEFS_EVENT_BREAK),
              Event(3, LEASEFS_EVENT_FENCE)};
  return d;
}

TopView View(uint64_t monotonic_ns) {
  TopView v;
  v.monotonic_ns = monotonic_ns;
  v.realtime_ns = kWhen;
  return v;
}

const std::vector<std::string> kHead = {
    "/mnt/pmem  04:16:54.123",
    "leases 3 (1 breaking)  pins 2  contexts 1  DAX records 3  quarantined 8192 bytes  soft NIC "
    "refusals 3",
    "",
    "LEASES",
    "ID FILE        RANGE    KIND            STATE    PID  PINS BREAK",
    "7  /mnt/pmem/a 0..end   read            active   1234 0    -",
    "9  /mnt/pmem/f 0..65535 write,exclusive breaking 1240 1    deadline in 3.750s",
    "11 inode 11    0..end   read            revoked  1234 0    -",
    "",
    "PINS",
    "PIN PID  LEASE FILE        RANGE      PROVIDER FLAGS             OPS BYTES",
    "3   1240 9     /mnt/pmem/f 0..65535   softnic  fenced,write,read 4   16384",
    "4   1240 13    inode 14    4096..8191 declared closed            0   0",
    "",
    "QUARANTINE",
    "MAP INODE FILE-RANGE QUARANTINED PID  STATE",
    "5   14    0..65535   8192        1250 read,unleased",
    "in all 8192 bytes quarantined (DAX records: 3)",
};

const std::vector<std::string> kEvents = {
    "",
    "EVENTS",
    "04:16:54.123456 #1 grant lease 9 inode 12 bytes 0..end write holder 1240 by 1240",
    "04:16:54.123456 #2 break lease 9 inode 12 bytes 0..end write holder 1240 by 1250 (unmap)",
    "04:16:54.123456 #3 fence lease 9 inode 12 bytes 0..end write holder 1240 by 1250",
};

std::vector<std::string> Joined(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_SUITE("leasectl") {
  TEST_CASE("FormatTop: every section, exact; the breaking lease counts down to its deadline") {
    InUtc();
    const TopData d = Look();
    CHECK(Texts(FormatTop(d, View(56'250'000'000))) == Joined(kHead, kEvents));
    // A second later the same lease has a second less; past the deadline,
    // 0 (the daemon revokes it at its next look).
    std::vector<std::string> later = Texts(FormatTop(d, View(57'250'000'000)));
    REQUIRE(later.size() > 6);
    CHECK(later[6] ==
          "9  /mnt/pmem/f 0..65535 write,exclusive breaking 1240 1    deadline in 2.750s");
    later = Texts(FormatTop(d, View(61 * kSec)));
    CHECK(later[6] ==
          "9  /mnt/pmem/f 0..65535 write,exclusive breaking 1240 1    deadline in 0.000s");
  }

  TEST_CASE("FormatTop: styles mark the breaking, the revoked, the fenced and the quarantined") {
    const std::vector<TopLine> lines = FormatTop(Look(), View(56 * kSec));
    REQUIRE(lines.size() == kHead.size() + kEvents.size());
    CHECK(lines[0].style == TopStyle::kBanner);
    CHECK(lines[1].style == TopStyle::kPlain);
    CHECK(lines[3].style == TopStyle::kTitle);
    CHECK(lines[4].style == TopStyle::kColumns);
    CHECK(lines[5].style == TopStyle::kPlain);
    CHECK(lines[6].style == TopStyle::kBreaking);
    CHECK(lines[7].style == TopStyle::kAlarm);
    CHECK(lines[11].style == TopStyle::kAlarm);  // fenced
    CHECK(lines[12].style == TopStyle::kPlain);  // closed
    CHECK(lines[16].style == TopStyle::kBreaking);
    CHECK(lines[17].style == TopStyle::kPlain);
  }

  TEST_CASE("FormatTop: lines cut to the width, never wrapped") {
    InUtc();
    TopView v = View(56'250'000'000);
    v.width = 20;
    v.status = "every 0.5s, q quits";
    const std::vector<std::string> lines = Texts(FormatTop(Look(), v));
    REQUIRE(lines.size() == kHead.size() + kEvents.size());
    CHECK(lines[0] == "/mnt/pmem  04:16:54.");
    CHECK(lines[1] == "leases 3 (1 breaking");
    CHECK(lines[2] == "");
    CHECK(lines[6] == "9  /mnt/pmem/f 0..65");
    CHECK(lines[11] == "3   1240 9     /mnt/");
    for (const std::string& l : lines) CHECK(l.size() <= 20);
    v.width = 0;
    CHECK(Texts(FormatTop(Look(), v))[0] == "/mnt/pmem  04:16:54.123  every 0.5s, q quits");
  }

  TEST_CASE("FormatTop: the events take the rows left; a frame too tall is cut with a note") {
    InUtc();
    TopView v = View(56'250'000'000);
    v.max_events = 100;
    SUBCASE("room for two events: the last two") {
      v.height = kHead.size() + 4;
      CHECK(Texts(FormatTop(Look(), v)) == Joined(kHead, {"", "EVENTS", kEvents[3], kEvents[4]}));
    }
    SUBCASE("no height: max_events") {
      v.max_events = 1;
      CHECK(Texts(FormatTop(Look(), v)) == Joined(kHead, {"", "EVENTS", kEvents[4]}));
    }
    SUBCASE("room for the title alone: no events section") {
      v.height = kHead.size() + 2;
      CHECK(Texts(FormatTop(Look(), v)) == Joined(kHead, {}));
    }
    SUBCASE("too small for the leases: cut, and said so") {
      v.height = 6;
      CHECK(Texts(FormatTop(Look(), v)) ==
            std::vector<std::string>{kHead[0], kHead[1], kHead[2], kHead[3], kHead[4],
                                     "(13 more lines: the terminal is too small)"});
    }
  }

  TEST_CASE("FormatTop: an empty mount, a daemon without pins or DAX") {
    InUtc();
    TopData d;
    d.mount = "/mnt/pmem";
    d.have_dax = true;
    d.dax_records = 2;
    CHECK(Texts(FormatTop(d, View(0))) ==
          std::vector<std::string>{
              "/mnt/pmem  04:16:54.123",
              "leases 0  pins -  contexts -  DAX records 2  quarantined 0 bytes  soft NIC "
              "refusals -",
              "", "LEASES", "no leases", "", "PINS", "this daemon has no pins", "", "QUARANTINE",
              "nothing quarantined (DAX records: 2)", "", "EVENTS", "no events"});
    d.have_pins = true;
    d.have_dax = false;
    const std::vector<std::string> lines = Texts(FormatTop(d, View(0)));
    CHECK(lines[1] ==
          "leases 0  pins 0  contexts 0  DAX records -  quarantined -  soft NIC refusals 0");
    CHECK(lines[7] == "no pins");
    CHECK(lines[10] == "this daemon has no DAX list");
  }

  TEST_CASE("FitLine: control characters and broken UTF-8 become '?'; cut by code points") {
    CHECK(FitLine("plain", 0) == "plain");
    CHECK(FitLine("plain", 3) == "pla");
    CHECK(FitLine("a\x1b[2Jb", 0) == "a?[2Jb");
    CHECK(FitLine("tab\there\r\n", 0) == "tab?here??");
    CHECK(FitLine("del\x7f", 0) == "del?");
    CHECK(FitLine("c1 \xc2\x9b", 0) == "c1 ?");                  // U+009B, a CSI of its own
    CHECK(FitLine("caf\xc3\xa9 au lait", 5) == "caf\xc3\xa9 ");  // é is one column
    CHECK(FitLine("\xe2\x82\xac!", 1) == "\xe2\x82\xac");        // €
    CHECK(FitLine("bad \xc3", 0) == "bad ?");                    // cut short
    CHECK(FitLine("\xc0\xaf", 0) == "??");                       // overlong '/'
    CHECK(FitLine("\xed\xa0\x80", 0) == "???");                  // a surrogate
    CHECK(FitLine("\xff", 0) == "?");
  }
}

}  // namespace
}  // namespace leasefs::leasectl
