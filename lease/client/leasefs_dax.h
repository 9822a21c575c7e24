/* leasefs_dax.h: the plain C API of the DAX path on leasefs files.
 *
 * A program that holds a layout lease on a range of a leasefs file maps the
 * pool blocks of that range into its address space, and from then on loads
 * and stores reach the pool with no daemon on the path (docs/dax.md). These
 * functions wrap LEASEFS_IOC_DAX_INFO, _DAX_MAP and _DAX_UNMAP of
 * <leasefs/ioctl.h> and do the mmap(2) calls. Depends on libc and the ABI
 * header only, like leasefs_lease.h, so that the LD_PRELOAD shim can use it.
 *
 * Trust model: the caller opens the pool itself (the path DAX_INFO names),
 * with its own credentials: whoever may open the pool may use DAX, as with a
 * /dev/dax device. The pool is opened once per process and kept open.
 *
 * Every function returns 0 or a negative errno value, as in leasefs_lease.h.
 */
#ifndef LEASEFS_CLIENT_LEASEFS_DAX_H
#define LEASEFS_CLIENT_LEASEFS_DAX_H

#include <stddef.h>
#include <stdint.h>

#include "leasefs/ioctl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One DAX mapping made by leasefs_dax_map. */
struct leasefs_dax_mapping {
	void* addr;         /* start of the mapping: file byte `offset` */
	uint64_t offset;    /* file offset of addr (block-aligned) */
	uint64_t length;    /* bytes mapped (a multiple of the block size) */
	uint64_t covered;   /* bytes of it backed by the file's blocks; the rest
	                       (past the end of the file) is PROT_NONE */
	int writable;
	uint64_t map_ids[8]; /* the daemon's mapping ids, one per DAX_MAP call */
	unsigned map_id_count;
	unsigned reserved;
};

/* leasefs_dax_map -- map file bytes [offset, offset + length) of `fd`
 * (block-aligned; length > 0) with the calling process's lease on them.
 * prot: PROT_READ, or PROT_READ|PROT_WRITE (needs a WRITE lease and fd open
 * for writing). `addr_hint`: NULL, or an address to map at (MAP_FIXED
 * semantics: whatever was mapped there is replaced). Each extent is an
 * mmap(MAP_SHARED|MAP_FIXED) of the pool at the extent's pool offset; holes
 * of a read-only mapping are anonymous zero pages; bytes past the end of the
 * file are PROT_NONE.
 * Errors: those of LEASEFS_IOC_DAX_MAP (-EPERM: no covering lease; -EAGAIN:
 * it is breaking; -ENOSPC...), -EACCES when the pool cannot be opened with
 * the caller's credentials, -ESTALE when the pool at the path is not the
 * mounted one (uuid differs), -E2BIG when the range needs more than 8 DAX_MAP
 * calls (more than 8 × LEASEFS_DAX_MAX extents: defragment the file), and
 * mmap's. On failure nothing stays mapped and no mapping stays recorded. */
int leasefs_dax_map(int fd, uint64_t offset, uint64_t length, int prot, void* addr_hint,
                    struct leasefs_dax_mapping* out);

/* leasefs_dax_unmap -- drop mapping `m`: munmap its address range (or, with
 * `keep_reserved` set, replace it by PROT_NONE memory, so that a late access
 * faults instead of reaching memory mapped there later), then confirm to
 * the daemon (DAX_UNMAP) that the blocks are no longer reachable. `fd`: any
 * file or directory of the mount. */
int leasefs_dax_unmap(int fd, const struct leasefs_dax_mapping* m, int keep_reserved);

/* leasefs_dax_confirm -- DAX_UNMAP alone, for one map id (0: every mapping
 * of the calling process). */
int leasefs_dax_confirm(int fd, uint64_t map_id);

/* leasefs_dax_pool_fd -- the process's descriptor of the pool of the mount
 * `fd` is on (opened on first use, checked against the mount's uuid, kept
 * open, close-on-exec), for callers that map extents themselves. */
int leasefs_dax_pool_fd(int fd, int writable);

#ifdef __cplusplus
}
#endif

#endif /* LEASEFS_CLIENT_LEASEFS_DAX_H */
