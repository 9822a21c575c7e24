// The words, table and file_pins view of leasectl pins and file_pins,
// without a mount.
#include "tools/leasectl/pin_format.h"

#include <doctest/doctest.h>

namespace leasefs::leasectl {
namespace {

using Json = nlohmann::ordered_json;

PinRow Row(uint64_t id, uint64_t context, uint64_t ino, const std::string& file) {
  PinRow r;
  r.rec.pin_id = id;
  r.rec.context = context;
  r.rec.ino = ino;
  r.rec.offset = 0;
  r.rec.length = 65536;
  r.rec.lease_id = 2;
  r.rec.open_file = 5;
  r.rec.rkey = 0x5f0e4c1d2a3b9c87;
  r.rec.creator_pid = 1234;
  r.rec.uid = 0;
  r.rec.provider = LEASEFS_PIN_SOFTNIC;
  r.rec.flags = LEASEFS_PIN_REC_WRITE | LEASEFS_PIN_REC_READ;
  r.rec.ops = 4;
  r.rec.bytes = 16384;
  r.rec.refused = 1;
  r.file = file;
  r.lease_state = LEASEFS_STATE_ACTIVE;
  r.show_rkey = true;
  return r;
}

// A declared pin of another file of context 1, with its lease a zombie and
// its open file closed, and a fenced soft-NIC pin of a second context whose
// rkey the viewer may not see and whose lease is not listed.
std::vector<PinRow> ThreePins() {
  std::vector<PinRow> rows{Row(3, 1, 12, "/mnt/pmem/f"), Row(4, 1, 14, ""),
                           Row(6, 2, 12, "/mnt/pmem/f")};
  rows[1].rec.provider = LEASEFS_PIN_DECLARED;
  rows[1].rec.flags = LEASEFS_PIN_REC_CLOSED;
  rows[1].rec.rkey = 0;
  rows[1].rec.offset = 4096;
  rows[1].rec.length = 4096;
  rows[1].rec.lease_id = 7;
  rows[1].rec.ops = rows[1].rec.bytes = rows[1].rec.refused = 0;
  rows[1].lease_state = LEASEFS_STATE_ZOMBIE;
  rows[2].rec.flags |= LEASEFS_PIN_REC_FENCED;
  rows[2].rec.offset = 1048576;
  rows[2].rec.lease_id = 9;
  rows[2].rec.creator_pid = 1300;
  rows[2].rec.uid = 1000;
  rows[2].lease_state = LEASEFS_STATE_NONE;
  rows[2].show_rkey = false;
  return rows;
}

const PinTotals kTotals{2, 3, 1, 0, 5};

TEST_SUITE("leasectl") {
  TEST_CASE("pin words: providers, flags lowest bit first, rkeys in 16 hex digits") {
    CHECK(PinProviderName(LEASEFS_PIN_SOFTNIC) == "softnic");
    CHECK(PinProviderName(LEASEFS_PIN_DECLARED) == "declared");
    CHECK(PinProviderName(LEASEFS_PIN_VERBS) == "verbs");
    CHECK(PinProviderName(4) == "provider 4");
    CHECK(PinFlagNames(0) == std::vector<std::string>{});
    CHECK(PinFlagNames(LEASEFS_PIN_REC_CLOSED | LEASEFS_PIN_REC_FENCED | 0x20) ==
          std::vector<std::string>{"fenced", "closed", "0x20"});
    CHECK(RkeyText(0x5f0e4c1d2a3b9c87) == "0x5f0e4c1d2a3b9c87");
    CHECK(RkeyText(0xab) == "0x00000000000000ab");
  }

  TEST_CASE("pins: the table, '?' for unknown paths and states, '-' for hidden rkeys; totals") {
    CHECK(FormatPins(ThreePins(), kTotals) ==
          "PIN CONTEXT PID  UID  PROVIDER INODE PATH        RANGE            LEASE LEASE-STATE "
          "FLAGS             RKEY               OPS BYTES REFUSED\n"
          "3   1       1234 0    softnic  12    /mnt/pmem/f 0..65535         2     active      "
          "write,read        0x5f0e4c1d2a3b9c87 4   16384 1\n"
          "4   1       1234 0    declared 14    ?           4096..8191       7     zombie      "
          "closed            -                  0   0     0\n"
          "6   2       1300 1000 softnic  12    /mnt/pmem/f 1048576..1114111 9     ?           "
          "fenced,write,read -                  4   16384 1\n"
          "contexts: 2\n"
          "soft NIC refusals: bad rkey 3, fenced 1, other 0; malformed frames 5\n");
  }

  TEST_CASE("pins: none, with the refusals all the same") {
    CHECK(FormatPins({}, {0, 7, 0, 0, 0}) ==
          "no pins\ncontexts: 0\nsoft NIC refusals: bad rkey 7, fenced 0, other 0; malformed "
          "frames 0\n");
    const Json j = PinsJson({}, {0, 7, 0, 0, 0});
    CHECK(j.dump() ==
          R"({"contexts":0,"softnic_refused":{"bad_rkey":7,"fenced":0,"other":0,)"
          R"("malformed_frames":0},"pins":[]})");
  }

  TEST_CASE("pins --json: stable keys in order; null file, lease_state and hidden rkey") {
    const Json j = PinsJson(ThreePins(), kTotals);
    CHECK(j["pins"][0].dump() ==
          R"({"id":3,"context":1,"creator_pid":1234,"uid":0,"provider":"softnic","ino":12,)"
          R"("file":"/mnt/pmem/f","offset":0,"length":65536,"lease_id":2,"lease_state":"active",)"
          R"("open_file":5,"flags":["write","read"],"rkey":"0x5f0e4c1d2a3b9c87","ops":4,)"
          R"("bytes":16384,"refused":1})");
    CHECK(j["pins"][1]["file"].is_null());
    CHECK(j["pins"][1]["rkey"].is_null());  // declared: no rkey
    CHECK(j["pins"][1]["lease_state"] == "zombie");
    CHECK(j["pins"][2]["rkey"].is_null());  // another user's
    CHECK(j["pins"][2]["lease_state"].is_null());
    CHECK(j["pins"][2]["flags"] == Json::array({"fenced", "write", "read"}));
    CHECK(j["contexts"] == 2);
    CHECK(j["softnic_refused"].dump() ==
          R"({"bad_rkey":3,"fenced":1,"other":0,"malformed_frames":5})");
  }

  TEST_CASE("file_pins: owner, then its files with a tab, then their ranges with two") {
    std::vector<PinRow> rows = ThreePins();
    // A second range of the first file in context 1, after the other file's.
    rows.insert(rows.begin() + 2, Row(5, 1, 12, "/mnt/pmem/f"));
    rows[2].rec.offset = 131072;
    rows[2].rec.length = 0;  // never from the daemon; shows RangeText's "..end"
    CHECK(FormatFilePins(rows) ==
          "context 1: creator 1234 uid 0\n"
          "\t/mnt/pmem/f\n"
          "\t\tpin 3 bytes 0..65535 softnic write,read lease 2 active\n"
          "\t\tpin 5 bytes 131072..end softnic write,read lease 2 active\n"
          "\tinode 14\n"
          "\t\tpin 4 bytes 4096..8191 declared closed lease 7 zombie\n"
          "context 2: creator 1300 uid 1000\n"
          "\t/mnt/pmem/f\n"
          "\t\tpin 6 bytes 1048576..1114111 softnic fenced,write,read lease 9 ?\n");
    CHECK(FormatFilePins({}) == "no pins\n");
  }

  TEST_CASE("file_pins --json: the same tree") {
    const Json j = FilePinsJson(ThreePins());
    REQUIRE(j["owners"].size() == 2);
    CHECK(j["owners"][0].dump() ==
          R"({"context":1,"creator_pid":1234,"uid":0,"files":[)"
          R"({"ino":12,"file":"/mnt/pmem/f","ranges":[{"pin":3,"offset":0,"length":65536,)"
          R"("provider":"softnic","flags":["write","read"],"lease_id":2,"lease_state":"active"}]},)"
          R"({"ino":14,"file":null,"ranges":[{"pin":4,"offset":4096,"length":4096,)"
          R"("provider":"declared","flags":["closed"],"lease_id":7,"lease_state":"zombie"}]}]})");
    CHECK(j["owners"][1]["context"] == 2);
    CHECK(j["owners"][1]["files"][0]["ranges"][0]["lease_state"].is_null());
    CHECK(FilePinsJson({}).dump() == R"({"owners":[]})");
  }
}

}  // namespace
}  // namespace leasefs::leasectl
