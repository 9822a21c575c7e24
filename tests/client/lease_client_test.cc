// The lease client library (lease/client/) against a real leasefs daemon:
// the C API and the C++ API take, convert, query, list and release leases
// with the daemon's exact answers; BreakWatch sees POLLPRI and the chosen
// signal arrives with si_fd when another process changes the layout; the
// event log tells it all in order; malformed requests (sent raw too, with
// reserved fields set) get EINVAL and leave nothing behind.
//
// Breakers run in child processes (a lease breaks only for somebody else's
// change), holders in the test process.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/unique_fd.h"
#include "lease/client/lease.h"
#include "lease/client/leasefs_lease.h"
#include "leasefs/ioctl.h"
#include "tests/support/mount.h"

namespace leasefs::testing {
namespace {

using client::BreakWatch;
using client::Lease;
using client::Type;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t B = 4096;

MountOptions Options(int break_time_s) {
  MountOptions o;
  o.pool_size = "64M";
  o.options = fmt::format("allow_other,lease_break_time={}", break_time_s);
  return o;
}

// Creates `rel` on the mount with 16 KiB of data (mode 0666, so that other
// users may open it) and opens it with `flags`.
UniqueFd MakeFile(const TestMount& m, const std::string& rel, int flags = O_RDWR) {
  const std::string path = m.path(rel);
  {
    UniqueFd w(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
    REQUIRE(w.valid());
    const std::string data(4 * B, 'x');
    REQUIRE(write(w.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    REQUIRE(fchmod(w.get(), 0666) == 0);
  }
  UniqueFd fd(open(path.c_str(), flags | O_CLOEXEC));
  REQUIRE(fd.valid());
  return fd;
}

uint64_t InodeOf(int fd) {
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  return st.st_ino;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// A process of its own that truncates `path` to `size` (a layout change by
// another open file: it breaks every lease reaching the end of the file).
// Exit code: 0, or the errno truncate gave.
class Truncater {
 public:
  Truncater(const std::string& path, uint64_t size) : start_(Clock::now()) {
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) _exit(truncate(path.c_str(), static_cast<off_t>(size)) == 0 ? 0 : errno);
  }
  ~Truncater() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Truncater(const Truncater&) = delete;
  Truncater& operator=(const Truncater&) = delete;

  pid_t pid() const { return pid_; }
  // Whether it is done, without waiting.
  bool Done() {
    if (pid_ > 0 && waitpid(pid_, &status_, WNOHANG) == pid_) {
      pid_ = -1;
      elapsed_ = Clock::now() - start_;
    }
    return pid_ < 0;
  }
  // Waits (at most 30 s); its exit code, -1 if it did not finish.
  int Wait() {
    for (int i = 0; i < 3000 && !Done(); ++i) usleep(10000);
    if (!Done()) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }
  // How long it took; REQUIRES: Done().
  double seconds() const { return Seconds(elapsed_); }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  Clock::time_point start_;
  Clock::duration elapsed_{};
};

// Every lease of the mount, through the C API.
std::vector<leasefs_lease_info> ListAll(int fd) {
  std::vector<leasefs_lease_info> all;
  uint64_t after = 0;
  for (;;) {
    leasefs_lease_info buf[LEASEFS_LIST_MAX];
    size_t n = 0;
    int more = 0;
    REQUIRE(leasefs_list_leases(fd, after, buf, LEASEFS_LIST_MAX, &n, &more) == 0);
    all.insert(all.end(), buf, buf + n);
    if (!more) return all;
    REQUIRE(n > 0);
    after = buf[n - 1].id;
  }
}

// Every event of the log after `after`, without waiting.
std::vector<leasefs_event> EventsAfter(int fd, uint64_t after) {
  std::vector<leasefs_event> all;
  for (;;) {
    leasefs_event buf[LEASEFS_EVENTS_MAX];
    size_t n = 0;
    uint64_t lost = 0;
    REQUIRE(leasefs_read_events(fd, after, 0, buf, LEASEFS_EVENTS_MAX, &n, &lost) == 0);
    CHECK(lost == 0);
    if (n == 0) return all;
    all.insert(all.end(), buf, buf + n);
    after = buf[n - 1].seq;
  }
}

TEST_SUITE("client") {
  TEST_CASE("abi version: 1, with block map and leases, on files and directories") {
    TestMount m(Options(10));
    const UniqueFd f = MakeFile(m, "f");
    const UniqueFd dir(open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(dir.valid());
    for (int fd : {f.get(), dir.get()}) {
      uint32_t version = 0;
      uint64_t features = 0;
      REQUIRE(leasefs_abi_version(fd, &version, &features) == 0);
      CHECK(version == LEASEFS_ABI_VERSION);
      CHECK(features == (LEASEFS_FEATURE_BLOCK_MAP | LEASEFS_FEATURE_LEASES | LEASEFS_FEATURE_DAX |
                         LEASEFS_FEATURE_PINS | LEASEFS_FEATURE_PIN_VERBS |
                         LEASEFS_FEATURE_REMOUNT | LEASEFS_FEATURE_DEFRAG_RANGE));
      auto abi = client::QueryAbi(fd);
      REQUIRE(abi.ok());
      CHECK(abi->version == version);
      CHECK(abi->features == features);
    }
    CHECK(leasefs_abi_version(f.get(), nullptr, nullptr) == 0);
    CHECK(leasefs_abi_version(-1, nullptr, nullptr) == -EBADF);
  }

  TEST_CASE("another filesystem: ENOTTY from every call") {
    char path[] = "/dev/shm/leasefs-client-XXXXXX";
    const UniqueFd fd(mkstemp(path));
    REQUIRE(fd.valid());
    unlink(path);
    uint64_t id = 0;
    CHECK(leasefs_abi_version(fd.get(), nullptr, nullptr) == -ENOTTY);
    CHECK(leasefs_set_lease(fd.get(), 0, 0, LEASEFS_LEASE_READ, 0, 0, 0, &id) == -ENOTTY);
    CHECK(leasefs_release_all(fd.get()) == -ENOTTY);
    leasefs_lease_info info{};
    CHECK(leasefs_get_lease(fd.get(), 0, &info) == -ENOTTY);
    auto lease = Lease::Take(fd.get(), {}, Type::kRead);
    REQUIRE(!lease.ok());
    CHECK(lease.status().err() == ENOTTY);
  }

  TEST_CASE("take, state, release: what the daemon reports") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    auto lease = Lease::Take(fd.get(), {B, 2 * B}, Type::kRead);
    REQUIRE_MESSAGE(lease.ok(), lease.status().ToString());
    CHECK(lease->held());
    CHECK(lease->id() != 0);
    auto st = lease->State();
    REQUIRE(st.ok());
    CHECK(st->id == lease->id());
    CHECK(st->ino == InodeOf(fd.get()));
    CHECK(st->offset == B);
    CHECK(st->length == 2 * B);
    CHECK(st->type == LEASEFS_LEASE_READ);
    CHECK(st->flags == 0);
    CHECK(st->state == LEASEFS_STATE_ACTIVE);
    CHECK(st->holder_pid == getpid());
    CHECK(st->open_file != 0);
    CHECK(st->breaking_since == 0);
    CHECK(st->break_deadline == 0);

    // Bytes outside the range are not covered.
    leasefs_lease_info other{};
    REQUIRE(leasefs_get_lease(fd.get(), 0, &other) == 0);
    CHECK(other.state == LEASEFS_STATE_NONE);
    CHECK(other.id == 0);
    REQUIRE(leasefs_get_lease(fd.get(), 3 * B - 1, &other) == 0);
    CHECK(other.id == lease->id());
    REQUIRE(leasefs_get_lease(fd.get(), 3 * B, &other) == 0);
    CHECK(other.state == LEASEFS_STATE_NONE);

    CHECK(lease->Release().ok());
    CHECK(!lease->held());
    REQUIRE(leasefs_get_lease(fd.get(), B, &other) == 0);
    CHECK(other.state == LEASEFS_STATE_NONE);
    CHECK(leasefs_release_lease(fd.get(), B, 2 * B) == -ENOENT);
    CHECK(leasefs_release_lease(fd.get(), 0, 0) == -ENOENT);
    CHECK(leasefs_release_all(fd.get()) == 0);
  }

  TEST_CASE("Lease: released when destroyed, once, and moves hand it on") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    uint64_t id = 0;
    {
      auto taken = Lease::Take(fd.get(), {0, B}, Type::kWrite);
      REQUIRE(taken.ok());
      id = taken->id();
      Lease moved = std::move(*taken);
      CHECK(!taken->held());
      CHECK(moved.held());
      CHECK(moved.id() == id);
      Lease assigned;
      CHECK(!assigned.held());
      assigned = std::move(moved);
      CHECK(assigned.id() == id);
      REQUIRE(ListAll(fd.get()).size() == 1);
    }
    CHECK(ListAll(fd.get()).empty());

    // Assigning over a held lease releases that one first.
    auto a = Lease::Take(fd.get(), {0, B}, Type::kRead);
    auto b = Lease::Take(fd.get(), {B, B}, Type::kRead);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    const uint64_t b_id = b->id();
    *a = std::move(*b);
    const std::vector<leasefs_lease_info> left = ListAll(fd.get());
    REQUIRE(left.size() == 1);
    CHECK(left[0].id == b_id);

    // Detach gives the lease up without releasing it.
    const uint64_t detached = a->Detach();
    CHECK(detached == b_id);
    CHECK(!a->held());
    CHECK(ListAll(fd.get()).size() == 1);
    CHECK(leasefs_release_lease(fd.get(), B, B) == 0);
    CHECK(ListAll(fd.get()).empty());
  }

  TEST_CASE("the last close releases the open file's leases") {
    TestMount m(Options(10));
    UniqueFd fd = MakeFile(m, "f");
    const UniqueFd other = MakeFile(m, "g", O_RDONLY);
    REQUIRE(leasefs_set_lease(fd.get(), 0, 0, LEASEFS_LEASE_READ, 0, 0, 0, nullptr) == 0);
    REQUIRE(ListAll(other.get()).size() == 1);
    fd.reset();
    // RELEASE reaches the daemon after close(2) returns.
    for (int i = 0; i < 200 && !ListAll(other.get()).empty(); ++i) usleep(10000);
    CHECK(ListAll(other.get()).empty());
  }

  TEST_CASE("conflicts: EEXIST on the same open file, EAGAIN from another") {
    TestMount m(Options(10));
    const UniqueFd f1 = MakeFile(m, "f");
    const UniqueFd f2(open(m.path("f").c_str(), O_RDWR | O_CLOEXEC));
    const UniqueFd f3(open(m.path("f").c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(f2.valid());
    REQUIRE(f3.valid());
    auto read1 = Lease::Take(f1.get(), {0, 2 * B}, Type::kRead);
    REQUIRE(read1.ok());
    // This open file's own leases may not overlap.
    auto again = Lease::Take(f1.get(), {B, B}, Type::kRead);
    REQUIRE(!again.ok());
    CHECK(again.status().err() == EEXIST);
    auto beside = Lease::Take(f1.get(), {2 * B, B}, Type::kRead);
    CHECK(beside.ok());
    // READ coexists with READ and with one WRITE.
    auto read2 = Lease::Take(f2.get(), {0, 0}, Type::kRead);
    CHECK(read2.ok());
    auto write2 = Lease::Take(f3.get(), {B, B}, Type::kWrite);
    REQUIRE(write2.ok());
    CHECK(read2->Release().ok());
    auto write3 = Lease::Take(f2.get(), {0, 2 * B}, Type::kWrite);
    REQUIRE(!write3.ok());
    CHECK(write3.status().err() == EAGAIN);
    auto excl = Lease::Take(f2.get(), {0, B}, Type::kRead, client::kExclusive);
    REQUIRE(!excl.ok());
    CHECK(excl.status().err() == EAGAIN);
  }

  TEST_CASE("EINVAL: bad type, flags, signal, ranges, and nonzero reserved fields") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    uint64_t id = 0;
    SUBCASE("through the C API") {
      CHECK(leasefs_set_lease(fd.get(), 0, B, 3, 0, 0, 0, &id) == -EINVAL);
      CHECK(leasefs_set_lease(fd.get(), 0, B, 0x100 | LEASEFS_LEASE_READ, 0, 0, 0, &id) == -EINVAL);
      CHECK(leasefs_set_lease(fd.get(), 0, B, LEASEFS_LEASE_READ, 0x8, 0, 0, &id) == -EINVAL);
      CHECK(leasefs_set_lease(fd.get(), 0, B, LEASEFS_LEASE_READ, 0x80000000u, 0, 0, &id) ==
            -EINVAL);
      CHECK(leasefs_set_lease(fd.get(), 0, B, LEASEFS_LEASE_READ, 0, -1, 0, &id) == -EINVAL);
      CHECK(leasefs_set_lease(fd.get(), 0, B, LEASEFS_LEASE_READ, 0, SIGRTMAX + 1, 0, &id) ==
            -EINVAL);
      CHECK(leasefs_set_lease(fd.get(), UINT64_MAX - 10, 100, LEASEFS_LEASE_READ, 0, 0, 0, &id) ==
            -EINVAL);
      // A conversion is never a new lease, and keeps its range.
      CHECK(leasefs_convert_lease(fd.get(), 0, 0, B, LEASEFS_LEASE_READ, 0, 0, 0) == -EINVAL);
      REQUIRE(leasefs_set_lease(fd.get(), 0, B, LEASEFS_LEASE_WRITE, 0, 0, 0, &id) == 0);
      CHECK(leasefs_convert_lease(fd.get(), id, 0, 2 * B, LEASEFS_LEASE_READ, 0, 0, 0) == -EINVAL);
      CHECK(leasefs_convert_lease(fd.get(), id, 0, B, 3, 0, 0, 0) == -EINVAL);
      REQUIRE(leasefs_release_all(fd.get()) == 0);
    }
    SUBCASE("raw SETLEASE with a reserved field set") {
      for (int field = 0; field < 3; ++field) {
        CAPTURE(field);
        leasefs_lease l{};
        l.length = B;
        l.type = LEASEFS_LEASE_READ;
        if (field == 0) l.reserved0 = 1;
        if (field == 1) l.reserved[0] = 1;
        if (field == 2) l.reserved[1] = 1ull << 63;
        errno = 0;
        CHECK(ioctl(fd.get(), LEASEFS_IOC_SETLEASE, &l) == -1);
        CHECK(errno == EINVAL);
      }
    }
    SUBCASE("raw GETLEASE, LIST_LEASES and EVENTS with a reserved field set") {
      leasefs_getlease g{};
      g.reserved0 = 1;
      errno = 0;
      CHECK(ioctl(fd.get(), LEASEFS_IOC_GETLEASE, &g) == -1);
      CHECK(errno == EINVAL);
      auto list = std::make_unique<leasefs_lease_list>();
      list->reserved[1] = 1;
      errno = 0;
      CHECK(ioctl(fd.get(), LEASEFS_IOC_LIST_LEASES, list.get()) == -1);
      CHECK(errno == EINVAL);
      auto events = std::make_unique<leasefs_events>();
      events->reserved[0] = 1;
      errno = 0;
      CHECK(ioctl(fd.get(), LEASEFS_IOC_EVENTS, events.get()) == -1);
      CHECK(errno == EINVAL);
    }
    // Nothing is left behind.
    CHECK(ListAll(fd.get()).empty());
  }

  TEST_CASE("EACCES: unbreakable and exclusive leases are for the file's owner") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");  // root's, mode 0666
    const std::string path = m.path("f");
    const int rc = RunAs(1000, 1000, {}, [&] {
      const UniqueFd mine(open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!mine.valid()) return 10;
      if (leasefs_set_lease(mine.get(), 0, B, LEASEFS_LEASE_READ, LEASEFS_LEASE_UNBREAKABLE, 0, 0,
                            nullptr) != -EACCES)
        return 11;
      if (leasefs_set_lease(mine.get(), 0, B, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE, 0, 0,
                            nullptr) != -EACCES)
        return 12;
      uint64_t id = 0;
      if (leasefs_set_lease(mine.get(), 0, B, LEASEFS_LEASE_WRITE, 0, 0, 0, &id) != 0) return 13;
      // Nor may a conversion make it unbreakable.
      if (leasefs_convert_lease(mine.get(), id, 0, B, LEASEFS_LEASE_WRITE,
                                LEASEFS_LEASE_UNBREAKABLE, 0, 0) != -EACCES)
        return 14;
      return 0;
    });
    CHECK(rc == 0);
  }

  TEST_CASE("BreakWatch: POLLPRI when another process truncates; release lets it proceed") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    auto lease = Lease::Take(fd.get(), {0, 0}, Type::kRead);
    REQUIRE(lease.ok());
    const BreakWatch watch(fd.get());
    auto pending = watch.Pending();
    REQUIRE(pending.ok());
    CHECK(!*pending);

    Truncater breaker(m.path("f"), B);
    const auto t0 = Clock::now();
    auto notice = watch.Wait(milliseconds(5000));
    REQUIRE(notice.ok());
    REQUIRE(*notice);
    CHECK(Seconds(Clock::now() - t0) < 2.0);
    CHECK(!breaker.Done());  // it waits for us

    auto st = lease->State();
    REQUIRE(st.ok());
    CHECK(st->state == LEASEFS_STATE_BREAKING);
    CHECK(st->breaking_since != 0);
    CHECK(st->breaking_since <= MonotonicNs());
    // The deadline is the mount's lease_break_time after the break began.
    const double window = static_cast<double>(st->break_deadline - st->breaking_since) / 1e9;
    CHECK(window == doctest::Approx(10.0).epsilon(0.01));
    // Level-triggered: still pending until released.
    pending = watch.Pending();
    REQUIRE(pending.ok());
    CHECK(*pending);

    CHECK(lease->Release().ok());
    CHECK(breaker.Wait() == 0);
    CHECK(breaker.seconds() < 5.0);
    pending = watch.Pending();
    REQUIRE(pending.ok());
    CHECK(!*pending);
    struct stat sb {};
    REQUIRE(fstat(fd.get(), &sb) == 0);
    CHECK(sb.st_size == static_cast<off_t>(B));
  }

  TEST_CASE("a signal with si_fd when another process truncates") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    const int sig = SIGRTMIN + 3;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigset_t old;
    REQUIRE(pthread_sigmask(SIG_BLOCK, &set, &old) == 0);
    auto lease = Lease::Take(fd.get(), {0, 0}, Type::kWrite, 0,
                             client::Notify{sig, static_cast<uint64_t>(fd.get())});
    REQUIRE(lease.ok());
    Truncater breaker(m.path("f"), 0);
    siginfo_t si{};
    const timespec five{5, 0};
    const int got = sigtimedwait(&set, &si, &five);
    CHECK(got == sig);
    CHECK(si.si_code == SI_QUEUE);
    CHECK(si.si_fd == fd.get());
    CHECK(si.si_value.sival_int == fd.get());
    CHECK(lease->Release().ok());
    CHECK(breaker.Wait() == 0);
    CHECK(breaker.seconds() < 5.0);
    REQUIRE(pthread_sigmask(SIG_SETMASK, &old, nullptr) == 0);
  }

  TEST_CASE("Convert: WRITE to WRITE|UNBREAKABLE, and EAGAIN once broken") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    SUBCASE("unbroken: the conversion holds, and a truncate gets ETXTBSY at once") {
      auto lease = Lease::Take(fd.get(), {0, 0}, Type::kWrite);
      REQUIRE(lease.ok());
      REQUIRE(lease->Convert(Type::kWrite, client::kUnbreakable).ok());
      CHECK(lease->flags() == client::kUnbreakable);
      auto st = lease->State();
      REQUIRE(st.ok());
      CHECK(st->id == lease->id());
      CHECK(st->type == LEASEFS_LEASE_WRITE);
      CHECK(st->flags == LEASEFS_LEASE_UNBREAKABLE);
      Truncater breaker(m.path("f"), 0);
      CHECK(breaker.Wait() == ETXTBSY);
      CHECK(breaker.seconds() < 2.0);
      // Back to breakable.
      CHECK(lease->Convert(Type::kWrite, 0).ok());
    }
    SUBCASE("while breaking: EAGAIN, and still held until released") {
      auto lease = Lease::Take(fd.get(), {0, 0}, Type::kWrite);
      REQUIRE(lease.ok());
      Truncater breaker(m.path("f"), 0);
      auto notice = BreakWatch(fd.get()).Wait(milliseconds(5000));
      REQUIRE(notice.ok());
      REQUIRE(*notice);
      const Status s = lease->Convert(Type::kWrite, client::kUnbreakable);
      CHECK(s.err() == EAGAIN);
      CHECK(lease->held());
      CHECK(lease->flags() == 0);
      CHECK(!breaker.Done());
      CHECK(lease->Release().ok());
      CHECK(breaker.Wait() == 0);
      // Starting again works.
      auto again = Lease::Take(fd.get(), {0, 0}, Type::kWrite);
      REQUIRE(again.ok());
      CHECK(again->Convert(Type::kWrite, client::kUnbreakable).ok());
    }
  }

