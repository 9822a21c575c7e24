// leasefs-lease-bench: what layout leases cost on a mounted leasefs, through
// the raw ioctls of include/leasefs/ioctl.h (no client library, no test
// harness), as a client sees it.
//
//   roundtrip MNT  p50/p99 of one FUSE round trip (LEASEFS_IOC_VERSION, the
//                  baseline) and of a lease acquire (SETLEASE READ) and release
//                  (UNLOCK) on one fd, with 10, 100, ... 100,000 leases already
//                  held by this process: on disjoint 4 KiB ranges of another
//                  file through one fd ("other-file"), and of the same file
//                  through a second fd ("same-file"). The three calls are
//                  interleaved in every iteration, so drift hits them alike.
//   break MNT      a holder (a forked child) holds a READ lease over a whole
//                  file and waits for the break in poll(POLLPRI), or in
//                  sigwaitinfo for a lease signal; the breaker reads
//                  CLOCK_MONOTONIC, truncates the file, and reads it again
//                  when the truncate returns. The holder reads the clock when
//                  it wakes and releases at once. Notice = holder's wakeup -
//                  breaker's start; proceed = breaker's return - its start.
//                  A truncate with no lease held is the baseline.
//   hold MNT N     creates (or opens) N files MNT/held/h-NNNNNN and holds one
//                  READ lease on each, prints "holding N", and waits for
//                  SIGTERM or SIGINT; then releases every lease (each release
//                  answered by the daemon), closes the files, prints
//                  "released N" and exits 0. For bench/run.
//
// Times are CLOCK_MONOTONIC, which every process shares. Exit status: 0 done;
// 1 a call failed; 2 bad arguments.
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
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

#include "leasefs/ioctl.h"

namespace {

constexpr const char* kUsage =
    "usage: leasefs-lease-bench [--json] [--iterations N] [--max-held N] roundtrip MNT\n"
    "       leasefs-lease-bench [--json] [--iterations N] [--settle-us US] break MNT\n"
    "       leasefs-lease-bench hold MNT N\n"
    "\n"
    "roundtrip: one FUSE round trip (LEASEFS_IOC_VERSION) against a lease acquire and\n"
    "  release with 10..--max-held (default 100000) leases held; --iterations per\n"
    "  level (default 5000).\n"
    "break: break-notice latency and break-to-proceed of a truncate, holder waiting\n"
    "  in poll(POLLPRI) and in sigwaitinfo; --iterations each (default 2000); the\n"
    "  breaker starts --settle-us (default 1000) after the holder is ready.\n"
    "hold: N files in MNT/held/, one READ lease each, until SIGTERM/SIGINT.\n"
    "Works in MNT/lease-bench/ (created; its files are left for the next run).\n"
    "Exit status: 0 done; 1 a call failed; 2 bad arguments.\n";

constexpr uint64_t kBlock = 4096;
constexpr size_t kLevels[] = {10, 100, 1000, 10000, 100000};

struct Options {
  bool json = false;
  long iterations = 0;  // 0: the mode's default
  long max_held = 100000;
  long settle_us = 1000;
  std::string mode;
  std::string mnt;
  long hold_count = 0;
};

[[noreturn]] void Die(const char* what, int err) {
  std::fprintf(stderr, "leasefs-lease-bench: %s: %s\n", what, std::strerror(err));
  std::exit(1);
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// --- statistics ----------------------------------------------------------------

struct Stats {
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
  size_t n = 0;
};

// The q-quantile (0 < q < 1) of a sorted sample, in microseconds.
double QuantileUs(const std::vector<int64_t>& sorted, double q) {
  const auto k = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[k]) / 1000.0;
}

Stats Summarize(std::vector<int64_t> ns) {
  Stats s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  s.p50_us = QuantileUs(ns, 0.50);
  s.p99_us = QuantileUs(ns, 0.99);
  s.mean_us = sum / static_cast<double>(ns.size()) / 1000.0;
  s.n = ns.size();
  return s;
}

std::string StatsJson(const Stats& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "{\"p50_us\": %.3f, \"p99_us\": %.3f, \"mean_us\": %.3f, \"n\": %zu}",
                s.p50_us, s.p99_us, s.mean_us, s.n);
  return buf;
}

