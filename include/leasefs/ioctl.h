/* The ioctl interface of a mounted leasefs: what a program (leasectl, the
 * client library, a test) sends on its own file descriptor of a leasefs file.
 *
 * Plain C, no dependencies beyond <linux/ioctl.h> and <linux/types.h>, so any
 * program can include it. Every command encodes its direction and size
 * (_IOR/_IOW/_IOWR), because that is the only kind of ioctl the kernel's FUSE
 * passes to a daemon ("restricted" ioctls: fixed-size buffers, at most
 * 16 KiB). Offsets and lengths are in bytes.
 *
 * Why these exist: the kernel refuses fallocate's COLLAPSE_RANGE,
 * INSERT_RANGE and UNSHARE_RANGE, and FICLONE/FICLONERANGE/FS_IOC_FIEMAP, on
 * FUSE before a daemon sees them, so leasefs offers them as its own ioctls
 * with the semantics and errnos of XFS. docs/block_map.md describes each.
 *
 * Descriptors that name a second file. Where a command names a second file
 * (the source of a clone, the donor of a move, and every later command that
 * names one), it does so by a file descriptor of the calling thread. One rule
 * holds for all of them:
 *   1. The daemon takes its own duplicate of the caller's open file in one
 *      step (pidfd_open + pidfd_getfd) and checks only that duplicate, so no
 *      other thread of the caller can swap the file behind the number. It
 *      first checks, through the pidfd, that the thread still has the fsuid
 *      and fsgid the request came with (a killed thread's pid may be reused).
 *   2. A number that is not open, or is open O_PATH, gives EBADF.
 *   3. The daemon must be allowed to take the caller's descriptors (ptrace
 *      rules: root may; a daemon run by the caller's own user may take them
 *      from a dumpable caller). If not, or if the caller is outside the
 *      mount's pid namespace, the command fails with EPERM and the daemon
 *      logs why. There is no weaker fallback.
 *   4. Then each command checks what the kernel's own command checks, in the
 *      kernel's order: a file of another filesystem, or of another leasefs
 *      mount, gives EXDEV; a clone source must be a regular file (EISDIR for
 *      a directory, EINVAL otherwise) open for reading, with the destination
 *      open for writing and not O_APPEND (EBADF); a move donor must be open
 *      for writing (EBADF), then on this filesystem (EXDEV, where ext4 says
 *      EINVAL), then a regular file (EINVAL).
 * The daemon holds its duplicate until the command is done, so the file
 * cannot go away under it. Duplicates of other filesystems' files are closed
 * off the request path (a close may wait on that filesystem); a user with 16
 * such closes still pending gets EAGAIN.
 */
/* Attribute flags (chattr +i, +a; docs/attr-flags.md): every command below
 * that would change an immutable or append-only file (the block-map
 * commands, a WRITE lease, a writable DAX mapping, a PIN) fails with EPERM. */
#ifndef LEASEFS_IOCTL_H
#define LEASEFS_IOCTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define LEASEFS_IOC_MAGIC 'L' /* numbers from 0x80: loop devices use 'L' 0x00-0x0f */

/* --- the ABI version -----------------------------------------------------
 * On any file or directory of the mount. The version grows when a command
 * changes incompatibly; a feature bit is set for each group of commands the
 * daemon serves. Every struct's reserved fields must be zero on the way in
 * (EINVAL otherwise) and are zero on the way out, so that later versions can
 * give them a meaning. */
#define LEASEFS_ABI_VERSION 1
#define LEASEFS_FEATURE_BLOCK_MAP (1ull << 0) /* collapse/insert/unshare, clone, defrag, bmap, move_ext */
#define LEASEFS_FEATURE_LEASES (1ull << 1)    /* layout leases, the lease list and the event log */
#define LEASEFS_FEATURE_DAX (1ull << 2)       /* the DAX path: pool info, map, unmap, mapping list */
#define LEASEFS_FEATURE_PINS (1ull << 3)      /* pins: pin info, pin, unpin, pin list (docs/pins.md) */
#define LEASEFS_FEATURE_PIN_VERBS (1ull << 4) /* PIN accepts LEASEFS_PIN_VERBS (docs/pins.md) */
#define LEASEFS_FEATURE_REMOUNT (1ull << 5)   /* LEASEFS_IOC_REMOUNT (docs/mount.md) */
#define LEASEFS_FEATURE_DEFRAG_RANGE (1ull << 6) /* LEASEFS_IOC_DEFRAG takes start and length */

struct leasefs_version {
	__u32 abi_version; /* out: LEASEFS_ABI_VERSION of the daemon */
	__u32 reserved0;
	__u64 features;    /* out: LEASEFS_FEATURE_* */
	__u64 reserved[4];
};
#define LEASEFS_IOC_VERSION _IOR(LEASEFS_IOC_MAGIC, 0x86, struct leasefs_version)

