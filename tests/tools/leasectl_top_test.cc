// leasectl top against a real leasefs daemon, run as a real child on a
// pseudo-terminal: the frames it draws while a lease is being broken (the
// countdown goes down from frame to frame), the terminal's modes after q
// exactly as before, the size followed (SIGWINCH), an unprivileged user who
// sees only its own pins, a mount killed or unmounted under it, and the
// plain frame of --once.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;

MountOptions Options(int break_time_s) {
  MountOptions o;
  o.pool_size = "64M";
  o.options = fmt::format("allow_other,lease_break_time={}", break_time_s);
  return o;
}

// "lease N granted: ..." -> N, or 0.
uint64_t GrantedId(const std::string& line) {
  unsigned long long id = 0;
  return std::sscanf(line.c_str(), "lease %llu granted:", &id) == 1 ? id : 0;
}
// "pin N registered: ..." -> N, or 0.
uint64_t PinId(const std::string& line) {
  unsigned long long id = 0;
  return std::sscanf(line.c_str(), "pin %llu registered:", &id) == 1 ? id : 0;
}

bool SameModes(const termios& a, const termios& b) {
  return a.c_iflag == b.c_iflag && a.c_oflag == b.c_oflag && a.c_cflag == b.c_cflag &&
         a.c_lflag == b.c_lflag && std::memcmp(a.c_cc, b.c_cc, sizeof a.c_cc) == 0 &&
         cfgetispeed(&a) == cfgetispeed(&b) && cfgetospeed(&a) == cfgetospeed(&b);
}

