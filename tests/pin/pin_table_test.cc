// The pin table (pin/pin_table.h) over a real lease table and a real soft
// NIC on loopback: who may pin (scenarios 1 and 2), tokens and users, what
// unpin, a context's close and a zombie lease do (scenarios 3 and 14), and a
// fence at the break time under a peer that writes without pause (scenario
// 10's last line): no byte lands after the fence, the context is told.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "engine/filesystem.h"
#include "lease/lease_table.h"
#include "leasefs/ioctl.h"
#include "pin/pin_table.h"
#include "pin/softnic.h"
#include "pin/softnic_peer.h"
#include "pin/softnic_wire.h"
#include "tests/pin/pin_fixture.h"

namespace leasefs::pin {
namespace {

using std::chrono::milliseconds;
constexpr engine::Ino kIno = 42;
constexpr uint64_t kLen = 64 * 1024;

lease::Options Opts(lease::PinnedBreak policy) {
  lease::Options o;
  o.break_time = milliseconds(150);
  o.pinned_break = policy;
  return o;
}

// An EXCLUSIVE WRITE lease (flags `flags`) of open file `of` over [0, kLen).
lease::LeaseId Lease(lease::LeaseTable& t, lease::OpenFileId of,
                     uint32_t flags = LEASEFS_LEASE_EXCLUSIVE, uint32_t type = LEASEFS_LEASE_WRITE) {
  lease::Holder h{of, kIno, 0, 1000, true};
  lease::LeaseRequest r;
  r.type = type;
  r.length = kLen;
  r.flags = flags;
  auto id = t.SetLease(h, r, nullptr);
  REQUIRE(id.ok());
  return *id;
}

engine::Cred By(lease::OpenFileId of) {
  engine::Cred c(1000, 1000, ::getpid());
  c.set_open_file(of);
  return c;
}

engine::LayoutChange Punch() {
  engine::LayoutChange c;
  c.ino = kIno;
  c.kind = engine::LayoutChangeKind::kUnmap;
  c.offset = 0;
  c.length = 4096;
  return c;
}

using Memory = PinMemory<kLen>;

// The pin table under `policy`, its breaks after 150 ms.
struct Fixture : PinTableFixture {
  explicit Fixture(lease::PinnedBreak policy = lease::PinnedBreak::kRefuse)
      : PinTableFixture(Opts(policy), kIno, kLen) {}
};

// The next frame on a context's socket: {type, id, rkey}; type 0 if none.
struct Frame {
  uint16_t type = 0;
  uint64_t id = 0;
  uint64_t rkey = 0;
  uint8_t token[16] = {};
};
Frame NextFrame(int fd) {
  uint8_t buf[48];
  Frame f;
  if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) != 48) return f;
  uint32_t magic;
  std::memcpy(&magic, buf, 4);
  REQUIRE(magic == 0x5843504cu);
  std::memcpy(&f.type, buf + 6, 2);
  std::memcpy(&f.id, buf + 8, 8);
  std::memcpy(&f.rkey, buf + 16, 8);
  std::memcpy(f.token, buf + 32, 16);
  return f;
}

// Runs `fn` on a thread of its own and waits 10 s for it. A call stuck on a
// mutex it holds already cannot be joined or failed gracefully: the binary
// ends with a message and status 1.
void ReturnsOrDie(const char* what, std::function<void()> fn) {
  auto done = std::make_shared<std::promise<void>>();
  auto returned = done->get_future();
  std::thread([fn = std::move(fn), done] {
    fn();
    done->set_value();
  }).detach();
  if (returned.wait_for(std::chrono::seconds(10)) == std::future_status::timeout) {
    std::fprintf(stderr, "%s did not return within 10 s: a deadlock\n", what);
    std::_Exit(1);
  }
}