/* --- fallocate modes FUSE does not pass ---------------------------------
 * On the file the ioctl is issued on, which must be open for writing.
 * COLLAPSE: removes [offset, offset+length) and shifts the rest of the file
 *   down; offset and length block-aligned, offset+length < file size
 *   (EINVAL otherwise).
 * INSERT: shifts [offset, EOF) up by length, leaving a hole; block-aligned,
 *   offset < file size (EINVAL otherwise), EFBIG past the size limit.
 * UNSHARE: gives the range blocks of its own (copying shared blocks), so that
 *   later writes cannot fail for lack of space; any alignment. */
struct leasefs_range {
	__u64 offset;
	__u64 length;
	__u32 flags;    /* none defined yet: must be zero (EINVAL otherwise) */
	__u32 reserved; /* must be zero */
};
#define LEASEFS_IOC_COLLAPSE_RANGE _IOW(LEASEFS_IOC_MAGIC, 0x80, struct leasefs_range)
#define LEASEFS_IOC_INSERT_RANGE _IOW(LEASEFS_IOC_MAGIC, 0x81, struct leasefs_range)
#define LEASEFS_IOC_UNSHARE_RANGE _IOW(LEASEFS_IOC_MAGIC, 0x82, struct leasefs_range)

/* --- reflink ---------------------------------------------------------------
 * Issued on the destination (open for writing, not O_APPEND); src_fd is the
 * source (open for reading; see "Descriptors that name a second file").
 * Laid out like FICLONERANGE's struct file_clone_range, with the same rules:
 * src_length 0 means "to the end of the source"; offsets and length
 * block-aligned, except that the range may end at the source's end of file
 * when that is also at or past the destination's end of file; ranges of one
 * file must not overlap (EINVAL). The destination's blocks in the range are
 * replaced by the source's, shared (refcount + 1); later writes to either
 * copy first (copy on write). */
struct leasefs_clone_range {
	__s64 src_fd;
	__u64 src_offset;
	__u64 src_length;
	__u64 dest_offset;
};
#define LEASEFS_IOC_CLONE_RANGE _IOW(LEASEFS_IOC_MAGIC, 0x83, struct leasefs_clone_range)

/* --- defragmentation ---------------------------------------------------------
 * Relocates the file's extents into as few contiguous runs as free space
 * allows, online. Blocks shared with another file stay where they are.
 * start and length zero: the whole file. Otherwise only the blocks holding
 * bytes [start, start + length) move (length 0: to the end of the file), the
 * first of them after the block before `start` when there is room: a file
 * done range after range, in order, ends up as the whole of it would (which
 * lets a caller report its progress between calls). The extent counts are
 * the whole file's, before and after the call. A daemon without
 * LEASEFS_FEATURE_DEFRAG_RANGE took those two fields as reserved: EINVAL
 * unless zero. */
struct leasefs_defrag {
	__u64 extents_before; /* out: extents (runs of the block map) before */
	__u64 extents_after;  /* out: and after */
	__u64 blocks_moved;   /* out */
	__u64 start;          /* in: file offset (rounded down to a block) */
	__u64 length;         /* in: bytes from start; 0: to the end of the file */
};
#define LEASEFS_IOC_DEFRAG _IOWR(LEASEFS_IOC_MAGIC, 0x84, struct leasefs_defrag)

/* --- the block map ------------------------------------------------------------
 * The file's extents from file offset `start` on, in file order, as runs of
 * pool blocks with one refcount and one set of flags each (an extent whose
 * blocks are shared in part is reported as several runs). Holes are not
 * reported. A run that begins before `start` is reported from the block
 * holding `start` on. `next` is the end of the last run returned (`start`
 * when none is); call again with start = next while LEASEFS_BMAP_MORE is
 * set. */
#define LEASEFS_EXTENT_UNWRITTEN 0x1u   /* allocated, reads as zeros */
#define LEASEFS_EXTENT_SHARED 0x2u      /* refcount > 1 (reflink) */
#define LEASEFS_EXTENT_QUARANTINED 0x4u /* a DAX mapping may reach it: kept from reuse
                                         * (quarantined) if the file lets go of it */

struct leasefs_extent {
	__u64 file_offset;
	__u64 pool_offset; /* byte offset in the pool */
	__u64 length;
	__u32 flags;    /* LEASEFS_EXTENT_* */
	__u32 refcount; /* references to each block of the run */
};

#define LEASEFS_BMAP_MAX 200
#define LEASEFS_BMAP_MORE 0x1u

struct leasefs_bmap {
	__u64 start;      /* in: file offset to list from */
	__u64 next;       /* out: file offset to continue from */
	__u64 file_size;  /* out */
	__u32 block_size; /* out: pool block size */
	__u32 count;      /* out: entries filled in extents[] */
	__u32 flags;      /* out: LEASEFS_BMAP_MORE */
	__u32 reserved;   /* in: zero */
	struct leasefs_extent extents[LEASEFS_BMAP_MAX];
};
#define LEASEFS_IOC_BMAP _IOWR(LEASEFS_IOC_MAGIC, 0x85, struct leasefs_bmap)

/* --- ext4's EXT4_IOC_MOVE_EXT, for fio's e4defrag engine ------------------------
 * Issued on the original file (open for reading and writing); donor_fd
 * names the donor (open for writing; see "Descriptors that name a second
 * file"). Moves the original's data for blocks
 * [orig_start, orig_start + len) into the donor's blocks at donor_start
 * (which the donor must have allocated, e.g. by fallocate) and exchanges the
 * two ranges' blocks, so the original keeps its contents on new blocks.
 * Units are blocks. moved_len returns how many blocks were moved. */