// truncate(2) in a process of its own; Wait() gives its errno (0: done).
class Truncater {
 public:
  Truncater(const std::string& path, uint64_t size) {
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) _exit(truncate(path.c_str(), static_cast<off_t>(size)) == 0 ? 0 : errno);
  }
  ~Truncater() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Truncater(const Truncater&) = delete;
  Truncater& operator=(const Truncater&) = delete;
  int Wait() {
    int status = 0;
    REQUIRE(waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
};

// The frames in what top wrote, as lines: each frame from its first row's
// cursor move ("ESC [1;1H") to the next frame or to the return to the main
// screen; a cursor move starts a line, unless only the erase of the rest of
// the screen follows it; other escape sequences (colours) are dropped. A
// frame that may not be complete yet is not returned.
std::vector<std::vector<std::string>> Frames(const std::string& raw) {
  const std::string start = "\x1b[1;1H", leave = "\x1b[?1049l";
  std::vector<std::vector<std::string>> frames;
  for (size_t at = raw.find(start); at != std::string::npos;) {
    size_t next = raw.find(start, at + 1);
    if (next == std::string::npos) next = raw.find(leave, at);
    if (next == std::string::npos) break;
    const std::string f = raw.substr(at, next - at);
    at = raw.find(start, at + 1);
    std::vector<std::string> lines;
    for (size_t i = 0; i < f.size();) {
      if (f[i] != '\x1b' || i + 1 >= f.size() || f[i + 1] != '[') {
        if (!lines.empty()) lines.back() += f[i];
        ++i;
        continue;
      }
      size_t j = i + 2;
      while (j < f.size() && (f[j] < 0x40 || f[j] > 0x7e)) ++j;
      if (j < f.size() && f[j] == 'H' && f.compare(j + 1, 3, "\x1b[J") != 0) lines.emplace_back();
      i = j + 1;
    }
    frames.push_back(lines);
  }
  return frames;
}

// `text`'s lines, without their newlines.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// The words of `line` (split at spaces).
std::vector<std::string> Words(const std::string& line) {
  std::istringstream cells(line);
  std::vector<std::string> words;
  for (std::string w; cells >> w;) words.push_back(w);
  return words;
}

// The line of `frame` that starts with `prefix`, or "".
std::string LineStarting(const std::vector<std::string>& frame, const std::string& prefix) {
  for (const std::string& l : frame)
    if (l.rfind(prefix, 0) == 0) return l;
  return "";
}

// The lines of the section `title` (up to the next empty line).
std::vector<std::string> Section(const std::vector<std::string>& frame, const std::string& title) {
  std::vector<std::string> out;
  auto it = std::find(frame.begin(), frame.end(), title);
  if (it == frame.end()) return out;
  for (++it; it != frame.end() && !it->empty(); ++it) out.push_back(*it);
  return out;
}

// leasectl top as a real child: its session's controlling terminal is a
// new pseudo-terminal, which stdin, stdout and stderr are. This process
// keeps both ends, to read the frames and to look at the slave's modes.
class PtyTop {
 public:
  // Input from a pipe instead of the terminal when `piped_input`: its
  // other end is CloseInput()'s.
  PtyTop(std::vector<std::string> args, unsigned short rows, unsigned short cols, uid_t uid = 0,
         bool piped_input = false) {
    winsize ws{};
    ws.ws_row = rows;
    ws.ws_col = cols;
    REQUIRE(openpty(&master_, &slave_, nullptr, nullptr, &ws) == 0);
    fcntl(master_, F_SETFD, FD_CLOEXEC);
    fcntl(slave_, F_SETFD, FD_CLOEXEC);
    REQUIRE(tcgetattr(slave_, &before_) == 0);
    int input[2] = {-1, -1};
    if (piped_input) REQUIRE(pipe2(input, O_CLOEXEC) == 0);
    args.insert(args.begin(), LeasectlBin());
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      if (setsid() < 0 || ioctl(slave_, TIOCSCTTY, 0) != 0) _exit(125);
      for (int fd = 0; fd < 3; ++fd) dup2(slave_, fd);
      if (piped_input) dup2(input[0], 0);
      if (uid != 0 && (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0))
        _exit(126);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (piped_input) {
      close(input[0]);
      input_ = input[1];
    }
  }
  ~PtyTop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(master_);
    close(slave_);
    CloseInput();
  }
  PtyTop(const PtyTop&) = delete;
  PtyTop& operator=(const PtyTop&) = delete;

  const termios& before() const { return before_; }
  termios Modes() const {
    termios t{};
    REQUIRE(tcgetattr(slave_, &t) == 0);
    return t;
  }
  const std::string& output() const { return out_; }
  std::vector<std::vector<std::string>> frames() const { return Frames(out_); }

  void Send(const std::string& keys) {
    REQUIRE(write(master_, keys.data(), keys.size()) == static_cast<ssize_t>(keys.size()));
  }
  void CloseInput() {
    if (input_ >= 0) close(input_);
    input_ = -1;
  }
  // The terminal's new size: the kernel sends SIGWINCH to top.
  void Resize(unsigned short rows, unsigned short cols) {
    winsize ws{};
    ws.ws_row = rows;
    ws.ws_col = cols;
    REQUIRE(ioctl(master_, TIOCSWINSZ, &ws) == 0);
  }
  // Reads what top writes until `done(frames)` holds; false if that does
  // not happen within 20 s (a failure, not a measurement).
  bool Until(const std::function<bool(const std::vector<std::vector<std::string>>&)>& done) {
    const auto end = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < end) {
      if (Drain(50) && done(frames())) return true;
    }
    return done(frames());
  }
  // Waits (reading on) for top to exit, at most 30 s: its exit status,
  // 128 + signal, or -1.
  int Wait() {
    const auto end = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < end) {
      Drain(10);
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        Drain(0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
    }
    return -1;
  }

 private:
  // Reads what is there, waiting up to timeout_ms for the first byte.
  bool Drain(int timeout_ms) {
    bool got = false;
    for (pollfd p{master_, POLLIN, 0}; poll(&p, 1, got ? 0 : timeout_ms) == 1;) {
      char buf[8192];
      const ssize_t n = read(master_, buf, sizeof buf);
      if (n <= 0) break;
      out_.append(buf, static_cast<size_t>(n));
      got = true;
    }
    return got;
  }

  int master_ = -1;
  int slave_ = -1;
  int input_ = -1;  // the pipe top reads, when it does
  pid_t pid_ = -1;
  termios before_{};
  std::string out_;
};

