// The layout-lease table: leases over byte ranges of files, the break
// protocol, and the engine's layout guard (engine/layout_guard.h).
//
// Rules, with their sources: docs/leases.md. The ABI the daemon serves over
// it: include/leasefs/ioctl.h ("layout leases", "the event log"); the numbers
// in this header (types, flags, states, events) are that ABI's.
//
// A lease belongs to an open file description (OpenFileId, the daemon's id of
// it, which is also what engine::Cred::open_file() reports) and to the process
// that took it. It goes when the holder releases it, when the open file is
// closed for the last time (CloseOpenFile), or when that process dies (seen
// through a pidfd by the table's own thread).
//
// Thread safety: every method may be called from any thread. One mutex guards
// the table; nothing blocks while holding it, and the BreakNotifier is called
// and signals are sent without it. SetLease, Break and Events may wait (a
// break in progress, the break time, the event log); the daemon calls them
// from its worker threads (docs/threading.md), never from a FUSE loop thread.
// MayChange never waits: it is the engine's guard, called under the engine's
// writer lock.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/result.h"
#include "base/status.h"
#include "engine/layout_guard.h"

namespace leasefs::engine {
class Cred;
}

namespace leasefs::lease {

// -o write_break=: which writes break leases.
enum class WriteBreak {
  kUnmapOnly,    // only writes that allocate ([Dan], [Sep19]); overwrites never
  kXfsFaithful,  // every write, as XFS's BREAK_WRITE does ([v2])
};

// -o pinned_break=: what a change by another open file does when it meets
// an EXCLUSIVE lease that covers pins (docs/pins.md "Breaks and pins").
enum class PinnedBreak {
  kRefuse,  // ETXTBSY at once, as for any EXCLUSIVE lease ([v2])
  kFence,   // recalled like a breakable lease; at the break time the pins
            // are fenced (PinFencer) and the lease revoked (pNFS)
  kWait,    // recalled; the break time does not run out while pins remain
};

struct Options {
  // How long a holder has to release a breaking lease before it is revoked
  // (-o lease_break_time=, like /proc/sys/fs/lease-break-time). 0: never.
  std::chrono::milliseconds break_time{45000};
  WriteBreak write_break = WriteBreak::kUnmapOnly;
  PinnedBreak pinned_break = PinnedBreak::kRefuse;
  // Leases (tombstones of revoked ones included) one uid other than root
  // may hold; ENOLCK beyond. Each costs the daemon about 400 bytes.
  size_t max_leases_per_uid = 100'000;
  // Processes of one uid other than root that may hold leases at once (the
  // table keeps a pidfd for each); ENOLCK beyond.
  size_t max_processes_per_uid = 1024;
};

// The daemon's id of an open file description; nonzero.
using OpenFileId = uint64_t;
// Ids of leases: nonzero, increasing, never reused within a table.
using LeaseId = uint64_t;

// Who asks for a lease.
struct Holder {
  OpenFileId open_file = 0;
  engine::Ino ino = 0;
  // The calling thread, as FUSE reports it (0: unknown; then no process owns
  // the lease, nobody is signalled and only the close releases it).
  pid_t tid = 0;
  uid_t uid = 0;
  // Whether the caller may take EXCLUSIVE or UNBREAKABLE leases: it owns the
  // file or has CAP_LEASE (decided by the daemon).
  bool may_unbreak = false;
};

// LEASEFS_IOC_SETLEASE's arguments (reserved fields checked by the daemon).
struct LeaseRequest {
  uint64_t offset = 0;
  uint64_t length = 0;  // 0: from offset to the end, whatever the size
  uint32_t type = 0;    // LEASEFS_LEASE_READ, _WRITE, _UNLOCK
  uint32_t flags = 0;   // LEASEFS_LEASE_EXCLUSIVE, _UNBREAKABLE, _NONBLOCK
  int signal = 0;       // sent to the holder's process on a break; 0: none
  uint64_t sigval = 0;  // its si_value
  LeaseId convert = 0;  // nonzero: convert this lease of the open file
};

// One lease, as leasefs_lease_info reports it.
struct LeaseInfo {
  LeaseId id = 0;
  engine::Ino ino = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // 0: to the end
  uint32_t type = 0;    // LEASEFS_LEASE_READ or _WRITE
  uint32_t flags = 0;   // LEASEFS_LEASE_EXCLUSIVE, _UNBREAKABLE
  uint32_t state = 0;   // LEASEFS_STATE_*
  pid_t holder_pid = 0;
  OpenFileId open_file = 0;
  uint64_t breaking_since = 0;  // CLOCK_MONOTONIC ns; 0 when never broken
  uint64_t break_deadline = 0;  // CLOCK_MONOTONIC ns; 0 when none
  uint32_t pins = 0;            // pins counted on it (AddPin)
};

// One entry of the event log, as leasefs_event reports it.
struct Event {
  uint64_t seq = 0;
  uint64_t time = 0;  // CLOCK_REALTIME ns
  uint32_t type = 0;  // LEASEFS_EVENT_*
  uint32_t why = 0;   // RELEASE: LEASEFS_WHY_*; BREAK/REFUSED: LayoutChangeKind
  LeaseId lease_id = 0;
  engine::Ino ino = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t lease_type = 0;  // type | flags << 8
  pid_t holder_pid = 0;
  pid_t actor_pid = 0;
  int err = 0;
};

class LeaseTable;
struct TableSync;

// Lets the daemon end one waiting call: on FUSE INTERRUPT it calls Cancel(),
// and the call's wait ends with EINTR. A token cancelled before the call
// waits makes it fail with EINTR as soon as it would wait. One token per
// call; it may outlive the table.
class WaitToken {
 public:
  explicit WaitToken(std::shared_ptr<TableSync> sync) : sync_(std::move(sync)) {}
  WaitToken(const WaitToken&) = delete;
  WaitToken& operator=(const WaitToken&) = delete;

