#include "tests/support/mount.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

namespace leasefs::testing {

namespace {

constexpr decltype(statfs::f_type) kFuseSuperMagic = 0x65735546;

// Mountpoints of this process that are live, for the emergency cleanup.
std::mutex g_mu;
std::set<std::string>* g_live = new std::set<std::string>();  // never freed: used at exit

std::string ReadFd(int fd) {
  std::string out;
  char buf[4096];
  lseek(fd, 0, SEEK_SET);
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> v;
  for (const auto& a : args) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  return v;
}

// Starts argv with stdout/stderr to out_fd (if >= 0), as user `uid` (its
// own group, no supplementary groups) when uid is not 0. Returns the pid.
pid_t Spawn(const std::vector<std::string>& argv, int out_fd, uid_t uid = 0) {
  auto v = Argv(argv);
  pid_t pid = fork();
  if (pid == 0) {
    if (out_fd >= 0) {
      dup2(out_fd, 1);
      dup2(out_fd, 2);
    }
    if (uid != 0 && (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0))
      _exit(126);
    execv(v[0], v.data());
    _exit(127);
  }
  return pid;
}

int WaitStatusCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

bool IsMountpoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // field 5 is the mount point
    size_t pos = 0;
    for (int i = 0; i < 4 && pos != std::string::npos; ++i) pos = line.find(' ', pos + 1);
    if (pos == std::string::npos) continue;
    size_t end = line.find(' ', pos + 1);
    if (line.compare(pos + 1, end - pos - 1, path) == 0) return true;
  }
  return false;
}

void LazyUnmount(const std::string& mnt) {
  pid_t pid = Spawn({"/bin/fusermount3", "-u", "-z", "-q", mnt}, -1);
  if (pid > 0) waitpid(pid, nullptr, 0);
}

void EmergencyCleanup() {
  // Called at exit or from a fatal signal: best effort, no locks.
  if (!g_live) return;
  for (const auto& m : *g_live) LazyUnmount(m);
}

void OnFatalSignal(int sig) {
  EmergencyCleanup();
  signal(sig, SIG_DFL);
  raise(sig);
}

void InstallCleanupOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit(EmergencyCleanup);
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGHUP})
      signal(sig, OnFatalSignal);
  });
}

}  // namespace

