// leasefs: the FUSE daemon that serves one leasefs pool at a mount point.
#include <fuse_lowlevel.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fusefs/daemon/background.h"
#include "fusefs/daemon/fuse_io.h"
#include "fusefs/daemon/mountpoint.h"
#include "fusefs/daemon/options.h"
#include "fusefs/daemon/pool_lock.h"
#include "fusefs/daemon/remount.h"
#include "fusefs/daemon/server.h"

#ifndef LEASEFS_VERSION
#define LEASEFS_VERSION "unknown"
#endif

namespace {

using namespace leasefs;
using namespace leasefs::daemon;
using leasefs::engine::Filesystem;

constexpr const char* kDescription = R"(leasefs - mount a leasefs pool

SYNOPSIS
  leasefs POOL MOUNTPOINT [-f] [-d] [-s] [-o OPTION[,OPTION...]]

DESCRIPTION
  Serves the leasefs filesystem on POOL (made by mkfs.leasefs) at MOUNTPOINT
  through FUSE. Without -f the command returns once the mount is ready (so
  `leasefs POOL MNT && ls MNT` works) and the daemon stays in the background.
  The daemon ends, marking the pool cleanly unmounted, on `fusermount3 -u
  MOUNTPOINT` (or umount) and on SIGTERM, SIGINT or SIGHUP. A signal that was
  ignored when the daemon started stays ignored (nohup ignores SIGHUP, and a
  shell script's `&` ignores SIGINT).

  One daemon serves a pool at a time. As umount returns before the daemon
  that served the mount has let go of the pool, a daemon started right after
  waits up to 10 s for that one to exit, saying so; a pool whose daemon still
  serves a mount is refused at once. A mount point left behind by a daemon
  that was killed is detached and reused; a pool whose daemon was killed is
  recovered (journal replay) at the next mount.

  Timestamps range from 1677-09-21 00:12:44 to 2262-04-11 23:47:16 UTC, in
  nanoseconds (the pool stores int64 nanoseconds since 1970); a time set
  outside the range is clamped to its nearer end, with 0 nanoseconds, as
  ext4 and XFS clamp to theirs.

  Files are served without the kernel page cache (direct I/O), so readers see
  exactly what writers and DAX clients stored. Small requests cost what the
  kernel's FUSE round trip costs, which depends mostly on whether daemon and
  client share a CPU; see threads= below and docs/threading.md.

OPTIONS
  -o takes a comma-separated list and may be repeated. leasefs's own:
    threads=N            serve with N threads (fuse_session_loop_mt with
                         clone_fd); 1 serves from a single thread, the
                         fastest when daemon and client are pinned to one
                         CPU (taskset). Default: one per CPU the daemon may
                         run on (at most 8), which halves small-request
                         latency when the scheduler places them freely
    attr_timeout=S       seconds the kernel may cache attributes; default 1
    entry_timeout=S      seconds the kernel may cache names; default 1
                         (0 with no_default_permissions)
    negative_timeout=S   seconds the kernel may cache "no such file";
                         default 1 (0 with no_default_permissions; 0: not
                         cached)
    lease_break_time=S   seconds a layout-lease holder has to release its
                         lease once told of a break, before the lease is
                         revoked and the change goes ahead; default 45, as
                         /proc/sys/fs/lease-break-time (0: never revoked)
    write_break=MODE     which writes break layout leases: unmap-only (the
                         default) only writes that allocate (fill a hole,
                         copy a shared block, extend the file);
                         xfs-faithful every write, as XFS does
    pinned_break=POLICY  what a break that times out over pinned blocks
                         does: refuse (ETXTBSY, the default), fence (revoke
                         the pins, quarantine the blocks, proceed) or wait.
                         See docs/pins.md
    softnic=ADDR:PORT    where the soft NIC listens for peers (IPv4; port 0:
                         any free port, as PIN_INFO then says); default
                         127.0.0.1:0, loopback, since any local user can
                         connect; softnic=off: declared pins only
    close_with_pins=POLICY
                         what closing a file with pins does: zombie (the
                         default: close succeeds, the pinned lease stays,
                         listed ZOMBIE, until its last pin goes);
                         block-close (a process's last close of the file
                         waits until the pins made through it are gone; a
                         fatal signal ends the wait, and a dying process
                         never waits); kill-on-close (the file's last close
                         SIGKILLs the processes holding the pins' contexts
                         and drops the pins and the lease). See docs/pins.md
    pin_passing=POLICY   when the process that created a pin context dies
                         while another holds it (fork, SCM_RIGHTS):
                         follow-fd (the default) keeps the pins with the
                         context; strict keeps them only if a holder has a
                         lease of its own covering each, else fences and
                         drops them
    mmap=MODE            shared (the default): mmap(MAP_SHARED) of a file
                         works, through the kernel's page cache, coherent
                         with read and write (Linux 6.6 or later; older
                         kernels refuse it with ENODEV, see docs/mmap.md);
                         private-only: only MAP_PRIVATE mappings work, and
                         no file data is ever cached by the kernel
    ro                   mount read-only; the pool is not written at all,
                         and no memory is reserved for it (any size works)
    remount              change the options of the leasefs mount at
                         MOUNTPOINT instead of mounting one: what `mount -o
                         remount,... MOUNTPOINT` runs through mount.fuse3.
                         Root only. ro and rw, the atime options and the
                         mount point's flags (nosuid, nodev, noexec, sync)
                         change live, and as for mount(2) the options are
                         the new state: read-write unless ro is named, and
                         the flags named only; any other option must name
                         what the mount already has. A mount made with -o
                         ro cannot become read-write (its pool is mapped
                         privately). POOL is not used. See docs/mount.md
    relatime, strictatime, noatime
                         when reading a file (read, exec) or listing a
                         directory updates its atime, as on a local
                         filesystem: relatime (the default) when atime is
                         not after mtime or ctime or is a day old;
                         strictatime every time; noatime never. As in the
                         kernel, strictatime wins over noatime in any order;
                         atime and nostrictatime undo them
    nodiratime           listing a directory never updates its atime
                         (diratime undoes it)
    lazytime, norelatime accepted; they change nothing (leasefs persists
                         the timestamps reads and overwrites set lazily)
    no_default_permissions
                         leave permission checks to the daemon alone. By
                         default the kernel checks them as well
                         (default_permissions), because it walks cached
                         names without asking the daemon. Without it, names
                         are not cached unless the timeouts are given, so
                         that every path walk reaches the daemon's checks.
                         But the kernel opens a FIFO (and, on a mount with
                         -o dev, a device node) without asking the daemon,
                         so in this mode nothing checks its mode bits:
                         whoever may reach a FIFO may open it for reading
                         and writing. The directories on the way, and
                         changes to the FIFO itself (chmod, chown, rename,
                         unlink), are still checked. Running a program then
                         needs read permission as well as execute
  Every other option goes to FUSE and the kernel, for example allow_other,
  fsname=NAME (default: the pool's path), subtype=NAME (default: leasefs, so
  the type is fuse.leasefs), noexec, max_read=N, and suid and dev (the mount
  is nosuid and nodev unless they are given; `mount -t fuse.leasefs` run by
  root gives them, through mount.fuse3, unless told nosuid and nodev).

EXIT STATUS
  0 unmounted cleanly; 1 bad arguments, the pool cannot be opened or
  mounted, is in use by another daemon, or the mount failed.)";

// How long a new daemon waits for one whose mount is gone to let go of the
// pool (it marks the pool clean first: milliseconds, a second or two for a
// large inode table on a slow disk).
constexpr std::chrono::milliseconds kPoolLockWait{10000};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "leasefs: %s\n", msg.c_str());
  return 1;
}

