#include "tests/tools/tty_run.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <doctest/doctest.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

namespace leasefs::testing {

namespace {

constexpr const char* kErase = "\x1b[K";

// Reads what `fd` has now into *to; false at its end (EOF, or EIO: a
// terminal whose other side every process has closed).
bool Drain(int fd, std::string* to) {
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      to->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;
  }
}

[[noreturn]] void Child(const std::vector<std::string>& argv, Output where, int slave, int out,
                        int err) {
  if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(125);
  dup2(slave, 0);
  dup2(where == Output::kTerminal ? slave : out, 1);
  dup2(where == Output::kPipes ? err : slave, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

TtyRun RunWithOutput(const std::vector<std::string>& argv, Output where, unsigned short columns) {
  winsize ws{};
  ws.ws_row = 24;
  ws.ws_col = columns;
  int master = -1, slave = -1;
  REQUIRE(openpty(&master, &slave, nullptr, nullptr, &ws) == 0);
  termios t{};
  REQUIRE(tcgetattr(slave, &t) == 0);
  t.c_oflag &= ~static_cast<tcflag_t>(OPOST);  // the bytes as written
  REQUIRE(tcsetattr(slave, TCSANOW, &t) == 0);
  int out[2], err[2];
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(pipe2(err, O_CLOEXEC) == 0);
  fcntl(master, F_SETFD, FD_CLOEXEC);
  fcntl(slave, F_SETFD, FD_CLOEXEC);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) Child(argv, where, slave, out[1], err[1]);
  close(slave);
  close(out[1]);
  close(err[1]);
  TtyRun r;
  struct Source {
    int fd;
    std::string* to;
    bool open;
  } sources[] = {{master, &r.terminal, true}, {out[0], &r.out, true}, {err[0], &r.err, true}};
  for (Source& s : sources) fcntl(s.fd, F_SETFL, O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool exited = false;
  // Until the child is gone and every source is at its end (the terminal
  // ends once the child, its only other holder, has exited).
  while (sources[0].open || sources[1].open || sources[2].open) {
    pollfd fds[3];
    for (int i = 0; i < 3; ++i) fds[i] = {sources[i].open ? sources[i].fd : -1, POLLIN, 0};
    poll(fds, 3, 100);
    for (Source& s : sources)
      if (s.open) s.open = Drain(s.fd, s.to);
    if (!exited && waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (!exited && std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      exited = true;
      FAIL("the child ran for more than 120 s: " << argv[0]);
    }
  }
  if (!exited) REQUIRE(waitpid(pid, &status, 0) == pid);
  for (const Source& s : sources) close(s.fd);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

ProgressDraws ParseProgress(const std::string& raw) {
  ProgressDraws d;
  bool drawn = false;
  for (size_t pos = 0; pos < raw.size();) {
    if (raw[pos] != '\r') {
      if (drawn) d.clean = false;
      const size_t next = raw.find('\r', pos);
      d.printed += raw.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
      pos = next == std::string::npos ? raw.size() : next;
      continue;
    }
    if (raw.compare(pos + 1, 3, kErase) == 0) {
      if (!drawn) d.clean = false;
      drawn = false;
      pos += 4;
      continue;
    }
    const size_t end = raw.find(kErase, pos + 1);
    if (end == std::string::npos) {
      d.clean = false;
      d.lines.push_back(raw.substr(pos + 1));
      break;
    }
    const std::string text = raw.substr(pos + 1, end - pos - 1);
    if (text.find_first_of("\r\n") != std::string::npos) d.clean = false;
    d.lines.push_back(text);
    drawn = true;
    pos = end + 3;
  }
  if (drawn) d.clean = false;
  return d;
}

}  // namespace leasefs::testing
