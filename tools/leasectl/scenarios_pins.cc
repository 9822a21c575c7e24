// The scenarios of the debate where pins meet leases: the seed message's
// sequence and semantics-2019 §5 1-6, 9, 11 and 14. The "why" of each
// decisive step cites the rule as semantics-2019 does ([v2] 02/19, §1 F.21:
// item 21 of its section 1 F).
#include <fmt/core.h>

#include "tools/leasectl/scenario.h"

namespace leasefs::leasectl {

namespace {

using W = Expect::Wait;


const std::string kExclusiveWhy =
    "a pin needs a layout lease with F_EXCLUSIVE held by the pinning process ([v2] 04/19, "
    "§1 F.21); an exclusive lease is alone on its range ([v2] 02/19, §1 B.6)";

// What the seed message's P does before it lets go: open, an exclusive layout
// lease, a DAX mapping, a store through it, a registration (a pin of the soft
// NIC: the daemon's stand-in for an RDMA adapter). Returns the rkey.
uint64_t OpenLeaseMapPin(Run& run, Actor& p, const std::string& file = "F",
                         uint64_t length = kFileSize) {
  run.Do(p, fmt::format("fd = open(\"{}\", O_RDWR)", file), op::Open(file, "rw"));
  run.Do(p, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_EXCLUSIVE)",
         op::Lease(file, "write", {"exclusive"}),
         Must("OK", "the file's owner may take an exclusive layout lease ([v2] 02/19, §1 C.9)"));
  run.Do(p, fmt::format("addr = mmap(fd, {} KiB, MAP_SHARED): a DAX mapping of the pool's blocks",
                        length / kKiB),
         op::Map(file, 0, length));
  run.Do(p, "memcpy(addr, \"hello\", 5)", op::Store("map", 0, "hello"));
  run.Do(p, "ctx = ibv_open_device(softnic)", op::Context(file));
  const StepRecord& pin =
      run.Do(p, fmt::format("mr = ibv_reg_mr(pd, addr, {} KiB, REMOTE_WRITE|REMOTE_READ)",
                            length / kKiB),
             op::Pin(file, 0, length), Must("OK", kExclusiveWhy));
  return pin.value.value("rkey", uint64_t{0});
}

// A remote peer's one-sided WRITE with the rkey, and where it went.
void PeerWrites(Run& run, Actor& r, uint64_t rkey, const std::string& text, bool lands) {
  const StepRecord& s =
      run.Do(r, fmt::format("ibv_post_send(RDMA_WRITE \"{}\" to rkey {:#x} at 0)", text, rkey),
             op::PeerWrite(rkey, 0, text));
  const std::string got = s.value.is_string() ? s.value.get<std::string>() : "";
  if (lands) {
    run.Check(fmt::format("the peer's WRITE completes and its bytes are in F"),
              got == "success" && run.ReadFile("F", text.size()) == text,
              got + ", F begins \"" + run.ReadFile("F", text.size()) + "\"",
              "a pin gives the device the file's blocks: a WRITE lands in them without any "
              "page fault the filesystem could see (§1 A.3)");
  } else {
    run.Check("the peer's WRITE fails with a remote access error (IBV_WC_REM_ACCESS_ERR)",
              got == "remote access error", got,
              "a fenced registration is refused by the NIC, as pNFS fences a client whose "
              "layout was recalled (§4); the freed blocks cannot be written");
  }
}

// The close of the seed sequence under the mount's close_with_pins. Returns
// whether the pins outlived it.
bool CloseWithPins(Run& run, Actor& p) {
  if (run.Is("close_with_pins", "zombie")) {
    run.Do(p, "close(fd)", op::Close("F"),
           Must("OK",
                "close_with_pins=zombie: close succeeds; the lease lives on with the pins, "
                "listed as ZOMBIE ([v2], §1 G.25)",
                W::kAtOnce));
    run.Outcome("close", "returned at once (lease ZOMBIE)");
    return true;
  }
  if (run.Is("close_with_pins", "block-close")) {
    run.Do(p, "a second thread of P will call ibv_dereg_mr(mr) in 1 s", op::UnpinLater(1000));
    Pending c = run.Start(p, "close(fd)", op::Close("F"));
    run.StillWaiting(c, 300,
                     "close_with_pins=block-close: the last close blocks while the MR is live "
                     "([Dave], §1 G.26)");
    const StepRecord& s =
        run.Finish(c, Must("OK", "close returns once the other thread deregistered (§5.4)"));
    run.Outcome("close", fmt::format("blocked {:.1f} s, until the MR went", s.seconds));
    return false;
  }
  Pending c = run.Start(p, "close(fd)", op::Close("F"));
  run.Finish(c, Must("OK|killed",
                     "close(2) itself returns: FUSE tells the daemon of an open file's last close "
                     "only afterwards (RELEASE), and that is when the policy acts; the SIGKILL may "
                     "come before P has told of the return (docs/pins.md)"));
  run.ExpectKilled(p, 5000,
                   "close_with_pins=kill-on-close: the lease is removed and the pin's owner gets "
                   "SIGKILL ([Jan], §1 G.27; §5.5)");
  // The daemon kills the holders, then aborts the pins: the lease goes with
  // the last pin, a moment after P is reaped.
  run.CheckNothingHeld("P's pins and lease are gone",
                       "the close aborts the file's pins and the lease goes with them (§5.5)",
                       5000);
  run.Outcome("close", "returned, then P was killed");
  run.Outcome("killed", "P (SIGKILL at close)");
  return false;
}

// The seed message (../shared/context/000_59c267f28f7d50ae.txt): open,
// lease, mmap, ib_reg_mr, munmap, close; then another process truncates.
void Seed(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  Actor& r = run.Spawn("R");
  run.Say("P is the RDMA program of the seed message; Q another program; R a remote peer");
  const uint64_t rkey = OpenLeaseMapPin(run, p);
  PeerWrites(run, r, rkey, "from R", true);
  run.Do(p, "munmap(addr)", op::Unmap("F"),
         Must("OK", "munmap does not end a registration: the MR keeps its pages (§1 G.24)"));
  const bool pinned = CloseWithPins(run, p);
  run.Outcome("killed", run.outcome().count("killed") ? run.outcome().at("killed") : "nobody");
  if (!pinned) {
    run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
           Must("OK", "no pin is left: nothing stands in the way", W::kAtOnce));
    run.Outcome("breaker", "OK at once");
    run.Outcome("data", "F truncated; no pin left");
    run.Outcome("quarantine", "none");
    return;
  }
  if (run.Is("pinned_break", "refuse")) {
    run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
           Must("ETXTBSY",
                "pinned_break=refuse: a change that would free pinned blocks fails at once, the "
                "block map unchanged ([v2] 02/19, §1 F.21; §5.3)",
                W::kAtOnce));
    run.Check("F still holds its 64 KiB and R's bytes", run.FileSize("F") == kFileSize &&
                  run.ReadFile("F", 6) == "from R",
              fmt::format("{} bytes, \"{}\"", run.FileSize("F"), run.ReadFile("F", 6)),
              "ETXTBSY changed nothing");
    run.Outcome("breaker", "ETXTBSY at once");
    run.Outcome("data", "F kept; R's WRITEs still land");
    run.Outcome("quarantine", "none");
    run.Do(p, "ibv_dereg_mr(mr)", op::Unpin(),
           Must("OK", "the last pin goes, and the ZOMBIE lease with it (§5.3)"));
    run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
           Must("OK", "no lease, no pin: the truncate proceeds (§5.3)", W::kAtOnce));
    return;
  }
  if (run.Is("pinned_break", "fence")) {
    const StepRecord& t = run.Do(
        q, "truncate(\"F\", 0)", op::Truncate("F", 0),
        Must("OK",
             "pinned_break=fence: the lease is recalled as pNFS recalls a layout; a ZOMBIE "
             "lease has nobody to recall, so its pins are fenced at once and the change "
             "proceeds (§4, §5.10's last line)",
             W::kAtOnce));
    const uint64_t q_bytes = run.QuarantinedBytes();
    run.Outcome("breaker", fmt::format("OK after {:.1f} ms (fenced)", t.seconds * 1000));
    PeerWrites(run, r, rkey, "late", false);
    run.Check("F is empty, and its old blocks never got R's late WRITE",
              run.FileSize("F") == 0, fmt::format("{} bytes", run.FileSize("F")),
              "the truncate freed the blocks only after the fence (§6: break, check pins, "
              "then free)");
    run.Outcome("data", "F truncated; R's late WRITE refused");
    run.Outcome("quarantine", q_bytes == 0 ? "none"
                                           : fmt::format("{} KiB until P lets go", q_bytes / kKiB));
    run.Do(p, "ibv_dereg_mr(mr) (fenced: the MR is dead; P lets it go)", op::Unpin());
    return;
  }
  // wait
  Pending t = run.Start(q, "truncate(\"F\", 0)", op::Truncate("F", 0));
  run.StillWaiting(t, static_cast<int>(run.break_time() * 1000) + 300,
                   "pinned_break=wait: the change waits past the break time while pins remain");
  run.Do(p, "ibv_dereg_mr(mr)", op::Unpin());
  const StepRecord& s = run.Finish(t, Must("OK", "the pins are gone: the truncate proceeds"));
  run.Outcome("breaker", fmt::format("OK after {:.1f} s (waited for dereg)", s.seconds));
  run.Outcome("data", "F truncated after the MR went");
  run.Outcome("quarantine", "none");
}

