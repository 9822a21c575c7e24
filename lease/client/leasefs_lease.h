/* leasefs_lease.h: the plain C API of layout leases on leasefs files.
 *
 * Thin wrappers of the ioctls in <leasefs/ioctl.h> ("the ABI version",
 * "layout leases", "the event log"), for C programs, other languages' FFIs
 * and the LD_PRELOAD shim; the C++ API (lease/client/lease.h) is built on it.
 * Depends on libc and the ABI header only.
 *
 * Every function returns 0 on success or a negative errno value; none of them
 * reports through errno (whose value they may change). An `fd` is the
 * caller's descriptor of a file (or, where said, of any file or directory) of
 * a mounted leasefs. A lease belongs to the open file description `fd` refers
 * to, as with F_SETLEASE: every descriptor of it (dup, fork) may release or
 * convert it, and its last close releases it.
 *
 * A daemon that does not serve leases (no LEASEFS_FEATURE_LEASES) makes the
 * lease functions fail with -EOPNOTSUPP; a file of another filesystem with
 * -ENOTTY. These are told apart only after a command failed with ENOTTY, so a
 * success costs exactly one ioctl (one FUSE round trip).
 *
 * Thread safety: the functions keep no state; any thread may call them.
 */
#ifndef LEASEFS_CLIENT_LEASEFS_LEASE_H
#define LEASEFS_CLIENT_LEASEFS_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "leasefs/ioctl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* leasefs_abi_version -- the daemon's ABI version and feature bits.
 * On any file or directory of the mount. Either pointer may be NULL.
 * Errors: -ENOTTY (not leasefs), -EBADF, or whatever the ioctl gives. */
int leasefs_abi_version(int fd, uint32_t* version, uint64_t* features);

/* leasefs_set_lease -- take a layout lease on [offset, offset + length) of
 * the file (length 0: from offset to the end of the file, whatever its size).
 * type: LEASEFS_LEASE_READ or LEASEFS_LEASE_WRITE; flags: LEASEFS_LEASE_*
 * (EXCLUSIVE, UNBREAKABLE, NONBLOCK). On a break the holder's fd polls
 * POLLPRI; if `signal` is not 0 that signal is also queued to the process
 * with si_code SI_QUEUE and si_value `sigval`. si_fd overlaps the low 32 bits
 * of si_value, so passing the fd number as sigval makes si_fd name it, as
 * with F_SETSIG. Without NONBLOCK, waits while a break is in progress on the
 * range. On success *id_out (may be NULL) is the lease's id.
 * Errors (the daemon's, include/leasefs/ioctl.h and docs/leases.md):
 *   -EINVAL       bad type, flags or signal; not a regular file
 *   -EACCES       EXCLUSIVE or UNBREAKABLE by somebody not the file's owner
 *   -EEXIST       the range overlaps another lease of this open file
 *   -EAGAIN       a lease of another open file conflicts
 *   -EWOULDBLOCK  (NONBLOCK) a break is in progress on the range
 *   -EINTR        a signal interrupted the wait
 *   -ENOLCK       the caller's user holds too many leases
 *   -EOPNOTSUPP, -ENOTTY  see above */
int leasefs_set_lease(int fd, uint64_t offset, uint64_t length, uint32_t type, uint32_t flags,
                      int signal, uint64_t sigval, uint64_t* id_out);

/* leasefs_convert_lease -- change the type, flags and notification of lease
 * `id` of this open file in one step; [offset, offset + length) must be the
 * lease's own range (-EINVAL otherwise). WRITE to WRITE|UNBREAKABLE (or
 * READ|UNBREAKABLE) is [Sep19]'s conversion: it fails with -EAGAIN if the
 * lease is not active, was broken since it was granted, or is gone; the
 * holder then starts again. Other errors as leasefs_set_lease. */
int leasefs_convert_lease(int fd, uint64_t id, uint64_t offset, uint64_t length, uint32_t type,
                          uint32_t flags, int signal, uint64_t sigval);

/* leasefs_release_lease -- release this open file's lease of exactly
 * [offset, offset + length) (a revoked one too). -ENOENT if there is none.
 * offset 0 and length 0 releases every lease of the open file (which, for a
 * lease of the whole file, is the same thing: it overlaps all others), and
 * gives -ENOENT when it held none. */
int leasefs_release_lease(int fd, uint64_t offset, uint64_t length);

/* leasefs_release_all -- release every lease of this open file (revoked
 * ones too); 0 also when it held none. */
int leasefs_release_all(int fd);

/* leasefs_get_lease -- this open file's lease covering byte `offset`, in
 * *info; info->state is LEASEFS_STATE_NONE (and the rest zero) if none. */
int leasefs_get_lease(int fd, uint64_t offset, struct leasefs_lease_info* info);

/* leasefs_list_leases -- every lease of the mount with an id above `after`,
 * in id order, one ioctl's worth: up to `max` (and LEASEFS_LIST_MAX) of them
 * in leases[0 .. *count). *more (may be NULL) is set to 1 when there are
 * further ones: call again with after = leases[*count - 1].id. On any file
 * or directory of the mount. */
int leasefs_list_leases(int fd, uint64_t after, struct leasefs_lease_info* leases, size_t max,
                        size_t* count, int* more);

/* leasefs_read_events -- the event log after sequence number `after`: up to
 * `max` (and LEASEFS_EVENTS_MAX) events in events[0 .. *count), waiting up to
 * timeout_ms for the first one when there is none yet (the daemon waits at
 * most a second; 0 does not wait). Continue with after = the last seq. *lost
 * (may be NULL) is how many events after `after` the log already forgot. On
 * any file or directory of the mount.
 * Errors: -EBUSY when too many callers wait at once (try again), -EINTR, and
 * the above. */
int leasefs_read_events(int fd, uint64_t after, uint32_t timeout_ms, struct leasefs_event* events,
                        size_t max, size_t* count, uint64_t* lost);

#ifdef __cplusplus
}
#endif

#endif /* LEASEFS_CLIENT_LEASEFS_LEASE_H */