// --- raw ioctls ------------------------------------------------------------------

// 0 or the errno of LEASEFS_IOC_SETLEASE.
int SetLease(int fd, uint64_t off, uint64_t len, uint32_t type, int sig = 0, uint64_t sigval = 0) {
  leasefs_lease l{};
  l.offset = off;
  l.length = len;
  l.type = type;
  l.signal = sig;
  l.sigval = sigval;
  return ioctl(fd, LEASEFS_IOC_SETLEASE, &l) == 0 ? 0 : errno;
}

int Version(int fd) {
  leasefs_version v{};
  return ioctl(fd, LEASEFS_IOC_VERSION, &v) == 0 ? 0 : errno;
}

int OpenFile(const std::string& path, off_t size) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) Die(path.c_str(), errno);
  if (size >= 0 && ftruncate(fd, size) != 0) Die(("ftruncate " + path).c_str(), errno);
  return fd;
}

std::string WorkDir(const std::string& mnt, const char* sub) {
  const std::string d = mnt + "/" + sub;
  if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) Die(d.c_str(), errno);
  return d;
}

// Enough descriptors for `n` open files (root may raise the hard limit).
void RaiseFileLimit(size_t n) {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  const rlim_t want = n + 64;
  if (r.rlim_cur >= want) return;
  r.rlim_cur = want;
  if (r.rlim_max < want) r.rlim_max = want;
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) Die("setrlimit(RLIMIT_NOFILE)", errno);
}

// --- roundtrip -------------------------------------------------------------------

struct Level {
  size_t held = 0;
  Stats version, acquire, release, acq_rel;
};

// Interleaves VERSION, acquire and release `iters` times on `fd` at `off`.
Level MeasureLevel(int fd, uint64_t off, size_t held, long iters) {
  std::vector<int64_t> ver, acq, rel, both;
  for (auto* v : {&ver, &acq, &rel, &both}) v->reserve(static_cast<size_t>(iters));
  for (long i = 0; i < iters; ++i) {
    const int64_t t0 = NowNs();
    if (int e = Version(fd)) Die("LEASEFS_IOC_VERSION", e);
    const int64_t t1 = NowNs();
    if (int e = SetLease(fd, off, kBlock, LEASEFS_LEASE_READ)) Die("SETLEASE READ", e);
    const int64_t t2 = NowNs();
    if (int e = SetLease(fd, off, kBlock, LEASEFS_LEASE_UNLOCK)) Die("SETLEASE UNLOCK", e);
    const int64_t t3 = NowNs();
    ver.push_back(t1 - t0);
    acq.push_back(t2 - t1);
    rel.push_back(t3 - t2);
    both.push_back(t3 - t1);
  }
  return {held, Summarize(ver), Summarize(acq), Summarize(rel), Summarize(both)};
}

// Grows the leases held on `filler` (4 KiB ranges from `base` on) to each
// level in turn and measures there. Releases them all at the end.
std::vector<Level> RunLayout(int target, uint64_t off, int filler, uint64_t base,
                             const Options& o) {
  std::vector<Level> out;
  size_t held = 0;
  MeasureLevel(target, off, 0, std::min(o.iterations, 200L));  // warm-up
  for (size_t level : kLevels) {
    if (level > static_cast<size_t>(o.max_held)) break;
    for (; held < level; ++held) {
      if (int e = SetLease(filler, base + held * kBlock, kBlock, LEASEFS_LEASE_READ))
        Die("SETLEASE READ (filling)", e);
    }
    out.push_back(MeasureLevel(target, off, held, o.iterations));
    if (!o.json)
      std::fprintf(stderr, "  %zu held: acquire+release p50 %.1f us\n", held,
                   out.back().acq_rel.p50_us);
  }
  if (int e = SetLease(filler, 0, 0, LEASEFS_LEASE_UNLOCK)) Die("SETLEASE UNLOCK all", e);
  return out;
}

