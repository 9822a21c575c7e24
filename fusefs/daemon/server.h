// Server: the FUSE low-level operations of one mount, served by an
// engine::Filesystem.
//
// Ops() is the table handed to fuse_session_new. Each entry is a thin
// noexcept adapter (fuse_ops.cc) that calls one Do* method below through
// ReplyOnce (reply.h): a Do* method either sends exactly one reply and
// returns 0, or sends none and returns the errno the adapter replies with.
// Inode numbers are the engine's own, handed to the kernel unchanged.
//
// References: every reply that hands the kernel an inode (entry, create,
// readdirplus) comes with one engine reference, taken before the reply goes
// out (the kernel may FORGET it at once) and dropped again if the reply could
// not be sent. FORGETs drop them.
//
// Threading: every Do* method may run on any thread, concurrently with the
// others (the engine is thread-safe and the Server's own state is fixed after
// Attach). A request that may wait must not block its loop thread: hand it
// to Defer() (docs/threading.md).
#pragma once

#include <fcntl.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <type_traits>
#include <unordered_map>
#include <string>
#include <vector>

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <cstddef>

#include "fusefs/daemon/dax.h"
#include "fusefs/daemon/fuse_io.h"
#include "fusefs/daemon/lease_edge.h"
#include "fusefs/daemon/open_file.h"
#include "fusefs/daemon/options.h"
#include "fusefs/daemon/peer_fd.h"
#include "fusefs/daemon/wait_pool.h"
#include "engine/filesystem.h"
#include "pin/context_server.h"
#include "pin/pin_table.h"
#include "pin/softnic.h"

namespace leasefs::daemon {

engine::Cred CredOf(fuse_req_t req);

class Server {
 public:
  // The most threads Defer() runs at once.
  static constexpr size_t kMaxWaitThreads = 64;

  Server(const Timeouts& timeouts, const lease::Options& leases)
      : timeouts_(timeouts), leases_(leases, &files_) {}
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The operations table; the session's userdata must be this Server.
  static const fuse_lowlevel_ops& Ops();
  // The Server a request belongs to.
  static Server& Of(fuse_req_t req) noexcept {
    return *static_cast<Server*>(fuse_req_userdata(req));
  }

  // Sets the filesystem to serve and the session serving it (for cache
  // invalidations). REQUIRES: before the session loop starts.
  // Also takes over the DAX mappings a previous daemon left (DaxMaps).
  void Attach(engine::Filesystem* fs, fuse_session* se) {
    fs_ = fs;
    se_ = se;
    fs_->SetLayoutGuard(&leases_);
    dax_ = std::make_unique<DaxMaps>(fs);
  }
  // The pool's path as DAX clients should open it (absolute).
  // REQUIRES: before the session loop starts.
  void SetPoolPath(const std::string& path) { pool_path_ = path; }
  // Starts pins (pin_ops.cc, docs/pins.md): the soft NIC as `opts` says,
  // the pin table and the pin socket. Without a soft NIC (softnic=off, or
  // it could not start and was not asked for explicitly: a warning) pins
  // work with the DECLARED provider only; without the pin socket there are
  // no pins (a warning). Errors: the soft NIC's, when asked for explicitly.
  // REQUIRES: after Attach, before the session loop starts.
  Status StartPins(const PinMountOptions& opts);

  // The most requests of one user (other than root) that may wait on
  // workers at once; more get EAGAIN. Workers are shared by every user of
  // the mount (and their number capped), and a waiting write holds a copy
  // of its data: without this one user could take them all, and memory.
  static constexpr int kMaxDeferredPerUser = 16;

  // Answers `req` from a worker thread: task(req) follows the Do* contract.
  // Returns at once; the loop thread goes on with other requests. Replies
  // EAGAIN itself when the caller has kMaxDeferredPerUser requests waiting.
  void Defer(fuse_req_t req, WaitPool::Task task) noexcept;
  // Finishes every deferred request and stops the workers. Call after the
  // session loop returned and before the session is destroyed.
  void Shutdown() noexcept {
    if (contexts_) contexts_->Stop();  // no new contexts
    leases_.table().Shutdown();  // ends the waits of deferred requests
    waiters_.Shutdown();
    flushers_.Shutdown();
    pins_.reset();  // drops every pin: their records go through dax_
    nic_.reset();
    contexts_.reset();
    dax_.reset();  // its thread uses the engine, which goes next
  }