  void Cancel() noexcept;
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<TableSync> sync_;
  std::atomic<bool> cancelled_{false};
};

// How the table tells the daemon that a lease of an open file began to break,
// so that it sends POLLPRI (fuse_lowlevel_notify_poll). Called from the
// breaker's thread with no table lock held; once per open file per break.
class BreakNotifier {
 public:
  virtual ~BreakNotifier() = default;
  virtual void LeaseBreaking(OpenFileId open_file) noexcept = 0;
};

// How the table fences the pins of a lease whose break time ran out under
// PinnedBreak::kFence. pin/ implements it; the daemon wires it.
class PinFencer {
 public:
  virtual ~PinFencer() = default;
  // Invalidates every pin counted on `lease` at its provider, so that
  // nothing writes into or reads from its blocks through them any more once
  // this returns, and stops counting them: DropPin is not called for them.
  // Returns how many it fenced. Called with no table lock held, from the
  // table's thread or a breaker's.
  virtual size_t FenceLease(LeaseId lease) noexcept = 0;
};

class LeaseTable final : public engine::LayoutGuard {
 public:
  // `notifier` may be null; else it must outlive the table.
  LeaseTable(const Options& options, BreakNotifier* notifier);
  // Stops the table's thread. REQUIRES: no call is in progress (Shutdown
  // first to end the waiting ones).
  ~LeaseTable() override;
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  const Options& options() const { return options_; }

  // The pin layer, before the first AddPin; it must outlive the table's
  // last break. Without one, a fenced lease is revoked with its count.
  void SetPinFencer(PinFencer* fencer);

  std::shared_ptr<WaitToken> NewWaitToken();

  // LEASEFS_IOC_SETLEASE. With type UNLOCK: releases the open file's lease of
  // exactly that range, or all of them when offset and length are 0
  // (tombstones of revoked leases too); returns 0. With convert != 0:
  // converts that lease of the open file to the new type and flags (same
  // range); returns its id. Otherwise grants a new lease; returns its id.
  // Waits while a break is in progress on the range. `wait` may be null.
  // Errors:
  //   EINVAL     unknown type or flags, offset + length overflows, a
  //              conversion's range is not the lease's own, UNLOCK with
  //              convert, a signal number that is not one
  //   EBUSY      UNLOCK of a lease that counts pins, or a conversion of
  //              one to a kind that may not hold them (nothing released)
  //   EACCES     EXCLUSIVE or UNBREAKABLE without holder.may_unbreak
  //   EEXIST     (no convert) the range overlaps a lease of this open file,
  //              revoked ones included (release them first)
  //   EAGAIN     a lease of another open file conflicts; a conversion of a
  //              lease that is not active, was broken since it was granted,
  //              or is not one of this open file's
  //   EWOULDBLOCK a break is in progress on the range and NONBLOCK was given
  //   EINTR      `wait` was cancelled while waiting
  //   ENOLCK     holder.uid (not root) holds options().max_leases_per_uid
  //              leases, or has options().max_processes_per_uid processes
  //              holding leases and this would be one more
  //   ENOENT     UNLOCK matched no lease
  //   ESRCH      the calling thread is gone
  //   ESHUTDOWN  the table is shutting down
  Result<LeaseId> SetLease(const Holder& holder, const LeaseRequest& req, WaitToken* wait);

