// Handing a pool from one daemon to the next, and pools larger than memory.
//
// umount returns before the daemon that served the mount has let go of the
// pool; a daemon started right after it waits for that one (bounded), while
// a daemon whose mount is still up keeps the pool to itself
// (fusefs/daemon/pool_lock.h). Read-only mounts and fsck.leasefs map a pool
// privately, which must work for pools larger than RAM + swap.
//
// These tests manage the daemons themselves (in the background, as a user
// would start them) and are about leasefs only: reference mode skips them.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

using Clock = std::chrono::steady_clock;

#define LEASEFS_DAEMONS_ONLY()                                              \
  do {                                                                      \
    if (ReferenceMode()) {                                                  \
      MESSAGE("reference mode: skipped (starts leasefs daemons directly)"); \
      return;                                                               \
    }                                                                       \
  } while (0)

// Starts a daemon in the background, as `leasefs POOL MNT -o ...` from a
// shell: returns once it has mounted (exit 0) or given up.
ProcessResult StartDaemon(const TestMount& m, const std::string& mnt) {
  return Run({LeasefsBin(), m.pool(), mnt, "-o", TestMountOptions()});
}

ProcessResult FusermountU(const std::string& mnt) { return Run({"/bin/fusermount3", "-u", mnt}); }

// The pid holding a flock on `path`, from /proc/locks ("1: FLOCK  ADVISORY
// WRITE PID MAJ:MIN:INO 0 EOF", MAJ and MIN in hex); 0 if none.
pid_t FlockHolder(const std::string& path) {
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  std::ostringstream want;
  want << std::hex << std::setfill('0') << std::setw(2) << major(st.st_dev) << ':' << std::setw(2)
       << minor(st.st_dev) << ':' << std::dec << st.st_ino;
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, type, advisory, mode, file;
    pid_t pid = 0;
    if (f >> id >> type >> advisory >> mode >> pid >> file && type == "FLOCK" && file == want.str())
      return pid;
  }
  return 0;
}

