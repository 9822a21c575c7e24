// Shared pieces of the mounted POSIX suite (tests/fuse/*_test.cc).
//
// Every test runs against a TestFs: a freshly formatted and mounted leasefs
// pool, or, in reference mode, a fresh directory on the filesystem named by
// LEASEFS_TEST_REFERENCE_DIR (tmpfs, ext4, xfs, ...). Reference mode is how
// the suite's own expectations are checked against the kernel's filesystems:
// every assertion that holds there is "what a local Linux filesystem does".
//
// Environment:
//   LEASEFS_TEST_REFERENCE_DIR  run against this directory instead of leasefs
//   LEASEFS_TEST_MOUNT_OPTIONS  extra -o options for the daemon (e.g.
//                               "default_permissions"), appended to
//                               allow_other
//   LEASEFS_BIN, MKFS_LEASEFS_BIN, FSCK_LEASEFS_BIN  see tests/support/mount.h
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/types.h>

#include "tests/support/mount.h"

namespace leasefs::testing {

// --- Syscall results as text -------------------------------------------------

// "OK" when rc != -1, else the name of errno ("EEXIST"). Reads errno first
// thing, so pass the syscall's result straight in: Err(mkdir(...)).
std::string Err(long rc);
// The name of an errno value ("ENOENT"), or "errno N".
std::string ErrnoName(int e);

// SYS(expr) is Err(expr) with errno cleared first; compare it with the
// expected name so a failure prints both: CHECK(SYS(rmdir(p)) == "ENOTEMPTY").
#define SYS(expr) ::leasefs::testing::Err((errno = 0, static_cast<long>(expr)))

// --- Where the tests run -------------------------------------------------------

// True when LEASEFS_TEST_REFERENCE_DIR is set (and not empty).
bool ReferenceMode();
// The -o options every test mount gets: allow_other plus
// LEASEFS_TEST_MOUNT_OPTIONS.
std::string TestMountOptions();

struct FsOptions {
  std::string pool_size = "256M";      // mkfs.leasefs --size
  std::vector<std::string> mkfs_args;  // e.g. {"-N", "32"}
  // Reference mode: when ref_tmpfs_bytes is non-zero the test gets a private
  // tmpfs of that size (and ref_tmpfs_inodes inodes, if non-zero) instead of
  // a directory of the reference filesystem. Used by the ENOSPC tests, which
  // need a filesystem they can fill.
  uint64_t ref_tmpfs_bytes = 0;
  uint64_t ref_tmpfs_inodes = 0;
  // Extra -o options for this test's mount, after TestMountOptions(). In
  // reference mode the test gets a private tmpfs mounted with them instead,
  // as mount(8) would pass them; only the atime options are known there
  // (noatime, relatime, strictatime, nodiratime, lazytime).
  std::string mount_options;
};

// One test's filesystem. Throws std::runtime_error if it cannot be set up.
class TestFs {
 public:
  explicit TestFs(FsOptions opts = {});
  ~TestFs();
  TestFs(const TestFs&) = delete;
  TestFs& operator=(const TestFs&) = delete;

  bool reference() const { return mount_ == nullptr; }
  // The test's top directory: the mount root, or a fresh 0755 directory.
  const std::string& root() const { return root_; }
  // root() + "/" + rel
  std::string path(const std::string& rel) const;
  // The leasefs mount (nullptr in reference mode).
  TestMount* mount() { return mount_.get(); }

  // leasefs: unmounts (the daemon must exit 0) and mounts the same pool
  // again. Reference mode: does nothing (a plain directory cannot be
  // remounted; the persistence checks then only validate themselves).
  // Returns "" on success, else what went wrong.
  std::string Remount();
  // leasefs: unmounts, runs fsck.leasefs, mounts again. Returns "" when the
  // daemon exited 0 and fsck exited 0, else the exit codes and output.
  // Reference mode: "".
  std::string UnmountFsckRemount();

