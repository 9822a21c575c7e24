// Pins on a mounted leasefs (docs/pins.md), through the client library
// (lease/client/leasefs_pin.h) and the soft NIC's peer (pin/softnic_peer.h):
// who may pin what (semantics-2019 §5 scenarios 1 and 2), that a peer's
// one-sided WRITEs land in the file's blocks, that a pinned lease cannot be
// released (scenario 14), that changes meet pins as the mount's
// pinned_break says (scenarios 3, 9, 10, 11), that a context's end ends its
// pins, and that another user can neither use nor see root's pins.
//
// Processes that must outlive a step (die, hold a context) are children.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "lease/client/leasefs_dax.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "pin/softnic_peer.h"
#include "pin/softnic_wire.h"
#include "tests/fuse/pin_fixture.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

leasefs_getlease GetLease(int fd, uint64_t off) {
  leasefs_getlease g{};
  g.offset = off;
  REQUIRE(ioctl(fd, LEASEFS_IOC_GETLEASE, &g) == 0);
  return g;
}

pin::SoftNicPeer ConnectPeer(int fd) {
  leasefs_pin_info info;
  REQUIRE(leasefs_pin_get_info(fd, &info) == 0);
  REQUIRE((info.flags & LEASEFS_PIN_INFO_SOFTNIC) != 0);
  auto peer = pin::SoftNicPeer::Connect(info.softnic_address, info.softnic_port);
  REQUIRE_MESSAGE(peer.ok(), peer.status().ToString());
  return std::move(*peer);
}

// One signaled WRITE and its outcome.
std::string WriteAndWait(pin::SoftNicPeer& peer, uint64_t rkey, uint64_t off,
                         const std::string& data) {
  auto c = peer.Write(rkey, off, data.data(), static_cast<uint32_t>(data.size()));
  if (!c.ok()) return c.status().ToString();
  return c->ok() ? "OK" : "remote access error";
}

TEST_CASE("PIN_INFO names the daemon's pin socket and soft NIC; a context says hello") {
  if (!CanMountFuse()) return;
  Mounted t;
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  uint32_t version = 0;
  uint64_t features = 0;
  REQUIRE(leasefs_abi_version(dir, &version, &features) == 0);
  CHECK((features & LEASEFS_FEATURE_PINS) != 0);
  leasefs_pin_info info;
  REQUIRE(leasefs_pin_get_info(dir, &info) == 0);
  CHECK(info.daemon_pid == t.m.daemon_pid());
  CHECK(info.socket_name_len > 0);
  CHECK((info.flags & LEASEFS_PIN_INFO_SOFTNIC) != 0);
  CHECK(std::string(info.softnic_address) == "127.0.0.1");
  CHECK(info.softnic_port != 0);
  leasefs_pin_context a, b;
  REQUIRE(leasefs_pin_context_open(dir, &a) == 0);
  REQUIRE(leasefs_pin_context_open(dir, &b) == 0);
  CHECK(a.id != 0);
  CHECK(b.id != a.id);
  CHECK(memcmp(a.token, b.token, sizeof a.token) != 0);
  CHECK((fcntl(a.fd, F_GETFD) & FD_CLOEXEC) != 0);
  leasefs_pin_context_close(&a);
  leasefs_pin_context_close(&b);
  CHECK(a.fd == -1);
  close(dir);
}

TEST_CASE("softnic=off: declared pins only; a bad softnic= value refuses the mount") {
  if (!CanMountFuse()) return;
  {
    Mounted t("softnic=off");
    const int fd = MakeFile(t.m.path("f"), std::string(4 * B, 'a'));
    leasefs_pin_info info;
    REQUIRE(leasefs_pin_get_info(fd, &info) == 0);
    CHECK((info.flags & LEASEFS_PIN_INFO_SOFTNIC) == 0);
    leasefs_pin_context c;
    REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
    REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
    CHECK(Errno(leasefs_pin_register(fd, &c, 0, B, LEASEFS_PIN_SOFTNIC, kRW, nullptr,
                                     nullptr)) == "EOPNOTSUPP");
    uint64_t id = 0, rkey = 7;
    CHECK(Errno(leasefs_pin_register(fd, &c, 0, B, LEASEFS_PIN_DECLARED, 0, &id, &rkey)) == "OK");
    CHECK(id != 0);
    CHECK(rkey == 0);
    CHECK(leasefs_pin_unregister(fd, &c, id) == 0);
    leasefs_pin_context_close(&c);
    close(fd);
  }
  MountOptions o;
  TestMount m(o);
  REQUIRE(m.Unmount() == 0);
  std::string out;
  CHECK_FALSE(m.Mount(&out, "softnic=localhost:1"));
  CHECK_FALSE(m.Mount(&out, "softnic=127.0.0.1:70000"));
}