TEST_SUITE("pin") {

TEST_CASE("PinTable: a context says hello with its id and token") {
  Fixture fx;
  const auto c = fx.Context();
  const Frame hello = NextFrame(fx.notices.get());
  CHECK(hello.type == 1);
  CHECK(hello.id == c.id);
  CHECK(std::memcmp(hello.token, c.token.data(), 16) == 0);
  const auto d = fx.Context();
  CHECK(d.id != c.id);
  CHECK(d.token != c.token);
}

TEST_CASE("PinTable: scenarios 1 and 2: no lease, or one that is not exclusive, gives EPERM") {
  Fixture fx;
  const auto c = fx.Context();
  Memory mem;
  CHECK(fx.table.Pin(fx.Req(c, 1), mem.Region()).status().err() == EPERM);
  Lease(fx.leases, 1, 0);  // a breakable WRITE lease
  CHECK(fx.table.Pin(fx.Req(c, 1), mem.Region()).status().err() == EPERM);
  // Every refused pin gave its memory back.
  CHECK(mem.released == 2);
  CHECK(fx.table.List(0).empty());
  CHECK(fx.nic.Stats().regions.empty());
}

TEST_CASE("PinTable: the token, the user and the context's life are checked") {
  Fixture fx;
  const auto c = fx.Context();
  Lease(fx.leases, 1);
  Memory mem;
  PinTable::PinRequest r = fx.Req(c, 1);
  r.token[3] ^= 1;
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EPERM);
  r = fx.Req(c, 1);
  r.uid = 1001;  // another user who learned the token
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EPERM);
  r = fx.Req(c, 1);
  r.context = c.id + 100;
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EBADF);
  r = fx.Req(c, 1);
  r.length = 4096;  // not the region's length
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EINVAL);
  r = fx.Req(c, 1, static_cast<Provider>(7));
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EINVAL);
  fx.table.CloseContext(c.id);
  CHECK(fx.table.Pin(fx.Req(c, 1), mem.Region()).status().err() == EBADF);
  CHECK(mem.released == 6);
  // Root may use anybody's context.
  const auto d = fx.Context();
  r = fx.Req(d, 1, Provider::kDeclared);
  r.uid = 0;
  CHECK(fx.table.Pin(r, mem.Region()).ok());
}

TEST_CASE("PinTable: a request must name the inode of the lease that covers its range") {
  Fixture fx;
  const auto c = fx.Context();
  Lease(fx.leases, 1);
  Memory mem;
  PinTable::PinRequest r = fx.Req(c, 1);
  r.ino = kIno + 1;  // open file 1's lease is on kIno
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EPERM);
  r.ino = 0;
  CHECK(fx.table.Pin(r, mem.Region()).status().err() == EINVAL);
  CHECK(mem.released == 2);
  CHECK(fx.leases.GetLease(1, 0).pins == 0);
  CHECK(fx.table.List(0).empty());
  CHECK(fx.table.PinsOf(1) == 0);
  CHECK(fx.nic.Stats().regions.empty());
  CHECK(fx.table.Pin(fx.Req(c, 1), mem.Region()).ok());
}

TEST_CASE("PinTable: a pin is counted on its open file and its lease; unpin gives both back") {
  Fixture fx;
  const auto c = fx.Context();
  const lease::LeaseId lease = Lease(fx.leases, 1);
  Memory mem;
  auto pinned = fx.table.Pin(fx.Req(c, 1), mem.Region());
  REQUIRE(pinned.ok());
  CHECK(pinned->rkey != 0);
  CHECK(fx.table.PinsOf(1) == 1);
  CHECK(fx.table.PinsOf(2) == 0);
  CHECK(fx.leases.GetLease(1, 0).pins == 1);
  // Scenario 14: the lease may not go before its pin.
  lease::LeaseRequest unlock;
  unlock.type = LEASEFS_LEASE_UNLOCK;
  unlock.length = kLen;
  CHECK(fx.leases.SetLease(lease::Holder{1, kIno, 0, 1000, true}, unlock, nullptr).status().err() ==
        EBUSY);
  const auto list = fx.table.List(1000);
  REQUIRE(list.size() == 1);
  CHECK(list[0].id == pinned->id);
  CHECK(list[0].lease == lease);
  CHECK(list[0].rkey == pinned->rkey);
  CHECK(list[0].provider == Provider::kSoftNic);
  CHECK(list[0].creator_pid == ::getpid());
  CHECK(fx.table.List(1001).empty());
  CHECK(fx.table.List(0).size() == 1);
  CHECK(fx.table.Unpin(c.id, c.token, 1000, pinned->id + 1).err() == ENOENT);
  CHECK(fx.table.Unpin(c.id, c.token, 1001, pinned->id).err() == EPERM);
  CHECK(fx.table.Unpin(c.id, c.token, 1000, pinned->id).ok());
  CHECK(mem.released == 1);
  CHECK(fx.table.PinsOf(1) == 0);
  CHECK(fx.leases.GetLease(1, 0).pins == 0);
  CHECK(fx.leases.SetLease(lease::Holder{1, kIno, 0, 1000, true}, unlock, nullptr).ok());
  // The rkey is forgotten: a peer gets a remote access error.
  auto peer = SoftNicPeer::Connect("127.0.0.1", fx.nic.port());
  REQUIRE(peer.ok());
  auto done = peer->Write(pinned->rkey, 0, "x", 1);
  REQUIRE(done.ok());
  CHECK(done->status == wire::kStatusRemoteAccessError);
  CHECK(mem.bytes[0] == 'm');
}

