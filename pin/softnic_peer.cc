#include "pin/softnic_peer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace leasefs::pin {
namespace {

constexpr size_t kRxBytes = 64u << 10;
constexpr int kHelloTimeoutMs = 5000;

// Reads exactly n bytes from a blocking socket within timeout_ms.
// Errors: ECONNRESET (end of stream first), ETIMEDOUT, the errno of recv.
Status RecvExact(int fd, void* buf, size_t n, int timeout_ms) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return Status::FromErrno("poll");
    if (ready == 0) return Status::Error(ETIMEDOUT, "no hello from the soft NIC");
    const ssize_t got = recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Status::FromErrno("recv");
    if (got == 0) return Status::Error(ECONNRESET, "end of stream");
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Status::Ok();
}

Status Hello(int fd, uint32_t* max_message) {
  const wire::Hello mine{wire::kMagic, wire::kVersion, 0, wire::kMaxMessage, 0, 0};
  // Our hello may meet a connection the server closed already (over its
  // cap): what the server sends, or its absence, says which.
  [[maybe_unused]] ssize_t n = send(fd, &mine, sizeof mine, MSG_NOSIGNAL);
  wire::Hello theirs{};
  Status st = RecvExact(fd, &theirs, sizeof theirs, kHelloTimeoutMs);
  if (st.err() == ECONNRESET || st.err() == EPIPE) {
    return Status::Error(ECONNREFUSED, "the soft NIC closed the connection before its hello "
                                       "(at its connection cap?)");
  }
  LFS_RETURN_IF_ERROR(st);
  if (theirs.magic != wire::kMagic || theirs.version != wire::kVersion || theirs.flags != 0 ||
      theirs.max_message == 0 || theirs.reserved0 != 0 || theirs.reserved1 != 0) {
    return Status::Error(EPROTO, "not a soft NIC version 1 hello");
  }
  *max_message = std::min(theirs.max_message, wire::kMaxMessage);
  return Status::Ok();
}

}  // namespace

Result<SoftNicPeer> SoftNicPeer::Connect(const std::string& address, uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    return Status::Error(EINVAL, "not an IPv4 address: " + address);
  }
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno("socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno("connect");
  }
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint32_t max_message = 0;
  LFS_RETURN_IF_ERROR(Hello(fd.get(), &max_message));
  const int fl = fcntl(fd.get(), F_GETFL);
  if (fl < 0 || fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) != 0) return Status::FromErrno("fcntl");
  return SoftNicPeer(std::move(fd), max_message);
}

SoftNicPeer::SoftNicPeer(UniqueFd fd, uint32_t max_message)
    : fd_(std::move(fd)), max_message_(max_message), rx_(new uint8_t[kRxBytes]) {}

Status SoftNicPeer::PostWrite(uint64_t rkey, uint64_t offset, const void* buf, uint32_t length,
                              uint64_t wr_id, bool signaled) {
  if (length > max_message_) return Status::Error(EMSGSIZE, "WRITE over the max message");
  const uint8_t flags = signaled ? 0 : wire::kFlagUnsignaled;
  LFS_RETURN_IF_ERROR(Send(wire::Request{wire::kOpWrite, flags, 0, length, rkey, offset, wr_id},
                           buf));
  if (signaled) ++outstanding_;
  return Status::Ok();
}

Status SoftNicPeer::PostRead(uint64_t rkey, uint64_t offset, void* buf, uint32_t length,
                             uint64_t wr_id) {
  if (length > max_message_) return Status::Error(EMSGSIZE, "READ over the max message");
  // Registered first: the data may come while the request is still sending.
  reads_.push_back(PendingRead{wr_id, static_cast<uint8_t*>(buf), length});
  Status st = Send(wire::Request{wire::kOpRead, 0, 0, length, rkey, offset, wr_id}, nullptr);
  if (!st.ok()) {
    reads_.pop_back();
    return st;
  }
  ++outstanding_;
  return Status::Ok();
}

// Sends the header and the payload; while the socket is full, takes in what
// the server sends, so that neither side waits for the other forever.
Status SoftNicPeer::Send(const wire::Request& req, const void* payload) {
  if (closed_) return Status::Error(EPIPE, "the soft NIC closed the connection");
  iovec iov[2] = {{const_cast<wire::Request*>(&req), sizeof req},
                  {const_cast<void*>(payload), payload != nullptr ? req.length : 0}};
  size_t first = 0;
  while (first < 2) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = 2 - first;
    const ssize_t n = sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return Status::FromErrno("send to the soft NIC");
    size_t left = n < 0 ? 0 : static_cast<size_t>(n);
    while (first < 2 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < 2) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
    if (first == 2 || n > 0) continue;
    pollfd pfd{fd_.get(), POLLIN | POLLOUT, 0};
    if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return Status::FromErrno("poll");
    if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) LFS_RETURN_IF_ERROR(Receive(0));
    if (closed_) return Status::Error(EPIPE, "the soft NIC closed the connection");
  }
  return Status::Ok();
}

