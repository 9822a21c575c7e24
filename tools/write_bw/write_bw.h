// leasefs-write-bw: a peer in the shape of perftest's ib_write_bw that
// drives leasefs's soft NIC (docs/softnic.md "leasefs-write-bw"). The server
// owns a buffer registered with a soft NIC; the client WRITEs into it.
#pragma once

#include <cstdint>
#include <string>

namespace leasefs::write_bw {

struct Options {
  std::string host;          // empty: server
  uint16_t port = 18515;     // the exchange port (perftest's default)
  uint64_t size = 65536;     // -s
  uint64_t iterations = 1000;  // -n
  uint32_t duration_s = 0;   // -D: seconds per size instead of -n
  bool all_sizes = false;    // -a: 2 B .. 8 MiB, capped at the buffer
  uint32_t tx_depth = 128;   // -t: messages in flight
  uint32_t cq_mod = 100;     // -Q: a completion every cq_mod messages
  bool report_gbits = false;
  int pattern = -1;          // --pattern: the byte every WRITE carries (-1: i & 0xff)
  std::string mmap_file;     // server: --mmap
  uint64_t mmap_offset = 0;  // server: --mmap-offset
  std::string softnic_bind = "127.0.0.1";  // server, anonymous buffer: the soft NIC's address
};

// Each returns the process's exit status: 0, or 1 after printing why.
int RunServer(const Options& opts);
int RunClient(const Options& opts);

// The test-information block both roles print after connecting (perftest's
// ctx_print_test_info), ending in a result line.
void PrintTestInfo(const Options& opts, bool server, const std::string& buffer_text);

}  // namespace leasefs::write_bw