std::string VersionString() {
  return std::string("leasefs ") + LEASEFS_VERSION + " (libfuse " + fuse_pkgversion() + ")";
}

struct SessionDeleter {
  void operator()(fuse_session* se) const noexcept { fuse_session_destroy(se); }
};
using SessionPtr = std::unique_ptr<fuse_session, SessionDeleter>;

// Restores the default signal dispositions when the session ends.
class SignalHandlers {
 public:
  explicit SignalHandlers(fuse_session* se) : se_(se) {
    installed_ = fuse_set_signal_handlers(se) == 0;
  }
  ~SignalHandlers() {
    if (installed_) fuse_remove_signal_handlers(se_);
  }
  SignalHandlers(const SignalHandlers&) = delete;
  SignalHandlers& operator=(const SignalHandlers&) = delete;
  [[nodiscard]] bool installed() const { return installed_; }

 private:
  fuse_session* se_;
  bool installed_ = false;
};

// Owns a mounted engine; marks the pool clean when it goes away.
class MountedEngine {
 public:
  explicit MountedEngine(std::unique_ptr<Filesystem> fs) : fs_(std::move(fs)) {}
  ~MountedEngine() { fs_->Unmount(); }
  MountedEngine(const MountedEngine&) = delete;
  MountedEngine& operator=(const MountedEngine&) = delete;
  [[nodiscard]] Filesystem* get() const { return fs_.get(); }

