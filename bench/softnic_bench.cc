// leasefs-softnic-bench: the references bench/softnic sets leasefs-write-bw
// against, and the cost of a pin. Each mode prints one JSON object.
//
//   tcp -s SIZE -D SECS [-b BUFFER]
//       A plain TCP transfer of the same shape as leasefs-write-bw over
//       loopback: a forked receiver accepts one connection and receives
//       SIZE-byte messages into consecutive SIZE slots of a BUFFER-byte
//       buffer (wrapping around), straight from the socket (recv with
//       MSG_WAITALL: no staging copy); the sender sends for SECS seconds,
//       then shuts its side down; the receiver answers with the byte count
//       once it has all of them. Bandwidth = bytes / (the answer - the
//       first send), as write-bw's first post to last completion.
//   fuse -s SIZE -D SECS FILE
//       pwrite of SIZE-byte messages into consecutive slots of FILE (its
//       size, at least SIZE) for SECS seconds: the same bytes through the
//       FUSE path (leasefs serves files with direct_io: every pwrite reaches
//       the daemon).
//   pin -n N [-l LENGTH] FILE
//       An EXCLUSIVE WRITE lease on [0, LENGTH) of FILE (default 1 MiB) and
//       a pin context; then N times leasefs_pin_register (SOFTNIC, remote
//       write and read) and leasefs_pin_unregister of that range, each timed,
//       interleaved with LEASEFS_IOC_VERSION (one FUSE round trip that does
//       nothing) as the baseline. p50/p99 in microseconds.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"

namespace {

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

[[noreturn]] void Die(const std::string& what, int err = errno) {
  std::fprintf(stderr, "leasefs-softnic-bench: %s: %s\n", what.c_str(), std::strerror(err));
  std::exit(1);
}

struct Args {
  std::string mode, file;
  uint64_t size = 65536, buffer = 8u << 20, iterations = 2000, length = 1u << 20;
  double seconds = 2;
};

Args Parse(int argc, char** argv) {
  Args a;
  if (argc < 2) Die("usage: leasefs-softnic-bench tcp|fuse|pin [options] [FILE]", EINVAL);
  a.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string opt = argv[i];
    const bool has_value = i + 1 < argc;
    if (opt == "-s" && has_value) a.size = std::strtoull(argv[++i], nullptr, 0);
    else if (opt == "-b" && has_value) a.buffer = std::strtoull(argv[++i], nullptr, 0);
    else if (opt == "-n" && has_value) a.iterations = std::strtoull(argv[++i], nullptr, 0);
    else if (opt == "-l" && has_value) a.length = std::strtoull(argv[++i], nullptr, 0);
    else if (opt == "-D" && has_value) a.seconds = std::strtod(argv[++i], nullptr);
    else if (opt[0] != '-') a.file = opt;
    else Die("unknown option " + opt, EINVAL);
  }
  if (a.size == 0 || a.size > a.buffer || a.iterations == 0) Die("bad -s, -b or -n", EINVAL);
  return a;
}

void ReportRate(const char* mode, uint64_t size, uint64_t messages, double seconds) {
  std::printf("{\"mode\": \"%s\", \"size\": %lu, \"messages\": %lu, \"seconds\": %.6f, "
              "\"mib_s\": %.3f}\n",
              mode, static_cast<unsigned long>(size), static_cast<unsigned long>(messages), seconds,
              static_cast<double>(size) * static_cast<double>(messages) / seconds / 1048576.0);
}

// The receiver: every message into its slot, then the byte count back.
void Receive(int listener, const Args& a) {
  const int fd = accept(listener, nullptr, nullptr);
  if (fd < 0) Die("accept");
  std::vector<char> buf(a.buffer);
  const uint64_t slots = a.buffer / a.size;
  uint64_t total = 0;
  for (uint64_t i = 0;; ++i) {
    const ssize_t n = recv(fd, buf.data() + (i % slots) * a.size, a.size, MSG_WAITALL);
    if (n < 0) Die("recv");
    total += static_cast<uint64_t>(n);
    if (static_cast<uint64_t>(n) < a.size) break;  // the sender is done
  }
  if (send(fd, &total, sizeof total, 0) != sizeof total) Die("send the count");
  close(fd);
}

