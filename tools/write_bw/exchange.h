// leasefs-write-bw's exchange: what server and client tell each other over
// their TCP socket before and after the test, as perftest's ib_write_bw does
// over its own ("Data ex. method : Ethernet"). Two fixed-size little-endian
// records, described in docs/softnic.md "leasefs-write-bw's exchange":
// the server's INFO (where the buffer is and its rkey) and the client's DONE
// (how the test ended and its last result row).
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace leasefs::write_bw {

inline constexpr uint32_t kInfoMagic = 0x4957424C;  // "LBWI" read as a LE u32
inline constexpr uint32_t kDoneMagic = 0x4457424C;  // "LBWD"
inline constexpr uint16_t kExchangeVersion = 1;
inline constexpr size_t kInfoBytes = 64;
inline constexpr size_t kDoneBytes = 56;

inline constexpr uint16_t kInfoFlagLeasefsPin = 0x1;  // the buffer is a pin of a leasefs file

// Server to client, once, right after the connection is accepted.
struct Info {
  uint16_t flags = 0;          // kInfoFlag*
  uint16_t softnic_port = 0;   // the soft NIC to connect to
  uint64_t rkey = 0;           // the buffer's rkey
  uint64_t length = 0;         // bytes writable from offset 0 of the rkey
  std::string softnic_address;  // IPv4, dotted (at most 15 characters)
};

// Client to server, once, when the client is done (or failed).
struct Done {
  int32_t status = 0;  // 0: every WRITE completed; else an errno value (EIO: a completion error)
  uint64_t size = 0;   // the last row: message size, messages, MiB/s, MiB/s, Mpps
  uint64_t iterations = 0;
  double bw_peak_mib = 0;
  double bw_avg_mib = 0;
  double msg_rate_mpps = 0;
};

// Encoding and decoding; Decode errors: EPROTO (wrong magic, version, or a
// reserved field not 0; an address not NUL-terminated).
void EncodeInfo(const Info& info, uint8_t out[kInfoBytes]);
Result<Info> DecodeInfo(const uint8_t in[kInfoBytes]);
void EncodeDone(const Done& done, uint8_t out[kDoneBytes]);
Result<Done> DecodeDone(const uint8_t in[kDoneBytes]);

// Sockets. Listen binds 0.0.0.0:port (as perftest's server does).
Result<UniqueFd> Listen(uint16_t port);
Result<UniqueFd> Accept(int listener);
// Resolves host (a name or an IPv4 address) and connects.
// Errors: ECONNREFUSED and the like, EHOSTUNREACH (cannot resolve).
Result<UniqueFd> ConnectTo(const std::string& host, uint16_t port);

// Sends all n bytes. Receives exactly n bytes, waiting up to timeout_ms (-1:
// forever); ECONNRESET when the stream ends first, ETIMEDOUT.
Status SendAll(int fd, const void* buf, size_t n);
Status RecvAll(int fd, void* buf, size_t n, int timeout_ms);

// "IP a.b.c.d PORT n" of the socket's own (local) or peer's end.
std::string Endpoint(int fd, bool peer);

}  // namespace leasefs::write_bw
