// leasectl hold: take a layout lease from the shell, like flock(1), and
// report its breaks.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <sys/wait.h>

#include "lease/client/lease.h"
#include "tools/leasectl/args.h"
#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/hold_pin.h"
#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/pin_format.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace hold_cmd {

constexpr const char* kManPage = R"man(leasectl hold - hold a layout lease on a file, like flock(1)

SYNOPSIS
  leasectl hold [--shared|--write] [--exclusive] [--unbreakable]
                [--range OFF:LEN] [--ignore-breaks] [--pin[=softnic|declared]]
                FILE [-- CMD [ARG...]]

DESCRIPTION
  Opens FILE (for reading and writing if it may, else for reading) and takes
  a layout lease on it (LEASEFS_IOC_SETLEASE), waiting while a break is in
  progress on the range, then prints one line:

    12:00:00.123 lease 7 granted: FILE bytes 0..end read

  and holds the lease until something ends it. On a break notice (POLLPRI:
  somebody else is about to change the file's layout) it prints

    12:00:03.456 lease 7 breaking: deadline in 44.998s

  (the time left before the daemon revokes the lease), releases the lease at
  once so that the other side may proceed, prints "lease 7 released" and
  exits 0. With --ignore-breaks it keeps the lease instead ("(ignored)"
  follows the deadline), and prints "lease 7 revoked" when the break time
  runs out; it then forgets the revoked lease and exits 1. An unbreakable
  lease never breaks: the change fails (ETXTBSY) and the holder hears nothing.

  With -- CMD, runs CMD while holding the lease, releases it when CMD exits
  and exits with CMD's status (126 or 127 if CMD cannot be run). A break
  ends the lease as above but not CMD, which is not told.

  SIGINT and SIGTERM release the lease (and are passed on to CMD) and end
  leasectl with status 128 + the signal's number (or CMD's status).

  Every line starts with the local time. Lease kinds (include/leasefs/ioctl.h):
    --shared       a shared read-layout lease (READ; the default)
    --write        a write-layout lease (WRITE): FILE's own changes through
                   this open file would not break it
    --exclusive    READ|EXCLUSIVE (with --write: WRITE|EXCLUSIVE): the only
                   lease on its range, unbreakable: any other change fails
                   with ETXTBSY
    --unbreakable  adds UNBREAKABLE to --shared or --write: changes that
                   would break it fail with ETXTBSY
  --exclusive and --unbreakable need the file's owner (or root).
  --range OFF:LEN leases LEN bytes from OFF (LEN 0: to the end of the file,
  whatever its size); the default is the whole file, 0:0.

  --pin also pins the held range (docs/pins.md): opens a pin context on the
  mount and registers the range with the daemon's soft NIC, for peers to
  write and read (--pin or --pin=softnic), or as declared for an engine of
  the caller's own (--pin=declared). LEN 0 pins to the end of the file,
  rounded up to a block. Without a lease kind, --pin takes --write
  --exclusive, which a pin needs (or --write --unbreakable). It prints

    12:00:00.124 pin 3 registered: FILE bytes 0..65535 softnic context 1 rkey 0x5f0e4c1d2a3b9c87 at 127.0.0.1:40123

  (a declared pin has no rkey and no address), holds the pin with the lease,
  and prints "pin 3 fenced: rkey 0x5f0e4c1d2a3b9c87" when a break fences it
  (its rkey is refused from then on). Before the lease is released the pin
  is unregistered ("pin 3 unregistered"): a lease with pins cannot be.

EXIT STATUS
  0 released on a break notice; 1 the lease could not be taken, or was
  revoked or lost; 2 usage error; CMD's status with CMD; 128 + N after
  signal N.)man";

struct Args {
  std::string file;
  bool shared = false;
  bool write = false;
  bool exclusive = false;
  bool unbreakable = false;
  std::string range;
  bool ignore_breaks = false;
  std::string pin;  // "", "softnic" or "declared"
  std::vector<std::string> cmd;
};

// The last of SIGINT and SIGTERM that came, and whether a SIGCHLD came; set
// by the handlers, read between waits.
volatile sig_atomic_t g_stop_signal = 0;
volatile sig_atomic_t g_child_exited = 0;

void OnSignal(int sig) {
  if (sig == SIGCHLD)
    g_child_exited = 1;
  else
    g_stop_signal = sig;
}