void Tcp(const Args& a) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die("listen");
  }
  const pid_t child = fork();
  if (child < 0) Die("fork");
  if (child == 0) {
    // A session of its own, as the daemon's soft NIC thread and the
    // write-bw server have: with autogroups the scheduler places a
    // session's threads apart from other sessions' (bench/README.md).
    setsid();
    Receive(listener, a);
    _exit(0);
  }
  close(listener);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) Die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as the soft NIC's peer
  std::vector<char> msg(a.size, 'w');
  uint64_t messages = 0;
  const double start = Now(), end = start + a.seconds;
  while (Now() < end) {
    for (size_t off = 0; off < msg.size();) {
      const ssize_t n = send(fd, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
      if (n < 0) Die("send");
      off += static_cast<size_t>(n);
    }
    ++messages;
  }
  shutdown(fd, SHUT_WR);
  uint64_t total = 0;
  if (recv(fd, &total, sizeof total, MSG_WAITALL) != sizeof total) Die("receive the count");
  const double seconds = Now() - start;
  if (total != messages * a.size) Die("the receiver counted other bytes", EPROTO);
  close(fd);
  waitpid(child, nullptr, 0);
  ReportRate("tcp", a.size, messages, seconds);
}

void Fuse(const Args& a) {
  const int fd = open(a.file.c_str(), O_WRONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) Die("open " + a.file);
  const uint64_t slots = static_cast<uint64_t>(st.st_size) / a.size;
  if (slots == 0) Die(a.file + " is smaller than one message", EINVAL);
  std::vector<char> msg(a.size, 'w');
  uint64_t messages = 0;
  const double start = Now(), end = start + a.seconds;
  while (Now() < end) {
    const auto off = static_cast<off_t>((messages % slots) * a.size);
    if (pwrite(fd, msg.data(), msg.size(), off) != static_cast<ssize_t>(msg.size())) Die("pwrite");
    ++messages;
  }
  const double seconds = Now() - start;
  close(fd);
  ReportRate("fuse", a.size, messages, seconds);
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

void CheckRc(int rc, const char* what) {
  if (rc != 0) Die(what, -rc);
}

void Pin(const Args& a) {
  const int fd = open(a.file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) Die("open " + a.file);
  uint64_t lease = 0;
  CheckRc(leasefs_set_lease(fd, 0, a.length, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE, 0, 0,
                            &lease),
          "exclusive write lease");
  leasefs_pin_context ctx{};
  CheckRc(leasefs_pin_context_open(fd, &ctx), "pin context");
  std::vector<double> reg, unreg, both, version;
  for (uint64_t i = 0; i < a.iterations; ++i) {
    const double t0 = Now();
    CheckRc(leasefs_abi_version(fd, nullptr, nullptr), "LEASEFS_IOC_VERSION");
    uint64_t pin_id = 0, rkey = 0;
    const double t1 = Now();
    CheckRc(leasefs_pin_register(fd, &ctx, 0, a.length, LEASEFS_PIN_SOFTNIC,
                                 LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ, &pin_id, &rkey),
            "pin");
    const double t2 = Now();
    CheckRc(leasefs_pin_unregister(fd, &ctx, pin_id), "unpin");
    const double t3 = Now();
    version.push_back((t1 - t0) * 1e6);
    reg.push_back((t2 - t1) * 1e6);
    unreg.push_back((t3 - t2) * 1e6);
    both.push_back((t3 - t1) * 1e6);
  }
  leasefs_pin_context_close(&ctx);
  CheckRc(leasefs_release_lease(fd, 0, a.length), "release");
  close(fd);
  std::printf("{\"mode\": \"pin\", \"length\": %lu, \"iterations\": %lu", static_cast<unsigned long>(a.length),
              static_cast<unsigned long>(a.iterations));
  const std::pair<const char*, const std::vector<double>*> series[] = {
      {"register", &reg}, {"unregister", &unreg}, {"pin_unpin", &both}, {"version", &version}};
  for (const auto& [name, v] : series) {
    std::printf(", \"%s_p50_us\": %.2f, \"%s_p99_us\": %.2f", name, Percentile(*v, 0.5), name,
                Percentile(*v, 0.99));
  }
  std::printf("}\n");
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  if (a.mode == "tcp") Tcp(a);
  else if (a.mode == "fuse") Fuse(a);
  else if (a.mode == "pin") Pin(a);
  else Die("unknown mode " + a.mode, EINVAL);
  return 0;
}