struct leasefs_move_extent {
	__u32 reserved; /* must be zero */
	__u32 donor_fd;
	__u64 orig_start;
	__u64 donor_start;
	__u64 len;
	__u64 moved_len;
};
#define LEASEFS_EXT4_IOC_MOVE_EXT _IOWR('f', 15, struct leasefs_move_extent)

/* --- layout leases (docs/leases.md) ---------------------------------------------
 * A layout lease promises its holder that the mapping of a byte range of the
 * file to pool blocks (and, where the range reaches the end of the file, the
 * file size) stays put until the lease is broken. It belongs to the open file
 * description it was taken on, as F_SETLEASE's do, and is released when that
 * is closed for the last time or when the process that took it dies.
 *
 * Types and flags, after the 2019 proposals:
 *   READ:  shared read-layout lease (F_RDLCK|F_LAYOUT). Breakable; any layout
 *          change breaks it, the holder's own too.
 *   WRITE: write-layout lease (F_WRLCK|F_LAYOUT). The holder's own layout
 *          changes (through this open file) do not break it; everybody
 *          else's do. Only one WRITE lease may cover a byte.
 *   EXCLUSIVE ([v2] F_LAYOUT|F_EXCLUSIVE): the only lease on its range, and
 *          unbreakable: a change by anybody else fails with ETXTBSY, one by
 *          the holder with EDEADLOCK.
 *   UNBREAKABLE ([Sep19] F_UNBREAK) with READ or WRITE: a change that would
 *          break it fails with ETXTBSY (EDEADLOCK for the holder's own change
 *          under a READ lease). Only the file's owner (or CAP_LEASE) may take
 *          it (EACCES). A WRITE|UNBREAKABLE lease cannot coexist with other
 *          leases on its range.
 * A request with `id` set converts that lease of this open file in one step
 * (type, flags; the range must be the lease's own, EINVAL otherwise): from
 * WRITE to READ|UNBREAKABLE or WRITE|UNBREAKABLE this is [Sep19]'s
 * conversion. It fails with EAGAIN if the lease is not active, or was ever
 * broken since it was granted, or is gone (released, revoked), so that the
 * holder starts again. A request with `id` 0 whose range overlaps one of this
 * open file's leases gives EEXIST.
 * LEASEFS_LEASE_UNLOCK releases the lease with exactly that range, or every
 * lease of the open file when offset and length are both 0; ENOENT if there
 * is none to release.
 *
 * Who may take one: the file's owner (or root, standing in for CAP_LEASE),
 * or anybody on a descriptor open for writing; others get EACCES, since a
 * lease lets its holder make writers wait (Linux lets only the owner).
 * Regular files only (EINVAL). No WRITE lease on an immutable or append-only
 * file (EPERM); setting either flag breaks every lease on the file.
 *
 * Limits: a user other than root may hold 100,000 leases from 1024
 * processes (ENOLCK beyond), and have 16 requests waiting at once, for
 * breaks, for leases or for events (EAGAIN beyond).
 *
 * Conflicts: READ leases coexist with each other and with one WRITE lease;
 * EXCLUSIVE and WRITE|UNBREAKABLE coexist with nothing. A conflicting lease
 * gives EAGAIN. While a break is in progress on a range, a new lease on it
 * waits until the break is over (EWOULDBLOCK with LEASEFS_LEASE_NONBLOCK).
 *
 * Breaks: the holder learns of a break by POLLPRI on its file descriptor
 * and, if it asked, by a signal: `signal` is sent to the process that took
 * the lease (if the lease's taker may still signal it: same real or saved
 * uid, as Linux checks F_SETSIG) with si_code SI_QUEUE and si_value =
 * `sigval`; si_fd overlaps the
 * low 32 bits of si_value, so a holder that passes its fd number as sigval
 * reads it in si_fd, as with F_SETSIG. The holder releases the lease; if it
 * does not within the mount's lease-break time, the lease is revoked. A
 * revoked lease stays listed as REVOKED on its open file until released. */
#define LEASEFS_LEASE_UNLOCK 0u
#define LEASEFS_LEASE_READ 1u
#define LEASEFS_LEASE_WRITE 2u

#define LEASEFS_LEASE_EXCLUSIVE 0x1u   /* with READ or WRITE */
#define LEASEFS_LEASE_UNBREAKABLE 0x2u
#define LEASEFS_LEASE_NONBLOCK 0x4u    /* in: do not wait for a break in progress */

struct leasefs_lease {
	__u64 offset;    /* in */
	__u64 length;    /* in: 0 = from offset to the end, whatever the size */
	__u32 type;      /* in: LEASEFS_LEASE_READ, _WRITE or _UNLOCK */
	__u32 flags;     /* in: LEASEFS_LEASE_EXCLUSIVE, _UNBREAKABLE, _NONBLOCK */
	__s32 signal;    /* in: sent on a break; 0 for none (POLLPRI only) */
	__u32 reserved0;
	__u64 sigval;    /* in: the signal's si_value */
	__u64 id;        /* in: 0, or the lease to convert (see above); out: the lease's id */
	__u64 reserved[2];
};
#define LEASEFS_IOC_SETLEASE _IOWR(LEASEFS_IOC_MAGIC, 0x87, struct leasefs_lease)

