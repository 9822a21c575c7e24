// Test support: format a pool, run a real leasefs daemon on it, and always
// clean up (unmount, reap the daemon, delete the pool) even when a test fails
// or the test process is killed by a signal.
//
// Binaries come from the environment meson sets for the test:
//   LEASEFS_BIN, MKFS_LEASEFS_BIN, FSCK_LEASEFS_BIN.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace leasefs::testing {

// Output and exit status of a finished child process.
struct ProcessResult {
  int exit_code = -1;   // valid when !signaled
  int term_signal = 0;  // the signal that ended it, or 0
  std::string output;   // stdout and stderr together
  bool signaled() const { return term_signal != 0; }
};

// Runs argv to completion and captures its output.
ProcessResult Run(const std::vector<std::string>& argv);

// True when this process can mount FUSE filesystems for other users
// (/dev/fuse exists, we are root). Tests exit 77 (meson: skipped) otherwise.
bool CanMountFuse();

// Path of a tool: the environment variable `env`, else `fallback`.
std::string ToolPath(const char* env, const char* fallback);
std::string LeasefsBin();
std::string MkfsBin();
std::string FsckBin();

struct MountOptions {
  std::string pool_size = "256M";      // as mkfs.leasefs --size takes it
  std::vector<std::string> mkfs_args;  // extra mkfs.leasefs arguments
  // -o options for the daemon. allow_other lets tests run as other users.
  std::string options = "allow_other";
  std::string pool_dir = "/dev/shm";
  // An existing pool to format and use (a block device, say) instead of a
  // new file in pool_dir; the fixture does not delete it.
  std::string pool_path;
  // Runs the daemon as this user (and group of the same number) instead of
  // root; it then owns the pool, the mountpoint and the root directory. Such
  // a daemon mounts through fusermount3, so `options` must not ask for
  // allow_other.
  uid_t daemon_uid = 0;
};

// One pool and (while mounted) one daemon serving it.
class TestMount {
 public:
  // Formats a new pool and mounts it. Throws std::runtime_error with the
  // tools' output when either step fails.
  explicit TestMount(MountOptions opts = {});
  ~TestMount();
  TestMount(const TestMount&) = delete;
  TestMount& operator=(const TestMount&) = delete;

  const std::string& mnt() const { return mnt_; }
  const std::string& pool() const { return pool_; }
  // mnt() + "/" + rel
  std::string path(const std::string& rel) const;
  pid_t daemon_pid() const { return pid_; }
  bool mounted() const { return pid_ > 0; }

  // Starts a daemon on the existing pool and waits until the mount answers.
  // Returns false (with the daemon's output in *output) if it exits instead.
  bool Mount(std::string* output = nullptr, const std::string& extra_options = {});
  // fusermount3 -u, then waits for the daemon to exit; returns its exit code
  // (or 128 + signal).
  int Unmount();
  // SIGKILL the daemon and reap it; the dead mount stays until Mount() or
  // the destructor cleans it up.
  void Kill();
  // Runs fsck.leasefs with `args` on the pool (which must not be mounted).
  ProcessResult Fsck(const std::vector<std::string>& args = {}) const;
  // What the current (or last) daemon printed.
  std::string DaemonLog() const;

 private:
  void Cleanup() noexcept;

  MountOptions opts_;
  std::string pool_;
  std::string mnt_;
  pid_t pid_ = -1;
  int log_fd_ = -1;  // daemon's stdout+stderr go to this (unlinked) file
};

// Runs `fn` in a forked child with the given credentials (setgroups, setgid,
// setuid) and returns the child's exit code; 128 + signal if it died. Use it
// for permission tests: the child reports failures via its exit code.
int RunAs(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, const std::function<int()>& fn);

}  // namespace leasefs::testing