Status SoftNicPeer::Receive(int timeout_ms) {
  const size_t had = cq_.size();
  for (bool waited = false;;) {
    ssize_t n;
    if (data_left_ > 0 && rx_begin_ == rx_end_) {
      n = recv(fd_.get(), data_dst_, data_left_, 0);  // straight into the READ's buffer
      if (n > 0) {
        data_dst_ += n;
        data_left_ -= static_cast<uint32_t>(n);
      }
    } else {
      if (rx_begin_ > 0) {
        std::memmove(rx_.get(), rx_.get() + rx_begin_, rx_end_ - rx_begin_);
        rx_end_ -= rx_begin_;
        rx_begin_ = 0;
      }
      n = recv(fd_.get(), rx_.get() + rx_end_, kRxBytes - rx_end_, 0);
      if (n > 0) rx_end_ += static_cast<size_t>(n);
    }
    if (n > 0) {
      LFS_RETURN_IF_ERROR(Parse());
      continue;
    }
    if (n == 0) {
      closed_ = true;
      return Status::Ok();
    }
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) {
      closed_ = true;
      return Status::Ok();
    }
    if (errno != EAGAIN) return Status::FromErrno("recv from the soft NIC");
    if (waited || timeout_ms == 0 || cq_.size() > had) return Status::Ok();
    pollfd pfd{fd_.get(), POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno != EINTR) return Status::FromErrno("poll");
    waited = ready == 0;  // timed out: one last look, then return
  }
}

// Turns the received bytes into completions and READ data.
Status SoftNicPeer::Parse() {
  for (;;) {
    if (data_left_ > 0) {
      const size_t n = std::min<size_t>(data_left_, rx_end_ - rx_begin_);
      if (n == 0) return Status::Ok();
      std::memcpy(data_dst_, rx_.get() + rx_begin_, n);
      rx_begin_ += n;
      data_dst_ += n;
      data_left_ -= static_cast<uint32_t>(n);
      continue;
    }
    if (rx_end_ - rx_begin_ < sizeof(wire::Frame)) return Status::Ok();
    wire::Frame f;
    std::memcpy(&f, rx_.get() + rx_begin_, sizeof f);
    rx_begin_ += sizeof f;
    LFS_RETURN_IF_ERROR(TakeFrame(f));
  }
}

Status SoftNicPeer::TakeFrame(const wire::Frame& f) {
  if (f.op == wire::kFrameReadData) {
    if (reads_.empty() || reads_.front().wr_id != f.wr_id || f.aux > reads_.front().length ||
        f.length > reads_.front().length - f.aux) {
      return Status::Error(EPROTO, "READ data for no READ posted");
    }
    data_dst_ = reads_.front().buf + f.aux;
    data_left_ = f.length;
    return Status::Ok();
  }
  Completion c{f.op, f.status, f.length, f.wr_id, f.op == wire::kFrameFenced ? f.aux : 0};
  if (f.op == wire::kFrameReadDone) {
    if (reads_.empty() || reads_.front().wr_id != f.wr_id) {
      return Status::Error(EPROTO, "a READ completion for no READ posted");
    }
    reads_.pop_front();
  }
  const bool counted = f.op == wire::kFrameReadDone ||
                       (f.op == wire::kFrameWriteDone && (f.flags & wire::kFlagUnsignaled) == 0);
  if (counted && outstanding_ > 0) --outstanding_;
  cq_.push_back(c);
  return Status::Ok();
}

Result<size_t> SoftNicPeer::Poll(Completion* out, size_t max, int timeout_ms) {
  if (cq_.empty() && !closed_) LFS_RETURN_IF_ERROR(Receive(timeout_ms));
  if (cq_.empty() && closed_) return Status::Error(ECONNRESET, "the soft NIC closed the connection");
  size_t n = 0;
  for (; n < max && !cq_.empty(); ++n) {
    out[n] = cq_.front();
    cq_.pop_front();
  }
  return n;
}

Result<Completion> SoftNicPeer::WaitFor(uint64_t wr_id, uint8_t op) {
  for (;;) {
    for (auto it = cq_.begin(); it != cq_.end(); ++it) {
      // A malformed-request completion may carry op 0 (the server could not
      // tell the op): it ends the wait too.
      if (it->wr_id == wr_id && (it->op == op || it->status == wire::kStatusRemoteInvalidRequest)) {
        Completion c = *it;
        cq_.erase(it);
        return c;
      }
    }
    if (closed_) return Status::Error(ECONNRESET, "the soft NIC closed the connection");
    LFS_RETURN_IF_ERROR(Receive(-1));
  }
}

Result<Completion> SoftNicPeer::Write(uint64_t rkey, uint64_t offset, const void* buf,
                                      uint32_t length, uint64_t wr_id) {
  LFS_RETURN_IF_ERROR(PostWrite(rkey, offset, buf, length, wr_id, true));
  return WaitFor(wr_id, wire::kFrameWriteDone);
}

Result<Completion> SoftNicPeer::Read(uint64_t rkey, uint64_t offset, void* buf, uint32_t length,
                                     uint64_t wr_id) {
  LFS_RETURN_IF_ERROR(PostRead(rkey, offset, buf, length, wr_id));
  return WaitFor(wr_id, wire::kFrameReadDone);
}

}  // namespace leasefs::pin