TEST_CASE("scenarios 1 and 2: a pin needs an exclusive lease of one's own; every field is checked") {
  if (!CanMountFuse()) return;
  Mounted t;
  const int fd = MakeFile(t.m.path("f"), std::string(8 * B, 'a'));
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  auto pin = [&](uint64_t off, uint64_t len, uint32_t provider = LEASEFS_PIN_SOFTNIC,
                 uint32_t flags = kRW, int on = -1) {
    uint64_t id = 0;
    const int rc = leasefs_pin_register(on < 0 ? fd : on, &c, off, len, provider, flags, &id,
                                        nullptr);
    if (rc == 0) REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
    return Errno(rc);
  };
  CHECK(pin(0, 4 * B) == "EPERM");  // scenario 1: no lease
  REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_READ) == 0);
  CHECK(pin(0, 4 * B) == "EPERM");  // scenario 2: a lease that is not exclusive
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_WRITE) == 0);
  CHECK(pin(0, 4 * B) == "EPERM");
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  CHECK(pin(0, 4 * B) == "OK");
  CHECK(pin(0, 5 * B) == "EPERM");  // past the lease
  CHECK(pin(1, 4 * B - 1) == "EINVAL");
  CHECK(pin(0, B + 1) == "EINVAL");
  CHECK(pin(0, 0) == "EINVAL");
  CHECK(pin(0, B, 9) == "EINVAL");                       // no such provider
  CHECK(pin(0, B, LEASEFS_PIN_SOFTNIC, 0) == "EINVAL");  // neither direction
  CHECK(pin(0, B, LEASEFS_PIN_SOFTNIC, 0x10) == "EINVAL");
  CHECK(pin(0, B, LEASEFS_PIN_DECLARED, kRW) == "EINVAL");
  CHECK(pin(0, B, LEASEFS_PIN_DECLARED, 0) == "OK");
  // The context: its token, and it must be open.
  leasefs_pin_context forged = c;
  forged.token[3] ^= 1;
  CHECK(Errno(leasefs_pin_register(fd, &forged, 0, B, LEASEFS_PIN_SOFTNIC, kRW, nullptr,
                                   nullptr)) == "EPERM");
  forged = c;
  forged.id += 1000;
  CHECK(Errno(leasefs_pin_register(fd, &forged, 0, B, LEASEFS_PIN_SOFTNIC, kRW, nullptr,
                                   nullptr)) == "EBADF");
  // A descriptor open for reading may not let peers write.
  const int ro = open(t.m.path("f").c_str(), O_RDONLY);
  REQUIRE(ro >= 0);
  REQUIRE(Lease(ro, 4 * B, 4 * B, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE) == 0);
  CHECK(pin(4 * B, B, LEASEFS_PIN_SOFTNIC, LEASEFS_PIN_REMOTE_WRITE, ro) == "EBADF");
  CHECK(pin(4 * B, B, LEASEFS_PIN_DECLARED, 0, ro) == "EBADF");
  CHECK(pin(4 * B, B, LEASEFS_PIN_SOFTNIC, LEASEFS_PIN_REMOTE_READ, ro) == "OK");
  close(ro);  // its lease goes (its pin went)
  // Inside the file only.
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  CHECK(pin(8 * B, B) == "EINVAL");
  CHECK(pin(4 * B, 4 * B) == "OK");
  leasefs_pin_context_close(&c);
  close(fd);
}

TEST_CASE("a peer's WRITEs land in the file's blocks and its READs read them") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(64 * B, 'a'));
  REQUIRE(Lease(fd, 0, 64 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0, rkey = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 16 * B, 32 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, &rkey) == 0);
  CHECK(rkey != 0);
  pin::SoftNicPeer peer = ConnectPeer(fd);
  const std::string data = Pattern(20 * B + 123, 1);
  CHECK(WriteAndWait(peer, rkey, 5 * B + 7, data) == "OK");
  // read(2) through FUSE sees it at once, where the pin begins plus offset.
  std::string want(64 * B, 'a');
  want.replace(16 * B + 5 * B + 7, data.size(), data);
  CHECK(ReadFile(f) == want);
  // Out of bounds: refused, counted, nothing written.
  CHECK(WriteAndWait(peer, rkey, 32 * B - 1, "xy") == "remote access error");
  CHECK(WriteAndWait(peer, rkey ^ 1, 0, "xy") == "remote access error");
  CHECK(ReadFile(f) == want);
  // A READ gives the file's bytes.
  std::string back(100, '\0');
  auto done = peer.Read(rkey, 5 * B, back.data(), 100);
  REQUIRE(done.ok());
  CHECK(done->ok());
  CHECK(back == want.substr(21 * B, 100));
  // The list says what the pin is and what it served.
  leasefs_pin_list head{};
  const auto pins = Pins(fd, &head);
  REQUIRE(pins.size() == 1);
  const leasefs_pin_record& p = pins[0];
  CHECK(p.pin_id == id);
  CHECK(p.context == c.id);
  CHECK(p.offset == 16 * B);
  CHECK(p.length == 32 * B);
  CHECK(p.rkey == rkey);
  CHECK(p.provider == LEASEFS_PIN_SOFTNIC);
  CHECK(p.creator_pid == getpid());
  CHECK(p.uid == 0);
  CHECK(p.flags == (LEASEFS_PIN_REC_WRITE | LEASEFS_PIN_REC_READ));
  CHECK(p.lease_id == GetLease(fd, 16 * B).lease.id);
  struct stat st{};
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(p.ino == st.st_ino);
  CHECK(p.ops == 2);
  CHECK(p.bytes == data.size() + 100);
  CHECK(p.refused == 1);
  CHECK(head.refused_bad_rkey == 1);
  CHECK(head.refused_other == 1);
  CHECK(head.contexts == 1);
  CHECK(GetLease(fd, 0).lease.pins == 1);
  // Scenario 14: a lease with pins is not released.
  CHECK(Errno(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK)) == "EBUSY");
  REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
  CHECK(Pins(fd).empty());
  CHECK(WriteAndWait(peer, rkey, 0, "late") == "remote access error");
  CHECK(ReadFile(f) == want);
  CHECK(Errno(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK)) == "OK");
  CHECK(Errno(leasefs_pin_unregister(fd, &c, id)) == "ENOENT");
  leasefs_pin_context_close(&c);
  close(fd);
  CHECK(t.m.Unmount() == 0);
  const ProcessResult fsck = t.m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE("scenarios 9 and 11 under refuse: the holder's own truncate is EDEADLOCK, another's ETXTBSY") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(16 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 16 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, nullptr) == 0);
  CHECK(SYS(ftruncate(fd, B)) == "EDEADLK");
  const pid_t other = fork();
  REQUIRE(other >= 0);
  if (other == 0) _exit(truncate(f.c_str(), B) == 0 ? 0 : errno);
  int status = 0;
  REQUIRE(waitpid(other, &status, 0) == other);
  CHECK(WEXITSTATUS(status) == ETXTBSY);
  struct stat st{};
  REQUIRE(stat(f.c_str(), &st) == 0);
  CHECK(st.st_size == static_cast<off_t>(16 * B));
  leasefs_pin_context_close(&c);  // the context's end ends its pins...
  CHECK(Eventually([&] { return Pins(fd).empty(); }));
  CHECK(GetLease(fd, 0).lease.pins == 0);
  CHECK(SYS(ftruncate(fd, B)) == "EDEADLK");  // ...not the EXCLUSIVE lease
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  CHECK(SYS(ftruncate(fd, B)) == "OK");
  close(fd);
}