/* States of a lease. */
#define LEASEFS_STATE_NONE 0u     /* no lease covers the byte */
#define LEASEFS_STATE_ACTIVE 1u
#define LEASEFS_STATE_BREAKING 2u /* a break was sent; release it */
#define LEASEFS_STATE_REVOKED 3u  /* not released in time: gone; release it to forget it */
#define LEASEFS_STATE_ZOMBIE 4u   /* its open file closed or its process died while it
                                     counted pins: it lives on until the last pin goes
                                     (docs/pins.md) */

/* One lease, as the state query and the list report it. Times are
 * CLOCK_MONOTONIC nanoseconds (0 when not breaking). */
struct leasefs_lease_info {
	__u64 id;
	__u64 ino;
	__u64 offset;
	__u64 length;        /* 0 = to the end */
	__u32 type;
	__u32 flags;
	__u32 state;         /* LEASEFS_STATE_* */
	__s32 holder_pid;    /* the process that took it */
	__u64 open_file;     /* id of the open file description it belongs to */
	__u64 breaking_since;
	__u64 break_deadline;
	__u32 pins;          /* pins counted on it (docs/pins.md) */
	__u32 reserved0;
	__u64 reserved[1];
};

/* The lease of this open file that covers byte `offset` (state NONE if
 * none), on the file the ioctl is issued on. */
struct leasefs_getlease {
	__u64 offset;    /* in */
	__u64 reserved0; /* in: zero */
	struct leasefs_lease_info lease; /* out */
};
#define LEASEFS_IOC_GETLEASE _IOWR(LEASEFS_IOC_MAGIC, 0x88, struct leasefs_getlease)

/* Every lease of the mount (issued on any file or directory of it), in id
 * order from id `after` + 1 on. Call again with after = the last id returned
 * while LEASEFS_LIST_MORE is set. */
#define LEASEFS_LIST_MAX 128
#define LEASEFS_LIST_MORE 0x1u
struct leasefs_lease_list {
	__u64 after;  /* in */
	__u32 count;  /* out */
	__u32 flags;  /* out: LEASEFS_LIST_MORE */
	__u64 reserved[2];
	struct leasefs_lease_info leases[LEASEFS_LIST_MAX];
};
#define LEASEFS_IOC_LIST_LEASES _IOWR(LEASEFS_IOC_MAGIC, 0x89, struct leasefs_lease_list)

/* --- the event log ----------------------------------------------------------------
 * What happened to leases, in order, as numbered events (issued on any file or
 * directory of the mount). Returns the events after sequence number `after`,
 * waiting up to `timeout_ms` for the first one if there are none yet (0: do
 * not wait). The daemon keeps the last LEASEFS_EVENTS_KEPT events; `lost` says
 * how many after `after` were already forgotten. */
#define LEASEFS_EVENT_GRANT 1u      /* a lease was granted (or converted) */
#define LEASEFS_EVENT_BREAK 2u      /* a break began: holders notified */
#define LEASEFS_EVENT_RELEASE 3u    /* the holder released it (or closed, or died: see `why`) */
#define LEASEFS_EVENT_REVOKE 4u     /* the break time ran out: revoked */
#define LEASEFS_EVENT_REFUSED 5u    /* a change was refused (unbreakable): `err` */
#define LEASEFS_EVENT_BREAK_DONE 6u /* the breaker may proceed (`err` 0), or gave up (`err`) */
#define LEASEFS_EVENT_ZOMBIE 7u     /* closed or orphaned with pins: kept (`why`: CLOSE, EXIT) */
#define LEASEFS_EVENT_FENCE 8u      /* its pins were fenced at the break time; revoked next */

/* `why` of BREAK, REFUSED and BREAK_DONE: the kind of change (as the engine's
 * layout guard is told it). */
#define LEASEFS_CHANGE_UNMAP 0u            /* blocks may leave or move: truncate, fallocate, clone... */
#define LEASEFS_CHANGE_ALLOCATING_WRITE 1u /* a write that maps new blocks or extends the file */
#define LEASEFS_CHANGE_OVERWRITE 2u        /* a write into blocks the file owns alone */

#define LEASEFS_WHY_UNLOCK 0u
#define LEASEFS_WHY_CLOSE 1u
#define LEASEFS_WHY_EXIT 2u

