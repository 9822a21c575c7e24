// Internal: the engine's state and the helpers its operations share. Only the
// engine's own .cc files include this.
//
// How an operation is written (every modifying one follows it):
//   1. Plan, under the writer lock: look everything up, check permissions,
//      and reserve whatever the change needs (inode number, blocks, extent
//      slots). Every failure happens here, before anything changes.
//   2. Stage: write the new metadata into the Op's transaction and update the
//      in-memory indexes. Nothing here can fail.
//   3. Commit: the journal makes the staged writes durable at once. Blocks
//      freed by the operation return to the allocator only now.
// An Op destroyed without Commit gives back what it reserved, so a failed
// plan leaves no trace.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "base/thread_annotations.h"
#include "engine/acl.h"
#include "engine/allocator.h"
#include "engine/directory.h"
#include "engine/extent_map.h"
#include "engine/filesystem.h"
#include "engine/journal.h"
#include "engine/layout.h"
#include "engine/pool.h"
#include "engine/reach_index.h"
#include "engine/superblock.h"
#include "engine/xattr_set.h"

namespace leasefs::engine {

class Op;

// In-memory state of one allocated inode.
struct Node {
  std::atomic<uint64_t> refs{0};  // references held by the caller (kernel lookups)
  ExtentMap extents;
  std::unique_ptr<Directory> dir;  // directories only
  // An O_TMPFILE made without O_EXCL and not linked yet: Link may give it
  // its first name (the kernel's I_LINKABLE). In memory only: after a
  // restart the file has no opener left and the mount reclaims it.
  std::atomic<bool> linkable{false};
  std::unique_ptr<XattrSet> xattrs;  // null while the inode's xattr_block is 0
};

// A whiteout: the character device 0/0 that overlayfs leaves where a lower
// file was removed (Linux's WHITEOUT_DEV).
inline bool IsWhiteout(uint32_t mode, dev_t rdev) { return S_ISCHR(mode) && rdev == 0; }

class Filesystem::Impl {
 public:
  Impl(std::unique_ptr<Media> media, const MountOptions& opts);

  Status Load(MountReport* report);
  // Checks every data block's refcount below the refcount mark against the
  // references to it (the files', and the quarantine's), and builds
  // quarantined_. Errors: EUCLEAN, naming the block (or a reference beyond
  // the mark).
  Status CheckRefcounts() REQUIRES(mu_);
  void MarkClean() REQUIRES(mu_);

  // --- lookups (any lock) ---------------------------------------------------
  layout::Inode* I(Ino ino) const { return pool_.inode(ino); }
  // The node of an allocated inode, or nullptr.
  Node* N(Ino ino) const { return ino > 0 && ino < nodes_.size() ? nodes_[ino].get() : nullptr; }
  // ENOENT for numbers that name no inode.
  Result<Node*> Get(Ino ino) const;
  // ENOENT / ENOTDIR unless `ino` is a live directory.
  Result<Node*> GetDir(Ino ino) const;
  Entry MakeEntry(Ino ino) const;
  void FillStat(Ino ino, struct stat* st) const;

  // --- permission checks ------------------------------------------------------
  // mask: R_OK | W_OK | X_OK. The owner's bits, then the access ACL if the
  // inode has one (AclPermits), else the group's and others' bits; root's
  // overrides. REQUIRES: a lock.
  bool MayAccess(const Cred& c, Ino ino, int mask) const;
  Status Require(const Cred& c, Ino ino, int mask) const;
  bool OwnerOrRoot(const Cred& c, const layout::Inode& in) const {
    return c.is_root() || c.uid() == in.uid;
  }
  // EPERM if `victim` may not be removed from or renamed out of `dir` because
  // the directory is sticky.
  Status CheckSticky(const Cred& c, Ino dir, Ino victim) const;
  // Write + search permission on a directory that is still linked.
  Status MayModifyDir(const Cred& c, Ino dir) const;

