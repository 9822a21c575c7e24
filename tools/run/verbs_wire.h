// The emulated verbs device's queue-pair link (docs/verbs.md "The QP link"):
// the frames a requester QP sends to its responder QP's process for what
// cannot go to a soft NIC (SEND, the immediate of WRITE_WITH_IMM, and the
// rkey lookup), over an abstract unix socket named after the responder's
// LID. One-sided WRITE and READ go to the soft NIC that serves the
// responder's memory region (docs/softnic.md), not here.
//
// Little-endian, fixed-size headers, no padding; reserved fields are 0 and
// checked. The requester sends HELLO, the responder answers HELLO_REPLY,
// then requests flow one way and replies the other, one reply per request,
// in order.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace leasefs::run::verbs::wire {

static_assert(std::endian::native == std::endian::little, "the link is little-endian");

inline constexpr uint32_t kMagic = 0x4B4C5156;  // "VQLK" read as a LE u32
inline constexpr uint16_t kVersion = 1;
// The largest SEND payload, as the port's max_msg_sz.
inline constexpr uint32_t kMaxMessage = 8u << 20;

struct Hello {
  uint32_t magic;    // kMagic
  uint16_t version;  // kVersion
  uint16_t src_lid;  // the requester's LID
  uint32_t src_qpn;  // the requester's QP number
  uint32_t dst_qpn;  // the responder QP it was connected to (modify_qp RTR)
  uint64_t reserved;
};
static_assert(sizeof(Hello) == 24);

enum HelloStatus : uint16_t {
  kHelloOk = 0,
  // No QP of that number here, or not in RTR/RTS, or connected to another
  // requester (LID and QP number), or it has its requester already.
  kHelloNoQp = 1,
  kHelloMalformed = 2,
};

struct HelloReply {
  uint32_t magic;
  uint16_t version;
  uint16_t status;  // HelloStatus
};
static_assert(sizeof(HelloReply) == 8);

enum Op : uint8_t {
  kOpSend = 1,     // `length` payload bytes follow; consumes a RECV
  kOpImm = 2,      // WRITE_WITH_IMM's notice, after its data landed; consumes a RECV
  kOpResolve = 3,  // where the region of `rkey` is served
};

inline constexpr uint8_t kFlagImm = 0x1;        // SEND: `imm` is valid
inline constexpr uint8_t kFlagSolicited = 0x2;  // SEND or IMM: solicited event
inline constexpr uint8_t kKnownFlags = kFlagImm | kFlagSolicited;

struct Request {
  uint8_t op;         // Op
  uint8_t flags;      // kFlag*
  uint16_t reserved;  // 0
  uint32_t length;    // SEND: payload bytes; IMM: the WRITE's length (the RECV's byte_len)
  uint32_t imm;       // immediate data, network order as the sender gave it
  uint32_t rkey;      // RESOLVE: the rkey to look up; else 0
  uint64_t seq;       // the requester's id, echoed
};
static_assert(sizeof(Request) == 24);

enum Status : uint8_t {
  kOk = 0,
  kRemoteAccessError = 1,    // RESOLVE: no region of that rkey in the QP's protection domain
  kRemoteInvalidRequest = 2, // SEND longer than the RECV, a bad scatter list, a malformed frame
  kRemoteOperationError = 3, // the responder QP went to the error state
};

struct Reply {
  uint8_t op;      // the request's op
  uint8_t status;  // Status
  uint16_t reserved;
  uint32_t length;  // RESOLVE, OK: sizeof(Region) bytes follow; else 0
  uint64_t seq;
};
static_assert(sizeof(Reply) == 16);

// RESOLVE's answer: the soft NIC serving the region and where the MR lies in it.
struct Region {
  uint64_t rkey;           // the soft NIC's rkey
  uint64_t mr_addr;        // the MR's address (iova) as the requester names it
  uint64_t mr_length;
  uint64_t region_offset;  // offset of mr_addr inside the soft NIC's region
  uint32_t access;         // IBV_ACCESS_REMOTE_* of the MR
  uint16_t port;           // the soft NIC's TCP port
  uint16_t reserved;
  char address[16];        // the soft NIC's IPv4 address, NUL-terminated
};
static_assert(sizeof(Region) == 56);

}  // namespace leasefs::run::verbs::wire