TEST_CASE("PinTable: a region's release runs unlocked, after its pin left the table and the lease") {
  Fixture fx;
  const auto c = fx.Context();
  Lease(fx.leases, 1);
  // What each release saw of the table, asked from inside the release: the
  // daemon's release calls into the engine, which may call back here.
  struct Seen {
    size_t listed = 99;
    size_t pins_of = 99;
    uint32_t lease_pins = 99;
    bool rkey_known = true;
  };
  std::vector<char> mem(2 * 4096, 'm');
  std::vector<Seen> seen;
  std::vector<uint64_t> rkeys;
  auto pin = [&](uint64_t offset, Provider p) {
    PinTable::PinRequest r = fx.Req(c, 1, p);
    r.offset = offset;
    r.length = 4096;
    PinTable::Region region{mem.data() + offset, 4096, [&] {
                              Seen s;
                              s.listed = fx.table.List(0).size();
                              s.pins_of = fx.table.PinsOf(1);
                              s.lease_pins = fx.leases.GetLease(1, 0).pins;
                              s.rkey_known = false;
                              for (const auto& reg : fx.nic.Stats().regions) {
                                for (uint64_t k : rkeys) s.rkey_known |= reg.rkey == k;
                              }
                              seen.push_back(s);
                            }};
    auto pinned = fx.table.Pin(r, std::move(region));
    REQUIRE(pinned.ok());
    if (pinned->rkey != 0) rkeys.push_back(pinned->rkey);
    return *pinned;
  };
  const auto first = pin(0, Provider::kSoftNic);
  pin(4096, Provider::kDeclared);
  SUBCASE("Unpin of one pin") {
    ReturnsOrDie("Unpin", [&] { CHECK(fx.table.Unpin(c.id, c.token, 1000, first.id).ok()); });
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].listed == 1);
    CHECK(seen[0].pins_of == 1);
    CHECK(seen[0].lease_pins == 1);
    CHECK_FALSE(seen[0].rkey_known);
    ReturnsOrDie("Unpin", [&] { CHECK(fx.table.Unpin(c.id, c.token, 1000, 0).ok()); });
  }
  SUBCASE("Unpin of all") {
    ReturnsOrDie("Unpin", [&] { CHECK(fx.table.Unpin(c.id, c.token, 1000, 0).ok()); });
  }
  SUBCASE("the context's close") {
    ReturnsOrDie("CloseContext", [&] { fx.table.CloseContext(c.id); });
  }
  // Whichever way they went, both pins had left the table, the lease's
  // count and the soft NIC before the last release ran, and before the call
  // returned.
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].listed == 0);
  CHECK(seen[1].pins_of == 0);
  CHECK(seen[1].lease_pins == 0);
  CHECK_FALSE(seen[1].rkey_known);
  CHECK(fx.leases.GetLease(1, 0).pins == 0);
}

TEST_CASE("PinTable: FenceLease fences its lease's pins only, the ones still there, once") {
  Fixture fx;
  const auto c = fx.Context();
  Lease(fx.leases, 1);
  // Open file 2's lease: the same range of another inode.
  lease::LeaseRequest lr;
  lr.type = LEASEFS_LEASE_WRITE;
  lr.flags = LEASEFS_LEASE_EXCLUSIVE;
  lr.length = kLen;
  auto other = fx.leases.SetLease(lease::Holder{2, kIno + 1, 0, 1000, true}, lr, nullptr);
  REQUIRE(other.ok());
  std::vector<char> mem(kLen, 'm');
  auto pin = [&](lease::OpenFileId of, engine::Ino ino, uint64_t offset) {
    PinTable::PinRequest r = fx.Req(c, of, Provider::kDeclared);
    r.ino = ino;
    r.offset = offset;
    r.length = 4096;
    auto pinned = fx.table.Pin(r, PinTable::Region{mem.data() + offset, 4096, nullptr});
    REQUIRE(pinned.ok());
    return pinned->id;
  };
  const lease::LeaseId first = fx.leases.GetLease(1, 0).id;
  const PinId a1 = pin(1, kIno, 0);
  const PinId b1 = pin(2, kIno + 1, 0);
  const PinId a2 = pin(1, kIno, 4096);
  const PinId a3 = pin(1, kIno, 8192);
  const PinId b2 = pin(2, kIno + 1, 4096);
  REQUIRE(fx.table.Unpin(c.id, c.token, 1000, a2).ok());
  CHECK(fx.table.FenceLease(first) == 2);
  CHECK(fx.table.FenceLease(first) == 0);  // fenced already
  auto fenced = [&] {
    std::vector<PinId> out;
    for (const auto& p : fx.table.List(0)) {
      if (p.fenced) out.push_back(p.id);
    }
    return out;
  };
  CHECK(fenced() == std::vector<PinId>{a1, a3});
  // A fenced pin's drop and an unfenced one's leave the other lease's intact.
  REQUIRE(fx.table.Unpin(c.id, c.token, 1000, a1).ok());
  REQUIRE(fx.table.Unpin(c.id, c.token, 1000, b1).ok());
  const PinId b3 = pin(2, kIno + 1, 8192);
  CHECK(fx.table.FenceLease(*other) == 2);
  CHECK(fenced() == std::vector<PinId>{a3, b2, b3});
  CHECK(fx.table.FenceLease(*other + 100) == 0);
}

