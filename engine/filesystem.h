// Filesystem: the POSIX namespace and file data of one leasefs pool.
//
// This is the storage engine's public face. It knows nothing of FUSE: the
// daemon (fusefs/daemon) turns FUSE requests into these calls and their
// results into exactly one reply each. Inode numbers are the pool's own
// (root = 1), so they can be handed to the kernel unchanged.
//
// Errors are errno values in the returned Status, chosen as a local Linux
// filesystem (ext4, tmpfs) would choose them; each method lists its own.
// Every method also returns EROFS when a modifying call reaches a read-only
// mount, and ENOSPC when the pool (blocks, inodes or journal) is full.
//
// Permissions: every call that takes a Cred checks POSIX permissions for it
// (owner/group/other bits, access ACLs, root's overrides, sticky
// directories, setgid inheritance, the chown/chmod rules, suid/sgid
// clearing; docs/acl.md for the ACLs). The kernel may
// still walk cached names without asking (FUSE), so the daemon either lets
// the kernel check too (default_permissions) or turns that caching off.
//
// Privileges on change: every call that changes a regular file's bytes or
// size (Write, SetAttr of the size, Open and Create with O_TRUNC, Fallocate
// in every mode, CopyFileRange and CloneRange into it, MoveExtents' donor)
// first drops what Linux's file_remove_privs drops: the security.capability
// xattr, whoever the caller, and setuid/setgid unless the caller is root
// (CAP_FSETID). See RemovePrivs, and data_ops.cc for the rule's sources.
//
// Attribute flags (docs/attr-flags.md): every call that would change an
// immutable inode (its bytes, size, block map, attributes, xattrs, names in
// it if it is a directory, the names that link it) fails with EPERM, as
// does one that would change an append-only file other than by adding bytes
// at its end (or remove its names, or names from an append-only directory),
// with the order of checks of Linux's VFS and ext4. Each method's EPERM
// below includes these.
//
// Layout guard: every call that changes a file's layout (its block map, its
// size, or the sharing of its blocks) first asks the guard set by
// SetLayoutGuard, under the writer lock, once per file per step, before it
// changes anything (privileges included), and fails with the guard's error
// unchanged (ERESTART, ETXTBSY, EDEADLOCK, ...), leaving no trace. Each such
// method below says what it asks; engine/layout_guard.h has the contract.
// Reads, opens without O_TRUNC, attribute and xattr changes and namespace
// calls ask nothing; neither does freeing an inode (a leased file is open,
// hence referenced, so it is never freed).
//
// Thread safety: all methods may be called from any thread concurrently.
// Calls that only read take a shared lock; calls that change anything take
// the writer lock.
//
// Lifetime of inodes: besides directory entries (nlink), an inode is kept by
// "references" the caller holds (the kernel's lookup count, for FUSE). Every
// method documented as "+1 reference" adds one on success; Forget drops them.
// An inode with no links and no references is freed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "base/result.h"
#include "engine/layout_guard.h"
#include "engine/media.h"
#include "engine/superblock.h"

namespace leasefs::engine {

using Ino = uint64_t;

// The flag the kernel adds to an open's flags when it opens a file to
// execute it (__FMODE_EXEC, include/linux/fs.h; FUSE passes it in OPEN, and
// open(2) strips it from a caller's flags). Open then checks execute
// permission instead of read.
inline constexpr int kOpenExec = 0x20;

// Who is asking. Supplementary groups are fetched only when a permission
// check needs them (for FUSE that means reading /proc), then cached.
class Cred {
 public:
  Cred(uid_t uid, gid_t gid, pid_t pid = 0,
       std::function<std::vector<gid_t>()> fetch_groups = nullptr)
      : uid_(uid), gid_(gid), pid_(pid), fetch_groups_(std::move(fetch_groups)) {}
  static Cred Root() { return Cred(0, 0); }

