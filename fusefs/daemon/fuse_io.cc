#include "fusefs/daemon/fuse_io.h"

#include <linux/fuse.h>
#include <linux/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace leasefs::daemon {

namespace {

// The INIT exchange of the process's one session. `wanted` and `on_init` are
// fixed before the loop starts; the rest is written by whichever loop thread
// reads the INIT request and whichever sends its reply.
struct InitState {
  uint64_t wanted = 0;
  void (*on_init)(const InitOutcome&) = nullptr;
  // The INIT request's unique id while its reply is awaited, else 0.
  std::atomic<uint64_t> pending{0};
  std::atomic<uint64_t> offered{0};
  std::atomic<uint64_t> granted{0};
  // Set once the INIT reply went out: from then on every message passes
  // without a look (the kernel sends INIT once per connection).
  std::atomic<bool> done{false};
};

InitState g_init;

// --- Requests libfuse 3.14 does not know --------------------------------
//
// FUSE_TMPFILE (O_TMPFILE, protocol 7.37) and FUSE_STATX (statx(2) asking
// for STATX_BTIME, 7.39): libfuse answers both ENOSYS, after which the
// kernel stops sending them (O_TMPFILE then fails with EOPNOTSUPP, statx
// has no birth time). The kernel sends them whatever minor version the INIT
// reply carried (fs/fuse/dir.c: fuse_tmpfile, fuse_update_get_attr), so
// the io below serves them:
//  - FUSE_TMPFILE carries exactly FUSE_CREATE's arguments (fuse_create_in,
//    then the dentry's name, which for a tmpfile is always "/") and takes
//    exactly its reply (fuse_entry_out + fuse_open_out): it is handed on to
//    libfuse as a CREATE of the name "/", which no real CREATE can carry
//    (a name never holds a '/'), and the Server's create serves it
//    (kTmpfileName), through the open-file table as any create.
//  - FUSE_STATX is answered here, on the reading thread, by a raw reply
//    built from the Server's attributes (g_statx); the read then goes on to
//    the next request.
// Every request is checked for its size before its arguments are read.

constexpr uint32_t kOpTmpfile = 51;  // FUSE_TMPFILE
constexpr uint32_t kOpStatx = 52;    // FUSE_STATX, newer than Debian's <linux/fuse.h>

// The wire structs of FUSE_STATX (<linux/fuse.h>, protocol 7.39), under our
// own names so that a newer installed header does not clash.
struct SxTime {
  int64_t tv_sec;
  uint32_t tv_nsec;
  int32_t reserved;
};
struct StatxIn {
  uint32_t getattr_flags;
  uint32_t reserved;
  uint64_t fh;
  uint32_t sx_flags;
  uint32_t sx_mask;
};
struct Statx {
  uint32_t mask;
  uint32_t blksize;
  uint64_t attributes;
  uint32_t nlink;
  uint32_t uid;
  uint32_t gid;
  uint16_t mode;
  uint16_t spare0;
  uint64_t ino;
  uint64_t size;
  uint64_t blocks;
  uint64_t attributes_mask;
  SxTime atime, btime, ctime, mtime;
  uint32_t rdev_major, rdev_minor;
  uint32_t dev_major, dev_minor;
  uint64_t spare2[14];
};
struct StatxOut {
  uint64_t attr_valid;
  uint32_t attr_valid_nsec;
  uint32_t flags;
  uint64_t spare[2];
  Statx stat;
};
static_assert(sizeof(SxTime) == 16);
static_assert(sizeof(StatxIn) == 24);
static_assert(sizeof(Statx) == 256);
static_assert(offsetof(Statx, ino) == 32);
static_assert(offsetof(Statx, atime) == 64);
static_assert(offsetof(Statx, btime) == 80);
static_assert(offsetof(Statx, rdev_major) == 128);
static_assert(sizeof(StatxOut) == 288);
static_assert(offsetof(StatxOut, stat) == 32);
static_assert(sizeof(fuse_create_in) == 16);  // the 7.12+ layout the kernel sends

StatxFn g_statx = nullptr;

SxTime ToSxTime(const timespec& ts) {
  return SxTime{ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec), 0};
}

// Sends a reply of `payload` bytes (or, with err != 0, the error alone) to
// request `unique`. Failures are the kernel's to notice: a request whose
// reply does not arrive was interrupted or its caller is gone.
void SendRaw(int fd, uint64_t unique, int err, const void* payload, size_t size) {
  fuse_out_header h{};
  h.unique = unique;
  h.error = -err;
  iovec v[2] = {{&h, sizeof(h)}, {const_cast<void*>(payload), err == 0 ? size : 0}};
  h.len = static_cast<uint32_t>(sizeof(h) + v[1].iov_len);
  const int saved = errno;
  (void)!writev(fd, v, err == 0 && size > 0 ? 2 : 1);
  errno = saved;
}

