// A killed daemon on a full pool: fill an 8 MiB pool until writes fail with
// ENOSPC, keep writing (and creating, and preallocating) while the daemon is
// killed with SIGKILL, then: fsck finds the pool clean, the remount works,
// every write that returned is there, deleting everything gives back exactly
// the space and inodes of the empty pool (no block leaked by the interrupted
// allocations), and the pool fills again to the same size.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "engine/layout.h"
#include "tests/crash/crash_loop.h"
#include "tests/crash/fuse_util.h"
#include "tests/crash/workload.h"
#include "tests/support/mount.h"

namespace leasefs::crashtest {
namespace {

using testing::TestMount;

constexpr int kFiles = 40;               // f0..f39: the files whose data is checked
constexpr int kExtras = 10;              // x0..x9 and d0..d9: other allocations
constexpr size_t kChunk = 48 * 1024;     // one write
constexpr size_t kFileCap = 512 * 1024;  // then the next file

struct Shared {
  std::atomic<int> crashing;
  std::atomic<int> full;               // a write has failed with ENOSPC
  std::atomic<int> created;            // files f0..f(created-1) exist
  std::atomic<uint64_t> size[kFiles];  // bytes of f<i> whose write returned
  std::atomic<int> bad;                // an error other than ENOSPC before the crash
  int bad_errno;
  char bad_what[64];
};

std::string ChunkData(uint64_t seed, int file, uint64_t off, size_t len) {
  return PatternBytes(MixSeed(seed, static_cast<uint64_t>(file), off), len);
}

[[noreturn]] void Bad(Shared* sh, const char* what, int err) {
  if (!sh->crashing.load()) {
    sh->bad_errno = err;
    std::snprintf(sh->bad_what, sizeof sh->bad_what, "%s", what);
    sh->bad.store(1);
  }
  _exit(1);
}

// Fills the pool, then keeps asking for more space until killed.
[[noreturn]] void FillerMain(const std::string& root, uint64_t seed, Shared* sh) {
  for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGHUP}) signal(sig, SIG_DFL);
  for (int i = 0; i < kFiles; ++i) {
    const std::string f = root + "/f" + std::to_string(i);
    int fd = open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno != ENOSPC) Bad(sh, "create", errno);
      sh->full.store(1);
      break;
    }
    sh->created.store(i + 1);
    while (sh->size[i].load() < kFileCap) {
      const uint64_t off = sh->size[i].load();
      std::string data = ChunkData(seed, i, off, kChunk);
      ssize_t n = pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
      if (n < 0 && errno != ENOSPC) Bad(sh, "write", errno);
      if (n > 0) {
        // A write of one chunk is all or nothing unless the pool is full.
        const uint64_t expect = off + static_cast<uint64_t>(n);
        if (n != static_cast<ssize_t>(kChunk)) {
          // A short count is only valid when the pool filled up part way:
          // keep what was written, and stop this file here.
          sh->size[i].store(expect);
          sh->full.store(1);
          break;
        }
        sh->size[i].store(expect);
      } else {
        sh->full.store(1);
        break;
      }
    }
    if (close(fd) != 0 && !sh->crashing.load()) Bad(sh, "close", errno);
  }
  // The pool is full (or every file is at its cap): more requests for space,
  // each of which may succeed a little or fail with ENOSPC, until killed.
  for (uint64_t round = 0;; ++round) {
    const int x = static_cast<int>(round % kExtras);
    const std::string xf = root + "/x" + std::to_string(x);
    int fd = open(xf.c_str(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno != ENOSPC) Bad(sh, "create extra", errno);
    } else {
      std::string data = ChunkData(seed, 1000 + x, round, 1 + round % 9000);
      if (write(fd, data.data(), data.size()) < 0 && errno != ENOSPC)
        Bad(sh, "append extra", errno);
      if (fallocate(fd, 0, static_cast<off_t>(round % 7) << 16, 1 << 20) != 0 && errno != ENOSPC)
        Bad(sh, "fallocate", errno);
      if (fsetxattr(fd, "user.fill", data.data(), std::min<size_t>(data.size(), 2000), 0) != 0 &&
          errno != ENOSPC)
        Bad(sh, "setxattr", errno);
      if (close(fd) != 0) Bad(sh, "close extra", errno);
    }
    const std::string d = root + "/d" + std::to_string(x);
    if (mkdir(d.c_str(), 0755) != 0 && errno != ENOSPC && errno != EEXIST) Bad(sh, "mkdir", errno);
    const std::string s = d + "/s";
    if (symlink(std::string(300, 's').c_str(), s.c_str()) != 0 && errno != ENOSPC &&
        errno != EEXIST && errno != ENOENT)
      Bad(sh, "symlink", errno);
  }
}

