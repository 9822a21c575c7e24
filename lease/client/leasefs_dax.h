/* leasefs_dax.h: the plain C API of the DAX path on leasefs files.
 *
 * A program that holds a layout lease on a range of a leasefs file maps the
 * pool blocks of that range into its address space, and from then on loads
 * and stores reach the pool with no daemon on the path (docs/dax.md). These
 * functions wrap LEASEFS_IOC_DAX_INFO, _DAX_MAP and _DAX_UNMAP of
 * <leasefs/ioctl.h> and do the mmap(2) calls. Depends on libc and the ABI
 * header only, like leasefs_lease.h, so that the LD_PRELOAD shim can use it;
 * no function allocates memory (the ioctl buffers live on the stack, about
 * 8 KiB at most).
 *
 * Trust model: the caller opens the pool itself (the path DAX_INFO names),
 * with its own credentials: whoever may open the pool may use DAX, as with a
 * /dev/dax device. The pool is opened once per process and mount (read-write
 * when a writable mapping asks for it, read-only otherwise) and kept open,
 * close-on-exec.
 *
 * Every function returns 0 or a negative errno value, as in leasefs_lease.h.
 * Thread safety: any thread may call any function; the per-mount cache of
 * pool descriptors takes no lock (its slots are claimed and published by
 * compare-and-swap), so a fork in the middle of a call leaves nothing locked
 * and fork handlers may call in.
 */
#ifndef LEASEFS_CLIENT_LEASEFS_DAX_H
#define LEASEFS_CLIENT_LEASEFS_DAX_H

#include <stddef.h>
#include <stdint.h>

#include "leasefs/ioctl.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LEASEFS_DAX_MAP_CALLS 8 /* DAX_MAP calls (and map ids) one mapping may take */

/* One DAX mapping made by leasefs_dax_map. */
struct leasefs_dax_mapping {
	void* addr;         /* start of the mapping: file byte `offset` */
	uint64_t offset;    /* file offset of addr (block-aligned) */
	uint64_t length;    /* bytes mapped (a multiple of the block size) */
	uint64_t covered;   /* bytes of it backed by the file's blocks; the rest
	                       (past the end of the file) is PROT_NONE */
	int writable;       /* the blocks were handed out for writing (LEASEFS_DAX_WRITE) */
	int map_flags;      /* MAP_SHARED or MAP_PRIVATE, as asked */
	uint64_t map_ids[LEASEFS_DAX_MAP_CALLS]; /* the daemon's mapping ids, one per DAX_MAP call */
	unsigned map_id_count;
	unsigned holes;       /* 1 if some of `covered` is a hole (anonymous zero pages) */
	uint64_t layout_hash; /* digest of the extents mapped (see leasefs_dax_adopt) */
};

/* leasefs_dax_map -- map file bytes [offset, offset + length) of `fd`
 * (block-aligned, the block size a multiple of the page size; length > 0)
 * with the calling process's lease on them.
 * prot: PROT_READ, optionally with PROT_WRITE and PROT_EXEC.
 * map_flags: MAP_SHARED (stores reach the file; PROT_WRITE needs a WRITE
 *   lease and fd open for writing, and the range then gets blocks of its own,
 *   so a writable mapping never has holes), or MAP_PRIVATE (the pool is
 *   mapped copy-on-write: stores stay private; any lease will do).
 * addr_hint: NULL, or an address to map at with MAP_FIXED semantics
 *   (whatever was mapped there is replaced, piece by piece, each piece in one
 *   mmap call; on failure the range is left PROT_NONE, still reserved).
 * Each extent is an mmap(MAP_FIXED) of the pool at the extent's pool offset;
 * holes are anonymous zero pages (read-only for MAP_SHARED); bytes past the
 * end of the file (rounded up to a block) are PROT_NONE.
 * Errors: those of LEASEFS_IOC_DAX_MAP (-EPERM: no covering lease; -EAGAIN:
 * it is breaking; -EBADF; -ENOSPC...), -EACCES (or open's error) when the
 * pool cannot be opened with the caller's credentials, -ESTALE when the pool
 * at the path is not the mounted one (uuid differs), -E2BIG when the range
 * needs more than LEASEFS_DAX_MAP_CALLS DAX_MAP calls (defragment the file),
 * -EPROTO when the daemon's answer makes no sense, -EINVAL for bad
 * arguments, and mmap's. On failure no map id stays recorded and (without
 * addr_hint) nothing stays mapped. */
int leasefs_dax_map(int fd, uint64_t offset, uint64_t length, int prot, int map_flags,
                    void* addr_hint, struct leasefs_dax_mapping* out);

/* leasefs_dax_unmap -- drop mapping `m`: munmap its address range (or, with
 * `keep_reserved` set, replace it by PROT_NONE memory, so that a late access
 * faults instead of reaching memory mapped there later), then confirm to
 * the daemon (DAX_UNMAP) that the blocks are no longer reachable. `fd`: any
 * file or directory of the mount. Returns the first error; every id is
 * confirmed even after one failed. */
int leasefs_dax_unmap(int fd, const struct leasefs_dax_mapping* m, int keep_reserved);

/* leasefs_dax_confirm -- DAX_UNMAP alone, for one map id (0: every mapping
 * of the calling process). -ENOENT: the process has no such mapping. */
int leasefs_dax_confirm(int fd, uint64_t map_id);

/* leasefs_dax_adopt -- after fork, in the child: record the calling process
 * as an owner of the blocks of `m` (which the child inherited), with DAX_MAP
 * of the same range in the same mode on `fd`, the same open file description
 * (so under the same lease), without touching the memory. On success
 * m->map_ids are the child's own. -ESTALE when the blocks handed out are not
 * those mapped (the layout changed: the child must drop the mapping), and
 * DAX_MAP's errors; on failure nothing is recorded for the child and `m` is
 * unchanged. */
int leasefs_dax_adopt(int fd, struct leasefs_dax_mapping* m);

/* leasefs_dax_pool_fd -- the process's descriptor of the pool of the mount
 * `fd` is on (opened on first use, checked against the mount's uuid, kept
 * open, close-on-exec; read-write if `writable`), for callers that map
 * extents themselves. Returns the descriptor (>= 0) or a negative errno:
 * -ENFILE when the process already uses the pools of 16 other mounts. */
int leasefs_dax_pool_fd(int fd, int writable);

#ifdef __cplusplus
}
#endif

#endif /* LEASEFS_CLIENT_LEASEFS_DAX_H */
