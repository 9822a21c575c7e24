// Layout leases on a mounted leasefs, with real processes: the scenarios of
// semantics-2019 §5 that need no pins (2, 9, 10, 11, 12, 13, 15), the break
// protocol's timings, and adversaries (holders that ignore breaks, die, or
// come by the hundred; racing breakers; interrupted breakers; a killed daemon;
// malformed ioctls from an unprivileged user).
//
// Holders run in child processes (LeaseHolder) that take leases on their own
// descriptor and do what the test tells them over a socket, one line each
// way. Breakers run in the test process or in children of their own.
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uint64_t B = 4096;
constexpr uint64_t MiB = 1 << 20;
constexpr uid_t kAlice = 1000;
constexpr uid_t kBob = 1001;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// --- raw ioctls ------------------------------------------------------------------

// 0 or the errno of LEASEFS_IOC_SETLEASE; the granted id in *id.
int SetLease(int fd, uint64_t off, uint64_t len, uint32_t type, uint32_t flags, int sig = 0,
             uint64_t sigval = 0, uint64_t convert = 0, uint64_t* id = nullptr) {
  leasefs_lease l{};
  l.offset = off;
  l.length = len;
  l.type = type;
  l.flags = flags;
  l.signal = sig;
  l.sigval = sigval;
  l.id = convert;
  if (ioctl(fd, LEASEFS_IOC_SETLEASE, &l) != 0) return errno;
  if (id != nullptr) *id = l.id;
  return 0;
}

// The whole block map and size, as text: compared before and after.
std::string BlockMap(int fd) {
  std::ostringstream out;
  leasefs_bmap b{};
  for (;;) {
    if (ioctl(fd, LEASEFS_IOC_BMAP, &b) != 0) return "BMAP " + ErrnoName(errno);
    for (uint32_t i = 0; i < b.count; ++i) {
      const leasefs_extent& e = b.extents[i];
      out << e.file_offset << "+" << e.length << "@" << e.pool_offset << "/" << e.flags << "/"
          << e.refcount << " ";
    }
    if (!(b.flags & LEASEFS_BMAP_MORE)) break;
    b.start = b.next;
  }
  out << "size " << b.file_size;
  return out.str();
}

std::string Errno(int e) { return e == 0 ? "OK" : ErrnoName(e); }

// --- a lease holder in a process of its own ------------------------------------------

class LeaseHolder {
 public:
  struct Options {
    int open_flags = O_RDWR;
    uid_t uid = 0;  // 0: stay root
    int signal = 0;  // blocked in the holder, so that `sigwait` can take it
  };

  LeaseHolder(const std::string& path, Options o)
      : opts_(o), child_([this, path](int sock) { return Child(path, sock); }) {
    ready_ = child_.Reply(10000);
  }
  LeaseHolder(const LeaseHolder&) = delete;
  LeaseHolder& operator=(const LeaseHolder&) = delete;

  // "ready", or why the child could not open the file.
  const std::string& ready() const { return ready_; }
  pid_t pid() const { return child_.pid(); }

  // Sends one command; returns its one-line answer ("TIMEOUT" if none comes).
  std::string Do(const std::string& cmd, int timeout_ms = 20000) {
    return child_.Ask(cmd, timeout_ms);
  }
  // Sends a command without waiting for its answer (Reply() reads it).
  void Send(const std::string& cmd) { child_.Send(cmd); }
  std::string Reply(int timeout_ms) { return child_.Reply(timeout_ms); }
  // SIGKILL, and reap it.
  void Kill() { child_.Kill(); }