struct statvfs StatFs(const std::string& root) {
  struct statvfs sv {};
  REQUIRE(statvfs(root.c_str(), &sv) == 0);
  return sv;
}

// Every f<i> holds at least what the filler saw written; past that, only
// what the write in flight may have left (new bytes or zeros).
void CheckFiles(const std::string& root, uint64_t seed, const Shared* sh) {
  const int created = sh->created.load();
  for (int i = 0; i < kFiles; ++i) {
    CAPTURE(i);
    const std::string f = root + "/f" + std::to_string(i);
    struct stat st {};
    const bool exists = stat(f.c_str(), &st) == 0;
    if (i >= created) {
      // Only the create in flight may have happened.
      if (exists) CHECK(i == created);
      continue;
    }
    REQUIRE_MESSAGE(exists, f << " is gone");
    const uint64_t done = sh->size[i].load();
    const std::string data = ReadWhole(f);
    REQUIRE(data.size() == static_cast<size_t>(st.st_size));
    CHECK(data.size() >= done);
    CHECK(data.size() <= done + kChunk);
    bool same = true;
    for (uint64_t off = 0; off < done && same; off += kChunk) {
      const size_t len = std::min<uint64_t>(kChunk, done - off);
      same = data.compare(off, len, ChunkData(seed, i, off, kChunk).substr(0, len)) == 0;
      CHECK_MESSAGE(same, f << ": the chunk at " << off << " differs");
    }
    if (data.size() > done) {
      const std::string next = ChunkData(seed, i, done, kChunk);
      size_t bad = 0;
      for (size_t j = done; j < data.size(); ++j)
        bad += data[j] != '\0' && data[j] != next[j - done];
      CHECK_MESSAGE(bad == 0, f << ": bytes past the last completed write are neither old nor new");
    }
  }
}

void RemoveEverything(const std::string& root) {
  for (int i = 0; i < kFiles; ++i) unlink((root + "/f" + std::to_string(i)).c_str());
  for (int x = 0; x < kExtras; ++x) {
    unlink((root + "/x" + std::to_string(x)).c_str());
    const std::string d = root + "/d" + std::to_string(x);
    unlink((d + "/s").c_str());
    rmdir(d.c_str());
  }
}

// Free blocks come back once the kernel has let go of the unlinked inodes.
struct statvfs WaitForFree(const std::string& root, fsblkcnt_t blocks, fsfilcnt_t inodes) {
  struct statvfs sv = StatFs(root);
  for (int i = 0; i < 300 && (sv.f_bfree < blocks || sv.f_ffree < inodes); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    sv = StatFs(root);
  }
  return sv;
}

void CheckFsck(const TestMount& m) {
  testing::ProcessResult f = m.Fsck(FsckCheckArgs());
  CHECK_MESSAGE(!f.signaled(), f.output);
  CHECK_MESSAGE(f.exit_code == 0, f.output);
}

