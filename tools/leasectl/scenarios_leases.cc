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
constexpr uint64_t kFileSize = 64 * kKiB;

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

std::string Always() { return ""; }

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
}

}  // namespace leasefs::leasectl
