// The SIGKILL crash loop against a real leasefs daemon: a mixed metadata and
// data workload runs on the mount, the daemon is killed at a random moment,
// fsck must find the pool clean, the remount must succeed on the stale mount
// point, and the tree must hold every completed operation and the one in
// flight wholly or not at all (a write in flight: each byte old or new, the
// size old or new). Then the workload carries on from there.
//
// The workload includes the block-map operations (reflink, copy_file_range,
// punch, zero range, collapse, insert, unshare, defrag): each is wholly done
// or wholly absent after a kill. After every remount the block maps of all
// the files (LEASEFS_IOC_BMAP) must agree with each other: each pool block's
// refcount is exactly the number of extents, over all the files, mapping it.
//
// A loop of its own kills the daemon while one file's 40-64 KiB xattr is set,
// replaced and removed over and over: after each kill the value is exactly
// the one before or after the operation in flight, never a mix, and fsck
// finds no leaked block.
//
// LEASEFS_CRASH_SEED=N (or "random") picks the workload; the kill delays
// derive from it too, but timing makes the exact crash points vary.
// LEASEFS_CRASH_ITERATIONS=N runs N kills (default 40).
// LEASEFS_CRASH_KEEP_GOING=1: a pool that fsck faults after a kill is noted,
// repaired (fsck -y) and the loop goes on (for long runs); the test still
// fails at the end.
// On failure the pool image as the crash left it is kept under /tmp.
#include "tests/crash/crash_loop.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "engine/layout.h"
#include "tests/crash/fuse_util.h"
#include "tests/support/mount.h"

namespace leasefs::crashtest {
namespace {

using testing::TestMount;

// Kills the daemon; recovers with fsck (check only) and a remount.
class DaemonTarget : public CrashTarget {
 public:
  DaemonTarget(TestMount& m, uint64_t seed) : m_(m), seed_(seed) {
    scratch_ = "/dev/shm/leasefs-crash-image-" + std::to_string(getpid());
  }
  ~DaemonTarget() override { unlink(scratch_.c_str()); }

  std::string root() const override { return m_.mnt(); }
  void Crash(pid_t) override;
  std::string Recover(int iteration) override;
  std::string Diagnostics(int iteration) override {
    std::string d = "  daemon log before the kill:\n" + Tail(log_) + "\n";
    if (m_.mounted()) d += "  daemon log after the remount:\n" + Tail(m_.DaemonLog()) + "\n";
    return d + KeepImage(iteration);
  }

  // LEASEFS_CRASH_KEEP_GOING=1: an fsck failure is noted and repaired
  // (fsck -y) instead of ending the loop, so that a long run goes on.
  void set_keep_going(bool on) { keep_going_ = on; }
  const std::vector<std::string>& fsck_failures() const { return fsck_failures_; }
  const std::vector<std::string>& remount_failures() const { return remount_failures_; }
  // Remounts that left the dead mount in place under the new one.
  int stacked() const { return stacked_; }
  // The most blocks shared between extents any remount found.
  uint64_t most_shared() const { return most_shared_; }
  int first_stacked() const { return first_stacked_; }

 private:
  // Keeps the pool as the crash left it under /tmp; says where.
  std::string KeepImage(int iteration) const {
    if (!have_image_) return {};
    const std::string keep = "/tmp/leasefs-crash-seed" + std::to_string(seed_) + "-iter" +
                             std::to_string(iteration) + ".pool";
    return CopyWhole(scratch_, keep) ? "  the pool as the crash left it: " + keep + "\n" : "";
  }