#define LEASEFS_EVENTS_MAX 128
#define LEASEFS_EVENTS_KEPT 4096
struct leasefs_event {
	__u64 seq;
	__u64 time;       /* CLOCK_REALTIME nanoseconds */
	__u32 type;       /* LEASEFS_EVENT_* */
	__u32 why;        /* RELEASE: LEASEFS_WHY_*; BREAK, REFUSED, BREAK_DONE: LEASEFS_CHANGE_* */
	__u64 lease_id;   /* 0 for BREAK_DONE */
	__u64 ino;
	__u64 offset;
	__u64 length;
	__u32 lease_type; /* LEASEFS_LEASE_* and flags << 8 */
	__s32 holder_pid;
	__s32 actor_pid;  /* who caused it (breaker, releaser) */
	__s32 err;        /* an errno, or 0 */
};
struct leasefs_events {
	__u64 after;      /* in */
	__u32 timeout_ms; /* in */
	__u32 count;      /* out */
	__u64 lost;       /* out */
	__u64 reserved[2];
	struct leasefs_event events[LEASEFS_EVENTS_MAX];
};
#define LEASEFS_IOC_EVENTS _IOWR(LEASEFS_IOC_MAGIC, 0x8a, struct leasefs_events)

/* --- the DAX path (docs/dax.md) ----------------------------------------------------
 * A lease holder maps the pool blocks of its file straight into its address
 * space: it learns where the pool is (DAX_INFO), opens it itself (the right
 * to open the pool is the right to use DAX, as with a /dev/dax device),
 * asks for the blocks of a range of the file (DAX_MAP) and maps them with
 * mmap(2) of the pool at the pool offsets given. Loads and stores then reach
 * the pool with no daemon on the path; read(2) and write(2) of the file see
 * them at once, and they see read(2)'s and write(2)'s.
 *
 * The daemon records every range it hands out as reachable by the calling
 * process (persistently, in the pool's quarantine table), until the process
 * confirms that it has dropped its mapping (DAX_UNMAP) or dies. A block of
 * such a range that its file lets go (a truncate, a punch, a defrag...) is
 * given to no other file meanwhile: it stays in the quarantine, where a late
 * store can harm nothing. */

/* On any file or directory of the mount. */
struct leasefs_dax_info {
	__u64 pool_bytes; /* out: bytes of the pool the filesystem spans */
	__u8 uuid[16];    /* out: the pool's uuid, as its superblock has it: check it after open */
	__u32 block_size; /* out */
	__u32 path_len;   /* out: strlen(path) */
	__u64 reserved[4];
	char path[4096];  /* out: absolute path of the pool as the daemon opened it, NUL-terminated */
};
#define LEASEFS_IOC_DAX_INFO _IOR(LEASEFS_IOC_MAGIC, 0x8b, struct leasefs_dax_info)

/* DAX_MAP, on the leased file: the pool blocks of [offset, offset + length)
 * (both block-aligned, length > 0; EINVAL otherwise), for the calling
 * process. The open file must hold an active lease (not breaking or revoked)
 * covering the whole range: any lease for a read-only mapping; a WRITE lease
 * (with any flags) for LEASEFS_DAX_WRITE when the range needs blocks of
 * its own (below), any lease when it does not (stores change no layout),
 * and the file open for writing for LEASEFS_DAX_WRITE (EBADF otherwise).
 * No covering lease, or a READ one where blocks are needed: EPERM; one that
 * is breaking: EAGAIN.
 *
 * Before handing out a range for writing, the daemon gives it blocks of its
 * own as the holder's own change under its WRITE lease: holes get zeroed
 * blocks, preallocated (unwritten) blocks are zeroed and marked written,
 * blocks shared by reflink are copied. A read-only range gets its unwritten
 * blocks zeroed and marked written too (so that a later write into them,
 * which changes no layout, is seen through the mapping); its holes stay
 * holes (LEASEFS_DAX_HOLE: map zeros; a write that fills one breaks the
 * lease first). Blocks at or past the end of the file (rounded up to a
 * block) are not handed out: `length` on the way out says how many bytes
 * the extents cover, which is less than asked at the end of the file or
 * when LEASEFS_DAX_MAX extents were not enough (ask again for the rest).
 *
 * Filling holes for a writable mapping breaks other processes' leases on
 * the range first; on a descriptor opened O_NONBLOCK the call starts those
 * breaks and fails with EWOULDBLOCK instead of waiting, as every layout
 * change through such a descriptor does.
 *
 * Errors: EPERM and EAGAIN as above, and EPERM for a writable mapping of an
 * immutable or append-only file; EINVAL (alignment, flags, reserved
 * fields, not a regular file); ENOSPC (the pool has no blocks for the holes,
 * or the quarantine table has no room for the records: docs/dax.md);
 * EDQUOT (the caller's user has as many records as a user may); and what a
 * layout change may answer (EINTR, EWOULDBLOCK...). */
#define LEASEFS_DAX_WRITE 0x1u /* in: the mapping will be written */
#define LEASEFS_DAX_HOLE 0x1u  /* extent flag: no block; reads as zeros */
#define LEASEFS_DAX_MAX 128

struct leasefs_dax_extent {
	__u64 file_offset;
	__u64 pool_offset; /* byte offset in the pool (0 for a hole) */
	__u64 length;
	__u32 flags;       /* LEASEFS_DAX_HOLE */
	__u32 reserved;
};

