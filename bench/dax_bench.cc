// leasefs-dax-bench: what the DAX path costs and gives on a mounted leasefs,
// through the raw ioctls of include/leasefs/ioctl.h, as a client sees it.
//
//   map MNT        time to hand out and map a leased range of --size bytes
//                  (default 1 GiB): DAX_MAP (the ioctls, as many as the
//                  extents need) plus one mmap per extent, then munmap and
//                  DAX_UNMAP, --iterations times on a file whose blocks are
//                  all written ("written"); and once on a file of holes,
//                  whose first writable map gives every block a zeroed block
//                  of its own ("holes-first").
//   break MNT      a holder (a forked child) holds a WRITE lease over a
//                  whole 1 MiB file and a writable DAX mapping of it, and
//                  waits for the break in poll(POLLPRI); then it munmaps,
//                  confirms (DAX_UNMAP) and releases, and maps again for the
//                  next round. The breaker reads CLOCK_MONOTONIC, punches the
//                  file's last block and reads the clock when fallocate
//                  returns. Notice = holder's wakeup - breaker's start;
//                  proceed = breaker's return - its start.
//   copy MNT       1 MiB copies: from anonymous memory into a DAX mapping of
//                  a --size file and back out, against memcpy between two
//                  anonymous buffers of the same size, interleaved, in
//                  GB/s (10^9 bytes per second), after one warm-up pass of
//                  each (the first stores into the mapping, which fault each
//                  page in, are reported apart as "first touch").
//
// Output: one line per measurement, or --json. Exit status: 0 done; 1 a call
// failed; 2 bad arguments.
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <linux/falloc.h>

#include "leasefs/ioctl.h"

namespace {

constexpr const char* kUsage =
    "usage: leasefs-dax-bench [--json] [--iterations N] [--size BYTES] map MNT\n"
    "       leasefs-dax-bench [--json] [--iterations N] break MNT\n"
    "       leasefs-dax-bench [--json] [--iterations N] [--size BYTES] copy MNT\n";

constexpr uint64_t kBlock = 4096;

struct Args {
  bool json = false;
  int iterations = 50;
  uint64_t size = 1ull << 30;
  std::string mode, mnt;
};

uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "leasefs-dax-bench: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

void Report(const Args& a, const char* name, const std::vector<double>& us, bool* first) {
  if (a.json) {
    std::printf("%s\"%s\": {\"n\": %zu, \"p50_us\": %.1f, \"p99_us\": %.1f}", *first ? "" : ", ",
                name, us.size(), Percentile(us, 0.5), Percentile(us, 0.99));
  } else {
    std::printf("%-24s n=%-5zu p50 %10.1f us   p99 %10.1f us\n", name, us.size(),
                Percentile(us, 0.5), Percentile(us, 0.99));
  }
  *first = false;
}

void SetLease(int fd, uint32_t type) {
  leasefs_lease l{};
  l.type = type;
  if (ioctl(fd, LEASEFS_IOC_SETLEASE, &l) != 0) Die("SETLEASE");
}

int OpenPool(int fd) {
  leasefs_dax_info info{};
  if (ioctl(fd, LEASEFS_IOC_DAX_INFO, &info) != 0) Die("DAX_INFO");
  const int pool = open(info.path, O_RDWR | O_CLOEXEC);
  if (pool < 0) Die("open the pool");
  return pool;
}

// A DAX mapping of [0, size) of fd, writable: the map ids in *ids.
char* MapAll(int fd, int pool, uint64_t size, std::vector<uint64_t>* ids) {
  void* base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) Die("reserve");
  char* p = static_cast<char*>(base);
  static leasefs_dax_map m;
  for (uint64_t off = 0; off < size;) {
    m = leasefs_dax_map{};
    m.offset = off;
    m.length = size - off;
    m.flags = LEASEFS_DAX_WRITE;
    if (ioctl(fd, LEASEFS_IOC_DAX_MAP, &m) != 0) Die("DAX_MAP");
    ids->push_back(m.map_id);
    for (uint32_t i = 0; i < m.count; ++i) {
      const leasefs_dax_extent& e = m.extents[i];
      if (mmap(p + e.file_offset, e.length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, pool,
               static_cast<off_t>(e.pool_offset)) == MAP_FAILED)
        Die("mmap an extent");
    }
    if (m.length == 0) break;
    off += m.length;
  }
  return p;
}

void UnmapAll(int fd, char* p, uint64_t size, std::vector<uint64_t>* ids) {
  munmap(p, size);
  for (uint64_t id : *ids) {
    leasefs_dax_unmap u{};
    u.map_id = id;
    if (ioctl(fd, LEASEFS_IOC_DAX_UNMAP, &u) != 0) Die("DAX_UNMAP");
  }
  ids->clear();
}

