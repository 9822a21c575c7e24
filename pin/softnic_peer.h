// SoftNicPeer: the client side of the soft NIC (docs/softnic.md): one
// connection on which a peer posts one-sided WRITEs and READs against rkeys
// and polls their completions, as with a verbs queue pair.
//
// Posting never waits for the server to answer: many operations can be in
// flight (a TX depth), limited only by the socket buffers. While a post
// waits for room in the socket, it reads what the server sends meanwhile
// (completions, READ data), so a peer that posts much and polls seldom never
// deadlocks with the server's backpressure.
//
// The server serves a connection's operations in order, so a completion
// also says that every operation posted before it is done (unsignaled
// WRITEs included).
//
// Thread safety: none; one thread uses a peer at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "pin/softnic_wire.h"

namespace leasefs::pin {

struct Completion {
  // wire::kFrameWriteDone, kFrameReadDone, or kFrameFenced (unsolicited: the
  // server fenced `rkey`).
  uint8_t op = 0;
  // wire::kStatusOk, kStatusRemoteAccessError, kStatusRemoteInvalidRequest.
  uint8_t status = 0;
  uint32_t length = 0;  // bytes moved; 0 on error
  uint64_t wr_id = 0;
  uint64_t rkey = 0;  // kFrameFenced only

  bool ok() const { return status == wire::kStatusOk; }
};

class SoftNicPeer {
 public:
  // Connects to a soft NIC at an IPv4 address and exchanges hellos.
  // Errors: EINVAL (bad address), ECONNREFUSED (refused, or closed before
  // the server's hello: the server is at its connection cap), EPROTO (the
  // server's hello is not version 1), ETIMEDOUT (no hello within 5 s), the
  // errno of socket or connect.
  static Result<SoftNicPeer> Connect(const std::string& address, uint16_t port);

  SoftNicPeer(SoftNicPeer&&) noexcept = default;
  SoftNicPeer& operator=(SoftNicPeer&&) noexcept = default;

  // Sends a WRITE of buf[0, length) to offset of rkey's region. The bytes
  // are in the socket when it returns (buf may be reused). Unsignaled: no
  // completion unless it fails.
  // Errors: EMSGSIZE (length over max_message()), EPIPE or ECONNRESET (the
  // connection is closed), the errno of send or poll.
  Status PostWrite(uint64_t rkey, uint64_t offset, const void* buf, uint32_t length,
                   uint64_t wr_id, bool signaled = true);
  // Sends a READ of length bytes at offset of rkey's region into buf.
  // REQUIRES: buf stays valid and untouched until the READ's completion is
  // polled (or the peer is destroyed). On error its contents are undefined.
  // Errors: as PostWrite.
  Status PostRead(uint64_t rkey, uint64_t offset, void* buf, uint32_t length, uint64_t wr_id);

  // Moves up to `max` completions to `out`, waiting up to timeout_ms (-1:
  // forever, 0: not at all) for the first. Returns how many (0: timeout).
  // Errors: ECONNRESET when the server closed the connection and every
  // completion it sent was polled; EPROTO if the server broke the protocol.
  Result<size_t> Poll(Completion* out, size_t max, int timeout_ms);

  // Posts one operation and polls until its completion (other completions
  // polled meanwhile are kept for Poll). Returns the completion.
  Result<Completion> Write(uint64_t rkey, uint64_t offset, const void* buf, uint32_t length,
                           uint64_t wr_id = 0);
  Result<Completion> Read(uint64_t rkey, uint64_t offset, void* buf, uint32_t length,
                          uint64_t wr_id = 0);

  // The largest length a WRITE or READ may have on this connection.
  uint32_t max_message() const { return max_message_; }
  // Signaled WRITEs and READs posted whose completion has not come in.
  size_t outstanding() const { return outstanding_; }
  int fd() const { return fd_.get(); }

 private:
  struct PendingRead {
    uint64_t wr_id;
    uint8_t* buf;
    uint32_t length;
  };

  SoftNicPeer(UniqueFd fd, uint32_t max_message);
  Status Send(const wire::Request& req, const void* payload);
  // Reads what the socket holds (waiting up to timeout_ms for some if
  // nothing is queued), turning frames into completions.
  Status Receive(int timeout_ms);
  Status Parse();
  Status TakeFrame(const wire::Frame& f);
  Result<Completion> WaitFor(uint64_t wr_id, uint8_t op);

  UniqueFd fd_;
  uint32_t max_message_;
  bool closed_ = false;  // the server closed the stream
  size_t outstanding_ = 0;
  std::deque<Completion> cq_;
  std::deque<PendingRead> reads_;  // posted READs, in order
  // Received bytes not parsed yet.
  std::unique_ptr<uint8_t[]> rx_;
  size_t rx_begin_ = 0, rx_end_ = 0;
  // The READ_DATA payload being received: bytes left and where they go.
  uint32_t data_left_ = 0;
  uint8_t* data_dst_ = nullptr;
};

}  // namespace leasefs::pin