  TestMount& m_;
  uint64_t seed_;
  std::string scratch_;
  std::string log_;
  bool have_image_ = false;
  int stacked_ = 0;
  int first_stacked_ = -1;
  uint64_t most_shared_ = 0;
  bool keep_going_ = false;
  std::vector<std::string> fsck_failures_;
  std::vector<std::string> remount_failures_;
};

void DaemonTarget::Crash(pid_t) {
  log_ = m_.DaemonLog();
  m_.Kill();
  // An earlier remount stacked its mount on a dead one (counted below):
  // leave only the mount just killed, for the next daemon to clean up.
  while (MountsOn(m_.mnt()) > 1) DetachMount(m_.mnt());
}

std::string DaemonTarget::Recover(int iteration) {
  // The image as the crash left it, kept if anything below fails.
  have_image_ = CopyWhole(m_.pool(), scratch_);
  testing::ProcessResult f = m_.Fsck(FsckCheckArgs());
  if (f.signaled() || f.exit_code != 0) {
    const std::string err = "fsck.leasefs exited " +
                            (f.signaled() ? "on signal " + std::to_string(f.term_signal)
                                          : std::to_string(f.exit_code)) +
                            ":\n" + Tail(f.output, 4000);
    if (!keep_going_) return err;
    fsck_failures_.push_back("kill " + std::to_string(iteration) + ": " + err +
                             KeepImage(iteration));
    testing::ProcessResult fix = m_.Fsck({"-y"});
    if (fix.signaled() || fix.exit_code > 1)
      return err + "\nfsck -y could not repair it:\n" + fix.output;
  }
  if (std::string err = MountAndWait(m_); !err.empty()) {
    if (!keep_going_) return err;
    // Long runs: note it, clear the dead mount by hand, and try again.
    remount_failures_.push_back("kill " + std::to_string(iteration) + ": " + err);
    m_.Kill();
    while (MountsOn(m_.mnt()) > 0) DetachMount(m_.mnt());
    if (std::string again = MountAndWait(m_); !again.empty()) return err + "\nand then: " + again;
  }
  if (MountsOn(m_.mnt()) > 1 && stacked_++ == 0) first_stacked_ = iteration;
  const SharingReport sharing = CheckSharing(m_.mnt());
  if (!sharing.error.empty())
    return "after the remount, the block maps disagree with the refcounts:\n" + sharing.error;
  most_shared_ = std::max(most_shared_, sharing.shared);
  return {};
}

// What LEASEFS_CRASH_KEEP_GOING let the loop get past.
void CheckKeptGoing(const DaemonTarget& t) {
  auto first = [](const std::vector<std::string>& v) {
    std::string all;
    for (size_t i = 0; i < v.size() && i < 5; ++i) all += v[i] + "\n";
    return all;
  };
  CHECK_MESSAGE(t.fsck_failures().empty(),
                t.fsck_failures().size() << " kills left a pool fsck faults (repaired with -y, "
                                         << "the loop went on); the first:\n"
                                         << first(t.fsck_failures()));
  CHECK_MESSAGE(t.remount_failures().empty(), t.remount_failures().size()
                                                  << " remounts failed (the dead mount was then "
                                                  << "cleared by hand); the first:\n"
                                                  << first(t.remount_failures()));
}

void CheckNoStaleMounts(const DaemonTarget& t) {
  CHECK_MESSAGE(t.stacked() == 0,
                t.stacked() << " remounts (the first after kill " << t.first_stacked()
                            << ") mounted on top of the dead mount instead of removing it");
}

Model EmptyModelOf(const std::string& root) {
  struct stat st {};
  REQUIRE(lstat(root.c_str(), &st) == 0);
  return Model(st.st_mode);
}

void CheckCleanFsck(const TestMount& m) {
  testing::ProcessResult f = m.Fsck(FsckCheckArgs());
  CHECK_MESSAGE(!f.signaled(), f.output);
  CHECK_MESSAGE(f.exit_code == 0, f.output);
}

// Every shared block's refcount exact; returns how many blocks are shared.
uint64_t CheckSharedRefcounts(const TestMount& m) {
  const SharingReport r = CheckSharing(m.mnt());
  CHECK_MESSAGE(r.error.empty(), r.error);
  return r.shared;
}

TEST_SUITE("crash") {
  TEST_CASE("CrashLoop: SIGKILL of the daemon at random moments loses no completed operation") {
    testing::MountOptions mo;
    mo.pool_size = "64M";
    // The smallest initial inode table (16 slots) and refcounts (of 4 MiB
    // of data), so that the inode mark rises during the loop and kills can
    // land while it does (docs/pool_format.md "Lazily initialized tables";
    // the workload's data stays under 4 MiB: FullPool raises the refcount
    // mark).
    mo.mkfs_args = {"--initial-inodes", "16", "--initial-data", "4M"};
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    Model model = EmptyModelOf(m.mnt());
    uint64_t ops = 0;
    CrashLoopOptions opts;
    opts.seed = SeedFromEnv(20240601);
    opts.iterations = IterationsFromEnv(40);
    opts.max_delay_us = 300000;
    opts.progress_every = opts.iterations > 100 ? 50 : 1;
    DaemonTarget target(m, opts.seed);
    const char* keep_going = std::getenv("LEASEFS_CRASH_KEEP_GOING");
    target.set_keep_going(keep_going && *keep_going && *keep_going != '0');
    CrashLoopResult r = RunCrashLoop(target, opts, model, ops);
    CheckKeptGoing(target);
    REQUIRE_MESSAGE(r.failure.empty(), r.failure);
    CHECK(r.iterations == opts.iterations);
    MESSAGE("seed " << opts.seed << ": " << r.iterations << " kills, " << ops
                    << " operations; the one in flight was found done " << r.in_flight_done
                    << " times, a write partly done " << r.in_flight_partial << " times; up to "
                    << target.most_shared() << " shared blocks after a remount");

    CheckNoStaleMounts(target);

    // A clean unmount after all that, fsck, and the tree once more.
    REQUIRE(m.Unmount() == 0);
    CHECK_MESSAGE(MountsOn(m.mnt()) == 0, "a dead mount is left after the clean unmount");
    while (MountsOn(m.mnt()) > 0) DetachMount(m.mnt());
    CheckCleanFsck(m);
    const std::string err = MountAndWait(m);
    REQUIRE_MESSAGE(err.empty(), err);
    std::vector<std::string> diffs = Compare(TakeSnapshot(m.mnt()), model);
    std::string all;
    for (const auto& d : diffs) all += d + "\n";
    CHECK_MESSAGE(diffs.empty(), all);
    CheckSharedRefcounts(m);
    REQUIRE(m.Unmount() == 0);
    CheckCleanFsck(m);
    // The marks rose during the loop (fsck has checked both copies' words).
    layout::Superblock sb{};
    {
      const int fd = open(m.pool().c_str(), O_RDONLY);
      REQUIRE(fd >= 0);
      REQUIRE(pread(fd, &sb, sizeof(sb), 0) == static_cast<ssize_t>(sizeof(sb)));
      close(fd);
    }
    MESSAGE("marks after the loop: " << (sb.inode_mark & layout::kMarkValueMask) << " inode slots, "
                                     << (sb.refcount_mark & layout::kMarkValueMask)
                                     << " refcount blocks");
    CHECK((sb.inode_mark & layout::kMarkValueMask) > 16);
  }

  // The model of the block-map operations that only leasefs has (tmpfs
  // checks the rest, crash_workload): every outcome and the final tree, and
  // the refcounts of the shared blocks, without crashes.
  TEST_CASE(
      "Workload: the model predicts every outcome on leasefs, block-map operations included") {
    testing::MountOptions mo;
    mo.pool_size = "64M";
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    uint64_t most_shared = 0;
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      CAPTURE(seed);
      const std::string root = m.path("w" + std::to_string(seed));
      REQUIRE(mkdir(root.c_str(), 0755) == 0);
      Model model = EmptyModelOf(root);
      const std::string failure = RunWorkload(root, SeedFromEnv(seed), 1, 1500, model);
      REQUIRE_MESSAGE(failure.empty(), failure << "\n  daemon log:\n" << Tail(m.DaemonLog()));
      std::vector<std::string> diffs = Compare(TakeSnapshot(root), model);
      std::string all;
      for (const auto& d : diffs) all += d + "\n";
      CHECK_MESSAGE(diffs.empty(), all);
      most_shared = std::max(most_shared, CheckSharedRefcounts(m));
    }
    CHECK(most_shared > 0);  // the workload does share blocks
    REQUIRE(m.Unmount() == 0);
    CheckCleanFsck(m);
  }

