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
#ifndef LEASEFS_IOCTL_H
#define LEASEFS_IOCTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define LEASEFS_IOC_MAGIC 'L' /* numbers from 0x80: loop devices use 'L' 0x00-0x0f */

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
 * allows, online. Blocks shared with another file stay where they are. */
struct leasefs_defrag {
	__u64 extents_before; /* out: extents (runs of the block map) before */
	__u64 extents_after;  /* out: and after */
	__u64 blocks_moved;   /* out */
	__u64 reserved[2];    /* in: zero */
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
#define LEASEFS_EXTENT_QUARANTINED 0x4u /* also held by the quarantine */

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
	__u32 reserved;
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

#endif /* LEASEFS_IOCTL_H */