  uid_t uid() const noexcept { return uid_; }
  gid_t gid() const noexcept { return gid_; }
  pid_t pid() const noexcept { return pid_; }
  bool is_root() const noexcept { return uid_ == 0; }
  // True if `g` is the primary group or one of the supplementary groups.
  bool InGroup(gid_t g) const;
  // The open file description the call comes through, as an id the caller
  // chose (0: none, e.g. truncate(2) by path). The layout guard uses it to
  // tell a lease holder's own changes from everybody else's.
  uint64_t open_file() const noexcept { return open_file_; }
  Cred& set_open_file(uint64_t id) noexcept {
    open_file_ = id;
    return *this;
  }
  // The caller's umask, for the calls that create an inode: applied to the
  // mode asked for unless the parent directory has a default ACL, which
  // replaces it (POSIX ACLs, docs/acl.md). 0 unless set: callers that pass
  // a mode already masked need do nothing.
  mode_t umask() const noexcept { return umask_; }
  Cred& set_umask(mode_t m) noexcept {
    umask_ = m & 0777;
    return *this;
  }

 private:
  uid_t uid_;
  gid_t gid_;
  pid_t pid_;
  uint64_t open_file_ = 0;
  mode_t umask_ = 0;
  std::function<std::vector<gid_t>()> fetch_groups_;
  mutable std::optional<std::vector<gid_t>> groups_;
};

// An inode's attributes as handed to the caller.
struct Entry {
  struct stat attr {};
  // Changes each time the inode number is reused, and differs between two
  // formats of one pool (the slot's count mixed with the pool's uuid): with
  // the number it names the inode for good (file handles, docs/handles.md).
  uint64_t generation = 0;
  int64_t btime_ns = 0;  // birth time (statx's STATX_BTIME): set at create, never changed
  uint32_t attr_flags = 0;  // FS_*_FL, as GetAttrFlags reports them
};

// What SetAttr changes: a mask of these bits, and the values.
struct SetAttrArgs {
  enum : unsigned {
    kMode = 1u << 0,
    kUid = 1u << 1,
    kGid = 1u << 2,
    kSize = 1u << 3,
    kAtime = 1u << 4,     // set atime to atime_ns
    kMtime = 1u << 5,     // set mtime to mtime_ns
    kAtimeNow = 1u << 6,  // set atime to the current time
    kMtimeNow = 1u << 7,  // set mtime to the current time
    kCtime = 1u << 8,     // set ctime to ctime_ns
  };
  unsigned valid = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t size = 0;
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  // The size change comes through a file descriptor open for writing
  // (ftruncate): no write-permission check, as the open already did it.
  bool via_open_file = false;
};

// One directory entry for ReadDir.
struct DirEntry {
  std::string_view name;
  Ino ino = 0;
  unsigned type = 0;             // DT_*
  uint64_t next_cookie = 0;      // pass to ReadDir to continue after this entry
  const Entry* entry = nullptr;  // attributes, when ReadDir was asked for them
};

// When a read updates atime, as the mount options of a local filesystem say.
// The kernel leaves atime to a FUSE daemon, so the engine applies the rule.
enum class AtimeMode {
  kRelatime,  // relatime (the default): when atime is not after mtime or
              // ctime, or is a day old
  kStrict,    // strictatime: on every read
  kNever,     // noatime: never
};

struct MountOptions {
  bool read_only = false;  // also: no read updates atime
  // Reads of files (read, exec) and of directories (readdir).
  AtimeMode atime = AtimeMode::kRelatime;
  bool nodiratime = false;  // reading a directory never updates its atime
  // Free blocks kept back so that writes into preallocated space can still
  // grow a file's extent chain on a full pool (statfs's f_bavail leaves them
  // out). Unset: about 0.2% of the data area, between 16 and 4096 blocks.
  std::optional<uint64_t> reserve_blocks;
};

// What Mount found and did, for the daemon's log line.
struct MountReport {
  bool journal_replayed = false;
  bool was_clean = true;  // the previous unmount was clean
  uint64_t orphans_reclaimed = 0;
  uint64_t inodes_in_use = 0;
  bool upgraded = false;  // an older pool was upgraded to the current format
  // The marks when the mount was done (docs/pool_format.md "Lazily
  // initialized tables"): initialized inode slots and refcount blocks.
  uint64_t inode_mark = 0;
  uint64_t refcount_mark = 0;
  double seconds = 0;  // time the mount took
};

class Filesystem {
 public:
  // Mounts the pool on `media`: validates the superblock, replays the
  // journal, loads the in-memory indexes, reclaims orphans and marks the pool
  // mounted.
  // Errors: EUCLEAN (corrupt pool; the message is one line naming the
  // problem), EOPNOTSUPP (newer format).
  static Result<std::unique_ptr<Filesystem>> Mount(std::unique_ptr<Media> media,
                                                   const MountOptions& opts,
                                                   MountReport* report = nullptr);
  // Marks the pool cleanly unmounted. The object must not be used after.
  void Unmount();
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  // Makes the mount read-only, or read-write again, while it stays mounted
  // (a remount; mount_state.cc). Going read-only waits for the change under
  // way, then refuses every change (EROFS) and marks the pool clean, its
  // lazily kept timestamps persisted, as an unmount would; going read-write
  // marks it mounted again and frees the unlinked inodes whose last
  // reference went meanwhile, and the records of read-only DAX mappings that
  // ended meanwhile. With `dry_run`, only says whether it could.
  // Errors: EROFS (read-write asked of a pool mounted read-only: it is
  // mapped privately), EBUSY (read-only asked while writable DAX mappings
  // or pins hold reach records: they may store into the pool; read-only
  // mappings may stay).
  Status SetReadOnly(bool read_only, bool dry_run = false);
  bool read_only() const;
  // How much of the inode and refcount tables is initialized now.
  Marks TableMarks() const;
  // Changes MountOptions::atime and nodiratime while mounted.
  void SetAtime(AtimeMode atime, bool nodiratime);