TEST_CASE("scenario 3 under zombie: close keeps the pinned lease, listed ZOMBIE, until the pins go") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  int fd = MakeFile(f, std::string(8 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0, rkey = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, &rkey) == 0);
  close(fd);  // the seed message: the file is closed, the registration lives
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  CHECK(Eventually([&] {
    const auto pins = Pins(dir);
    return pins.size() == 1 && (pins[0].flags & LEASEFS_PIN_REC_CLOSED) != 0;
  }));
  auto list = std::make_unique<leasefs_lease_list>();
  REQUIRE(ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0);
  REQUIRE(list->count == 1);
  CHECK(list->leases[0].state == LEASEFS_STATE_ZOMBIE);
  CHECK(list->leases[0].pins == 1);
  // The peer still reaches the file's blocks, and another process's
  // truncate is refused.
  pin::SoftNicPeer peer = ConnectPeer(dir);
  CHECK(WriteAndWait(peer, rkey, 0, "after close") == "OK");
  std::string want(8 * B, 'a');
  want.replace(0, 11, "after close");
  CHECK(ReadFile(f) == want);
  CHECK(SYS(truncate(f.c_str(), 0)) == "ETXTBSY");
  REQUIRE(leasefs_pin_unregister(dir, &c, id) == 0);
  list = std::make_unique<leasefs_lease_list>();
  REQUIRE(ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0);
  CHECK(list->count == 0);
  CHECK(SYS(truncate(f.c_str(), 0)) == "OK");
  leasefs_pin_context_close(&c);
  close(dir);
}

TEST_CASE("scenario 10 under fence: the break fences the peer at the break time, and the blocks' new owner is never written") {
  if (!CanMountFuse()) return;
  Mounted t("pinned_break=fence");
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(64 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0, rkey = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 64 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, &rkey) == 0);
  leasefs_pin_info info;
  REQUIRE(leasefs_pin_get_info(fd, &info) == 0);
  // A peer that writes without pause, and counts what the soft NIC refused.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ok_writes{0}, refused{0};
  std::thread writer([&] {
    auto peer = pin::SoftNicPeer::Connect(info.softnic_address, info.softnic_port);
    if (!peer.ok()) return;
    const std::string chunk(16 * B, 'X');
    uint64_t n = 0;
    while (!stop.load()) {
      auto done = peer->Write(rkey, (n++ % 4) * 16 * B, chunk.data(), 16 * B);
      if (!done.ok()) break;
      (done->ok() ? ok_writes : refused)++;
      if (!done->ok()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  REQUIRE(Eventually([&] { return ok_writes.load() > 10; }));
  // Another process truncates: the break waits the break time (1 s), then
  // fences and proceeds.
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(SYS(truncate(f.c_str(), 0)) == "OK");
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= std::chrono::milliseconds(900));
  const uint64_t ok_at_fence = ok_writes.load();
  // A new file takes the space and is filled with its own bytes.
  const std::string g = t.m.path("g");
  const std::string mine = Pattern(64 * B, 2);
  REQUIRE(WriteFile(g, mine) == "");
  CHECK(Eventually([&] { return refused.load() > 10; }));
  stop = true;
  writer.join();
  // Nothing landed after the fence: the peer waits for each WRITE, so one
  // done before the fence may be counted after the truncate returned.
  CHECK(ok_writes.load() <= ok_at_fence + 1);
  CHECK(ReadFile(g) == mine);
  uint64_t fenced_id = 0, fenced_rkey = 0;
  CHECK(leasefs_pin_wait_fenced(&c, 2000, &fenced_id, &fenced_rkey) == 0);
  CHECK(fenced_id == id);
  CHECK(fenced_rkey == rkey);
  const auto pins = Pins(fd);
  REQUIRE(pins.size() == 1);
  CHECK((pins[0].flags & LEASEFS_PIN_REC_FENCED) != 0);
  CHECK(GetLease(fd, 0).lease.state == LEASEFS_STATE_REVOKED);
  REQUIRE(leasefs_pin_unregister(fd, &c, 0) == 0);
  CHECK(Pins(fd).empty());
  leasefs_pin_context_close(&c);
  close(fd);
  CHECK(ReadFile(g) == mine);
  CHECK(t.m.Unmount() == 0);
  const ProcessResult fsck = t.m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE("a context's holder killed: its pins go, and the lease can go") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(8 * B, 'a'), 0666) == "");
  CommandedChild holder([&](int sock) {
    const int fd = open(f.c_str(), O_RDWR);
    if (fd < 0 || Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) != 0) return 1;
    leasefs_pin_context c;
    if (leasefs_pin_context_open(fd, &c) != 0) return 1;
    uint64_t id = 0;
    const int rc = leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, nullptr);
    SayLine(sock, Errno(rc));
    std::string line;
    while (ReadLine(sock, &line) && line != "exit") SayLine(sock, "?");
    return 0;
  });
  REQUIRE(holder.Reply(10000) == "OK");
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(Pins(dir).size() == 1);
  CHECK(SYS(truncate(f.c_str(), 0)) == "ETXTBSY");
  holder.Kill();
  CHECK(Eventually([&] { return Pins(dir).empty(); }));
  CHECK(Eventually([&] { return truncate(f.c_str(), 0) == 0; }));
  close(dir);
}

