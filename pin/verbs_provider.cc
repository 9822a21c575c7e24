// The verbs pin provider (verbs_provider.h; rules: docs/pins.md).
#include "pin/verbs_provider.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace leasefs::pin {
namespace {

// libibverbs itself.
class Libibverbs final : public VerbsOps {
 public:
  Result<ibv_mr*> RegMr(ibv_pd* pd, void* addr, size_t length, int access) override {
    errno = 0;
    ibv_mr* mr = ibv_reg_mr(pd, addr, length, access);
    if (mr == nullptr) return Status::Error(errno != 0 ? errno : EINVAL, "ibv_reg_mr");
    return mr;
  }
  Status DeregMr(ibv_mr* mr) override {
    // Returns the errno value itself (ibv_dereg_mr(3)).
    const int rc = ibv_dereg_mr(mr);
    return rc == 0 ? Status::Ok() : Status::Error(rc, "ibv_dereg_mr");
  }
  OdpCaps QueryOdp(ibv_pd* pd) override {
    ibv_device_attr_ex attr{};
    if (ibv_query_device_ex(pd->context, nullptr, &attr) != 0) return {};
    OdpCaps c;
    c.supported = (attr.odp_caps.general_caps & IBV_ODP_SUPPORT) != 0;
    const uint32_t rc = attr.odp_caps.per_transport_caps.rc_odp_caps;
    c.rc_write = (rc & IBV_ODP_SUPPORT_WRITE) != 0;
    c.rc_read = (rc & IBV_ODP_SUPPORT_READ) != 0;
    return c;
  }
};

constexpr uint32_t kRemote = LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ;

// Whether `caps` lets an RC peer reach an ODP MR as `remote` asks.
bool OdpCovers(const OdpCaps& caps, uint32_t remote) {
  if (!caps.supported) return false;
  if ((remote & LEASEFS_PIN_REMOTE_WRITE) != 0 && !caps.rc_write) return false;
  return (remote & LEASEFS_PIN_REMOTE_READ) == 0 || caps.rc_read;
}

Status CheckRange(const VerbsProvider::Range& r) {
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const auto addr = reinterpret_cast<uintptr_t>(r.addr);
  if (r.fd < 0 || r.addr == nullptr || addr % page != 0) {
    return Status::Error(EINVAL, "a range needs its data file and a page-aligned address");
  }
  if (r.offset % page != 0 || r.length % page != 0 || r.length == 0 ||
      r.length > LEASEFS_PIN_MAX_BYTES) {
    return Status::Error(EINVAL, "offset and length must be page-aligned, 0 < length <= 1 GiB");
  }
  if (VerbsAccess(r.remote, false) < 0) {
    return Status::Error(EINVAL, "remote access: LEASEFS_PIN_REMOTE_WRITE and/or _READ");
  }
  return Status::Ok();
}

}  // namespace

VerbsOps& RealVerbs() {
  static Libibverbs ops;
  return ops;
}

int VerbsAccess(uint32_t remote, bool on_demand) {
  if (remote == 0 || (remote & ~kRemote) != 0) return -1;
  int access = IBV_ACCESS_LOCAL_WRITE;
  if ((remote & LEASEFS_PIN_REMOTE_WRITE) != 0) access |= IBV_ACCESS_REMOTE_WRITE;
  if ((remote & LEASEFS_PIN_REMOTE_READ) != 0) access |= IBV_ACCESS_REMOTE_READ;
  if (on_demand) access |= IBV_ACCESS_ON_DEMAND;
  return access;
}

// ---------------------------------------------------------------- life