// §5.1: a registration without a lease.
void PinWithoutLease(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  run.Do(p, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(p, "ctx = ibv_open_device(softnic)", op::Context("F"));
  run.Do(p, "ibv_reg_mr(pd, F's 64 KiB) with no lease", op::Pin("F", 0, kFileSize),
         Must("EPERM", "no lease, no pin ([v2] 04/19; the kernel itself says EOPNOTSUPP from "
                       "check_vma_flags for FS-DAX, §3)"));
  run.Do(p, "fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_EXCLUSIVE)",
         op::Lease("F", "write", {"exclusive"}));
  run.Do(p, "ibv_reg_mr(pd, F's 64 KiB) again", op::Pin("F", 0, kFileSize),
         Must("OK", kExclusiveWhy));
  run.Outcome("breaker", "-");
  run.Outcome("data", "pin refused without a lease");
}

// §5.2: a registration under a lease that is not exclusive; then a breaker.
void PinNonExclusive(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  run.Do(p, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(p, "fcntl(fd, F_SETSIG, SIGRTMIN+2); fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT)",
         op::Lease("F", "write", {}, 0, 0, true, "ignore"));
  run.Do(p, "ctx = ibv_open_device(softnic)", op::Context("F"));
  run.Do(p, "ibv_reg_mr(pd, F's 64 KiB)", op::Pin("F", 0, kFileSize),
         Must("EPERM", "a breakable lease cannot promise the layout a pin needs: F_EXCLUSIVE "
                       "is required ([v2] 04/19, §1 F.21)"));
  const StepRecord& t = run.Do(
      q, "truncate(\"F\", 4096)", op::Truncate("F", 4096),
      Must("OK",
           "a breakable layout lease is broken: its holder gets the signal and has the "
           "lease-break time to release; P ignores it, so the lease is revoked and the truncate "
           "goes on (§1 E.17-19, §5.2)",
           W::kBreakTime));
  run.Outcome("breaker", fmt::format("OK after {:.1f} s (break time)", t.seconds));
  run.Outcome("data", "F truncated after the revoke");
}

// §5.3-5: the seed sequence's close, under each close policy.
void CloseScenario(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  OpenLeaseMapPin(run, p);
  run.Do(p, "munmap(addr)", op::Unmap("F"));
  const bool pinned = CloseWithPins(run, p);
  if (pinned) {
    bool zombie = false;
    for (const auto& l : run.Leases()) zombie |= l.state == LEASEFS_STATE_ZOMBIE && l.pins == 1;
    run.Check("`leasectl leases` lists P's lease as zombie with 1 pin", zombie,
              zombie ? "zombie" : "no zombie lease",
              "a pin never outlives its lease ([Jason], §1 H.30): the lease stays, shown as such");
    run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
           Must("ETXTBSY", "the ZOMBIE exclusive lease refuses the change at once ([v2], §5.3)",
                W::kAtOnce));
    run.Outcome("breaker", "ETXTBSY at once");
    run.Do(p, "ibv_dereg_mr(mr)", op::Unpin(),
           Must("OK", "the last pin goes; the ZOMBIE lease goes with it (§5.3)"));
    run.Check("no lease is left", run.Leases().empty(),
              fmt::format("{} leases", run.Leases().size()), "§5.3's last line");
  }
  run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
         Must("OK", "no lease, no pin: the truncate proceeds", W::kAtOnce));
  if (!pinned) run.Outcome("breaker", "OK at once");
  if (!run.outcome().count("killed")) run.Outcome("killed", "nobody");
  if (run.Is("close_with_pins", "block-close")) {
    run.Say("the other half of §5.4: SIGKILL while close is blocked");
    run.MakeFile("G", kFileSize);
    Actor& p2 = run.Spawn("P2");
    OpenLeaseMapPin(run, p2, "G");
    Pending c = run.Start(p2, "close(fd)", op::Close("G"));
    run.StillWaiting(c, 300, "blocked while the MR is live");
    run.Kill(p2, "a blocked close must not make the process unkillable ([Jason], §5.4)");
    run.Finish(c, Must("killed", "P2 dies in close, without a hang"));
    run.CheckNothingHeld("P2's pin and lease are gone",
                         "the exit path skips the wait and releases what P2 held (§5.4, §1 J)",
                         3000);
    run.Do(q, "truncate(\"G\", 0)", op::Truncate("G", 0), Must("OK", "§5.4's last line"));
    run.Outcome("killed", "P2 (SIGKILL by leasectl, in close)");
  }
  run.Outcome("data", "F truncated once the pin went");
}