struct leasefs_dax_map {
	__u64 offset;    /* in */
	__u64 length;    /* in: bytes asked for; out: bytes the extents cover */
	__u32 flags;     /* in: LEASEFS_DAX_WRITE */
	__u32 count;     /* out: entries filled in extents[] */
	__u64 map_id;    /* out: names this mapping for DAX_UNMAP */
	__u64 file_size; /* out */
	__u8 pool_uuid[16]; /* out: the pool's uuid (as DAX_INFO's): a client that keeps the
	                       pool open checks it on every map, since a device number, and
	                       thus a cache keyed by it, may come back for another mount */
	struct leasefs_dax_extent extents[LEASEFS_DAX_MAX];
};
#define LEASEFS_IOC_DAX_MAP _IOWR(LEASEFS_IOC_MAGIC, 0x8c, struct leasefs_dax_map)

/* DAX_UNMAP, on any file or directory of the mount: the calling process
 * confirms that it no longer maps the pool blocks of mapping `map_id` (it
 * has munmap'ed them, or replaced them by other memory). Blocks of it that
 * no file owns any more leave the quarantine. map_id 0: every mapping of
 * the calling process. Errors: ENOENT (no such mapping of this process). */
struct leasefs_dax_unmap {
	__u64 map_id;
	__u64 reserved[3];
};
#define LEASEFS_IOC_DAX_UNMAP _IOW(LEASEFS_IOC_MAGIC, 0x8d, struct leasefs_dax_unmap)

/* The mappings of the mount and the quarantine, on any file or directory of
 * it, in map_id order after `after` (call again with after = the last
 * map_id while LEASEFS_LIST_MORE is set). One record per contiguous pool
 * run of a mapping. */
#define LEASEFS_DAX_REC_WRITE 0x1u   /* handed out for writing */
#define LEASEFS_DAX_REC_CLOSED 0x2u  /* its open file is closed (the process still lives) */
#define LEASEFS_DAX_REC_UNLEASED 0x4u /* no lease covers it any more (released or revoked) */
#define LEASEFS_DAX_REC_RESTART 0x8u /* made before the daemon last started */

struct leasefs_dax_record {
	__u64 map_id;
	__u64 ino;
	__u64 file_offset;
	__u64 pool_offset;
	__u64 length;
	__u64 quarantined; /* bytes of it no file owns any more, kept from reuse */
	__s32 owner_pid;
	__u32 flags;       /* LEASEFS_DAX_REC_* */
	__u64 open_file;   /* 0 once closed, or after a restart */
	__u64 reserved[2];
};
#define LEASEFS_DAX_LIST_MAX 128
struct leasefs_dax_list {
	__u64 after;  /* in */
	__u32 count;  /* out */
	__u32 flags;  /* out: LEASEFS_LIST_MORE */
	__u64 quarantined_total; /* out: bytes in quarantine, whole pool */
	__u64 records_total;     /* out: records in use */
	__u64 records_max;       /* out: records the pool's table holds */
	__u64 reserved[2];
	struct leasefs_dax_record records[LEASEFS_DAX_LIST_MAX];
};
#define LEASEFS_IOC_DAX_LIST _IOWR(LEASEFS_IOC_MAGIC, 0x8e, struct leasefs_dax_list)

/* --- pins --------------------------------------------------------------------------
 * A pin is a registered memory region over leased blocks of a file: the
 * daemon's soft NIC (or an engine of the client's own) may write into them at
 * any moment, with no page fault the filesystem could see. Rules and policies:
 * docs/pins.md; the soft NIC's wire protocol: docs/softnic.md.
 *
 * A pin belongs to a pin context. A process gets one by connecting to the
 * daemon's pin socket (an abstract unix socket; PIN_INFO names it): the
 * connected descriptor is the context, and the daemon's first 48-byte frame
 * on it (HELLO, docs/pins.md "Context frames") carries the context's id and
 * its 128-bit token. Whoever can read that descriptor can name the context;
 * its last close ends the context and its pins. */

/* What the daemon writes on a context's socket, little-endian: HELLO first
 * (id = the context, token), then FENCED for each of its pins that a break
 * fenced (id = the pin, rkey = its rkey, 0 for a declared or verbs pin).
 * The daemon never waits for the reader: a client that does not read loses
 * notices. */
#define LEASEFS_PIN_FRAME_MAGIC 0x5843504cu /* "LPCX" in memory */
#define LEASEFS_PIN_FRAME_VERSION 1
#define LEASEFS_PIN_FRAME_HELLO 1
#define LEASEFS_PIN_FRAME_FENCED 2
struct leasefs_pin_frame {
	__u32 magic;
	__u16 version;
	__u16 type;
	__u64 id;
	__u64 rkey;
	__u64 reserved;
	__u8 token[16]; /* HELLO only */
};

/* On any file or directory of the mount. */
#define LEASEFS_PIN_INFO_SOFTNIC 0x1u /* the soft NIC is serving (softnic_* are valid) */
struct leasefs_pin_info {
	__s32 daemon_pid;       /* out: check it against SO_PEERCRED of the socket */
	__u32 flags;            /* out: LEASEFS_PIN_INFO_* */
	__u32 socket_name_len;  /* out: bytes of socket_name */
	__u16 softnic_port;     /* out: TCP port of the soft NIC */
	__u16 reserved0;
	char socket_name[108];  /* out: the pin socket's abstract name, without its leading
	                           NUL byte (not NUL-terminated: socket_name_len bytes) */
	char softnic_address[16]; /* out: the soft NIC's IPv4 address, dotted, NUL-terminated */
	__u64 reserved[4];
};
#define LEASEFS_IOC_PIN_INFO _IOR(LEASEFS_IOC_MAGIC, 0x8f, struct leasefs_pin_info)