 private:
  std::unique_ptr<Filesystem> fs_;
};

// Unmounts the session's mount point when it goes away.
class SessionMount {
 public:
  explicit SessionMount(fuse_session* se) : se_(se) {}
  ~SessionMount() { fuse_session_unmount(se_); }
  SessionMount(const SessionMount&) = delete;
  SessionMount& operator=(const SessionMount&) = delete;

 private:
  fuse_session* se_;
};

// Finishes the deferred requests when it goes away: after the loop, before
// the engine is unmounted and the session destroyed (tasks use both).
class DeferredDrain {
 public:
  explicit DeferredDrain(Server* server) : server_(server) {}
  ~DeferredDrain() { server_->Shutdown(); }
  DeferredDrain(const DeferredDrain&) = delete;
  DeferredDrain& operator=(const DeferredDrain&) = delete;

 private:
  Server* server_;
};

// The lease table's settings from the mount options.
lease::Options LeaseOptions(const LeaseMountOptions& o) {
  lease::Options lo;
  lo.break_time = std::chrono::milliseconds(static_cast<int64_t>(o.break_time * 1000 + 0.5));
  lo.write_break =
      o.every_write_breaks ? lease::WriteBreak::kXfsFaithful : lease::WriteBreak::kUnmapOnly;
  switch (o.pinned_break) {
    case LeaseMountOptions::Pinned::kRefuse:
      lo.pinned_break = lease::PinnedBreak::kRefuse;
      break;
    case LeaseMountOptions::Pinned::kFence:
      lo.pinned_break = lease::PinnedBreak::kFence;
      break;
    case LeaseMountOptions::Pinned::kWait:
      lo.pinned_break = lease::PinnedBreak::kWait;
      break;
  }
  return lo;
}

// Validates the FUSE options early: libfuse prints what it rejects.
SessionPtr NewSession(const DaemonOptions& opts, const std::string& fsname, Server* server) {
  std::vector<std::string> args = FuseArgs(opts, fsname);
  std::vector<char*> argv;
  argv.reserve(args.size());
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fa = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&fa, &Server::Ops(), sizeof(fuse_lowlevel_ops), server);
  fuse_opt_free_args(&fa);
  return SessionPtr(se);
}

// Maps the pool and takes its lock, or prints why not and returns null.
// With the lock in *lock, which must outlive the media (see PoolLock).
std::unique_ptr<engine::PoolMedia> OpenLockedPool(const DaemonOptions& opts,
                                                   const std::string& pool_path,
                                                   std::optional<PoolLock>* lock) {
  engine::MapOptions mo;
  mo.read_only = opts.read_only;  // a private mapping: nothing reaches the pool
  auto media = engine::OpenPool(pool_path, mo);
  if (!media.ok()) {
    Fail("cannot mount " + opts.pool + ": " + media.status().ToString());
    return nullptr;
  }
  // A daemon whose mount was just unmounted may still be marking the pool
  // clean: wait for it rather than fail (`umount MNT && mount MNT`).
  auto notice = [&opts](pid_t pid) {
    std::fprintf(stderr, "leasefs: waiting for the daemon that served %s (pid %d) to let go\n",
                 opts.pool.c_str(), static_cast<int>(pid));
    std::fflush(stderr);
  };
  auto locked = PoolLock::Acquire((*media)->fd(), opts.pool, kPoolLockWait, notice);
  if (!locked.ok()) {
    const Status& s = locked.status();
    Fail(s.err() == EWOULDBLOCK ? std::string(s.message()) : s.ToString());
    return nullptr;
  }
  lock->emplace(std::move(*locked));
  return std::move(*media);
}

std::unique_ptr<Filesystem> MountEngine(const DaemonOptions& opts,
                                        std::unique_ptr<engine::PoolMedia> media,
                                        engine::MountReport* report) {
  auto fs = Filesystem::Mount(std::move(media), EngineOptions(opts), report);
  if (!fs.ok()) {
    Fail("cannot mount " + opts.pool + ": " + fs.status().ToString());
    return nullptr;
  }
  return std::move(*fs);
}

