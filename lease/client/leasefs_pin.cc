// The C API of pins (leasefs_pin.h): one ioctl per call, and the pin
// context's socket.
#include "lease/client/leasefs_pin.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace {

// The negative errno for a pin command that failed with `err` (as
// leasefs_lease.cc tells another filesystem from a daemon without pins).
int PinError(int fd, int err) {
  if (err != ENOTTY) return -err;
  leasefs_version v{};
  if (ioctl(fd, LEASEFS_IOC_VERSION, &v) != 0) return -ENOTTY;
  return (v.features & LEASEFS_FEATURE_PINS) == 0 ? -EOPNOTSUPP : -ENOTTY;
}

// Reads one whole frame, waiting up to timeout_ms. A stream socket may
// split a frame; the daemon writes whole ones, so the rest follows at once.
int ReadFrame(int fd, int timeout_ms, leasefs_pin_frame* f) {
  size_t got = 0;
  auto* p = reinterpret_cast<unsigned char*>(f);
  while (got < sizeof(*f)) {
    pollfd pfd{fd, POLLIN, 0};
    const int n = poll(&pfd, 1, got == 0 ? timeout_ms : 5000);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return got == 0 ? -ETIMEDOUT : -EPROTO;
    const ssize_t r = recv(fd, p + got, sizeof(*f) - got, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -errno;
    }
    if (r == 0) return -EPIPE;
    got += static_cast<size_t>(r);
  }
  if (f->magic != LEASEFS_PIN_FRAME_MAGIC || f->version != LEASEFS_PIN_FRAME_VERSION) {
    return -EPROTO;
  }
  return 0;
}

}  // namespace

extern "C" {

int leasefs_pin_get_info(int fd, struct leasefs_pin_info* out) {
  *out = ::leasefs_pin_info{};
  if (ioctl(fd, LEASEFS_IOC_PIN_INFO, out) != 0) return PinError(fd, errno);
  if (out->socket_name_len == 0 || out->socket_name_len > sizeof(out->socket_name)) return -EPROTO;
  return 0;
}

int leasefs_pin_context_open(int fd, struct leasefs_pin_context* out) {
  *out = leasefs_pin_context{};
  out->fd = -1;
  ::leasefs_pin_info info;
  if (const int rc = leasefs_pin_get_info(fd, &info); rc != 0) return rc;
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // An abstract name: a NUL byte, then the name's bytes (no terminator).
  const size_t n = info.socket_name_len;
  if (n + 1 > sizeof(addr.sun_path)) {
    close(s);
    return -EPROTO;
  }
  std::memcpy(addr.sun_path + 1, info.socket_name, n);
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  if (connect(s, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    const int err = errno;
    close(s);
    return -err;
  }
  // Anybody may bind an abstract name the daemon let go; the daemon is the
  // process PIN_INFO named.
  ucred peer{};
  socklen_t peer_len = sizeof(peer);
  if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 ||
      peer.pid != info.daemon_pid) {
    close(s);
    return -EPROTO;
  }
  leasefs_pin_frame hello;
  int rc = ReadFrame(s, 5000, &hello);
  if (rc == -EPIPE) rc = -ECONNREFUSED;  // closed at once: over the user's cap
  if (rc == 0 && (hello.type != LEASEFS_PIN_FRAME_HELLO || hello.id == 0)) rc = -EPROTO;
  if (rc != 0) {
    close(s);
    return rc;
  }
  out->fd = s;
  out->id = hello.id;
  std::memcpy(out->token, hello.token, sizeof(out->token));
  return 0;
}

void leasefs_pin_context_close(struct leasefs_pin_context* ctx) {
  if (ctx->fd >= 0) close(ctx->fd);
  ctx->fd = -1;
}

int leasefs_pin_register(int fd, const struct leasefs_pin_context* ctx, uint64_t offset,
                         uint64_t length, uint32_t provider, uint32_t flags,
                         uint64_t* pin_id, uint64_t* rkey) {
  ::leasefs_pin p{};
  p.context = ctx->id;
  std::memcpy(p.token, ctx->token, sizeof(p.token));
  p.offset = offset;
  p.length = length;
  p.provider = provider;
  p.flags = flags;
  if (ioctl(fd, LEASEFS_IOC_PIN, &p) != 0) return PinError(fd, errno);
  if (pin_id != nullptr) *pin_id = p.pin_id;
  if (rkey != nullptr) *rkey = p.rkey;
  return 0;
}

int leasefs_pin_unregister(int fd, const struct leasefs_pin_context* ctx, uint64_t pin_id) {
  ::leasefs_unpin u{};
  u.context = ctx->id;
  std::memcpy(u.token, ctx->token, sizeof(u.token));
  u.pin_id = pin_id;
  if (ioctl(fd, LEASEFS_IOC_UNPIN, &u) != 0) return PinError(fd, errno);
  return 0;
}

int leasefs_pin_list_page(int fd, uint64_t after, struct leasefs_pin_list* out) {
  std::memset(out, 0, sizeof(*out));
  out->after = after;
  if (ioctl(fd, LEASEFS_IOC_PIN_LIST, out) != 0) return PinError(fd, errno);
  if (out->count > LEASEFS_PIN_LIST_MAX) return -EPROTO;
  return 0;
}

int leasefs_pin_wait_fenced(const struct leasefs_pin_context* ctx, int timeout_ms,
                            uint64_t* pin_id, uint64_t* rkey) {
  for (;;) {
    leasefs_pin_frame f;
    if (const int rc = ReadFrame(ctx->fd, timeout_ms, &f); rc != 0) return rc;
    if (f.type != LEASEFS_PIN_FRAME_FENCED) continue;  // a later version's notice
    if (pin_id != nullptr) *pin_id = f.id;
    if (rkey != nullptr) *rkey = f.rkey;
    return 0;
  }
}

}  // extern "C"