  // Sets the guard every layout change asks first (engine/layout_guard.h);
  // nullptr: none. The guard must outlive its use. REQUIRES: before the
  // filesystem is used from several threads.
  void SetLayoutGuard(LayoutGuard* guard);

  // --- References -------------------------------------------------------

  // Adds `n` references to `ino` (e.g. an entry handed out by READDIRPLUS).
  void Ref(Ino ino, uint64_t n = 1);
  // Drops `n` references; frees the inode if it has neither links nor refs.
  void Forget(Ino ino, uint64_t n);

  // --- Namespace ----------------------------------------------------------

  // +1 reference. Errors: ENOENT, ENOTDIR (parent), EACCES (search),
  // ENAMETOOLONG.
  Result<Entry> Lookup(const Cred& c, Ino parent, std::string_view name);
  // Errors: ENOENT (stale inode number).
  Result<Entry> GetAttr(Ino ino);
  // For file handles (export_ops.cc, docs/handles.md): inode `ino` itself,
  // and the parent of directory `dir`, by number, with no permission check
  // (the kernel asks only for callers that may bypass search permission, and
  // checks every later access as usual). +1 reference.
  // Errors: ENOENT (no such inode, or no longer linked), ENOTDIR.
  Result<Entry> LookupInode(Ino ino);
  Result<Entry> LookupParent(Ino dir);
  // A size change asks the layout guard (kUnmap from the block holding the
  // smaller size to the end, with the sizes); setting the size it has asks
  // nothing.
  // Errors: ENOENT, EPERM (not owner; chown by non-root), EACCES (utimes
  // "now" or truncate without write permission), EISDIR (size of a
  // directory), EINVAL (size of a special file), EFBIG, and what the layout
  // guard answers.
  Result<Entry> SetAttr(const Cred& c, Ino ino, const SetAttrArgs& args);
  // Creates a regular file, device, FIFO or socket (type in `mode`). +1
  // reference. Mknod, Mkdir and Create apply the parent's default ACL, or
  // else c.umask(), to `mode`, and store the ACLs the new inode inherits in
  // the same transaction (docs/acl.md); Symlink neither. Errors: EEXIST,
  // ENOENT (parent gone), ENOTDIR, EACCES, ENAMETOOLONG, EINVAL (unknown
  // type), EPERM (device node by non-root; a whiteout, character device
  // 0/0, is anybody's to make), ENOSPC (also: the inherited ACLs do not fit
  // the xattr block), EIO (the parent's default ACL is damaged).
  Result<Entry> Mknod(const Cred& c, Ino parent, std::string_view name, mode_t mode, dev_t rdev);
  // +1 reference. Errors: as Mknod, and EMLINK (parent has too many links).
  Result<Entry> Mkdir(const Cred& c, Ino parent, std::string_view name, mode_t mode);
  // +1 reference. Errors: as Mknod, and ENAMETOOLONG (target > 4095 bytes),
  // ENOENT (empty target).
  Result<Entry> Symlink(const Cred& c, Ino parent, std::string_view name, std::string_view target);
  // +1 reference. An inode with no links can be linked only if Tmpfile made
  // it linkable and it has had no name since. Errors: EPERM (directory),
  // EMLINK, EEXIST, ENOENT (also: an unlinked inode), EACCES.
  Result<Entry> Link(const Cred& c, Ino ino, Ino new_parent, std::string_view new_name);
  // Errors: ENOENT, EISDIR, EACCES, EPERM (sticky directory).
  Status Unlink(const Cred& c, Ino parent, std::string_view name);
  // Errors: ENOENT, ENOTDIR, ENOTEMPTY, EACCES, EPERM (sticky), EBUSY (root).
  Status Rmdir(const Cred& c, Ino parent, std::string_view name);
  // flags: 0, RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT (leaves a
  // whiteout, a character device 0/0 owned by c, at the source name; may go
  // with NOREPLACE). One transaction either way. Renaming a name onto
  // another name of the same inode changes nothing (and leaves no whiteout).
  // Errors: ENOENT, EEXIST (NOREPLACE), ENOTDIR, EISDIR, ENOTEMPTY, EINVAL
  // (a directory into its own subtree; unknown flags; EXCHANGE with another
  // flag), EACCES, EPERM (sticky), EMLINK, ENOSPC (no inode for the
  // whiteout).
  Status Rename(const Cred& c, Ino parent, std::string_view name, Ino new_parent,
                std::string_view new_name, unsigned flags);
  // Errors: ENOENT, EINVAL (not a symlink).
  Result<std::string> Readlink(Ino ino);