/* PIN, on the data file: registers [offset, offset + length) of the file
 * (block-aligned, 0 < length <= LEASEFS_PIN_MAX_BYTES, inside the file) with
 * `provider`, for context `context` named with its `token`.
 *
 * The open file the ioctl comes through must hold an active EXCLUSIVE lease
 * (READ or WRITE), or a WRITE|UNBREAKABLE one, covering the whole range, taken
 * by the calling process (EPERM otherwise; EAGAIN while it is breaking). The
 * context must have been created by the caller's user, or the caller is root
 * (EPERM); an unknown or closed context gives EBADF. LEASEFS_PIN_REMOTE_WRITE
 * needs the file open for writing (EBADF).
 *
 * Before registering, the daemon makes the range's blocks the file's own, as
 * DAX_MAP does for a writable mapping (holes get zeroed blocks, unwritten
 * blocks are zeroed, reflinked blocks copied); filling holes and copying is
 * a layout change, which only WRITE|UNBREAKABLE lets its holder make (see
 * EDEADLOCK). The blocks are recorded as reachable (the DAX path's
 * quarantine records, docs/dax.md): by the daemon for the pin's life, and
 * for a DECLARED or VERBS pin by the calling process too (its engine may
 * outlive a daemon crash); DAX_UNMAP does not drop them, the pin's end does.
 * DECLARED and VERBS need the file open for writing (EBADF): their engine
 * may write whatever the flags say.
 *
 * A VERBS pin is a range the caller registered with an RDMA device of its
 * own (rdma-core's ibv_reg_mr): at a fence the daemon sends the context a
 * FENCED frame for it, the holder deregisters its MR and then UNPINs; until
 * then the blocks stay quarantined. An ODP registration needs no pin.
 *
 * Out: the pin's id, and for SOFTNIC the rkey peers name it by (64 random
 * bits, never reused while the daemon lives) and the pool's block size.
 * Errors: EINVAL (alignment, length, flags, provider, reserved fields, not a
 * regular file, past the end of the file), EPERM, EAGAIN, EBADF as above;
 * EOPNOTSUPP (SOFTNIC on a mount without the soft NIC); ENOLCK (the context's
 * user holds 4096 pins); ENOSPC, EDQUOT (as DAX_MAP: no blocks, no records);
 * E2BIG (the range is in too many pieces: defragment the file); EDEADLOCK
 * (the range has holes or reflinked blocks, and giving it blocks of its own
 * is a layout change that an EXCLUSIVE lease refuses its own holder:
 * fallocate and unshare the range before taking the lease); EAGAIN also when
 * the holder changed the range's blocks while it was being pinned (ask
 * again). A ZOMBIE lease (its taker died) is nobody's: EPERM. */
#define LEASEFS_PIN_SOFTNIC 1u  /* provider: the daemon's soft NIC serves it (an rkey) */
#define LEASEFS_PIN_DECLARED 2u /* provider: the client's own engine; it cannot be fenced */
#define LEASEFS_PIN_VERBS 3u    /* provider: the client's RDMA device (rdma-core); the daemon
                                   asks it to deregister at a fence (LEASEFS_FEATURE_PIN_VERBS) */
#define LEASEFS_PIN_REMOTE_WRITE 0x1u /* peers may write the range (SOFTNIC, VERBS) */
#define LEASEFS_PIN_REMOTE_READ 0x2u  /* peers may read it (SOFTNIC, VERBS) */
#define LEASEFS_PIN_MAX_BYTES (1ull << 30)

struct leasefs_pin {
	__u64 context;   /* in */
	__u8 token[16];  /* in: the context's token, from its HELLO frame */
	__u64 offset;    /* in */
	__u64 length;    /* in */
	__u32 provider;  /* in: LEASEFS_PIN_SOFTNIC, _DECLARED or _VERBS */
	__u32 flags;     /* in: LEASEFS_PIN_REMOTE_* (SOFTNIC, VERBS: at least one; DECLARED: 0) */
	__u64 pin_id;    /* out */
	__u64 rkey;      /* out: SOFTNIC only */
	__u64 reserved[4];
};
#define LEASEFS_IOC_PIN _IOWR(LEASEFS_IOC_MAGIC, 0x90, struct leasefs_pin)

/* UNPIN, on any file or directory of the mount: ends pin `pin_id` of the
 * context, or all of the context's pins for 0. A fenced pin is listed until
 * its context unpins it (or closes). Errors: EBADF (no such context), EPERM
 * (wrong token, another user's context), ENOENT (no such pin of it). */
struct leasefs_unpin {
	__u64 context;
	__u8 token[16];
	__u64 pin_id;
	__u64 reserved[3];
};
#define LEASEFS_IOC_UNPIN _IOW(LEASEFS_IOC_MAGIC, 0x91, struct leasefs_unpin)

