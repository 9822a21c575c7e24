// PinTable: the pins of a mount (docs/pins.md): the pin contexts that own
// them, the pins made through open files under their leases, how many each
// open file carries, and their fencing.
//
// A pin is counted twice: here, with everything the listing shows, and on
// its lease in the lease table (LeaseTable::AddPin), which is what makes a
// pinned lease refuse UNLOCK, outlive its close and meet changes by the
// mount's pinned_break policy. The table is the lease table's PinFencer: at
// the end of a break under pinned_break=fence it fences the lease's pins at
// their provider (the soft NIC invalidates the rkey) and stops counting them
// there; they stay listed, fenced, until their context lets them go.
//
// The memory behind a pin (the daemon's view of the pinned pool blocks) is
// the caller's: it hands a Region in, and the table calls its release when
// the pin goes, with no lock of this table held (a release may call back
// into the table, and the daemon's takes the engine's lock and unmaps).
//
// Thread safety: every method may be called from any thread. Lock order:
// this table's mutex, then the lease table's (the lease table calls
// FenceLease with none of its own held). The soft NIC's Unregister and a
// region's release run with neither held.
#pragma once

#include <sys/types.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "lease/lease_table.h"

namespace leasefs::pin {

class SoftNic;

// Who may reach a pin's memory, as the ABI numbers them.
enum class Provider : uint32_t {
  kSoftNic = 1,   // the daemon's soft NIC serves it (an rkey)
  kDeclared = 2,  // the client's own engine; nothing to fence but the blocks
  // The client's RDMA device (rdma-core): as kDeclared, the daemon cannot
  // stop it, but its holder is told FENCED (as every fenced pin's is) and
  // deregisters its MR, then unpins; the blocks stay quarantined till then.
  kVerbs = 3,
};

using ContextId = uint64_t;
using PinId = uint64_t;
using Token = std::array<uint8_t, 16>;

class PinTable final : public lease::PinFencer {
 public:
  // Pins one user other than root may hold (ENOLCK beyond).
  static constexpr size_t kMaxPinsPerUser = 4096;

  // `leases` must outlive the table; `nic` may be null (no soft NIC: SOFTNIC
  // pins give EOPNOTSUPP). Registers itself as the lease table's fencer.
  PinTable(lease::LeaseTable* leases, SoftNic* nic);
  ~PinTable() override;
  PinTable(const PinTable&) = delete;
  PinTable& operator=(const PinTable&) = delete;

  // --- contexts

  // A new context, owned by the process that created it (`creator_pid`, of
  // `creator_uid`), with a fresh 128-bit token. `notice_fd` (may be invalid)
  // is the daemon's end of the context's socket, where fence notices go.
  struct NewContext {
    ContextId id = 0;
    Token token{};
  };
  Result<NewContext> AddContext(pid_t creator_pid, uid_t creator_uid, UniqueFd notice_fd);
  // The context's last descriptor is gone: its pins go with it, as by
  // Unpin(id = 0). Unknown ids are ignored.
  void CloseContext(ContextId id);

  // --- pins

  // The memory behind a pin, kept valid until `release` runs (or, without
  // one, for the table's life). A DECLARED or VERBS pin needs none (base
  // null): its engine reaches the blocks its own way; `release` still runs.
  struct Region {
    void* base = nullptr;
    uint64_t length = 0;
    std::function<void()> release;
  };
  struct PinRequest {
    ContextId context = 0;
    Token token{};
    lease::OpenFileId open_file = 0;
    engine::Ino ino = 0;  // the open file's inode (0 is refused)
    uid_t uid = 0;        // the caller's
    pid_t pid = 0;  // the caller's process (0: not checked against the lease's)
    uint64_t offset = 0;
    uint64_t length = 0;
    Provider provider = Provider::kSoftNic;
    bool remote_write = true;
    bool remote_read = true;
  };
  struct Pinned {
    PinId id = 0;
    uint64_t rkey = 0;  // SOFTNIC only
  };
  // Makes a pin: the context must be open and named with its token, and
  // created by the caller's uid (or root); the open file must hold an
  // active EXCLUSIVE or WRITE|UNBREAKABLE lease of inode `req.ino` covering
  // the range (LeaseTable::AddPin). On failure the region is released.
  // Errors: EBADF (no such context, or closed), EPERM (wrong token, another
  // user's context, no such lease, one of another inode than req.ino or of
  // another process than req.pid), EINVAL (length 0 or not the region's, ino
  // 0, unknown provider), EOPNOTSUPP (SOFTNIC without a soft NIC), ENOLCK
  // (the context's user holds kMaxPinsPerUser), what the soft NIC's
  // Register answers.
  Result<Pinned> Pin(const PinRequest& req, Region region);
  // Ends pin `id` of the context, or all of its pins for 0, asked by `uid`.
  // When it returns, each pin it ended is gone from List and PinsOf, its
  // rkey from the soft NIC (no copy into its memory is in progress), its
  // count from its lease, and its region's release has run, in that order.
  // Errors: EBADF, EPERM as for Pin; ENOENT (no such pin of this context).
  Status Unpin(ContextId context, const Token& token, uid_t uid, PinId id);

  // How many pins open file `f` carries (fenced ones included): the close
  // policies ask it.
  size_t PinsOf(lease::OpenFileId f) const;
  // Blocks until open file `f` carries no pin (true), or until `stop()`
  // says to give up (false). `stop` is asked under the table's lock, at the
  // start and whenever a pin goes or Wake() is called: it must not call
  // into the table. (close_with_pins=block-close)
  bool WaitUnpinned(lease::OpenFileId f, const std::function<bool()>& stop) const;
  // Has WaitUnpinned's waiters ask their `stop` again.
  void Wake() const;