int MakeFile(const std::string& path, uint64_t size, bool written) {
  unlink(path.c_str());
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) Die("create");
  if (written) {
    std::vector<char> buf(1 << 20, 'w');
    for (uint64_t off = 0; off < size; off += buf.size()) {
      if (pwrite(fd, buf.data(), std::min<uint64_t>(buf.size(), size - off),
                 static_cast<off_t>(off)) < 0)
        Die("write");
    }
  } else if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    Die("ftruncate");
  }
  return fd;
}

// Punches the last block of a file of `size` bytes (the break benchmark's
// layout change).
void PunchLastBlock(int fd, uint64_t size) {
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(size - kBlock),
                kBlock) != 0)
    Die("punch");
}

// Gives the punched block back (zeroed), ready for the next punch.
void RefillLastBlock(int fd, uint64_t size) {
  char blk[kBlock] = {};
  if (pwrite(fd, blk, kBlock, static_cast<off_t>(size - kBlock)) != kBlock) Die("refill");
}

// The copy benchmark's unit: `size` bytes from src to dst in 1 MiB memcpys
// (the last chunk may be shorter).
constexpr uint64_t kCopyChunk = 1 << 20;
void CopyChunks(char* dst, const char* src, uint64_t size) {
  for (uint64_t off = 0; off < size; off += kCopyChunk) {
    std::memcpy(dst + off, src + off, std::min(kCopyChunk, size - off));
  }
}

int Map(const Args& a) {
  const std::string path = a.mnt + "/dax-bench-map";
  std::vector<double> written, holes;
  {
    const int fd = MakeFile(path, a.size, false);
    const int pool = OpenPool(fd);
    SetLease(fd, LEASEFS_LEASE_WRITE);
    std::vector<uint64_t> ids;
    const uint64_t t0 = NowNs();
    char* p = MapAll(fd, pool, a.size, &ids);
    holes.push_back(static_cast<double>(NowNs() - t0) / 1e3);
    UnmapAll(fd, p, a.size, &ids);
    for (int i = 0; i < a.iterations; ++i) {
      const uint64_t t = NowNs();
      p = MapAll(fd, pool, a.size, &ids);
      const uint64_t mapped = NowNs();
      UnmapAll(fd, p, a.size, &ids);
      written.push_back(static_cast<double>(mapped - t) / 1e3);
    }
    close(pool);
    close(fd);
  }
  unlink(path.c_str());
  bool first = true;
  if (a.json) std::printf("{\"size\": %llu, ", static_cast<unsigned long long>(a.size));
  Report(a, "map-written", written, &first);
  Report(a, "map-holes-first", holes, &first);
  if (a.json) std::printf("}\n");
  return 0;
}

int Break(const Args& a) {
  const std::string path = a.mnt + "/dax-bench-break";
  constexpr uint64_t kSize = 1 << 20;
  const int fd0 = MakeFile(path, kSize, true);
  close(fd0);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) Die("socketpair");
  const pid_t holder = fork();
  if (holder < 0) Die("fork");
  if (holder == 0) {
    close(sv[0]);
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) Die("holder open");
    const int pool = OpenPool(fd);
    for (;;) {
      SetLease(fd, LEASEFS_LEASE_WRITE);
      struct stat st{};
      fstat(fd, &st);
      const uint64_t size = static_cast<uint64_t>(st.st_size) / kBlock * kBlock;
      std::vector<uint64_t> ids;
      char* p = MapAll(fd, pool, size, &ids);
      p[0] = 1;  // in use
      uint64_t ready = 0;
      if (write(sv[1], &ready, sizeof(ready)) != sizeof(ready)) _exit(0);
      pollfd pf{fd, POLLPRI, 0};
      if (poll(&pf, 1, -1) != 1) Die("poll");
      const uint64_t woke = NowNs();
      UnmapAll(fd, p, size, &ids);
      leasefs_lease u{};  // UNLOCK of every lease of this open file
      if (ioctl(fd, LEASEFS_IOC_SETLEASE, &u) != 0) Die("release");
      if (write(sv[1], &woke, sizeof(woke)) != sizeof(woke)) _exit(0);
      char go;  // the breaker refills the block first, with no lease in the way
      if (read(sv[1], &go, 1) != 1) _exit(0);
    }
  }
  close(sv[1]);
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  std::vector<double> notice, proceed, baseline;
  for (int i = 0; i < a.iterations; ++i) {
    uint64_t ready = 0, woke = 0;
    if (read(sv[0], &ready, sizeof(ready)) != sizeof(ready)) Die("holder gone");
    const uint64_t t0 = NowNs();
    // A punch of the last block: blocks leave the file, so it breaks.
    PunchLastBlock(fd, kSize);
    const uint64_t t1 = NowNs();
    if (read(sv[0], &woke, sizeof(woke)) != sizeof(woke)) Die("holder gone");
    notice.push_back(static_cast<double>(woke - t0) / 1e3);
    proceed.push_back(static_cast<double>(t1 - t0) / 1e3);
    // Refill the block before the holder maps again (it waits on us).
    RefillLastBlock(fd, kSize);
    if (write(sv[0], "g", 1) != 1) Die("holder gone");
  }
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  for (int i = 0; i < a.iterations; ++i) {
    const uint64_t t0 = NowNs();
    PunchLastBlock(fd, kSize);
    baseline.push_back(static_cast<double>(NowNs() - t0) / 1e3);
    RefillLastBlock(fd, kSize);
  }
  close(fd);
  unlink(path.c_str());
  bool first = true;
  if (a.json) std::printf("{");
  Report(a, "break-notice", notice, &first);
  Report(a, "break-proceed", proceed, &first);
  Report(a, "punch-no-lease", baseline, &first);
  if (a.json) std::printf("}\n");
  return 0;
}

