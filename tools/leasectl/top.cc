// leasectl top: a live view of a mount in the terminal (plain ANSI escape
// sequences and termios, so that it works over ssh), or one frame as plain
// text. What it shows is gathered by top_watch.cc and laid out by
// top_format.cc; this file drives the terminal.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/top_format.h"
#include "tools/leasectl/top_watch.h"
#include "tools/leasectl/text.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace top_cmd {

constexpr const char* kManPage =
    R"man(leasectl top - watch a leasefs mount live: leases, breaks, pins, quarantine

SYNOPSIS
  leasectl top [--interval SECONDS] [--once] [--no-color] PATH

DESCRIPTION
  Shows the mount that PATH (any file or directory on it) belongs to, in the
  whole terminal, looking again every 0.5 s (--interval):

    /mnt/pmem  12:00:03.456  every 0.5s, q quits
    leases 2 (1 breaking)  pins 1  contexts 1  DAX records 1  quarantined 0 bytes  soft NIC refusals 0

    LEASES
    ID FILE        RANGE   KIND          STATE    PID  PINS BREAK
    7  /mnt/pmem/a 0..end  read          active   1234 0    -
    9  /mnt/pmem/f 0..4095 write         breaking 1240 1    deadline in 3.250s

    PINS
    PIN PID  LEASE FILE        RANGE   PROVIDER FLAGS             OPS BYTES
    3   1240 9     /mnt/pmem/f 0..4095 softnic  fenced,write,read 4   16384

    QUARANTINE
    nothing quarantined (DAX records: 1)

    EVENTS
    12:00:01.250112 #1 grant lease 7 inode 12 bytes 0..end read holder 1234 by 1234
    ...

  The header counts the leases (and those breaking), the pins and pin
  contexts the caller may see, the DAX records and the bytes in quarantine,
  and the operations the soft NIC refused. LEASES is `leasectl leases`
  with the pins counted on each lease; a lease being broken shows the time
  left before the daemon revokes it (its break_deadline against
  CLOCK_MONOTONIC), counting down. PINS is `leasectl pins` (the caller's own
  pins unless root): fenced, write, read, closed; OPS and BYTES are what the
  soft NIC served. QUARANTINE lists the DAX runs with blocks no file owns
  (`leasectl dax`) and the total. EVENTS is the end of `leasectl events`,
  as many lines as fit. A file's path is where the lease's holder or the
  pin's creator has it open, else where a walk of the mount met it, else
  "inode N".

  q, Q or Ctrl-C (or the end of the input) quits and puts the terminal back
  as it was. Lines are cut at the terminal's width, the frame at its
  height; it follows the terminal's size. Colour marks breaking leases and
  quarantined runs (yellow), revoked leases and fenced pins (red);
  --no-color, or NO_COLOR in the environment, turns it off.

  When standard output is not a terminal, or with --once, it prints one
  frame as plain text (no escape sequences; not cut; the last 10 events)
  and exits: for scripts.

  A mount that goes away while top watches it (its daemon killed,
  unmounted) ends top with "the mount went away" and exit status 1. A
  daemon that stops answering is shown as such in the first line; q still
  quits.

EXIT STATUS
  0 quit, or the frame printed; 1 PATH cannot be opened or is not on
  leasefs, or the mount went away; 2 usage error; 128 + N after signal N
  (SIGINT, SIGTERM, SIGHUP, SIGQUIT from outside).)man";

struct Args {
  std::string path;
  double interval = 0.5;
  bool once = false;
  bool no_color = false;
};

// Events in a plain frame.
constexpr size_t kPlainEvents = 10;

uint64_t Now(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

// --- the terminal ------------------------------------------------------------------

// Writes all of `s`; false when the terminal is gone.
bool WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, 1000);
      continue;
    }
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The terminal while top draws on it: the input without echo, line editing
// or signal keys (Ctrl-C arrives as a byte), the alternate screen, the
// cursor hidden. Leave() (or the destructor) puts back exactly what was
// there: the saved termios, the cursor, the main screen.
class Terminal {
 public:
  Terminal() = default;
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;
  ~Terminal() { Leave(); }

