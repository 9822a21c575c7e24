#include "lease/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
// glibc 2.36's <sys/pidfd.h> lacks extern "C" (fixed in 2.37).
extern "C" {
#include <sys/pidfd.h>
}
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace leasefs::lease {

Result<pid_t> ThreadGroupOf(pid_t tid) {
  if (tid <= 0) return Status::Error(ESRCH, "no thread");
  const std::string path = "/proc/" + std::to_string(tid) + "/status";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return Status::Error(errno == ENOENT ? ESRCH : errno, path);
  }
  // "Tgid:" is the fourth line; the first lines are short.
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return Status::Error(n < 0 && errno == ESRCH ? ESRCH : EIO, path);
  buf[n] = '\0';
  const char* line = std::strstr(buf, "\nTgid:");
  if (line == nullptr) return Status::Error(EIO, path + ": no Tgid");
  const long tgid = std::strtol(line + 6, nullptr, 10);
  if (tgid <= 0) return Status::Error(EIO, path + ": bad Tgid");
  return static_cast<pid_t>(tgid);
}

Result<uint64_t> ProcessStartTicks(pid_t pid) {
  if (pid <= 0) return Status::Error(ESRCH, "no process");
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::Error(errno == ENOENT ? ESRCH : errno, path);
  char buf[1024];
  const ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return Status::Error(n < 0 && errno == ESRCH ? ESRCH : EIO, path);
  buf[n] = '\0';
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // count fields from the last ')'; starttime is field 22, the 20th after it.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return Status::Error(EIO, path + ": no comm");
  for (int field = 2; field < 22 && p != nullptr; ++field) p = std::strchr(p + 1, ' ');
  if (p == nullptr) return Status::Error(EIO, path + ": short");
  char* end = nullptr;
  const unsigned long long ticks = std::strtoull(p + 1, &end, 10);
  if (end == p + 1) return Status::Error(EIO, path + ": bad starttime");
  return static_cast<uint64_t>(ticks);
}

uint64_t BootId() {
  UniqueFd fd(::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return 0;
  char buf[64];
  const ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return 0;
  uint64_t id = 0;
  int digits = 0;
  for (ssize_t i = 0; i < n && digits < 16; ++i) {
    const char c = buf[i];
    int v = -1;
    if (c >= '0' && c <= '9') v = c - '0';
    if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    if (v < 0) continue;  // the dashes
    id = id << 4 | static_cast<uint64_t>(v);
    ++digits;
  }
  return id;
}

Result<UniqueFd> OpenPidfd(pid_t pid) {
  const int fd = pidfd_open(pid, 0);
  if (fd < 0) return Status::FromErrno("pidfd_open");
  return UniqueFd(fd);
}

bool PidfdExited(int pidfd) {
  pollfd p{.fd = pidfd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

namespace {

// The value of field `key` ("Uid", "CapEff") in /proc/<pid>/status: what
// follows its colon on its line; empty if it cannot be read.
std::string StatusField(const std::string& proc_dir, const char* key) {
  UniqueFd fd(::open((proc_dir + "/status").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return {};
  char buf[4096];
  const ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  buf[n] = '\0';
  const std::string needle = std::string("\n") + key + ":";
  const char* at = std::strstr(buf, needle.c_str());
  if (at == nullptr) return {};
  at += needle.size();
  const char* eol = std::strchr(at, '\n');
  return eol != nullptr ? std::string(at, eol) : std::string(at);
}

// Whether the two paths name the same namespace (the same nsfs inode).
bool SameNamespace(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

bool MaySignal(uid_t sender, pid_t pid, int pidfd) {
  if (sender == 0) return true;
  // "Uid:\treal\teffective\tsaved\tfs"
  const std::string uids = StatusField("/proc/" + std::to_string(pid), "Uid");
  unsigned long real = 0, effective = 0, saved = 0;
  if (std::sscanf(uids.c_str(), "%lu %lu %lu", &real, &effective, &saved) != 3) return false;
  if (PidfdExited(pidfd)) return false;  // the pid may name another process now
  return sender == real || sender == saved;
}

bool HasCapability(pid_t tid, int cap) {
  if (tid <= 0 || cap < 0 || cap > 63) return false;
  const std::string dir = "/proc/" + std::to_string(tid);
  if (!SameNamespace(dir + "/ns/user", "/proc/self/ns/user")) return false;
  const std::string eff_text = StatusField(dir, "CapEff");
  char* end = nullptr;
  const unsigned long long eff = std::strtoull(eff_text.c_str(), &end, 16);
  if (end == eff_text.c_str()) return false;
  return ((eff >> cap) & 1) != 0;
}

Status QueueSignal(int pidfd, int signal, uint64_t value) {
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  info.si_signo = signal;
  info.si_code = SI_QUEUE;
  info.si_pid = ::getpid();
  info.si_uid = ::getuid();
  info.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(value));
  if (pidfd_send_signal(pidfd, signal, &info, 0) != 0) {
    return Status::FromErrno("pidfd_send_signal");
  }
  return Status::Ok();
}

}  // namespace leasefs::lease