  // --- attribute flags (attr_ops.cc, docs/attr-flags.md) ---------------------
  bool Immutable(Ino ino) const { return I(ino)->flags & layout::kInodeImmutable; }
  bool AppendOnly(Ino ino) const { return I(ino)->flags & layout::kInodeAppend; }
  // EPERM if `ino` is immutable: nothing about it may change.
  Status CheckMutable(Ino ino) const;
  // EPERM if `ino` is immutable or append-only: what it holds, and its
  // attributes, may not change other than by adding bytes at its end.
  Status CheckRewritable(Ino ino) const;
  // The FS_*_FL flags an inode's flags word stands for.
  static uint32_t FsFlagsOf(const layout::Inode& in);
  // The attribute flags a new inode of `mode` takes from its parent
  // directory `dir`, as ext4 passes them on (never immutable or
  // append-only).
  static uint32_t InheritedFlags(const layout::Inode& dir, uint32_t mode);
  // Makes the superblock carry the feature bits (an in-place update of both
  // copies, backup first: docs/pool_format.md "Adding a feature"); durable
  // when it returns. Nothing if they are there already. Call before the
  // transaction that first relies on them commits.
  void AddFeatures(uint64_t ro_compat, uint64_t incompat) REQUIRES(mu_);

  // --- staging helpers ----------------------------------------------------------
  // Stages the attribute part (bytes [0, 88): mode .. flags) of `img` as inode
  // `ino`'s; the inline area and block pointers are staged by their owners.
  void StageAttrs(Op& op, Ino ino, const layout::Inode& img);
  // Reserves what inserting `name` into `dir` needs (a directory block and
  // the slot to map it). Returns the spot to pass to InsertEntry.
  Result<Directory::Spot> PlanInsert(Op& op, Ino dir, std::string_view name);
  // Stages the insert planned by PlanInsert, including directory growth
  // (updates *dir_img's size and blocks).
  void InsertEntry(Op& op, Ino dir, layout::Inode* dir_img, const Directory::Spot& spot,
                   std::string_view name, Ino ino, unsigned type);
  // Reserves room for `slots` more extents in `ino`'s map. Errors: ENOSPC.
  Status PlanSlots(Op& op, Ino ino, size_t slots);
  // Stages adding the chain blocks PlanSlots reserved for `ino`.
  void AddPlannedSlots(Op& op, Ino ino);

  // --- inode lifetime -----------------------------------------------------------
  // Takes a free inode number, the lowest, raising the inode mark first
  // when every initialized slot is taken. Errors: ENOSPC (the whole table is
  // in use).
  Result<Ino> AllocInode() REQUIRES(mu_);
  // Registers a newly staged inode in memory (its image is staged, not yet
  // in the pool).
  Node* AddNode(Ino ino, uint32_t mode, bool inline_data);
  // The image of a new inode `ino` of `mode` made by `c` in `parent` at
  // `now`: owner, setgid inheritance, times, one link (two for a directory).
  layout::Inode NewInodeImage(const Cred& c, Ino parent, Ino ino, uint32_t mode, dev_t rdev,
                              int64_t now) const;
  // Creates inode `name` in `parent` (the common part of mknod, mkdir,
  // symlink and create). +1 reference. Errors: see Filesystem::Mknod.
  Result<Entry> CreateNode(const Cred& c, Ino parent, std::string_view name, uint32_t mode,
                           dev_t rdev, std::string_view target) REQUIRES(mu_);
  // Checks a name for use in a directory. Errors: ENAMETOOLONG, EEXIST ("."
  // and ".."), EINVAL ('/' or NUL).
  Status CheckNewName(std::string_view name) const;
  // Truncates or extends regular file `ino` to `size` with `img` (already
  // carrying the other attribute changes) staged in the first transaction.
  Status Resize(Ino ino, uint64_t size, layout::Inode img) REQUIRES(mu_);
  // Frees inode `ino` (extents, chain, xattr block, slot) in as many
  // transactions as its size needs. REQUIRES: nlink == 0, no references.
  // It does not ask the layout guard (and cannot fail): a file with a layout
  // lease is open, and an open file holds a reference (the kernel's lookup
  // count), so no lease can be on an inode freed here. A DAX mapping that
  // outlives its open file needs nothing more: its reach records keep the
  // blocks it may reach quarantined (Op::StageLastRef). Whatever else must
  // keep the blocks put (pins, a later issue) must hold a reference of its
  // own (Filesystem::Ref) until it is gone.
  void FreeInode(Ino ino) REQUIRES(mu_);
  // Frees `ino` if nothing keeps it any more.
  void MaybeFree(Ino ino) REQUIRES(mu_);
  // Removes file blocks [from, end) of `ino`, committing along the way when
  // the journal would overflow. `stage_first` runs inside the first
  // transaction (e.g. to set the new size), `stage_last` inside the last
  // (e.g. to free the inode); either may be null.
  void TruncateBlocks(Ino ino, uint64_t from, const std::function<void(Op&)>& stage_first,
                      const std::function<void(Op&)>& stage_last = nullptr) REQUIRES(mu_);