Result<std::unique_ptr<VerbsProvider>> VerbsProvider::Create(ibv_pd* pd,
                                                             const leasefs_pin_context& ctx,
                                                             int mount_fd, Options options) {
  if (pd == nullptr || ctx.fd < 0 || mount_fd < 0) {
    return Status::Error(EINVAL, "a verbs provider needs a PD, a pin context and the mount");
  }
  UniqueFd own_ctx(fcntl(ctx.fd, F_DUPFD_CLOEXEC, 0));
  if (!own_ctx.valid()) return Status::FromErrno("dup of the pin context");
  UniqueFd own_mount(fcntl(mount_fd, F_DUPFD_CLOEXEC, 0));
  if (!own_mount.valid()) return Status::FromErrno("dup of the mount's descriptor");
  UniqueFd wake(eventfd(0, EFD_CLOEXEC));
  if (!wake.valid()) return Status::FromErrno("eventfd");
  leasefs_pin_context mine = ctx;
  mine.fd = own_ctx.release();
  VerbsOps* ops = options.ops != nullptr ? options.ops : &RealVerbs();
  std::unique_ptr<VerbsProvider> p(new VerbsProvider(
      pd, ops, mine, std::move(own_mount), std::move(wake), std::move(options.on_fenced)));
  try {
    p->thread_ = std::thread([raw = p.get()] { raw->Run(); });
  } catch (const std::system_error& e) {
    return Status::Error(e.code().value(), "the fence thread");
  }
  return p;
}

VerbsProvider::VerbsProvider(ibv_pd* pd, VerbsOps* ops, leasefs_pin_context ctx,
                             UniqueFd mount_fd, UniqueFd wake,
                             std::function<void(const FenceEvent&)> on_fenced)
    : pd_(pd),
      ops_(ops),
      ctx_(ctx),
      mount_fd_(std::move(mount_fd)),
      wake_(std::move(wake)),
      on_fenced_(std::move(on_fenced)) {}

VerbsProvider::~VerbsProvider() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
  std::vector<uint64_t> ids;
  {
    MutexLock l(&mu_);
    for (const auto& [id, e] : entries_) ids.push_back(id);
  }
  for (uint64_t id : ids) (void)Deregister(id);
  bool keep = false;
  {
    MutexLock l(&mu_);
    keep = !entries_.empty();  // an MR that would not deregister
  }
  if (keep) {
    // Its pin must outlive it: the context (and so the pin and the
    // quarantine of its blocks) stays open until the process ends.
    std::fprintf(stderr, "leasefs: an MR would not deregister; its pin is kept\n");
    return;
  }
  close(ctx_.fd);
}

// ---------------------------------------------------------------- registrations

Result<VerbsProvider::Registration> VerbsProvider::Register(const Range& r) {
  LFS_RETURN_IF_ERROR(CheckRange(r));
  bool odp = false;
  if (r.odp != Odp::kOff) {
    odp = OdpCovers(ops_->QueryOdp(pd_), r.remote);
    if (!odp && r.odp == Odp::kRequire) {
      return Status::Error(EOPNOTSUPP, "the device offers no ODP for this access over RC");
    }
  }
  LFS_ASSIGN_OR_RETURN(ibv_mr * mr, ops_->RegMr(pd_, r.addr, r.length, VerbsAccess(r.remote, odp)));
  Registration reg;
  reg.lkey = mr->lkey;
  reg.rkey = mr->rkey;
  reg.on_demand = odp;
  if (!odp) {
    // A fence notice for the new pin may come before it is in entries_:
    // Fence waits while a registration is in flight.
    {
      MutexLock l(&mu_);
      ++registering_;
    }
    const int rc = leasefs_pin_register(r.fd, &ctx_, r.offset, r.length, LEASEFS_PIN_VERBS,
                                        r.remote, &reg.pin_id, nullptr);
    if (rc != 0) {
      // No MR without its pin. Should it not go, the DAX mapping's records
      // still keep its blocks while the caller maps them.
      (void)ops_->DeregMr(mr);
      Settled();
      return Status::Error(-rc, "LEASEFS_IOC_PIN");
    }
  }
  {
    MutexLock l(&mu_);
    reg.id = next_id_++;
    entries_[reg.id] = Entry{reg, mr};
    if (!odp) --registering_;
  }
  if (!odp) registered_.notify_all();
  return reg;
}

