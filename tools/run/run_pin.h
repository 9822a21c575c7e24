/* run_pin.h: what the shim of leasefs-run offers its verbs layer
 * (docs/verbs.md): pinning a range of one of the process's DAX mappings with
 * the daemon's soft NIC, so that a memory registration over a leasefs file
 * is a pin with every rule of docs/pins.md.
 *
 * The shim exports these two C functions; the verbs layer, a separate
 * preloaded library, finds them with dlsym(RTLD_DEFAULT) and goes without
 * pins when they are absent. Both take the shim's lock and may wait on the
 * daemon (a FUSE ioctl or two).
 */
#ifndef LEASEFS_TOOLS_RUN_RUN_PIN_H
#define LEASEFS_TOOLS_RUN_RUN_PIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct leasefs_run_pin {
	uint64_t pin_id;        /* the daemon's pin id */
	uint64_t rkey;          /* the soft NIC's rkey of the pinned range */
	uint64_t region_offset; /* where `addr` lies inside the pinned range */
	uint64_t region_length; /* the pinned range: `len` rounded out to whole blocks */
	uint16_t softnic_port;  /* the daemon's soft NIC */
	char softnic_address[16];
};

/* leasefs_run_pin_range -- pins the file blocks behind [addr, addr + len)
 * with the daemon's soft NIC, with `flags` LEASEFS_PIN_REMOTE_WRITE and/or
 * _READ. The range must lie in DAX mappings of one file, contiguous in the
 * file. The shim's lease on the file becomes EXCLUSIVE while the file has
 * pins (a layout change by anybody else then meets the mount's pinned_break
 * policy); a break of it ends the pins before the mappings go.
 * Returns 0, or -ENOENT (no DAX mapping at addr: not a leasefs file, or the
 * kernel's mapping), -EINVAL (the range leaves the mapping or the file is
 * not contiguous behind it), -EAGAIN (another lease on the file: it cannot
 * be made EXCLUSIVE), -ENOSPC (the shim's pin table is full), or the
 * errno of the conversion, PIN_INFO, the pin context or LEASEFS_IOC_PIN. */
int leasefs_run_pin_range(const void* addr, size_t len, uint32_t flags,
                          struct leasefs_run_pin* out);

/* leasefs_run_pin_range_verbs -- as leasefs_run_pin_range, but the pin's
 * provider is LEASEFS_PIN_VERBS: the caller registered the range with a
 * real RDMA device itself. No rkey or soft NIC in *out. Before the shim
 * ends such a pin on its own (a break, an exec), it calls the fence hook
 * with the pin's id, so that the device stops reaching the blocks first. */
int leasefs_run_pin_range_verbs(const void* addr, size_t len, uint32_t flags,
                                struct leasefs_run_pin* out);

/* leasefs_run_set_fence_hook -- `hook(pin_id)` is called before the shim
 * ends a VERBS pin itself; it runs under the shim's lock and must call no
 * function of the shim. */
void leasefs_run_set_fence_hook(void (*hook)(uint64_t pin_id));

/* leasefs_run_unpin -- ends a pin of leasefs_run_pin_range. A pin the shim
 * no longer knows (a break or an exec ended it) gives 0: nothing to do. */
int leasefs_run_unpin(uint64_t pin_id);

/* leasefs_run_set_invalidate_hook -- from now on, `hook` is called with
 * every range of the process's memory that is about to be unmapped
 * (munmap, mremap's old range) or replaced under a DAX mapping (a break),
 * before it happens: the verbs layer stops its soft NIC's copies into
 * registrations there, as a NIC's on-demand paging follows the MMU's
 * invalidations. The hook runs in the unmapping thread, possibly under the
 * shim's lock, and must call no function of the shim. */
void leasefs_run_set_invalidate_hook(void (*hook)(const void* addr, size_t len));

#ifdef __cplusplus
}
#endif

#endif /* LEASEFS_TOOLS_RUN_RUN_PIN_H */