TEST_CASE("another user can neither pin in root's context nor see root's pins; guessing is counted") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(8 * B, 'a'));
  REQUIRE(Lease(fd, 0, 4 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0, rkey = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 4 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, &rkey) == 0);
  const leasefs_pin_context root_ctx = c;
  // EXCLUSIVE leases are for a file's owner.
  const std::string g = t.m.path("g");
  REQUIRE(WriteFile(g, std::string(8 * B, 'b')) == "");
  REQUIRE(chown(g.c_str(), 65534, 65534) == 0);
  CHECK_AS(65534, 65534, {}, [&](ChildChecks& k) {
    const int mine = open(g.c_str(), O_RDWR);
    KTRUE(k, mine >= 0);
    KEQ(k, Errno(Lease(mine, 4 * B, 4 * B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE)),
        "OK");
    // root's context, named with its token: not this user's.
    KEQ(k, Errno(leasefs_pin_register(mine, &root_ctx, 4 * B, B, LEASEFS_PIN_SOFTNIC, kRW,
                                      nullptr, nullptr)),
        "EPERM");
    KEQ(k, Errno(leasefs_pin_unregister(mine, &root_ctx, id)), "EPERM");
    // Its own context works, and it sees only its own pin, with its rkey.
    leasefs_pin_context own;
    KEQ(k, Errno(leasefs_pin_context_open(mine, &own)), "OK");
    uint64_t own_id = 0, own_rkey = 0;
    KEQ(k, Errno(leasefs_pin_register(mine, &own, 4 * B, B, LEASEFS_PIN_SOFTNIC, kRW, &own_id,
                                      &own_rkey)),
        "OK");
    auto page = std::make_unique<leasefs_pin_list>();
    KEQ(k, Errno(leasefs_pin_list_page(mine, 0, page.get())), "OK");
    KEQ(k, std::to_string(page->count), "1");
    KTRUE(k, page->pins[0].pin_id == own_id && page->pins[0].rkey == own_rkey);
    KEQ(k, std::to_string(page->pins[0].uid), "65534");
    KEQ(k, std::to_string(page->contexts), "1");  // its own, not root's too
    // Guessing root's rkey's neighbours over the soft NIC: refused, counted.
    leasefs_pin_info info;
    KEQ(k, Errno(leasefs_pin_get_info(mine, &info)), "OK");
    auto peer = pin::SoftNicPeer::Connect(info.softnic_address, info.softnic_port);
    KTRUE(k, peer.ok());
    if (peer.ok()) {
      for (uint64_t guess = 1; guess <= 8; ++guess) {
        KEQ(k, WriteAndWait(*peer, rkey + guess, 0, "guess"), "remote access error");
      }
    }
    KEQ(k, Errno(leasefs_pin_list_page(mine, 0, page.get())), "OK");
    KEQ(k, std::to_string(page->refused_bad_rkey), "8");
    KEQ(k, Errno(leasefs_pin_unregister(mine, &own, 0)), "OK");
    leasefs_pin_context_close(&own);
    close(mine);
  });
  CHECK(ReadFile(f) == std::string(8 * B, 'a'));
  const auto pins = Pins(fd);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].refused == 0);
  leasefs_pin_context_close(&c);
  close(fd);
}

// A peer thread that writes `fill` over the whole pin without pause until
// told to stop, counting what the soft NIC accepted and refused.
class Sprayer {
 public:
  Sprayer(const leasefs_pin_info& info, uint64_t rkey, uint64_t len, char fill)
      : thread_([this, info, rkey, len, fill] { Run(info, rkey, len, fill); }) {}
  ~Sprayer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t ok() const { return ok_.load(); }
  uint64_t refused() const { return refused_.load(); }