void LogMounted(const DaemonOptions& opts, const std::string& mnt, const Filesystem& fs,
                const engine::MountReport& r) {
  std::fprintf(stderr,
               "leasefs: %s mounted on %s%s: %llu inodes in use, previous unmount %s, "
               "%s, %llu orphans reclaimed, mounted in %.1f ms, %s, %u thread%s\n",
               opts.pool.c_str(), mnt.c_str(), opts.read_only ? " read-only" : "",
               static_cast<unsigned long long>(r.inodes_in_use),
               r.was_clean ? "clean" : "NOT clean",
               r.journal_replayed ? "journal replayed" : "nothing to replay",
               static_cast<unsigned long long>(r.orphans_reclaimed), r.seconds * 1e3,
               fs.media().describe().c_str(), opts.threads, opts.threads == 1 ? "" : "s");
  if (r.upgraded)
    std::fprintf(stderr, "leasefs: %s upgraded in place to pool format version %u\n",
                 opts.pool.c_str(), layout::kFormatVersion);
  std::fflush(stderr);
}

// Says once at INIT whether shared mappings of files work (fuse_io.h).
void LogSharedMmap(const InitOutcome& o) {
  if (o.granted & kFuseDirectIoAllowMmap) {
    fuse_log(FUSE_LOG_INFO, "leasefs: mmap(MAP_SHARED) of files: on\n");
  } else {
    fuse_log(FUSE_LOG_WARNING,
             "leasefs: mmap(MAP_SHARED) of files: off, the kernel did not %s "
             "FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6 or later has it)\n",
             o.offered ? "take" : "offer");
  }
}

// Installs the daemon's own io (fuse_io.h): it asks the kernel at INIT to
// let files be mapped shared, unless the mount said mmap=private-only, and
// serves O_TMPFILE and statx's birth time. Failing that, mounts without.
void InstallDaemonIo(const DaemonOptions& opts, fuse_session* se) {
  const uint64_t flags = opts.shared_mmap ? kFuseDirectIoAllowMmap : 0;
  if (int rc = InstallInitFlagsIo(se, flags, opts.shared_mmap ? LogSharedMmap : nullptr,
                                  Server::StatxOf);
      rc != 0)
    std::fprintf(stderr, "leasefs: mmap(MAP_SHARED), O_TMPFILE and birth times: off: %s\n",
                 Status::Error(-rc).ToString().c_str());
}

// Serves requests until unmount or a signal. Returns fuse_session_loop's
// result: 0 or a signal number when ended normally, -errno on error.
int RunLoop(fuse_session* se, unsigned threads) {
  if (threads <= 1) return fuse_session_loop(se);
  std::unique_ptr<fuse_loop_config, void (*)(fuse_loop_config*)> cfg(fuse_loop_cfg_create(),
                                                                     fuse_loop_cfg_destroy);
  if (!cfg) return -ENOMEM;
  // One /dev/fuse clone per thread (its own processing queue and lock): the
  // multi-threaded loop's latency drops from ~130 to ~17 µs per small request
  // (docs/threading.md), still well above the single thread's ~3 µs.
  fuse_loop_cfg_set_clone_fd(cfg.get(), 1);
  fuse_loop_cfg_set_max_threads(cfg.get(), threads);
  fuse_loop_cfg_set_idle_threads(cfg.get(), threads);
  return fuse_session_loop_mt(se, cfg.get());
}

// Everything from the first libfuse call to the clean unmount. Prints why it
// failed (libfuse prints its own complaints) and returns the exit status.
// Objects go in reverse order, also when an exception leaves: the mount
// point, signal handlers, deferred requests, engine (pool marked clean),
// pool lock, session, server.
// Lets the daemon use as many descriptors as it may: it keeps one pidfd per
// process holding leases (lease/), and users of the mount should not be able
// to run it out at the usual soft limit of 1024.
void RaiseFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);  // failing leaves the limit where it was
}

