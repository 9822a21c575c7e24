// lease_scale: what a lease acquire+release costs in the lease table with
// 10, 1,000 and 100,000 leases held (the target: no more than 2x at
// 100,000 than at 10). The table alone, no mount: the FUSE round trip comes
// on top. Two layouts: every lease on one file (distinct 4 KiB ranges, one
// open file each), and one lease on each of as many files.
//
// Usage: leasefs-lease-scale [rounds]   (default 20000 per measurement)
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "lease/lease_table.h"
#include "leasefs/ioctl.h"

namespace {

using leasefs::lease::Holder;
using leasefs::lease::LeaseRequest;
using leasefs::lease::LeaseTable;

LeaseRequest Request(uint32_t type, uint64_t offset, uint64_t length) {
  LeaseRequest r;
  r.type = type;
  r.offset = offset;
  r.length = length;
  return r;
}

// Fills `t` with `n` READ leases; returns the inode a new lease goes on.
uint64_t Fill(LeaseTable& t, size_t n, bool one_file, pid_t tid) {
  for (size_t i = 0; i < n; ++i) {
    Holder h{i + 1, one_file ? 1 : i + 1, tid, 1000, false};
    if (!t.SetLease(h, Request(LEASEFS_LEASE_READ, one_file ? i * 4096 : 0, 4096), nullptr).ok()) {
      std::fprintf(stderr, "lease_scale: fill failed at %zu\n", i);
      std::exit(1);
    }
  }
  return one_file ? 1 : n / 2 + 1;
}

// ns per acquire+release, the median of 5 batches of `rounds`.
double Measure(LeaseTable& t, uint64_t ino, size_t held, size_t rounds, pid_t tid) {
  const Holder h{1'000'000'000, ino, tid, 2000, false};
  const uint64_t offset = uint64_t{held} * 4096 + (1 << 20);
  std::vector<double> batches;
  for (int b = 0; b < 5; ++b) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < rounds; ++i) {
      auto id = t.SetLease(h, Request(LEASEFS_LEASE_READ, offset, 4096), nullptr);
      auto gone = t.SetLease(h, Request(LEASEFS_LEASE_UNLOCK, offset, 4096), nullptr);
      if (!id.ok() || !gone.ok()) {
        std::fprintf(stderr, "lease_scale: %s\n",
                     (id.ok() ? gone.status() : id.status()).ToString().c_str());
        std::exit(1);
      }
    }
    const std::chrono::duration<double, std::nano> d = std::chrono::steady_clock::now() - t0;
    batches.push_back(d.count() / static_cast<double>(rounds));
  }
  std::sort(batches.begin(), batches.end());
  return batches[2];
}

}  // namespace

int main(int argc, char** argv) {
  const size_t rounds = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 20000;
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  std::printf("%-10s %10s %14s\n", "layout", "held", "ns/acq+rel");
  for (bool one_file : {true, false}) {
    double base = 0;
    for (size_t held : {size_t{10}, size_t{1000}, size_t{100000}}) {
      LeaseTable t(leasefs::lease::Options{}, nullptr);
      const uint64_t ino = Fill(t, held, one_file, tid);
      const double ns = Measure(t, ino, held, rounds, tid);
      if (held == 10) base = ns;
      std::printf("%-10s %10zu %14.0f  (%.2fx)\n", one_file ? "one-file" : "many-files", held,
                  ns, ns / base);
    }
  }
  return 0;
}