int Copy(const Args& a) {
  const std::string path = a.mnt + "/dax-bench-copy";
  const int fd = MakeFile(path, a.size, true);
  const int pool = OpenPool(fd);
  SetLease(fd, LEASEFS_LEASE_WRITE);
  std::vector<uint64_t> ids;
  char* dax = MapAll(fd, pool, a.size, &ids);
  auto* anon_src = static_cast<char*>(
      mmap(nullptr, a.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* anon_dst = static_cast<char*>(
      mmap(nullptr, a.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (anon_src == MAP_FAILED || anon_dst == MAP_FAILED) Die("anonymous buffers");
  std::memset(anon_src, 's', a.size);
  std::memset(anon_dst, 'd', a.size);
  // The first store to each page of a shared mapping of a tmpfs file costs a
  // fault of ~30 us here (as for any tmpfs mapping, leasefs or not); time it
  // once, then warm every buffer so that the passes compare copies alone.
  uint64_t t = NowNs();
  CopyChunks(dax, anon_src, a.size);
  const double first_touch = static_cast<double>(a.size) / static_cast<double>(NowNs() - t);
  CopyChunks(anon_dst, dax, a.size);
  double t_in = 0, t_out = 0, t_mem = 0;
  uint64_t bytes = 0;
  for (int i = 0; i < std::max(1, a.iterations / 10); ++i) {
    // One pass of each, interleaved, over the whole size in 1 MiB copies.
    t = NowNs();
    CopyChunks(dax, anon_src, a.size);
    t_in += static_cast<double>(NowNs() - t);
    t = NowNs();
    CopyChunks(anon_dst, dax, a.size);
    t_out += static_cast<double>(NowNs() - t);
    t = NowNs();
    CopyChunks(anon_dst, anon_src, a.size);
    t_mem += static_cast<double>(NowNs() - t);
    bytes += a.size;
  }
  if (std::memcmp(anon_dst, anon_src, std::min(kCopyChunk, a.size)) != 0) Die("copy check");
  UnmapAll(fd, dax, a.size, &ids);
  close(pool);
  close(fd);
  unlink(path.c_str());
  const double in = static_cast<double>(bytes) / t_in, out = static_cast<double>(bytes) / t_out,
               mem = static_cast<double>(bytes) / t_mem;  // bytes per ns = GB/s
  if (a.json) {
    std::printf("{\"size\": %llu, \"dax_write_gbs\": %.2f, \"dax_read_gbs\": %.2f, "
                "\"memcpy_gbs\": %.2f, \"write_ratio\": %.3f, \"read_ratio\": %.3f, "
                "\"first_touch_write_gbs\": %.2f}\n",
                static_cast<unsigned long long>(a.size), in, out, mem, in / mem, out / mem,
                first_touch);
  } else {
    std::printf("1 MiB copies over %llu bytes: into DAX %.2f GB/s (%.3fx memcpy), out of DAX "
                "%.2f GB/s (%.3fx), memcpy %.2f GB/s; first touch into DAX %.2f GB/s\n",
                static_cast<unsigned long long>(a.size), in, in / mem, out, out / mem, mem,
                first_touch);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  static const option kOpts[] = {{"json", no_argument, nullptr, 'j'},
                                 {"iterations", required_argument, nullptr, 'i'},
                                 {"size", required_argument, nullptr, 's'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  for (int c; (c = getopt_long(argc, argv, "", kOpts, nullptr)) != -1;) {
    switch (c) {
      case 'j':
        a.json = true;
        break;
      case 'i':
        a.iterations = std::atoi(optarg);
        break;
      case 's':
        a.size = std::strtoull(optarg, nullptr, 0) / kBlock * kBlock;
        break;
      case 'h':
        std::fputs(kUsage, stdout);
        return 0;
      default:
        std::fputs(kUsage, stderr);
        return 2;
    }
  }
  if (argc - optind != 2 || a.iterations <= 0 || a.size == 0) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  a.mode = argv[optind];
  a.mnt = argv[optind + 1];
  if (a.mode == "map") return Map(a);
  if (a.mode == "break") return Break(a);
  if (a.mode == "copy") return Copy(a);
  std::fputs(kUsage, stderr);
  return 2;
}
