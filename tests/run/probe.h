// A probe program run under leasefs-run with a pipe each way, for the tests
// of tests/run: the test reads the lines it prints and tells it to go on,
// acting as "another process" in between. Also what those tests share: the
// programs' paths, the mount, the files they start from.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "base/unique_fd.h"
#include "tests/support/mount.h"

namespace leasefs::testing {

class Probe {
 public:
  // Runs `run_bin` (leasefs-run) `bin` `args`...
  Probe(const std::string& run_bin, const std::string& bin, const std::vector<std::string>& args) {
    int in[2], out[2];
    REQUIRE(pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      std::vector<std::string> argv = {run_bin, bin};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> cargv;
      for (std::string& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to_ = UniqueFd(in[1]);
    from_ = UniqueFd(out[0]);
  }
  ~Probe() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      Wait();
    }
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  pid_t pid() const { return pid_; }

  // The next line the probe prints ("" at end of file or after 30 s).
  std::string Line() {
    std::string line;
    char c;
    while (true) {
      pollfd p{from_.get(), POLLIN, 0};
      if (poll(&p, 1, 30000) != 1 || read(from_.get(), &c, 1) != 1) return line;
      if (c == '\n') return line;
      line += c;
    }
  }
  void Go() { REQUIRE(write(to_.get(), "go\n", 3) == 3); }
  // Its exit code (128 + signal if it died).
  int Wait() {
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  UniqueFd to_, from_;
};

inline std::string RunBin() { return ToolPath("LEASEFS_RUN_BIN", "build/tools/run/leasefs-run"); }
inline std::string ProbeBin() { return ToolPath("DAX_PROBE_BIN", "build/tests/run/dax_probe"); }

// The mount of the tests of tests/run: others may open its files, and a
// lease nobody releases is revoked after 10 s.
inline MountOptions RunMountOptions() {
  MountOptions o;
  o.pool_size = "64M";
  o.options = "allow_other,lease_break_time=10";
  return o;
}

// dax_probe under leasefs-run.
class DaxProbe : public Probe {
 public:
  explicit DaxProbe(const std::vector<std::string>& args) : Probe(RunBin(), ProbeBin(), args) {}
};

// A file of `size` bytes of `fill` at `path`, mode 0666.
inline void MakeFile(const std::string& path, size_t size, char fill) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  REQUIRE(fd.valid());
  const std::string data(size, fill);
  REQUIRE(write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
}

}  // namespace leasefs::testing
