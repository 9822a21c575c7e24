// The soft NIC's wire protocol, version 1: the frames of docs/softnic.md, as
// fixed-size little-endian structs. See ../docs/softnic.md; this header
// mirrors it field for field.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace leasefs::pin::wire {

// The frames are sent as they lie in memory: a little-endian host is assumed
// (every machine leasefs runs on), and the asserts below pin the layout.
static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

// "LNIC" in ASCII, read as a little-endian u32.
inline constexpr uint32_t kMagic = 0x43494E4C;
inline constexpr uint16_t kVersion = 1;

// The largest READ or WRITE this implementation serves (and the largest it
// announces): 8 MiB, the largest size ib_write_bw -a runs.
inline constexpr uint32_t kMaxMessage = 8u << 20;

// Sent by each side first, both ways, without waiting for the other's.
struct Hello {
  uint32_t magic;        // kMagic
  uint16_t version;      // kVersion
  uint16_t flags;        // 0: no flags are defined in version 1
  uint32_t max_message;  // largest READ/WRITE length the sender accepts (> 0)
  uint32_t reserved0;    // 0
  uint64_t reserved1;    // 0
};
static_assert(sizeof(Hello) == 24);
static_assert(offsetof(Hello, max_message) == 8);
static_assert(offsetof(Hello, reserved1) == 16);

// Request ops (peer to server).
enum RequestOp : uint8_t {
  kOpWrite = 1,  // `length` payload bytes follow the header
  kOpRead = 2,   // no payload; the server answers with READ_DATA frames
};

// Request flags.
inline constexpr uint8_t kFlagUnsignaled = 0x01;  // WRITE only: no completion on success
inline constexpr uint8_t kKnownFlags = kFlagUnsignaled;

// Peer to server: one request.
struct Request {
  uint8_t op;         // RequestOp
  uint8_t flags;      // kFlag*; unknown bits are an invalid request
  uint16_t reserved;  // 0
  uint32_t length;    // bytes to write or read, <= the connection's max message
  uint64_t rkey;      // the region
  uint64_t offset;    // byte offset inside the region
  uint64_t wr_id;     // the peer's id, echoed in the completion
};
static_assert(sizeof(Request) == 32);
static_assert(offsetof(Request, length) == 4);
static_assert(offsetof(Request, rkey) == 8);
static_assert(offsetof(Request, offset) == 16);
static_assert(offsetof(Request, wr_id) == 24);

// Server-to-peer frame kinds.
enum FrameOp : uint8_t {
  kFrameWriteDone = 1,  // completion of a WRITE
  kFrameReadDone = 2,   // completion of a READ (after all its READ_DATA frames)
  kFrameReadData = 3,   // `length` bytes of a READ follow; aux = their offset in the READ
  kFrameFenced = 4,     // unsolicited: the rkey in aux was fenced
};

// Completion statuses.
enum FrameStatus : uint8_t {
  kStatusOk = 0,
  kStatusRemoteAccessError = 1,    // unknown or fenced rkey, out of bounds, no permission
  kStatusRemoteInvalidRequest = 2  // malformed request; the server closes the connection
};

// Server to peer: every frame.
struct Frame {
  uint8_t op;         // FrameOp
  uint8_t status;     // FrameStatus (completions); 0 otherwise
  uint8_t flags;      // completions: the request's flags; 0 otherwise
  uint8_t reserved;   // 0
  uint32_t length;    // completions: bytes moved (0 on error); READ_DATA: payload bytes
  uint64_t wr_id;     // the request's wr_id; 0 for FENCED
  uint64_t aux;       // READ_DATA: offset in the READ; FENCED: the rkey; else 0
};
static_assert(sizeof(Frame) == 24);
static_assert(offsetof(Frame, flags) == 2);
static_assert(offsetof(Frame, length) == 4);
static_assert(offsetof(Frame, wr_id) == 8);
static_assert(offsetof(Frame, aux) == 16);

}  // namespace leasefs::pin::wire
