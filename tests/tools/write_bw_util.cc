#include "tests/tools/write_bw_util.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace leasefs::testing {
namespace {

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

constexpr const char* kResultLine =
    "---------------------------------------------------------------------------------------";

}  // namespace

std::string WriteBwBin() { return LEASEFS_WRITE_BW_BIN; }

uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot find a free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

WriteBw::WriteBw(std::vector<std::string> args) {
  args.insert(args.begin(), WriteBwBin());
  int o[2], e[2];
  if (pipe2(o, O_CLOEXEC) != 0 || pipe2(e, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork");
  if (pid_ == 0) {
    dup2(o[1], 1);
    dup2(e[1], 2);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(o[1]);
  close(e[1]);
  out_fd_ = o[0];
  err_fd_ = e[0];
}

WriteBw::~WriteBw() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

// Reads what both pipes hold, waiting up to timeout_ms for something.
void WriteBw::Drain(int timeout_ms) {
  pollfd pfd[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  if (poll(pfd, 2, timeout_ms) <= 0) return;
  char buf[4096];
  for (int i = 0; i < 2; ++i) {
    if (pfd[i].revents == 0) continue;
    const ssize_t n = read(pfd[i].fd, buf, sizeof buf);
    if (n > 0) (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
    if (n == 0) {
      close(pfd[i].fd);
      (i == 0 ? out_fd_ : err_fd_) = -1;
    }
  }
}

bool WriteBw::WaitFor(const std::string& text, int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  while (out_.find(text) == std::string::npos) {
    const int64_t left = deadline - NowMs();
    if (left <= 0 || (out_fd_ < 0 && err_fd_ < 0)) return false;
    Drain(static_cast<int>(left));
  }
  return true;
}

int WriteBw::Wait(int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (NowMs() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return -1;
    }
    Drain(20);
  }
  pid_ = -1;
  while (out_fd_ >= 0 || err_fd_ >= 0) Drain(1000);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Pair RunPair(std::vector<std::string> server_args, std::vector<std::string> client_args) {
  const std::string port = std::to_string(FreePort());
  server_args.insert(server_args.end(), {"-p", port});
  client_args.insert(client_args.end(), {"-p", port, "127.0.0.1"});
  Pair p;
  WriteBw server(server_args);
  if (!server.WaitFor(kWaitingBanner)) {
    p.server_status = server.Wait(5000);
    p.server_out = server.out();
    p.server_err = server.err();
    return p;
  }
  WriteBw client(client_args);
  p.client_status = client.Wait();
  p.server_status = server.Wait(15000);
  p.server_out = server.out();
  p.server_err = server.err();
  p.client_out = client.out();
  p.client_err = client.err();
  return p;
}

std::vector<ParsedRow> ResultRows(const std::string& out, bool gbits, bool* well_formed) {
  const std::string header =
      gbits ? " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]"
            : " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]";
  std::vector<ParsedRow> rows;
  *well_formed = false;
  std::istringstream in(out);
  std::string line;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (!in_table) {
      in_table = line == header;
      continue;
    }
    if (line == kResultLine) {
      *well_formed = true;
      break;
    }
    ParsedRow r;
    r.text = line;
    unsigned long size = 0, iters = 0;
    if (std::sscanf(line.c_str(), "%lu %lu %lf %lf %lf", &size, &iters, &r.peak, &r.avg,
                    &r.rate) != 5) {
      return rows;
    }
    r.size = size;
    r.iterations = iters;
    char again[256];
    std::snprintf(again, sizeof again, " %-7lu    %-10lu       %-7.2lf            %-7.2lf\t\t   %-7.6lf",
                  size, iters, r.peak, r.avg, r.rate);
    if (line != again) return rows;
    rows.push_back(r);
  }
  return rows;
}

}  // namespace leasefs::testing
