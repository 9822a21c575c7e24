// What the tests of tests/run that run servers in the background share:
// a background process with its output captured, waiting for a TCP
// listener, reading a file's bytes back through FUSE.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "base/unique_fd.h"
#include "tests/support/mount.h"

namespace leasefs::testing {

inline std::string LeasectlBin() { return ToolPath("LEASECTL_BIN", "build/tools/leasectl"); }

// A program run in the background, stdout and stderr in an unlinked file,
// in a process group of its own (killed as one).
class Background {
 public:
  explicit Background(std::vector<std::string> argv) {
    char name[] = "/tmp/leasefs-background-XXXXXX";
    const int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    unlink(name);
    log_ = UniqueFd(fd);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      setpgid(0, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      const int null = open("/dev/null", O_RDONLY);
      dup2(null, 0);
      std::vector<char*> cargv;
      for (std::string& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    setpgid(pid_, pid_);  // as the child does: whichever runs first
  }
  ~Background() { Kill(); }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  // Its exit code (128 + signal), or -1 if it still runs after timeout_s
  // (then it is killed: a hang fails the test instead of stalling it).
  int Wait(int timeout_s = 120) {
    int status = 0;
    for (int waited_ms = 0;; waited_ms += 10) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (r < 0 && errno != EINTR) return -1;
      if (waited_ms >= timeout_s * 1000) {
        Kill();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  bool running() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

  std::string Output() const {
    std::string out;
    char buf[4096];
    for (off_t at = 0;;) {
      const ssize_t n = pread(log_.get(), buf, sizeof buf, at);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      at += n;
    }
    return out;
  }

 private:
  pid_t pid_ = -1;
  UniqueFd log_;
};

// Whether a TCP socket listens at `port` (any local address).
inline bool Listening(uint16_t port) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", port);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, state;
    in >> sl >> local >> remote >> state;
    if (state == "0A" && local.size() > 5 && local.substr(local.size() - 5) == want) return true;
  }
  return false;
}

// Waits (up to 60 s: a readiness wait, not a measurement) for the server.
inline void AwaitListen(Background& server, uint16_t port) {
  for (int i = 0; i < 6000 && !Listening(port); ++i) {
    REQUIRE_MESSAGE(server.running(), server.Output());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE_MESSAGE(Listening(port), server.Output());
}

// A TCP port for the next server: each run its own, so that a listener
// and the previous run's connections never meet.
inline uint16_t NextPort() {
  static uint16_t port = static_cast<uint16_t>(20000 + getpid() % 30000);
  return ++port;
}

inline std::string ReadAt(const std::string& path, off_t offset, size_t len) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.valid());
  std::string out(len, '\0');
  REQUIRE(pread(fd.get(), out.data(), len, offset) == static_cast<ssize_t>(len));
  return out;
}

}  // namespace leasefs::testing