// Handlers without SA_RESTART, so that a waiting ioctl or poll ends with
// EINTR; the signals stay blocked except while waiting. Returns the mask to
// wait with; *original is the mask leasectl found.
sigset_t CatchSignals(sigset_t* original) {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigset_t caught;
  sigemptyset(&caught);
  for (int sig : {SIGINT, SIGTERM, SIGCHLD}) {
    sigaction(sig, &sa, nullptr);
    sigaddset(&caught, sig);
  }
  sigprocmask(SIG_BLOCK, &caught, original);
  sigset_t waiting = *original;
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGCHLD);
  return waiting;
}

uint64_t NowNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Prints one line with the time of day in front, at once (a pipe would
// otherwise hold it back).
template <typename... T>
void Say(fmt::format_string<T...> f, T&&... args) {
  fmt::print("{} {}\n", TimeOfDay(NowNs(CLOCK_REALTIME), 3),
             fmt::format(f, std::forward<T>(args)...));
  std::fflush(stdout);
}

// Starts CMD with the signal mask and dispositions leasectl found. The lease's
// descriptor is close-on-exec: CMD does not hold the open file.
pid_t Spawn(const std::vector<std::string>& cmd, const sigset_t& mask) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  for (int sig : {SIGINT, SIGTERM, SIGCHLD}) signal(sig, SIG_DFL);
  sigprocmask(SIG_SETMASK, &mask, nullptr);
  std::vector<char*> argv;
  for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  const int err = errno;
  fmt::print(stderr, "leasectl: hold: {}: {}\n", cmd[0], std::strerror(err));
  _exit(err == ENOENT ? 127 : 126);
}