  // Returns false when standard input is a terminal whose modes cannot be
  // set (nothing changed then).
  bool Enter() {
    if (isatty(STDIN_FILENO)) {
      if (tcgetattr(STDIN_FILENO, &saved_) != 0) return false;
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG | IEXTEN);
      raw.c_cc[VMIN] = 1;
      raw.c_cc[VTIME] = 0;
      if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) != 0) return false;
      modes_saved_ = true;
    }
    entered_ = true;
    WriteAll(STDOUT_FILENO, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
    return true;
  }

  void Leave() {
    if (!entered_) return;
    entered_ = false;
    WriteAll(STDOUT_FILENO, "\x1b[0m\x1b[?25h\x1b[?1049l");
    if (modes_saved_) tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_);
    modes_saved_ = false;
  }

 private:
  bool entered_ = false;
  bool modes_saved_ = false;
  termios saved_{};
};

struct ScreenSize {
  size_t rows = 24;
  size_t cols = 80;
};

ScreenSize SizeOf(int fd) {
  winsize ws{};
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
    return {ws.ws_row, ws.ws_col};
  return {};
}

const char* Sgr(TopStyle style) {
  switch (style) {
    case TopStyle::kBanner:
      return "\x1b[7m";
    case TopStyle::kTitle:
      return "\x1b[1m";
    case TopStyle::kColumns:
      return "\x1b[4m";
    case TopStyle::kBreaking:
      return "\x1b[33m";
    case TopStyle::kAlarm:
      return "\x1b[1;31m";
    case TopStyle::kPlain:
      break;
  }
  return "";
}

// The frame as escape sequences: each line at its row's start over an
// erased row (no newlines: nothing scrolls, and a line as wide as the
// terminal does not wrap), the rows below erased.
std::string Frame(const std::vector<TopLine>& lines, size_t rows, bool color) {
  std::string s;
  for (size_t i = 0; i < lines.size(); ++i) {
    s += fmt::format("\x1b[{};1H\x1b[2K", i + 1);
    const char* sgr = color ? Sgr(lines[i].style) : "";
    s += *sgr != '\0' ? sgr + lines[i].text + "\x1b[0m" : lines[i].text;
  }
  if (lines.size() < rows) s += fmt::format("\x1b[{};1H\x1b[J", lines.size() + 1);
  return s;
}

// --- signals -----------------------------------------------------------------------

volatile sig_atomic_t g_quit_signal = 0;
volatile sig_atomic_t g_resized = 0;

void OnSignal(int sig) {
  if (sig == SIGWINCH)
    g_resized = 1;
  else
    g_quit_signal = sig;
}

// Blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGWINCH, which only
// wait_mask() lets in (ppoll), with handlers that set the flags above; so
// no signal is lost between a check of the flags and the wait, and the look
// thread (started later, inheriting the mask) gets none. For the rest of the
// process: top is the last thing leasectl does.
class Signals {
 public:
  Signals() {
    sigset_t ours;
    sigemptyset(&ours);
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) {
      sigaddset(&ours, sig);
      sigaction(sig, &sa, nullptr);
    }
    pthread_sigmask(SIG_BLOCK, &ours, &wait_mask_);
    for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) sigdelset(&wait_mask_, sig);
  }
  const sigset_t* wait_mask() const { return &wait_mask_; }

 private:
  sigset_t wait_mask_;
};

// --- the looks, in a thread ----------------------------------------------------------

struct Looked {
  int err = 0;
  TopData data;
};

// Looks at the mount in a thread of its own, one look per Request(), so
// that keys are read and the terminal is drawn while the daemon takes its
// time (a stopped daemon holds a FUSE request as long as it is stopped).
class Looker {
 public:
  explicit Looker(TopWatcher watcher)
      : watcher_(std::move(watcher)),
        request_(eventfd(0, EFD_CLOEXEC)),
        ready_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        done_(eventfd(0, EFD_CLOEXEC)) {}
  Looker(const Looker&) = delete;
  Looker& operator=(const Looker&) = delete;
  // REQUIRES: not started, or Finish() returned true.
  ~Looker() = default;

