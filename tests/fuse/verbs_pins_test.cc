// VERBS pins on a mounted leasefs (docs/pins.md, "VERBS pins"): the daemon's
// side through the ioctl directly (no device needed: the daemon never sees
// the device), and the client's provider (pin/verbs_provider.h) against the
// real daemon with a fake of libibverbs (tests/pin/fake_verbs.h): a fence's
// FENCED frame makes it deregister the MR while the pin still holds the
// blocks, then unpin.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "base/thread_annotations.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "pin/verbs_provider.h"
#include "tests/fuse/pin_fixture.h"
#include "tests/fuse/posix_fs.h"
#include "tests/pin/fake_verbs.h"

namespace leasefs::testing {
namespace {

TEST_CASE("a VERBS pin through the ioctl: flags checked, a writable file needed, listed as verbs") {
  if (!CanMountFuse()) return;
  Mounted t;
  const int fd = MakeFile(t.m.path("f"), std::string(8 * B, 'a'));
  uint32_t version = 0;
  uint64_t features = 0;
  REQUIRE(leasefs_abi_version(fd, &version, &features) == 0);
  CHECK((features & LEASEFS_FEATURE_PIN_VERBS) != 0);
  REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  auto pin = [&](uint32_t flags, int on = -1) {
    uint64_t id = 0;
    const int rc = leasefs_pin_register(on < 0 ? fd : on, &c, 0, B, LEASEFS_PIN_VERBS, flags, &id,
                                        nullptr);
    if (rc == 0) REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
    return Errno(rc);
  };
  CHECK(pin(0) == "EINVAL");  // neither direction
  CHECK(pin(0x10) == "EINVAL");
  CHECK(pin(kRW | 0x4) == "EINVAL");
  CHECK(pin(LEASEFS_PIN_REMOTE_WRITE) == "OK");
  CHECK(pin(LEASEFS_PIN_REMOTE_READ) == "OK");
  CHECK(pin(kRW) == "OK");
  // The device may write whatever the flags say: a descriptor open for
  // reading may not pin for it, even for remote reads.
  const int ro = open(t.m.path("f").c_str(), O_RDONLY);
  REQUIRE(ro >= 0);
  REQUIRE(Lease(ro, 4 * B, 4 * B, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE) == 0);
  uint64_t id = 0;
  CHECK(Errno(leasefs_pin_register(ro, &c, 4 * B, B, LEASEFS_PIN_VERBS, LEASEFS_PIN_REMOTE_READ,
                                   &id, nullptr)) == "EBADF");
  close(ro);
  // Listed: provider 3, its flags, no rkey of the daemon's; records of the
  // daemon and the caller, as for a declared pin.
  uint64_t rkey = 77;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 4 * B, LEASEFS_PIN_VERBS, LEASEFS_PIN_REMOTE_WRITE, &id,
                               &rkey) == 0);
  CHECK(rkey == 0);
  const auto pins = Pins(fd);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].pin_id == id);
  CHECK(pins[0].provider == LEASEFS_PIN_VERBS);
  CHECK(pins[0].flags == LEASEFS_PIN_REC_WRITE);
  CHECK(pins[0].rkey == 0);
  CHECK(pins[0].length == 4 * B);
  leasefs_dax_list l;
  CHECK(RecordOwners(fd, &l) == std::multiset<pid_t>{t.m.daemon_pid(), getpid()});
  // leasectl pins names it.
  const ProcessResult out = Run({ToolPath("LEASECTL_BIN", "leasectl"), "pins", t.m.mnt()});
  CHECK_MESSAGE(out.exit_code == 0, out.output);
  CHECK_MESSAGE(out.output.find(" verbs ") != std::string::npos, out.output);
  REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
  CHECK(RecordOwners(fd, &l).empty());
  leasefs_pin_context_close(&c);
  close(fd);
}

TEST_CASE("a pin's records are gone when UNPIN answers, every time") {
  // The worker that answered PIN may still be returning when UNPIN comes:
  // whatever it holds of the pin must not keep the records past UNPIN's
  // reply. Many rounds, each checked at once.
  if (!CanMountFuse()) return;
  Mounted t;
  const int fd = MakeFile(t.m.path("f"), std::string(4 * B, 'a'));
  REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  leasefs_dax_list l;
  int left = 0;
  for (int round = 0; round < 300; ++round) {
    uint64_t id = 0;
    REQUIRE(leasefs_pin_register(fd, &c, 0, 4 * B, LEASEFS_PIN_VERBS, kRW, &id, nullptr) == 0);
    REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
    if (!RecordOwners(fd, &l).empty()) ++left;
  }
  CHECK(left == 0);
  leasefs_pin_context_close(&c);
  close(fd);
}