int ExitCode(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The holding: waits for a break notice, a signal or CMD's end, and does what
// the manual says. Linear on purpose: each branch is one line of the manual.
class Holder {
 public:
  Holder(const Args& a, int fd, client::Lease lease, HeldPin pin, pid_t child,
         const sigset_t& wait_mask)
      : a_(a),
        fd_(fd),
        lease_(std::move(lease)),
        pin_(std::move(pin)),
        child_(child),
        wait_mask_(wait_mask) {}

  int Run() {
    for (;;) {
      if (g_stop_signal != 0) return Stop(g_stop_signal);
      if (g_child_exited != 0) {
        g_child_exited = 0;
        int status = 0;
        if (child_ > 0 && waitpid(child_, &status, WNOHANG) == child_) {
          Release();
          return ExitCode(status);
        }
      }
      if (!lease_.held() && child_ <= 0) return rc_;
      const int rc = WaitOnce();
      if (rc >= 0) return rc;
    }
  }

 private:
  // One wait. Returns an exit code to end with, or -1 to go on.
  int WaitOnce() {
    // POLLPRI stays up while the lease is breaking: once told, look at the
    // state now and then instead.
    // The pin context's descriptor (-1, ignored by ppoll, without a pin)
    // brings fence notices.
    pollfd p[2] = {{fd_, static_cast<short>(lease_.held() && !told_ ? POLLPRI : 0), 0},
                   {pin_.context_fd(), POLLIN, 0}};
    const timespec tick{0, 100'000'000};
    const int n = ppoll(p, 2, lease_.held() && told_ ? &tick : nullptr, &wait_mask_);
    if (n < 0 && errno != EINTR) return Fail("hold", a_.file, errno);
    if (n > 0 && p[1].revents != 0) {
      if (const int rc = ReadNotices(); rc >= 0) return rc;
    }
    if (!lease_.held() || (n <= 0 && !told_)) return -1;
    if (n > 0 && (p[0].revents & POLLNVAL)) return Fail("hold", a_.file, EBADF);
    return Look();
  }

  // Prints the pin context's notices that came. Returns an exit code to end
  // with, or -1 to go on.
  int ReadNotices() {
    for (;;) {
      auto n = pin_.NextNotice();
      if (!n.ok()) return Fail("hold", a_.file, n.status().err(), "reading the pin context");
      switch (n->kind) {
        case HeldPin::Notice::kNone:
          return -1;
        case HeldPin::Notice::kFenced:
          if (n->rkey != 0)
            Say("pin {} fenced: rkey {}", n->pin, RkeyText(n->rkey));
          else
            Say("pin {} fenced", n->pin);
          break;
        case HeldPin::Notice::kClosed:
          Say("pin context {} closed by the daemon", pin_.context());
          return -1;
      }
    }
  }

  // Unregisters the pin, which must go before its lease can.
  void DropPin() {
    if (!pin_.held()) return;
    const uint64_t id = pin_.id();
    const Status s = pin_.Drop();
    if (s.ok())
      Say("pin {} unregistered", id);
    else
      rc_ = Fail("hold", a_.file, s.err(), "unregistering pin " + std::to_string(id));
  }

  // Acts on the lease's state after a notice.
  int Look() {
    auto st = lease_.State();
    if (!st.ok()) return Fail("hold", a_.file, st.status().err());
    switch (st->state) {
      case LEASEFS_STATE_ACTIVE:
        return -1;
      case LEASEFS_STATE_BREAKING:
        if (told_) return -1;
        told_ = true;
        Say("lease {} breaking: {}{}", lease_.id(), DeadlineText(*st),
            a_.ignore_breaks ? " (ignored)" : "");
        if (a_.ignore_breaks) return -1;
        Release();
        return child_ > 0 ? -1 : kExitOk;
      case LEASEFS_STATE_REVOKED:
        Say("lease {} revoked", lease_.id());
        DropPin();
        (void)lease_.Release();  // forget it
        rc_ = kExitFailure;
        return child_ > 0 ? -1 : rc_;
      default:
        DropPin();
        Say("lease {} is gone", lease_.Detach());
        rc_ = kExitFailure;
        return child_ > 0 ? -1 : rc_;
    }
  }

  static std::string DeadlineText(const leasefs_lease_info& st) {
    if (st.break_deadline == 0) return "no deadline";
    const int64_t left =
        static_cast<int64_t>(st.break_deadline) - static_cast<int64_t>(NowNs(CLOCK_MONOTONIC));
    return "deadline in " + SecondsText(left > 0 ? left : 0);
  }

  void Release() {
    DropPin();
    if (!lease_.held()) return;
    const uint64_t id = lease_.id();
    const Status s = lease_.Release();
    if (s.ok())
      Say("lease {} released", id);
    else
      rc_ = Fail("hold", a_.file, s.err());
  }

  // SIGINT or SIGTERM: release, pass it on to CMD and wait for CMD.
  int Stop(int sig) {
    Release();
    if (child_ <= 0) return 128 + sig;
    kill(child_, sig);
    int status = 0;
    while (waitpid(child_, &status, 0) < 0 && errno == EINTR) {
    }
    return ExitCode(status);
  }

  const Args& a_;
  const int fd_;
  client::Lease lease_;
  HeldPin pin_;  // --pin; dropped before the lease is released
  const pid_t child_;
  const sigset_t wait_mask_;
  bool told_ = false;  // the break notice was printed
  int rc_ = kExitOk;
};

// The range --pin registers: the lease's, with LEN 0 running to the end of
// the file rounded up to a block. A range the daemon refuses stays as it is,
// for its EINVAL.
LeaseRangeArg PinRange(int fd, LeaseRangeArg lease) {
  if (lease.length != 0) return lease;
  const std::optional<FileFacts> f = Facts(fd);
  if (!f || f->block_size == 0) return lease;
  const uint64_t end = (f->size + f->block_size - 1) / f->block_size * f->block_size;
  return {lease.offset, end > lease.offset ? end - lease.offset : 0};
}

// Why the daemon refused the pin, from the errno alone.
std::string PinHint(int err) {
  switch (err) {
    case EPERM:
      return "a pin needs an exclusive lease of this process: --exclusive, or --write "
             "--unbreakable; filling holes needs --write";
    case EINVAL:
      return "the range must be block-aligned, inside the file, and at most 1G";
    case EOPNOTSUPP:
      return "this mount has no pins, or no soft NIC";
    case EBADF:
      return "a soft NIC pin needs the file open for writing";
    default:
      return "";
  }
}

// --pin: registers the held range; prints its line. On failure prints why
// and the result is not held.
HeldPin MakePin(const Args& a, int fd, LeaseRangeArg range, int* rc) {
  const uint32_t provider = a.pin == "declared" ? LEASEFS_PIN_DECLARED : LEASEFS_PIN_SOFTNIC;
  range = PinRange(fd, range);
  auto pin = HeldPin::Make(fd, range.offset, range.length, provider);
  if (!pin.ok()) {
    const int err = pin.status().err();
    *rc = Fail("hold", a.file, IoctlError(fd, err),
               fmt::format("{}{}{}", pin.status().message(), PinHint(err).empty() ? "" : ": ",
                           PinHint(err)));
    return HeldPin();
  }
  std::string where;
  if (provider == LEASEFS_PIN_SOFTNIC) {
    where = " rkey " + RkeyText(pin->rkey());
    if (!pin->softnic().empty()) where += " at " + pin->softnic();
  }
  Say("pin {} registered: {} bytes {} {} context {}{}", pin->id(), a.file,
      RangeText(range.offset, range.length), PinProviderName(provider), pin->context(), where);
  return std::move(*pin);
}

int Run(const Args& a) {
  // A pin needs an exclusive lease; a writable one fills the range's holes.
  const bool pin_kind = !a.pin.empty() && !a.shared && !a.write && !a.exclusive && !a.unbreakable;
  uint32_t flags = a.unbreakable ? client::kUnbreakable : 0;
  if (a.exclusive || pin_kind) flags |= client::kExclusive;
  const client::Type type = a.write || pin_kind ? client::Type::kWrite : client::Type::kRead;
  const LeaseRangeArg range = a.range.empty() ? LeaseRangeArg{} : *ParseLeaseRange(a.range);

  UniqueFd fd = Open(a.file, O_RDWR);
  if (!fd.valid() && (errno == EACCES || errno == EROFS || errno == EISDIR || errno == ETXTBSY))
    fd = Open(a.file, O_RDONLY);
  if (!fd.valid()) return Fail("hold", a.file, errno);

  sigset_t original;
  const sigset_t wait_mask = CatchSignals(&original);
  // A break in progress makes the request wait: let the signals end it.
  sigset_t blocked;
  sigprocmask(SIG_SETMASK, &wait_mask, &blocked);
  auto lease = client::Lease::Take(fd.get(), {range.offset, range.length}, type, flags);
  sigprocmask(SIG_SETMASK, &blocked, nullptr);
  if (!lease.ok()) {
    const int err = lease.status().err();
    if (err == EINTR && g_stop_signal != 0) return 128 + g_stop_signal;
    std::string hint;
    if (err == EACCES) hint = "--exclusive and --unbreakable need the file's owner";
    if (err == EAGAIN) hint = "a conflicting lease is held";
    if (err == EEXIST) hint = "this open file already holds a lease there";
    return Fail("hold", a.file, IoctlError(fd.get(), err), hint);
  }
  Say("lease {} granted: {} bytes {} {}", lease->id(), a.file,
      RangeText(range.offset, range.length), LeaseKind(static_cast<uint32_t>(type), flags));
  HeldPin pin;
  if (!a.pin.empty()) {
    int rc = kExitOk;
    pin = MakePin(a, fd.get(), range, &rc);
    if (!pin.held()) {
      const uint64_t id = lease->id();
      if (lease->Release().ok()) Say("lease {} released", id);
      return rc;
    }
  }

  pid_t child = -1;
  if (!a.cmd.empty()) {
    child = Spawn(a.cmd, original);
    if (child < 0) return Fail("hold", a.cmd[0], errno);
  }
  Holder holder(a, fd.get(), std::move(*lease), std::move(pin), child, wait_mask);
  return holder.Run();
}

}  // namespace hold_cmd

void AddHoldCommand(CLI::App& app, int* rc) {
  using namespace hold_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("hold", kManPage);
  auto* shared = sub->add_flag("--shared", args->shared, "a shared read-layout lease (default)");
  auto* write = sub->add_flag("--write", args->write, "a write-layout lease");
  auto* exclusive = sub->add_flag("--exclusive", args->exclusive, "READ|EXCLUSIVE");
  shared->excludes(write)->excludes(exclusive);
  sub->add_flag("--unbreakable", args->unbreakable, "add UNBREAKABLE")->excludes(exclusive);
  sub->add_option("--range", args->range, "OFF:LEN (LEN 0: to the end)")
      ->check(LeaseRangeValidator());
  sub->add_flag("--ignore-breaks", args->ignore_breaks, "keep the lease on a break notice");
  sub->add_flag("--pin{softnic}", args->pin, "pin the range: softnic (default) or declared")
      ->check(CLI::IsMember({"softnic", "declared"}));
  sub->add_option("FILE", args->file, "a file on leasefs")->required();
  sub->add_option("CMD", args->cmd, "a command to run while holding the lease (after --)");
  sub->callback([args, rc] { *rc = Run(*args); });
}

}  // namespace leasefs::leasectl