 private:
  void Run(leasefs_pin_info info, uint64_t rkey, uint64_t len, char fill) {
    auto peer = pin::SoftNicPeer::Connect(info.softnic_address, info.softnic_port);
    if (!peer.ok()) return;
    const std::string chunk(16 * B, fill);
    for (uint64_t n = 0; !stop_.load(); ++n) {
      auto done = peer->Write(rkey, (n % (len / (16 * B))) * 16 * B, chunk.data(), 16 * B);
      if (!done.ok()) return;  // the daemon went away
      (done->ok() ? ok_ : refused_)++;
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ok_{0}, refused_{0};
  std::thread thread_;
};

TEST_CASE("data safety under fence: over many rounds, blocks a fenced pin let go are never written in their next file") {
  if (!CanMountFuse()) return;
  Mounted t("pinned_break=fence,lease_break_time=0.2");
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  leasefs_pin_info info;
  REQUIRE(leasefs_pin_get_info(dir, &info) == 0);
  constexpr uint64_t kLen = 64 * B;
  int reused = 0;
  for (int round = 0; round < 12; ++round) {
    CAPTURE(round);
    const std::string f = t.m.path("f" + std::to_string(round));
    const int fd = MakeFile(f, std::string(kLen, 'a'));
    const std::set<uint64_t> old_blocks = PoolBlocks(fd);
    REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
    leasefs_pin_context c;
    REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
    uint64_t rkey = 0;
    REQUIRE(leasefs_pin_register(fd, &c, 0, kLen, LEASEFS_PIN_SOFTNIC, kRW, nullptr, &rkey) == 0);
    Sprayer spray(info, rkey, kLen, 'X');
    REQUIRE(Eventually([&] { return spray.ok() > 0; }));
    CHECK(SYS(truncate(f.c_str(), 0)) == "OK");  // fenced at the break time
    const uint64_t ok_at_fence = spray.ok();
    // Half the rounds let the pin go before the next file is written, so
    // that it may take the blocks; the others write it while the fenced
    // pin still quarantines them.
    if (round % 2 == 0) REQUIRE(leasefs_pin_unregister(dir, &c, 0) == 0);
    const std::string g = t.m.path("g" + std::to_string(round));
    const std::string mine = Pattern(kLen, 100 + round);
    REQUIRE(WriteFile(g, mine) == "");
    const int gfd = open(g.c_str(), O_RDONLY);
    REQUIRE(gfd >= 0);
    for (uint64_t b : PoolBlocks(gfd)) reused += old_blocks.count(b) ? 1 : 0;
    CHECK(Eventually([&] { return spray.refused() > 20; }));
    spray.Stop();
    // The peer waits for each WRITE's completion: one done before the
    // fence may be counted after the truncate returned, no more.
    CHECK(spray.ok() <= ok_at_fence + 1);
    CHECK(Fnv1a(ReadFile(g)) == Fnv1a(mine));
    close(gfd);
    REQUIRE(unlink(g.c_str()) == 0);
    leasefs_pin_context_close(&c);
    close(fd);
    REQUIRE(unlink(f.c_str()) == 0);
  }
  CHECK(reused > 0);  // the freed blocks did go to the next files
  close(dir);
  CHECK(t.m.Unmount() == 0);
  const ProcessResult fsck = t.m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE("data safety under fence with the daemon SIGKILLed mid-break: fsck is clean, nothing stays quarantined") {
  if (!CanMountFuse()) return;
  Mounted t("pinned_break=fence,lease_break_time=0.3");
  constexpr uint64_t kLen = 64 * B;
  for (int round = 0; round < 4; ++round) {
    CAPTURE(round);
    const std::string f = t.m.path("f");
    const int fd = MakeFile(f, std::string(kLen, 'a'));
    REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
    leasefs_pin_context c;
    REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
    uint64_t rkey = 0;
    REQUIRE(leasefs_pin_register(fd, &c, 0, kLen, LEASEFS_PIN_SOFTNIC, kRW, nullptr, &rkey) == 0);
    leasefs_pin_info info;
    REQUIRE(leasefs_pin_get_info(fd, &info) == 0);
    Sprayer spray(info, rkey, kLen, 'X');
    REQUIRE(Eventually([&] { return spray.ok() > 0; }));
    // A truncate from a child, which the kill interrupts at a different
    // point of the break each round (before, during, after the fence).
    const pid_t breaker = fork();
    REQUIRE(breaker >= 0);
    if (breaker == 0) _exit(truncate(f.c_str(), 0) == 0 ? 0 : 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * round + 50));
    t.m.Kill();
    int status = 0;
    REQUIRE(waitpid(breaker, &status, 0) == breaker);
    spray.Stop();
    leasefs_pin_context_close(&c);
    close(fd);
    const ProcessResult fsck = t.m.Fsck();
    CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
    std::string log;
    REQUIRE_MESSAGE(t.m.Mount(&log), log);
    // The dead daemon's records went with it: nothing is quarantined.
    const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir >= 0);
    leasefs_dax_list l{};
    REQUIRE(ioctl(dir, LEASEFS_IOC_DAX_LIST, &l) == 0);
    CHECK(l.records_total == 0);
    CHECK(l.quarantined_total == 0);
    CHECK(Pins(dir).empty());
    // The file is whole (the truncate did not happen) or empty (it did),
    // and a new file's bytes are its own.
    const std::string now = ReadFile(f);
    CHECK((now.empty() || now.size() == kLen));
    const std::string mine = Pattern(kLen, 7 + round);
    REQUIRE(WriteFile(t.m.path("g"), mine) == "");
    CHECK(Fnv1a(ReadFile(t.m.path("g"))) == Fnv1a(mine));
    REQUIRE(unlink(f.c_str()) == 0);
    close(dir);
  }
  CHECK(t.m.Unmount() == 0);
  const ProcessResult fsck = t.m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE("a declared pin: records of the daemon and the caller keep the blocks; DAX_UNMAP does not drop them; a fence quarantines them") {
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
  REQUIRE(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_DECLARED, 0, &id, nullptr) == 0);
  leasefs_dax_list l;
  // The file's 8 blocks are contiguous: one record each for the daemon (the
  // pin's life) and the caller (a daemon crash).
  CHECK(RecordOwners(fd, &l) == std::multiset<pid_t>{t.m.daemon_pid(), getpid()});
  CHECK((l.records[0].flags & LEASEFS_DAX_REC_WRITE) != 0);
  // The caller's "I dropped all my mappings" is about its mappings, not its
  // pins.
  struct leasefs_dax_unmap u{};
  CHECK(SYS(ioctl(fd, LEASEFS_IOC_DAX_UNMAP, &u)) == "ENOENT");
  CHECK(RecordOwners(fd, &l).size() == 2);
  // A declared engine cannot be fenced: the truncate proceeds at the break
  // time and the blocks stay out of every file until the pin goes.
  CHECK(SYS(truncate(f.c_str(), 0)) == "OK");
  const auto pins = Pins(fd);
  REQUIRE(pins.size() == 1);
  CHECK((pins[0].flags & LEASEFS_PIN_REC_FENCED) != 0);
  REQUIRE(ioctl(fd, LEASEFS_IOC_DAX_LIST, &l) == 0);
  CHECK(l.quarantined_total == 8 * B);
  REQUIRE(WriteFile(t.m.path("g"), std::string(64 * B, 'g')) == "");
  const int g = open(t.m.path("g").c_str(), O_RDONLY);
  for (uint64_t b : PoolBlocks(g)) CHECK(blocks.count(b) == 0);
  close(g);
  REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
  CHECK(RecordOwners(fd, &l).empty());
  CHECK(l.quarantined_total == 0);
  leasefs_pin_context_close(&c);
  close(fd);
}

TEST_CASE("a declared pin made by a child that exits keeps its blocks while its context lives on") {
  if (!CanMountFuse()) return;
  Mounted t("pinned_break=fence");
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(8 * B, 'a')) == "");
  const int probe = open(f.c_str(), O_RDONLY);
  const std::set<uint64_t> blocks = PoolBlocks(probe);
  close(probe);
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(dir, &c) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // pins with the inherited context under its own lease, and exits
    const int fd = open(f.c_str(), O_RDWR);
    if (fd < 0 || Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) != 0) _exit(1);
    _exit(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_DECLARED, 0, nullptr, nullptr) == 0
              ? 0
              : 2);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(Pins(dir).size() == 1);
  // The child's records went with it; the daemon's stay with the pin.
  leasefs_dax_list l;
  CHECK(Eventually([&] {
    return RecordOwners(dir, &l) == std::multiset<pid_t>{t.m.daemon_pid()};
  }));
  CHECK(SYS(truncate(f.c_str(), 0)) == "OK");  // fenced at once: a zombie lease
  REQUIRE(WriteFile(t.m.path("g"), std::string(64 * B, 'g')) == "");
  const int g = open(t.m.path("g").c_str(), O_RDONLY);
  for (uint64_t b : PoolBlocks(g)) CHECK(blocks.count(b) == 0);
  close(g);
  leasefs_pin_context_close(&c);
  CHECK(Eventually([&] { return Pins(dir).empty() && RecordOwners(dir, &l).empty(); }));
  close(dir);
}

