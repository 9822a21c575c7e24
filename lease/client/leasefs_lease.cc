// The C API of layout leases (leasefs_lease.h): one ioctl per call.
#include "lease/client/leasefs_lease.h"

#include <algorithm>
#include <cerrno>

#include <sys/ioctl.h>

namespace {

// The negative errno for a lease command that failed with `err`. ENOTTY is
// what both another filesystem and a daemon without the command give; the
// version query tells them apart.
int LeaseError(int fd, int err) {
  if (err != ENOTTY) return -err;
  leasefs_version v{};
  if (ioctl(fd, LEASEFS_IOC_VERSION, &v) != 0) return -ENOTTY;
  return (v.features & LEASEFS_FEATURE_LEASES) == 0 ? -EOPNOTSUPP : -ENOTTY;
}

// LEASEFS_IOC_SETLEASE with these fields (the reserved ones zero); the
// daemon's answer in *l.
int SetLease(int fd, uint64_t offset, uint64_t length, uint32_t type, uint32_t flags, int signal,
             uint64_t sigval, uint64_t id, leasefs_lease* l) {
  *l = leasefs_lease{};
  l->offset = offset;
  l->length = length;
  l->type = type;
  l->flags = flags;
  l->signal = signal;
  l->sigval = sigval;
  l->id = id;
  if (ioctl(fd, LEASEFS_IOC_SETLEASE, l) != 0) return LeaseError(fd, errno);
  return 0;
}

}  // namespace

extern "C" {

int leasefs_abi_version(int fd, uint32_t* version, uint64_t* features) {
  leasefs_version v{};
  if (ioctl(fd, LEASEFS_IOC_VERSION, &v) != 0) return -errno;
  if (version != nullptr) *version = v.abi_version;
  if (features != nullptr) *features = v.features;
  return 0;
}

int leasefs_set_lease(int fd, uint64_t offset, uint64_t length, uint32_t type, uint32_t flags,
                      int signal, uint64_t sigval, uint64_t* id_out) {
  leasefs_lease l;
  if (const int rc = SetLease(fd, offset, length, type, flags, signal, sigval, 0, &l); rc != 0)
    return rc;
  if (id_out != nullptr) *id_out = l.id;
  return 0;
}

int leasefs_convert_lease(int fd, uint64_t id, uint64_t offset, uint64_t length, uint32_t type,
                          uint32_t flags, int signal, uint64_t sigval) {
  // id 0 would ask for a new lease, which a conversion must never do.
  if (id == 0) return -EINVAL;
  leasefs_lease l;
  return SetLease(fd, offset, length, type, flags, signal, sigval, id, &l);
}

int leasefs_release_lease(int fd, uint64_t offset, uint64_t length) {
  leasefs_lease l;
  return SetLease(fd, offset, length, LEASEFS_LEASE_UNLOCK, 0, 0, 0, 0, &l);
}

int leasefs_release_all(int fd) {
  // The daemon answers ENOENT when the open file held none; having none
  // afterwards is all this call promises.
  const int rc = leasefs_release_lease(fd, 0, 0);
  return rc == -ENOENT ? 0 : rc;
}

int leasefs_get_lease(int fd, uint64_t offset, struct leasefs_lease_info* info) {
  leasefs_getlease g{};
  g.offset = offset;
  if (ioctl(fd, LEASEFS_IOC_GETLEASE, &g) != 0) return LeaseError(fd, errno);
  *info = g.lease;
  return 0;
}

int leasefs_list_leases(int fd, uint64_t after, struct leasefs_lease_info* leases, size_t max,
                        size_t* count, int* more) {
  leasefs_lease_list list{};  // 11 KiB: on the stack, so that no call allocates
  list.after = after;
  if (ioctl(fd, LEASEFS_IOC_LIST_LEASES, &list) != 0) return LeaseError(fd, errno);
  // A daemon that broke its promise must not make us read past the array.
  if (list.count > LEASEFS_LIST_MAX) return -EPROTO;
  const size_t n = std::min<size_t>(list.count, max);
  std::copy_n(list.leases, n, leases);
  *count = n;
  if (more != nullptr) *more = n < list.count || (list.flags & LEASEFS_LIST_MORE) != 0;
  return 0;
}

int leasefs_read_events(int fd, uint64_t after, uint32_t timeout_ms, struct leasefs_event* events,
                        size_t max, size_t* count, uint64_t* lost) {
  leasefs_events req{};  // 10 KiB, on the stack as above
  req.after = after;
  req.timeout_ms = timeout_ms;
  if (ioctl(fd, LEASEFS_IOC_EVENTS, &req) != 0) return LeaseError(fd, errno);
  if (req.count > LEASEFS_EVENTS_MAX) return -EPROTO;
  // The ones left out are still in the log: the caller reads them next time.
  const size_t n = std::min<size_t>(req.count, max);
  std::copy_n(req.events, n, events);
  *count = n;
  if (lost != nullptr) *lost = req.lost;
  return 0;
}

}  // extern "C"