  // --- Files --------------------------------------------------------------

  // Checks that `flags` (O_ACCMODE, O_TRUNC, kOpenExec) are allowed and
  // truncates on O_TRUNC, which asks the layout guard (kUnmap from 0 to the
  // end, size to 0) when the file is not empty. Errors: ENOENT, EACCES (also:
  // kOpenExec of a file that is not regular), EISDIR (write access to a
  // directory), and what the layout guard answers.
  Result<Entry> Open(const Cred& c, Ino ino, int flags);
  // O_TMPFILE: creates a regular file in no directory (nlink 0), as `c`
  // would create one in `parent` (permissions, group, the parent's default
  // ACL or else c.umask(), as Mknod), in one transaction;
  // it is an orphan until Link names it (only without O_EXCL in `flags`),
  // so the next mount reclaims it if it was never linked. +1 reference.
  // `parent` may have been removed (rmdir while open), as on ext4.
  // Errors: ENOENT (no such inode), ENOTDIR, EACCES (no write and search
  // permission on parent), ENOSPC, EIO (as Mknod).
  Result<Entry> Tmpfile(const Cred& c, Ino parent, mode_t mode, int flags);
  // Creates and opens a regular file. +1 reference. Errors: as Mknod; EEXIST
  // only with O_EXCL (otherwise an existing file is opened, as Open does,
  // O_TRUNC and its layout guard question included).
  Result<Entry> Create(const Cred& c, Ino parent, std::string_view name, mode_t mode, int flags);
  // Reads up to `len` bytes at `off` (fewer at end of file). Calls `sink`
  // once with segments that point into the pool (or at zeros for holes),
  // valid only during the call: reply from inside it. Errors: ENOENT, EISDIR.
  Status Read(Ino ino, uint64_t off, size_t len,
              const std::function<void(const struct iovec* iov, int count)>& sink);
  // Writes the concatenated segments at `off`. Returns the byte count, which
  // is short only when the pool filled up part way. The data, and the size
  // and block map changes it causes, are durable when this returns. Asks the
  // layout guard about the bytes it writes (after clamping to the size
  // limit): kAllocatingWrite if it maps new blocks (WouldAllocate), else
  // kOverwrite, with the size change when it extends the file. A write of
  // no bytes asks nothing.
  // `append`: the write comes through a descriptor opened with O_APPEND,
  // the only kind that may write an append-only file, and then only at its
  // end of file.
  // Errors: ENOENT, EISDIR, EFBIG, ENOSPC (nothing could be written), EPERM
  // (immutable; append-only and not `append` at the end of file), and what
  // the layout guard answers.
  Result<size_t> Write(const Cred& c, Ino ino, uint64_t off, const struct iovec* src, int count,
                       bool append = false);
  // Whether a write of `len` bytes at `off` would allocate (map new blocks
  // into the file: fill a hole, copy a shared block, or extend the file), as
  // the write would report it to the layout guard if made now. False for
  // errors (the write would fail). For the daemon's decision whether a write
  // must break leases before it is made (-o write_break=unmap-only).
  bool WouldAllocate(Ino ino, uint64_t off, uint64_t len);
  // Makes earlier writes to `ino` durable (they already are; this only
  // drains). Errors: ENOENT.
  Status Fsync(Ino ino, bool datasync);
  // fallocate(2). mode: 0 or FALLOC_FL_KEEP_SIZE (preallocation),
  // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE (with
  // or without KEEP_SIZE), FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE
  // and FALLOC_FL_UNSHARE_RANGE (with or without KEEP_SIZE), with XFS's
  // rules. Every mode is atomic across a crash. Every mode asks the layout
  // guard (kUnmap): collapse and insert from `off` to the end, with the size
  // change; the others for the range rounded out to blocks, with the size
  // change when they grow the file.
  // Errors: ENOENT, EISDIR, ENODEV (not a regular file), EINVAL (len 0;
  // collapse/insert unaligned or reaching EOF), EOPNOTSUPP (other modes or
  // combinations), EFBIG, ENOSPC (nothing is changed then), and what the
  // layout guard answers.
  Status Fallocate(const Cred& c, Ino ino, int mode, uint64_t off, uint64_t len);
  // whence: SEEK_DATA or SEEK_HOLE (others: EINVAL). Unwritten extents count
  // as holes. Errors: ENXIO (off at or past end of file), EINVAL.
  Result<uint64_t> Lseek(Ino ino, uint64_t off, int whence);