/* The pins of the mount, on any file or directory of it, in pin id order
 * after `after` (call again with after = the last pin_id while
 * LEASEFS_LIST_MORE is set). A user other than root sees the pins of its
 * own contexts, and the soft NIC's totals. */
#define LEASEFS_PIN_REC_FENCED 0x1u   /* fenced at a break: its provider refuses it */
#define LEASEFS_PIN_REC_WRITE 0x2u    /* LEASEFS_PIN_REMOTE_WRITE */
#define LEASEFS_PIN_REC_READ 0x4u     /* LEASEFS_PIN_REMOTE_READ */
#define LEASEFS_PIN_REC_CLOSED 0x8u   /* the open file it was made through is closed */

struct leasefs_pin_record {
	__u64 pin_id;
	__u64 context;
	__u64 ino;
	__u64 offset;
	__u64 length;
	__u64 lease_id;
	__u64 open_file;
	__u64 rkey;          /* SOFTNIC */
	__s32 creator_pid;   /* the process that created the context */
	__u32 uid;           /* its user */
	__u32 provider;      /* LEASEFS_PIN_SOFTNIC, _DECLARED, _VERBS */
	__u32 flags;         /* LEASEFS_PIN_REC_* */
	__u64 ops;           /* SOFTNIC: operations served on it (writes + reads) */
	__u64 bytes;         /* SOFTNIC: bytes moved */
	__u64 refused;       /* SOFTNIC: operations naming it refused (bounds, permission, fenced) */
	__u64 reserved[2];
};
#define LEASEFS_PIN_LIST_MAX 64
struct leasefs_pin_list {
	__u64 after;    /* in */
	__u32 count;    /* out */
	__u32 flags;    /* out: LEASEFS_LIST_MORE */
	__u64 contexts; /* out: contexts open (the caller's own, unless root) */
	/* out: the soft NIC's refusals of operations that named no rkey it
	   knows, a fenced one, or one out of bounds or permission, all users
	   (guessing and replaying peers show here); malformed frames */
	__u64 refused_bad_rkey;
	__u64 refused_fenced;
	__u64 refused_other;
	__u64 malformed_frames;
	__u64 reserved[2];
	struct leasefs_pin_record pins[LEASEFS_PIN_LIST_MAX];
};
#define LEASEFS_IOC_PIN_LIST _IOWR(LEASEFS_IOC_MAGIC, 0x92, struct leasefs_pin_list)

/* --- remount (docs/mount.md) ----------------------------------------------
 * On the mount's root directory (EINVAL elsewhere), from root with
 * CAP_SYS_ADMIN only (EPERM otherwise). How `mount -o remount,...` reaches
 * the daemon that serves the mount: the leasefs binary, run by mount.fuse3
 * with "remount" among its options, sends them here and makes the kernel's
 * part (mount(2) with MS_REMOUNT) itself. As for mount(2), the options are
 * the mount's whole new state: read-only only if "ro" is named; the atime
 * rule as the atime options name it (kept when none is named); every other
 * option must name what the mount already has (the mount point's flags,
 * nosuid, nodev, noexec..., are the kernel's alone and pass unread).
 * The ioctl succeeds for every well-formed request from root: `error` says
 * whether the remount can be (DRY_RUN) or was made, `message` why not.
 * While read-only the daemon refuses every change with EROFS, the leasefs
 * ioctls included (the kernel's read-only flag stops only the VFS's own
 * writes). */
#define LEASEFS_REMOUNT_DRY_RUN 0x1u /* check only, change nothing */
#define LEASEFS_ATIME_RELATIME 0u
#define LEASEFS_ATIME_STRICT 1u
#define LEASEFS_ATIME_NEVER 2u
#define LEASEFS_REMOUNT_OPTIONS_MAX 2048
#define LEASEFS_REMOUNT_MESSAGE_MAX 1024
struct leasefs_mount_state {
	__u32 read_only;  /* 1: read-only */
	__u32 atime;      /* LEASEFS_ATIME_* */
	__u32 nodiratime; /* 1: listing a directory leaves its atime alone */
	__u32 reserved;
};
struct leasefs_remount {
	__u32 flags;  /* in: LEASEFS_REMOUNT_DRY_RUN or 0 */
	__s32 error;  /* out: 0, or why not: EINVAL (an option that cannot change
	                 live, or a bad one), EROFS (read-write asked of a mount
	                 made with -o ro), EBUSY (read-only asked while DAX
	                 mappings or pins are live) */
	struct leasefs_mount_state before; /* out: the state before the call */
	struct leasefs_mount_state after;  /* out: after it (DRY_RUN: what it would be) */
	char options[LEASEFS_REMOUNT_OPTIONS_MAX]; /* in: the -o list, NUL-terminated */
	char message[LEASEFS_REMOUNT_MESSAGE_MAX]; /* out: NUL-terminated; "" when error is 0 */
};
#define LEASEFS_IOC_REMOUNT _IOWR(LEASEFS_IOC_MAGIC, 0x93, struct leasefs_remount)

#endif /* LEASEFS_IOCTL_H */
