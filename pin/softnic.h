// SoftNic: leasefs's soft NIC, the server side. Peers connect over TCP and
// issue one-sided WRITE and READ against an rkey and an offset; the soft NIC
// copies the bytes between the socket and the registered memory (for the
// daemon: the pool blocks of a pin). Wire protocol: docs/softnic.md
// (pin/softnic_wire.h). Design: docs/pins.md "The soft NIC".
//
// The owner registers a region (a pointer and a length it keeps valid) and
// gets an rkey: 64 random bits, handed only to whoever may use the region.
// Fence(rkey) invalidates it: when Fence returns, no byte is copied into or
// out of the region ever again, whatever a peer does; the peers that used
// the rkey are told (a FENCED frame). The memory may then be reused.
//
// Connections are served by one thread of the SoftNic's own, with io_uring:
// bytes are received into a bounded staging buffer per connection and copied
// into the region under the region's guard (never received straight into
// it), so a peer that stalls mid-payload holds no guard and cannot hold a
// fence up. Before it sleeps, the thread spins for up to 50 µs watching
// its rings (less often after spins that found nothing): on a VM, waking a
// sleeping thread from another CPU costs more than that.
//
// Thread safety: every method may be called from any thread. Fence and
// Unregister wait for at most one copy of at most kStagingBytes to finish;
// nothing else waits.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/status.h"

namespace leasefs::pin {

struct SoftNicOptions {
  // Address to listen on (IPv4 dotted quad). Loopback unless told otherwise:
  // any local user can connect to a listening socket.
  std::string bind_address = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port (see port())
  // Connections served at once; one more is closed as soon as it is accepted.
  uint32_t max_connections = 64;
};

// Counters of one region.
struct RegionStats {
  uint64_t rkey = 0;
  uint64_t length = 0;
  bool fenced = false;
  uint64_t writes = 0;  // operations that completed successfully
  uint64_t reads = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_read = 0;
  uint64_t refused = 0;  // naming this rkey: out of bounds, no permission, fenced
};

struct SoftNicStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t connections_refused = 0;  // over max_connections
  uint64_t malformed_frames = 0;     // each closed its connection
  uint64_t refused_bad_rkey = 0;     // no such rkey (never issued, or unregistered)
  uint64_t refused_fenced = 0;       // the rkey is fenced
  uint64_t refused_out_of_bounds = 0;  // offset + length past the region, or overflow
  uint64_t refused_permission = 0;     // WRITE to a read-only region, or the reverse
  // Every refused operation (the four counts above) by peer IPv4 address.
  std::map<std::string, uint64_t> refused_by_peer;
  std::vector<RegionStats> regions;  // registered regions (fenced ones too), by rkey
};

class SoftNic {
 public:
  // Largest bytes copied under one guard: the per-connection staging buffer.
  static constexpr uint32_t kStagingBytes = 256u << 10;

  explicit SoftNic(SoftNicOptions options = {});
  // Stops serving (Stop()). Regions need not be unregistered first.
  ~SoftNic();
  SoftNic(const SoftNic&) = delete;
  SoftNic& operator=(const SoftNic&) = delete;

  // Binds, listens and starts the serving thread.
  // Errors: EINVAL (bad address, or started already), the errno of socket,
  // bind or listen (EADDRINUSE...), of io_uring setup (ENOSYS, EPERM when
  // io_uring is disabled), of eventfd.
  Status Start();
  // Closes every connection and the listener and joins the thread. Regions
  // stay registered (and may be fenced, unregistered, listed). Idempotent.
  void Stop();
  // The port listened on; 0 before Start.
  uint16_t port() const;

  // Registers [base, base + length) for peers to write (remote_write) and/or
  // read (remote_read), and returns its rkey: nonzero, 64 bits from
  // getrandom, never returned before by this object.
  // REQUIRES: the memory stays valid until Fence or Unregister of the rkey
  // returns (or the SoftNic is destroyed).
  // Errors: EINVAL (null base, length 0, the range wraps, or neither
  // permission), the errno of getrandom.
  Result<uint64_t> Register(void* base, uint64_t length, bool remote_write, bool remote_read);

  // Fences the rkey: every later operation on it fails with a remote access
  // error, and when Fence returns no copy into or out of the region is in
  // progress or will ever start. The connections that used the rkey get a
  // FENCED frame soon after (asynchronously). The region stays listed,
  // fenced, until Unregister. Fencing a fenced rkey is OK.
  // Errors: ENOENT (no such rkey).
  Status Fence(uint64_t rkey);

  // Fence, then forget the rkey (later operations count as a bad rkey).
  // Errors: ENOENT (no such rkey).
  Status Unregister(uint64_t rkey);

  SoftNicStats Stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace leasefs::pin