int Serve(const DaemonOptions& opts, const std::string& pool_path, const std::string& mnt,
          Background* background) {
  RaiseFileLimit();
  Server server(opts.timeouts, LeaseOptions(opts.leases));
  SessionPtr session = NewSession(opts, pool_path, &server);
  if (!session) return 1;
  std::optional<PoolLock> lock;  // let go of after the engine closed the pool
  auto media = OpenLockedPool(opts, pool_path, &lock);
  if (!media) return 1;
  // Only now: with the pool locked, no live daemon of ours serves it.
  if (Status s = ClearStaleMount(mnt); !s.ok())
    return Fail("cannot use mount point " + opts.mountpoint + ": " + s.ToString());
  engine::MountReport report;
  auto fs = MountEngine(opts, std::move(media), &report);
  if (!fs) return 1;
  MountedEngine engine(std::move(fs));
  server.Attach(engine.get(), session.get());
  server.SetMountpoint(mnt);
  server.SetPoolPath(pool_path);
  server.SetKernelChecksPermissions(opts.default_permissions);
  server.SetMountOptions(opts);
  if (Status s = server.StartPins(opts.pins); !s.ok())
    return Fail("cannot start the soft NIC at " + opts.pins.softnic_address + ":" +
                std::to_string(opts.pins.softnic_port) + ": " + s.ToString());
  DeferredDrain drain(&server);
  SignalHandlers signals(session.get());
  if (!signals.installed()) return Fail("cannot install signal handlers");
  if (fuse_session_mount(session.get(), mnt.c_str()) != 0) return 1;
  SessionMount mounted(session.get());
  InstallDaemonIo(opts, session.get());
  // Without the record a successor refuses instead of waiting; still mounted.
  if (Status s = lock->Publish(mnt); !s.ok())
    std::fprintf(stderr, "leasefs: no holder record for %s: %s\n", opts.pool.c_str(),
                 s.ToString().c_str());
  LogMounted(opts, mnt, *engine.get(), report);
  if (background) background->Ready();
  const int rc = RunLoop(session.get(), opts.threads);
  if (rc < 0) return Fail("session loop failed: " + Status::Error(-rc).ToString());
  return 0;
}

// Returns the exit status for a command line that asks for no mount (help,
// version, errors), or nullopt with *opts filled in.
std::optional<int> ParseCommandLine(int argc, char** argv, DaemonOptions* opts) {
  CLI::App app(kDescription, "leasefs");
  std::vector<std::string> option_lists;
  bool single = false;
  app.add_option("POOL", opts->pool, "pool file or pmem/DAX device")->required();
  app.add_option("MOUNTPOINT", opts->mountpoint, "directory to mount on")->required();
  app.add_flag("-f,--foreground", opts->foreground, "stay in the foreground");
  app.add_flag("-d,--debug", opts->debug, "log every FUSE request (implies -f)");
  app.add_flag("-s,--single-thread", single, "serve with one thread (threads=1)");
  app.add_option("-o", option_lists, "options, see OPTIONS above")->allow_extra_args(false);
  app.set_version_flag("-V,--version", VersionString());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }
  for (const auto& list : option_lists) {
    for (const auto& item : SplitOptionList(list)) {
      opts->items.push_back(item);
      if (Status s = ApplyOption(item, opts); !s.ok()) return Fail(std::string(s.message()));
    }
  }
  FinishOptions(opts);
  if (single) opts->threads = 1;
  if (opts->debug) opts->foreground = true;
  return std::nullopt;
}

int Main(int argc, char** argv) {
  DaemonOptions opts;
  if (auto rc = ParseCommandLine(argc, argv, &opts)) return *rc;
  if (opts.remount) return Remount(opts.mountpoint, opts.items);
  auto mnt = CanonicalPath(opts.mountpoint);
  if (!mnt.ok())
    return Fail("cannot use mount point " + opts.mountpoint + ": " +
                Status::Error(mnt.status().err()).ToString());
  // The pool's full path names the mount in /proc/mounts; if it cannot be
  // resolved, opening it fails below with the reason.
  auto pool = CanonicalPath(opts.pool);
  const std::string pool_path = pool.ok() ? *pool : opts.pool;
  std::optional<Background> background;
  if (!opts.foreground) {
    auto bg = Background::Start();  // the parent exits inside, with our status
    if (!bg.ok()) return Fail("cannot go to the background: " + bg.status().ToString());
    background.emplace(std::move(*bg));
  }
  return Serve(opts, pool_path, *mnt, background ? &*background : nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {  // std::bad_alloc, in practice
    return Fail(e.what());
  }
}
