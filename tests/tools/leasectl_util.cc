#include "tests/tools/leasectl_util.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/unique_fd.h"

namespace leasefs::testing {

namespace {

[[noreturn]] void Throw(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

std::string LeasectlBin() { return ToolPath("LEASECTL_BIN", "build/tools/leasectl"); }

ProcessResult Leasectl(std::vector<std::string> args) {
  args.insert(args.begin(), LeasectlBin());
  return Run(args);
}

Background::Background(std::vector<std::string> args, uid_t uid) {
  args.insert(args.begin(), LeasectlBin());
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  pid_ = fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    dup2(p[1], 1);
    dup2(p[1], 2);
    if (uid != 0 && (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0))
      _exit(126);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(p[1]);
  out_ = p[0];
}

Background::~Background() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  close(out_);
}

std::string Background::Line(int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string line;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{out_, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return "TIMEOUT";
    char c;
    if (read(out_, &c, 1) != 1) return "EOF";
    if (c != '\n') {
      line += c;
      continue;
    }
    // "HH:MM:SS.mmm " is 13 characters.
    if (line.size() > 13 && line[2] == ':' && line[8] == '.' && line[12] == ' ')
      return line.substr(13);
    return line;
  }
}

void Background::Kill() {
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int Background::Wait() {
  int status = 0;
  for (int i = 0; i < 3000; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    usleep(10000);
  }
  return -1;
}

std::string Blocks(const std::string& letters) {
  std::string s;
  for (char c : letters) s.append(kBlock, c == '0' ? '\0' : c);
  return s;
}

void WriteAt(const std::string& path, uint64_t offset, const std::string& data) {
  const UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) Throw("open", path);
  if (pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(offset)) !=
      static_cast<ssize_t>(data.size()))
    Throw("pwrite", path);
}

std::string ReadAll(const std::string& path) {
  const UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) Throw("open", path);
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0) Throw("read", path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

uint64_t SizeOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) Throw("stat", path);
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace leasefs::testing