void PrintLevels(const char* layout, const std::vector<Level>& ls) {
  std::printf("%s: p50 / p99 us\n%8s %17s %17s %17s %17s %9s %8s\n", layout, "held", "version",
              "acquire", "release", "acq+rel", "acq+rel/v", "vs 10");
  for (const Level& l : ls) {
    std::printf("%8zu %8.1f / %6.1f %8.1f / %6.1f %8.1f / %6.1f %8.1f / %6.1f %8.2fx %7.2fx\n",
                l.held, l.version.p50_us, l.version.p99_us, l.acquire.p50_us, l.acquire.p99_us,
                l.release.p50_us, l.release.p99_us, l.acq_rel.p50_us, l.acq_rel.p99_us,
                l.acq_rel.p50_us / l.version.p50_us, l.acq_rel.p50_us / ls[0].acq_rel.p50_us);
  }
}

std::string LevelsJson(const std::vector<Level>& ls) {
  std::string s = "[";
  for (size_t i = 0; i < ls.size(); ++i) {
    const Level& l = ls[i];
    s += (i ? ", " : "") + std::string("{\"held\": ") + std::to_string(l.held) +
         ", \"version\": " + StatsJson(l.version) + ", \"acquire\": " + StatsJson(l.acquire) +
         ", \"release\": " + StatsJson(l.release) + ", \"acq_rel\": " + StatsJson(l.acq_rel) + "}";
  }
  return s + "]";
}

int Roundtrip(const Options& o) {
  const std::string d = WorkDir(o.mnt, "lease-bench");
  // Leases may lie past the end of file; the sizes only keep the files sparse
  // and honest about the ranges used.
  const off_t span = static_cast<off_t>((o.max_held + 1024) * kBlock);
  const int target = OpenFile(d + "/target", span);
  const int other = OpenFile(d + "/filler", span);
  std::vector<Level> other_file = RunLayout(target, 0, other, 0, o);
  // The same file through a second descriptor (leases of one open file never
  // overlap): the fillers from 0 on, the measured lease past all of them.
  const int same = open((d + "/target").c_str(), O_RDWR | O_CLOEXEC);
  if (same < 0) Die("open target", errno);
  const uint64_t past = static_cast<uint64_t>(o.max_held + 256) * kBlock;
  std::vector<Level> same_file = RunLayout(target, past, same, 0, o);
  close(same);
  close(other);
  close(target);
  if (o.json) {
    std::printf("{\"mode\": \"roundtrip\", \"iterations\": %ld, \"layouts\": {\"other-file\": %s, "
                "\"same-file\": %s}}\n",
                o.iterations, LevelsJson(other_file).c_str(), LevelsJson(same_file).c_str());
  } else {
    PrintLevels("other-file (leases held on 4 KiB ranges of another file, one fd)", other_file);
    PrintLevels("same-file (leases held on 4 KiB ranges of the same file, another fd)",
                same_file);
  }
  return 0;
}

// --- break -----------------------------------------------------------------------

// How the holder hears of a break.
enum class Notice { kPoll, kSignal };

void WriteAll(int fd, const void* p, size_t n) {
  if (write(fd, p, n) != static_cast<ssize_t>(n)) Die("write to peer", errno);
}

// Reads exactly n bytes, waiting at most timeout_ms; false on EOF or timeout.
bool ReadAll(int fd, void* p, size_t n, int timeout_ms) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, timeout_ms) <= 0) return false;
    const ssize_t r = read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// What the holder reports after each break.
struct Wake {
  int64_t woke_ns;  // 0: it did not hear of the break in time
  int32_t release_err;
  int32_t pad;
};

// The holder: per round, take a lease, say so, wait for the break, release.
[[noreturn]] void Holder(const std::string& path, Notice how, int sock, const int sig) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) _exit(3);
  char go;
  while (ReadAll(sock, &go, 1, 60000)) {
    if (go == 'q') _exit(0);
    int e = how == Notice::kSignal
                ? SetLease(fd, 0, 0, LEASEFS_LEASE_READ, sig, static_cast<uint64_t>(fd))
                : SetLease(fd, 0, 0, LEASEFS_LEASE_READ);
    const char ready = e == 0 ? 'r' : 'e';
    WriteAll(sock, &ready, 1);
    if (e != 0) _exit(4);
    Wake w{0, 0, 0};
    if (how == Notice::kPoll) {
      pollfd p{fd, POLLPRI, 0};
      if (poll(&p, 1, 10000) == 1 && (p.revents & POLLPRI)) w.woke_ns = NowNs();
    } else {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, sig);
      const timespec ts{10, 0};
      if (sigtimedwait(&set, nullptr, &ts) == sig) w.woke_ns = NowNs();
    }
    w.release_err = SetLease(fd, 0, 0, LEASEFS_LEASE_UNLOCK);
    WriteAll(sock, &w, sizeof w);
  }
  _exit(0);
}