  TEST_CASE("CrashLoop: SIGKILL of a multi-threaded daemon loses no completed operation") {
    testing::MountOptions mo;
    mo.pool_size = "32M";
    mo.options = "allow_other,threads=4";
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    Model model = EmptyModelOf(m.mnt());
    uint64_t ops = 0;
    CrashLoopOptions opts;
    opts.seed = SeedFromEnv(20240601) + 2;
    opts.iterations = IterationsFromEnv(40) / 2;
    opts.max_delay_us = 200000;
    opts.progress_every = 0;
    DaemonTarget target(m, opts.seed);
    CrashLoopResult r = RunCrashLoop(target, opts, model, ops);
    REQUIRE_MESSAGE(r.failure.empty(), r.failure);
    MESSAGE("seed " << opts.seed << ": " << r.iterations << " kills of a 4-thread daemon, " << ops
                    << " operations");
    CheckNoStaleMounts(target);
    REQUIRE(m.Unmount() == 0);
    CheckCleanFsck(m);
  }

  TEST_CASE("CrashLoop: kills right after the mount and between quick operations") {
    testing::MountOptions mo;
    mo.pool_size = "16M";
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    Model model = EmptyModelOf(m.mnt());
    uint64_t ops = 0;
    CrashLoopOptions opts;
    opts.seed = SeedFromEnv(7) + 1;
    opts.iterations = IterationsFromEnv(40) / 2;
    opts.max_delay_us = 3000;  // mostly within the first few operations
    opts.progress_every = 0;
    DaemonTarget target(m, opts.seed);
    CrashLoopResult r = RunCrashLoop(target, opts, model, ops);
    REQUIRE_MESSAGE(r.failure.empty(), r.failure);
    MESSAGE("seed " << opts.seed << ": " << r.iterations << " early kills, " << ops
                    << " operations");
    CheckNoStaleMounts(target);
    REQUIRE(m.Unmount() == 0);
    CheckCleanFsck(m);
  }