// The request's fuse_statx_in asks for a mask and may name an open file:
// every attribute is answered whatever the mask (as the kernel expects), and
// an inode's attributes are the same through any of its open files.
void AnswerStatx(int fd, const fuse_in_header& h, size_t arg_size, void* userdata) {
  if (arg_size < sizeof(StatxIn)) return SendRaw(fd, h.unique, EINVAL, nullptr, 0);
  if (g_statx == nullptr) return SendRaw(fd, h.unique, ENOSYS, nullptr, 0);
  StatxAttr a;
  if (int err = g_statx(userdata, h.nodeid, &a); err != 0)
    return SendRaw(fd, h.unique, err, nullptr, 0);
  StatxOut out{};
  // Clamped as libfuse clamps its own replies' timeouts: a huge
  // attr_timeout= must not overflow the conversion.
  const double valid = a.attr_timeout > 0 ? std::min(a.attr_timeout, 1e18) : 0;
  out.attr_valid = static_cast<uint64_t>(valid);
  out.attr_valid_nsec = static_cast<uint32_t>((valid - static_cast<double>(out.attr_valid)) * 1e9);
  Statx& sx = out.stat;
  sx.mask = STATX_BASIC_STATS | STATX_BTIME;
  sx.blksize = static_cast<uint32_t>(a.st.st_blksize);
  sx.nlink = static_cast<uint32_t>(a.st.st_nlink);
  sx.uid = a.st.st_uid;
  sx.gid = a.st.st_gid;
  sx.mode = static_cast<uint16_t>(a.st.st_mode);
  sx.ino = a.st.st_ino;
  sx.size = static_cast<uint64_t>(a.st.st_size);
  sx.blocks = static_cast<uint64_t>(a.st.st_blocks);
  sx.atime = ToSxTime(a.st.st_atim);
  sx.btime = ToSxTime(a.btime);
  sx.ctime = ToSxTime(a.st.st_ctim);
  sx.mtime = ToSxTime(a.st.st_mtim);
  sx.rdev_major = major(a.st.st_rdev);
  sx.rdev_minor = minor(a.st.st_rdev);
  SendRaw(fd, h.unique, 0, &out, sizeof(out));
}

// Makes a FUSE_TMPFILE request the CREATE of kTmpfileName it stands for.
// Returns false (having answered it) if it is too short to be one.
bool TmpfileAsCreate(int fd, char* buf, const fuse_in_header& h, size_t arg_size) {
  // fuse_create_in, then a NUL-terminated name of at least one byte.
  if (arg_size < sizeof(fuse_create_in) + 2) {
    SendRaw(fd, h.unique, EINVAL, nullptr, 0);
    return false;
  }
  const uint32_t create = FUSE_CREATE;
  std::memcpy(buf + offsetof(fuse_in_header, opcode), &create, sizeof(create));
  // The kernel's tmpfile dentry is named "/" already; make sure of it, as
  // that name is all that tells the Server's create what this is.
  char* name = buf + sizeof(fuse_in_header) + sizeof(fuse_create_in);
  name[0] = kTmpfileName[0];
  name[1] = '\0';
  return true;
}

// Looks at a request read from the device after INIT. Returns true if it
// is for libfuse (perhaps rewritten), false if it was answered here.
bool ForLibfuse(int fd, char* buf, size_t size, void* userdata) {
  fuse_in_header h;
  std::memcpy(&h, buf, sizeof(h));
  if (h.opcode != kOpTmpfile && h.opcode != kOpStatx) return true;
  // The kernel's length is the read's; anything else is not a request we
  // can trust the arguments of.
  if (h.len != size) {
    SendRaw(fd, h.unique, EINVAL, nullptr, 0);
    return false;
  }
  const size_t arg_size = size - sizeof(h);
  if (h.opcode == kOpTmpfile) return TmpfileAsCreate(fd, buf, h, arg_size);
  AnswerStatx(fd, h, arg_size, userdata);
  return false;
}

// Notes an INIT request: its unique id and which wanted flags it offers.
// Makes no system call (errno must stay as read(2) left it).
void NoteRequest(const char* buf, size_t size) {
  fuse_in_header h;
  std::memcpy(&h, buf, sizeof(h));
  if (h.opcode != FUSE_INIT) return;
  // Before protocol 7.36 the request ends after `flags`; the rest reads 0.
  fuse_init_in in{};
  const size_t in_size = size - sizeof(h);
  std::memcpy(&in, buf + sizeof(h), std::min(in_size, sizeof(in)));
  uint64_t flags = in.flags;
  if (flags & FUSE_INIT_EXT) flags |= uint64_t{in.flags2} << 32;
  g_init.offered.store(flags & g_init.wanted, std::memory_order_relaxed);
  g_init.pending.store(h.unique, std::memory_order_release);
}

