// InitFlagsIo: the daemon's own reads and writes of /dev/fuse, so that it can
// grant the kernel INIT flags that libfuse 3.14 knows no capability for.
//
// Why this exists: files are served with FOPEN_DIRECT_IO, and the kernel
// refuses mmap(MAP_SHARED) of such a file with ENODEV unless the INIT reply
// carries FUSE_DIRECT_IO_ALLOW_MMAP (Linux >= 6.6, bit 36 of the 64-bit INIT
// flags, i.e. bit 4 of fuse_init_out.flags2). libfuse 3.14 builds the INIT
// reply itself and has no way to set that bit, but it lets a daemon replace
// the read() and writev() it does on the session's descriptor
// (fuse_session_custom_io). Ours read and write exactly as libfuse does (one
// read(2) or writev(2) per message, errno as the system call left it), note
// the INIT request as it passes, and add the flags to its reply. See
// docs/mmap.md.
//
// The same io serves two requests libfuse 3.14 answers ENOSYS to, after
// which the kernel never sends them again: FUSE_TMPFILE (open(2) with
// O_TMPFILE) and FUSE_STATX (statx(2) asking for the birth time). See
// fuse_io.cc and docs/namespace.md.
//
// The io takes no splice callbacks, so libfuse stops offering splice; the
// daemon turns splice off anyway (Server::DoInit).
//
// Thread safety: one session per process. Install before the session loop
// starts; the callbacks then run on every loop thread at once.
#pragma once

#include <fuse_lowlevel.h>

#include <sys/stat.h>
#include <time.h>

#include <cstdint>

namespace leasefs::daemon {

// FUSE_DIRECT_IO_ALLOW_MMAP (named FUSE_DIRECT_IO_RELAX in Linux 6.6), which
// the <linux/fuse.h> of Debian bookworm (protocol 7.38) does not have.
inline constexpr uint64_t kFuseDirectIoAllowMmap = uint64_t{1} << 36;

// What FUSE_STATX answers for an inode: its attributes, its birth time and
// how long the kernel may cache them (seconds).
struct StatxAttr {
  struct stat st {};
  timespec btime{};
  double attr_timeout = 0;
};
// Fills *out for inode `nodeid` of the session whose userdata is
// `userdata`; returns 0 or an errno (ENOENT for a number that names no
// inode). Called on a loop thread, concurrently.
using StatxFn = int (*)(void* userdata, uint64_t nodeid, StatxAttr* out);

// The name a FUSE_TMPFILE request reaches the create op with (see
// fuse_io.cc): "/", which no real CREATE can carry.
inline constexpr char kTmpfileName[] = "/";

// What became of the extra flags at INIT.
struct InitOutcome {
  bool init_seen = false;  // an INIT request came and was answered
  uint64_t offered = 0;    // the asked-for flags the kernel offered
  uint64_t granted = 0;    // those of them our reply carried to the kernel
};

// Makes the session read and write its descriptor through our io, which adds
// `flags` (bits of the 64-bit INIT flags, kFuseDirectIoAllowMmap) to the INIT
// reply wherever the kernel offered them, and calls `on_init` (if not null)
// on the thread that sent the reply, once it was sent. It also serves what
// libfuse 3.14 cannot: FUSE_TMPFILE becomes a create of kTmpfileName, and
// FUSE_STATX is answered from `statx` (ENOSYS if null). REQUIRES: after
// fuse_session_mount, before the session loop; once per process. Returns 0
// or -errno (that of fuse_session_custom_io).
int InstallInitFlagsIo(fuse_session* se, uint64_t flags, void (*on_init)(const InitOutcome&),
                       StatxFn statx);

// The outcome so far (init_seen false until the INIT reply was sent).
InitOutcome InitFlagsOutcome();

// For tests (tests/fuse/fuse_io_test.cc), without a session: what
// InstallInitFlagsIo sets up, with INIT taken as done (init_done false: its
// reply not sent yet), and the read the io does (one message for libfuse
// from `fd`, after serving what it serves).
void SetUpIoForTest(StatxFn statx, bool init_done = true);
ssize_t ReadRequestForTest(int fd, void* buf, size_t len, void* userdata);

}  // namespace leasefs::daemon