TEST_CASE("a VERBS pin under fence: its context gets FENCED; the blocks stay quarantined until UNPIN") {
  if (!CanMountFuse()) return;
  Mounted t("pinned_break=fence");
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(8 * B, 'a'));
  const std::set<uint64_t> blocks = PoolBlocks(fd);
  REQUIRE(blocks.size() == 8);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_VERBS, kRW, &id, nullptr) == 0);
  CHECK(Errno(leasefs_pin_wait_fenced(&c, 0, nullptr, nullptr)) == "ETIMEDOUT");
  // Another open file's truncate: the break waits the break time, fences,
  // and proceeds.
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(SYS(truncate(f.c_str(), 0)) == "OK");
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(900));
  uint64_t fenced_id = 0, fenced_rkey = 99;
  CHECK(leasefs_pin_wait_fenced(&c, 2000, &fenced_id, &fenced_rkey) == 0);
  CHECK(fenced_id == id);
  CHECK(fenced_rkey == 0);
  leasefs_getlease g{};
  REQUIRE(ioctl(fd, LEASEFS_IOC_GETLEASE, &g) == 0);
  CHECK(g.lease.state == LEASEFS_STATE_REVOKED);
  auto pins = Pins(fd);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].flags == (LEASEFS_PIN_REC_FENCED | LEASEFS_PIN_REC_WRITE | LEASEFS_PIN_REC_READ));
  // Quarantined: a new file gets none of the blocks the device may reach.
  leasefs_dax_list l;
  CHECK(RecordOwners(fd, &l) == std::multiset<pid_t>{t.m.daemon_pid(), getpid()});
  CHECK(l.quarantined_total == 8 * B);
  REQUIRE(WriteFile(t.m.path("g"), std::string(64 * B, 'g')) == "");
  const int gfd = open(t.m.path("g").c_str(), O_RDONLY);
  REQUIRE(gfd >= 0);
  for (uint64_t b : PoolBlocks(gfd)) CHECK(blocks.count(b) == 0);
  close(gfd);
  // The holder deregistered its MR; its UNPIN lets the blocks go.
  REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
  CHECK(Pins(fd).empty());
  CHECK(RecordOwners(fd, &l).empty());
  CHECK(l.quarantined_total == 0);
  leasefs_pin_context_close(&c);
  close(fd);
  CHECK(t.m.Unmount() == 0);
  const ProcessResult fsck = t.m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE("another user can neither unpin nor see root's VERBS pin") {
  if (!CanMountFuse()) return;
  Mounted t;
  const int fd = MakeFile(t.m.path("f"), std::string(8 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_VERBS, kRW, &id, nullptr) == 0);
  const leasefs_pin_context root_ctx = c;
  const std::string mnt = t.m.mnt();
  CHECK_AS(65534, 65534, {}, [&](ChildChecks& k) {
    const int dir = open(mnt.c_str(), O_RDONLY | O_DIRECTORY);
    KTRUE(k, dir >= 0);
    KEQ(k, Errno(leasefs_pin_unregister(dir, &root_ctx, id)), "EPERM");
    KEQ(k, Errno(leasefs_pin_unregister(dir, &root_ctx, 0)), "EPERM");
    auto page = std::make_unique<leasefs_pin_list>();
    KEQ(k, Errno(leasefs_pin_list_page(dir, 0, page.get())), "OK");
    KEQ(k, std::to_string(page->count), "0");
    close(dir);
  });
  const auto pins = Pins(fd);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].pin_id == id);
  CHECK((pins[0].flags & LEASEFS_PIN_REC_FENCED) == 0);
  REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
  leasefs_pin_context_close(&c);
  close(fd);
}

// The pins listed (-1 if the list failed) each time the fake deregisters an
// MR: what the daemon still held when the device stopped.
struct DeregWatch {
  explicit DeregWatch(int dir) : dir_(dir) {}
  void operator()(uint32_t lkey) {
    auto page = std::make_unique<leasefs_pin_list>();
    const int rc = leasefs_pin_list_page(dir_, 0, page.get());
    MutexLock l(&mu);
    seen.push_back({lkey, rc == 0 ? static_cast<int>(page->count) : -1});
  }
  const int dir_;
  Mutex mu;
  std::vector<std::pair<uint32_t, int>> seen GUARDED_BY(mu);
};