  // Starts the thread. Returns 0 or an errno value.
  int Start() {
    if (!request_.valid() || !ready_.valid() || !done_.valid()) return EMFILE;
    try {
      thread_ = std::thread([this] { Loop(); });
    } catch (const std::system_error& e) {
      return e.code().value();
    }
    return 0;
  }
  // Readable when a look is done.
  int ready_fd() const { return ready_.get(); }
  // Starts a look. REQUIRES: the one before was taken.
  void Request() { Poke(request_.get()); }
  // The look that made ready_fd readable.
  Looked Take() EXCLUDES(mu_) {
    uint64_t v = 0;
    (void)!read(ready_.get(), &v, sizeof v);
    MutexLock l(&mu_);
    return std::move(looked_);
  }
  // Ends the thread. True when it ended within timeout_ms; false when it is
  // still inside a look (the caller must then end the process without
  // destroying this).
  bool Finish(int timeout_ms) {
    stop_ = true;
    Poke(request_.get());
    pollfd p{done_.get(), POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return false;
    thread_.join();
    return true;
  }

 private:
  static void Poke(int fd) {
    const uint64_t one = 1;
    (void)!write(fd, &one, sizeof one);
  }

  void Loop() EXCLUDES(mu_) {
    for (;;) {
      uint64_t v = 0;
      if (read(request_.get(), &v, sizeof v) < 0 && errno == EINTR) continue;
      if (stop_) break;
      Looked looked;
      try {
        looked.err = watcher_.Look(&looked.data);
      } catch (const std::bad_alloc&) {
        looked.err = ENOMEM;
      } catch (const std::exception&) {  // never out of the thread: that would abort
        looked.err = EIO;                // with the terminal still raw
      }
      {
        MutexLock l(&mu_);
        looked_ = std::move(looked);
      }
      Poke(ready_.get());
    }
    Poke(done_.get());
  }

  TopWatcher watcher_;  // the thread's alone
  const UniqueFd request_, ready_, done_;
  std::atomic<bool> stop_{false};
  Mutex mu_;
  Looked looked_ GUARDED_BY(mu_);
  std::thread thread_;
};

// --- the two ways to show it ---------------------------------------------------------

int RunOnce(const TopData& data) {
  TopView view;
  view.max_events = kPlainEvents;
  view.monotonic_ns = Now(CLOCK_MONOTONIC);
  view.realtime_ns = Now(CLOCK_REALTIME);
  for (const TopLine& l : FormatTop(data, view)) fmt::print("{}\n", l.text);
  return kExitOk;
}

// The live view's state between waits.
class Live {
 public:
  Live(const Args& a, TopData first)
      : args_(a),
        interval_ns_(static_cast<uint64_t>(a.interval * 1e9)),
        color_(!a.no_color && (getenv("NO_COLOR") == nullptr || *getenv("NO_COLOR") == '\0')),
        data_(std::move(first)) {}

  // Until a key, a signal, the end of the input or a failed look ends it:
  // the exit status; *lost says why the mount could not be watched any more.
  int Run(Looker& looker, const Signals& signals, std::string* lost);

 private:
  bool Draw();
  // Reads the keys; the exit status when they say quit, else -1.
  int Keys();

  const Args& args_;
  const uint64_t interval_ns_;
  const bool color_;
  TopData data_;
  ScreenSize size_ = SizeOf(STDOUT_FILENO);
  std::string status_;
};

bool Live::Draw() {
  TopView view;
  view.width = size_.cols;
  view.height = size_.rows;
  view.max_events = SIZE_MAX;
  view.monotonic_ns = Now(CLOCK_MONOTONIC);
  view.realtime_ns = Now(CLOCK_REALTIME);
  view.status = status_;
  return WriteAll(STDOUT_FILENO, Frame(FormatTop(data_, view), size_.rows, color_));
}

int Live::Keys() {
  char keys[64];
  const ssize_t n = read(STDIN_FILENO, keys, sizeof keys);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return -1;
  if (n <= 0) return kExitOk;  // the end of the input, or a terminal that hung up
  for (ssize_t i = 0; i < n; ++i) {
    if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 0x03) return kExitOk;
  }
  return -1;  // any other key: draw again now
}