TEST_CASE("a refused PIN changes no layout: holes under a READ or plain WRITE lease, and under an EXCLUSIVE one") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, "");
  REQUIRE(ftruncate(fd, 256 * B) == 0);  // all hole
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  auto blocks_now = [&] {
    struct stat st{};
    REQUIRE(fstat(fd, &st) == 0);
    return st.st_blocks;
  };
  auto pin = [&] {
    return Errno(leasefs_pin_register(fd, &c, 0, 256 * B, LEASEFS_PIN_SOFTNIC, kRW, nullptr,
                                      nullptr));
  };
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_READ) == 0);
  CHECK(pin() == "EPERM");
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE) == 0);
  CHECK(pin() == "EPERM");
  CHECK(blocks_now() == 0);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  // The holder of an EXCLUSIVE lease may not change its own layout, and
  // filling the holes would.
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  CHECK(pin() == "EDEADLK");
  CHECK(blocks_now() == 0);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK) == 0);
  // Under WRITE|UNBREAKABLE the daemon fills them, and the peer's bytes land.
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_UNBREAKABLE) == 0);
  uint64_t id = 0, rkey = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 256 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, &rkey) == 0);
  CHECK(blocks_now() == static_cast<blkcnt_t>(256 * B / 512));
  pin::SoftNicPeer peer = ConnectPeer(fd);
  CHECK(WriteAndWait(peer, rkey, 100 * B, "peer") == "OK");
  CHECK(PreadAll(fd, 4, 100 * B) == "peer");
  REQUIRE(leasefs_pin_unregister(fd, &c, id) == 0);
  leasefs_pin_context_close(&c);
  close(fd);
}

