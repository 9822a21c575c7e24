// VerbsProvider: the client side of VERBS pins (docs/pins.md, "VERBS pins").
//
// A program that holds an EXCLUSIVE lease on a range of a leasefs file and
// has mapped its blocks (leasefs_dax_map) registers that mapping with an RDMA
// device of its own: ibv_reg_mr pins the pages for the device, which may then
// write and read them at any moment, with no page fault the filesystem could
// see. So the registration must be a pin (LEASEFS_IOC_PIN, provider VERBS):
// the daemon counts it on the lease, keeps the blocks quarantined while the
// pin lives, and at a fence (pinned_break=fence, kill-on-close, strict
// passing) sends the context a FENCED frame, on which this class deregisters
// the MR and then unpins.
//
// On-demand paging (ODP): an MR registered with IBV_ACCESS_ON_DEMAND pins no
// page; the device faults pages in through the process's page tables and the
// kernel invalidates them when the mapping changes. Its reach is therefore
// the DAX mapping's own, which the mapping's records quarantine until the
// program munmaps and confirms (DAX_UNMAP): an ODP MR needs no pin, and none
// is made. At a fence there is nothing to do for it (ibv_advise_mr prefetches,
// it does not invalidate): the munmap that DAX_UNMAP requires invalidates it.
//
// Fence notices are read by a thread the provider owns, from its own
// duplicate of the context's descriptor. Why a thread and not a descriptor
// the caller polls: a program that forgets to drive the notices would keep
// its MRs over blocks the daemon wants back for as long as it runs, and the
// programs this is for (benchmarks, perftest-like loops) have no event loop
// to add a descriptor to. The thread is the only reader of the context's
// notices: the caller must not call leasefs_pin_wait_fenced on the same
// context while a provider lives.
//
// The provider keeps its own descriptor of the context, so the context (and
// with it every pin) lives at least as long as the provider's MRs: a caller
// that closes its context descriptor early must not free blocks a device
// still reaches.
//
// Thread safety: every method may be called from any thread; the fence
// thread runs the on_fenced callback with no lock of the provider held (it
// may call Deregister or Find).
#pragma once

#include <infiniband/verbs.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "base/result.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "lease/client/leasefs_pin.h"

namespace leasefs::pin {

// What a device offers for on-demand paging (ibv_query_device_ex's odp_caps).
struct OdpCaps {
  bool supported = false;  // IBV_ODP_SUPPORT
  bool rc_write = false;   // rc_odp_caps & IBV_ODP_SUPPORT_WRITE
  bool rc_read = false;    // rc_odp_caps & IBV_ODP_SUPPORT_READ
};

// The libibverbs calls the provider makes. RealVerbs() is libibverbs itself
// and the default; tests put a fake here to drive the fence path without a
// device.
class VerbsOps {
 public:
  virtual ~VerbsOps() = default;
  // ibv_reg_mr(pd, addr, length, access): the MR, or the errno it set.
  virtual Result<ibv_mr*> RegMr(ibv_pd* pd, void* addr, size_t length, int access) = 0;
  // ibv_dereg_mr(mr): OK, or the errno it returned (the MR then lives on).
  virtual Status DeregMr(ibv_mr* mr) = 0;
  // The ODP caps of pd's device; a device that cannot say offers none.
  virtual OdpCaps QueryOdp(ibv_pd* pd) = 0;
};
VerbsOps& RealVerbs();

// ibv access flags for LEASEFS_PIN_REMOTE_* `remote`: always
// IBV_ACCESS_LOCAL_WRITE (verbs demands it with REMOTE_WRITE, and local
// RECVs and READ answers land in the MR), plus REMOTE_WRITE / REMOTE_READ,
// plus IBV_ACCESS_ON_DEMAND when `on_demand`. -1 when `remote` is 0 or has
// other bits.
int VerbsAccess(uint32_t remote, bool on_demand);

// What a fence did to one registration (VerbsProvider::Options::on_fenced).
struct FenceEvent {
  uint64_t id = 0;      // the registration
  uint64_t pin_id = 0;  // its pin
  // OK: the MR is deregistered and the pin gone. Else: ibv_dereg_mr's error
  // (the MR and the pin live on, the blocks quarantined), UNPIN's (the MR is
  // gone, the pin stays until the context ends), or EPIPE / EPROTO when the
  // context broke (the MR is deregistered; the daemon dropped the pin).
  Status status;
};

class VerbsProvider {
 public:
  enum class Odp {
    kOff,      // always a pinned registration
    kPrefer,   // ODP when the device offers it for the access asked, else pinned
    kRequire,  // ODP or EOPNOTSUPP
  };
  struct Options {
    VerbsOps* ops = nullptr;  // nullptr: RealVerbs()
    // Called on the fence thread for each registration a fence ended (and
    // for every pinned one when the context broke): see FenceEvent.
    std::function<void(const FenceEvent&)> on_fenced;
  };
  // A range to register: `addr` maps file bytes [offset, offset + length) of
  // the leased data file `fd` (a leasefs DAX mapping), page-aligned, 0 <
  // length <= LEASEFS_PIN_MAX_BYTES.
  struct Range {
    int fd = -1;
    uint64_t offset = 0;
    uint64_t length = 0;
    void* addr = nullptr;
    uint32_t remote = LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ;
    Odp odp = Odp::kOff;
  };
  // One registration, as Register made it.
  struct Registration {
    uint64_t id = 0;      // the provider's name for it (never 0)
    uint32_t lkey = 0;    // the MR's, for work requests
    uint32_t rkey = 0;    // the MR's, for peers
    uint64_t pin_id = 0;  // its VERBS pin; 0 for an ODP MR (no pin)
    bool on_demand = false;
    bool fenced = false;  // a fence ended it: MR deregistered, pin gone
  };