  // --- the layout guard ----------------------------------------------------
  // Asks the guard whether `by` may make `change` (engine/layout_guard.h)
  // and returns its answer unchanged; OK at once without a guard. Every
  // operation that changes a file's layout calls it in its plan phase, once
  // per file per step, after its arguments and permissions are checked and
  // before anything changes (DropPrivs included, which commits), so that a
  // refusal leaves no trace.
  Status GuardChange(const Cred& by, const LayoutChange& change) REQUIRES(mu_) {
    if (guard_ == nullptr) return Status::Ok();
    return guard_->MayChange(by, change);
  }

  // --- privileges on change (data_ops.cc; the rule is written there) ---------
  // What a change of `ino`'s bytes or size by `c` takes away: setuid/setgid
  // bits and whether security.capability goes. Nothing for a file that is
  // not regular. REQUIRES: a lock.
  struct PrivDrop {
    uint32_t mode_bits = 0;  // S_ISUID and/or S_ISGID
    bool capability = false;
    bool any() const { return mode_bits != 0 || capability; }
  };
  PrivDrop PrivsToDrop(const Cred& c, Ino ino) const;
  // The one place where privileges are dropped: every operation that changes
  // a regular file's bytes or size calls it, once its arguments are checked
  // and before it changes anything. Commits PrivsToDrop(c, ino) (mode, ctime
  // and xattr block) in one transaction of its own; none if there is nothing
  // to drop. Cannot fail (removing an xattr needs no new block).
  void DropPrivs(const Cred& c, Ino ino) REQUIRES(mu_);
  // xattr_ops.cc: whether `ino` has the xattr `name`; staging its removal
  // (its entry zeroed and its blocks unreferenced, or an older-format
  // block rewritten; never a new block, so it cannot fail).
  // REQUIRES for StageRemoveXattr: HasXattr(ino, name).
  bool HasXattr(Ino ino, std::string_view name) const;
  void StageRemoveXattr(Op& op, Ino ino, std::string_view name) REQUIRES(mu_);
  static constexpr std::string_view kCapabilityXattr = "security.capability";
  // The value of xattr `name` of `ino`, or nullopt if it has none.
  // Errors: EIO (the value on media fails its check). REQUIRES: a lock.
  Result<std::optional<std::string>> XattrValue(Ino ino, std::string_view name) const;
  // One change for StageXattrChanges: set `name` to `value`, or remove it
  // (nullopt; removing a name the inode lacks changes nothing).
  struct XattrChange {
    std::string_view name;
    std::optional<std::string_view> value;
  };
  // Stages `changes` to `ino`'s xattrs in `op`, in order, as part of the
  // op's one transaction (the caller stages the ctime). Checks no
  // permission and no XATTR_CREATE/REPLACE rule. Everything that can fail
  // comes first (the blocks a value or a leaf needs are reserved in `op`:
  // exactly for one change, one leaf per value for several); then nothing
  // can. For an inode that `op` creates, call it once the op has staged the
  // inode's image, before or after AddNode: without a node, the new set
  // goes to the node at Op::Commit. An inode with the older single xattr
  // block has it converted to leaves first, in a transaction of its own,
  // unless the changes are all removals.
  // Errors (the caller then abandons `op`): ERANGE/EINVAL (a bad name),
  // E2BIG, ENOSPC, EIO (converting a damaged older block).
  Status StageXattrChanges(Op& op, Ino ino, const std::vector<XattrChange>& changes)
      REQUIRES(mu_);
  // Frees every xattr leaf of `ino` and the value blocks of its entries, a
  // few leaves per transaction (an older-format block is left to the
  // caller). REQUIRES: ino is being freed (FreeInode).
  void FreeXattrs(Ino ino) REQUIRES(mu_);
  // Converts the older-format xattr block of `ino` to leaves, in one
  // transaction. Errors: ENOSPC, EIO (a damaged entry).
  Status ConvertSingleXattrBlock(Ino ino) REQUIRES(mu_);

