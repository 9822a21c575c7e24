// The scenarios of the debate about leases themselves and the rest of
// semantics-2019 §5: passing pins (7, 8), the break timeout (10), what must
// not break (12), unleased ranges (13), unbreakable leases (15) and ODP (16).
// The "why" of each decisive step cites the rule as semantics-2019 does, or
// the page of docs/ where leasefs made a choice the debate left open or
// differs from it.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include <fmt/core.h>

#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/scenario.h"

namespace leasefs::leasectl {

namespace {

using W = Expect::Wait;

constexpr uint64_t kMiB = 1024 * kKiB;

const std::string kPinWhy =
    "a pin needs an exclusive layout lease held by the pinning process ([v2] 04/19, §1 C.12; "
    "docs/pins.md 'Making a pin')";

// Polls `done` every 10 ms for up to `ms`: for what the daemon does on its
// own after a step (a death seen through its pidfd).
bool Eventually(const std::function<bool()>& done, int ms = 3000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// The mount's leases ("lease 1 zombie/1 pins, ...") and pins ("pin 1
// context 1 creator 1234 fenced, ..."), for what a check saw.
std::string LeaseWords(Run& run) {
  std::string out;
  for (const auto& l : run.Leases())
    out += fmt::format("{}lease {} {}/{} pins", out.empty() ? "" : ", ", l.id,
                       LeaseStateName(l.state), l.pins);
  return out.empty() ? "no leases" : out;
}

std::string PinWords(Run& run) {
  std::string out;
  for (const auto& p : run.Pins())
    out += fmt::format("{}pin {} context {} creator {}{}", out.empty() ? "" : ", ", p.pin_id,
                       p.context, p.creator_pid,
                       (p.flags & LEASEFS_PIN_REC_FENCED) != 0 ? " fenced" : "");
  return out.empty() ? "no pins" : out;
}

// Whether the mount has exactly one lease, in `state`, counting `pins`.
bool OneLease(Run& run, uint32_t state, uint32_t pins) {
  const auto l = run.Leases();
  return l.size() == 1 && l[0].state == state && l[0].pins == pins;
}

// "64 KiB", "2 MiB".
std::string Size(uint64_t bytes) {
  if (bytes >= kMiB && bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  return fmt::format("{} KiB", bytes / kKiB);
}

// P's pinned layout: `file` open O_RDWR, an exclusive layout lease (its
// break signal asked for, ignored), a pin context and a soft-NIC pin over
// [0, pin_len). The lease covers [0, lease_len), the whole file when 0.
// Returns the pin's rkey.
uint64_t LeaseAndPin(Run& run, Actor& p, const std::string& file, uint64_t pin_len,
                     uint64_t lease_len = 0) {
  run.Do(p, fmt::format("fd = open(\"{}\", O_RDWR)", file), op::Open(file, "rw"));
  const std::string range =
      lease_len == 0 ? "" : fmt::format(" over [0, {})", Size(lease_len));
  run.Do(p, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_EXCLUSIVE)" + range,
         op::Lease(file, "write", {"exclusive"}, 0, lease_len),
         Must("OK", "the file's owner may take an exclusive layout lease ([v2] 02/19, §1 C.9)"));
  run.Do(p, "ctx = ibv_open_device(softnic)", op::Context(file));
  const StepRecord& pin =
      run.Do(p, fmt::format("mr = ibv_reg_mr(pd, {}'s first {}, REMOTE_WRITE|REMOTE_READ)", file,
                            Size(pin_len)),
             op::Pin(file, 0, pin_len), Must("OK", kPinWhy));
  return pin.value.value("rkey", uint64_t{0});
}

// --- §5.7 and §5.8: a pin context passed on, its creator gone

const std::string kFollowWhy =
    "pin_passing=follow-fd: the pins stay with the context, whoever holds it ([Ira], §1 H.28); "
    "a pin never outlives its lease, so P's lease stays as ZOMBIE (docs/pins.md 'Passing a "
    "context')";
const std::string kStrictWhy =
    "pin_passing=strict: a passed context keeps its pins only where a holder has a lease of its "
    "own covering them ([Dave], §1 H.29); none does, so they are fenced and dropped and no pin "
    "outlives P's lease (§5.7; docs/pins.md 'Passing a context')";

// What is left once P is gone, under the mount's pin_passing: the pins kept
// (listed with their creator P, their lease ZOMBIE) or aborted. `closed`:
// whether the open file they were made through went with P.
bool AfterCreatorGone(Run& run, pid_t creator, bool closed) {
  if (run.Is("pin_passing", "strict")) {
    const bool gone = Eventually([&] { return run.Pins().empty() && run.Leases().empty(); });
    run.Check("P's pin is aborted, and its ZOMBIE lease goes with it", gone,
              PinWords(run) + "; " + LeaseWords(run), kStrictWhy);
    return false;
  }
  const bool zombie = Eventually([&] { return OneLease(run, LEASEFS_STATE_ZOMBIE, 1); });
  run.Check("`leasectl leases`: P's lease stays, ZOMBIE, counting 1 pin", zombie,
            LeaseWords(run), kFollowWhy);
  const auto pins = run.Pins();
  const bool listed = pins.size() == 1 && pins[0].creator_pid == creator &&
                      (pins[0].flags & LEASEFS_PIN_REC_FENCED) == 0 &&
                      ((pins[0].flags & LEASEFS_PIN_REC_CLOSED) != 0) == closed;
  run.Check(fmt::format("`leasectl file_pins`: the pin, live, under its context, creator P ({})",
                        creator),
            listed, PinWords(run),
            "the debate's /proc/<pid>/file_pins showed the pin under the process now holding "
            "the owner fd (§1 I.32); leasefs lists a pin by its context and the context's "
            "creator (docs/pins.md: follow-fd keeps them 'listed with their creator'), and the "
            "daemon does not see a descriptor move: the holder is whoever can use the context, "
            "as the next steps show");
  return true;
}

// §5.7: P hands its verbs context to Q over a unix socket, then exits.
void ScmRights(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  run.Say("P registers F with the NIC and hands the verbs context U to Q, as Ira's A does to B "
          "(§1 H.28)");
  LeaseAndPin(run, p, "F", kFileSize);
  run.Do(p, "sendmsg(sock to Q, SCM_RIGHTS: ctx)", op::Send("ctx", "Q"));
  run.Do(q, "U = recvmsg(sock from P): the context's descriptor", op::Receive("U"));
  run.Do(q, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Exit(p, "P's descriptors close as it exits: F's open file, and its copy of the context; "
              "Q's copy keeps the context open (§1 H.28)");
  const bool kept = AfterCreatorGone(run, p.pid(), true);
  if (kept) {
    run.Do(q, "truncate(\"F\", 32 KiB)", op::Truncate("F", 32 * kKiB),
           Must("ETXTBSY",
                "the pins persist, and the ZOMBIE exclusive lease over them refuses the change "
                "(pinned_break=refuse; [Ira]: 'B still holds the pins, so truncate still fails', "
                "§1 H.28; §5.7)",
                W::kAtOnce));
    run.Outcome("breaker", "ETXTBSY at once (P's pins live on in U)");
  } else {
    run.Do(q, "truncate(\"F\", 32 KiB)", op::Truncate("F", 32 * kKiB),
           Must("OK", "no pin and no lease is left in the way (§5.7: no pins outlive P's lease)",
                W::kAtOnce));
    run.Outcome("breaker", "OK at once (P's pins aborted)");
  }
  run.Do(q, "ibv_reg_mr(U's pd, F's first 4 KiB) through fd", op::Pin("F", 0, 4096, "U"),
         Must("EPERM", "a receiver may use the pins it was passed but needs its own lease to pin "
                       "more (§1 C.12; §5.7's last line)"));
  if (kept) {
    run.Do(q, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_EXCLUSIVE)",
           op::Lease("F", "write", {"exclusive"}),
           Must("EAGAIN",
                "P's ZOMBIE lease still covers the pinned range, and a new lease conflicts with "
                "it (docs/pins.md 'Passing a context')"));
    run.Do(q, "ibv_dereg_mr(every MR of U): Q lets P's registration go", op::Unpin("U"),
           Must("OK", "whoever holds the context may end its pins; the ZOMBIE lease goes with its "
                      "last pin (docs/pins.md 'Counting and releasing')"));
    const bool gone = Eventually([&] { return run.Leases().empty(); });
    run.Check("P's ZOMBIE lease is gone", gone, LeaseWords(run), "§1 G.25: it lives only as "
              "long as its pins");
  }
  run.Do(q, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_EXCLUSIVE)",
         op::Lease("F", "write", {"exclusive"}),
         Must("OK", "nothing of P's is left on the range: Q takes a lease of its own"));
  run.Do(q, "ibv_reg_mr(U's pd, F's first 4 KiB) through fd", op::Pin("F", 0, 4096, "U"),
         Must("OK", "with its own lease, Q pins through the context it received (§5.7: 'until "
                    "it takes its own lease')"));
  run.Outcome("data", kept ? "P's pin kept in U; Q pins after dereg + own lease"
                           : "P's pin aborted at its exit; Q pins under its own lease");
  run.Outcome("killed", "nobody");
  run.Outcome("quarantine", run.QuarantinedBytes() == 0 ? "none"
                                                        : Size(run.QuarantinedBytes()));
}

// §5.8: P forks C, which inherits the open file and the context; P exits.
void ForkScenario(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  LeaseAndPin(run, p, "F", kFileSize);
  Actor& c = run.Fork(p, "C", "fork(): C inherits fd (F's open file) and ctx");
  run.Exit(p, "P exits; C keeps F's open file and the context (§5.8)");
  const bool kept = AfterCreatorGone(run, p.pid(), false);
  run.Say("lease notifications: the debate's lease stays with its open file and keeps notifying "
          "P's f_owner until F_SETOWN (§5.8); a leasefs lease belongs to the process that took "
          "it and ends with it (ZOMBIE while it counts pins): docs/leases.md 'Owners and process "
          "death'");
  if (kept) {
    run.Do(q, "truncate(\"F\", 32 KiB)", op::Truncate("F", 32 * kKiB),
           Must("ETXTBSY", "the pins remain, under the ZOMBIE exclusive lease (§5.8)", W::kAtOnce));
    run.Do(c, "ibv_reg_mr(pd, F's first 4 KiB)", op::Pin("F", 0, 4096),
           Must("EPERM", "the lease on the shared open file is P's: a child pins nothing more "
                         "without a lease of its own (docs/pins.md 'Making a pin' rule 2; "
                         "§1 C.12)"));
    run.Do(c, "close(ctx): the context's last descriptor", op::ContextClose("ctx"),
           Must("OK", "the pins end with their context (docs/pins.md 'Counting and releasing')"));
    const bool gone = Eventually([&] { return run.Pins().empty() && run.Leases().empty(); });
    run.Check("the pin and P's ZOMBIE lease are gone", gone, PinWords(run) + "; " + LeaseWords(run),
              "§1 G.25: a ZOMBIE lease goes with its last pin");
    run.Outcome("breaker", "ETXTBSY at once (pins kept in C), OK after C's close(ctx)");
  } else {
    run.Do(c, "ibv_reg_mr(pd, F's first 4 KiB)", op::Pin("F", 0, 4096),
           Must("EPERM", "C holds no lease of its own (docs/pins.md 'Making a pin' rule 2)"));
    run.Outcome("breaker", "OK at once (pins aborted at P's exit)");
  }
  run.Do(q, "truncate(\"F\", 32 KiB)", op::Truncate("F", 32 * kKiB),
         Must("OK", "no pin and no lease is left in the way", W::kAtOnce));
  run.Outcome("data", kept ? "pins listed with creator P, held by C" : "pins fenced and dropped");
  run.Outcome("killed", "nobody");
  run.Outcome("quarantine", run.QuarantinedBytes() == 0 ? "none"
                                                        : Size(run.QuarantinedBytes()));
}

// --- §5.10: the break timeout

// How many lines of the narrative so far contain both `a` and `b`.
int NoteLines(const Run& run, const std::string& a, const std::string& b) {
  int n = 0;
  for (const StepRecord& s : run.steps())
    for (const std::string& line : s.notes)
      n += line.find(a) != std::string::npos && line.find(b) != std::string::npos;
  return n;
}

// A remote peer's one-sided WRITE; returns the completion's status words.
std::string PeerWrite(Run& run, Actor& r, uint64_t rkey, const std::string& text) {
  const StepRecord& s =
      run.Do(r, fmt::format("ibv_post_send(RDMA_WRITE \"{}\" to rkey {:#x} at 0)", text, rkey),
             op::PeerWrite(rkey, 0, text));
  return s.value.is_string() ? s.value.get<std::string>() : "";
}

// Part 3 of §5.10: the lease has pins; what a punch over them does under
// the mount's pinned_break.
std::string PinnedBreak(Run& run, Actor& p, Actor& q, Actor& r) {
  run.Say(fmt::format("3. pins under the lease (an exclusive one: pins need it), "
                      "pinned_break={}",
                      run.policy("pinned_break")));
  run.MakeFile("H", kFileSize, 'h');
  const uint64_t rkey = LeaseAndPin(run, p, "H", kFileSize);
  const std::string first = PeerWrite(run, r, rkey, "from R");
  run.Check("R's WRITE lands in H", first == "success" && run.ReadFile("H", 6) == "from R",
            first + ", H begins \"" + run.ReadFile("H", 6) + "\"",
            "a pin gives the NIC the file's blocks (§1 A.3)");
  run.Do(q, "hfd = open(\"H\", O_RDWR)", op::Open("H", "rw"));
  const int signals = run.Notices(p, "break-signal");
  const std::string punch = "fallocate(hfd, PUNCH_HOLE|KEEP_SIZE, 0, 64 KiB)";
  if (run.Is("pinned_break", "refuse")) {
    run.Do(q, punch, op::Fallocate("H", "punch", 0, kFileSize),
           Must("ETXTBSY",
                "pinned_break=refuse: a change over pinned blocks fails at once, nothing marked, "
                "no signal, no timeout ([v2], §1 F.21; docs/pins.md 'Breaks and pins')",
                W::kAtOnce));
    const int now = run.Notices(p, "break-signal");
    run.Check("P got no signal for it", now == signals,
              fmt::format("{} new signals", now - signals), "an unbreakable refusal sends none "
              "([v2] 02/19, §1 B.6)");
    const std::string again = PeerWrite(run, r, rkey, "R again");
    run.Check("R's WRITEs still land", again == "success" && run.ReadFile("H", 7) == "R again",
              again, "the pinned blocks are still H's");
    run.Outcome("data", "H kept; R's WRITEs still land");
    run.Outcome("quarantine", "none");
    return "pinned: ETXTBSY at once";
  }
  if (run.Is("pinned_break", "wait")) {
    Pending t = run.Start(q, punch, op::Fallocate("H", "punch", 0, kFileSize));
    const std::string rule = "pinned_break=wait: recalled like a breakable lease, but the break "
                             "time does not run out while pins remain (docs/pins.md 'Breaks and "
                             "pins')";
    if (!run.StillWaiting(t, static_cast<int>(run.break_time() * 1000) + 500, rule))
      run.Check("Q still waits past the break time", false, "it had finished", rule);
    run.Do(p, "ibv_dereg_mr(mr)", op::Unpin());
    const StepRecord& s = run.Finish(
        t, Must("OK", "the pins are gone: the lease, past its break time, is revoked and the "
                      "punch goes on (docs/pins.md)"));
    const std::string took = fmt::format("pinned: OK after {:.1f} s (waited for dereg)", s.seconds);
    run.Outcome("data", "H punched after the MR went");
    run.Outcome("quarantine", "none");
    return took;
  }
  // fence
  const StepRecord& s = run.Do(
      q, punch, op::Fallocate("H", "punch", 0, kFileSize),
      Must("OK",
           "pinned_break=fence: the pinned lease is recalled like a breakable one; P does not "
           "answer, so at the break time its pins are fenced at the NIC, the lease is revoked "
           "and the punch proceeds (§5.10's last line; nfsd fences a client that does not "
           "return its layout, §1 E.19, §4)",
           W::kBreakTime));
  const double seconds = s.seconds;
  int fence = -1, revoke = -1, go = -1;
  for (size_t i = 0; i < s.notes.size(); ++i) {
    if (fence < 0 && s.notes[i].find("fences the pins") != std::string::npos) fence = int(i);
    if (revoke < 0 && s.notes[i].find("revokes lease") != std::string::npos) revoke = int(i);
    if (go < 0 && s.notes[i].find("lets Q's change") != std::string::npos) go = int(i);
  }
  run.Check("the pins were fenced, then the lease revoked, then the punch went on",
            fence >= 0 && fence < revoke && revoke < go,
            fmt::format("event order fence {}, revoke {}, go-ahead {}", fence, revoke, go),
            "block-map revocation: break, fence the pins, only then free the blocks (§1 E.19, "
            "§6's order)");
  const int now = run.Notices(p, "break-signal", signals + 1, 1000);
  run.Check("P was signalled once for the recall", now == signals + 1,
            fmt::format("{} signals", now - signals), "the recall notifies as a break does "
            "(docs/pins.md: 'its holder signalled and polled')");
  const uint64_t held = run.QuarantinedBytes();
  run.MakeFile("N", kFileSize, 'n');
  const std::string late = PeerWrite(run, r, rkey, "late");
  run.Check("R's late WRITE fails with a remote access error (IBV_WC_REM_ACCESS_ERR)",
            late == "remote access error", late,
            "a fenced registration is refused by the NIC (§4: fencing)");
  const std::string h = run.ReadFile("H", kFileSize), n = run.ReadFile("N", kFileSize);
  run.Check("H's punched range reads zeros and the newcomer N is all 'n'",
            h == std::string(kFileSize, '\0') && n == std::string(kFileSize, 'n'),
            fmt::format("H {} zeros, N {} 'n's", std::count(h.begin(), h.end(), '\0'),
                        std::count(n.begin(), n.end(), 'n')),
            "the freed blocks stay quarantined under the pin's record, so no file gets them and "
            "a late write can only land where no file is (DESIGN.md §4; docs/pins.md)");
  run.Do(p, "ibv_dereg_mr(mr) (fenced: the MR is dead; P lets it go)", op::Unpin());
  const bool freed = Eventually([&] { return run.QuarantinedBytes() == 0; });
  run.Check("the quarantine is empty once P let go", freed,
            fmt::format("{} bytes", run.QuarantinedBytes()), "docs/pins.md: 'until its context "
            "lets it go'");
  run.Outcome("data", "H punched; R's late WRITE refused; N intact");
  run.Outcome("quarantine", fmt::format("{} until P's dereg", Size(held)));
  return fmt::format("pinned: OK after {:.1f} s (fenced)", seconds);
}

void BreakTimeout(Run& run) {
  run.MakeFile("F", kFileSize);
  run.MakeFile("G", kFileSize, 'g');
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  Actor& r = run.Spawn("R");
  run.Say("P holds layout leases and ignores break signals; Q changes the layout; R is a remote "
          "peer");
  run.Say("1. a breakable lease, no pins");
  run.Do(p, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(p, "fcntl(fd, F_SETSIG, SIGRTMIN+2); fcntl(fd, F_SETLEASE, F_RDLCK|F_LAYOUT)",
         op::Lease("F", "read", {}, 0, 0, true, "ignore"),
         Must("OK", "[v1]'s F_LAYOUT, a shared breakable layout lease (§1 B.5, B.7)"));
  run.Do(q, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  Pending t = run.Start(q, "fallocate(fd, PUNCH_HOLE|KEEP_SIZE, 0, 64 KiB)",
                        op::Fallocate("F", "punch", 0, kFileSize));
  run.StillWaiting(t, 500, "a punch breaks every layout lease on its range: the holder is "
                           "signalled, the breaker waits up to lease_break_time (§1 E.16-17)");
  const int first = run.Notices(p, "break-signal", 1, 1000);
  const StepRecord& gl = run.Do(p, "fcntl(fd, F_GETLEASE)", op::GetLease("F"));
  const uint32_t breaking = gl.value.is_number() ? gl.value.get<uint32_t>() : 0;
  run.Check("P's lease reads as breaking while Q waits", breaking == LEASEFS_STATE_BREAKING,
            LeaseStateName(breaking),
            "a pending break shows to the holder (§1 E.18: F_GETLEASE reports the target type "
            "F_UNLCK; leasefs's GETLEASE reports the state: docs/leases.md 'The break protocol')");
  const StepRecord& done = run.Finish(
      t, Must("OK", "P did not release: at the break time the lease is revoked "
                    "(time_out_leases) and the punch goes on (§1 E.17; §5.10)",
              W::kBreakTime));
  const double waited = done.seconds;
  const int signals = run.Notices(p, "break-signal");
  // The actor names the descriptor that si_fd designates: F's, if it is.
  const int on_f = NoteLines(run, "P gets SIGRTMIN+2", "(F's lease is breaking)");
  run.Check("P got the break signal once, si_fd its descriptor of F",
            first == 1 && signals == 1 && on_f == 1,
            fmt::format("{} signals, {} with si_fd = F's descriptor", signals, on_f),
            "lm_break signals the holder once per break, si_fd the leased fd (§1 E.16; "
            "docs/leases.md 'Notify, once per lease per break')");
  const StepRecord& gl2 = run.Do(p, "fcntl(fd, F_GETLEASE)", op::GetLease("F"));
  const uint32_t after = gl2.value.is_number() ? gl2.value.get<uint32_t>() : 0;
  run.Check("P's lease reads as revoked", after == LEASEFS_STATE_REVOKED, LeaseStateName(after),
            "Linux deletes a timed-out lease; leasefs keeps it REVOKED on its open file until "
            "the holder releases it, so the holder learns what happened (docs/leases.md 'The "
            "break protocol' 4)");
  const std::string f = run.ReadFile("F", kFileSize);
  run.Check("F's first 64 KiB read zeros: the punch happened",
            f == std::string(kFileSize, '\0'),
            fmt::format("{} zero bytes", std::count(f.begin(), f.end(), '\0')), "§5.10");

  run.Say("2. the same break asked not to wait (O_NONBLOCK)");
  run.Do(p, "gfd = open(\"G\", O_RDWR)", op::Open("G", "rw"));
  run.Do(p, "fcntl(gfd, F_SETLEASE, F_RDLCK|F_LAYOUT)", op::Lease("G", "read", {}, 0, 0, true));
  run.Do(q, "nfd = open(\"G\", O_RDWR|O_NONBLOCK)", op::Open("G", "rw,nonblock", "Gnb"));
  run.Do(q, "ftruncate(nfd, 4 KiB)", op::Ftruncate("Gnb", 4096),
         Must("EAGAIN",
              "a breaker that asked not to wait gets EWOULDBLOCK (EAGAIN's other name) at once, "
              "after the holder was told (§1 E.17); ftruncate and fallocate honour the "
              "O_NONBLOCK the file was opened with (docs/leases.md 'The daemon's side' 3)",
              W::kAtOnce));
  run.Do(q, "fallocate(nfd, PUNCH_HOLE|KEEP_SIZE, 0, 64 KiB)",
         op::Fallocate("Gnb", "punch", 0, kFileSize),
         Must("EAGAIN", "the lease is still breaking: EWOULDBLOCK again (§1 E.17)", W::kAtOnce));
  const int g_signals = run.Notices(p, "break-signal", signals + 1, 1000) - signals;
  run.Check("P got one signal for G's lease", g_signals == 1, fmt::format("{} signals", g_signals),
            "a second breaker of a breaking lease sends nothing new (docs/leases.md 'The break "
            "protocol' 2)");
  run.Do(p, "fcntl(gfd, F_SETLEASE, F_UNLCK): P answers, late", op::Unlock("G"));
  run.Do(q, "ftruncate(nfd, 4 KiB)", op::Ftruncate("Gnb", 4096),
         Must("OK", "nothing left to break", W::kAtOnce));

  const std::string pinned = PinnedBreak(run, p, q, r);
  run.Outcome("breaker", fmt::format("no pins: OK after {:.1f} s; O_NONBLOCK: EWOULDBLOCK at "
                                     "once; {}",
                                     waited, pinned));
  run.Outcome("killed", "nobody");
}

// --- §5.12: what must not break

void MustNotBreak(Run& run) {
  const bool xfs = run.Is("write_break", "xfs-faithful");
  run.MakeFile("F", kMiB);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  LeaseAndPin(run, p, "F", kMiB);
  run.Do(p, "addr = mmap(fd, 1 MiB, MAP_SHARED): DAX", op::Map("F", 0, kMiB));
  run.Do(p, "memcpy(addr, \"P's store\", 9)", op::Store("map", 0, "P's store"),
         Must("OK", "CPU stores through a DAX mapping change no layout and break nothing "
                    "(§1 D.15)"));
  const std::string before = run.BlockMap("F");
  run.Do(q, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"),
         Must("OK", "open(O_RDWR) never breaks a layout lease (check_conflicting_open, §1 C.10; "
                    "§1 D.15)"));
  const StepRecord& rd = run.Do(q, "pread(fd, 9 bytes, 0)", op::Pread("F", 0, 9),
                                Must("OK", "reads never break a layout lease (§1 D.15)"));
  const std::string seen = rd.value.is_string() ? rd.value.get<std::string>() : "";
  run.Check("Q reads P's DAX store", seen == "P's store", seen,
            "DAX stores and FUSE reads meet in the same pool pages (DESIGN.md §3)");
  run.Do(q, "fcntl(fd, F_SETLEASE, F_RDLCK|F_LAYOUT), to map F through DAX too",
         op::Lease("F", "read"),
         Must("EAGAIN", "an exclusive lease is alone on its range: no other lease is granted "
                        "beside it (docs/leases.md 'Acquiring' 6, [v2] 02/19)"));
  run.Do(q, "DAX map of F's first 4 KiB, without a lease", op::Map("F", 0, 4096),
         Must("EPERM", "DAX_MAP needs a covering lease of the caller's (docs/dax.md 'Mapping a "
                       "range')"));
  run.Say("so in leasefs another process has no DAX path to a range under P's exclusive lease: "
          "the debate's third-party DAX store (§5.12) cannot happen here (docs/dax.md: DAX "
          "needs a lease; docs/leases.md: EXCLUSIVE conflicts with every lease); Q's stores go "
          "through pwrite(2)");
  if (xfs) {
    run.Do(q, "pwrite(fd, 4 KiB of 'w', 64 KiB): blocks F owns", op::Pwrite("F", 64 * kKiB, 4096),
           Must("ETXTBSY",
                "write_break=xfs-faithful: every write() breaks layouts, as XFS's BREAK_WRITE, "
                "and an exclusive lease refuses any break ([v2], §1 D.14; §5.12)",
                W::kAtOnce));
  } else {
    run.Do(q, "pwrite(fd, 4 KiB of 'w', 64 KiB): blocks F owns", op::Pwrite("F", 64 * kKiB, 4096),
           Must("OK",
                "write_break=unmap-only: a write into allocated blocks changes no layout "
                "([Dan]'s BREAK_UNMAP/BREAK_WRITE split, [Sep19], §1 B.8; §5.12)",
                W::kAtOnce));
  }
  run.Do(q, "pwrite(fd, 4 KiB, 1 MiB): extends F", op::Pwrite("F", kMiB, 4096),
         Must("ETXTBSY",
              "an allocating write (extending the file) changes the layout in every mode: the "
              "exclusive lease refuses it (§5.12)",
              W::kAtOnce));
  const StepRecord& back = run.Do(q, "pread(fd, 8 bytes, 64 KiB)", op::Pread("F", 64 * kKiB, 8));
  const std::string got = back.value.is_string() ? back.value.get<std::string>() : "";
  const char want = xfs ? 's' : 'w';
  run.Check(fmt::format("F at 64 KiB holds {}", xfs ? "its old bytes" : "Q's bytes"),
            got == std::string(8, want), got,
            xfs ? "the refused write changed nothing" : "the overwrite landed");
  const auto pins = run.Pins();
  const bool untouched = OneLease(run, LEASEFS_STATE_ACTIVE, 1) && pins.size() == 1 &&
                         (pins[0].flags & LEASEFS_PIN_REC_FENCED) == 0 &&
                         run.BlockMap("F") == before && run.FileSize("F") == kMiB;
  run.Check("P's lease and pin are untouched, F's block map and size too", untouched,
            LeaseWords(run) + "; " + PinWords(run) + "; " + Size(run.FileSize("F")),
            "§5.12: 'the lease and pins are untouched, in every mode'");
  run.Outcome("breaker", xfs ? "every write ETXTBSY" : "overwrite OK, extending write ETXTBSY");
  run.Outcome("data", untouched ? "lease, pin and block map untouched" : "CHANGED");
  run.Outcome("killed", "nobody");
  run.Outcome("quarantine", "none");
}

// --- §5.13: changes outside the leased, pinned range

void UnleasedRange(Run& run) {
  run.MakeFile("F", 2 * kMiB);
  run.MakeFile("G", kFileSize, 'g');
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  run.Say("the debate's leases were whole-file, and its P holds non-exclusive ones; a leasefs pin "
          "needs an exclusive lease (docs/pins.md 'Making a pin' 1), so P's lease is exclusive "
          "but covers only the pinned range: DESIGN.md §4's byte ranges, the 'range-granular "
          "lease extension' of §5.13");
  LeaseAndPin(run, p, "F", kFileSize, kFileSize);
  const std::string before = run.BlockMap("F");
  run.Do(q, "truncate(\"G\", 0)", op::Truncate("G", 0),
         Must("OK", "G has no lease and no pins ([v2] cover item 9, §1 F.21: 'truncate of pages "
                    "that are neither pinned nor covered by a lease succeeds')",
              W::kAtOnce));
  run.Do(q, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(q, "fallocate(fd, PUNCH_HOLE|KEEP_SIZE, 1 MiB, 64 KiB)",
         op::Fallocate("F", "punch", kMiB, kFileSize),
         Must("OK", "no lease covers [1 MiB, 1 MiB + 64 KiB): a change reaches only the leases "
                    "its range overlaps (docs/leases.md 'Which changes break which leases'; "
                    "§5.13)",
              W::kAtOnce));
  run.Do(q, "ftruncate(fd, 1536 KiB)", op::Ftruncate("F", 1536 * kKiB),
         Must("OK", "a size change reaches a lease only if the lease reaches the new or old end "
                    "of file (docs/leases.md 'Which changes break which leases')",
              W::kAtOnce));
  run.Do(q, "fallocate(fd, PUNCH_HOLE|KEEP_SIZE, 0, 64 KiB): the pinned range itself",
         op::Fallocate("F", "punch", 0, kFileSize),
         Must("ETXTBSY", "the contrast: over the pinned range the exclusive lease refuses "
                         "(§5.3, §1 F.21)",
              W::kAtOnce));
  // The pinned range is F's first 16 blocks: where its first extent starts.
  const std::string after = run.BlockMap("F");
  const bool kept = OneLease(run, LEASEFS_STATE_ACTIVE, 1) && run.Pins().size() == 1 &&
                    after.substr(0, after.find('.')) == before.substr(0, before.find('.'));
  run.Check("P's lease and pin untouched, F's pinned blocks where they were", kept,
            LeaseWords(run) + "; blocks " + before + " -> " + after, "§5.13");
  run.Outcome("breaker", "G: OK; F outside the lease: OK; F's pinned range: ETXTBSY");
  run.Outcome("data", "only unleased ranges changed");
  run.Outcome("killed", "nobody");
  run.Outcome("quarantine", "none");
}

// --- §5.15: unbreakable leases

void Unbreakable(Run& run) {
  run.MakeFile("F", kFileSize);
  run.MakeFile("G", kFileSize, 'g');
  Actor& p = run.Spawn("P");
  Actor& r = run.Spawn("R");
  Actor& s = run.Spawn("S");
  run.Say("[Sep19]'s sequence: take WRLCK|LAYOUT, fix the layout, convert to an unbreakable "
          "lease (§1 B.7)");
  run.Do(p, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  const StepRecord& l = run.Do(p, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT)",
                               op::Lease("F", "write", {}, 0, 0, true),
                               Must("OK", "exclusive ownership of the layout ([Sep19], §1 B.7)"));
  const uint64_t id = l.value.is_number() ? l.value.get<uint64_t>() : 0;
  run.Do(p, "fallocate(fd, 0, 0, 256 KiB): preallocate", op::Fallocate("F", "alloc", 0, 256 * kKiB),
         Must("OK", "the WRLCK|LAYOUT holder's own layout change does not break its lease "
                    "([Sep19]; §1 D.15)"));
  run.Do(p, "convert to F_RDLCK|F_LAYOUT|F_UNBREAK", op::Convert("F", id, "read", {"unbreakable"}),
         Must("OK", "converted atomically, as nobody broke the write layout lease ([Sep19], "
                    "§1 B.7)"));
  run.Do(r, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(r, "fcntl(fd, F_SETLEASE, F_RDLCK|F_LAYOUT|F_UNBREAK)",
         op::Lease("F", "read", {"unbreakable"}),
         Must("OK", "RDLCK|LAYOUT|UNBREAK is shared: several processes may hold it ([Sep19], "
                    "§1 B.7)"));
  run.Do(s, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(s, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_UNBREAK)",
         op::Lease("F", "write", {"unbreakable"}),
         Must("EAGAIN", "WRLCK|LAYOUT|UNBREAK must fail while any RDLCK|LAYOUT|UNBREAK exists "
                        "([Sep19], §1 B.7); EAGAIN, as for any conflicting lease (docs/leases.md "
                        "'Acquiring' 6)"));
  run.Do(s, "ftruncate(fd, 4 KiB)", op::Ftruncate("F", 4096),
         Must("ETXTBSY", "any attempt to break an unbreakable lease fails with ETXTBSY, no "
                         "signal, no timeout ([Sep19], §1 B.7, E.20)",
              W::kAtOnce));
  if (run.root()) {
    Actor& u = run.Spawn("U", 65534);
    run.Do(u, "fd = open(\"F\", O_RDWR) (F is mode 0666)", op::Open("F", "rw"));
    run.Do(u, "fcntl(fd, F_SETLEASE, F_RDLCK|F_LAYOUT|F_UNBREAK)",
           op::Lease("F", "read", {"unbreakable"}),
           Must("EACCES", "setting F_UNBREAK requires the caller's uid to own the file ([Sep19], "
                          "§1 B.7; generic_setlease, §1 C.9)"));
  } else {
    run.Say("a non-owner's F_UNBREAK (EACCES): skipped: needs root (an actor runs as another "
            "user only when leasectl is root)");
  }

  run.Say("the conversion after someone broke the WRLCK|LAYOUT lease");
  run.Do(p, "gfd = open(\"G\", O_RDWR)", op::Open("G", "rw"));
  const StepRecord& l2 = run.Do(p, "fcntl(gfd, F_SETLEASE, F_WRLCK|F_LAYOUT)",
                                op::Lease("G", "write", {}, 0, 0, true));
  const uint64_t id2 = l2.value.is_number() ? l2.value.get<uint64_t>() : 0;
  run.Do(p, "fallocate(gfd, 0, 0, 256 KiB)", op::Fallocate("G", "alloc", 0, 256 * kKiB));
  const StepRecord& t =
      run.Do(s, "truncate(\"G\", 128 KiB)", op::Truncate("G", 128 * kKiB),
             Must("OK", "another process's layout change breaks the WRLCK|LAYOUT lease; P "
                        "ignores the signal, so the lease is revoked at the break time "
                        "(§1 E.17)",
                  W::kBreakTime));
  const double waited = t.seconds;
  run.Notices(p, "break-signal", 1, 1000);
  run.Do(p, "convert to F_RDLCK|F_LAYOUT|F_UNBREAK", op::Convert("G", id2, "read", {"unbreakable"}),
         Must("EAGAIN", "the conversion holds only 'as long as no other user broke the write "
                        "layout lease' ([Sep19], §1 B.7): it was broken (docs/leases.md "
                        "'Conversion')"));
  run.Do(p, "fcntl(gfd, F_SETLEASE, F_UNLCK): P starts again", op::Unlock("G"));
  const StepRecord& l3 = run.Do(p, "fcntl(gfd, F_SETLEASE, F_WRLCK|F_LAYOUT)",
                                op::Lease("G", "write", {}, 0, 0, true));
  const uint64_t id3 = l3.value.is_number() ? l3.value.get<uint64_t>() : 0;
  run.Do(p, "fallocate(gfd, 0, 0, 256 KiB)", op::Fallocate("G", "alloc", 0, 256 * kKiB));
  run.Do(p, "convert to F_RDLCK|F_LAYOUT|F_UNBREAK", op::Convert("G", id3, "read", {"unbreakable"}),
         Must("OK", "unbroken this time: the conversion succeeds ([Sep19], §1 B.7)"));
  run.Outcome("breaker", fmt::format("S: lease EAGAIN, ftruncate ETXTBSY at once; G's breaker OK "
                                     "after {:.1f} s",
                                     waited));
  run.Outcome("data", "conversion after a break EAGAIN; after starting again OK");
  run.Outcome("killed", "nobody");
  run.Outcome("quarantine", "none");
}

// --- §5.16: ODP against a pin, with Debian's perftest

// A program leasectl runs itself (actors do not exec), its output in a
// memfd. Killed (by its pid) and reaped if it still runs when this goes.
class Program {
 public:
  explicit Program(const std::vector<std::string>& argv) {
    out_ = memfd_create("leasectl-program", MFD_CLOEXEC);
    std::vector<char*> v;
    for (const std::string& a : argv) v.push_back(const_cast<char*>(a.c_str()));
    v.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // it goes with leasectl, whatever ends that
      const int null = open("/dev/null", O_RDONLY);
      if (null >= 0) dup2(null, 0);
      dup2(out_, 1);
      dup2(out_, 2);
      execv(v[0], v.data());
      _exit(127);
    }
    if (pid_ < 0) throw ScenarioAbort("fork: cannot start " + argv[1]);
  }
  ~Program() {
    if (pid_ > 0 && status_ < 0) {
      kill(pid_, SIGKILL);
      (void)Wait(5000);
    }
    if (out_ >= 0) close(out_);
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  pid_t pid() const { return pid_; }
  bool Running() { return Wait(0) < 0; }
  // Its exit code (128 + signal), or -1 while it runs after `ms`.
  int Wait(int ms) {
    for (int waited = 0; status_ < 0; waited += 10) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_)
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      else if (waited >= ms || g_scenario_interrupted)
        break;
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }
  std::string Output() const { return ReadWhole(out_); }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int status_ = -1;
};

// leasefs-run: $LEASEFS_RUN_BIN, else beside leasectl, else in a build
// tree's tools/run/ (leasectl is tools/leasectl there), else on $PATH.
std::string LeasefsRun() {
  std::string p = FindTool("LEASEFS_RUN_BIN", "leasefs-run");
  if (p.empty()) p = FindTool("LEASEFS_RUN_BIN", "run/leasefs-run");
  return p;
}

std::string IbWriteBw() { return FindTool("IB_WRITE_BW_BIN", "ib_write_bw"); }

// A TCP port nothing listens on now (the kernel's choice of a free one).
uint16_t FreePort() {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = s >= 0 && bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (s >= 0) close(s);
  if (!ok) throw ScenarioAbort("no free TCP port");
  return ntohs(a.sin_port);
}

// Whether a TCP socket listens on `port` (IPv4, any address).
bool Listening(uint16_t port) {
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

std::string ReadAt(Run& run, const std::string& path, off_t off, size_t len) {
  const int fd = open(run.mount().path(path).c_str(), O_RDONLY | O_CLOEXEC);
  std::string buf(len, '\0');
  const ssize_t n = fd < 0 ? -1 : pread(fd, buf.data(), len, off);
  if (fd >= 0) close(fd);
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

bool Pinned(Run& run, const std::string& path) {
  struct stat st {};
  if (stat(run.mount().path(path).c_str(), &st) != 0) return false;
  for (const auto& p : run.Pins())
    if (p.ino == st.st_ino) return true;
  return false;
}

// The last lines of a program's output, for a failure message.
std::string Tail(const std::string& out) {
  return out.size() > 600 ? "..." + out.substr(out.size() - 600) : out;
}

// One ib_write_bw pair with both buffers in files of the mount, the server
// registering its file with or without --odp; then Q truncates the server's
// file. Returns the breaker column's words.
std::string PerftestPair(Run& run, Actor& q, bool odp) {
  constexpr uint64_t kBuf = 2 * kMiB;
  const std::string sfile = odp ? "S-odp" : "S-pin", cfile = odp ? "C-odp" : "C-pin";
  run.MakeFile(sfile, kBuf, '.');
  run.MakeFile(cfile, kBuf, '.');
  const uint16_t port = FreePort();
  std::vector<std::string> args = {LeasefsRun(), IbWriteBw(), "-s", "65536", "-D",
                                   odp ? "60" : "3", "-p", std::to_string(port)};
  if (odp) args.push_back("--odp");
  std::vector<std::string> server = args, client = args;
  server.push_back("--mmap=" + run.mount().path(sfile));
  client.push_back("--mmap=" + run.mount().path(cfile));
  client.push_back("127.0.0.1");
  const std::string tag = odp ? " --odp" : "";
  Program s(server);
  run.Name(s.pid(), odp ? "S" : "S2",
           fmt::format("leasefs-run ib_write_bw{} --mmap={} (server: registers its buffer in {} "
                       "for the peer's WRITEs)",
                       tag, sfile, sfile));
  for (int i = 0; i < 3000 && !Listening(port) && s.Running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!Listening(port)) throw ScenarioAbort("ib_write_bw's server did not listen: " + Tail(s.Output()));
  Program c(client);
  run.Name(c.pid(), odp ? "C" : "C2",
           fmt::format("leasefs-run ib_write_bw{} --mmap={} 127.0.0.1 (the remote peer, "
                       "writing 64 KiB messages for {} s)",
                       tag, cfile, odp ? 60 : 3));
  // The debate's truncate meets an MR in use: so it comes once a WRITE has
  // landed, not while perftest still fills its buffer after registering it
  // (a break then, with the program storing through the mapping, is another
  // case). perftest fills each buffer with random bytes once registered, and
  // the client's message lands in the second half of the server's.
  const std::string dots(4096, '.');
  bool writing = false;
  for (int i = 0; i < 3000 && !writing && s.Running() && c.Running(); ++i) {
    const std::string sent = ReadAt(run, cfile, 0, 4096);
    writing = sent != dots && ReadAt(run, sfile, 65536, 4096) == sent;
    if (!writing) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!writing)
    throw ScenarioAbort("ib_write_bw's WRITEs did not reach the server's buffer: " +
                        Tail(s.Output()) + "\n" + Tail(c.Output()));
  const bool pinned = Pinned(run, sfile);
  if (odp) {
    run.Check(fmt::format("`leasectl pins`: S's ODP registration pins nothing of {}", sfile),
              !pinned, pinned ? "a pin" : "no pin",
              "an ODP MR takes no long-term pin: the device faults pages in through the MMU "
              "([Jason], §2 'Recommended path'; docs/verbs.md 'On-demand paging')");
    run.Do(q, fmt::format("truncate(\"{}\", 0)", sfile), op::Truncate(sfile, 0),
           Must("OK",
                "nothing is pinned: the shim's plain lease breaks, it drops its mapping after the "
                "MR's range is invalidated (mmu_interval_notifier, §3 'ODP path'), and the "
                "truncate goes on without waiting (§5.16; docs/verbs.md)",
                W::kAtOnce));
    run.MakeFile("newcomer", kBuf, 'Z');
    const int crc = c.Wait(60000);
    const std::string out = c.Output();
    run.Check("the peer's next WRITE faults: ib_write_bw exits 1, status 10 "
              "(IBV_WC_REM_ACCESS_ERR)",
              crc == 1 && out.find("Failed status 10") != std::string::npos,
              fmt::format("exit {}: {}", crc, out.find("Completion with error") != std::string::npos
                                                  ? "Completion with error, status 10"
                                                  : Tail(out)),
              "later remote access to the freed blocks faults with a remote access error "
              "(§5.16)");
    const int src = s.Wait(60000);
    run.Say(fmt::format("S ends too (exit {})", src));
    const std::string n = run.ReadFile("newcomer", kBuf);
    run.Check(fmt::format("the newcomer, which may have {}'s freed blocks, holds only its 2 MiB "
                          "of 'Z'",
                          sfile),
              n == std::string(kBuf, 'Z'),
              fmt::format("{} bytes of 'Z'", std::count(n.begin(), n.end(), 'Z')),
              "no freed PM block is ever written by the device (§5.16)");
    return "--odp: OK at once, the peer faults";
  }
  run.Check(fmt::format("`leasectl pins`: S2's registration is a pin of {}", sfile), pinned,
            pinned ? "a pin" : "no pin",
            "without ODP, ibv_reg_mr of a DAX mapping is a long-term pin (§1 A.3; docs/verbs.md)");
  run.Do(q, fmt::format("truncate(\"{}\", 0)", sfile), op::Truncate(sfile, 0),
         Must("ETXTBSY",
              "the registration is a pin under the shim's exclusive lease: pinned_break=refuse "
              "gives ETXTBSY at once ([v2], §1 F.21; docs/verbs.md)",
              W::kAtOnce));
  const int crc = c.Wait(60000), src = s.Wait(60000);
  run.Check("the run completes: both ib_write_bw exit 0, the file keeps its 2 MiB",
            crc == 0 && src == 0 && run.FileSize(sfile) == kBuf,
            fmt::format("client {}, server {}, {}", crc, src, Size(run.FileSize(sfile))),
            "a refused truncate changed nothing (§5.3)");
  return "pinned: ETXTBSY at once";
}

void Odp(Run& run) {
  Actor& q = run.Spawn("Q");
  run.Say("S and C are Debian's ib_write_bw, unmodified, under leasefs-run (the emulated device "
          "leasefs0, docs/verbs.md); leasectl starts them itself. Q changes the layout");
  const std::string odp = PerftestPair(run, q, true);
  run.Say("the contrast: the same run without --odp");
  const std::string pin = PerftestPair(run, q, false);
  run.Outcome("breaker", odp + "; " + pin);
  run.Outcome("data", "--odp: newcomer intact; pinned: file kept, run completed");
  run.Outcome("killed", "nobody");
  run.Outcome("quarantine", "none");
}

std::string OdpUnavailable() {
  if (IbWriteBw().empty()) return "ib_write_bw not installed (Debian's perftest)";
  if (LeasefsRun().empty()) return "leasefs-run not found (set LEASEFS_RUN_BIN)";
  return "";
}

}  // namespace

void AddLeaseScenarios(std::vector<ScenarioDef>* out) {
  const std::vector<std::string> kPassing = {"follow-fd", "strict"};
  const Policy kFast = {{"lease_break_time", "1"}};
  out->push_back({"scm-rights", "§5.7", "a verbs context passed with SCM_RIGHTS, its creator gone",
                  "Given P holds an exclusive lease and pins through context U. When P sends U "
                  "to Q and exits. Then under follow-fd the pins persist (truncate ETXTBSY, "
                  "listed), and Q cannot pin more (EPERM) until it takes its own lease; under "
                  "strict the pins are aborted when P goes.",
                  {{"pin_passing", kPassing}}, kFast, ScmRights, Always});
  out->push_back({"fork", "§5.8", "a verbs context inherited by fork, the parent gone",
                  "Given P holds a lease and pins, then forks C. When P exits and C keeps U. "
                  "Then under follow-fd the pins remain (listed); under strict they are "
                  "aborted.",
                  {{"pin_passing", kPassing}}, kFast, ForkScenario, Always});
  out->push_back({"break-timeout", "§5.10",
                  "a holder that ignores the break: revoked at the break time; pins fenced",
                  "Given lease_break_time=2 and P holding a breakable layout lease, ignoring "
                  "the signal. When Q punches a hole: P is signalled once, its lease reads as "
                  "breaking, Q waits about 2 s, the lease is revoked, the punch succeeds. With "
                  "O_NONBLOCK, EWOULDBLOCK. With pins under pinned_break=fence, the pins are "
                  "fenced at the timeout before the blocks are freed.",
                  {{"pinned_break", {"fence", "refuse", "wait"}}},
                  {{"lease_break_time", "2"}}, BreakTimeout, Always});
  out->push_back({"must-not-break", "§5.12", "opens, reads, stores and overwrites break nothing",
                  "Given an exclusive lease and pins over F. When another process opens it "
                  "O_RDWR and reads: OK, lease and pins untouched. A pwrite into allocated "
                  "blocks: OK under unmap-only, ETXTBSY under xfs-faithful; an extending write "
                  "ETXTBSY in both.",
                  {{"write_break", {"unmap-only", "xfs-faithful"}}}, kFast, MustNotBreak, Always});
  out->push_back({"unleased-range", "§5.13", "changes outside the leased, pinned range succeed",
                  "Given P's pins cover [0, 64 KiB) of F under a range lease. When Q truncates "
                  "an unrelated G, or punches [1 MiB, 1 MiB + 64 KiB) of F: OK ([v2] item 9).",
                  {}, kFast, UnleasedRange, Always});
  out->push_back({"unbreakable", "§5.15", "F_UNBREAK: shared reads, no unbreakable writer, "
                  "owner only, atomic conversion",
                  "Given P converts WRLCK|LAYOUT to RDLCK|LAYOUT|UNBREAK and R takes "
                  "RDLCK|LAYOUT|UNBREAK. When S asks WRLCK|LAYOUT|UNBREAK: EAGAIN; a non-owner "
                  "asking F_UNBREAK: EACCES; a conversion after someone broke the WRLCK: EAGAIN, "
                  "and P starts again.",
                  {}, kFast, Unbreakable, Always});
  out->push_back({"odp", "§5.16", "ODP against a pin: ib_write_bw --odp, then without",
                  "Given ib_write_bw --mmap=F --odp (an ODP MR, no pin). When Q truncates F: it "
                  "succeeds at once, the peer's next WRITE faults, and F's freed blocks are "
                  "never written. Without --odp: ETXTBSY.",
                  {}, {{"lease_break_time", "10"}}, Odp, OdpUnavailable});
}

}  // namespace leasefs::leasectl