  // A provider for `pd`, whose pins go in context `ctx` (the provider keeps
  // its own duplicate of ctx.fd, close-on-exec). `mount_fd` is any file or
  // directory of the mount (a directory is best: a duplicate of a data file
  // would keep its open file, and so its RELEASE, alive); the provider keeps
  // a duplicate for UNPIN. Starts the fence thread.
  // Errors: EINVAL (pd null, ctx.fd or mount_fd < 0), what dup, eventfd and
  // thread creation answer.
  static Result<std::unique_ptr<VerbsProvider>> Create(ibv_pd* pd,
                                                       const leasefs_pin_context& ctx,
                                                       int mount_fd, Options options);
  // Stops the fence thread and deregisters every registration left, each MR
  // before its pin. A pin whose MR will not deregister is kept: the context
  // descriptor is then left open, so that the blocks stay quarantined for
  // as long as the process lives.
  ~VerbsProvider();
  VerbsProvider(const VerbsProvider&) = delete;
  VerbsProvider& operator=(const VerbsProvider&) = delete;

  // Registers `r`: ibv_reg_mr, then LEASEFS_IOC_PIN (provider VERBS, flags
  // r.remote) through r.fd; or an ODP MR and no pin (see Odp). The pin is
  // made after the MR because the MR may fail for reasons of its own (no
  // memory, a mapping it cannot pin) and a pin costs the daemon more; if the
  // pin fails the MR is deregistered, so an MR never outlives a refused pin.
  // Errors: EINVAL (fields, as above; r.remote as VerbsAccess refuses),
  // EOPNOTSUPP (kRequire without ODP), what ibv_reg_mr answers, what
  // LEASEFS_IOC_PIN answers (include/leasefs/ioctl.h: EPERM without the
  // EXCLUSIVE lease, EBADF for a file not open for writing, ENOTTY for a
  // file not on leasefs, ...).
  Result<Registration> Register(const Range& r) EXCLUDES(mu_);
  // Ends registration `id`: ibv_dereg_mr first, then UNPIN. The order is
  // the point: once UNPIN returns the daemon may give the blocks to another
  // file, so the device must have stopped reaching them before, and it stops
  // only when ibv_dereg_mr returns. A fenced registration has neither left:
  // OK. Errors: ENOENT (no such registration), ibv_dereg_mr's (the MR lives
  // on, the pin with it: ask again), UNPIN's (the MR is gone; the pin stays
  // until the context ends).
  Status Deregister(uint64_t id) EXCLUDES(mu_);
  // Registration `id`. Errors: ENOENT.
  Result<Registration> Find(uint64_t id) const EXCLUDES(mu_);

 private:
  VerbsProvider(ibv_pd* pd, VerbsOps* ops, leasefs_pin_context ctx, UniqueFd mount_fd,
                UniqueFd wake, std::function<void(const FenceEvent&)> on_fenced);
  struct Entry {
    Registration reg;
    ibv_mr* mr = nullptr;  // nullptr once a fence (or the context's end) deregistered it
  };
  // UNPIN of `pin_id` in the context, through the mount's descriptor.
  Status Unpin(uint64_t pin_id);
  // A registration in flight gave up before its pin was made.
  void Settled() EXCLUDES(mu_);
  // The fence thread: reads the context's notices until stopped.
  void Run() EXCLUDES(mu_);
  // A FENCED notice for pin `pin_id`: deregisters its MR, then unpins it
  // (if it is one of ours), and tells on_fenced.
  void Fence(uint64_t pin_id) EXCLUDES(mu_);
  // The context broke (the daemon closed it, or spoke nonsense): every
  // pinned registration's MR is deregistered; there is nothing to unpin.
  void ContextLost(const Status& why) EXCLUDES(mu_);

  ibv_pd* const pd_;
  VerbsOps* const ops_;
  const leasefs_pin_context ctx_;  // ctx_.fd is the provider's own duplicate
  const UniqueFd mount_fd_;
  const UniqueFd wake_;  // an eventfd: the destructor's word to the thread
  const std::function<void(const FenceEvent&)> on_fenced_;
  // Held while an MR is deregistered (so that Deregister returns only once
  // the device has stopped, whoever stopped it), never across an ioctl.
  mutable Mutex mu_;
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Entry> entries_ GUARDED_BY(mu_);
  // Registrations between their MR and their entry: a fence notice for a
  // pin not found waits for them (registered_).
  size_t registering_ GUARDED_BY(mu_) = 0;
  std::condition_variable registered_;
  std::thread thread_;
};

}  // namespace leasefs::pin