ProcessResult Run(const std::vector<std::string>& argv) {
  char tmpl[] = "/tmp/leasefs-run-XXXXXX";
  int fd = mkstemp(tmpl);
  unlink(tmpl);
  ProcessResult r;
  pid_t pid = Spawn(argv, fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  r.output = ReadFd(fd);
  close(fd);
  return r;
}

bool CanMountFuse() { return geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0; }

std::string ToolPath(const char* env, const char* fallback) {
  const char* v = std::getenv(env);
  return v && *v ? v : fallback;
}
std::string LeasefsBin() { return ToolPath("LEASEFS_BIN", "build/fusefs/daemon/leasefs"); }
std::string MkfsBin() { return ToolPath("MKFS_LEASEFS_BIN", "build/tools/mkfs.leasefs"); }
std::string FsckBin() { return ToolPath("FSCK_LEASEFS_BIN", "build/tools/fsck.leasefs"); }

TestMount::TestMount(MountOptions opts) : opts_(std::move(opts)) {
  InstallCleanupOnce();
  if (!opts_.pool_path.empty()) {
    pool_ = opts_.pool_path;
  } else {
    std::string base = opts_.pool_dir + "/leasefs-test-XXXXXX";
    std::vector<char> t(base.begin(), base.end());
    t.push_back('\0');
    int fd = mkstemp(t.data());
    if (fd < 0) throw std::runtime_error("mkstemp: " + std::string(strerror(errno)));
    close(fd);
    pool_ = t.data();
  }
  char mt[] = "/tmp/leasefs-mnt-XXXXXX";
  if (!mkdtemp(mt)) throw std::runtime_error("mkdtemp failed");
  mnt_ = mt;
  chmod(mnt_.c_str(), 0755);

  std::vector<std::string> mkfs = {MkfsBin(), "--force", "--size", opts_.pool_size};
  mkfs.insert(mkfs.end(), opts_.mkfs_args.begin(), opts_.mkfs_args.end());
  if (opts_.daemon_uid != 0) {
    const std::string id = std::to_string(opts_.daemon_uid);
    mkfs.insert(mkfs.end(), {"--root-owner", id + ":" + id});
  }
  mkfs.push_back(pool_);
  ProcessResult r = Run(mkfs);
  if (r.signaled() || r.exit_code != 0) {
    Cleanup();
    throw std::runtime_error("mkfs.leasefs failed: " + r.output);
  }
  std::string out;
  if (!Mount(&out)) {
    Cleanup();
    throw std::runtime_error("leasefs did not mount: " + out);
  }
}

TestMount::~TestMount() { Cleanup(); }

std::string TestMount::path(const std::string& rel) const { return mnt_ + "/" + rel; }

bool TestMount::Mount(std::string* output, const std::string& extra_options) {
  if (pid_ > 0) return true;
  if (log_fd_ >= 0) close(log_fd_);
  char tmpl[] = "/tmp/leasefs-log-XXXXXX";
  log_fd_ = mkstemp(tmpl);
  unlink(tmpl);
  std::string o = opts_.options;
  if (!extra_options.empty()) o += (o.empty() ? "" : ",") + extra_options;
  std::vector<std::string> argv = {LeasefsBin(), pool_, mnt_, "-f"};
  if (!o.empty()) {
    argv.push_back("-o");
    argv.push_back(o);
  }
  {
    std::lock_guard<std::mutex> l(g_mu);
    g_live->insert(mnt_);
  }
  if (opts_.daemon_uid != 0) {
    // The daemon's user must own what it opens and mounts on.
    if (chown(pool_.c_str(), opts_.daemon_uid, opts_.daemon_uid) != 0 ||
        chown(mnt_.c_str(), opts_.daemon_uid, opts_.daemon_uid) != 0) {
      if (output) *output = "chown for the daemon's user: " + std::string(strerror(errno));
      return false;
    }
  }
  pid_ = Spawn(argv, log_fd_, opts_.daemon_uid);
  // Wait for the mount to appear (or the daemon to give up).
  for (int i = 0; i < 1000; ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (output)
        *output = ReadFd(log_fd_) + " (exit " + std::to_string(WaitStatusCode(status)) + ")";
      close(log_fd_);
      log_fd_ = -1;
      return false;
    }
    // statfs always reaches the daemon (stat may be answered from the
    // attribute cache of a dead mount still stacked there), and a FUSE
    // magic means the new daemon answered INIT.
    struct statfs sf {};
    if (IsMountpoint(mnt_) && statfs(mnt_.c_str(), &sf) == 0 && sf.f_type == kFuseSuperMagic)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (output) *output = "timed out waiting for the mount: " + ReadFd(log_fd_);
  Kill();
  return false;
}

int TestMount::Unmount() {
  if (pid_ <= 0) return -1;
  ProcessResult r = Run({"/bin/fusermount3", "-u", mnt_});
  if (r.exit_code != 0) LazyUnmount(mnt_);
  int status = 0;
  // The daemon exits once the kernel tells it the mount is gone.
  for (int i = 0; i < 3000; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return -2;
  }
  return WaitStatusCode(status);
}

void TestMount::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

ProcessResult TestMount::Fsck(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {FsckBin()};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(pool_);
  return Run(argv);
}

std::string TestMount::DaemonLog() const { return log_fd_ >= 0 ? ReadFd(log_fd_) : std::string(); }

void TestMount::Cleanup() noexcept {
  if (pid_ > 0) {
    Unmount();
  }
  if (!mnt_.empty() && IsMountpoint(mnt_)) LazyUnmount(mnt_);
  {
    std::lock_guard<std::mutex> l(g_mu);
    g_live->erase(mnt_);
  }
  if (!mnt_.empty()) rmdir(mnt_.c_str());
  if (!pool_.empty() && opts_.pool_path.empty()) unlink(pool_.c_str());
  if (log_fd_ >= 0) close(log_fd_);
  log_fd_ = -1;
}

int RunAs(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
      _exit(126);
    int rc = fn();
    _exit(rc);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WaitStatusCode(status);
}

}  // namespace leasefs::testing