// 'S' if `pid` sleeps (in poll or sigtimedwait, as far as we can tell).
char ProcState(pid_t pid) {
  char path[64], buf[512];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return '?';
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return '?';
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  return p != nullptr && p[1] == ' ' ? p[2] : '?';
}

struct BreakResult {
  const char* name;
  Stats notice, proceed;
  long not_asleep = 0;  // rounds where the holder was not sleeping at the start
};

void SettleUs(long us) {
  const timespec ts{us / 1'000'000, (us % 1'000'000) * 1000};
  nanosleep(&ts, nullptr);
}

// Alternates the file's size between two values: each call changes it.
int Truncate(int fd, long i) { return ftruncate(fd, (i & 1) ? 128 << 10 : 64 << 10) == 0 ? 0 : errno; }

BreakResult RunBreaks(const std::string& path, Notice how, const Options& o) {
  const int sig = SIGRTMIN;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_BLOCK, &set, nullptr);  // the child inherits it: sigtimedwait takes it
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) Die("socketpair", errno);
  const pid_t pid = fork();
  if (pid < 0) Die("fork", errno);
  if (pid == 0) {
    close(sv[0]);
    Holder(path, how, sv[1], sig);
  }
  close(sv[1]);
  const int sock = sv[0];
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) Die(path.c_str(), errno);
  BreakResult r{how == Notice::kPoll ? "poll" : "signal", {}, {}, 0};
  std::vector<int64_t> notice, proceed;
  const long warm = std::min(o.iterations / 10, 50L);
  for (long i = 0; i < warm + o.iterations; ++i) {
    char c = 'g';
    WriteAll(sock, &c, 1);
    if (!ReadAll(sock, &c, 1, 20000) || c != 'r') Die("holder could not take its lease", EIO);
    SettleUs(o.settle_us);
    const bool asleep = ProcState(pid) == 'S';
    const int64_t t0 = NowNs();
    const int e = Truncate(fd, i);
    const int64_t t1 = NowNs();
    if (e != 0) Die("ftruncate (breaker)", e);
    Wake w{};
    if (!ReadAll(sock, &w, sizeof w, 20000)) Die("holder did not report", EIO);
    if (w.woke_ns == 0) Die("holder heard of no break within 10 s", ETIMEDOUT);
    if (w.release_err != 0) Die("holder's release", w.release_err);
    if (i < warm) continue;
    if (!asleep) ++r.not_asleep;
    notice.push_back(w.woke_ns - t0);
    proceed.push_back(t1 - t0);
  }
  char q = 'q';
  WriteAll(sock, &q, 1);
  int status = 0;
  waitpid(pid, &status, 0);
  close(sock);
  close(fd);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
  r.notice = Summarize(std::move(notice));
  r.proceed = Summarize(std::move(proceed));
  return r;
}

// The same truncates with no lease anywhere on the file.
Stats PlainTruncates(const std::string& path, const Options& o) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) Die(path.c_str(), errno);
  std::vector<int64_t> ns;
  for (long i = 0; i < o.iterations + 50; ++i) {
    const int64_t t0 = NowNs();
    if (int e = Truncate(fd, i)) Die("ftruncate", e);
    if (i >= 50) ns.push_back(NowNs() - t0);
  }
  close(fd);
  return Summarize(std::move(ns));
}