  // Removes, then lets go of, a directory, a file and a symlink again and
  // again: each ends with the engine reclaiming an orphan (an inode with no
  // links, once the kernel's last reference goes).
  [[noreturn]] void ReclaimChurn(const std::string& root) {
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGHUP})
      signal(sig, SIG_DFL);
    const std::string d = root + "/d", f = d + "/f", o = root + "/o", s = root + "/s";
    const std::string data(3 * 4096 + 100, 'r');
    const std::string target(300, 't');
    for (;;) {
      if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) _exit(1);
      int fd = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
      if (fd < 0 || write(fd, data.data(), data.size()) < 0 || close(fd) != 0) _exit(1);
      if (unlink(f.c_str()) != 0) _exit(1);
      const int dfd = open(d.c_str(), O_RDONLY | O_DIRECTORY);
      if (dfd < 0 || rmdir(d.c_str()) != 0) _exit(1);
      close(dfd);  // the directory's last reference: it is reclaimed now
      const int ofd = open(o.c_str(), O_CREAT | O_RDWR, 0644);
      if (ofd < 0 || write(ofd, data.data(), data.size()) < 0 || unlink(o.c_str()) != 0) _exit(1);
      close(ofd);
      // A symlink whose target needs a block (> 144 bytes).
      struct stat st {};
      if (symlink(target.c_str(), s.c_str()) != 0 || lstat(s.c_str(), &st) != 0 ||
          unlink(s.c_str()) != 0)
        _exit(1);
    }
  }

  TEST_CASE("CrashLoop: SIGKILL while unlinked files and removed directories are reclaimed") {
    testing::MountOptions mo;
    mo.pool_size = "16M";
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    Rng rng(SeedFromEnv(3));
    // The window is narrow (about 1 kill in 100 lands in it): many short rounds.
    const int iterations = IterationsFromEnv(40) * 5;
    int stacked = 0;
    for (int iter = 0; iter < iterations; ++iter) {
      CAPTURE(iter);
      std::fflush(nullptr);
      const pid_t child = fork();
      REQUIRE(child >= 0);
      if (child == 0) ReclaimChurn(m.mnt());
      std::this_thread::sleep_for(std::chrono::microseconds(rng.Below(20000)));
      m.Kill();
      while (MountsOn(m.mnt()) > 1) DetachMount(m.mnt());
      int status = 0;
      REQUIRE(waitpid(child, &status, 0) == child);
      const std::string image = "/tmp/leasefs-crash-reclaim-iter" + std::to_string(iter) + ".pool";
      testing::ProcessResult f = m.Fsck(FsckCheckArgs());
      if (f.exit_code != 0 && CopyWhole(m.pool(), image))
        f.output += "(pool kept: " + image + ")\n";
      REQUIRE_MESSAGE(f.exit_code == 0, f.output);
      const std::string err = MountAndWait(m);
      REQUIRE_MESSAGE(err.empty(), err);
      stacked += MountsOn(m.mnt()) > 1;
      // Whatever the crash left: at most d, d/f, o and s.
      Snapshot snap = TakeSnapshot(m.mnt());
      CHECK(snap.errors.empty());
      for (const auto& entry : snap.nodes.at(snap.root).children) {
        const auto& name = entry.first;  // not a binding: clang 14 cannot capture those
        CHECK_MESSAGE((name == "d" || name == "o" || name == "s"), "unexpected /" << name);
      }
      unlink((m.mnt() + "/d/f").c_str());
      rmdir((m.mnt() + "/d").c_str());
      unlink((m.mnt() + "/o").c_str());
      unlink((m.mnt() + "/s").c_str());
    }
    CHECK_MESSAGE(stacked == 0, stacked << " remounts stacked on the dead mount");
    REQUIRE(m.Unmount() == 0);
    CheckCleanFsck(m);
  }

  // The big-xattr churn: op k on /x sets user.big to BigValue(k) (40 to 64
  // KiB, so in value blocks), except every fifth, which removes it; user.keep
  // is never touched. The child counts completed ops in `done`.
  std::string BigValue(uint64_t k) { return PatternBytes(k, 40000 + (k * 7919) % 25537); }
  bool RemovesBig(uint64_t k) { return k % 5 == 4; }
  // user.big after ops [0, n): the last one's value, or absent.
  std::string BigAfter(uint64_t n) {
    if (n == 0 || RemovesBig(n - 1)) return "<absent>";
    return BigValue(n - 1);
  }

  [[noreturn]] void BigXattrChurn(const std::string& x, uint64_t first, uint64_t* done) {
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGHUP})
      signal(sig, SIG_DFL);
    for (uint64_t k = first;; ++k) {
      int rc;
      if (RemovesBig(k)) {
        rc = removexattr(x.c_str(), "user.big");
        if (rc != 0 && errno == ENODATA) rc = 0;  // after a removal or at the start
      } else {
        const std::string v = BigValue(k);
        rc = setxattr(x.c_str(), "user.big", v.data(), v.size(), 0);
      }
      if (rc != 0) _exit(1);
      __atomic_store_n(done, k + 1, __ATOMIC_SEQ_CST);
    }
  }

  std::string XattrOf(const std::string& path, const char* name) {
    std::string v(65536, '\0');
    const ssize_t n = getxattr(path.c_str(), name, v.data(), v.size());
    if (n < 0) return errno == ENODATA ? "<absent>" : "<" + std::string(ErrnoName(errno)) + ">";
    v.resize(static_cast<size_t>(n));
    return v;
  }

  TEST_CASE("CrashLoop: SIGKILL while 64 KiB xattrs are set, replaced and removed") {
    testing::MountOptions mo;
    mo.pool_size = "16M";
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    const std::string x = m.path("x");
    REQUIRE(close(open(x.c_str(), O_CREAT | O_WRONLY, 0644)) == 0);
    const std::string keep = PatternBytes(99, 65536);
    REQUIRE(setxattr(x.c_str(), "user.keep", keep.data(), keep.size(), 0) == 0);
    auto* done = static_cast<uint64_t*>(
        mmap(nullptr, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(done != MAP_FAILED);
    *done = 0;
    Rng rng(SeedFromEnv(11));
    const int iterations = IterationsFromEnv(40);
    int in_flight_done = 0;
    uint64_t next = 0;  // the first op the next child runs
    for (int iter = 0; iter < iterations; ++iter) {
      CAPTURE(iter);
      std::fflush(nullptr);
      const pid_t child = fork();
      REQUIRE(child >= 0);
      if (child == 0) BigXattrChurn(x, next, done);
      std::this_thread::sleep_for(std::chrono::microseconds(rng.Below(30000)));
      m.Kill();
      while (MountsOn(m.mnt()) > 1) DetachMount(m.mnt());
      int status = 0;
      REQUIRE(waitpid(child, &status, 0) == child);
      const uint64_t n = std::max(*done, next);
      testing::ProcessResult f = m.Fsck(FsckCheckArgs());
      REQUIRE_MESSAGE(f.exit_code == 0, f.output);
      const std::string err = MountAndWait(m);
      REQUIRE_MESSAGE(err.empty(), err);
      // Every completed op is there; the one in flight wholly or not at all.
      const std::string got = XattrOf(x, "user.big");
      CAPTURE(n);
      if (got == BigAfter(n + 1) && got != BigAfter(n)) {
        ++in_flight_done;
        next = n + 1;
      } else {
        CHECK_MESSAGE(got == BigAfter(n), "user.big holds " << got.size()
                                                            << " bytes, neither the value after op "
                                                            << n << " nor after op " << n + 1);
        next = n;
      }
      CHECK(XattrOf(x, "user.keep") == keep);
    }
    munmap(done, sizeof(uint64_t));
    MESSAGE(iterations << " kills over " << next << " xattr operations; the one in flight found "
                       << "done " << in_flight_done << " times");
    CHECK(next > 0);
    REQUIRE(m.Unmount() == 0);
    CheckCleanFsck(m);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::crashtest