// §5.6: P is SIGKILLed holding everything.
void SigkillOrder(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  OpenLeaseMapPin(run, p);
  run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
         Must("ETXTBSY", "the pinned exclusive lease refuses it (§5.3)", W::kAtOnce));
  run.Kill(p, "P keeps its data fd and its verbs context open; the kernel closes them in any "
              "order as P exits ([Jason], §5.6)");
  run.CheckNothingHeld("P's pin and lease are gone",
                       "process death releases its leases and pins under every close policy (§1 J)",
                       3000);
  run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
         Must("OK", "nothing is left in the way (§5.6)", W::kAtOnce));
  run.Outcome("breaker", "ETXTBSY, then OK once P died");
  run.Outcome("killed", "P (SIGKILL by leasectl)");
}

// §5.9: the holder's own truncate over its pins.
void SelfTruncate(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  OpenLeaseMapPin(run, p);
  run.Do(p, "ftruncate(fd, 0)", op::Ftruncate("F", 0),
         Must("EDEADLOCK",
              "the holder of an exclusive lease changing its own pinned layout is a programming "
              "bug ([v2] 02/19, §1 B.6); [Willy]: block-freeing by the holder checks pins too",
              W::kAtOnce));
  run.Outcome("breaker", "P: EDEADLOCK; Q: ");
  if (run.Is("pinned_break", "refuse")) {
    run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
           Must("ETXTBSY", "another process's change meets the pins: ETXTBSY (§5.3)", W::kAtOnce));
    run.Outcome("breaker", "P: EDEADLOCK; Q: ETXTBSY");
  } else if (run.Is("pinned_break", "fence")) {
    run.Do(q, "truncate(\"F\", 0)", op::Truncate("F", 0),
           Must("OK",
                "pinned_break=fence: another process's change recalls the lease; P, alive, does "
                "not answer, so at the break time its pins are fenced and the lease revoked "
                "(§4, §5.10)",
                W::kBreakTime));
    run.Outcome("breaker", "P: EDEADLOCK; Q: OK after the break time (fenced)");
  } else {
    Pending t = run.Start(q, "truncate(\"F\", 0)", op::Truncate("F", 0));
    run.StillWaiting(t, static_cast<int>(run.break_time() * 1000) + 300,
                     "pinned_break=wait: the change waits while the pins remain");
    run.Do(p, "ibv_dereg_mr(mr)", op::Unpin());
    run.Finish(t, Must("OK", "the pins are gone; the lease is revoked, the change proceeds"));
    run.Outcome("breaker", "P: EDEADLOCK; Q: waits for the dereg");
  }
}