  // --- Block map (docs/block_map.md) ---------------------------------------

  // Makes dst's bytes [dst_off, dst_off + len) share src's blocks for
  // [src_off, src_off + len) (src may equal dst). len 0: to src's end of
  // file. Offsets and length must be block-aligned, except that the range
  // may end at src's end of file if that reaches dst's end of file too.
  // Returns the bytes cloned. Atomic across a crash (an unfinished clone is
  // finished at the next mount). Asks the layout guard twice (kUnmap), for
  // src's blocks (they become shared) and then dst's, with dst's size change
  // if it grows; a clone of no bytes asks nothing.
  // A range mapped for writing through DAX cannot be shared: a holder whose
  // lease is revoked may still store through its mapping, and those stores
  // must never reach another file. So a clone fails with ETXTBSY, before it
  // asks anything, when a writable reach record (MapForDax) covers any
  // block of the source range it would share; clone it once the mapping is
  // gone (DropReach). Read-only records do not stop it.
  // Errors: EINVAL (alignment, overlap within one file, past src's EOF),
  // EISDIR, EACCES (src not readable / dst not writable by c), EFBIG,
  // ENOSPC (extent slots), ETXTBSY (mapped for writing through DAX), and
  // what the layout guard answers.
  Result<uint64_t> CloneRange(const Cred& c, Ino src, uint64_t src_off, Ino dst, uint64_t dst_off,
                              uint64_t len);
  // copy_file_range: clones the block-aligned middle of the range and copies
  // the rest; when a writable reach record covers a block of the middle
  // (see CloneRange), it copies the whole range instead, so that such a
  // block is never shared. Returns the bytes copied (short at src's end of
  // file). Asks
  // the layout guard about everything before changing anything: when it
  // clones, about the middle as CloneRange does (src, then dst) and about
  // the partial blocks at either end as writes of dst that allocate (they
  // go to fresh blocks); when it copies, once, as one Write of dst. The size
  // change goes with dst's last change.
  // Errors: as CloneRange and Write; EINVAL for overlapping ranges of one
  // file; and what the layout guard answers.
  Result<uint64_t> CopyFileRange(const Cred& c, Ino src, uint64_t src_off, Ino dst,
                                 uint64_t dst_off, uint64_t len);

