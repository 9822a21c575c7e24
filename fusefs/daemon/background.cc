#include "fusefs/daemon/background.h"

#include <fcntl.h>
#include <fuse_log.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>

namespace leasefs::daemon {

namespace {

// Parent side: exits with what the child reports.
[[noreturn]] void WaitForChild(pid_t child, UniqueFd ready_read) {
  char byte = 0;
  ssize_t n;
  do {
    n = read(ready_read.get(), &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n == 1) _exit(0);
  // The pipe closed without a byte: the child exited (or died) before Ready.
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

}  // namespace

Result<Background> Background::Start() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno("pipe");
  UniqueFd rd(fds[0]), wr(fds[1]);
  const pid_t pid = fork();
  if (pid < 0) return Status::FromErrno("fork");
  if (pid > 0) {
    wr.reset();
    WaitForChild(pid, std::move(rd));
  }
  rd.reset();
  setsid();
  return Background(std::move(wr));
}

namespace {

// What the daemon logs once it is in the background (a refused command, say)
// goes to syslog, since its stderr is gone.
void ToSyslog(enum fuse_log_level level, const char* fmt, va_list ap) {
  vsyslog(static_cast<int>(level), fmt, ap);
}

}  // namespace

void Background::Ready() {
  openlog("leasefs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  fuse_set_log_func(ToSyslog);
  // Nothing may write to the caller's terminal after its command returned.
  if (chdir("/") != 0) {
    // Keeping the old directory only pins it; not a reason to fail.
  }
  const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO) close(null);
  }
  const char byte = 1;
  while (write(ready_.get(), &byte, 1) < 0 && errno == EINTR) {
  }
  ready_.reset();
}

}  // namespace leasefs::daemon