ssize_t ReadDevice(int fd, void* buf, size_t len, void* userdata /* the Server */) {
  for (;;) {
    const ssize_t n = read(fd, buf, len);
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
    if (!g_init.done.load(std::memory_order_relaxed))
      NoteRequest(static_cast<const char*>(buf), static_cast<size_t>(n));
    // Not gated on `done`: the kernel queues requests the moment it has
    // read the INIT reply, before WritevDevice sets `done`, and a STATX or
    // TMPFILE that reached libfuse then would get ENOSYS, which turns the
    // feature off for the rest of the mount. The kernel sends neither
    // before its INIT reply, so looking at every request is safe.
    if (ForLibfuse(fd, static_cast<char*>(buf), static_cast<size_t>(n), userdata)) return n;
  }
}

// Adds the offered flags to a successful INIT reply that libfuse built as
// a header and the fuse_init_out, and sends it in one writev(2) as libfuse
// would have; `granted` is what the sent reply carried. Any other shape is
// sent untouched.
ssize_t SendInitReply(int fd, const iovec* iov, int count, uint64_t* granted) {
  *granted = 0;
  fuse_out_header h;
  std::memcpy(&h, iov[0].iov_base, sizeof(h));
  const uint64_t offered = g_init.offered.load(std::memory_order_relaxed);
  size_t payload = 0;
  for (int i = 1; i < count; ++i) payload += iov[i].iov_len;
  // libfuse shortens the reply only for kernels older than 7.23, which
  // never offer flags2.
  constexpr size_t kFlags2End = offsetof(fuse_init_out, flags2) + sizeof(uint32_t);
  if (h.error != 0 || offered == 0 || iov[0].iov_len != sizeof(h) || payload < kFlags2End ||
      payload > sizeof(fuse_init_out))
    return writev(fd, iov, count);
  fuse_init_out out{};
  char* at = reinterpret_cast<char*>(&out);
  for (int i = 1; i < count; ++i) {
    std::memcpy(at, iov[i].iov_base, iov[i].iov_len);
    at += iov[i].iov_len;
  }
  out.flags |= static_cast<uint32_t>(offered);
  if (offered >> 32) {
    out.flags |= FUSE_INIT_EXT;  // the kernel reads flags2 only with it
    out.flags2 |= static_cast<uint32_t>(offered >> 32);
  }
  iovec v[2] = {iov[0], {&out, payload}};
  const ssize_t n = writev(fd, v, 2);
  if (n >= 0) *granted = offered;
  return n;
}

ssize_t WritevDevice(int fd, iovec* iov, int count, void* /*userdata: the Server*/) {
  if (g_init.done.load(std::memory_order_acquire) || count < 1 ||
      iov[0].iov_len < sizeof(fuse_out_header))
    return writev(fd, iov, count);
  const uint64_t unique = g_init.pending.load(std::memory_order_acquire);
  uint64_t reply_to = 0;
  std::memcpy(&reply_to, static_cast<const char*>(iov[0].iov_base) + offsetof(fuse_out_header, unique),
              sizeof(reply_to));
  if (unique == 0 || reply_to != unique) return writev(fd, iov, count);
  uint64_t granted = 0;
  const ssize_t n = SendInitReply(fd, iov, count, &granted);
  const int saved = errno;  // libfuse reads it after we return
  g_init.granted.store(granted, std::memory_order_relaxed);
  g_init.pending.store(0, std::memory_order_relaxed);
  g_init.done.store(true, std::memory_order_release);
  if (g_init.on_init != nullptr) g_init.on_init(InitFlagsOutcome());
  errno = saved;
  return n;
}

}  // namespace

int InstallInitFlagsIo(fuse_session* se, uint64_t flags, void (*on_init)(const InitOutcome&),
                       StatxFn statx) {
  g_init.wanted = flags;
  g_init.on_init = on_init;
  g_statx = statx;
  fuse_custom_io io{};
  io.read = ReadDevice;
  io.writev = WritevDevice;
  return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

void SetUpIoForTest(StatxFn statx, bool init_done) {
  g_statx = statx;
  g_init.done.store(init_done, std::memory_order_release);
}

ssize_t ReadRequestForTest(int fd, void* buf, size_t len, void* userdata) {
  return ReadDevice(fd, buf, len, userdata);
}

InitOutcome InitFlagsOutcome() {
  InitOutcome o;
  o.init_seen = g_init.done.load(std::memory_order_acquire);
  o.offered = g_init.offered.load(std::memory_order_relaxed);
  o.granted = g_init.granted.load(std::memory_order_relaxed);
  return o;
}

}  // namespace leasefs::daemon