  // --- Operations (see fuse_lowlevel.h for each request's meaning) -----
  void DoInit(fuse_conn_info* conn) noexcept;
  int DoLookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void DoForget(fuse_ino_t ino, uint64_t nlookup);
  int DoGetAttr(fuse_req_t req, fuse_ino_t ino);
  int DoSetAttr(fuse_req_t req, fuse_ino_t ino, const struct stat& attr, int to_set,
                const fuse_file_info* fi);
  int DoReadlink(fuse_req_t req, fuse_ino_t ino);
  int DoMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  int DoMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  int DoUnlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  int DoRmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  int DoSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  int DoRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned flags);
  int DoLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name);
  int DoOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  // A create of the name kTmpfileName (fuse_io.h) is an O_TMPFILE.
  int DoCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi);
  // FUSE_STATX's attributes (fuse_io.h StatxFn; userdata: the Server).
  static int StatxOf(void* userdata, uint64_t nodeid, StatxAttr* out) noexcept;
  int DoRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  int DoWriteBuf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* bufv, off_t off,
                 const fuse_file_info* fi);
  int DoFsync(fuse_req_t req, fuse_ino_t ino, int datasync);
  // The last close of an open file description: its leases go with it.
  // Returns true when it handed the reply to a worker (kill-on-close's
  // search for the pins' holders reads /proc, too long for the loop).
  bool DoRelease(fuse_req_t req, const fuse_file_info* fi);
  // A close(2) of a descriptor. Sent only under close_with_pins=block-close
  // (other opens set noflush), where it may wait for pins (pin_close.cc).
  int DoFlush(fuse_req_t req, const fuse_file_info* fi);
  // Regular files are always ready to read and write; POLLPRI says that a
  // lease taken through this open file is being broken (or was revoked).
  int DoPoll(fuse_req_t req, fuse_ino_t ino, const fuse_file_info* fi, fuse_pollhandle* ph);
  int DoOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  // READDIR (plus = false) and READDIRPLUS (plus = true).
  int DoReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus);
  int DoStatFs(fuse_req_t req);
  int DoSetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags);
  int DoGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  int DoListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  int DoRemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  int DoAccess(fuse_req_t req, fuse_ino_t ino, int mask);
  int DoFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                  const fuse_file_info* fi);
  int DoLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence);
  // The leasefs ioctls (include/leasefs/ioctl.h); ioctl_ops.cc.
  int DoIoctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, const fuse_file_info* fi,
              unsigned flags, const void* in, size_t in_size, size_t out_size);
  int DoCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_ino_t ino_out,
                      off_t off_out, const fuse_file_info* fi_out, size_t len, int flags);

  // Where the filesystem is mounted, to recognise callers' fds on it.
  // REQUIRES: before the session loop starts.
  void SetMountpoint(const std::string& mountpoint) {
    peers_ = std::make_unique<PeerFiles>(mountpoint);
  }
  // Whether the kernel checks permissions too (-o default_permissions); if
  // not, an exec must be allowed to read the program (see DoOpen).
  // REQUIRES: before the session loop starts.
  void SetKernelChecksPermissions(bool on) { kernel_checks_permissions_ = on; }
  // The options the mount was made with, which remounts change
  // (remount_ops.cc, docs/mount.md). REQUIRES: before the session loop.
  void SetMountOptions(const DaemonOptions& opts) {
    MutexLock l(&remount_mu_);
    mount_options_ = opts;
  }

 private:
  // O_TMPFILE in `parent`: opened as a create opens (the open-file table).
  int DoTmpfile(fuse_req_t req, fuse_ino_t parent, mode_t mode, fuse_file_info* fi);
  // Replies an entry with one reference (taken by the engine call that
  // produced `e`); drops the reference if the reply cannot be sent.
  int ReplyEntry(fuse_req_t req, const engine::Entry& e);
  fuse_entry_param EntryParam(const engine::Entry& e) const noexcept;
  // Sets the open flags every file gets (direct I/O, see DoOpen) and the
  // handle of a new OpenFile for it.
  void SetFileOpenFlags(fuse_ino_t ino, fuse_file_info* fi);
  // The open file a request came through, or nullptr (none, or a directory).
  static OpenFile* FileOf(const fuse_file_info* fi) noexcept {
    return fi ? OpenFiles::FromHandle(fi->fh) : nullptr;
  }
  // Whether a SETATTR's MODE is the kernel's own clearing of setuid/setgid
  // (see DoSetAttr): a MODE that only clears set ones of those bits, added
  // to a change of size or owner, or alone from a caller who is neither
  // root nor the owner.
  enum class KillPrivMode { kNone, kWithSizeOrOwner, kAlone };
  KillPrivMode KernelKillPriv(fuse_ino_t ino, const struct stat& attr, int to_set,
                              const engine::Cred& cred);
  // Serves the kernel's own request to drop privileges (a kAlone MODE, or a
  // REMOVEXATTR of security.capability) by engine::Filesystem::RemovePrivs:
  // replies the new attributes (reply_attr) or success. Returns
  // `denied_errno` if the caller may not write the file.
  int DoKernelRemovePrivs(fuse_req_t req, fuse_ino_t ino, const engine::Cred& cred,
                          int denied_errno, bool reply_attr);
  // After an ACL changed: the kernel drops the inode's cached attributes
  // (the mode may have changed) and cached ACLs.
  void ForgetAclAttrs(fuse_ino_t ino);

  // --- Layout changes and leases (lease_edge.h, "How a layout change meets
  // the leases") ---------------------------------------------------------
  // An engine call that may change a layout, under the Do* contract, made
  // as `cred`; it returns ERESTART, having replied nothing, when the layout
  // guard refused it because a lease must be broken first.
  using LayoutCall = std::function<int(fuse_req_t, const engine::Cred&)>;
  // The attribute flags ioctls (attr_flags.cc, docs/attr-flags.md):
  // FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR,
  // as the kernel's fileattr_get/set send them, on files and directories.
  static bool IsAttrFlagsIoctl(unsigned cmd);
  int DoAttrFlags(fuse_req_t req, fuse_ino_t ino, unsigned cmd, const fuse_file_info* fi,
                  const void* in, size_t in_size, size_t out_size);
  // Replaces `ino`'s flags `old` with `want` (FS_*_FL), breaking leases and
  // writing back mapped pages first when it freezes a regular file.
  int SetAttrFlags(fuse_req_t req, fuse_ino_t ino, const fuse_file_info* fi, uint32_t old,
                   uint32_t want);
  // The lease ioctls (ioctl_ops.cc).
  int DoSetLease(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
                 size_t out_size);
  int DoListLeases(fuse_req_t req, const void* in, size_t in_size, size_t out_size);
  int DoLeaseEvents(fuse_req_t req, const void* in, size_t in_size, size_t out_size);
  // The DAX path (dax_ops.cc, docs/dax.md).
  // LEASEFS_IOC_REMOUNT (remount_ops.cc).
  int DoRemount(fuse_req_t req, fuse_ino_t ino, const void* in, size_t in_size, size_t out_size);
  int DoDaxInfo(fuse_req_t req, size_t out_size);
  int DoDaxMap(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
               size_t out_size);
  int DoDaxUnmap(fuse_req_t req, const void* in, size_t in_size);
  int DoDaxList(fuse_req_t req, const void* in, size_t in_size, size_t out_size);
  // Pins (pin_ops.cc, docs/pins.md).
  int DoPinInfo(fuse_req_t req, size_t out_size);
  int DoPin(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
            size_t out_size);
  int DoUnpin(fuse_req_t req, const void* in, size_t in_size);
  int DoPinList(fuse_req_t req, const void* in, size_t in_size, size_t out_size);
  class PinnedBlocks;
  struct PinArgs;
  // PIN's work, on a worker (Do* contract).
  int PinOnWorker(fuse_req_t req, const PinArgs& a);
  // Whether `file` holds leases that may count a pin over [off, off + len),
  // taken by process `caller`: 0, EPERM or EAGAIN (as PIN answers);
  // *exclusive says whether one of them is EXCLUSIVE.
  int PinLeaseError(const OpenFile& file, uint64_t off, uint64_t len, pid_t caller,
                    bool* exclusive);
  // Prepares the pin's blocks as a writable DAX map does (MapForDax, in as
  // many calls as it takes) and records them for `owner`, as records that
  // only the pin's end drops; the first call also notes the runs.
  Status RecordPinned(const PinArgs& a, const DaxMaps::Process& owner, PinnedBlocks* blocks);
  // Maps the runs into the daemon at consecutive addresses (the soft NIC's
  // view); `off` is the file offset of the first.
  Status MapPinnedView(uint64_t off, PinnedBlocks* blocks);
  // Whether the file's blocks over the pin's range are still `blocks`'s runs,
  // written and unshared.
  bool StillPinnedBlocks(const PinArgs& a, const PinnedBlocks& blocks);
  // Whether `file` holds active leases covering [off, off + len): 0, EPERM
  // (not covered), EAGAIN (one is breaking or revoked); *all_write says
  // whether they are all WRITE leases.
  int DaxLeaseCovers(const OpenFile& file, uint64_t off, uint64_t len, bool* all_write);
  // Whether a writable DAX map of the range would have to give it blocks
  // (holes or reflinked blocks inside the file).
  bool DaxNeedsBlocks(engine::Ino ino, uint64_t off, uint64_t len);

  // --- The close policies (pin_close.cc, docs/pins.md "Closing a file
  // with pins") ----------------------------------------------------------
  // On a worker: answers a FLUSH of thread `tid` of a file with pins once
  // they are gone (EINTR on INTERRUPT), at once if its process keeps
  // another descriptor of `ino`.
  int WaitUnpinned(fuse_req_t req, pid_t tid, uint64_t file_id, engine::Ino ino);
  // At RELEASE under kill-on-close: SIGKILLs the holders of the contexts of
  // the file's pins and aborts the pins (its leases go with them).
  void KillPinHolders(uint64_t file_id);

  // --- The kernel's cached pages of files (page_cache.cc, docs/mmap.md) --
  // Bytes of a file that a change rewrites behind the kernel's back (the
  // leasefs ioctls): its cached pages there go stale. length 0: to the end.
  struct PageRange {
    fuse_ino_t ino;
    uint64_t offset;
    uint64_t length;
  };
  // The most threads WithPageCache runs at once.
  static constexpr size_t kMaxFlushThreads = 8;
  // WithBreaks for a change whose bytes the kernel may hold in its page
  // cache: `call` must run DropCachedPages(stale) after its engine call and
  // before it replies. With shared mappings on, the kernel may hold dirty
  // pages there, which it writes back (WRITE requests) when told to drop
  // them: so then the whole change runs on a flusher thread (never a loop
  // thread, which those WRITEs need, nor a WaitPool worker, which a WRITE
  // that breaks a lease needs), and `stale` is dropped before every try too,
  // so that the change reads and shifts only bytes already written back.
  int WithPageCache(fuse_req_t req, const engine::Cred& cred, bool nonblock,
                    std::vector<PageRange> stale, LayoutCall call);
  // Writes back and drops the kernel's cached pages of `ranges`, and its
  // cached attributes of their files. May wait for WRITE requests when
  // shared mappings are on: REQUIRES no engine lock held, and a flusher
  // thread then (see WithPageCache).
  void DropCachedPages(const std::vector<PageRange>& ranges) noexcept;
  // Whether the kernel may hold dirty pages of our files (shared mappings
  // are on, fuse_io.h).
  static bool SharedMappings() noexcept;
  // Runs `task` (a Do* continuation) where it may drop cached pages: on a
  // flusher thread when shared mappings are on, else as Defer does.
  void DeferFlushing(fuse_req_t req, WaitPool::Task task) noexcept {
    if (SharedMappings()) {
      flushers_.Submit(req, std::move(task));
    } else {
      Defer(req, std::move(task));
    }
  }

  // Runs `call` now, as `cred`. If a lease must be broken first: with
  // `nonblock`, starts the break and fails with EWOULDBLOCK; otherwise
  // hands the request to a worker (Defer) that breaks, waiting as the break
  // protocol says, and runs the call again until the guard lets it through.
  // `owned()` makes the call the worker runs instead, for a call whose
  // arguments do not outlive the loop's handler (a write's data); without
  // it, `call` itself. Nothing is allocated unless a lease is in the way:
  // this runs on every write.
  template <typename Call, typename Owned = std::nullptr_t>
  int WithBreaks(fuse_req_t req, const engine::Cred& cred, bool nonblock, Call&& call,
                 Owned&& owned = nullptr) {
    const int rc = call(req, cred);
    if (rc != ERESTART) return rc;
    if constexpr (std::is_null_pointer_v<std::decay_t<Owned>>) {
      return BreakThenRetry(req, cred, nonblock, LayoutCall(std::forward<Call>(call)));
    } else {
      return BreakThenRetry(req, cred, nonblock, owned());
    }
  }
  // After `call` was refused (ERESTART) on the loop: WithBreaks's slow path.
  int BreakThenRetry(fuse_req_t req, const engine::Cred& cred, bool nonblock, LayoutCall call);
  // On a worker: breaks the leases in the way of `change` (what the guard
  // refused), then runs `call` again, as often as the guard asks.
  int BreakAndRetry(fuse_req_t req, const engine::Cred& cred, const LayoutCall& call,
                    engine::LayoutChange change);
  // Breaks the leases in the way of `change`, waiting; a FUSE INTERRUPT of
  // `req` ends the wait with EINTR.
  Status BreakWaiting(fuse_req_t req, const engine::Cred& cred, const engine::LayoutChange& change);
  // The caller's credentials, with the open file the request came through.
  static engine::Cred CredThrough(fuse_req_t req, const OpenFile* f) {
    engine::Cred c = CredOf(req);
    if (f != nullptr) c.set_open_file(f->id());
    return c;
  }

  const Timeouts timeouts_;
  engine::Filesystem* fs_ = nullptr;
  fuse_session* se_ = nullptr;
  WaitPool waiters_{kMaxWaitThreads};
  WaitPool flushers_{kMaxFlushThreads};  // see WithPageCache
  OpenFiles files_;
  LeaseEdge leases_;  // after files_, which it uses
  // Deferred requests per user, for kMaxDeferredPerUser.
  class DeferredSlot;
  Mutex deferred_mu_;
  std::unordered_map<uid_t, int> deferred_by_uid_ GUARDED_BY(deferred_mu_);
  std::unique_ptr<PeerFiles> peers_;
  bool kernel_checks_permissions_ = true;
  std::unique_ptr<DaxMaps> dax_;  // set by Attach
  std::string pool_path_;
  // Pins, set by StartPins (null without them; nic_ null without a soft
  // NIC). Destroyed in Shutdown: contexts, then pins, then the soft NIC.
  std::unique_ptr<pin::SoftNic> nic_;
  std::unique_ptr<pin::PinTable> pins_;
  std::unique_ptr<pin::ContextServer> contexts_;
  std::string softnic_address_;
  DaxMaps::Process self_;  // the daemon, owner of its soft NIC pins' records
  PinMountOptions::Close close_with_pins_ = PinMountOptions::Close::kZombie;  // set by StartPins
  std::atomic<int> flush_waits_{0};  // FLUSHes waiting under block-close (pin_close.cc)
  // One remount at a time; the options as the last one left them.
  Mutex remount_mu_;
  DaemonOptions mount_options_ GUARDED_BY(remount_mu_);
};

// The credentials of the process that sent `req`. Its supplementary groups
// are read (from /proc, by libfuse) only if a permission check needs them.
// REQUIRES: used only before `req` is replied to.
engine::Cred CredOf(fuse_req_t req);
// The same, with the supplementary groups read now: for a request answered
// later, from another thread (Defer), when the caller may be gone.
engine::Cred CredWithGroups(fuse_req_t req);

}  // namespace leasefs::daemon