 private:
  // The child: never returns to doctest.
  int Child(const std::string& path, int sock) {
    if (opts_.signal != 0) {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, opts_.signal);
      sigprocmask(SIG_BLOCK, &set, nullptr);
    }
    if (opts_.uid != 0 && (setgroups(0, nullptr) != 0 || setgid(opts_.uid) != 0 ||
                           setuid(opts_.uid) != 0))
      return 126;
    const int fd = open(path.c_str(), opts_.open_flags);
    if (fd < 0) {
      SayLine(sock, "open " + ErrnoName(errno));
      return 1;
    }
    SayLine(sock, "ready");
    std::string line;
    while (ReadLine(sock, &line)) {
      std::istringstream in(line);
      std::string cmd;
      in >> cmd;
      if (cmd == "exit") return 0;
      SayLine(sock, Command(cmd, in, fd));
    }
    return 0;
  }

  std::string Command(const std::string& cmd, std::istringstream& in, int fd) {
    if (cmd == "take") {  // take OFF LEN TYPE FLAGS [CONVERT]
      uint64_t off = 0, len = 0, convert = 0, id = 0;
      uint32_t type = 0, flags = 0;
      in >> off >> len >> type >> flags >> convert;
      const int e = SetLease(fd, off, len, type, flags, opts_.signal,
                             static_cast<uint64_t>(fd), convert, &id);
      return e ? ErrnoName(e) : "OK " + std::to_string(id);
    }
    if (cmd == "release") {  // release OFF LEN
      uint64_t off = 0, len = 0;
      in >> off >> len;
      return Errno(SetLease(fd, off, len, LEASEFS_LEASE_UNLOCK, 0));
    }
    if (cmd == "state") {  // state OFF: the lease's state
      uint64_t off = 0;
      in >> off;
      leasefs_getlease g{};
      g.offset = off;
      if (ioctl(fd, LEASEFS_IOC_GETLEASE, &g) != 0) return ErrnoName(errno);
      static const char* const kNames[] = {"NONE", "ACTIVE", "BREAKING", "REVOKED"};
      return g.lease.state < 4 ? kNames[g.lease.state] : "?";
    }
    if (cmd == "pollpri") {  // pollpri MS: whether POLLPRI comes within MS
      int ms = 0;
      in >> ms;
      pollfd p{fd, POLLPRI, 0};
      const int n = poll(&p, 1, ms);
      if (n < 0) return ErrnoName(errno);
      return n > 0 && (p.revents & POLLPRI) ? "POLLPRI" : "none";
    }
    if (cmd == "release-on-break") {  // release-on-break MS OFF LEN DELAY_MS
      int ms = 0, delay = 0;
      uint64_t off = 0, len = 0;
      in >> ms >> off >> len >> delay;
      pollfd p{fd, POLLPRI, 0};
      if (poll(&p, 1, ms) <= 0 || !(p.revents & POLLPRI)) return "none";
      usleep(static_cast<useconds_t>(delay) * 1000);
      return "released " + Errno(SetLease(fd, off, len, LEASEFS_LEASE_UNLOCK, 0));
    }
    if (cmd == "sigwait") {  // sigwait MS: the next lease signal
      int ms = 0;
      in >> ms;
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, opts_.signal);
      siginfo_t si{};
      timespec ts{ms / 1000, (ms % 1000) * 1000000L};
      if (sigtimedwait(&set, &si, &ts) < 0) return "none";
      std::ostringstream out;
      // The holder passed its fd as the value: si_fd must show it too.
      out << "sig=" << si.si_signo << " code=" << si.si_code
          << " fd=" << (si.si_fd == fd ? "mine" : std::to_string(si.si_fd))
          << " val=" << (si.si_value.sival_int == fd ? "mine" : std::to_string(si.si_value.sival_int));
      return out.str();
    }
    if (cmd == "truncate") {
      off_t n = 0;
      in >> n;
      return Err(ftruncate(fd, n));
    }
    if (cmd == "punch") {
      off_t off = 0, len = 0;
      in >> off >> len;
      return Err(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len));
    }
    if (cmd == "prealloc") {
      off_t off = 0, len = 0;
      in >> off >> len;
      return Err(fallocate(fd, 0, off, len));
    }
    if (cmd == "write") {  // write OFF LEN
      off_t off = 0;
      size_t len = 0;
      in >> off >> len;
      const std::string data(len, 'h');
      const ssize_t n = pwrite(fd, data.data(), len, off);
      return n < 0 ? ErrnoName(errno) : std::to_string(n);
    }
    return "unknown command " + cmd;
  }

  Options opts_;  // before child_: the child reads it as soon as it is forked
  CommandedChild child_;
  std::string ready_;
};

// A file of `size` written bytes, owned by `uid`, mode 0666 (so that other
// users may open it for writing: leases are about layouts, not access).
void MakeFile(TestFs& fs, const std::string& name, uint64_t size, uid_t uid = 0) {
  const std::string p = fs.path(name);
  REQUIRE(WriteFile(p, Pattern(size, 7), 0666) == "");
  REQUIRE(chmod(p.c_str(), 0666) == 0);
  REQUIRE(chown(p.c_str(), uid, uid) == 0);
}

// F and G of 2 MiB each, written 64 KiB at a time in turn, so that F's
// blocks are in many pieces and a defrag has work.
void Interleave(TestFs& fs, const std::string& f, const std::string& g) {
  int wf = open(fs.path(f).c_str(), O_WRONLY), wg = open(fs.path(g).c_str(), O_WRONLY);
  REQUIRE(wf >= 0);
  REQUIRE(wg >= 0);
  for (uint64_t off = 0; off < 2 * MiB; off += 64 * 1024) {
    REQUIRE(PwriteAll(wf, Pattern(64 * 1024, off), static_cast<off_t>(off)) == "");
    REQUIRE(PwriteAll(wg, Pattern(64 * 1024, off + 1), static_cast<off_t>(off)) == "");
  }
  close(wf);
  close(wg);
}

// A fallocate-mode ioctl (COLLAPSE, INSERT, UNSHARE) on fd, as SYS() says.
std::string RangeIoctl(int fd, unsigned long cmd, uint64_t off, uint64_t len) {
  leasefs_range r{off, len, 0, 0};
  return SYS(ioctl(fd, cmd, &r));
}

std::string CloneIoctl(int dst, int src, uint64_t src_off, uint64_t len, uint64_t dst_off) {
  leasefs_clone_range c{src, src_off, len, dst_off};
  return SYS(ioctl(dst, LEASEFS_IOC_CLONE_RANGE, &c));
}