  // --- POSIX ACLs (acl_ops.cc, docs/acl.md) ---------------------------------
  // The access ACL of `ino` as it applies now: the stored list with the
  // mode's bits in USER_OBJ, MASK (or GROUP_OBJ) and OTHER; nullopt if it has
  // none. Errors: EIO (the stored list is damaged). REQUIRES: a lock.
  Result<std::optional<acl::Acl>> AccessAcl(Ino ino) const;
  // The ACL part of MayAccess for a caller who is neither root nor the
  // owner: *decided is false when `ino` has no access ACL (the mode's bits
  // decide), else the answer is the ACL's (a damaged list grants nothing).
  bool AclPermits(const Cred& c, Ino ino, int mask, bool* decided) const;
  // getxattr of an ACL name: the list in the kernel's format. Errors:
  // ENODATA (none), EIO (damaged).
  Result<std::string> GetAcl(Ino ino, std::string_view name) const;
  // setxattr of an ACL name, with the kernel's rules (acl_ops.cc). Errors:
  // EINVAL, E2BIG (malformed or too long a value), EROFS, EOPNOTSUPP
  // (symlink), EACCES (default ACL of a non-directory), EPERM (not the
  // owner or root), ENOSPC.
  Status SetAcl(const Cred& c, Ino ino, std::string_view name, std::string_view value)
      REQUIRES(mu_);
  // removexattr of an ACL name; success when there is none. Errors: EROFS,
  // EOPNOTSUPP, EPERM.
  Status RemoveAcl(const Cred& c, Ino ino, std::string_view name) REQUIRES(mu_);
  Status MayChangeAcl(const Cred& c, Ino ino, std::string_view name, bool set, bool* noop) const;
  // What a new inode in `parent` gets (posix_acl_create): *mode's permission
  // bits narrowed by the parent's default ACL, or by c.umask() when it has
  // none; the ACLs to store with it (encoded). Nothing for a symlink.
  // Errors: EIO (the parent's default ACL is damaged). REQUIRES: a lock.
  struct Inherited {
    std::optional<std::string> access;
    std::optional<std::string> dflt;
    // The changes that store them (pointing into this object).
    std::vector<XattrChange> Changes() const;
  };
  Result<Inherited> InheritAcls(const Cred& c, Ino parent, uint32_t* mode) const;

