// The verbs pin provider (pin/verbs_provider.h) on a real RDMA device, over a
// leasefs DAX mapping: a pinned registration shows as a VERBS pin, a fence
// (pinned_break=fence, a truncate by another open file) deregisters the MR and
// unpins it, and where the device offers ODP an ODP registration makes no pin.
//
// Needs a device libibverbs can open: with none (most machines, CI) it prints
// "skipped: no RDMA device" and exits 77, which meson counts as skipped; it
// also needs FUSE and root ("skipped: cannot mount FUSE").
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "lease/client/leasefs_dax.h"
#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "pin/verbs_provider.h"
#include "tests/support/mount.h"

namespace leasefs::pin {
namespace {

constexpr uint64_t B = 4096;

// The first device libibverbs lists, opened, with a PD.
struct Device {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  std::string name;
  ~Device() {
    if (pd != nullptr) ibv_dealloc_pd(pd);
    if (ctx != nullptr) ibv_close_device(ctx);
  }
};
Device* g_device = nullptr;

std::vector<leasefs_pin_record> Pins(int fd) {
  auto page = std::make_unique<leasefs_pin_list>();
  REQUIRE(leasefs_pin_list_page(fd, 0, page.get()) == 0);
  return {page->pins, page->pins + page->count};
}

bool Eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 500 && !pred(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// A mount under pinned_break=fence with a file of 16 written blocks, leased
// EXCLUSIVE and mapped for writing through DAX.
struct Mapped {
  Mapped() : m([] {
      testing::MountOptions o;
      o.options = "lease_break_time=1,pinned_break=fence";
      return o;
    }()) {
    path = m.path("f");
    fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    const std::string data(16 * B, 'v');
    REQUIRE(pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    REQUIRE(leasefs_set_lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE, 0, 0,
                              nullptr) == 0);
    REQUIRE(leasefs_dax_map(fd, 0, 16 * B, PROT_READ | PROT_WRITE, MAP_SHARED, nullptr, &map) ==
            0);
    dir = open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir >= 0);
    REQUIRE(leasefs_pin_context_open(fd, &ctx) == 0);
  }
  ~Mapped() {
    leasefs_pin_context_close(&ctx);
    (void)leasefs_dax_unmap(fd, &map, 0);
    close(dir);
    close(fd);
  }
  testing::TestMount m;
  std::string path;
  int fd = -1, dir = -1;
  leasefs_dax_mapping map{};
  leasefs_pin_context ctx{};
};

TEST_CASE("verbs device: a pinned MR is a VERBS pin; a fence deregisters it, then unpins") {
  Mapped t;
  std::atomic<int> fenced{0}, fence_err{-1};
  VerbsProvider::Options o;
  o.on_fenced = [&](const FenceEvent& ev) {
    fence_err = ev.status.err();
    ++fenced;
  };
  auto p = VerbsProvider::Create(g_device->pd, t.ctx, t.dir, o);
  REQUIRE_MESSAGE(p.ok(), p.status().ToString());
  VerbsProvider::Range r;
  r.fd = t.fd;
  r.length = 16 * B;
  r.addr = t.map.addr;
  auto reg = (*p)->Register(r);
  REQUIRE_MESSAGE(reg.ok(), reg.status().ToString());
  CHECK_FALSE(reg->on_demand);
  const auto pins = Pins(t.dir);
  REQUIRE(pins.size() == 1);
  CHECK(pins[0].pin_id == reg->pin_id);
  CHECK(pins[0].provider == LEASEFS_PIN_VERBS);
  CHECK(pins[0].flags == (LEASEFS_PIN_REC_WRITE | LEASEFS_PIN_REC_READ));
  // Another open file's truncate: recalled, fenced at the break time.
  CHECK(truncate(t.path.c_str(), 0) == 0);
  CHECK(Eventually([&] { return fenced.load() == 1; }));
  CHECK(fence_err.load() == 0);
  CHECK(Eventually([&] { return Pins(t.dir).empty(); }));
  auto after = (*p)->Find(reg->id);
  REQUIRE(after.ok());
  CHECK(after->fenced);
  CHECK((*p)->Deregister(reg->id).ok());
}

TEST_CASE("verbs device: ODP where the device offers it: no pin") {
  ibv_device_attr_ex attr{};
  REQUIRE(ibv_query_device_ex(g_device->ctx, nullptr, &attr) == 0);
  const uint32_t rc = attr.odp_caps.per_transport_caps.rc_odp_caps;
  const bool odp = (attr.odp_caps.general_caps & IBV_ODP_SUPPORT) != 0 &&
                   (rc & IBV_ODP_SUPPORT_WRITE) != 0 && (rc & IBV_ODP_SUPPORT_READ) != 0;
  Mapped t;
  auto p = VerbsProvider::Create(g_device->pd, t.ctx, t.dir, {});
  REQUIRE(p.ok());
  VerbsProvider::Range r;
  r.fd = t.fd;
  r.length = 16 * B;
  r.addr = t.map.addr;
  r.odp = VerbsProvider::Odp::kRequire;
  auto reg = (*p)->Register(r);
  if (!odp) {
    CHECK(reg.status().err() == EOPNOTSUPP);
    MESSAGE(g_device->name << " offers no ODP for RC write and read");
    return;
  }
  REQUIRE_MESSAGE(reg.ok(), reg.status().ToString());
  CHECK(reg->on_demand);
  CHECK(reg->pin_id == 0);
  CHECK(Pins(t.dir).empty());
  CHECK((*p)->Deregister(reg->id).ok());
}

}  // namespace
}  // namespace leasefs::pin

int main(int argc, char** argv) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr || n == 0) {
    if (list != nullptr) ibv_free_device_list(list);
    std::printf("skipped: no RDMA device\n");
    return 77;
  }
  if (!leasefs::testing::CanMountFuse()) {
    ibv_free_device_list(list);
    std::printf("skipped: cannot mount FUSE (needs /dev/fuse and root)\n");
    return 77;
  }
  leasefs::pin::Device dev;
  dev.name = ibv_get_device_name(list[0]);
  dev.ctx = ibv_open_device(list[0]);
  ibv_free_device_list(list);
  if (dev.ctx == nullptr || (dev.pd = ibv_alloc_pd(dev.ctx)) == nullptr) {
    std::fprintf(stderr, "cannot open %s or allocate a PD\n", dev.name.c_str());
    return 1;
  }
  std::printf("device: %s\n", dev.name.c_str());
  leasefs::pin::g_device = &dev;
  doctest::Context context(argc, argv);
  return context.run();
}
