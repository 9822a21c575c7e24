#include "lease/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
// glibc 2.36's <sys/pidfd.h> lacks extern "C" (fixed in 2.37).
extern "C" {
#include <sys/pidfd.h>
}
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

Result<UniqueFd> OpenPidfd(pid_t pid) {
  const int fd = pidfd_open(pid, 0);
  if (fd < 0) return Status::FromErrno("pidfd_open");
  return UniqueFd(fd);
}

bool PidfdExited(int pidfd) {
  pollfd p{.fd = pidfd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

bool MaySignal(uid_t sender, pid_t pid, int pidfd) {
  if (sender == 0) return true;
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  char buf[4096];
  const ssize_t n = ::read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return false;
  buf[n] = '\0';
  // "Uid:\treal\teffective\tsaved\tfs"
  const char* line = std::strstr(buf, "\nUid:");
  if (line == nullptr) return false;
  unsigned long real = 0, effective = 0, saved = 0;
  if (std::sscanf(line + 5, "%lu %lu %lu", &real, &effective, &saved) != 3) return false;
  if (PidfdExited(pidfd)) return false;  // the pid may name another process now
  return sender == real || sender == saved;
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
