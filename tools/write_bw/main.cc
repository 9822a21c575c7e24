// leasefs-write-bw: perftest's ib_write_bw over leasefs's soft NIC.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>

#include "pin/softnic_wire.h"
#include "tools/common/size_arg.h"
#include "tools/write_bw/write_bw.h"

namespace {

using leasefs::write_bw::Options;

constexpr const char* kDescription = R"(leasefs-write-bw - RDMA WRITE bandwidth over leasefs's soft NIC

SYNOPSIS
  leasefs-write-bw [OPTIONS]                                   (server)
  leasefs-write-bw [OPTIONS] [--mmap=FILE [--mmap-offset=N]]   (server)
  leasefs-write-bw [OPTIONS] HOST                              (client)

DESCRIPTION
  A peer in the shape of perftest's ib_write_bw that drives leasefs's soft
  NIC (docs/softnic.md) instead of an RDMA adapter. The server owns a buffer
  registered with a soft NIC and waits on the exchange port for one client;
  the client connects, learns the buffer's soft NIC address and rkey, WRITEs
  into it and prints perftest's result table. The server prints the client's
  last row when the client is done, then releases the buffer and exits.

  The server's buffer is anonymous memory registered with a soft NIC of its
  own on 127.0.0.1 (--softnic-bind), -s bytes (8 MiB with -a), or, with
  --mmap=FILE, the range of a file on a leasefs mount from --mmap-offset to
  the file's last whole 4 KiB block: the server takes an EXCLUSIVE WRITE
  layout lease on it and pins it with the daemon's soft NIC, so the client's
  bytes land in the file's blocks. On a break of that lease the server
  unpins and releases at once (the client's later WRITEs then fail).

  The client writes its messages to consecutive slots of the buffer,
  wrapping around. Every byte it writes is --pattern's (default: byte i of
  each message is i mod 256).

EXIT STATUS
  0 done; 1 a failure (a completion with an error, a fenced region, a
  connection lost), said on stderr; 128+N after signal N (server).)";

// "0xab", "171", "0253" -> 0..255.
bool ParseByte(const std::string& s, int* out) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 0);
  if (s.empty() || *end != '\0' || v < 0 || v > 255) return false;
  *out = static_cast<int>(v);
  return true;
}

int Usage(const std::string& msg) {
  std::fprintf(stderr, "leasefs-write-bw: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "leasefs-write-bw");
  Options o;
  std::string size_arg, offset_arg, pattern_arg;
  bool ignored = false;
  app.add_option("HOST", o.host, "the server (client role); none: server role");
  app.add_option("-p,--port", o.port, "exchange TCP port (default 18515)");
  app.add_option("-s,--size", size_arg, "message size in bytes (default 65536; K, M suffixes)");
  auto* iters = app.add_option("-n,--iters", o.iterations, "messages per size (default 1000)");
  app.add_option("-D,--duration", o.duration_s, "seconds per size, instead of -n")
      ->excludes(iters);
  app.add_flag("-a,--all", o.all_sizes, "every size from 2 B to 8 MiB (capped at the buffer)");
  app.add_option("-t,--tx-depth", o.tx_depth, "messages in flight (default 128)");
  app.add_option("-Q,--cq-mod", o.cq_mod, "a completion every N messages (default 100)");
  app.add_flag("--report_gbits", o.report_gbits, "report Gb/sec instead of MB/sec (MiB/s)");
  app.add_flag("-F,--CPU-freq", ignored, "accepted for perftest's sake; ignored");
  app.add_option("--mmap", o.mmap_file, "server: the buffer is this leasefs file's range");
  app.add_option("--mmap-offset", offset_arg, "server: where the range starts (multiple of 4096)");
  app.add_option("--pattern", pattern_arg, "client: the byte every WRITE carries (0-255, 0x..)");
  app.add_option("--softnic-bind", o.softnic_bind,
                 "server, anonymous buffer: the soft NIC's IPv4 address (default 127.0.0.1)");
  CLI11_PARSE(app, argc, argv);

  if (!size_arg.empty()) {
    auto s = leasefs::tools::ParseSize(size_arg);
    if (!s || *s == 0 || *s > leasefs::pin::wire::kMaxMessage) {
      return Usage("-s takes 1 to 8388608 bytes, not '" + size_arg + "'");
    }
    o.size = *s;
  }
  if (!offset_arg.empty()) {
    auto off = leasefs::tools::ParseSize(offset_arg);
    if (!off) return Usage("cannot parse --mmap-offset '" + offset_arg + "'");
    o.mmap_offset = *off;
  }
  if (!pattern_arg.empty() && !ParseByte(pattern_arg, &o.pattern)) {
    return Usage("--pattern takes a byte (0-255 or 0x00-0xff), not '" + pattern_arg + "'");
  }
  if (o.iterations == 0 || o.tx_depth == 0 || o.cq_mod == 0) {
    return Usage("-n, -t and -Q take a positive number");
  }
  const bool server = o.host.empty();
  if (!server && (!o.mmap_file.empty() || !offset_arg.empty())) {
    return Usage("--mmap and --mmap-offset are server options");
  }
  if (server && o.mmap_file.empty() && !offset_arg.empty()) {
    return Usage("--mmap-offset needs --mmap");
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return server ? leasefs::write_bw::RunServer(o) : leasefs::write_bw::RunClient(o);
}
