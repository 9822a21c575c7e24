#include "tools/write_bw/exchange.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace leasefs::write_bw {
namespace {

// Little-endian field access at a byte offset (docs/softnic.md gives the
// offsets of every field).
void Put(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t Get(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
void PutDouble(uint8_t* p, double d) { Put(p, std::bit_cast<uint64_t>(d), 8); }
double GetDouble(const uint8_t* p) { return std::bit_cast<double>(Get(p, 8)); }

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace

void EncodeInfo(const Info& info, uint8_t out[kInfoBytes]) {
  std::memset(out, 0, kInfoBytes);
  Put(out + 0, kInfoMagic, 4);
  Put(out + 4, kExchangeVersion, 2);
  Put(out + 6, info.flags, 2);
  Put(out + 8, info.softnic_port, 2);
  Put(out + 16, info.rkey, 8);
  Put(out + 24, info.length, 8);
  std::memcpy(out + 32, info.softnic_address.data(), std::min<size_t>(15, info.softnic_address.size()));
}

Result<Info> DecodeInfo(const uint8_t in[kInfoBytes]) {
  if (Get(in, 4) != kInfoMagic || Get(in + 4, 2) != kExchangeVersion) {
    return Status::Error(EPROTO, "not a leasefs-write-bw server (bad INFO magic or version)");
  }
  if (!AllZero(in + 10, 6) || !AllZero(in + 48, 16) || in[47] != 0) {
    return Status::Error(EPROTO, "malformed INFO record");
  }
  Info info;
  info.flags = static_cast<uint16_t>(Get(in + 6, 2));
  info.softnic_port = static_cast<uint16_t>(Get(in + 8, 2));
  info.rkey = Get(in + 16, 8);
  info.length = Get(in + 24, 8);
  info.softnic_address = reinterpret_cast<const char*>(in + 32);
  return info;
}

void EncodeDone(const Done& done, uint8_t out[kDoneBytes]) {
  std::memset(out, 0, kDoneBytes);
  Put(out + 0, kDoneMagic, 4);
  Put(out + 4, kExchangeVersion, 2);
  Put(out + 8, static_cast<uint32_t>(done.status), 4);
  Put(out + 16, done.size, 8);
  Put(out + 24, done.iterations, 8);
  PutDouble(out + 32, done.bw_peak_mib);
  PutDouble(out + 40, done.bw_avg_mib);
  PutDouble(out + 48, done.msg_rate_mpps);
}

Result<Done> DecodeDone(const uint8_t in[kDoneBytes]) {
  if (Get(in, 4) != kDoneMagic || Get(in + 4, 2) != kExchangeVersion) {
    return Status::Error(EPROTO, "not a leasefs-write-bw client (bad DONE magic or version)");
  }
  if (!AllZero(in + 6, 2) || !AllZero(in + 12, 4)) {
    return Status::Error(EPROTO, "malformed DONE record");
  }
  Done done;
  done.status = static_cast<int32_t>(static_cast<uint32_t>(Get(in + 8, 4)));
  done.size = Get(in + 16, 8);
  done.iterations = Get(in + 24, 8);
  done.bw_peak_mib = GetDouble(in + 32);
  done.bw_avg_mib = GetDouble(in + 40);
  done.msg_rate_mpps = GetDouble(in + 48);
  return done;
}

Result<UniqueFd> Listen(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno("bind port " + std::to_string(port));
  }
  if (listen(fd.get(), 1) != 0) return Status::FromErrno("listen");
  return fd;
}

Result<UniqueFd> Accept(int listener) {
  for (;;) {
    UniqueFd fd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.valid()) return fd;
    if (errno != EINTR && errno != ECONNABORTED) return Status::FromErrno("accept");
  }
}

Result<UniqueFd> ConnectTo(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 ||
      res == nullptr) {
    return Status::Error(EHOSTUNREACH, "cannot resolve " + host);
  }
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Status st;
  if (!fd.valid()) {
    st = Status::FromErrno("socket");
  } else if (connect(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
    st = Status::FromErrno("connect to " + host + ":" + std::to_string(port));
  }
  freeaddrinfo(res);
  if (!st.ok()) return st;
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

Status SendAll(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0) return Status::FromErrno("send");
    p += sent;
    n -= static_cast<size_t>(sent);
  }
  return Status::Ok();
}

Status RecvAll(int fd, void* buf, size_t n, int timeout_ms) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return Status::FromErrno("poll");
    if (ready == 0) return Status::Error(ETIMEDOUT, "the other side said nothing");
    const ssize_t got = recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Status::FromErrno("recv");
    if (got == 0) return Status::Error(ECONNRESET, "the other side closed the connection");
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Status::Ok();
}

std::string Endpoint(int fd, bool peer) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  char ip[INET_ADDRSTRLEN] = "?";
  if (rc == 0) inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof ip);
  return std::string("IP ") + ip + " PORT " + std::to_string(ntohs(addr.sin_port));
}

}  // namespace leasefs::write_bw
