#include "tools/leasectl/scratch_mount.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace leasefs::leasectl {

namespace {

constexpr long kFuseSuperMagic = 0x65735546;

bool Executable(const std::string& p) { return !p.empty() && access(p.c_str(), X_OK) == 0; }

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/'));
}

}  // namespace

std::string ReadWhole(int fd) {
  std::string out;
  char buf[4096];
  for (off_t off = 0;;) {
    const ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

namespace {

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Starts argv with stdout and stderr on `out_fd`, stdin /dev/null, in a
// process group of its own when `own_group`.
pid_t Spawn(const std::vector<std::string>& argv, int out_fd, bool own_group) {
  std::vector<char*> v;
  for (const std::string& a : argv) v.push_back(const_cast<char*>(a.c_str()));
  v.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  if (own_group) {
    setpgid(0, 0);
    // The daemon goes when leasectl goes, however it goes (SIGKILL, a
    // closed pipe): SIGTERM makes it unmount and exit, so no mount and no
    // daemon outlive the run.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
  }
  const int null = open("/dev/null", O_RDONLY);
  if (null >= 0) dup2(null, 0);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  execv(v[0], v.data());
  _exit(127);
}

bool MountAnswers(const std::string& mnt) {
  // statfs reaches the daemon; the FUSE magic means it answered INIT.
  struct statfs sf {};
  return statfs(mnt.c_str(), &sf) == 0 && sf.f_type == kFuseSuperMagic;
}

std::string TempDir() {
  struct stat st {};
  if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
    return "/dev/shm";
  const char* t = getenv("TMPDIR");
  return t != nullptr && *t != '\0' ? t : "/tmp";
}

}  // namespace

std::string FindTool(const std::string& env, const std::string& name) {
  if (const char* e = getenv(env.c_str()); e != nullptr && Executable(e)) return e;
  const std::string dir = SelfDir();
  for (const std::string& p : {dir + "/" + name, dir + "/../fusefs/daemon/" + name,
                               dir + "/../tools/" + name, dir + "/run/" + name})
    if (Executable(p)) return p;
  if (const char* path = getenv("PATH"); path != nullptr) {
    std::string all = path;
    for (size_t at = 0; at <= all.size();) {
      size_t end = all.find(':', at);
      if (end == std::string::npos) end = all.size();
      const std::string p = all.substr(at, end - at) + "/" + name;
      if (end > at && Executable(p)) return p;
      at = end + 1;
    }
  }
  return "";
}

int RunProgram(const std::vector<std::string>& argv, std::string* output) {
  const int fd = memfd_create("leasectl-output", MFD_CLOEXEC);
  if (fd < 0) return -1;
  const pid_t pid = Spawn(argv, fd, false);
  int status = 0;
  if (pid < 0) {
    close(fd);
    return -1;
  }
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (output != nullptr) *output = ReadWhole(fd);
  close(fd);
  return ExitCode(status);
}

ScratchMount::~ScratchMount() { (void)Stop(); }

Status ScratchMount::Start(const std::string& size, const std::string& options) {
  const std::string mkfs = FindTool("MKFS_LEASEFS_BIN", "mkfs.leasefs");
  const std::string daemon = FindTool("LEASEFS_BIN", "leasefs");
  if (mkfs.empty()) return Status::Error(ENOENT, "mkfs.leasefs not found (set MKFS_LEASEFS_BIN)");
  if (daemon.empty()) return Status::Error(ENOENT, "leasefs not found (set LEASEFS_BIN)");
  options_ = options;

  std::string pool_tmpl = TempDir() + "/leasectl-scenario-pool-XXXXXX";
  const int pool_fd = mkstemp(pool_tmpl.data());
  if (pool_fd < 0) return Status::Error(errno, "creating the pool file in " + TempDir());
  close(pool_fd);
  pool_ = pool_tmpl;
  // The mountpoint sits in a directory of mode 0700, so that no other user
  // reaches the mount (root's runs mount with allow_other, for actors of
  // another user, which reach it through a descriptor opened before they
  // change user).
  std::string dir_tmpl = "/tmp/leasectl-scenario-XXXXXX";
  if (mkdtemp(dir_tmpl.data()) == nullptr) return Status::Error(errno, "creating a mountpoint");
  dir_ = dir_tmpl;
  mnt_ = dir_ + "/mnt";
  if (mkdir(mnt_.c_str(), 0755) != 0) return Status::Error(errno, "creating a mountpoint");

  std::string out;
  if (RunProgram({mkfs, "--force", "--quiet", "--size", size, pool_}, &out) != 0)
    return Status::Error(EIO, "mkfs.leasefs failed: " + out);

  const int log_fd = memfd_create("leasefs-daemon-log", MFD_CLOEXEC);
  if (log_fd < 0) return Status::Error(errno, "memfd for the daemon's output");
  std::vector<std::string> argv = {daemon, pool_, mnt_, "-f"};
  if (!options.empty()) argv.insert(argv.end(), {"-o", options});
  pid_ = Spawn(argv, log_fd, true);
  if (pid_ < 0) {
    close(log_fd);
    return Status::Error(errno, "starting leasefs");
  }
  // Up to 10 s for the mount to answer, or for the daemon to give up.
  for (int i = 0; i < 1000; ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      log_ = ReadWhole(log_fd);
      close(log_fd);
      return Status::Error(EIO, "leasefs exited (" + std::to_string(ExitCode(status)) +
                                    ") instead of mounting: " + log_);
    }
    if (MountAnswers(mnt_)) {
      close(log_fd);
      return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  log_ = ReadWhole(log_fd);
  close(log_fd);
  return Status::Error(ETIMEDOUT, "leasefs did not mount within 10 s: " + log_);
}

Status ScratchMount::Stop(std::string* fsck_output) {
  Status result = Status::Ok();
  if (pid_ > 0) {
    std::string out;
    if (RunProgram({"/bin/fusermount3", "-u", "-q", mnt_}, &out) != 0)
      (void)RunProgram({"/bin/fusermount3", "-u", "-z", "-q", mnt_}, &out);
    int status = 0;
    bool gone = false;
    for (int i = 0; i < 1000 && !gone; ++i) {
      gone = waitpid(pid_, &status, WNOHANG) == pid_;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!gone) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      (void)RunProgram({"/bin/fusermount3", "-u", "-z", "-q", mnt_}, &out);
      result = Status::Error(ETIMEDOUT, "leasefs did not exit after the unmount: killed");
    } else if (ExitCode(status) != 0) {
      result = Status::Error(EIO, "leasefs exited with " + std::to_string(ExitCode(status)));
    }
    pid_ = -1;
  }
  if (fsck_output != nullptr && !pool_.empty() && result.ok()) {
    const std::string fsck = FindTool("FSCK_LEASEFS_BIN", "fsck.leasefs");
    if (fsck.empty()) {
      *fsck_output = "fsck.leasefs not found";
    } else if (RunProgram({fsck, pool_}, fsck_output) != 0) {
      result = Status::Error(EIO, "fsck.leasefs found problems");
    }
  }
  if (!mnt_.empty()) {
    rmdir(mnt_.c_str());
    rmdir(dir_.c_str());
    mnt_.clear();
    dir_.clear();
  }
  if (!pool_.empty()) {
    unlink(pool_.c_str());
    pool_.clear();
  }
  return result;
}

}  // namespace leasefs::leasectl