TEST_CASE("malformed pin ioctls from another user, racing a holder's changes: errors only, the daemon lives") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(64 * B, 'a')) == "");
  REQUIRE(chown(f.c_str(), 65534, 65534) == 0);
  CHECK_AS(65534, 65534, {}, [&](ChildChecks& k) {
    const int fd = open(f.c_str(), O_RDWR);
    KTRUE(k, fd >= 0);
    leasefs_pin_context c;
    KEQ(k, Errno(leasefs_pin_context_open(fd, &c)), "OK");
    // Random bytes through every pin command, at their own sizes and at
    // sizes of the caller's making.
    std::mt19937_64 rng(42);
    const unsigned cmds[] = {LEASEFS_IOC_PIN, LEASEFS_IOC_UNPIN, LEASEFS_IOC_PIN_LIST,
                             LEASEFS_IOC_PIN_INFO};
    std::vector<unsigned char> buf(16384);
    int refused = 0, info_ok = 0;
    for (int i = 0; i < 2000; ++i) {
      for (auto& byte : buf) byte = static_cast<unsigned char>(rng());
      unsigned cmd = cmds[i % 4];
      if (i % 3 == 0) {  // another size in the same command number
        const unsigned size = static_cast<unsigned>(rng() % 16000);
        cmd = (cmd & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT)) | (size << _IOC_SIZESHIFT);
      }
      const int rc = ioctl(fd, cmd, buf.data());
      // Random contexts, tokens and reserved fields: none may succeed; the
      // info query (no input) does at its own size.
      if (i % 4 != 3) refused += rc != 0;
      if (i % 4 == 3 && i % 3 != 0) info_ok += rc == 0;
    }
    KEQ(k, std::to_string(refused), "1500");
    KEQ(k, std::to_string(info_ok), "333");
    // A racing thread takes and releases the lease, pins, unpins and
    // truncates while this one pins and unpins with made-up ids.
    std::atomic<bool> stop{false};
    std::thread racer([&] {
      for (int i = 0; !stop.load(); ++i) {
        (void)Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE);
        uint64_t id = 0;
        (void)leasefs_pin_register(fd, &c, (i % 8) * B, 8 * B, LEASEFS_PIN_SOFTNIC, kRW, &id,
                                   nullptr);
        if (i % 3 == 0) (void)leasefs_pin_unregister(fd, &c, 0);
        (void)Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK);
        if (i % 5 == 0) (void)ftruncate(fd, 64 * B);
      }
    });
    for (int i = 0; i < 400; ++i) {
      uint64_t id = 0;
      (void)leasefs_pin_register(fd, &c, (i % 16) * B, 4 * B, LEASEFS_PIN_SOFTNIC, kRW, &id,
                                 nullptr);
      (void)leasefs_pin_unregister(fd, &c, static_cast<uint64_t>(rng() % 8));
      if (i % 7 == 0) (void)leasefs_pin_unregister(fd, &c, 0);
    }
    stop = true;
    racer.join();
    (void)leasefs_pin_unregister(fd, &c, 0);
    const int unlocked = Lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK);
    KTRUE(k, unlocked == 0 || unlocked == -ENOENT);  // the racer may have let it go
    leasefs_pin_context_close(&c);
    close(fd);
  });
  CHECK(kill(t.m.daemon_pid(), 0) == 0);
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  CHECK(Eventually([&] { return Pins(dir).empty(); }));
  auto list = std::make_unique<leasefs_lease_list>();
  CHECK(Eventually([&] {
    return ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0 && list->count == 0;
  }));
  leasefs_dax_list l{};
  CHECK(Eventually([&] { return ioctl(dir, LEASEFS_IOC_DAX_LIST, &l) == 0 && l.records_total == 0; }));
  close(dir);
  CHECK(t.m.Unmount() == 0);
  const ProcessResult fsck = t.m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

// The seed message's sequence (../shared/context/000_59c267f28f7d50ae.txt):
// open, lease, mmap, register, munmap, close; then another process
// truncates. Its outcome under each pinned_break policy.
struct SeedRun {
  std::string truncate_result;  // the other process's truncate
  std::chrono::milliseconds waited{0};
  bool fenced = false;  // the context got a FENCED notice
};

SeedRun RunSeedSequence(TestMount& m, bool unpin_after_500ms) {
  const std::string f = m.path("seed");
  REQUIRE(WriteFile(f, std::string(16 * B, 's'), 0666) == "");
  int fd = open(f.c_str(), O_RDWR);  // open
  REQUIRE(fd >= 0);
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);  // lease
  leasefs_dax_mapping map{};
  REQUIRE(leasefs_dax_map(fd, 0, 16 * B, PROT_READ | PROT_WRITE, MAP_SHARED, nullptr, &map) ==
          0);  // mmap
  std::memcpy(map.addr, "stored", 6);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t id = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 16 * B, LEASEFS_PIN_SOFTNIC, kRW, &id, nullptr) ==
          0);  // register
  REQUIRE(leasefs_dax_unmap(fd, &map, 0) == 0);  // munmap
  REQUIRE(close(fd) == 0);                        // close
  const int dir = open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  std::thread unpinner;
  if (unpin_after_500ms) {
    unpinner = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      (void)leasefs_pin_unregister(dir, &c, id);
    });
  }
  SeedRun run;
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t other = fork();  // another process truncates
  REQUIRE(other >= 0);
  if (other == 0) _exit(truncate(f.c_str(), 0) == 0 ? 0 : errno);
  int status = 0;
  REQUIRE(waitpid(other, &status, 0) == other);
  run.waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);
  run.truncate_result = WIFEXITED(status) ? Errno(WEXITSTATUS(status)) : "signaled";
  if (unpinner.joinable()) unpinner.join();
  run.fenced = leasefs_pin_wait_fenced(&c, 0, nullptr, nullptr) == 0;
  (void)leasefs_pin_unregister(dir, &c, 0);
  leasefs_pin_context_close(&c);
  close(dir);
  return run;
}

TEST_CASE("the seed message's sequence under each pinned_break policy") {
  if (!CanMountFuse()) return;
  SUBCASE("refuse: ETXTBSY at once, the data stays") {
    Mounted t("pinned_break=refuse");
    const SeedRun run = RunSeedSequence(t.m, false);
    CHECK(run.truncate_result == "ETXTBSY");
    CHECK(run.waited < std::chrono::milliseconds(900));
    CHECK_FALSE(run.fenced);
    CHECK(ReadFile(t.m.path("seed")).substr(0, 7) == "storeds");
  }
  SUBCASE("fence: the closed file's lease has nobody to recall: fenced at once, the truncate proceeds") {
    Mounted t("pinned_break=fence");
    const SeedRun run = RunSeedSequence(t.m, false);
    CHECK(run.truncate_result == "OK");
    CHECK(run.waited < std::chrono::milliseconds(900));
    CHECK(run.fenced);
    CHECK(ReadFile(t.m.path("seed")).empty());
  }
  SUBCASE("wait: the truncate waits past the break time until the pin goes") {
    Mounted t("pinned_break=wait");
    const SeedRun run = RunSeedSequence(t.m, true);
    CHECK(run.truncate_result == "OK");
    CHECK(run.waited >= std::chrono::milliseconds(450));
    CHECK_FALSE(run.fenced);
    CHECK(ReadFile(t.m.path("seed")).empty());
  }
}

