/* leasefs_pin.h: the plain C API of pins on leasefs files (docs/pins.md).
 *
 * A pin registers a leased range of a file with a provider: the daemon's
 * soft NIC (peers then write and read it over TCP by its rkey, docs/softnic.md)
 * or an engine of the caller's own (DECLARED). Pins belong to a pin context,
 * a connected socket to the daemon that this library opens: it follows dup,
 * fork and SCM_RIGHTS like any descriptor, and its last close ends the
 * context and its pins. These functions wrap LEASEFS_IOC_PIN_INFO, _PIN,
 * _UNPIN and _PIN_LIST of <leasefs/ioctl.h>. Depends on libc and the ABI
 * header only, like leasefs_lease.h.
 *
 * Every function returns 0 or a negative errno value; a file of another
 * filesystem gives -ENOTTY, a daemon without pins -EOPNOTSUPP.
 * Thread safety: no state is kept; any thread may call any function.
 */
#ifndef LEASEFS_CLIENT_LEASEFS_PIN_H
#define LEASEFS_CLIENT_LEASEFS_PIN_H

#include <stddef.h>
#include <stdint.h>

#include "leasefs/ioctl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A pin context, as leasefs_pin_context_open fills it. */
struct leasefs_pin_context {
	int fd;            /* the context's descriptor (close-on-exec); -1 when closed */
	uint64_t id;       /* the context's id, from the daemon's HELLO */
	uint8_t token[16]; /* its token: whoever knows it and the id may pin in it */
};

/* leasefs_pin_get_info -- the daemon's pin socket and soft NIC (PIN_INFO), on
 * any file or directory `fd` of the mount. */
int leasefs_pin_get_info(int fd, struct leasefs_pin_info* out);

/* leasefs_pin_context_open -- opens a new pin context of the mount of `fd`:
 * asks PIN_INFO for the socket's name, connects, checks with SO_PEERCRED
 * that the daemon answers (its pid is PIN_INFO's), and reads the HELLO.
 * The descriptor is close-on-exec (clear FD_CLOEXEC to pass it to an exec'd
 * program). Errors: PIN_INFO's, connect's (-ECONNREFUSED when the daemon
 * closed it at once: its user has 256 contexts open), -EPROTO (not the
 * daemon, or a malformed HELLO), -ETIMEDOUT (no HELLO within 5 s). */
int leasefs_pin_context_open(int fd, struct leasefs_pin_context* out);

/* leasefs_pin_context_close -- closes the caller's descriptor of the
 * context (the context ends when its last descriptor, in any process, is
 * closed). Sets ctx->fd to -1. */
void leasefs_pin_context_close(struct leasefs_pin_context* ctx);

/* leasefs_pin_register -- registers [offset, offset + length) of the leased file `fd`
 * in `ctx` with `provider` (LEASEFS_PIN_SOFTNIC or _DECLARED) and flags
 * (LEASEFS_PIN_REMOTE_WRITE/_READ for SOFTNIC, 0 for DECLARED). On success
 * *pin_id and *rkey (either may be NULL; rkey is 0 for DECLARED) name it.
 * Errors: those of LEASEFS_IOC_PIN (include/leasefs/ioctl.h). */
int leasefs_pin_register(int fd, const struct leasefs_pin_context* ctx, uint64_t offset,
                         uint64_t length, uint32_t provider, uint32_t flags,
                         uint64_t* pin_id, uint64_t* rkey);

/* leasefs_pin_unregister -- ends pin `pin_id` of `ctx` (0: all of its pins); `fd` is
 * any file or directory of the mount. Errors: those of LEASEFS_IOC_UNPIN. */
int leasefs_pin_unregister(int fd, const struct leasefs_pin_context* ctx, uint64_t pin_id);

/* leasefs_pin_list_page -- one page of the mount's pins after pin id `after`
 * (see LEASEFS_IOC_PIN_LIST; out->flags has LEASEFS_LIST_MORE when there are
 * more: call again with the last pin_id). `out` is about 6 KiB. */
int leasefs_pin_list_page(int fd, uint64_t after, struct leasefs_pin_list* out);

/* leasefs_pin_wait_fenced -- waits up to timeout_ms (-1: forever, 0: just
 * look) for the daemon's next FENCED notice on `ctx` and gives its pin id and
 * rkey (either may be NULL). Errors: -ETIMEDOUT (none came), -EPIPE (the
 * daemon closed the context: it stopped), -EPROTO (a malformed frame). */
int leasefs_pin_wait_fenced(const struct leasefs_pin_context* ctx, int timeout_ms,
                            uint64_t* pin_id, uint64_t* rkey);

#ifdef __cplusplus
}
#endif

#endif /* LEASEFS_CLIENT_LEASEFS_PIN_H */
