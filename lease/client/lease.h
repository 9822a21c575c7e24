// The C++ API of layout leases on leasefs files: a move-only Lease that is
// released when it goes out of scope, and BreakWatch, which waits for a break
// notice (POLLPRI) on the holder's descriptor without signals.
//
//   UniqueFd fd(open("/mnt/pmem/f", O_RDWR));
//   auto lease = client::Lease::Take(fd.get(), {0, 1 << 20}, client::Type::kWrite);
//   if (!lease.ok()) ...;                      // lease.status().err(): an errno
//   client::BreakWatch watch(fd.get());
//   auto notice = watch.Wait(std::chrono::seconds(1));
//   if (notice.ok() && *notice) (void)lease->Release();  // a break: let it go
//
// The rules (what conflicts, what breaks, who may take which flags) are the
// daemon's: include/leasefs/ioctl.h, "layout leases", and docs/leases.md. The
// plain C API beside it is lease/client/leasefs_lease.h.
#pragma once

#include <chrono>
#include <cstdint>

#include "base/result.h"
#include "base/status.h"
#include "leasefs/ioctl.h"

namespace leasefs::client {

// A byte range of a file; length 0: from offset to the end, whatever the
// file's size.
struct Range {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const Range&) const = default;
};

enum class Type : uint32_t {
  kRead = LEASEFS_LEASE_READ,    // shared read-layout lease
  kWrite = LEASEFS_LEASE_WRITE,  // write-layout lease: the holder's own changes do not break it
};

// Flags of a lease (LEASEFS_LEASE_*), to be or-ed.
inline constexpr uint32_t kExclusive = LEASEFS_LEASE_EXCLUSIVE;
inline constexpr uint32_t kUnbreakable = LEASEFS_LEASE_UNBREAKABLE;
inline constexpr uint32_t kNonblock = LEASEFS_LEASE_NONBLOCK;  // do not wait for a break

// How a break is told besides POLLPRI: `signal` (0: none) queued to the
// process with si_value `sigval`. Passing the fd number as sigval makes
// si_fd name it, as with F_SETSIG.
struct Notify {
  int signal = 0;
  uint64_t sigval = 0;
};

// The daemon's ABI version and features (LEASEFS_IOC_VERSION), on any file or
// directory of the mount.
struct AbiVersion {
  uint32_t version = 0;
  uint64_t features = 0;  // LEASEFS_FEATURE_*
};
Result<AbiVersion> QueryAbi(int fd);

// One layout lease of an open file, released when destroyed (errors
// ignored) unless released before. Move-only; a moved-from or default Lease
// holds nothing.
//
// The Lease does not own `fd`: the descriptor must stay open while the Lease
// holds (closing the open file's last descriptor releases the lease anyway,
// and a later Release through a reused number would go to another file).
//
// Thread safety: one Lease is not to be used from two threads at once.
class Lease {
 public:
  // Takes a lease of `type` with `flags` (kExclusive, kUnbreakable,
  // kNonblock) on `range` of the file open as `fd`. Errors: the errno values
  // of leasefs_set_lease (EINVAL, EACCES, EEXIST, EAGAIN, EWOULDBLOCK, EINTR,
  // ENOLCK, EOPNOTSUPP, ENOTTY).
  static Result<Lease> Take(int fd, Range range, Type type, uint32_t flags = 0, Notify notify = {});

  Lease() noexcept = default;
  ~Lease();
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  bool held() const noexcept { return id_ != 0; }
  uint64_t id() const noexcept { return id_; }
  int fd() const noexcept { return fd_; }
  Range range() const noexcept { return range_; }
  Type type() const noexcept { return type_; }
  uint32_t flags() const noexcept { return flags_; }

  // Changes the lease's type and flags in one step, keeping its range and
  // notification (e.g. kWrite -> kWrite|kUnbreakable, [Sep19]). EAGAIN: the
  // lease was broken since it was granted, is breaking, or is gone; it is
  // still held (release it and take a new one). REQUIRES: held().
  Status Convert(Type type, uint32_t flags);

  // Releases the lease (a revoked one too). Afterwards !held(), whatever the
  // result; ENOENT means the daemon had no such lease any more.
  Status Release();

  // The lease's state as the daemon reports it now: state ACTIVE, BREAKING
  // (breaking_since, break_deadline in CLOCK_MONOTONIC ns) or REVOKED; NONE
  // when it is gone. REQUIRES: held().
  Result<leasefs_lease_info> State() const;

  // Gives up the lease without releasing it; returns its id.
  uint64_t Detach() noexcept;

 private:
  Lease(int fd, uint64_t id, Range range, Type type, uint32_t flags, Notify notify) noexcept
      : fd_(fd), id_(id), range_(range), type_(type), flags_(flags), notify_(notify) {}

  int fd_ = -1;
  uint64_t id_ = 0;  // 0: holds nothing
  Range range_;
  Type type_ = Type::kRead;
  uint32_t flags_ = 0;
  Notify notify_;
};

// Waits for break notices on one descriptor: POLLPRI, which the daemon
// raises while any lease of that open file is breaking or revoked (and
// lowers when they are released). Level-triggered: a holder that keeps a
// breaking lease sees it again at once.
class BreakWatch {
 public:
  // `fd` must stay open while the watch is used.
  explicit BreakWatch(int fd) noexcept : fd_(fd) {}

  // Waits up to `timeout` (negative: for ever) for POLLPRI. true: a lease of
  // the open file is breaking or revoked (ask Lease::State which); false:
  // the time ran out. Errors: EINTR (a signal came), EBADF.
  Result<bool> Wait(std::chrono::milliseconds timeout) const;

  // Wait(0): whether a notice is pending now.
  Result<bool> Pending() const { return Wait(std::chrono::milliseconds(0)); }

 private:
  int fd_;
};

}  // namespace leasefs::client