int Live::Run(Looker& looker, const Signals& signals, std::string* lost) {
  const std::string every = fmt::format("every {:g}s, q quits", args_.interval);
  status_ = every;
  bool waiting = false;                                 // for a look
  uint64_t asked = 0;                                   // when it was asked for
  uint64_t next = Now(CLOCK_MONOTONIC) + interval_ns_;  // the next look
  for (bool redraw = true;; redraw = false) {
    if (g_quit_signal != 0) return 128 + g_quit_signal;
    if (g_resized != 0) {
      g_resized = 0;
      size_ = SizeOf(STDOUT_FILENO);
      redraw = true;
    }
    const uint64_t now = Now(CLOCK_MONOTONIC);
    if (!waiting && now >= next) {
      looker.Request();
      waiting = true;
      asked = now;
    }
    if (waiting && now - asked >= interval_ns_) {
      status_ = fmt::format("no answer from the daemon for {:.1f}s, q quits",
                            static_cast<double>(now - asked) / 1e9);
      redraw = true;
    }
    if (redraw && !Draw()) return kExitOk;  // the terminal is gone
    const uint64_t wake = waiting ? interval_ns_ : next - std::min(next, now);
    const timespec timeout{static_cast<time_t>(wake / kNsPerSec),
                           static_cast<long>(wake % kNsPerSec)};
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {looker.ready_fd(), POLLIN, 0}};
    if (ppoll(fds, 2, &timeout, signals.wait_mask()) <= 0) continue;
    if (fds[0].revents != 0) {
      if (fds[0].revents & POLLNVAL) return kExitOk;  // no input at all
      if (const int rc = Keys(); rc >= 0) return rc;
      Draw();
    }
    if (fds[1].revents & POLLIN) {
      Looked looked = looker.Take();
      waiting = false;
      next = asked + interval_ns_;
      if (looked.err != 0) {
        *lost = LostText(looked.err);
        return kExitFailure;
      }
      data_ = std::move(looked.data);
      status_ = every;
      Draw();
    }
  }
}

int RunLive(const Args& a, TopWatcher watcher, TopData first) {
  const Signals signals;  // before the thread starts, which inherits the mask
  auto looker = std::make_unique<Looker>(std::move(watcher));
  if (const int err = looker->Start(); err != 0) return Fail("top", "starting a thread", err);
  Terminal terminal;
  std::string lost;
  int rc = kExitFailure;
  if (!terminal.Enter()) {
    lost = "the terminal's modes: " + ErrorText(errno);
  } else {
    try {
      rc = Live(a, std::move(first)).Run(*looker, signals, &lost);
    } catch (const std::exception& e) {  // no memory, say: the terminal first
      lost = e.what();
      rc = kExitFailure;
    }
  }
  terminal.Leave();
  if (!lost.empty()) FailWith("top", a.path, lost);
  if (!looker->Finish(200)) {
    // The thread waits for a daemon that does not answer: nothing left to
    // do but end the process around it.
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc);
  }
  return rc;
}

int Run(const Args& a) {
  struct stat st {};
  {
    const UniqueFd fd = Open(a.path, O_RDONLY);
    if (!fd.valid() || fstat(fd.get(), &st) != 0) return Fail("top", a.path, errno);
  }
  // The first look before the terminal changes: a path that is not on
  // leasefs is an ordinary error line.
  TopWatcher watcher(a.path, st.st_dev);
  TopData first;
  if (const int err = watcher.Look(&first); err != 0)
    return err == kUnmounted ? FailWith("top", a.path, LostText(err)) : Fail("top", a.path, err);
  if (a.once || !isatty(STDOUT_FILENO)) return RunOnce(first);
  return RunLive(a, std::move(watcher), std::move(first));
}

}  // namespace top_cmd

void AddTopCommand(CLI::App& app, int* rc) {
  using namespace top_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("top", kManPage);
  sub->add_option("PATH", args->path, "any file or directory on the mount")->required();
  sub->add_option("--interval", args->interval, "seconds between looks (default 0.5)")
      ->check(CLI::Validator(
          [](std::string& s) {
            double v = 0;
            return CLI::detail::lexical_cast(s, v) && v >= 0.1 && v <= 3600
                       ? std::string()
                       : "'" + s + "' is not a number of seconds from 0.1 to 3600";
          },
          "SECONDS"));
  sub->add_flag("--once", args->once, "print one frame as plain text and exit");
  sub->add_flag("--no-color", args->no_color, "no colours");
  sub->callback([args, rc] { *rc = top_cmd::Run(*args); });
}

}  // namespace leasefs::leasectl