void VerbsProvider::Settled() {
  {
    MutexLock l(&mu_);
    --registering_;
  }
  registered_.notify_all();
}

Status VerbsProvider::Deregister(uint64_t id) {
  uint64_t pin_id = 0;
  {
    MutexLock l(&mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return Status::Error(ENOENT, "no such registration");
    // Deregistering under mu_: a fence of the same MR waits, so that when
    // this returns the device reaches none of it, whoever deregistered it.
    if (it->second.mr != nullptr) LFS_RETURN_IF_ERROR(ops_->DeregMr(it->second.mr));
    if (!it->second.reg.fenced) pin_id = it->second.reg.pin_id;
    entries_.erase(it);
  }
  // The MR has stopped; only now may the daemon reuse the blocks.
  if (pin_id == 0) return Status::Ok();  // ODP, or fenced and unpinned already
  return Unpin(pin_id);
}

Result<VerbsProvider::Registration> VerbsProvider::Find(uint64_t id) const {
  MutexLock l(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return Status::Error(ENOENT, "no such registration");
  return it->second.reg;
}

Status VerbsProvider::Unpin(uint64_t pin_id) {
  const int rc = leasefs_pin_unregister(mount_fd_.get(), &ctx_, pin_id);
  return rc == 0 ? Status::Ok() : Status::Error(-rc, "LEASEFS_IOC_UNPIN");
}

// ---------------------------------------------------------------- fences

void VerbsProvider::Run() {
  for (;;) {
    pollfd p[2] = {{ctx_.fd, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      ContextLost(Status::FromErrno("poll of the pin context"));
      return;
    }
    if (p[1].revents != 0) return;  // the destructor's word
    if (p[0].revents == 0) continue;
    uint64_t pin_id = 0;
    const int rc = leasefs_pin_wait_fenced(&ctx_, 0, &pin_id, nullptr);
    if (rc == -ETIMEDOUT) continue;  // a notice of another kind
    if (rc != 0) {
      // -EPIPE: the daemon closed the context (it stopped: its pins are
      // gone); -EPROTO: the stream cannot be trusted any more.
      ContextLost(Status::Error(-rc, "the pin context broke"));
      return;
    }
    Fence(pin_id);
  }
}

void VerbsProvider::Fence(uint64_t pin_id) {
  FenceEvent ev;
  ev.pin_id = pin_id;
  {
    MutexLock l(&mu_);
    std::unique_lock<std::mutex> lk(mu_.native(), std::adopt_lock);
    Entry* e = nullptr;
    for (;;) {
      auto it = std::find_if(entries_.begin(), entries_.end(), [pin_id](const auto& kv) {
        return kv.second.reg.pin_id == pin_id && kv.second.mr != nullptr;
      });
      if (it != entries_.end()) e = &it->second;
      if (e != nullptr || registering_ == 0) break;
      registered_.wait(lk);
    }
    lk.release();
    if (e == nullptr) return;  // not ours, or deregistered meanwhile
    ev.id = e->reg.id;
    ev.status = ops_->DeregMr(e->mr);
    if (ev.status.ok()) {
      e->mr = nullptr;
      e->reg.fenced = true;
    }
  }
  if (ev.status.ok()) ev.status = Unpin(pin_id);
  if (on_fenced_) on_fenced_(ev);
}

void VerbsProvider::ContextLost(const Status& why) {
  std::vector<FenceEvent> events;
  {
    MutexLock l(&mu_);
    for (auto& [id, e] : entries_) {
      if (e.reg.pin_id == 0 || e.mr == nullptr) continue;
      FenceEvent& ev = events.emplace_back();
      ev.id = id;
      ev.pin_id = e.reg.pin_id;
      ev.status = ops_->DeregMr(e.mr);
      if (!ev.status.ok()) continue;
      e.mr = nullptr;
      e.reg.fenced = true;
      ev.status = why;
    }
  }
  if (!on_fenced_) return;
  for (const FenceEvent& ev : events) on_fenced_(ev);
}

}  // namespace leasefs::pin