  TEST_CASE("revoked after the break time: REVOKED until released, EAGAIN to convert") {
    TestMount m(Options(1));
    const UniqueFd fd = MakeFile(m, "f");
    auto lease = Lease::Take(fd.get(), {0, 0}, Type::kWrite);
    REQUIRE(lease.ok());
    Truncater breaker(m.path("f"), 0);
    CHECK(breaker.Wait() == 0);
    CHECK(breaker.seconds() >= 0.9);
    CHECK(breaker.seconds() < 5.0);
    auto st = lease->State();
    REQUIRE(st.ok());
    CHECK(st->state == LEASEFS_STATE_REVOKED);
    auto notice = BreakWatch(fd.get()).Pending();
    REQUIRE(notice.ok());
    CHECK(*notice);
    CHECK(lease->Convert(Type::kWrite, client::kUnbreakable).err() == EAGAIN);
    CHECK(lease->Release().ok());
    leasefs_lease_info none{};
    REQUIRE(leasefs_get_lease(fd.get(), 0, &none) == 0);
    CHECK(none.state == LEASEFS_STATE_NONE);
  }

  TEST_CASE("list: every lease of the mount, from any file or directory, in pages") {
    TestMount m(Options(10));
    const UniqueFd f = MakeFile(m, "f");
    const UniqueFd g = MakeFile(m, "g");
    const UniqueFd dir(open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(dir.valid());
    auto a = Lease::Take(f.get(), {0, B}, Type::kRead);
    auto b = Lease::Take(g.get(), {B, 0}, Type::kWrite);
    auto c = Lease::Take(f.get(), {2 * B, B}, Type::kWrite, client::kExclusive);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE(c.ok());
    const std::vector<leasefs_lease_info> all = ListAll(dir.get());
    REQUIRE(all.size() == 3);
    CHECK(all[0].id == a->id());
    CHECK(all[1].id == b->id());
    CHECK(all[2].id == c->id());
    CHECK(all[0].ino == InodeOf(f.get()));
    CHECK(all[1].ino == InodeOf(g.get()));
    CHECK(all[1].offset == B);
    CHECK(all[1].length == 0);
    CHECK(all[1].type == LEASEFS_LEASE_WRITE);
    CHECK(all[2].flags == LEASEFS_LEASE_EXCLUSIVE);
    CHECK(all[0].open_file == all[2].open_file);
    CHECK(all[0].open_file != all[1].open_file);
    for (const leasefs_lease_info& l : all) {
      CHECK(l.holder_pid == getpid());
      CHECK(l.state == LEASEFS_STATE_ACTIVE);
    }

    // One at a time: `more` until the last.
    leasefs_lease_info one[1];
    size_t n = 0;
    int more = 0;
    REQUIRE(leasefs_list_leases(g.get(), 0, one, 1, &n, &more) == 0);
    CHECK(n == 1);
    CHECK(more == 1);
    CHECK(one[0].id == a->id());
    REQUIRE(leasefs_list_leases(g.get(), b->id(), one, 1, &n, &more) == 0);
    CHECK(n == 1);
    CHECK(more == 0);
    CHECK(one[0].id == c->id());
    REQUIRE(leasefs_list_leases(g.get(), c->id(), one, 1, &n, &more) == 0);
    CHECK(n == 0);
    CHECK(more == 0);
  }

  TEST_CASE("events: GRANT, BREAK, RELEASE and BREAK_DONE, in order, and a bounded wait") {
    TestMount m(Options(10));
    const UniqueFd fd = MakeFile(m, "f");
    const std::vector<leasefs_event> before = EventsAfter(fd.get(), 0);
    const uint64_t start = before.empty() ? 0 : before.back().seq;

    auto lease = Lease::Take(fd.get(), {0, 0}, Type::kRead);
    REQUIRE(lease.ok());
    Truncater breaker(m.path("f"), B);
    auto notice = BreakWatch(fd.get()).Wait(milliseconds(5000));
    REQUIRE(notice.ok());
    REQUIRE(*notice);
    const pid_t breaker_pid = breaker.pid();
    const uint64_t lease_id = lease->id();
    REQUIRE(lease->Release().ok());
    REQUIRE(breaker.Wait() == 0);

    std::vector<leasefs_event> events;
    for (int i = 0; i < 100; ++i) {  // BREAK_DONE is logged as the breaker goes on
      events = EventsAfter(fd.get(), start);
      if (!events.empty() && events.back().type == LEASEFS_EVENT_BREAK_DONE) break;
      usleep(10000);
    }
    REQUIRE(events.size() == 4);
    const uint32_t want[] = {LEASEFS_EVENT_GRANT, LEASEFS_EVENT_BREAK, LEASEFS_EVENT_RELEASE,
                             LEASEFS_EVENT_BREAK_DONE};
    for (size_t i = 0; i < events.size(); ++i) {
      CAPTURE(i);
      CHECK(events[i].type == want[i]);
      CHECK(events[i].seq == start + 1 + i);
      CHECK(events[i].ino == InodeOf(fd.get()));
      if (i > 0) CHECK(events[i].time >= events[i - 1].time);
    }
    for (size_t i = 0; i < 3; ++i) {
      CHECK(events[i].lease_id == lease_id);
      CHECK(events[i].holder_pid == getpid());
      CHECK(events[i].lease_type == LEASEFS_LEASE_READ);
    }
    CHECK(events[0].actor_pid == getpid());
    CHECK(events[1].actor_pid == breaker_pid);
    CHECK(events[2].actor_pid == getpid());
    CHECK(events[2].why == LEASEFS_WHY_UNLOCK);
    CHECK(events[3].lease_id == 0);
    CHECK(events[3].err == 0);
    CHECK(events[3].actor_pid == breaker_pid);

    // Nothing new: the call waits the time asked for, and no longer.
    leasefs_event buf[4];
    size_t n = 0;
    const auto t0 = Clock::now();
    REQUIRE(leasefs_read_events(fd.get(), events.back().seq, 300, buf, 4, &n, nullptr) == 0);
    const double waited = Seconds(Clock::now() - t0);
    CHECK(n == 0);
    CHECK(waited >= 0.25);
    CHECK(waited < 2.0);
    // A short buffer gets the first events; the rest come next time.
    REQUIRE(leasefs_read_events(fd.get(), start, 0, buf, 2, &n, nullptr) == 0);
    REQUIRE(n == 2);
    CHECK(buf[0].seq == start + 1);
    CHECK(buf[1].seq == start + 2);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
