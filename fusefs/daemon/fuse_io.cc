#include "fusefs/daemon/fuse_io.h"

#include <linux/fuse.h>
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

ssize_t ReadDevice(int fd, void* buf, size_t len, void* /*userdata: the Server*/) {
  const ssize_t n = read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header)) &&
      !g_init.done.load(std::memory_order_relaxed))
    NoteRequest(static_cast<const char*>(buf), static_cast<size_t>(n));
  return n;
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

int InstallInitFlagsIo(fuse_session* se, uint64_t flags, void (*on_init)(const InitOutcome&)) {
  g_init.wanted = flags;
  g_init.on_init = on_init;
  fuse_custom_io io{};
  io.read = ReadDevice;
  io.writev = WritevDevice;
  return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

InitOutcome InitFlagsOutcome() {
  InitOutcome o;
  o.init_seen = g_init.done.load(std::memory_order_acquire);
  o.offered = g_init.offered.load(std::memory_order_relaxed);
  o.granted = g_init.granted.load(std::memory_order_relaxed);
  return o;
}

}  // namespace leasefs::daemon