// §5.11: every layout change over a pinned range, by another process.
void Operations(Run& run) {
  constexpr uint64_t kMiB = 1024 * kKiB;
  run.MakeFragmentedFile("F", kMiB);
  run.MakeFile("G", kMiB, 'g');
  Actor& p = run.Spawn("P");
  Actor& q = run.Spawn("Q");
  OpenLeaseMapPin(run, p, "F", kMiB);
  const std::string before = run.BlockMap("F");
  run.Say("F's blocks: " + before);
  run.Do(q, "fd = open(\"F\", O_RDWR)", op::Open("F", "rw"));
  run.Do(q, "gfd = open(\"G\", O_RDWR)", op::Open("G", "rw"));
  const std::string why = "every block-freeing or remapping change meets the pinned exclusive "
                          "lease: ETXTBSY, block map untouched ([v2], §5.11)";
  struct Change {
    std::string text;
    Json req;
  };
  const std::vector<Change> changes = {
      {"ftruncate(fd, 512 KiB) (shrink)", op::Ftruncate("F", 512 * kKiB)},
      {"ftruncate(fd, 2 MiB) (grow)", op::Ftruncate("F", 2 * kMiB)},
      {"fallocate(fd, PUNCH_HOLE|KEEP_SIZE, 0, 64 KiB)", op::Fallocate("F", "punch", 0, 64 * kKiB)},
      {"fallocate(fd, COLLAPSE_RANGE, 0, 64 KiB)", op::Fallocate("F", "collapse", 0, 64 * kKiB)},
      {"fallocate(fd, INSERT_RANGE, 0, 64 KiB)", op::Fallocate("F", "insert", 0, 64 * kKiB)},
      {"fallocate(fd, ZERO_RANGE, 0, 64 KiB)", op::Fallocate("F", "zero", 0, 64 * kKiB)},
      {"fallocate(fd, UNSHARE_RANGE, 0, 64 KiB)", op::Fallocate("F", "unshare", 0, 64 * kKiB)},
      {"fallocate(fd, 0, 0, 2 MiB) (preallocate past the end)", op::Fallocate("F", "alloc", 0, 2 * kMiB)},
      {"FICLONERANGE F -> G (F as source)", op::Clone("G", "F", 0, 64 * kKiB, 0)},
      {"FICLONERANGE G -> F (F as destination)", op::Clone("F", "G", 0, 64 * kKiB, 0)},
      {"EXT4_IOC_MOVE_EXT-style defrag of F", op::Defrag("F")},
  };
  int refused = 0;
  for (const Change& c : changes) {
    const StepRecord& s = run.Do(q, c.text, c.req, Must("ETXTBSY", why, W::kAtOnce));
    refused += s.met;
  }
  const std::string after = run.BlockMap("F");
  run.Check("F's block map is byte-identical", after == before, after, "§5.11's Then");
  run.Say("FIDEDUPERANGE: leasefs has no dedupe ioctl (the kernel refuses it on FUSE), so it is "
          "not tried");
  run.Outcome("breaker", fmt::format("{} of {} changes ETXTBSY", refused, changes.size()));
  run.Outcome("data", after == before ? "block map unchanged" : "block map CHANGED");
}