  // One run of the block map, as LEASEFS_IOC_BMAP reports it.
  struct BlockMapRun {
    uint64_t file_block = 0;
    uint64_t pool_block = 0;
    uint64_t length = 0;    // blocks
    uint32_t flags = 0;     // LEASEFS_EXTENT_* (include/leasefs/ioctl.h)
    uint32_t refcount = 0;  // of each block of the run
    bool operator==(const BlockMapRun&) const = default;
  };
  // The runs and the size of the file at one moment (one lock), so that a
  // concurrent truncate cannot make them disagree.
  struct BlockMapView {
    std::vector<BlockMapRun> runs;
    uint64_t file_size = 0;
  };
  // Up to `max` runs from file block `from_block` on. Errors: ENOENT, EISDIR.
  Result<BlockMapView> BlockMap(Ino ino, uint64_t from_block, size_t max);

  struct DefragReport {
    uint64_t extents_before = 0;  // runs of the block map
    uint64_t extents_after = 0;
    uint64_t blocks_moved = 0;
  };
  // Relocates the file's unshared extents into as few contiguous runs as free
  // space allows, a piece at a time (each piece atomic; the contents never
  // change). Before moving a piece it asks the layout guard (kUnmap over the
  // piece's bytes); a refusal ends the defrag with that error, and the
  // pieces moved before it stay moved (calling again goes on from there).
  // Only file blocks [from_block, from_block + blocks) move (extents across
  // either edge are cut there); the first piece goes right after the pool
  // block that maps from_block - 1, when that space is free, so that a file
  // defragmented a range after the other ends up as one run as the whole
  // file at once would (leasectl defrag does that, to show its progress).
  // The extent counts in the report are the whole file's.
  // Errors: ENOENT, EISDIR, EINVAL (not a regular file), EACCES, and what
  // the layout guard answers.
  static constexpr uint64_t kToEnd = UINT64_MAX;
  Result<DefragReport> Defrag(const Cred& c, Ino ino, uint64_t from_block = 0,
                              uint64_t blocks = kToEnd);

  // EXT4_IOC_MOVE_EXT: moves orig's data for blocks [orig_block, +count)
  // into donor's blocks at donor_block and exchanges the two ranges' blocks.
  // Returns the blocks moved. Asks the layout guard (kUnmap) for orig's
  // range (count cut at its end of file), then for donor's.
  // Errors: EINVAL (same inode, not regular, ranges past the size limit, a
  // setuid or setgid donor, as on ext4), ENODATA (donor has a hole in its
  // range), EBUSY (a block of either range is shared, or covered by a
  // writable reach record: the exchange would hand it to the other file),
  // and what the layout guard answers.
  Result<uint64_t> MoveExtents(const Cred& c, Ino orig, Ino donor, uint64_t orig_block,
                               uint64_t donor_block, uint64_t count);

  // --- Directories ---------------------------------------------------------

  // Errors: ENOENT, ENOTDIR, EACCES (no read permission).
  Status OpenDir(const Cred& c, Ino ino);
  // Emits entries from `cookie` (0 = start; includes "." and "..") until
  // `emit` returns false or the directory ends. With `with_attrs`, each
  // entry's attributes come along (for READDIRPLUS), and every entry `emit`
  // accepts (returns true for), except "." and "..", gets one reference, as
  // a lookup would. Entries present for the whole listing are emitted
  // exactly once. Errors: ENOENT, ENOTDIR.
  Status ReadDir(Ino ino, uint64_t cookie, bool with_attrs,
                 const std::function<bool(const DirEntry&)>& emit);

  // --- Extended attributes -----------------------------------------------