int Break(const Options& o) {
  const std::string path = WorkDir(o.mnt, "lease-bench") + "/break";
  close(OpenFile(path, 64 << 10));
  const Stats plain = PlainTruncates(path, o);
  std::vector<BreakResult> rs;
  for (Notice how : {Notice::kPoll, Notice::kSignal}) rs.push_back(RunBreaks(path, how, o));
  if (o.json) {
    std::printf("{\"mode\": \"break\", \"iterations\": %ld, \"settle_us\": %ld, "
                "\"truncate_no_lease\": %s",
                o.iterations, o.settle_us, StatsJson(plain).c_str());
    for (const BreakResult& r : rs)
      std::printf(", \"%s\": {\"notice\": %s, \"proceed\": %s, \"holder_not_asleep\": %ld}",
                  r.name, StatsJson(r.notice).c_str(), StatsJson(r.proceed).c_str(),
                  r.not_asleep);
    std::printf("}\n");
    return 0;
  }
  std::printf("%ld breaks each (truncate of a file whose holder has a READ lease over it)\n"
              "%-28s %10s %10s\n", o.iterations, "us", "p50", "p99");
  std::printf("%-28s %10.1f %10.1f\n", "truncate, no lease", plain.p50_us, plain.p99_us);
  for (const BreakResult& r : rs) {
    std::printf("%-28s %10.1f %10.1f\n", (std::string("notice, ") + r.name).c_str(),
                r.notice.p50_us, r.notice.p99_us);
    std::printf("%-28s %10.1f %10.1f\n", (std::string("break-to-proceed, ") + r.name).c_str(),
                r.proceed.p50_us, r.proceed.p99_us);
    if (r.not_asleep)
      std::printf("  (%s: the holder was not asleep at the start of %ld breaks)\n", r.name,
                  r.not_asleep);
  }
  return 0;
}

// --- hold ------------------------------------------------------------------------

int Hold(const Options& o) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, nullptr);  // before the leases: a SIGTERM then waits for them
  const std::string d = WorkDir(o.mnt, "held");
  const auto n = static_cast<size_t>(o.hold_count);
  RaiseFileLimit(n);
  std::vector<int> fds;
  fds.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/h-%06zu", i);
    const int fd = OpenFile(d + name, -1);
    if (int e = SetLease(fd, 0, 0, LEASEFS_LEASE_READ)) Die("SETLEASE READ", e);
    fds.push_back(fd);
  }
  std::printf("holding %zu\n", n);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  for (int fd : fds) {
    if (int e = SetLease(fd, 0, 0, LEASEFS_LEASE_UNLOCK)) Die("SETLEASE UNLOCK", e);
    close(fd);
  }
  std::printf("released %zu\n", n);
  return 0;
}

// --- arguments -------------------------------------------------------------------

bool ParseLong(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ParseArgs(int argc, char** argv, Options* o) {
  static const option kLong[] = {{"json", no_argument, nullptr, 'j'},
                                 {"iterations", required_argument, nullptr, 'i'},
                                 {"max-held", required_argument, nullptr, 'm'},
                                 {"settle-us", required_argument, nullptr, 's'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  for (int c; (c = getopt_long(argc, argv, "+ji:m:s:h", kLong, nullptr)) != -1;) {
    bool ok = true;
    if (c == 'j') {
      o->json = true;
    } else if (c == 'i') {
      ok = ParseLong(optarg, 1, 100'000'000, &o->iterations);
    } else if (c == 'm') {
      ok = ParseLong(optarg, 10, 1'000'000, &o->max_held);
    } else if (c == 's') {
      ok = ParseLong(optarg, 0, 10'000'000, &o->settle_us);
    } else {
      std::fputs(kUsage, c == 'h' ? stdout : stderr);
      if (c == 'h') std::exit(0);
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "leasefs-lease-bench: bad value '%s'\n", optarg);
      return false;
    }
  }
  const int left = argc - optind;
  if (left < 2) {
    std::fputs(kUsage, stderr);
    return false;
  }
  o->mode = argv[optind];
  o->mnt = argv[optind + 1];
  if (o->iterations == 0) o->iterations = o->mode == "break" ? 2000 : 5000;
  const bool ok =
      o->mode == "hold"
          ? left == 3 && ParseLong(argv[optind + 2], 1, 10'000'000, &o->hold_count)
          : left == 2 && (o->mode == "roundtrip" || o->mode == "break");
  if (!ok) std::fputs(kUsage, stderr);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) return 2;
  if (o.mode == "hold") return Hold(o);
  return o.mode == "break" ? Break(o) : Roundtrip(o);
}