// Waits until no process holds the pool's lock: the last daemon has exited.
bool WaitUnlocked(const std::string& pool) {
  for (int i = 0; i < 1000; ++i) {
    if (FlockHolder(pool) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Unmounts `mnt` if a test left it mounted and lets a stopped daemon go on,
// so that it can exit, when the test ends (also by a failed REQUIRE).
class DaemonGuard {
 public:
  explicit DaemonGuard(std::string pool) : pool_(std::move(pool)) {}
  ~DaemonGuard() {
    for (pid_t pid : stopped_) kill(pid, SIGCONT);
    for (const std::string& mnt : mounts_) Run({"/bin/fusermount3", "-u", "-q", "-z", mnt});
    WaitUnlocked(pool_);
  }
  DaemonGuard(const DaemonGuard&) = delete;
  DaemonGuard& operator=(const DaemonGuard&) = delete;

  void Stop(pid_t pid) {
    stopped_.push_back(pid);
    REQUIRE(kill(pid, SIGSTOP) == 0);
  }
  void Unmount(const std::string& mnt) { mounts_.push_back(mnt); }

 private:
  std::string pool_;
  std::vector<pid_t> stopped_;
  std::vector<std::string> mounts_;
};

// A directory to mount on, removed at the end (after the DaemonGuards
// declared after it have unmounted it).
class TempMountpoint {
 public:
  TempMountpoint() {
    char tmpl[] = "/tmp/leasefs-mnt2-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempMountpoint() { rmdir(path_.c_str()); }
  TempMountpoint(const TempMountpoint&) = delete;
  TempMountpoint& operator=(const TempMountpoint&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Formats a pool with `m` (whose own daemon is unmounted again) and starts
// a background daemon on it. Returns that daemon's pid.
pid_t StartOwnDaemon(TestMount& m, DaemonGuard& guard) {
  REQUIRE(m.Unmount() == 0);
  guard.Unmount(m.mnt());
  const ProcessResult first = StartDaemon(m, m.mnt());
  REQUIRE_MESSAGE(first.exit_code == 0, first.output);
  const pid_t pid = FlockHolder(m.pool());
  REQUIRE(pid > 0);
  return pid;
}

std::string Waiting(const std::string& pool, pid_t pid) {
  return "leasefs: waiting for the daemon that served " + pool + " (pid " + std::to_string(pid) +
         ") to let go\n";
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A size that no private writable mapping may have without MAP_NORESERVE
// under the default overcommit heuristic: more than RAM + swap.
std::string BeyondMemorySize() {
  std::ifstream in("/proc/meminfo");
  std::string key, rest;
  uint64_t kib = 0, total_kib = 0;
  while (in >> key >> kib) {
    if (key == "MemTotal:" || key == "SwapTotal:") total_kib += kib;
    std::getline(in, rest);
  }
  REQUIRE(total_kib > 0);
  return std::to_string(total_kib / (1024 * 1024) + 1) + "G";
}

TEST_SUITE("fuse.remount") {
  TEST_CASE("Remount: a daemon started right after fusermount3 -u gets the pool, 20 times") {
    LEASEFS_DAEMONS_ONLY();
    // A large inode table makes the old daemon's exit (marking the pool
    // clean) slow enough that the new one often finds the lock still held.
    MountOptions mo;
    mo.pool_size = "8G";
    mo.options = TestMountOptions();
    TestMount m(mo);
    DaemonGuard guard(m.pool());
    StartOwnDaemon(m, guard);
    size_t waited = 0;
    for (int round = 0; round < 20; ++round) {
      CAPTURE(round);
      REQUIRE(WriteFile(m.path("r" + std::to_string(round)), Pattern(10000, round)) == "");
      REQUIRE(FusermountU(m.mnt()).exit_code == 0);
      const ProcessResult next = StartDaemon(m, m.mnt());
      REQUIRE_MESSAGE(next.exit_code == 0, next.output);
      CHECK(Count(next.output, "is in use by") == 0);
      waited += Count(next.output, "waiting for the daemon");
      for (int r = 0; r <= round; ++r)
        CHECK(Diff(ReadFile(m.path("r" + std::to_string(r))), Pattern(10000, r)) == "");
    }
    MESSAGE(waited << " of 20 daemons waited for their predecessor");
    REQUIRE(FusermountU(m.mnt()).exit_code == 0);
    REQUIRE(WaitUnlocked(m.pool()));
    CHECK(m.Fsck().exit_code == 0);
  }

  TEST_CASE("Remount: the new daemon waits while the old one is slow to let go") {
    LEASEFS_DAEMONS_ONLY();
    TestMount m;
    DaemonGuard guard(m.pool());
    const pid_t old_pid = StartOwnDaemon(m, guard);
    REQUIRE(WriteFile(m.path("kept"), "kept") == "");
    // Stopped, the old daemon cannot even notice that its mount is gone.
    guard.Stop(old_pid);
    REQUIRE(FusermountU(m.mnt()).exit_code == 0);

    SUBCASE("until it exits") {
      std::thread resume([old_pid] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        kill(old_pid, SIGCONT);
      });
      const auto t0 = Clock::now();
      const ProcessResult next = StartDaemon(m, m.mnt());
      const auto waited = Clock::now() - t0;
      resume.join();
      REQUIRE_MESSAGE(next.exit_code == 0, next.output);
      CHECK(next.output.rfind(Waiting(m.pool(), old_pid), 0) == 0);
      CHECK(Count(next.output, "waiting for") == 1);
      CHECK(waited >= std::chrono::milliseconds(500));
      CHECK(ReadFile(m.path("kept")) == "kept");
      const pid_t new_pid = FlockHolder(m.pool());
      CHECK(new_pid != 0);
      CHECK(new_pid != old_pid);
    }
    SUBCASE("for at most 10 s") {
      const auto t0 = Clock::now();
      const ProcessResult next = StartDaemon(m, m.mnt());
      const auto waited = Clock::now() - t0;
      CHECK(next.exit_code == 1);
      CHECK(next.output == Waiting(m.pool(), old_pid) + "leasefs: " + m.pool() +
                               " is still held by the leasefs daemon that served it (pid " +
                               std::to_string(old_pid) + ") after 10 s\n");
      CHECK(waited >= std::chrono::seconds(10));
      CHECK(waited < std::chrono::seconds(15));
    }
  }

  TEST_CASE("Remount: a second daemon is refused at once while the first serves its mount") {
    LEASEFS_DAEMONS_ONLY();
    TestMount m;
    TempMountpoint other;
    DaemonGuard guard(m.pool());
    const pid_t first = StartOwnDaemon(m, guard);
    REQUIRE(WriteFile(m.path("f"), "first") == "");
    guard.Unmount(other.path());
    const std::string refused = "leasefs: " + m.pool() + " is in use by another leasefs daemon\n";
    // A daemon for the same mount point would hang resolving it while the
    // first is stopped (the kernel asks the stopped daemon): another one.
    std::vector<std::string> mounts{m.mnt(), other.path()};
    SUBCASE("serving") {}
    SUBCASE("stopped, its mount still up") {
      guard.Stop(first);
      mounts = {other.path()};
    }
    for (const std::string& mnt : mounts) {
      CAPTURE(mnt);
      const auto t0 = Clock::now();
      const ProcessResult second = StartDaemon(m, mnt);
      CHECK(second.exit_code == 1);
      CHECK(second.output == refused);
      CHECK(Clock::now() - t0 < std::chrono::seconds(1));
    }
    kill(first, SIGCONT);
    CHECK(ReadFile(m.path("f")) == "first");
    CHECK(FlockHolder(m.pool()) == first);
  }

  TEST_CASE("Remount: a pool locked by another program (fsck) is refused, not waited for") {
    LEASEFS_DAEMONS_ONLY();
    TestMount m;
    REQUIRE(m.Unmount() == 0);
    Fd fd(open(m.pool().c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.ok());
    REQUIRE(flock(fd.get(), LOCK_EX | LOCK_NB) == 0);
    DaemonGuard guard(m.pool());
    guard.Unmount(m.mnt());
    const auto t0 = Clock::now();
    const ProcessResult d = StartDaemon(m, m.mnt());
    CHECK(d.exit_code == 1);
    CHECK(d.output == "leasefs: " + m.pool() + " is in use by another leasefs daemon\n");
    CHECK(Clock::now() - t0 < std::chrono::seconds(1));
    fd.Close();
  }

  TEST_CASE("Read-only: a pool larger than RAM + swap mounts ro and checks clean") {
    LEASEFS_DAEMONS_ONLY();
    // Sparse, on a disk filesystem if /tmp is one; few inodes keep what mkfs
    // writes small. Its mapping alone is larger than memory.
    MountOptions mo;
    mo.pool_size = BeyondMemorySize();
    mo.pool_dir = "/tmp";
    mo.mkfs_args = {"-N", "4096"};
    mo.options = TestMountOptions();
    CAPTURE(mo.pool_size);
    TestMount m(mo);
    REQUIRE(WriteFile(m.path("written-rw"), Pattern(100000, 7)) == "");
    REQUIRE(m.Unmount() == 0);
    std::string out;
    REQUIRE_MESSAGE(m.Mount(&out, "ro"), out);
    CHECK(Diff(ReadFile(m.path("written-rw")), Pattern(100000, 7)) == "");
    CHECK(SYS(open(m.path("new").c_str(), O_CREAT | O_WRONLY, 0644)) == "EROFS");
    CHECK(m.DaemonLog().find("read-only") != std::string::npos);
    REQUIRE(m.Unmount() == 0);
    const ProcessResult fsck = m.Fsck({"-n"});
    CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
  }
}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