constexpr const char* kEnter = "\x1b[?1049h\x1b[?25l";
constexpr const char* kLeave = "\x1b[0m\x1b[?25h\x1b[?1049l";

bool EndsWith(const std::string& s, const std::string& end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

// The seconds in "... deadline in 3.250s", or -1.
double Countdown(const std::string& line) {
  const size_t at = line.find("deadline in ");
  double s = -1;
  if (at == std::string::npos || std::sscanf(line.c_str() + at, "deadline in %lfs", &s) != 1)
    return -1;
  return s;
}

TEST_SUITE("leasectl") {
  TEST_CASE("top: a lease being broken counts down frame by frame; q restores the terminal") {
    TestMount m(Options(5));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("abcd"));
    Background hold({"hold", "--ignore-breaks", "--write", f});
    const uint64_t id = GrantedId(hold.Line());
    REQUIRE(id != 0);
    const std::string lease = fmt::format("{} ", id);

    PtyTop top({"top", "--interval", "0.2", m.mnt()}, 60, 200);
    REQUIRE(top.Until([&](const auto& frames) {
      return !frames.empty() &&
             LineStarting(frames.back(), lease).find(" active ") != std::string::npos;
    }));
    // While top runs, its terminal is raw: no echo, no line editing.
    const termios running = top.Modes();
    CHECK((running.c_lflag & (ICANON | ECHO | ISIG)) == 0);
    CHECK(top.output().rfind(kEnter, 0) == 0);
    const std::vector<std::string> first = top.frames().back();
    CHECK(first[0].rfind(m.mnt() + "  ", 0) == 0);
    CHECK(first[0].find("  every 0.2s, q quits") != std::string::npos);
    CHECK(first[1] ==
          "leases 1  pins 0  contexts 0  DAX records 0  quarantined 0 bytes  soft NIC "
          "refusals 0");

    Truncater breaker(f, 0);  // waits for the break: 5 s
    std::vector<double> left;
    REQUIRE(top.Until([&](const auto& frames) {
      left.clear();
      for (const auto& frame : frames) {
        const std::string l = LineStarting(frame, lease);
        if (l.find(" breaking ") != std::string::npos) left.push_back(Countdown(l));
      }
      return left.size() >= 4;
    }));
    const std::vector<std::string> breaking = top.frames().back();
    CHECK(breaking[1].rfind("leases 1 (1 breaking)  ", 0) == 0);
    const std::string row = LineStarting(breaking, lease);
    CHECK(row.find(fmt::format(" {} 0..end ", f)) != std::string::npos);
    CHECK(row.find(" write breaking ") != std::string::npos);
    CHECK(row.find(fmt::format(" {} 0    deadline in ", hold.pid())) != std::string::npos);
    for (size_t i = 0; i < left.size(); ++i) {
      CAPTURE(i);
      CHECK(left[i] >= 0.0);
      CHECK(left[i] <= 5.0);
      if (i > 0) CHECK(left[i] <= left[i - 1]);
    }
    CHECK(left.back() < left.front());
    // The event log's end: the grant, then the break by the truncate.
    const std::vector<std::string> events = Section(breaking, "EVENTS");
    REQUIRE(events.size() == 2);
    CHECK(events[0].find(fmt::format(" #1 grant lease {} ", id)) != std::string::npos);
    CHECK(events[1].find(fmt::format(" #2 break lease {} ", id)) != std::string::npos);

    top.Send("q");
    CHECK(top.Wait() == 0);
    CHECK(EndsWith(top.output(), kLeave));
    CHECK(SameModes(top.Modes(), top.before()));
    CHECK(breaker.Wait() == 0);
    CHECK(hold.Wait() == 1);  // revoked
  }

  TEST_CASE("top: follows the terminal's size (SIGWINCH); lines cut, never wrapped") {
    TestMount m(Options(20));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("ab"));
    Background hold({"hold", f});
    REQUIRE(GrantedId(hold.Line()) != 0);
    PtyTop top({"top", "--interval", "0.2", "--no-color", m.mnt()}, 60, 200);
    REQUIRE(top.Until([](const auto& frames) { return !frames.empty(); }));
    size_t seen = top.frames().size();
    top.Resize(9, 30);
    std::vector<std::string> small;
    REQUIRE(top.Until([&](const auto& frames) {
      for (size_t i = seen; i < frames.size(); ++i) {
        if (frames[i].size() <= 9 && frames[i][0].size() == 30) small = frames[i];
      }
      return !small.empty();
    }));
    REQUIRE(small.size() == 9);
    for (const std::string& l : small) CHECK(l.size() <= 30);
    CHECK(small[1] == "leases 1  pins 0  contexts 0  ");
    CHECK(small[3] == "LEASES");
    CHECK(small[8] == "(4 more lines: the terminal is");
    // --no-color: the cursor moves and erases only, no colours.
    CHECK(top.output().find("\x1b[0m\x1b[") == std::string::npos);
    CHECK(top.output().find("\x1b[7m") == std::string::npos);
    top.Send("Q");
    CHECK(top.Wait() == 0);
    CHECK(SameModes(top.Modes(), top.before()));
  }

  TEST_CASE("top: the end of its input quits it; the terminal as it was") {
    TestMount m(Options(20));
    PtyTop top({"top", "--interval", "0.2", m.mnt()}, 60, 200, 0, true);
    REQUIRE(top.Until([](const auto& frames) { return frames.size() >= 2; }));
    // Its input is no terminal: top leaves the terminal's modes alone.
    CHECK(SameModes(top.Modes(), top.before()));
    top.CloseInput();
    CHECK(top.Wait() == 0);
    CHECK(top.output().rfind(kEnter, 0) == 0);
    CHECK(EndsWith(top.output(), kLeave));
    CHECK(SameModes(top.Modes(), top.before()));
  }

  TEST_CASE("top as uid 65534 on an allow_other mount: its own pin only, and no failure") {
    TestMount m(Options(20));
    const std::string f = m.path("f"), g = m.path("g"), mnt = m.mnt();
    WriteAt(f, 0, Blocks("abcd"));
    WriteAt(g, 0, Blocks("wxyz"));
    REQUIRE(chown(g.c_str(), kNobody, kNobody) == 0);
    Background root_hold({"hold", "--pin", f});
    REQUIRE(GrantedId(root_hold.Line()) != 0);
    const uint64_t root_pin = PinId(root_hold.Line());
    REQUIRE(root_pin != 0);
    Background own_hold({"hold", "--pin", "--range", "0:8K", g}, kNobody);
    const uint64_t own_lease = GrantedId(own_hold.Line());
    const std::string own_line = own_hold.Line();
    const uint64_t own_pin = PinId(own_line);
    REQUIRE_MESSAGE(own_pin != 0, own_line);

    PtyTop top({"top", "--interval", "0.2", mnt}, 60, 200, kNobody);
    REQUIRE(top.Until([](const auto& frames) { return !frames.empty(); }));
    const std::vector<std::string> frame = top.frames().back();
    CHECK(frame[1].rfind("leases 2  pins 1  contexts 1  ", 0) == 0);
    const std::vector<std::string> pins = Section(frame, "PINS");
    REQUIRE(pins.size() == 2);
    CHECK(Words(pins[0]) == std::vector<std::string>{"PIN", "PID", "LEASE", "FILE", "RANGE",
                                                     "PROVIDER", "FLAGS", "OPS", "BYTES"});
    CHECK(Words(pins[1]) == std::vector<std::string>{std::to_string(own_pin),
                                                     std::to_string(own_hold.pid()),
                                                     std::to_string(own_lease), g, "0..8191",
                                                     "softnic", "write,read", "0", "0"});
    // Ctrl-C is a key like q.
    top.Send("\x03");
    CHECK(top.Wait() == 0);
    CHECK(SameModes(top.Modes(), top.before()));

    // The plain frame as that user: the same pin alone.
    const int rc = RunAs(kNobody, kNobody, {}, [&]() {
      const ProcessResult r = Leasectl({"top", "--once", mnt});
      if (r.exit_code != 0) return 2;
      const std::vector<std::string> plain = Section(Lines(r.output), "PINS");
      if (plain.size() != 2) return 3;
      return Words(plain[1]).at(0) == std::to_string(own_pin) ? 0 : 4;
    });
    CHECK(rc == 0);
  }

  TEST_CASE("top: the mount going away ends it with exit 1, the terminal restored") {
    TestMount m(Options(20));
    PtyTop top({"top", "--interval", "0.2", m.mnt()}, 60, 200);
    REQUIRE(top.Until([](const auto& frames) { return !frames.empty(); }));
    std::string why;
    SUBCASE("the daemon killed") {
      m.Kill();
      why = "the mount went away (its daemon is gone: Transport endpoint is not connected)";
    }
    SUBCASE("unmounted") {
      m.Unmount();
      why = "the mount went away (";
    }
    CHECK(top.Wait() == 1);
    CHECK(SameModes(top.Modes(), top.before()));
    // The line comes after the main screen is back, so that it stays.
    const std::string out = top.output();
    const size_t leave = out.rfind(kLeave);
    REQUIRE(leave != std::string::npos);
    CHECK(out.find(fmt::format("leasectl: top: {}: {}", m.mnt(), why), leave) != std::string::npos);
  }

  TEST_CASE("top --once, and top with stdout not a terminal: one plain frame") {
    TestMount m(Options(20));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("abcd"));
    Background hold({"hold", "--write", "--range", "4K:8K", f});
    const uint64_t id = GrantedId(hold.Line());
    REQUIRE(id != 0);
    struct stat st {};
    REQUIRE(stat(f.c_str(), &st) == 0);

    const ProcessResult once = Leasectl({"top", "--once", m.mnt()});
    REQUIRE_MESSAGE(once.exit_code == 0, once.output);
    CHECK(once.output.find('\x1b') == std::string::npos);
    const std::vector<std::string> lines = Lines(once.output);
    REQUIRE(lines.size() == 15);
    CHECK(lines[0].rfind(m.mnt() + "  ", 0) == 0);
    CHECK(lines[0].size() == m.mnt().size() + 2 + 12);  // no status: "HH:MM:SS.mmm"
    CHECK(lines[1] ==
          "leases 1  pins 0  contexts 0  DAX records 0  quarantined 0 bytes  soft NIC refusals 0");
    const std::string ids = std::to_string(id), pid = std::to_string(hold.pid());
    const size_t id_w = std::max<size_t>(2, ids.size()) + 1;
    const size_t pid_w = std::max<size_t>(3, pid.size()) + 1;
    const size_t file_w = f.size() + 1;
    const std::vector<std::string> want = {
        "",
        "LEASES",
        fmt::format("{:<{}}{:<{}}{:<12}{:<6}{:<7}{:<{}}{:<5}BREAK", "ID", id_w, "FILE", file_w,
                    "RANGE", "KIND", "STATE", "PID", pid_w, "PINS"),
        fmt::format("{:<{}}{:<{}}{:<12}{:<6}{:<7}{:<{}}{:<5}-", ids, id_w, f, file_w, "4096..12287",
                    "write", "active", pid, pid_w, "0"),
        "",
        "PINS",
        "no pins",
        "",
        "QUARANTINE",
        "nothing quarantined (DAX records: 0)",
        "",
        "EVENTS",
    };
    CHECK(std::vector<std::string>(lines.begin() + 2, lines.end() - 1) == want);
    CHECK(lines[14].substr(15) == fmt::format(" #1 grant lease {} inode {} bytes 4096..12287 write "
                                              "holder {} by {}",
                                              id, st.st_ino, pid, pid));

    // Not a terminal: the same frame without --once.
    const ProcessResult piped = Leasectl({"top", m.mnt()});
    REQUIRE(piped.exit_code == 0);
    CHECK(piped.output.substr(piped.output.find('\n')) ==
          once.output.substr(once.output.find('\n')));

    const ProcessResult bad = Leasectl({"top", "--once", "/proc"});
    CHECK(bad.exit_code == 1);
    CHECK(bad.output == "leasectl: top: /proc: not a leasefs file\n");
  }
}

}  // namespace
}  // namespace leasefs::testing
