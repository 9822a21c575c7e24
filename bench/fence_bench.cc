// leasefs-fence-bench: how long a truncate takes when it meets a pinned
// range with a peer writing into it, under pinned_break=fence. Prints one
// JSON object. MNT must be a leasefs mount with -o pinned_break=fence (and
// the lease_break_time the caller wants measured).
//
//   leasefs-fence-bench -n ROUNDS [-l LENGTH] MNT
//
// Each round: a file of LENGTH written bytes, an EXCLUSIVE WRITE lease on
// it, a soft NIC pin of the whole file, and a peer thread writing 16 KiB
// messages into it without pause; then truncate(2) of the file to 0 from
// this process by path (another open file than the holder's), timed from
// the call to its return:
//   zombie   the holder's descriptor is closed first: the lease lives on as
//            ZOMBIE with nobody to recall, and the truncate fences at once
//            (the fence's own cost: the soft NIC refusing the rkey and
//            waiting out a copy in progress, the lease revoked, the blocks
//            freed)
//   ignored  the holder keeps its descriptor and ignores the break: the
//            truncate waits lease_break_time, then fences
//   plain    the same truncate of an unleased, unpinned file (the baseline)
// p50/p99 in microseconds, and the peer's accepted WRITEs after each
// truncate returned (must be at most the one in flight: 0 or 1).
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "pin/softnic_peer.h"

namespace {

double NowUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

[[noreturn]] void Die(const std::string& what, int err) {
  std::fprintf(stderr, "leasefs-fence-bench: %s: %s\n", what.c_str(), std::strerror(err));
  std::exit(1);
}

void Check(int rc, const std::string& what) {
  if (rc < 0) Die(what, -rc);
}

double Percentile(std::vector<double> xs, double p) {
  std::sort(xs.begin(), xs.end());
  if (xs.empty()) return 0;
  const size_t i = std::min(xs.size() - 1, static_cast<size_t>(p * static_cast<double>(xs.size())));
  return xs[i];
}

// A file of `length` written bytes (blocks of its own: a pin under an
// EXCLUSIVE lease needs them), open read-write.
int MakeFile(const std::string& path, uint64_t length) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("open " + path, errno);
  const std::string block(1 << 16, 'a');
  for (uint64_t off = 0; off < length; off += block.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), length - off));
    if (pwrite(fd, block.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      Die("pwrite", errno);
    }
  }
  return fd;
}

// Writes 16 KiB messages over the pin without pause until told to stop.
class Peer {
 public:
  Peer(const leasefs_pin_info& info, uint64_t rkey, uint64_t length) {
    auto peer = leasefs::pin::SoftNicPeer::Connect(info.softnic_address, info.softnic_port);
    if (!peer.ok()) Die("connect to the soft NIC", peer.status().err());
    thread_ = std::thread([this, p = std::move(*peer), rkey, length]() mutable {
      const std::string chunk(16 << 10, 'X');
      const uint64_t slots = length / chunk.size();
      for (uint64_t n = 0; !stop_.load(); ++n) {
        auto done = p.Write(rkey, (n % slots) * chunk.size(), chunk.data(),
                            static_cast<uint32_t>(chunk.size()));
        if (!done.ok()) return;
        (done->ok() ? ok_ : refused_)++;
      }
    });
  }
  ~Peer() {
    stop_ = true;
    thread_.join();
  }
  uint64_t ok() const { return ok_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ok_{0}, refused_{0};
  std::thread thread_;
};

struct Sample {
  double us = 0;
  uint64_t late = 0;  // WRITEs accepted after the truncate returned
};

// One round of `mode` (see the top of the file).
Sample Round(const std::string& mnt, const std::string& mode, uint64_t length, int round) {
  const std::string path = mnt + "/fence-" + mode + "-" + std::to_string(round);
  int fd = MakeFile(path, length);
  Sample s;
  if (mode == "plain") {
    close(fd);
    const double t0 = NowUs();
    if (truncate(path.c_str(), 0) != 0) Die("truncate", errno);
    s.us = NowUs() - t0;
    unlink(path.c_str());
    return s;
  }
  Check(leasefs_set_lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE, 0, 0, nullptr),
        "lease");
  leasefs_pin_context c;
  Check(leasefs_pin_context_open(fd, &c), "pin context");
  uint64_t id = 0, rkey = 0;
  Check(leasefs_pin_register(fd, &c, 0, length, LEASEFS_PIN_SOFTNIC,
                             LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ, &id, &rkey),
        "pin");
  leasefs_pin_info info;
  Check(leasefs_pin_get_info(fd, &info), "pin info");
  {
    Peer peer(info, rkey, length);
    while (peer.ok() < 8) std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (mode == "zombie") {
      close(fd);
      fd = -1;
    }
    const double t0 = NowUs();
    if (truncate(path.c_str(), 0) != 0) Die("truncate", errno);
    s.us = NowUs() - t0;
    const uint64_t at = peer.ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    s.late = peer.ok() - at;
  }
  const int dir = open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) Die("open " + mnt, errno);
  Check(leasefs_pin_unregister(dir, &c, 0), "unpin");  // the fenced pin
  close(dir);
  leasefs_pin_context_close(&c);
  if (fd >= 0) {
    (void)leasefs_set_lease(fd, 0, 0, LEASEFS_LEASE_UNLOCK, 0, 0, 0, nullptr);  // revoked: forget it
    close(fd);
  }
  unlink(path.c_str());
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 50;
  uint64_t length = 1u << 20;
  std::string mnt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-n" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (a == "-l" && i + 1 < argc) {
      length = std::strtoull(argv[++i], nullptr, 0);
    } else if (mnt.empty() && a[0] != '-') {
      mnt = a;
    } else {
      std::fprintf(stderr, "usage: leasefs-fence-bench [-n ROUNDS] [-l LENGTH] MNT\n");
      return 2;
    }
  }
  if (mnt.empty() || rounds <= 0 || length == 0 || length % 16384 != 0) {
    std::fprintf(stderr, "usage: leasefs-fence-bench [-n ROUNDS] [-l LENGTH] MNT\n");
    return 2;
  }
  std::printf("{\"rounds\": %d, \"length\": %llu", rounds, static_cast<unsigned long long>(length));
  for (const std::string mode : {"plain", "zombie", "ignored"}) {
    std::vector<double> us;
    uint64_t late_max = 0;
    // The ignored break costs lease_break_time each round: fewer of them.
    const int n = mode == "ignored" ? std::max(1, rounds / 5) : rounds;
    for (int r = 0; r < n; ++r) {
      const Sample s = Round(mnt, mode, length, r);
      us.push_back(s.us);
      late_max = std::max(late_max, s.late);
    }
    std::printf(", \"%s\": {\"n\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f, \"late_writes_max\": %llu}",
                mode.c_str(), n, Percentile(us, 0.5), Percentile(us, 0.99),
                static_cast<unsigned long long>(late_max));
  }
  std::printf("}\n");
  return 0;
}
