#include "lease/client/lease.h"

#include <poll.h>

#include <algorithm>
#include <climits>
#include <utility>

#include "lease/client/leasefs_lease.h"

namespace leasefs::client {

namespace {

// The C API's 0 or -errno as a Status.
Status Check(int rc, const char* what) { return rc == 0 ? Status() : Status::Error(-rc, what); }

}  // namespace

Result<AbiVersion> QueryAbi(int fd) {
  AbiVersion v;
  LFS_RETURN_IF_ERROR(
      Check(leasefs_abi_version(fd, &v.version, &v.features), "LEASEFS_IOC_VERSION"));
  return v;
}

Result<Lease> Lease::Take(int fd, Range range, Type type, uint32_t flags, Notify notify) {
  uint64_t id = 0;
  LFS_RETURN_IF_ERROR(
      Check(leasefs_set_lease(fd, range.offset, range.length, static_cast<uint32_t>(type), flags,
                              notify.signal, notify.sigval, &id),
            "LEASEFS_IOC_SETLEASE"));
  // NONBLOCK says how to take it, not what it is.
  return Lease(fd, id, range, type, flags & ~kNonblock, notify);
}

Lease::~Lease() {
  if (held()) (void)Release();
}

Lease::Lease(Lease&& other) noexcept
    : fd_(other.fd_),
      id_(std::exchange(other.id_, 0)),
      range_(other.range_),
      type_(other.type_),
      flags_(other.flags_),
      notify_(other.notify_) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (held()) (void)Release();
    fd_ = other.fd_;
    id_ = std::exchange(other.id_, 0);
    range_ = other.range_;
    type_ = other.type_;
    flags_ = other.flags_;
    notify_ = other.notify_;
  }
  return *this;
}

Status Lease::Convert(Type type, uint32_t flags) {
  LFS_RETURN_IF_ERROR(Check(
      leasefs_convert_lease(fd_, id_, range_.offset, range_.length, static_cast<uint32_t>(type),
                            flags, notify_.signal, notify_.sigval),
      "LEASEFS_IOC_SETLEASE (convert)"));
  type_ = type;
  flags_ = flags & ~kNonblock;
  return Status();
}

Status Lease::Release() {
  id_ = 0;
  return Check(leasefs_release_lease(fd_, range_.offset, range_.length),
               "LEASEFS_IOC_SETLEASE (unlock)");
}

Result<leasefs_lease_info> Lease::State() const {
  leasefs_lease_info info{};
  LFS_RETURN_IF_ERROR(Check(leasefs_get_lease(fd_, range_.offset, &info), "LEASEFS_IOC_GETLEASE"));
  // Another lease of this open file at that byte is not ours: ours is gone.
  if (info.id != id_) info = leasefs_lease_info{};
  return info;
}

uint64_t Lease::Detach() noexcept { return std::exchange(id_, 0); }

Result<bool> BreakWatch::Wait(std::chrono::milliseconds timeout) const {
  pollfd p{fd_, POLLPRI, 0};
  const int ms =
      timeout.count() < 0 ? -1 : static_cast<int>(std::min<int64_t>(timeout.count(), INT32_MAX));
  const int n = poll(&p, 1, ms);
  if (n < 0) return Status::FromErrno("poll");
  if (n == 0) return false;
  if (p.revents & POLLNVAL) return Status::Error(EBADF, "poll");
  return (p.revents & POLLPRI) != 0;
}

}  // namespace leasefs::client