  // The lease of `open_file` covering byte `offset`; state NONE (all zero)
  // when there is none.
  LeaseInfo GetLease(OpenFileId open_file, uint64_t offset) const;
  // Up to `max` leases with ids above `after`, in id order; *more (if not
  // null) says whether there are further ones.
  std::vector<LeaseInfo> List(LeaseId after, size_t max, bool* more) const;
  // Whether a live (active or breaking) lease is on `ino`. Cheap when the
  // table holds none: the daemon's fast path on every write.
  bool AnyLeases(engine::Ino ino) const;
  // Whether a lease of `open_file` is breaking or revoked (POLLPRI).
  bool Pollpri(OpenFileId open_file) const;

  // Breaks the leases that conflict with `change` made by `by`
  // (by.open_file(), by.pid()), as docs/leases.md "Conflicts" says. Returns
  // OK once none of them is left (released, or revoked when the break time
  // ran out), or:
  //   ETXTBSY    an EXCLUSIVE or UNBREAKABLE lease of another open file
  //              conflicts; nothing was marked. Under pinned_break fence
  //              or wait, an EXCLUSIVE lease that counts pins is broken
  //              instead (docs/pins.md), and a ZOMBIE one is fenced at once
  //              (fence) or waited for until its pins go (wait).
  //   EDEADLOCK  by's own open file holds the EXCLUSIVE or READ|UNBREAKABLE
  //              lease that conflicts; nothing was marked
  //   EWOULDBLOCK `nonblock`, or by's own open file holds a breakable READ
  //              lease that conflicts: the leases are marked breaking and
  //              their holders notified all the same (Linux's __break_lease)
  //   EINTR      `wait` was cancelled; the leases stay breaking
  //   ESHUTDOWN  the table is shutting down
  Status Break(const engine::Cred& by, const engine::LayoutChange& change, bool nonblock,
               WaitToken* wait);

  // The open file's last close: its leases go (event RELEASE, why CLOSE),
  // except those that count pins, which stay as ZOMBIE (event ZOMBIE) until
  // their last pin goes. A process's death does the same to its leases.
  void CloseOpenFile(OpenFileId open_file);

  // Pins (docs/pins.md). AddPin counts a pin over [offset, offset + length)
  // made through `open_file` on that open file's lease covering the whole
  // range, which must be active and EXCLUSIVE or WRITE|UNBREAKABLE; returns
  // the lease's id. While a lease counts pins, UNLOCK of it and a conversion
  // to another kind fail with EBUSY. Errors: EINVAL (length 0, or offset +
  // length overflows), EPERM (no such lease), ESHUTDOWN.
  // `tgid`: the pinning process; a lease taken by another process (a fork's
  // parent, say) is not its own: EPERM (0: not checked). `ino`: the inode
  // the pin is of; a lease of another inode is not the pin's: EPERM (0: not
  // checked).
  Result<LeaseId> AddPin(OpenFileId open_file, uint64_t offset, uint64_t length, pid_t tgid = 0,
                         engine::Ino ino = 0);
  // One pin counted on `lease` is gone. A ZOMBIE lease goes with its last
  // pin (event RELEASE, why CLOSE); so does a pinned lease whose break time
  // ran out under PinnedBreak::kWait (revoked). Unknown ids are ignored.
  void DropPin(LeaseId lease);

  // The event log: up to `max` events after sequence number `after`, waiting
  // up to `timeout` for the first if there is none yet. *lost (if not null)
  // is how many events after `after` were already forgotten (the log keeps
  // the last LEASEFS_EVENTS_KEPT). Errors: EINTR (cancelled while waiting,
  // nothing to return), ESHUTDOWN.
  Result<std::vector<Event>> Events(uint64_t after, size_t max, std::chrono::milliseconds timeout,
                                    WaitToken* wait, uint64_t* lost);

  // engine::LayoutGuard: the same conflict rule as Break, without waiting or
  // marking: OK, ERESTART (a breakable lease conflicts, or one still
  // breaking: call Break), ETXTBSY, EDEADLOCK.
  Status MayChange(const engine::Cred& by, const engine::LayoutChange& change) override;

  // Ends every current and later wait with ESHUTDOWN (the daemon's unmount).
  void Shutdown();

 private:
  class Impl;
  const Options options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace leasefs::lease