TEST_CASE("PinTable: scenario 3: a pinned file's close leaves a zombie lease until the context closes") {
  Fixture fx;
  const auto c = fx.Context();
  const lease::LeaseId lease = Lease(fx.leases, 1);
  Memory mem;
  REQUIRE(fx.table.Pin(fx.Req(c, 1, Provider::kDeclared), mem.Region()).ok());
  fx.leases.CloseOpenFile(1);  // close(fd) with the pin alive
  CHECK(fx.leases.GetLease(1, 0).state == LEASEFS_STATE_ZOMBIE);
  CHECK(fx.leases.Break(By(2), Punch(), false, nullptr).err() == ETXTBSY);
  fx.table.CloseContext(c.id);  // the owner's last descriptor goes
  CHECK(mem.released == 1);
  CHECK(fx.leases.GetLease(1, 0).state == LEASEFS_STATE_NONE);
  CHECK(fx.leases.Break(By(2), Punch(), false, nullptr).ok());
  CHECK(fx.leases.GetLease(1, 0).id != lease);
}

TEST_CASE("PinTable: a fence at the break time stops a writing peer before the change goes") {
  Fixture fx(lease::PinnedBreak::kFence);
  const auto c = fx.Context();
  (void)NextFrame(fx.notices.get());  // the hello
  Lease(fx.leases, 1);
  Memory mem;
  auto pinned = fx.table.Pin(fx.Req(c, 1), mem.Region());
  REQUIRE(pinned.ok());
  auto peer = SoftNicPeer::Connect("127.0.0.1", fx.nic.port());
  REQUIRE(peer.ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> refused{0}, landed{0};
  std::thread writer([&] {
    const std::vector<char> data(4096, 'P');
    Completion done[16];
    for (uint64_t i = 0; !stop.load(); ++i) {
      if (!peer->PostWrite(pinned->rkey, (i % 16) * 4096, data.data(), 4096, i).ok()) break;
      auto n = peer->Poll(done, 16, 0);
      if (!n.ok()) break;
      for (size_t k = 0; k < *n; ++k) {
        if (done[k].op == wire::kFrameWriteDone) (done[k].ok() ? landed : refused).fetch_add(1);
      }
      if (peer->outstanding() > 64) (void)peer->Poll(done, 16, 100);
    }
  });
  while (landed.load() < 100) std::this_thread::sleep_for(milliseconds(1));
  // Another process punches: the pinned lease is recalled, nobody answers,
  // and at the break time its pin is fenced and the lease revoked.
  CHECK(fx.leases.Break(By(2), Punch(), false, nullptr).ok());
  // Past this point nothing may land: the blocks are about to change.
  std::memset(mem.bytes.data(), 'z', kLen);
  const uint64_t refused_at_fence = refused.load();
  std::this_thread::sleep_for(milliseconds(200));
  stop = true;
  writer.join();
  CHECK(std::count(mem.bytes.begin(), mem.bytes.end(), 'z') == static_cast<long>(kLen));
  CHECK(refused.load() > refused_at_fence);
  CHECK(fx.leases.GetLease(1, 0).state == LEASEFS_STATE_REVOKED);
  const auto list = fx.table.List(0);
  REQUIRE(list.size() == 1);
  CHECK(list[0].fenced);
  CHECK(fx.table.PinsOf(1) == 1);  // listed, fenced, until its context lets it go
  const Frame fenced = NextFrame(fx.notices.get());
  CHECK(fenced.type == 2);
  CHECK(fenced.id == pinned->id);
  CHECK(fenced.rkey == pinned->rkey);
  CHECK(mem.released == 0);
  CHECK(fx.table.Unpin(c.id, c.token, 1000, 0).ok());
  CHECK(mem.released == 1);
  CHECK(fx.table.PinsOf(1) == 0);
}

TEST_CASE("PinTable: a VERBS pin needs no memory; a fence marks it, tells its context, keeps its blocks") {
  Fixture fx(lease::PinnedBreak::kFence);
  const auto c = fx.Context();
  (void)NextFrame(fx.notices.get());  // the hello
  Lease(fx.leases, 1);
  std::atomic<int> released{0};
  PinTable::PinRequest r = fx.Req(c, 1, Provider::kVerbs);
  r.remote_read = false;
  auto pinned = fx.table.Pin(r, PinTable::Region{nullptr, kLen, [&] { released.fetch_add(1); }});
  REQUIRE(pinned.ok());
  CHECK(pinned->rkey == 0);  // the device's own rkey is none of the daemon's business
  auto list = fx.table.List(0);
  REQUIRE(list.size() == 1);
  CHECK(list[0].provider == Provider::kVerbs);
  CHECK(list[0].remote_write);
  CHECK_FALSE(list[0].remote_read);
  // Another process punches: recalled, nobody answers, fenced at the break
  // time; the change proceeds.
  CHECK(fx.leases.Break(By(2), Punch(), false, nullptr).ok());
  CHECK(fx.leases.GetLease(1, 0).state == LEASEFS_STATE_REVOKED);
  const Frame fenced = NextFrame(fx.notices.get());
  CHECK(fenced.type == LEASEFS_PIN_FRAME_FENCED);
  CHECK(fenced.id == pinned->id);
  CHECK(fenced.rkey == 0);
  list = fx.table.List(0);
  REQUIRE(list.size() == 1);
  CHECK(list[0].fenced);
  CHECK(released == 0);  // the blocks stay quarantined until the holder unpins
  CHECK(fx.table.Unpin(c.id, c.token, 1000, pinned->id).ok());
  CHECK(released == 1);
  CHECK(fx.table.List(0).empty());
  // An unknown provider is still refused.
  r.provider = static_cast<Provider>(4);
  CHECK(fx.table.Pin(r, PinTable::Region{nullptr, kLen, nullptr}).status().err() == EINVAL);
}

TEST_CASE("PinTable: the per-user count keeps only users that hold pins") {
  Fixture fx;
  Lease(fx.leases, 1);
  Memory mem;
  // Refused pins of many users leave nothing behind.
  for (uid_t uid = 2000; uid < 2100; ++uid) {
    const auto c = fx.Context(uid);
    PinTable::PinRequest r = fx.Req(c, 2, Provider::kDeclared);  // open file 2 has no lease
    r.uid = uid;
    CHECK(fx.table.Pin(r, mem.Region()).status().err() == EPERM);
  }
  CHECK(fx.table.TEST_CountedUsers() == 0);
  const auto c = fx.Context();
  auto pinned = fx.table.Pin(fx.Req(c, 1, Provider::kDeclared), mem.Region());
  REQUIRE(pinned.ok());
  CHECK(fx.table.TEST_CountedUsers() == 1);
  REQUIRE(fx.table.Unpin(c.id, c.token, 1000, pinned->id).ok());
  CHECK(fx.table.TEST_CountedUsers() == 0);
}

TEST_CASE("PinTable: without a soft NIC a SOFTNIC pin is EOPNOTSUPP; a user holds 4096 pins") {
  lease::LeaseTable leases(Opts(lease::PinnedBreak::kRefuse), nullptr);
  PinTable table(&leases, nullptr);
  auto c = table.AddContext(::getpid(), 1000, UniqueFd());
  REQUIRE(c.ok());
  Lease(leases, 1);
  std::vector<char> mem(kLen);
  PinTable::PinRequest r;
  r.context = c->id;
  r.token = c->token;
  r.open_file = 1;
  r.ino = kIno;
  r.uid = 1000;
  r.length = 4096;
  CHECK(table.Pin(r, PinTable::Region{mem.data(), 4096, nullptr}).status().err() == EOPNOTSUPP);
  r.provider = Provider::kDeclared;
  for (size_t i = 0; i < PinTable::kMaxPinsPerUser; ++i) {
    REQUIRE(table.Pin(r, PinTable::Region{mem.data(), 4096, nullptr}).ok());
  }
  CHECK(table.Pin(r, PinTable::Region{mem.data(), 4096, nullptr}).status().err() == ENOLCK);
  CHECK(leases.GetLease(1, 0).pins == PinTable::kMaxPinsPerUser);
  table.CloseContext(c->id);
  CHECK(leases.GetLease(1, 0).pins == 0);
}

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::pin
