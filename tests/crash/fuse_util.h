// Helpers shared by the mounted crash tests (tests/support has the rest).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

#include "tests/support/mount.h"

namespace leasefs::crashtest {

// fsck.leasefs arguments that check without writing (env
// LEASEFS_FSCK_CHECK_ARGS, space separated, overrides).
std::vector<std::string> FsckCheckArgs();

// Runs argv with stdout+stderr captured; SIGKILLs it after `limit`.
struct TimedResult {
  testing::ProcessResult r;
  bool timed_out = false;
};
TimedResult RunFor(const std::vector<std::string>& argv, std::chrono::milliseconds limit);

// True if something is mounted on `path` (per /proc/self/mountinfo).
bool IsMounted(const std::string& path);
// How many mounts are stacked on `path`.
int MountsOn(const std::string& path);
// True when a live FUSE daemon answers statfs on `path`. (A dead FUSE mount
// answers ENOTCONN; the bare directory answers with its own type.)
bool FuseAnswers(const std::string& path);

// Mounts `m` again and checks that the new daemon answers. Returns "" or
// why not.
std::string MountAndWait(testing::TestMount& m);

// Detaches every mount on `path` and removes the directory, at the end of a
// test: TestMount cleans up one mount level, not mounts stacked on a dead one.
class MountSweeper {
 public:
  MountSweeper() = default;
  ~MountSweeper();
  MountSweeper(const MountSweeper&) = delete;
  MountSweeper& operator=(const MountSweeper&) = delete;
  std::string path;
};

// fusermount3 -u -z (quietly).
void DetachMount(const std::string& path);

std::string ReadWhole(const std::string& path);
bool WriteWhole(const std::string& path, const std::string& data);
bool CopyWhole(const std::string& from, const std::string& to);

// An empty directory under /tmp, unmounted and removed at the end.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The block maps of every regular file under `root` (LEASEFS_IOC_BMAP),
// checked against each other: the refcount reported for each pool block must
// be exactly the number of extents, across all the files, that map it (a
// block a file maps twice counts twice), and SHARED must be set exactly when
// it is above 1. REQUIRES: nothing else changes the tree meanwhile, and no
// file under `root` is unlinked but still open (its extents would count).
struct SharingReport {
  std::string error;    // "" when every refcount is exact
  uint64_t files = 0;   // regular files (inodes) read
  uint64_t blocks = 0;  // distinct pool blocks mapped
  uint64_t shared = 0;  // of them, mapped by more than one extent
};
SharingReport CheckSharing(const std::string& root);

// The last `n` bytes of `s` (daemon logs can be long).
std::string Tail(const std::string& s, size_t n = 2000);

// Every line of `s` (without the newlines; a last line without one counts).
std::vector<std::string> SplitLines(const std::string& s);

// A leasefs daemon started by hand (`leasefs POOL MNT -f [args]`), for pools
// that TestMount cannot make. Killed, and its mount detached, at the end.
class DaemonProcess {
 public:
  DaemonProcess(const std::string& pool, const std::string& mnt,
                const std::vector<std::string>& extra_args = {});
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  enum class State { kExited, kMounted, kStuck };
  // Waits until the daemon exits or its mount answers, at most `limit`.
  State Await(std::chrono::milliseconds limit);
  // After kExited: how it ended and what it printed.
  const testing::ProcessResult& result() const { return result_; }
  std::string output() const;
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // fusermount3 -u and wait (10 s, then SIGKILL). Returns the exit status
  // (128 + signal if it died of one, -2 if it had to be killed).
  int Unmount();

 private:
  bool Reap(bool block);

  std::string mnt_;
  pid_t pid_ = -1;
  int log_fd_ = -1;
  testing::ProcessResult result_;
};

}  // namespace leasefs::crashtest