TEST_CASE("VerbsProvider over a mount with a fake device: each MR is deregistered while its pin holds the blocks, then unpinned; a fence does it on its own") {
  if (!CanMountFuse()) return;
  Mounted t("pinned_break=fence");
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(8 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  pin::FakeVerbs verbs;
  auto watch = std::make_shared<DeregWatch>(dir);
  verbs.OnDereg([watch](uint32_t lkey) { (*watch)(lkey); });
  std::atomic<int> events{0}, event_err{-1};
  std::atomic<uint64_t> event_pin{0};
  pin::VerbsProvider::Options o;
  o.ops = &verbs;
  o.on_fenced = [&](const pin::FenceEvent& ev) {
    event_err = ev.status.err();
    event_pin = ev.pin_id;
    ++events;
  };
  ibv_pd pd{};
  auto p = pin::VerbsProvider::Create(&pd, c, dir, o);
  REQUIRE_MESSAGE(p.ok(), p.status().ToString());
  // The caller may close its context descriptor: the provider holds its own.
  leasefs_pin_context_close(&c);
  // The fake never touches the memory: any page-aligned buffer stands in for
  // the DAX mapping.
  auto mem = std::make_unique<char[]>(9 * B);
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(mem.get()) + B - 1) / B * B);
  pin::VerbsProvider::Range r;
  r.fd = fd;
  r.length = 4 * B;
  r.addr = base;
  auto a = (*p)->Register(r);
  REQUIRE_MESSAGE(a.ok(), a.status().ToString());
  r.offset = 4 * B;
  r.addr = base + 4 * B;
  r.remote = LEASEFS_PIN_REMOTE_WRITE;
  auto b = (*p)->Register(r);
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  CHECK(a->pin_id != 0);
  CHECK(b->pin_id != 0);
  auto pins = Pins(dir);
  REQUIRE(pins.size() == 2);
  CHECK(pins[0].provider == LEASEFS_PIN_VERBS);
  CHECK(pins[1].flags == LEASEFS_PIN_REC_WRITE);
  // A refused PIN (past the end of the file) leaves no MR.
  r.offset = 8 * B;
  CHECK(ErrnoName((*p)->Register(r).status().err()) == "EINVAL");
  CHECK(verbs.Live() == 2);
  // Deregister: the MR first, with both pins still held; then the UNPIN.
  REQUIRE((*p)->Deregister(a->id).ok());
  pins = Pins(dir);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].pin_id == b->pin_id);
  // Another open file's truncate: fenced at the break time; the provider's
  // thread deregisters b's MR while its fenced pin is listed, then unpins.
  CHECK(SYS(truncate(f.c_str(), 0)) == "OK");
  CHECK(Eventually([&] { return events.load() == 1; }));
  CHECK(event_err.load() == 0);
  CHECK(event_pin.load() == b->pin_id);
  CHECK(Eventually([&] { return Pins(dir).empty(); }));
  CHECK(verbs.Live() == 0);
  {
    MutexLock l(&watch->mu);
    // lkey 1 (a) with both pins listed; lkey 3 (the refused one) with two
    // too; lkey 2 (b) with its own still listed at the fence.
    CHECK(watch->seen == std::vector<std::pair<uint32_t, int>>{{3, 2}, {1, 2}, {2, 1}});
  }
  auto fenced = (*p)->Find(b->id);
  REQUIRE(fenced.ok());
  CHECK(fenced->fenced);
  CHECK((*p)->Deregister(b->id).ok());  // nothing left to do
  CHECK(verbs.Calls().size() == 6);      // three regs, three deregs
  p->reset();
  leasefs_dax_list l;
  CHECK(RecordOwners(fd, &l).empty());
  CHECK(l.quarantined_total == 0);
  close(dir);
  close(fd);
}

TEST_CASE("VerbsProvider: its destructor deregisters what is left, each MR before its pin") {
  if (!CanMountFuse()) return;
  Mounted t;
  const int fd = MakeFile(t.m.path("f"), std::string(8 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  pin::FakeVerbs verbs;
  auto watch = std::make_shared<DeregWatch>(dir);
  verbs.OnDereg([watch](uint32_t lkey) { (*watch)(lkey); });
  ibv_pd pd{};
  pin::VerbsProvider::Options o;
  o.ops = &verbs;
  auto p = pin::VerbsProvider::Create(&pd, c, dir, o);
  REQUIRE(p.ok());
  auto mem = std::make_unique<char[]>(9 * B);
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(mem.get()) + B - 1) / B * B);
  for (uint64_t i = 0; i < 2; ++i) {
    pin::VerbsProvider::Range r;
    r.fd = fd;
    r.offset = i * 4 * B;
    r.length = 4 * B;
    r.addr = base + i * 4 * B;
    REQUIRE((*p)->Register(r).ok());
  }
  REQUIRE(Pins(dir).size() == 2);
  p->reset();
  CHECK(verbs.Live() == 0);
  CHECK(Pins(dir).empty());
  {
    MutexLock l(&watch->mu);
    CHECK(watch->seen == std::vector<std::pair<uint32_t, int>>{{1, 2}, {2, 1}});
  }
  // The lease holds no pin now: it can be released.
  CHECK(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  leasefs_pin_context_close(&c);
  close(dir);
  close(fd);
}

}  // namespace
}  // namespace leasefs::testing