  // --- data helpers ---------------------------------------------------------------
  // Zeroes bytes [from, to) of `ino` where they are mapped and written (used
  // before a size increase exposes them): in place, or, in a block shared by
  // reflink, by copying it first. Errors: ENOSPC (a shared block could not
  // be copied; nothing is zeroed then).
  Status ZeroRange(Ino ino, uint64_t from, uint64_t to) REQUIRES(mu_);
  // Maps holes of [off, off + len) to unwritten blocks (fallocate mode 0 or
  // KEEP_SIZE). REQUIRES: a regular file; arguments checked; privileges
  // dropped (DropPrivs).
  Status Preallocate(Ino ino, int mode, uint64_t off, uint64_t len) REQUIRES(mu_);
  // Filesystem::Write without the lock. Asks the layout guard first, unless
  // the caller has asked it for this write already (`guard_asked`:
  // CopyFileRange asks once for all the writes of one copy).
  // `append` as Filesystem::Write says.
  Result<size_t> WriteLocked(const Cred& c, Ino ino, uint64_t off, const struct iovec* src,
                             int count, bool guard_asked = false, bool append = false)
      REQUIRES(mu_);
  // Whether writing [off, off + len) of regular file `ino` maps new blocks
  // into it: its block range has a hole or a block shared by reflink (copied
  // on write), or it ends past the size. Unwritten (preallocated) blocks are
  // the file's own: writing them allocates nothing. The one place that tells
  // kAllocatingWrite from kOverwrite, for the write path and WouldAllocate
  // alike. REQUIRES: a lock (the shared one suffices); len > 0.
  bool WriteAllocates(Ino ino, uint64_t off, uint64_t len) const;
  // The change a write of [off, off + len) of `ino` makes, as the layout
  // guard is asked about it: allocating or not as WriteAllocates says, the
  // write's bytes, and the size change when it extends the file.
  // REQUIRES: a lock; len > 0, already clamped as the write clamps it.
  LayoutChange WriteChange(Ino ino, uint64_t off, uint64_t len) const;
  // True if any block of [pool_block, +count) has more than one reference.
  bool AnyShared(uint64_t pool_block, uint64_t count) const;
  // How many blocks of [pool_block, +count) have more than one reference.
  uint64_t SharedBlocks(uint64_t pool_block, uint64_t count) const;

  // --- block-map helpers (remap_ops.cc) ------------------------------------------
  // A block of the file an intent changes whose new contents are written to
  // a fresh block (`fill` gets the block, writes all of it with the media's
  // *Flush calls) and mapped in the intent's first transaction: how a punch,
  // zero range or copy changes a partial block atomically with the rest.
  struct EdgeBlock {
    uint64_t file_block;
    std::function<void(char* block)> fill;
  };
  // Runs, or resumes after a crash, the multi-transaction change `it`
  // describes; the first transaction writes the record to inode slot 0 if it
  // is not there yet (and maps `edges`), the last clears it.
  // Errors: ENOSPC when the edges' blocks or slots cannot be had (nothing
  // is changed then); without edges it cannot fail.
  Status RunIntent(layout::Intent it, const std::vector<EdgeBlock>& edges = {}) REQUIRES(mu_);
  // An EdgeBlock for file block `fb` of `ino`: its current bytes (zeros for a
  // hole or unwritten block) with [from, to) (offsets in the block) zeroed,
  // or replaced by `src` when it is not null.
  EdgeBlock MakeEdge(Ino ino, uint64_t fb, uint32_t from, uint32_t to,
                     const char* src = nullptr) const;
  // Finishes an intent a crash left in slot 0 (at mount).
  void RecoverIntent() REQUIRES(mu_);
  // Clones src blocks [src_block, +count) to dst_block of dst (as an
  // intent, with `edges`), then sets dst's size to new_size. REQUIRES:
  // arguments checked, space for the edges and extent slots checked,
  // privileges of dst dropped (DropPrivs).
  Status RunClone(Ino src, uint64_t src_block, Ino dst, uint64_t dst_block, uint64_t count,
                  uint64_t new_size, const std::vector<EdgeBlock>& edges = {}) REQUIRES(mu_);
  // Filesystem::CloneRange without the lock.
  Result<uint64_t> CloneLocked(const Cred& c, Ino src, uint64_t src_off, Ino dst,
                               uint64_t dst_off, uint64_t len) REQUIRES(mu_);
  // Records a read of `in` (a file's bytes or a directory's entries) in its
  // atime as options_ say (atime, nodiratime); nothing on a read-only mount.
  // REQUIRES: a lock; the shared one suffices, as atime is stored in place
  // with one atomic store and persisted lazily (docs/durability.md).
  void TouchAtime(layout::Inode* in) const;
  // Bytes [off, off + len) of regular file `ino` as segments pointing into
  // the pool (or at zeros for holes and unwritten blocks). REQUIRES: a lock.
  std::vector<struct iovec> Segments(Ino ino, uint64_t off, uint64_t len) const;
  // Copies every shared block of file blocks [fb, fb + count) of `ino` to a
  // block of its own. Errors: ENOSPC (what was copied stays copied).
  Status Unshare(Ino ino, uint64_t fb, uint64_t count) REQUIRES(mu_);