std::string TakeArgs(uint64_t off, uint64_t len, uint32_t type, uint32_t flags,
                     uint64_t convert = 0) {
  return "take " + std::to_string(off) + " " + std::to_string(len) + " " + std::to_string(type) +
         " " + std::to_string(flags) + " " + std::to_string(convert);
}

bool StartsWith(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

FsOptions WithOptions(const std::string& o) {
  FsOptions f;
  f.mount_options = o;
  return f;
}

TEST_SUITE("leases") {
  TEST_CASE("scenario 2: a truncate breaks a shared lease, and waits for its release") {
    TestFs fs(WithOptions("lease_break_time=5"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB, kAlice);
    const int sig = SIGRTMIN + 1;
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, sig});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    CHECK(p.Do("state 0") == "ACTIVE");
    // P hears of the break by its signal and POLLPRI, and releases 300 ms later.
    p.Send("release-on-break 10000 0 0 300");
    // The breaker is another unprivileged user who may write the file.
    const auto t0 = Clock::now();
    const std::string path = fs.path("f");
    CHECK(RunAs(kBob, kBob, {}, [&] { return truncate(path.c_str(), 4 * B) == 0 ? 0 : errno; }) ==
          0);
    const double waited = SecondsSince(t0);
    CHECK(p.Reply(5000) == "released OK");
    CHECK(waited >= 0.25);
    CHECK(waited < 3.0);  // well inside the 5 s break time: the release ended it
    CHECK(Stat(fs.path("f")).st_size == static_cast<off_t>(4 * B));
    const std::string si = p.Do("sigwait 1000");
    CHECK(si == "sig=" + std::to_string(sig) + " code=" + std::to_string(SI_QUEUE) +
                    " fd=mine val=mine");
    CHECK(p.Do("state 0") == "NONE");
  }

  TEST_CASE("scenario 10: a holder that ignores the break is revoked at the break time") {
    TestFs fs(WithOptions("lease_break_time=2"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB, kAlice);
    const int sig = SIGRTMIN;
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, sig});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    int q = open(fs.path("f").c_str(), O_RDWR);
    REQUIRE(q >= 0);
    std::string during;
    std::thread watch([&] {
      usleep(500000);
      during = p.Do("state 0");
    });
    const auto t0 = Clock::now();
    CHECK(SYS(fallocate(q, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 64 * 1024)) == "OK");
    const double waited = SecondsSince(t0);
    watch.join();
    CHECK(during == "BREAKING");
    CHECK(waited >= 1.9);
    CHECK(waited < 4.0);
    // One signal, with the holder's fd in si_fd; then none.
    CHECK(p.Do("sigwait 100") == "sig=" + std::to_string(sig) + " code=" +
                                     std::to_string(SI_QUEUE) + " fd=mine val=mine");
    CHECK(p.Do("sigwait 300") == "none");
    CHECK(p.Do("state 0") == "REVOKED");
    CHECK(p.Do("pollpri 0") == "POLLPRI");
    CHECK(p.Do("release 0 0") == "OK");  // forgets the tombstone
    CHECK(p.Do("state 0") == "NONE");
    close(q);
  }

  TEST_CASE("scenario 10, non-blocking: an O_NONBLOCK breaker gets EWOULDBLOCK at once") {
    TestFs fs(WithOptions("lease_break_time=5"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    int q = open(fs.path("f").c_str(), O_RDWR | O_NONBLOCK);
    REQUIRE(q >= 0);
    const std::string before = BlockMap(q);
    const auto t0 = Clock::now();
    CHECK(SYS(ftruncate(q, 0)) == "EAGAIN");  // EWOULDBLOCK is EAGAIN on Linux
    CHECK(SecondsSince(t0) < 1.0);
    CHECK(BlockMap(q) == before);
    // The break began all the same: the holder was told.
    CHECK(p.Do("pollpri 1000") == "POLLPRI");
    CHECK(p.Do("state 0") == "BREAKING");
    CHECK(p.Do("release 0 0") == "OK");
    CHECK(SYS(ftruncate(q, 0)) == "OK");
    close(q);
  }

  TEST_CASE("scenario 9: the holder of an exclusive lease changing its own layout gets EDEADLOCK") {
    TestFs fs;
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB, kAlice);
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE)), "OK "));
    int ro = open(fs.path("f").c_str(), O_RDONLY);
    REQUIRE(ro >= 0);
    const std::string before = BlockMap(ro);
    // EDEADLOCK is EDEADLK on Linux.
    CHECK(p.Do("truncate 0") == "EDEADLK");
    CHECK(p.Do("punch 0 4096") == "EDEADLK");
    CHECK(BlockMap(ro) == before);
    CHECK(p.Do("state 0") == "ACTIVE");
    close(ro);
  }

  TEST_CASE("scenario 11 (the lease half): every layout change by another file gets ETXTBSY") {
    TestFs fs;
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", 0, kAlice);
    MakeFile(fs, "g", 0);
    Interleave(fs, "f", "g");
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
    REQUIRE(p.ready() == "ready");
    // The lease covers the file up to its end, so a change of size reaches it.
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 2 * MiB, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE)),
                       "OK "));
    int f = open(fs.path("f").c_str(), O_RDWR);
    int g = open(fs.path("g").c_str(), O_RDWR);
    REQUIRE(f >= 0);
    REQUIRE(g >= 0);
    const std::string map_f = BlockMap(f), map_g = BlockMap(g);
    const std::string data_f = PreadAll(f, 2 * MiB, 0);
    auto range = [&](unsigned long cmd, uint64_t off, uint64_t len) {
      return RangeIoctl(f, cmd, off, len);
    };
    CHECK(SYS(ftruncate(f, 4096)) == "ETXTBSY");
    CHECK(SYS(ftruncate(f, 4 * MiB)) == "ETXTBSY");
    CHECK(SYS(truncate(fs.path("f").c_str(), 0)) == "ETXTBSY");
    CHECK(SYS(fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, B)) == "ETXTBSY");
    CHECK(SYS(fallocate(f, FALLOC_FL_ZERO_RANGE, 0, B)) == "ETXTBSY");
    CHECK(SYS(fallocate(f, 0, 0, B)) == "ETXTBSY");
    CHECK(range(LEASEFS_IOC_COLLAPSE_RANGE, 0, B) == "ETXTBSY");
    CHECK(range(LEASEFS_IOC_INSERT_RANGE, 0, B) == "ETXTBSY");
    CHECK(range(LEASEFS_IOC_UNSHARE_RANGE, 0, B) == "ETXTBSY");
    CHECK(CloneIoctl(f, g, 0, B, 0) == "ETXTBSY");  // F as the destination
    CHECK(CloneIoctl(g, f, 0, B, 0) == "ETXTBSY");  // F as the source
    loff_t in = 0, out = 0;
    CHECK(SYS(copy_file_range(g, &in, f, &out, B, 0)) == "ETXTBSY");
    in = out = 0;
    CHECK(SYS(copy_file_range(f, &in, g, &out, B, 0)) == "ETXTBSY");
    leasefs_defrag d{};
    CHECK(SYS(ioctl(f, LEASEFS_IOC_DEFRAG, &d)) == "ETXTBSY");
    leasefs_move_extent m{};
    m.donor_fd = static_cast<uint32_t>(g);
    m.len = 1;
    CHECK(SYS(ioctl(f, LEASEFS_EXT4_IOC_MOVE_EXT, &m)) == "ETXTBSY");
    m.donor_fd = static_cast<uint32_t>(f);
    CHECK(SYS(ioctl(g, LEASEFS_EXT4_IOC_MOVE_EXT, &m)) == "ETXTBSY");
    CHECK(BlockMap(f) == map_f);
    CHECK(BlockMap(g) == map_g);
    CHECK(PreadAll(f, 2 * MiB, 0) == data_f);
    // Beyond the lease's range, and not touching the size: no conflict.
    CHECK(SYS(fallocate(f, FALLOC_FL_KEEP_SIZE, 2 * MiB, B)) == "OK");
    CHECK(p.Do("state 0") == "ACTIVE");
    close(f);
    close(g);
  }

  TEST_CASE("every kind of layout change breaks a breakable lease, waits, and then proceeds") {
    TestFs fs(WithOptions("lease_break_time=10"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", 0);
    MakeFile(fs, "g", 0);
    Interleave(fs, "f", "g");
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    int f = open(fs.path("f").c_str(), O_RDWR);
    int g = open(fs.path("g").c_str(), O_RDWR);
    REQUIRE(f >= 0);
    REQUIRE(g >= 0);
    auto range = [&](unsigned long cmd, uint64_t off, uint64_t len) {
      return RangeIoctl(f, cmd, off, len);
    };
    const std::vector<std::pair<std::string, std::function<std::string()>>> changes = {
        {"defrag", [&] { leasefs_defrag d{}; return SYS(ioctl(f, LEASEFS_IOC_DEFRAG, &d)); }},
        {"move_ext",
         [&] {
           leasefs_move_extent m{};
           m.donor_fd = static_cast<uint32_t>(g);
           m.len = 1;
           return SYS(ioctl(f, LEASEFS_EXT4_IOC_MOVE_EXT, &m));
         }},
        {"ftruncate shrink", [&] { return SYS(ftruncate(f, 2 * MiB - B)); }},
        {"truncate grow", [&] { return SYS(truncate(fs.path("f").c_str(), 2 * MiB)); }},
        {"punch", [&] { return SYS(fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, B)); }},
        {"zero range", [&] { return SYS(fallocate(f, FALLOC_FL_ZERO_RANGE, B, B)); }},
        {"preallocate", [&] { return SYS(fallocate(f, 0, 0, 4 * B)); }},
        {"collapse", [&] { return range(LEASEFS_IOC_COLLAPSE_RANGE, 0, B); }},
        {"insert", [&] { return range(LEASEFS_IOC_INSERT_RANGE, 0, B); }},
        {"unshare", [&] { return range(LEASEFS_IOC_UNSHARE_RANGE, 0, B); }},
        {"allocating write",
         [&] {
           const std::string d = Pattern(3 * B, 5);
           return SYS(pwrite(f, d.data(), d.size(), static_cast<off_t>(4 * MiB)));
         }},
        {"O_TRUNC open",
         [&] {
           int t = open(fs.path("f").c_str(), O_RDWR | O_TRUNC);
           const std::string r = Err(t);
           if (t >= 0) close(t);
           return r;
         }},
        {"clone into", [&] { return CloneIoctl(f, g, 0, MiB, 0); }},
        {"clone from", [&] { return CloneIoctl(g, f, 0, B, MiB); }},
        {"copy_file_range into",
         [&] {
           loff_t in = 0, out = 0;
           return SYS(copy_file_range(g, &in, f, &out, 2 * B, 0));
         }},
        {"copy_file_range from",
         [&] {
           loff_t in = 0, out = 0;
           return SYS(copy_file_range(f, &in, g, &out, 2 * B, 0));
         }},
    };
    for (const auto& entry : changes) {
      const std::string& name = entry.first;  // not a binding: clang 14 cannot capture those
      const auto& change = entry.second;
      CAPTURE(name);
      REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
      p.Send("release-on-break 8000 0 0 100");
      const auto t0 = Clock::now();
      CHECK(change() == "OK");
      const double waited = SecondsSince(t0);
      CHECK(p.Reply(8000) == "released OK");
      CHECK(waited >= 0.09);  // it waited for the holder...
      CHECK(waited < 5.0);    // ...and not for the break time
    }
    close(f);
    close(g);
  }

  TEST_CASE("scenario 12: opens, reads and overwrites do not break; allocating writes do") {
    for (const char* mode : {"unmap-only", "xfs-faithful"}) {
      CAPTURE(mode);
      TestFs fs(WithOptions(std::string("write_break=") + mode));
      LEASEFS_ONLY(fs, "layout leases");
      MakeFile(fs, "f", MiB, kAlice);
      LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
      REQUIRE(p.ready() == "ready");
      REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE)),
                         "OK "));
      int q = open(fs.path("f").c_str(), O_RDWR);
      REQUIRE(q >= 0);
      const std::string before = BlockMap(q);
      CHECK(PreadAll(q, B, 0).size() == B);
      const std::string over(B, 'o');
      const bool faithful = std::string(mode) == "xfs-faithful";
      CHECK(SYS(pwrite(q, over.data(), B, 0)) == (faithful ? "ETXTBSY" : "OK"));
      CHECK(SYS(pwrite(q, over.data(), B, MiB)) == "ETXTBSY");  // extends the file
      CHECK(BlockMap(q) == before);
      CHECK(p.Do("state 0") == "ACTIVE");
      close(q);
    }
  }

  TEST_CASE("scenario 13: changes outside every lease's range go ahead at once") {
    TestFs fs(WithOptions("lease_break_time=10"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", 10 * MiB);
    MakeFile(fs, "g", MiB);
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, MiB, LEASEFS_LEASE_READ, 0)), "OK "));
    int f = open(fs.path("f").c_str(), O_RDWR);
    REQUIRE(f >= 0);
    const auto t0 = Clock::now();
    CHECK(SYS(truncate(fs.path("g").c_str(), 0)) == "OK");
    CHECK(SYS(fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 * MiB, MiB)) == "OK");
    CHECK(SecondsSince(t0) < 1.0);
    CHECK(p.Do("pollpri 0") == "none");
    CHECK(p.Do("state 0") == "ACTIVE");
    close(f);
  }

  TEST_CASE("an allocating write breaks a lease on other bytes of the blocks it maps") {
    TestFs fs;
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", 0, kAlice);
    REQUIRE(truncate(fs.path("f").c_str(), 4 * B) == 0);  // all holes
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
    REQUIRE(p.ready() == "ready");
    // Bytes [0, 100) of block 0 only: a write to bytes 200.. of that block
    // maps a block under them too.
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 100, LEASEFS_LEASE_READ, LEASEFS_LEASE_EXCLUSIVE)),
                       "OK "));
    int q = open(fs.path("f").c_str(), O_RDWR);
    REQUIRE(q >= 0);
    CHECK(SYS(pwrite(q, "x", 1, 200)) == "ETXTBSY");
    CHECK(SYS(pwrite(q, "x", 1, B + 200)) == "OK");  // the next block: not the lease's
    close(q);
  }

  TEST_CASE("scenario 15: write-layout, conversion to unbreakable, and its rules") {
    TestFs fs(WithOptions("lease_break_time=5"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", 0, kAlice);
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
    LeaseHolder r(fs.path("f"), {O_RDWR, kAlice, 0});
    LeaseHolder s(fs.path("f"), {O_RDWR, kAlice, 0});
    LeaseHolder bob(fs.path("f"), {O_RDWR, kBob, 0});
    REQUIRE(p.ready() == "ready");
    REQUIRE(bob.ready() == "ready");
    const std::string granted = p.Do(TakeArgs(0, 0, LEASEFS_LEASE_WRITE, 0));
    REQUIRE(StartsWith(granted, "OK "));
    const std::string id = granted.substr(3);
    // The holder's own layout changes do not break a write-layout lease.
    const auto t0 = Clock::now();
    CHECK(p.Do("prealloc 0 1048576") == "OK");
    CHECK(p.Do("write 0 4096") == "4096");
    CHECK(SecondsSince(t0) < 1.0);
    CHECK(p.Do("state 0") == "ACTIVE");
    CHECK(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, LEASEFS_LEASE_UNBREAKABLE,
                                   std::stoull(id))),
                     "OK " + id));
    CHECK(StartsWith(r.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, LEASEFS_LEASE_UNBREAKABLE)), "OK "));
    CHECK(s.Do(TakeArgs(0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_UNBREAKABLE)) == "EAGAIN");
    CHECK(bob.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, LEASEFS_LEASE_UNBREAKABLE)) == "EACCES");
    CHECK(StartsWith(bob.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    // Unbreakable: a truncate fails at once, and nothing changes.
    int q = open(fs.path("f").c_str(), O_RDWR);
    REQUIRE(q >= 0);
    const std::string before = BlockMap(q);
    CHECK(SYS(ftruncate(q, 0)) == "ETXTBSY");
    CHECK(BlockMap(q) == before);
    close(q);
  }

  TEST_CASE("scenario 15: a conversion after somebody broke the lease fails with EAGAIN") {
    TestFs fs(WithOptions("lease_break_time=5"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB, kAlice);
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
    REQUIRE(p.ready() == "ready");
    const std::string granted = p.Do(TakeArgs(0, 0, LEASEFS_LEASE_WRITE, 0));
    REQUIRE(StartsWith(granted, "OK "));
    const uint64_t id = std::stoull(granted.substr(3));
    CHECK(p.Do("prealloc 0 2097152") == "OK");
    int q = open(fs.path("f").c_str(), O_RDWR | O_NONBLOCK);
    REQUIRE(q >= 0);
    CHECK(SYS(ftruncate(q, 0)) == "EAGAIN");  // EWOULDBLOCK: the break begins
    CHECK(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_UNBREAKABLE, id)) == "EAGAIN");
    CHECK(p.Do("release 0 0") == "OK");
    // Gone: converting it is EAGAIN too; starting again works.
    CHECK(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_UNBREAKABLE, id)) == "EAGAIN");
    CHECK(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_WRITE, 0)), "OK "));
    close(q);
  }

  TEST_CASE("a holder SIGKILLed while a breaker waits lets the breaker through at once") {
    TestFs fs(WithOptions("lease_break_time=20"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    LeaseHolder p(fs.path("f"), {O_RDWR, kAlice, 0});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    std::thread killer([&] {
      usleep(300000);
      p.Kill();
    });
    const auto t0 = Clock::now();
    CHECK(SYS(truncate(fs.path("f").c_str(), 0)) == "OK");
    const double waited = SecondsSince(t0);
    killer.join();
    CHECK(waited >= 0.25);
    CHECK(waited < 3.0);
  }

  TEST_CASE("a breaker interrupted by a signal gets EINTR and changes nothing") {
    TestFs fs(WithOptions("lease_break_time=20"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    int sv[2];
    REQUIRE(pipe(sv) == 0);
    const pid_t q = fork();
    REQUIRE(q >= 0);
    if (q == 0) {
      struct sigaction sa {};
      sa.sa_handler = [](int) {};
      sigaction(SIGUSR1, &sa, nullptr);  // no SA_RESTART
      const std::string r = Err(truncate(fs.path("f").c_str(), 0));
      (void)!write(sv[1], r.data(), r.size());
      _exit(0);
    }
    close(sv[1]);
    usleep(500000);
    const auto t0 = Clock::now();
    kill(q, SIGUSR1);
    char buf[32] = {};
    CHECK(read(sv[0], buf, sizeof(buf) - 1) > 0);
    CHECK(std::string(buf) == "EINTR");
    CHECK(SecondsSince(t0) < 2.0);
    waitpid(q, nullptr, 0);
    close(sv[0]);
    CHECK(Stat(fs.path("f")).st_size == static_cast<off_t>(MiB));
  }

  TEST_CASE("a waiting break holds up nobody else (one loop thread)") {
    TestFs fs(WithOptions("lease_break_time=3,threads=1"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    MakeFile(fs, "other", MiB);
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    std::thread breaker([&] { CHECK(SYS(truncate(fs.path("f").c_str(), 0)) == "OK"); });
    usleep(300000);
    const auto t0 = Clock::now();
    int o = open(fs.path("other").c_str(), O_RDWR);
    CHECK(o >= 0);
    CHECK(PwriteAll(o, "hello", 0) == "");
    CHECK(PreadAll(o, 5, 0) == "hello");
    CHECK(Stat(fs.path("f")).st_size == static_cast<off_t>(MiB));  // not yet truncated
    CHECK(SecondsSince(t0) < 1.0);
    close(o);
    breaker.join();
  }

  TEST_CASE("100 holders on one range: one truncate breaks them all") {
    TestFs fs(WithOptions("lease_break_time=10"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    std::vector<std::unique_ptr<LeaseHolder>> holders;
    for (int i = 0; i < 100; ++i) {
      holders.push_back(std::make_unique<LeaseHolder>(fs.path("f"), LeaseHolder::Options{}));
      REQUIRE(holders.back()->ready() == "ready");
      REQUIRE(StartsWith(holders.back()->Do(TakeArgs(0, MiB, LEASEFS_LEASE_READ, 0)), "OK "));
    }
    for (auto& h : holders) h->Send("release-on-break 20000 0 1048576 0");
    const auto t0 = Clock::now();
    CHECK(SYS(truncate(fs.path("f").c_str(), 0)) == "OK");
    CHECK(SecondsSince(t0) < 8.0);
    int released = 0;
    for (auto& h : holders) released += h->Reply(5000) == "released OK";
    CHECK(released == 100);
  }

  TEST_CASE("one user may keep at most 16 requests waiting; the 17th gets EAGAIN") {
    TestFs fs(WithOptions("lease_break_time=3"));
    LEASEFS_ONLY(fs, "layout leases");
    constexpr int kFiles = 20;
    std::vector<std::unique_ptr<LeaseHolder>> holders;
    std::vector<std::string> paths;
    for (int i = 0; i < kFiles; ++i) {
      const std::string name = "f" + std::to_string(i);
      MakeFile(fs, name, B);
      paths.push_back(fs.path(name));
      holders.push_back(std::make_unique<LeaseHolder>(paths.back(), LeaseHolder::Options{}));
      REQUIRE(holders.back()->ready() == "ready");
      REQUIRE(StartsWith(holders.back()->Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    }
    // Bob breaks all twenty at once; nobody releases.
    const int rc = RunAs(kBob, kBob, {}, [&] {
      std::vector<int> results(kFiles, -1);
      std::vector<std::thread> threads;
      for (int i = 0; i < kFiles; ++i) {
        threads.emplace_back([&, i] { results[i] = truncate(paths[i].c_str(), 0) == 0 ? 0 : errno; });
      }
      for (auto& t : threads) t.join();
      int ok = 0, again = 0;
      for (int r : results) {
        ok += r == 0;
        again += r == EAGAIN;
      }
      return ok == 16 && again == kFiles - 16 ? 0 : 100 + again;
    });
    CHECK(rc == 0);
  }

  TEST_CASE("breakers racing each other all get through once the holder lets go") {
    TestFs fs(WithOptions("lease_break_time=10"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", 4 * MiB);
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
    p.Send("release-on-break 10000 0 0 200");
    std::vector<std::thread> breakers;
    std::vector<std::string> results(4);
    for (int i = 0; i < 4; ++i) {
      breakers.emplace_back([&, i] {
        int fd = open(fs.path("f").c_str(), O_RDWR);
        if (i % 2 == 0) {
          results[i] = SYS(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                     static_cast<off_t>(i) * MiB, MiB));
        } else {
          results[i] = SYS(pwrite(fd, "x", 1, static_cast<off_t>(8 * MiB + i)));
        }
        close(fd);
      });
    }
    for (auto& t : breakers) t.join();
    CHECK(p.Reply(5000) == "released OK");
    for (const auto& r : results) CHECK(r == "OK");
  }

  TEST_CASE("a daemon killed while breakers wait: they get an error, the pool stays whole") {
    TestFs fs(WithOptions("lease_break_time=30"));
    LEASEFS_ONLY(fs, "layout leases");
    const std::string data = Pattern(MiB, 9);
    REQUIRE(WriteFile(fs.path("f"), data, 0644) == "");
    {
      LeaseHolder p(fs.path("f"), {});
      REQUIRE(p.ready() == "ready");
      REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
      std::string result;
      std::thread breaker([&] { result = SYS(truncate(fs.path("f").c_str(), 0)); });
      usleep(500000);
      const auto t0 = Clock::now();
      fs.mount()->Kill();
      breaker.join();
      CHECK(SecondsSince(t0) < 5.0);
      // In-flight requests end with ECONNABORTED, later ones ENOTCONN.
      CHECK((result == "ECONNABORTED" || result == "ENOTCONN"));
      p.Kill();
    }
    std::string out;
    REQUIRE(fs.mount()->Mount(&out));
    CHECK(fs.UnmountFsckRemount() == "");
    bool ok = false;
    CHECK(Diff(ReadFile(fs.path("f"), &ok), data) == "");
    CHECK(ok);
  }

  TEST_CASE("malformed lease ioctls from an unprivileged user: errors only, nothing changes") {
    TestFs fs;
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    REQUIRE(chmod(fs.path("f").c_str(), 0644) == 0);
    int ro = open(fs.path("f").c_str(), O_RDONLY);
    REQUIRE(ro >= 0);
    const std::string map = BlockMap(ro);
    const std::string data = PreadAll(ro, MiB, 0);
    const std::string path = fs.path("f"), root = fs.root();
    const int rc = RunAs(65534, 65534, {}, [&]() {
      int fd = open(path.c_str(), O_RDONLY);
      int dir = open(root.c_str(), O_RDONLY | O_DIRECTORY);
      if (fd < 0 || dir < 0) return 2;
      std::mt19937_64 rng(42);
      std::vector<unsigned char> buf(16384);
      const unsigned dirs[] = {_IOC_READ, _IOC_WRITE, _IOC_READ | _IOC_WRITE};
      const unsigned sizes[] = {16, 24, 64, 88, 96, sizeof(leasefs_lease_list),
                                sizeof(leasefs_events), sizeof(leasefs_bmap), 8, 1, 4096};
      for (int i = 0; i < 3000; ++i) {
        for (auto& b : buf) b = static_cast<unsigned char>(rng());
        // Now and then a valid command with mostly-zero fields, so that
        // field checks past the first are reached too.
        if (i % 3 == 0) std::fill(buf.begin() + 8, buf.end(), 0);
        const unsigned nr = 0x80 + static_cast<unsigned>(rng() % 16);
        const unsigned size = sizes[rng() % (sizeof(sizes) / sizeof(sizes[0]))];
        if (nr == 0x8a) std::memset(buf.data() + 8, 0, 4);  // EVENTS: do not wait
        const unsigned long cmd = _IOC(dirs[rng() % 3], 'L', nr, size);
        const int target = (i % 5 == 0) ? dir : fd;
        errno = 0;
        const int r = ioctl(target, cmd, buf.data());
        if (r != 0 && (errno == 0 || errno == EIO || errno == ENOTCONN)) return 3;
      }
      // Neither the owner nor a writer: no lease of any kind.
      if (SetLease(fd, 0, 0, LEASEFS_LEASE_READ, 0) != EACCES) return 4;
      if (SetLease(fd, 0, 0, LEASEFS_LEASE_READ, LEASEFS_LEASE_UNBREAKABLE) != EACCES) return 5;
      return 0;
    });
    CHECK(rc == 0);
    struct stat st {};
    CHECK(stat(fs.root().c_str(), &st) == 0);  // the daemon lives
    CHECK(BlockMap(ro) == map);
    CHECK(PreadAll(ro, MiB, 0) == data);
    close(ro);
  }

  TEST_CASE("the lease list and the event log see grants, breaks and releases") {
    TestFs fs(WithOptions("lease_break_time=5"));
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    LeaseHolder p(fs.path("f"), {});
    REQUIRE(p.ready() == "ready");
    int dir = open(fs.root().c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir >= 0);
    leasefs_events ev{};
    REQUIRE(ioctl(dir, LEASEFS_IOC_EVENTS, &ev) == 0);
    uint64_t after = ev.count ? ev.events[ev.count - 1].seq : 0;
    REQUIRE(StartsWith(p.Do(TakeArgs(B, 2 * B, LEASEFS_LEASE_WRITE, 0)), "OK "));
    auto list = std::make_unique<leasefs_lease_list>();
    REQUIRE(ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0);
    REQUIRE(list->count == 1);
    CHECK(list->leases[0].offset == B);
    CHECK(list->leases[0].length == 2 * B);
    CHECK(list->leases[0].type == LEASEFS_LEASE_WRITE);
    CHECK(list->leases[0].state == LEASEFS_STATE_ACTIVE);
    CHECK(list->leases[0].holder_pid == p.pid());
    CHECK(list->leases[0].ino == Stat(fs.path("f")).st_ino);
    p.Send("release-on-break 5000 4096 8192 0");
    CHECK(SYS(truncate(fs.path("f").c_str(), 0)) == "OK");
    CHECK(p.Reply(5000) == "released OK");
    std::vector<uint32_t> types;
    for (int tries = 0; tries < 5 && types.size() < 4; ++tries) {
      leasefs_events e{};
      e.after = after;
      e.timeout_ms = 1000;
      REQUIRE(ioctl(dir, LEASEFS_IOC_EVENTS, &e) == 0);
      for (uint32_t i = 0; i < e.count; ++i) types.push_back(e.events[i].type);
      if (e.count) after = e.events[e.count - 1].seq;
    }
    REQUIRE(types.size() >= 4);
    CHECK(types[0] == LEASEFS_EVENT_GRANT);
    CHECK(types[1] == LEASEFS_EVENT_BREAK);
    CHECK(types[2] == LEASEFS_EVENT_RELEASE);
    CHECK(types[3] == LEASEFS_EVENT_BREAK_DONE);
    close(dir);
  }

  TEST_CASE("closing the file and process death release the leases") {
    TestFs fs;
    LEASEFS_ONLY(fs, "layout leases");
    MakeFile(fs, "f", MiB);
    int dir = open(fs.root().c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir >= 0);
    auto count = [&] {
      auto list = std::make_unique<leasefs_lease_list>();
      REQUIRE(ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0);
      return list->count;
    };
    {
      LeaseHolder p(fs.path("f"), {});
      REQUIRE(p.ready() == "ready");
      REQUIRE(StartsWith(p.Do(TakeArgs(0, 0, LEASEFS_LEASE_READ, 0)), "OK "));
      CHECK(count() == 1);
      p.Kill();
    }
    for (int i = 0; i < 100 && count() != 0; ++i) usleep(10000);
    CHECK(count() == 0);
    int fd = open(fs.path("f").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(SetLease(fd, 0, 0, LEASEFS_LEASE_READ, 0) == 0);
    CHECK(count() == 1);
    close(fd);
    for (int i = 0; i < 100 && count() != 0; ++i) usleep(10000);  // RELEASE is asynchronous
    CHECK(count() == 0);
    close(dir);
  }
}

}  // namespace
}  // namespace leasefs::testing
