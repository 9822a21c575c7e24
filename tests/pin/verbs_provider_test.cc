// The verbs pin provider (pin/verbs_provider.h) with no device and no mount:
// the access flags it asks for, every argument check (none reaches the
// device), when it takes ODP, that an MR never outlives a refused pin
// (a file that is not on leasefs refuses PIN with ENOTTY), the order and
// errors of Deregister, and that fence notices and a broken context leave ODP
// MRs to the kernel. A fake VerbsOps stands in for libibverbs; the fence path
// against a real daemon is tests/fuse/verbs_pins_test.cc.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "leasefs/ioctl.h"
#include "pin/verbs_provider.h"
#include "tests/pin/fake_verbs.h"

namespace leasefs::pin {
namespace {

constexpr uint32_t kW = LEASEFS_PIN_REMOTE_WRITE;
constexpr uint32_t kR = LEASEFS_PIN_REMOTE_READ;
constexpr uint64_t kPage = 4096;

std::string Err(const Status& s) { return s.ok() ? "OK" : std::strerror(s.err()); }

// A provider over a fake device, a context that is one end of a socketpair
// (the test writes the daemon's frames into the other), a data file and a
// "mount" in /tmp: PIN and UNPIN there give ENOTTY.
struct Fixture {
  Fixture() {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    ctx.fd = sv[0];
    ctx.id = 1;
    daemon_end.reset(sv[1]);
    char path[] = "/tmp/verbs_provider_testXXXXXX";
    file.reset(mkstemp(path));
    REQUIRE(file.valid());
    unlink(path);
    dir.reset(open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(dir.valid());
    mem = std::make_unique<char[]>(8 * kPage + kPage);
    addr = reinterpret_cast<void*>(
        (reinterpret_cast<uintptr_t>(mem.get()) + kPage - 1) / kPage * kPage);
  }
  ~Fixture() {
    provider.reset();
    if (ctx.fd >= 0) close(ctx.fd);
  }
  void Start() {
    VerbsProvider::Options o;
    o.ops = &verbs;
    o.on_fenced = [this](const FenceEvent& ev) {
      MutexLock l(&mu);
      events.push_back(ev.status.err());
    };
    auto p = VerbsProvider::Create(&pd, ctx, dir.get(), std::move(o));
    REQUIRE_MESSAGE(p.ok(), p.status().ToString());
    provider = std::move(*p);
  }
  VerbsProvider::Range Range(uint32_t remote = kW | kR,
                             VerbsProvider::Odp odp = VerbsProvider::Odp::kOff) {
    VerbsProvider::Range r;
    r.fd = file.get();
    r.offset = 0;
    r.length = 8 * kPage;
    r.addr = addr;
    r.remote = remote;
    r.odp = odp;
    return r;
  }
  // Writes one daemon frame of `type` naming `id` into the context.
  void SendFrame(uint16_t type, uint64_t id) {
    leasefs_pin_frame f{};
    f.magic = LEASEFS_PIN_FRAME_MAGIC;
    f.version = LEASEFS_PIN_FRAME_VERSION;
    f.type = type;
    f.id = id;
    REQUIRE(send(daemon_end.get(), &f, sizeof(f), MSG_NOSIGNAL) == sizeof(f));
  }
  ibv_pd pd{};
  FakeVerbs verbs;
  leasefs_pin_context ctx{};
  UniqueFd daemon_end, file, dir;
  std::unique_ptr<char[]> mem;
  void* addr = nullptr;
  std::unique_ptr<VerbsProvider> provider;
  Mutex mu;
  std::vector<int> events GUARDED_BY(mu);
};

TEST_SUITE("pin") {

TEST_CASE("VerbsAccess: local write always, remote access as asked, ON_DEMAND for ODP") {
  CHECK(VerbsAccess(kW, false) == (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE));
  CHECK(VerbsAccess(kR, false) == (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ));
  CHECK(VerbsAccess(kW | kR, false) ==
        (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ));
  CHECK(VerbsAccess(kW | kR, true) == (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                       IBV_ACCESS_REMOTE_READ | IBV_ACCESS_ON_DEMAND));
  CHECK(VerbsAccess(0, false) == -1);
  CHECK(VerbsAccess(0x4, false) == -1);
  CHECK(VerbsAccess(kW | 0x10, true) == -1);
}

TEST_CASE("VerbsProvider: Create needs a PD, a context and a descriptor of the mount") {
  Fixture fx;
  VerbsProvider::Options o;
  o.ops = &fx.verbs;
  CHECK(VerbsProvider::Create(nullptr, fx.ctx, fx.dir.get(), o).status().err() == EINVAL);
  leasefs_pin_context closed = fx.ctx;
  closed.fd = -1;
  CHECK(VerbsProvider::Create(&fx.pd, closed, fx.dir.get(), o).status().err() == EINVAL);
  CHECK(VerbsProvider::Create(&fx.pd, fx.ctx, -1, o).status().err() == EINVAL);
  closed.fd = 999999;  // not open
  CHECK(VerbsProvider::Create(&fx.pd, closed, fx.dir.get(), o).status().err() == EBADF);
}

TEST_CASE("VerbsProvider: every argument is checked before the device is asked") {
  Fixture fx;
  fx.Start();
  auto reg = [&](VerbsProvider::Range r) { return Err(fx.provider->Register(r).status()); };
  VerbsProvider::Range r = fx.Range();
  r.fd = -1;
  CHECK(reg(r) == "Invalid argument");
  r = fx.Range();
  r.addr = nullptr;
  CHECK(reg(r) == "Invalid argument");
  r.addr = static_cast<char*>(fx.addr) + 8;  // not page-aligned
  CHECK(reg(r) == "Invalid argument");
  r = fx.Range();
  r.offset = 512;
  CHECK(reg(r) == "Invalid argument");
  r = fx.Range();
  r.length = 0;
  CHECK(reg(r) == "Invalid argument");
  r.length = kPage + 1;
  CHECK(reg(r) == "Invalid argument");
  r.length = LEASEFS_PIN_MAX_BYTES + kPage;
  CHECK(reg(r) == "Invalid argument");
  CHECK(reg(fx.Range(0)) == "Invalid argument");
  CHECK(reg(fx.Range(0x8)) == "Invalid argument");
  CHECK(fx.verbs.Calls().empty());
}

TEST_CASE("VerbsProvider: a refused PIN deregisters the MR; a failed ibv_reg_mr makes no pin") {
  Fixture fx;
  fx.Start();
  // /tmp is no leasefs: PIN is ENOTTY, after the MR was made.
  CHECK(Err(fx.provider->Register(fx.Range(kW)).status()) == "Inappropriate ioctl for device");
  CHECK(fx.verbs.Calls() == std::vector<std::string>{"reg 8 pages access 0x3", "dereg 1"});
  CHECK(fx.verbs.Live() == 0);
  fx.verbs.FailNextReg(ENOMEM);
  CHECK(Err(fx.provider->Register(fx.Range()).status()) == "Cannot allocate memory");
  CHECK(fx.verbs.Calls().size() == 3);  // the failed reg only: no dereg, no pin
  CHECK(fx.verbs.Live() == 0);
}

TEST_CASE("VerbsProvider: ODP where the device offers it for the access asked, and no pin") {
  Fixture fx;
  fx.Start();
  SUBCASE("offered for RC write and read: an ODP MR, no pin (PIN would be ENOTTY here)") {
    fx.verbs.SetOdp(OdpCaps{true, true, true});
    auto got = fx.provider->Register(fx.Range(kW | kR, VerbsProvider::Odp::kPrefer));
    REQUIRE_MESSAGE(got.ok(), got.status().ToString());
    CHECK(got->on_demand);
    CHECK(got->pin_id == 0);
    CHECK(got->lkey == 1);
    CHECK(got->rkey == 101);
    CHECK(fx.verbs.Calls() == std::vector<std::string>{"reg 8 pages access 0x47"});
    // No UNPIN either (it would be ENOTTY): ibv_dereg_mr alone.
    CHECK(fx.provider->Deregister(got->id).ok());
    CHECK(fx.verbs.Live() == 0);
    CHECK(Err(fx.provider->Deregister(got->id)) == "No such file or directory");
    CHECK(Err(fx.provider->Find(got->id).status()) == "No such file or directory");
  }
  SUBCASE("offered for RC write only, asked write and read: a pinned MR") {
    fx.verbs.SetOdp(OdpCaps{true, true, false});
    CHECK(Err(fx.provider->Register(fx.Range(kW | kR, VerbsProvider::Odp::kPrefer)).status()) ==
          "Inappropriate ioctl for device");
    CHECK(fx.verbs.Calls().front() == "reg 8 pages access 0x7");
    CHECK(Err(fx.provider->Register(fx.Range(kW | kR, VerbsProvider::Odp::kRequire)).status()) ==
          "Operation not supported");
    CHECK(fx.verbs.Calls().size() == 2);  // the first reg and its dereg only
    auto w = fx.provider->Register(fx.Range(kW, VerbsProvider::Odp::kRequire));
    REQUIRE(w.ok());
    CHECK(w->on_demand);
  }
  SUBCASE("no ODP support bit: none, whatever the transport bits say") {
    fx.verbs.SetOdp(OdpCaps{false, true, true});
    CHECK(Err(fx.provider->Register(fx.Range(kW, VerbsProvider::Odp::kRequire)).status()) ==
          "Operation not supported");
    CHECK(fx.verbs.Calls().empty());
  }
  SUBCASE("kOff never asks the device") {
    fx.verbs.SetOdp(OdpCaps{true, true, true});
    CHECK(Err(fx.provider->Register(fx.Range()).status()) == "Inappropriate ioctl for device");
    CHECK(fx.verbs.OdpQueries() == 0);
  }
}

TEST_CASE("VerbsProvider: an MR that will not deregister stays registered; asking again ends it") {
  Fixture fx;
  fx.Start();
  fx.verbs.SetOdp(OdpCaps{true, true, true});
  auto got = fx.provider->Register(fx.Range(kR, VerbsProvider::Odp::kRequire));
  REQUIRE(got.ok());
  fx.verbs.FailNextDereg(EBUSY);
  CHECK(Err(fx.provider->Deregister(got->id)) == "Device or resource busy");
  CHECK(fx.provider->Find(got->id).ok());
  CHECK(fx.verbs.Live() == 1);
  CHECK(fx.provider->Deregister(got->id).ok());
  CHECK(fx.verbs.Live() == 0);
}

TEST_CASE("VerbsProvider: fence notices and a broken context leave ODP MRs to the kernel") {
  Fixture fx;
  fx.Start();
  fx.verbs.SetOdp(OdpCaps{true, true, true});
  auto got = fx.provider->Register(fx.Range(kW, VerbsProvider::Odp::kRequire));
  REQUIRE(got.ok());
  fx.SendFrame(LEASEFS_PIN_FRAME_FENCED, 7);  // a pin that is not ours
  fx.SendFrame(99, 0);                        // a later version's notice
  fx.daemon_end.reset();                      // then the daemon goes
  // The thread reads all three and stops; nothing happened to the MR.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(fx.verbs.Live() == 1);
  {
    MutexLock l(&fx.mu);
    CHECK(fx.events.empty());
  }
  auto still = fx.provider->Find(got->id);
  REQUIRE(still.ok());
  CHECK_FALSE(still->fenced);
  fx.provider.reset();  // the destructor ends what is left
  CHECK(fx.verbs.Live() == 0);
  CHECK(fx.verbs.Calls().back() == "dereg 1");
}

TEST_CASE("VerbsProvider: its own duplicate of the context: the caller may close its descriptor") {
  Fixture fx;
  fx.Start();
  close(fx.ctx.fd);
  fx.ctx.fd = -1;
  // The provider's duplicate keeps the socket open: the daemon's end sees no
  // end-of-file (the context, and with it every pin, lives on).
  char c;
  CHECK(recv(fx.daemon_end.get(), &c, 1, MSG_DONTWAIT) == -1);
  CHECK(errno == EAGAIN);
  fx.provider.reset();
  CHECK(recv(fx.daemon_end.get(), &c, 1, MSG_DONTWAIT) == 0);  // now it ends
}

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::pin