  PoolView pool_;
  std::unique_ptr<Media> media_;
  std::unique_ptr<Journal> journal_;
  // Read-only: every change is refused (EROFS). Set at mount, and changed
  // live under the writer lock by SetReadOnly (mount_state.cc); read under
  // the engine lock, or alone where a stale answer is harmless.
  std::atomic<bool> read_only_;
  // Mounted read-only: the pool is mapped privately and can never be
  // written (SetReadOnly(false) refuses).
  const bool mapped_read_only_;
  // Mixed into every generation handed out (MakeEntry): from the pool's
  // uuid, so that a pool formatted again gives its inodes other generations
  // and file handles of the old one are stale (docs/handles.md).
  uint32_t generation_salt_ = 0;
  // The atime rule is changed live by SetAtime, under the writer lock; the
  // rest is fixed at mount.
  MountOptions options_;
  // mount_state.cc: marks the pool clean (unmounted: what reads left in
  // place, timestamps, persisted first) or mounted, in the superblock's
  // state word. REQUIRES: a writable mapping.
  void WriteState(bool clean) REQUIRES(mu_);
  // Frees the inodes no link and no reference keeps (their last reference
  // went while the mount was read-only). REQUIRES: writable.
  void ReclaimUnreferenced() REQUIRES(mu_);
  const char* zeros_ = nullptr;  // kZeroBytes of zeros, for holes

  // Free blocks kept back for extent-chain growth (see Op::Use).
  uint64_t reserve_blocks_ = 0;
  // Free blocks ordinary allocations may take.
  uint64_t AvailableBlocks() const REQUIRES_SHARED(mu_);

  SharedMutex mu_;  // the engine lock: shared to read, exclusive to change
  // What every layout change asks first (engine/layout_guard.h); may be null.
  LayoutGuard* guard_ GUARDED_BY(mu_) = nullptr;
  BlockAllocator alloc_ GUARDED_BY(mu_);
  std::set<Ino> free_inodes_ GUARDED_BY(mu_);  // free slots below the inode mark
  // By inode number, one per slot below the inode mark; changed under mu_
  // only.
  std::vector<std::unique_ptr<Node>> nodes_;

  // --- the lazily initialized tables (tables.cc; docs/pool_format.md "Lazily
  // initialized tables") --------------------------------------------------------
  // How much of the inode and refcount tables is initialized: a version-3
  // pool's marks, or the whole tables of an older pool (until the upgrade).
  // Raised under the writer lock, never lowered but by the upgrade.
  Marks marks_ GUARDED_BY(mu_);
  // At mount, after the journal's replay: reads the marks (the larger valid
  // copy of each). Errors: EUCLEAN when neither copy of a mark is valid.
  Status LoadMarks() REQUIRES(mu_);
  // First pool block past the data blocks whose refcounts are initialized.
  uint64_t CoveredEnd() const REQUIRES_SHARED(mu_);
  // Initializes more inode slots (zeroed, persisted, then the mark stored
  // and persisted): a quarter of the initialized slots, 64 to 65536 of them.
  // Errors: ENOSPC when the whole table is initialized.
  Status GrowInodeTable() REQUIRES(mu_);
  // Makes sure the refcounts of every data block below pool block `end` are
  // initialized, raising the refcount mark (by whole refcount blocks: what
  // `end` needs, and at least a quarter of the initialized ones, 4 to 4096)
  // when they are not. Cannot fail: `end` lies inside the data area.
  void CoverRefcounts(uint64_t end) REQUIRES(mu_);
  // Upgrades a version-1 or -2 pool to the current version at its first
  // writable mount: the marks just past the highest inode slot and the
  // highest data block ever used, stored in both copies, then the version,
  // backup then primary (docs/pool_format.md "Upgrading an older pool").
  // REQUIRES: loaded, orphans reclaimed; a version-1 pool's quarantine table
  // is empty (LoadReach).
  void UpgradeFormat() REQUIRES(mu_);