// §5.14: releasing a lease that counts pins.
void ReleaseWithPins(Run& run) {
  run.MakeFile("F", kFileSize);
  Actor& p = run.Spawn("P");
  OpenLeaseMapPin(run, p);
  run.Do(p, "fcntl(fd, F_SETLEASE, F_UNLCK)", op::Unlock("F"),
         Must("EBUSY", "a lease with pins cannot be released ([Jan], §1 F.22; §5.14). "
                       "(The alternative, blocking until the pins go, is not offered.)",
              W::kAtOnce));
  run.Do(p, "ibv_dereg_mr(mr)", op::Unpin());
  run.Do(p, "fcntl(fd, F_SETLEASE, F_UNLCK)", op::Unlock("F"),
         Must("OK", "no pins: the release succeeds (§5.14)"));
  run.Outcome("breaker", "-");
  run.Outcome("data", "unlock EBUSY until dereg");
}

}  // namespace

void AddPinScenarios(std::vector<ScenarioDef>* out) {
  const std::vector<std::string> kPinned = {"refuse", "fence", "wait"};
  const std::vector<std::string> kClose = {"zombie", "block-close", "kill-on-close"};
  const Policy kFast = {{"lease_break_time", "1"}};
  out->push_back({"seed", "seed message",
                  "open, lease, mmap, ibv_reg_mr, munmap, close; then another process truncates",
                  "Given P opens F, takes an exclusive layout lease, maps it (DAX), registers the "
                  "mapping with the NIC, unmaps and closes F (Ira's sequence in the seed message, "
                  "Aug 2019). When Q truncates F. Then: what the close did, what Q got, where "
                  "the remote peer's WRITEs went.",
                  {{"pinned_break", kPinned}, {"close_with_pins", kClose}}, kFast, Seed, Always});
  out->push_back({"pin-without-lease", "§5.1", "a registration without a lease is refused",
                  "Given P opens F O_RDWR and holds no lease. When P registers an MR over it. "
                  "Then EPERM ([v2] 04/19).",
                  {}, kFast, PinWithoutLease, Always});
  out->push_back({"pin-nonexclusive", "§5.2",
                  "a registration under a breakable lease is refused; a breaker waits it out",
                  "Given P holds F_LAYOUT without F_EXCLUSIVE. When P pins: EPERM. And another "
                  "process truncating F signals P and waits up to the lease-break time.",
                  {}, kFast, PinNonExclusive, Always});
  out->push_back({"close-zombie", "§5.3", "close with pins: the lease lives on as a zombie",
                  "The seed sequence; when Q truncates: ETXTBSY at once, the pins listed; after "
                  "ibv_dereg_mr the zombie lease is gone and Q's truncate succeeds.",
                  {{"close_with_pins", kClose}}, kFast, CloseScenario, Always});
  out->push_back({"close-block", "§5.4", "close with pins blocks until the MR goes",
                  "The seed sequence under block-close: close blocks while the MR lives and "
                  "returns after a dereg from another thread; SIGKILL during the block kills "
                  "without a hang.",
                  {{"close_with_pins", {"block-close", "zombie", "kill-on-close"}}}, kFast,
                  CloseScenario, Always});
  out->push_back({"close-kill", "§5.5", "close with pins kills the pin's owner",
                  "The seed sequence under kill-on-close: the lease is removed and P gets "
                  "SIGKILL; once P is reaped Q's truncate succeeds.",
                  {{"close_with_pins", {"kill-on-close", "zombie", "block-close"}}}, kFast,
                  CloseScenario, Always});
  out->push_back({"sigkill", "§5.6", "SIGKILL of a pinning process: no deadlock, nothing left",
                  "Given the seed sequence but P keeps its fds. When P is SIGKILLed: exit "
                  "finishes whatever order its fds close in; pins and lease are gone; a later "
                  "truncate succeeds.",
                  {{"close_with_pins", kClose}}, kFast, SigkillOrder, Always});
  out->push_back({"self-truncate", "§5.9", "the holder truncating its own pinned range",
                  "Given P holds an exclusive lease and a pin. When P truncates F itself: "
                  "EDEADLOCK ([v2] 02/19).",
                  {{"pinned_break", kPinned}}, kFast, SelfTruncate, Always});
  out->push_back({"operations", "§5.11", "every layout change over a pinned range is refused",
                  "Given an exclusive lease and pins over [0, 1 MiB). When another process "
                  "truncates, fallocates (every mode), clones to or from F or defragments it: "
                  "ETXTBSY each time, the block map byte-identical.",
                  {}, kFast, Operations, Always});
  out->push_back({"release-with-pins", "§5.14", "releasing a lease that counts pins",
                  "Given P holds an exclusive lease and pins. When F_UNLCK: EBUSY until every "
                  "pin is gone; then it succeeds.",
                  {}, kFast, ReleaseWithPins, Always});
}

}  // namespace leasefs::leasectl