 private:
  std::unique_ptr<TestMount> mount_;
  std::string root_;
  std::string ref_dir_;    // reference mode: directory to delete
  std::string tmpfs_mnt_;  // reference mode: private tmpfs to unmount
};

// Tests whose expectation is specific to leasefs (a documented limit, a
// not-yet-implemented feature) call this first: in reference mode it logs why
// and returns from the test case.
#define LEASEFS_ONLY(fs, why)                       \
  do {                                              \
    if ((fs).reference()) {                         \
      MESSAGE("reference mode: skipped (" why ")"); \
      return;                                       \
    }                                               \
  } while (0)

// True when the test mount leaves permission checks to the daemon alone: its
// options end with no_default_permissions (the later of the two wins).
// Always false in reference mode.
bool DaemonChecksAlone(const TestFs& fs);

// Reference mode: the reference filesystem's type ("tmpfs", "ext4", "xfs",
// or the f_type number); "leasefs" otherwise.
std::string FsType(const TestFs& fs);

// Tests that only some filesystems agree with (a limit ext4 shares with
// leasefs, say) run in reference mode only on those: `types` is a list like
// "ext4" or "ext4,xfs".
bool FsTypeIn(const TestFs& fs, const std::string& types);
#define LEASEFS_AND_REFERENCE(fs, types, why)                               \
  do {                                                                      \
    if ((fs).reference() && !FsTypeIn((fs), (types))) {                     \
      MESSAGE("reference mode on " << FsType(fs) << ": skipped (" why ")"); \
      return;                                                               \
    }                                                                       \
  } while (0)

// --- Files ----------------------------------------------------------------------

// Writes all of `data` at `off` (pwrite loop); "" or an error description.
std::string PwriteAll(int fd, const std::string& data, off_t off);
// Reads up to `len` bytes at `off` (pread loop until EOF or len).
std::string PreadAll(int fd, size_t len, off_t off);
// Creates/truncates `path` with `mode` and writes `data`. Returns "" or error.
std::string WriteFile(const std::string& path, const std::string& data, mode_t mode = 0644);
// Whole content of `path` (empty string and *ok=false on error).
std::string ReadFile(const std::string& path, bool* ok = nullptr);
// lstat that returns the struct (zeroed with st_ino == 0 on error).
struct stat Lstat(const std::string& path);
struct stat Stat(const std::string& path);
// Names in a directory (without "." and ".."), sorted.
std::vector<std::string> ListDir(const std::string& path);
// "" when `got` == `want`, else their sizes and the first differing byte:
// use it for large contents, so a failure does not print megabytes.
std::string Diff(const std::string& got, const std::string& want);
// `n` deterministic pseudo-random bytes from `seed`.
std::string Pattern(size_t n, uint64_t seed);
// 64-bit FNV-1a of `data` (for comparing large contents).
uint64_t Fnv1a(const std::string& data, uint64_t h = 1469598103934665603ull);
int64_t Nanos(const struct timespec& ts);
// Sleeps long enough that the next timestamp the kernel takes differs from
// the last one (coarse clocks tick at least every 10 ms).
void TickClock();

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  // Closes now; returns close()'s result as Err() text.
  std::string Close();

 private:
  int fd_ = -1;
};

// --- Running as another user ---------------------------------------------------

// Collects failed expectations inside a forked child (doctest's own checks
// would be lost with the child's memory).
class ChildChecks {
 public:
  // Records a failure unless actual == expected.
  void Eq(const std::string& actual, const std::string& expected, const char* what, int line);
  void True(bool ok, const char* what, int line);
  const std::string& failures() const { return failures_; }

 private:
  std::string failures_;
};
#define KSYS(k, expr, want) (k).Eq(SYS(expr), (want), #expr, __LINE__)
#define KEQ(k, actual, want) (k).Eq((actual), (want), #actual, __LINE__)
#define KTRUE(k, cond) (k).True((cond), #cond, __LINE__)

// Runs `fn` in a child with the given credentials and umask 022 and returns
// its failures ("" if none). A child that cannot switch credentials or dies
// is a failure too.
std::string AsUser(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                   const std::function<void(ChildChecks&)>& fn);

// Runs fn(i, k) in one child per uids[i] (its gid the same number, no
// supplementary groups), all at once, and returns each child's failures.
// Use it rather than AsUser from several threads: a child forked while
// another thread of the test holds an allocator lock (the sanitizer build's
// allocator does not take its locks around fork) waits for it forever.
std::vector<std::string> AsUsersAtOnce(const std::vector<uid_t>& uids,
                                       const std::function<void(size_t, ChildChecks&)>& fn);

// Runs AsUser(uid, gid, groups, fn) and fails the test with the child's
// failures, if any. `groups` must not contain a top-level comma: use {} or {g}.
#define CHECK_AS(uid, gid, groups, ...)                                \
  do {                                                                 \
    const std::string as_user_failures_ =                              \
        ::leasefs::testing::AsUser((uid), (gid), groups, __VA_ARGS__); \
    CHECK_MESSAGE(as_user_failures_.empty(), as_user_failures_);       \
  } while (0)

// --- main ------------------------------------------------------------------------

// --- Children driven by the test ------------------------------------------------

// A child process the test drives with one-line commands over a socket pair
// (a lease holder, a DAX mapping holder...). The child runs `body` with its
// end of the socket and exits with what it returns; it answers each command
// with one line (SayLine), the first one unasked, to say it is ready, and
// returns when it reads "exit" or the socket closes.
class CommandedChild {
 public:
  explicit CommandedChild(const std::function<int(int sock)>& body);
  // Sends "exit", waits up to 2 s for the child, then SIGKILLs it.
  ~CommandedChild();
  CommandedChild(const CommandedChild&) = delete;
  CommandedChild& operator=(const CommandedChild&) = delete;

  pid_t pid() const { return pid_; }  // -1 once reaped
  // Sends one command; returns its one-line answer ("TIMEOUT" if none comes
  // in time, "EOF" if the child closed the socket).
  std::string Ask(const std::string& cmd, int timeout_ms = 20000) {
    Send(cmd);
    return Reply(timeout_ms);
  }
  // Sends a command without waiting for its answer (Reply() reads it).
  void Send(const std::string& cmd);
  std::string Reply(int timeout_ms);
  // SIGKILL, and reap it.
  void Kill();

 private:
  void Reap(int timeout_ms);
  pid_t pid_ = -1;
  int sock_ = -1;
};

// The child's side: one answer line; and the next command line (false at
// the end of the socket).
void SayLine(int sock, const std::string& line);
bool ReadLine(int sock, std::string* line);

// The main of every posix_* binary: exits 77 (skipped) when neither reference
// mode nor a FUSE mount is possible, else runs doctest.
int RunPosixSuite(int argc, char** argv);

}  // namespace leasefs::testing