  // flags: 0, XATTR_CREATE, XATTR_REPLACE. Namespaces: user. (regular files
  // and directories, needs write permission), trusted. (root only),
  // security., and the POSIX ACLs system.posix_acl_access and
  // system.posix_acl_default (the owner or root; the kernel's format and
  // rules, flags ignored as the kernel ignores them: docs/acl.md); others
  // EOPNOTSUPP. Errors: EEXIST, ENODATA, ERANGE (name longer than 255),
  // E2BIG (value > 64 KiB; an ACL > 4 KiB), ENOSPC (does not fit the
  // inode's xattr block), EPERM, EACCES, EINVAL (a malformed ACL).
  Status SetXattr(const Cred& c, Ino ino, std::string_view name, std::string_view value, int flags);
  // An access ACL comes with the mode's current bits in USER_OBJ, MASK (or
  // GROUP_OBJ) and OTHER. Errors: ENODATA, EOPNOTSUPP, EACCES, EPERM, EIO
  // (a damaged ACL).
  Result<std::string> GetXattr(const Cred& c, Ino ino, std::string_view name);
  // Names, each followed by a NUL (trusted.* only for root). Errors: ERANGE
  // when they take more than `limit` bytes (they are not gathered past it:
  // an inode may have millions of names, listxattr(2) returns 64 KiB).
  Result<std::string> ListXattr(const Cred& c, Ino ino, size_t limit = SIZE_MAX);
  // Removing an ACL the inode lacks succeeds (as on ext4). Errors: as
  // GetXattr.
  Status RemoveXattr(const Cred& c, Ino ino, std::string_view name);

  // --- Attribute flags (chattr; docs/attr-flags.md) ---------------------------

  // The inode's attribute flags as FS_IOC_GETFLAGS reports them (FS_*_FL of
  // <linux/fs.h>): some of FS_SYNC_FL, FS_IMMUTABLE_FL, FS_APPEND_FL,
  // FS_NODUMP_FL, FS_NOATIME_FL and FS_DIRSYNC_FL. Errors: ENOENT.
  Result<uint32_t> GetAttrFlags(Ino ino);
  // Replaces them (FS_IOC_SETFLAGS) and sets ctime. `may_freeze`: the
  // caller has CAP_LINUX_IMMUTABLE, which changing FS_IMMUTABLE_FL or
  // FS_APPEND_FL needs. Setting either on a regular file that lacked it
  // first asks the layout guard (kUnmap of the whole file, no size change),
  // so that lease holders stop storing into the file, and then fails with
  // EBUSY while a writable DAX record still covers a block of it.
  // Errors: ENOENT, EROFS, ENOTTY (neither a regular file nor a directory),
  // EPERM (not the owner or root; FS_IMMUTABLE_FL or FS_APPEND_FL changed
  // without may_freeze; another flag changed on a file that stays
  // immutable), EOPNOTSUPP (a flag leasefs does not keep, or FS_DIRSYNC_FL
  // on a regular file), EBUSY, and what the layout guard answers.
  Status SetAttrFlags(const Cred& c, Ino ino, uint32_t flags, bool may_freeze);

  // --- Privileges on change ---------------------------------------------------

  // Drops what a change of `ino`'s bytes by `c` would drop (see "Privileges
  // on change" above), and changes nothing else: how the daemon serves the
  // kernel's own requests to do so, which come before a truncate, fallocate
  // or copy_file_range. Errors: ENOENT, EACCES (c may not write the file).
  Status RemovePrivs(const Cred& c, Ino ino);
  // True if a change of `ino`'s bytes by `c` would drop anything now.
  bool WouldRemovePrivs(const Cred& c, Ino ino);

  // --- The DAX path and the quarantine (docs/dax.md) --------------------------