TEST_CASE("a lease left ZOMBIE by its taker's death is nobody's: a fork sharing the open file gets EPERM for DAX_MAP and PIN") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  REQUIRE(WriteFile(f, std::string(8 * B, 'a')) == "");
  const int dir = open(t.m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  // The taker: leases, pins, forks a child that keeps the open file and the
  // context, and dies.
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  const pid_t taker = fork();
  REQUIRE(taker >= 0);
  if (taker == 0) {
    close(sv[0]);
    const int fd = open(f.c_str(), O_RDWR);
    leasefs_pin_context c;
    if (fd < 0 || Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) != 0 ||
        leasefs_pin_context_open(fd, &c) != 0 ||
        leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_SOFTNIC, kRW, nullptr, nullptr) != 0) {
      _exit(1);
    }
    if (fork() == 0) {  // the fork: waits for the test's word, then tries
      char go;
      if (read(sv[1], &go, 1) != 1) _exit(3);
      leasefs_dax_mapping m{};
      const int map = leasefs_dax_map(fd, 0, 8 * B, PROT_READ, MAP_SHARED, nullptr, &m);
      const int pin = leasefs_pin_register(fd, &c, 0, B, LEASEFS_PIN_SOFTNIC, kRW, nullptr,
                                           nullptr);
      const std::string answer = Errno(map) + " " + Errno(pin) + "\n";
      (void)!write(sv[1], answer.data(), answer.size());
      _exit(0);
    }
    _exit(0);
  }
  close(sv[1]);
  int status = 0;
  REQUIRE(waitpid(taker, &status, 0) == taker);
  REQUIRE(WEXITSTATUS(status) == 0);
  auto list = std::make_unique<leasefs_lease_list>();
  CHECK(Eventually([&] {
    return ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0 && list->count == 1 &&
           list->leases[0].state == LEASEFS_STATE_ZOMBIE;
  }));
  REQUIRE(write(sv[0], "g", 1) == 1);
  char buf[64] = {};
  size_t got = 0;
  while (got < sizeof(buf) - 1) {
    const ssize_t n = read(sv[0], buf + got, sizeof(buf) - 1 - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
    if (buf[got - 1] == '\n') break;
  }
  CHECK(std::string(buf) == "EPERM EPERM\n");
  close(sv[0]);
  CHECK(Eventually([&] { return Pins(dir).empty(); }));  // the fork's exit ends the context
  close(dir);
}

// Sends `bytes` on a fresh TCP connection to the daemon's soft NIC and
// reads until the daemon closes it (true) or 3 s pass (false).
bool SendRawAndSeeClosed(const leasefs_pin_info& info, const std::string& bytes) {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(info.softnic_port);
  inet_pton(AF_INET, info.softnic_address, &a.sin_addr);
  if (connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
    close(s);
    return false;
  }
  (void)!send(s, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  bool closed = false;
  char buf[4096];
  for (const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
       std::chrono::steady_clock::now() < end;) {
    pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = recv(s, buf, sizeof(buf), 0);
    if (n <= 0) {
      closed = true;
      break;
    }
  }
  close(s);
  return closed;
}

TEST_CASE("malformed soft NIC frames from another user: each connection closed and counted, the pins untouched, the daemon alive") {
  if (!CanMountFuse()) return;
  Mounted t;
  const std::string f = t.m.path("f");
  const int fd = MakeFile(f, std::string(8 * B, 'a'));
  REQUIRE(Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE) == 0);
  leasefs_pin_context c;
  REQUIRE(leasefs_pin_context_open(fd, &c) == 0);
  uint64_t rkey = 0;
  REQUIRE(leasefs_pin_register(fd, &c, 0, 8 * B, LEASEFS_PIN_SOFTNIC, kRW, nullptr, &rkey) == 0);
  leasefs_pin_info info;
  REQUIRE(leasefs_pin_get_info(fd, &info) == 0);
  CHECK_AS(65534, 65534, {}, [&](ChildChecks& k) {
    pin::wire::Hello hello{pin::wire::kMagic, pin::wire::kVersion, 0, 1u << 20, 0, 0};
    const std::string good_hello(reinterpret_cast<const char*>(&hello), sizeof(hello));
    pin::wire::Hello bad = hello;
    bad.magic ^= 1;
    pin::wire::Request huge{pin::wire::kOpWrite, 0, 0, 0xffffffffu, rkey, 0, 1};
    pin::wire::Request unknown{9, 0, 0, 16, rkey, 0, 2};
    pin::wire::Request flags{pin::wire::kOpWrite, 0x80, 0, 16, rkey, 0, 3};
    auto raw = [](const auto& v) { return std::string(reinterpret_cast<const char*>(&v), sizeof(v)); };
    std::mt19937 g(7);
    std::string noise(4096, '\0');
    for (auto& ch : noise) ch = static_cast<char>(g());
    const std::string cases[] = {
        raw(bad),                      // not our hello
        noise,                         // noise
        good_hello + raw(huge),        // a WRITE over the announced maximum
        good_hello + raw(unknown),     // an op that does not exist
        good_hello + raw(flags),       // flags that do not exist
    };
    int closed = 0;
    for (const std::string& bytes : cases) closed += SendRawAndSeeClosed(info, bytes);
    KEQ(k, std::to_string(closed), "5");
  });
  leasefs_pin_list head{};
  const auto pins = Pins(fd, &head);
  CHECK(head.malformed_frames == 5);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].ops == 0);
  CHECK(ReadFile(f) == std::string(8 * B, 'a'));
  // A well-behaved peer still gets through.
  pin::SoftNicPeer peer = ConnectPeer(fd);
  CHECK(WriteAndWait(peer, rkey, 0, "fine") == "OK");
  CHECK(kill(t.m.daemon_pid(), 0) == 0);
  leasefs_pin_context_close(&c);
  close(fd);
}

}  // namespace
}  // namespace leasefs::testing