  // --- the close and passing policies (docs/pins.md)

  // The inodes of the daemon's ends of the sockets of the contexts that own
  // pins made through `f`: their holders are found from there (holders.h).
  struct ContextSocket {
    uint64_t inode = 0;  // of the daemon's end
    uid_t uid = 0;       // the context's creator's
  };
  std::vector<ContextSocket> ContextSocketsOf(lease::OpenFileId f) const;
  // Whether a pin made through open file `f` belongs to a context created
  // by `uid` (block-close waits only for the pins' own user).
  bool PinnedBy(lease::OpenFileId f, uid_t uid) const;
  // Aborts the pins made through open file `f`: each one not fenced yet is
  // told to its context (a FENCED frame) and stops counting on its lease (a
  // ZOMBIE lease goes with its last pin). SOFTNIC pins are dropped as by
  // Unpin (the rkey fenced and forgotten); a DECLARED or VERBS pin, whose
  // engine the daemon cannot stop, stays listed, fenced, its blocks
  // quarantined, until its context lets it go. Returns how many it aborted.
  // (close_with_pins=kill-on-close)
  size_t AbortPinsOf(lease::OpenFileId f);
  // The creator of context `id` died while `holders` (processes, not the
  // creator) hold it (pin_passing=strict). Keeps its pins if every unfenced
  // one is covered by a lease that one of `holders` took: active, of the
  // pin's inode, over its whole range, of a kind that may count pins
  // (EXCLUSIVE or WRITE|UNBREAKABLE). Otherwise aborts them all as
  // AbortPinsOf does. Returns how many it aborted.
  size_t AbortUnlessCovered(ContextId id, const std::vector<pid_t>& holders);

  // lease::PinFencer.
  size_t FenceLease(lease::LeaseId lease) noexcept override;

  // One pin, as the listing shows it.
  struct PinInfo {
    PinId id = 0;
    ContextId context = 0;
    Provider provider = Provider::kSoftNic;
    lease::OpenFileId open_file = 0;
    engine::Ino ino = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
    lease::LeaseId lease = 0;
    uint64_t rkey = 0;  // 0 unless the viewer is root or the context's user
    bool fenced = false;
    bool remote_write = false;  // as asked (SOFTNIC)
    bool remote_read = false;
    pid_t creator_pid = 0;  // the context's
    uid_t uid = 0;          // the context's creator's
  };
  // The pins `viewer` may see (its own contexts'; root: all), by id.
  std::vector<PinInfo> List(uid_t viewer) const;
  // The contexts open that `viewer` may see (its own; root: all).
  size_t Contexts(uid_t viewer) const;

  // Tests only: how many users (other than root) the per-user pin count
  // keeps an entry for; those that hold pins, no others.
  size_t TEST_CountedUsers() const;

 private:
  struct Context {
    pid_t creator_pid = 0;
    uid_t uid = 0;
    Token token{};
    UniqueFd notice_fd;
    std::vector<PinId> pins;
  };
  struct PinRecord {
    PinInfo info;
    Region region;
  };
  // A pin Take removed, with what Finish still has to let go.
  struct Dropped {
    uint64_t rkey = 0;
    lease::LeaseId lease = 0;  // 0: fenced, its lease counts it no more
    Region region;
  };

  // The context `id` if `token` is its own and `uid` may use it.
  Result<Context*> Authorize(ContextId id, const Token& token, uid_t uid) REQUIRES(mu_);
  // Takes pins out of the table (List, PinsOf and its context no longer see
  // them; unknown ids are skipped) and returns what Finish must let go. Until
  // then an unfenced one is counted in unsettled_.
  std::vector<Dropped> Take(std::vector<PinId> ids) REQUIRES(mu_);
  // Ends what Take began, in the order that keeps the memory safe: the soft
  // NIC forgets each rkey (fencing it first: no copy is in progress
  // afterwards), the lease stops counting each unfenced pin, and then the
  // regions are released.
  void Finish(std::vector<Dropped> dropped) EXCLUDES(mu_);
  void Notify(const Context& c, const PinInfo& fenced) REQUIRES(mu_);
  // AbortPinsOf's work for the pins `ids`.
  size_t Abort(const std::vector<PinId>& ids) EXCLUDES(mu_);

  lease::LeaseTable* const leases_;
  SoftNic* const nic_;
  mutable Mutex mu_;
  ContextId next_context_ GUARDED_BY(mu_) = 1;
  PinId next_pin_ GUARDED_BY(mu_) = 1;
  std::unordered_map<ContextId, Context> contexts_ GUARDED_BY(mu_);
  std::map<PinId, PinRecord> pins_ GUARDED_BY(mu_);
  // The pins counted on each lease, (lease, pin): FenceLease visits its
  // lease's only. A pin leaves it when it is fenced or taken.
  std::set<std::pair<lease::LeaseId, PinId>> by_lease_ GUARDED_BY(mu_);
  std::unordered_map<lease::OpenFileId, size_t> per_open_file_ GUARDED_BY(mu_);
  std::unordered_map<uid_t, size_t> per_uid_ GUARDED_BY(mu_);
  // Per lease, the pins Take removed whose rkey and lease count Finish has
  // not let go yet: FenceLease waits for them (settled_), since they are
  // still counted on the lease and may still be reached.
  std::unordered_map<lease::LeaseId, size_t> unsettled_ GUARDED_BY(mu_);
  std::condition_variable settled_;
  // Signalled when pins are gone (end of Finish) and by Wake: WaitUnpinned.
  mutable std::condition_variable unpinned_;
};

}  // namespace leasefs::pin