  // Who may still reach pool blocks handed out for DAX: a process, named so
  // that the name survives a daemon restart and is never reused (a pid alone
  // is): its pid, its start time (field 22 of /proc/PID/stat, clock ticks
  // after boot) and the boot it ran in (the first 64 bits of
  // /proc/sys/kernel/random/boot_id). The engine stores it and never
  // interprets it; the daemon decides who is alive.
  struct ReachOwner {
    int32_t pid = 0;
    uint64_t start_ticks = 0;
    uint64_t boot_id = 0;
    bool operator==(const ReachOwner&) const = default;
  };
  // One extent handed out: file blocks [file_block, +length) are pool blocks
  // [pool_block, +length), or a hole (pool_block 0) that reads as zeros.
  struct DaxRun {
    uint64_t file_block = 0;
    uint64_t pool_block = 0;
    uint64_t length = 0;  // blocks
    bool hole = false;
    bool operator==(const DaxRun&) const = default;
  };
  struct DaxMapping {
    std::vector<DaxRun> runs;  // in file order, covering [off, off + covered)
    uint64_t covered = 0;      // bytes, a multiple of the block size
    uint64_t file_size = 0;
  };
  // Hands out the pool blocks of file bytes [off, off + len) (block-aligned,
  // len > 0) as at most `max_runs` runs, and records each run that has
  // blocks in the pool's quarantine table as reachable by `owner` under
  // `map_id`, made by user c.uid() (one record per contiguous pool run, all
  // staged in one transaction). Stops at the end of the file rounded up to a block, after
  // max_runs runs, and at the first block that would need zeroing or
  // copying once it has zeroed or copied 64 MiB (the work is done under the
  // writer lock, so one call must not hold it for long; blocks that need no
  // work still go out): `covered` says how far it got; ask again for the
  // rest.
  // First, in [off, off + covered): unwritten blocks are zeroed and marked
  // written (no layout change: the guard is not asked); with `writable`,
  // holes get zeroed blocks of their own and blocks shared by reflink are
  // copied, which asks the layout guard once (kAllocatingWrite over the
  // range, no size change) when there is any such block, as the holder's
  // own change (c.open_file()).
  // Everything (the block-map changes and the records) is one transaction:
  // after a crash it is wholly there or wholly absent. The runs may be cut
  // short of max_runs when one transaction would not hold them.
  // Errors: EINVAL (alignment, len 0, map_id 0, owner.pid <= 0, max_runs 0,
  // not a regular file: EISDIR for a directory), ENOENT, EROFS, ENOSPC (no
  // blocks for the holes or copies, or the table has no room for the
  // records: nothing is changed either way), and what the layout guard
  // answers (nothing is changed then either).
  Result<DaxMapping> MapForDax(const Cred& c, Ino ino, uint64_t off, uint64_t len, bool writable,
                               uint64_t map_id, const ReachOwner& owner, size_t max_runs);
  // Removes every record of `map_id`; blocks they kept that no file owns and
  // no other record covers are free again. Returns how many records it
  // removed (0: none had that id, or a pool mounted read-only; on a mount
  // made read-only live, the records stay in the pool until it is writable
  // again, see SetReadOnly). Cannot fail
  // otherwise. One transaction, or several for more records than one holds
  // (each leaves a consistent pool: records not yet removed keep theirs).
  size_t DropReach(uint64_t map_id);
  // One record of the table, as the mapping list reports it.
  struct ReachRecord {
    uint64_t map_id = 0;
    Ino ino = 0;
    uint64_t file_block = 0;
    uint64_t pool_block = 0;
    uint64_t length = 0;       // blocks
    uint64_t quarantined = 0;  // blocks of it that only the quarantine holds
    bool writable = false;
    ReachOwner owner;
    // The user whose request made it (MapForDax's c.uid()): an attribute of
    // the record, not part of the owner's name. 0 in records of pools
    // written before it was kept.
    uint32_t uid = 0;
  };
  // Every record in use, in map_id order (then pool block).
  std::vector<ReachRecord> ReachRecords();
  struct QuarantineStats {
    uint64_t records = 0;      // in use
    uint64_t capacity = 0;     // records the table holds
    uint64_t quarantined = 0;  // blocks that only the quarantine holds
  };
  QuarantineStats Quarantine();

  // --- Misc ----------------------------------------------------------------

  // access(2) for the caller. mask: F_OK or R_OK|W_OK|X_OK. Errors: EACCES.
  Status Access(const Cred& c, Ino ino, int mask);
  struct statvfs StatFs();

  const Media& media() const;
  class Impl;

 private:
  explicit Filesystem(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace leasefs::engine