TEST_SUITE("crash") {
  TEST_CASE("FullPool: SIGKILL while writes fail with ENOSPC loses nothing and leaks nothing") {
    testing::MountOptions mo;
    mo.pool_size = "8M";
    // The smallest initial tables: the first fill raises both marks (the
    // refcount one to the whole table), and every later round runs on them.
    mo.mkfs_args = {"--initial-inodes", "16", "--initial-data", "4M"};
    MountSweeper sweep;
    TestMount m(mo);
    sweep.path = m.mnt();
    const std::string root = m.mnt();
    // The baseline: every inode but the root free, and the root directory
    // with its first block.
    const struct statvfs fresh = StatFs(root);
    {
      const std::string f = root + "/warmup";
      int fd = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
      REQUIRE(fd >= 0);
      close(fd);
      REQUIRE(unlink(f.c_str()) == 0);
    }
    struct statvfs empty = StatFs(root);
    for (int i = 0; i < 300 && empty.f_ffree < fresh.f_ffree; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      empty = StatFs(root);
    }
    REQUIRE(empty.f_ffree == fresh.f_ffree);
    const uint64_t seed = SeedFromEnv(99);
    auto* sh = static_cast<Shared*>(
        mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(sh != MAP_FAILED);

    const int rounds = std::max(3, IterationsFromEnv(40) / 10);
    for (int round = 0; round < rounds; ++round) {
      CAPTURE(round);
      const uint64_t rseed = MixSeed(seed, static_cast<uint64_t>(round));
      new (sh) Shared{};
      std::fflush(nullptr);
      pid_t child = fork();
      REQUIRE(child >= 0);
      if (child == 0) FillerMain(root, rseed, sh);

      // Even rounds: kill while writes already fail. Odd rounds: kill while
      // the pool is filling up (after 60-100% of its capacity was written).
      Rng rng(rseed);
      const bool during_fill = round % 2 == 1;
      const uint64_t target = empty.f_blocks * empty.f_frsize / 100 * rng.Range(60, 100);
      auto written_so_far = [&] {
        uint64_t w = 0;
        for (int i = 0; i < kFiles; ++i) w += sh->size[i].load();
        return w;
      };
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!sh->full.load() && !sh->bad.load() && std::chrono::steady_clock::now() < deadline &&
             !(during_fill && written_so_far() >= target))
        std::this_thread::yield();
      const int delay_us = static_cast<int>(during_fill ? rng.Below(300) : rng.Below(40000));
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
      sh->crashing.store(1);
      m.Kill();
      int status = 0;
      bool hung = true;
      for (int i = 0; i < 1000 && hung; ++i) {
        if (waitpid(child, &status, WNOHANG) == child)
          hung = false;
        else
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (hung) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
      }
      CHECK_MESSAGE(!hung, "the filler did not end within 10 s of the kill");
      REQUIRE_MESSAGE(!sh->bad.load(), sh->bad_what << " failed with " << ErrnoName(sh->bad_errno)
                                                    << " (only ENOSPC is allowed)");
      REQUIRE_MESSAGE((during_fill || sh->full.load()), "the pool never filled up");
      MESSAGE("round " << round << ": killed " << delay_us << " us after "
                       << (during_fill ? std::to_string(target) + " bytes were written"
                                       : std::string("the first ENOSPC"))
                       << ", " << sh->created.load() << " files, " << written_so_far()
                       << " bytes written, full: " << sh->full.load());

      CheckFsck(m);
      const std::string err = MountAndWait(m);
      REQUIRE_MESSAGE(err.empty(), err);
      CHECK_MESSAGE(MountsOn(root) == 1, "the remount left the dead mount under the new one");
      while (MountsOn(root) > 1) {
        // Unstack, so that the next round starts from one mount.
        REQUIRE(m.Unmount() == 0);
        while (MountsOn(root) > 0) DetachMount(root);
        REQUIRE(MountAndWait(m).empty());
      }
      CheckFiles(root, rseed, sh);
      // Room again: everything goes, and exactly the empty pool's space and
      // inodes come back.
      RemoveEverything(root);
      struct statvfs after = WaitForFree(root, empty.f_bfree, empty.f_ffree);
      CHECK(after.f_bfree == empty.f_bfree);
      CHECK(after.f_ffree == empty.f_ffree);
      // And a write works.
      {
        const std::string f = root + "/again";
        int fd = open(f.c_str(), O_CREAT | O_WRONLY, 0644);
        REQUIRE(fd >= 0);
        std::string data = ChunkData(rseed, 77, 0, 1 << 20);
        CHECK(pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
        CHECK(close(fd) == 0);
        CHECK(ReadWhole(f) == data);
        REQUIRE(unlink(f.c_str()) == 0);
      }
      (void)WaitForFree(root, empty.f_bfree, empty.f_ffree);
    }
    REQUIRE(m.Unmount() == 0);
    CheckFsck(m);
    munmap(sh, sizeof(Shared));
    layout::Superblock sb{};
    {
      const int fd = open(m.pool().c_str(), O_RDONLY);
      REQUIRE(fd >= 0);
      REQUIRE(pread(fd, &sb, sizeof(sb), 0) == static_cast<ssize_t>(sizeof(sb)));
      close(fd);
    }
    // 40 files and more: past the first 16 slots; a full pool: every
    // refcount block (2 for 8 MiB).
    CHECK((sb.inode_mark & layout::kMarkValueMask) > 16);
    CHECK((sb.refcount_mark & layout::kMarkValueMask) == 2);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::crashtest