  // --- the quarantine: reach records (dax_ops.cc; docs/pool_format.md) -----
  // At mount, before the refcounts are checked: checks that a version-1
  // pool's table is empty (Load upgrades it later, after reclaiming orphans),
  // then validates and indexes every record. Errors: EUCLEAN naming the
  // record.
  Status LoadReach() REQUIRES(mu_);
  // Restores a primary superblock that a crash tore during UpgradeFormat or
  // AddFeatures from the backup (in the private mapping of a read-only
  // mount; anything else is left to validation).
  void FinishTornUpgrade();
  layout::QuarantineRecord* Record(uint64_t slot) const { return pool_.quarantine() + slot; }
  // Indexes a live record, or forgets one about to be cleared.
  void IndexRecord(const layout::QuarantineRecord& r) REQUIRES(mu_);
  void UnindexRecord(const layout::QuarantineRecord& r) REQUIRES(mu_);
  // Zeroes the records in `slots` (already out of records_by_map_) and
  // frees the quarantined blocks no other record covers; in as many
  // transactions as the journal needs. REQUIRES: writable.
  void ClearRecords(const std::vector<uint64_t>& slots) REQUIRES(mu_);
  // How many live records are WRITABLE.
  size_t WritableRecords() const REQUIRES_SHARED(mu_);
  // True if a writable record covers any block of [pool_block, +count).
  // Such a block must never get a reference from a second place (another
  // file, or another offset of its own): a revoked holder's late stores
  // would land there. So clone refuses it (ETXTBSY), copy_file_range copies
  // instead of sharing, and move-extents refuses it (EBUSY). A read-only
  // record's blocks may be shared: a reader cannot change another file.
  bool WritablyCovered(uint64_t pool_block, uint64_t count) const REQUIRES_SHARED(mu_) {
    return writable_.CoversAny({pool_block, count});
  }
  // True if a clone of file blocks [fb, +count) of `ino` would share a
  // block WritablyCovered (unwritten blocks are not shared: holes take
  // their place).
  bool SharesWritablyCovered(Ino ino, uint64_t fb, uint64_t count) const REQUIRES_SHARED(mu_);
  // Blocks some record covers, those some writable record covers (a
  // subset: no file may get a second reference to them, see
  // WritablyCovered), blocks only the quarantine holds (a subset of the
  // first), the free slots of the table (lowest first) and the slots of
  // each map_id.
  Coverage covered_ GUARDED_BY(mu_);
  Coverage writable_ GUARDED_BY(mu_);
  BlockSet quarantined_ GUARDED_BY(mu_);
  BlockSet free_records_ GUARDED_BY(mu_);  // runs of slots, not blocks
  std::multimap<uint64_t, uint64_t> records_by_map_ GUARDED_BY(mu_);
  // Records of read-only mappings that ended while the mount was live
  // read-only (DropReach): still in the pool, cleared by SetReadOnly(false).
  std::vector<uint64_t> undropped_records_ GUARDED_BY(mu_);

  static constexpr size_t kZeroBytes = 1 << 20;
};

// One transaction in the making, with the blocks it has reserved.
class Op {
 public:
  // REQUIRES: the writer lock, held for the Op's whole life.
  explicit Op(Filesystem::Impl& fs) REQUIRES(fs.mu_) : fs_(fs), tx(fs.journal_->Begin()) {}
  ~Op();
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;

  // Who may take the pool's last free blocks (Impl::reserve_blocks_ of
  // them): only extent-chain growth, which operations that must not fail for
  // lack of space (writes into preallocated space) depend on.
  enum class Use { kOrdinary, kExtentChain };

  // Reserves exactly `count` blocks, preferring to start at `goal`.
  // Errors: ENOSPC (nothing is reserved then).
  Status Reserve(uint64_t count, uint64_t goal, std::vector<BlockRange>* out,
                 Use use = Use::kOrdinary);
  // Gives back `r`, one of the ranges Reserve appended to *out.
  void Unreserve(const BlockRange& r);
  // Reserves up to `count` ordinary blocks; returns how many.
  uint64_t ReserveUpTo(uint64_t count, uint64_t goal, std::vector<BlockRange>* out);
  // Stages refcount 1 for reserved blocks that are now referenced.
  void Claim(const BlockRange& r);
  // Stages dropping one reference from each block of `r` (AddRefs(r, -1));
  // blocks that reach zero go back to the allocator after the commit.
  void Unref(const BlockRange& r);
  // Stages adding `delta` to the refcount of each block of `r` at Commit,
  // netted against this op's other deltas: an op may drop a block from one
  // extent and map it in another (a shift, a swap, a clone onto itself).
  // Blocks that reach zero go back to the allocator after the commit. Do
  // not mix with Claim on the same blocks in one op.
  void AddRefs(const BlockRange& r, int delta) { deltas_.push_back({r, delta}); }
  // Stages refcount 0 for quarantined blocks `r` that no record covers any
  // more (DropReach); they go back to the allocator after the commit.
  // REQUIRES: every block of r is quarantined and uncovered.
  void FreeQuarantined(const BlockRange& r);
  // Journal bytes still free for this transaction.
  size_t room() const;
  void Commit();

  Filesystem::Impl& fs() { return fs_; }

 private:
  Filesystem::Impl& fs_;
  // fs_.alloc_, which the writer lock guards. NO_THREAD_SAFETY_ANALYSIS: the
  // constructor requires that lock and an Op never outlives its scope, which
  // the analysis cannot carry into the member functions.
  BlockAllocator& alloc() NO_THREAD_SAFETY_ANALYSIS { return fs_.alloc_; }
  uint64_t available() NO_THREAD_SAFETY_ANALYSIS { return fs_.AvailableBlocks(); }
  // fs_.covered_ and fs_.quarantined_, likewise.
  const Coverage& covered() NO_THREAD_SAFETY_ANALYSIS { return fs_.covered_; }
  BlockSet& quarantined() NO_THREAD_SAFETY_ANALYSIS { return fs_.quarantined_; }
  // Raises the refcount mark over blocks just taken from the allocator,
  // before anything stages their refcounts.
  void Cover(const std::vector<BlockRange>& got) NO_THREAD_SAFETY_ANALYSIS;

 public:
  Tx tx;
  // Extent-chain blocks PlanSlots reserved, per inode, until AddPlannedSlots.
  std::vector<std::pair<Ino, uint64_t>> chain_blocks;
  // Directory blocks PlanInsert reserved, per directory, until InsertEntry.
  std::vector<std::pair<Ino, uint64_t>> dir_blocks;
  // Xattr sets StageXattrChanges made for inodes without a node yet; Commit
  // hands each to its node.
  std::vector<std::pair<Ino, std::unique_ptr<XattrSet>>> xattr_sets;

 private:
  std::vector<BlockRange> reserved_;  // given back unless committed
  uint64_t claimed_ = 0;
  std::vector<BlockRange> freed_;  // to the allocator after the commit
  std::vector<BlockRange> quarantine_;  // quarantined by this op (StageLastRef)
  std::vector<std::pair<BlockRange, int>> deltas_;  // AddRefs, staged by Commit
  bool committed_ = false;

  void StageDeltas();
  // Stages the loss of the last reference of every block of `r`: refcount 0
  // and free after the commit, or, where a reach record covers the block,
  // refcount 1 and quarantined.
  void StageLastRef(const BlockRange& r);
};

// d_type of a mode.
unsigned ModeToDtype(uint32_t mode);

}  // namespace leasefs::engine
