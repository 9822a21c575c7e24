// `leasectl scenario`: the 2019 debate's cases (../shared/context/
// semantics-2019.md §5, and the seed message's sequence) as runs on a scratch
// pool, with real processes doing the steps (scenario_actor.h) and a numbered
// narrative of what each did, what leasefs decided and why.
//
// A scenario is a function of a Run. It spawns actors, tells them what to do
// step by step, and states for each decisive step what the debate says must
// happen under the policy the run has (Expect): the run's verdict is whether
// every such step came out so. It also fills in the outcome (the columns of
// `scenario compare`).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "leasefs/ioctl.h"
#include "tools/leasectl/scenario_actor.h"
#include "tools/leasectl/scratch_mount.h"

namespace leasefs::leasectl {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kBlock = 4096;
// The size of the file most scenarios share among their actors.
inline constexpr uint64_t kFileSize = 64 * kKiB;

// The mount options a scenario's outcome depends on, by name, as -o takes
// them: pinned_break, close_with_pins, pin_passing, write_break,
// lease_break_time.
using Policy = std::map<std::string, std::string>;

// The requests actors understand (scenario_actor.h), built by name.
namespace op {
Json Open(const std::string& path, const std::string& flags, const std::string& as = "");
Json Close(const std::string& fd);
Json Lease(const std::string& fd, const std::string& type, std::vector<std::string> flags = {},
           uint64_t off = 0, uint64_t len = 0, bool notify = true,
           const std::string& answer = "ignore");
Json Convert(const std::string& fd, uint64_t id, const std::string& type,
             std::vector<std::string> flags = {});
Json Unlock(const std::string& fd, uint64_t off = 0, uint64_t len = 0);
// The state of the open file's lease at `off` (LEASEFS_STATE_*), as the
// reply's value: what F_GETLEASE tells a holder during a break.
Json GetLease(const std::string& fd, uint64_t off = 0);
Json Map(const std::string& fd, uint64_t off, uint64_t len, const std::string& as = "map");
Json Store(const std::string& map, uint64_t off, const std::string& text);
Json Unmap(const std::string& fd, const std::string& map = "map");
Json Context(const std::string& fd, const std::string& as = "ctx");
Json Pin(const std::string& fd, uint64_t off, uint64_t len, const std::string& ctx = "ctx",
         const std::string& provider = "softnic");
Json Unpin(const std::string& ctx = "ctx", uint64_t id = 0);
Json ContextClose(const std::string& ctx = "ctx");
// Another thread of the actor unpins after `ms` (0 id: every pin of ctx).
Json UnpinLater(int ms, const std::string& ctx = "ctx", uint64_t id = 0);
Json Truncate(const std::string& path, uint64_t size);
Json Ftruncate(const std::string& fd, uint64_t size);
Json Fallocate(const std::string& fd, const std::string& mode, uint64_t off, uint64_t len);
Json Clone(const std::string& dst, const std::string& src, uint64_t off, uint64_t len,
           uint64_t dstoff);
Json Defrag(const std::string& fd);
Json Pwrite(const std::string& fd, uint64_t off, uint64_t len, char byte = 'w');
Json Pread(const std::string& fd, uint64_t off, uint64_t len);
Json PeerWrite(uint64_t rkey, uint64_t off, const std::string& text);
Json Send(const std::string& what, const std::string& to);
Json Receive(const std::string& as);
Json Fork(const std::string& name);
Json Exit(int code = 0);
}  // namespace op

// What a decisive step must give: an errno name ("OK", "ETXTBSY"), and
// optionally how long it may take, with the rule that says so.
struct Expect {
  enum class Wait { kAny, kAtOnce, kBreakTime };
  // "" = anything (a step that only shows); "OK|killed": either.
  std::string result;
  std::string why;     // the rule, cited as semantics-2019 cites it
  Wait wait = Wait::kAny;
};
Expect Must(const std::string& result, const std::string& why,
            Expect::Wait wait = Expect::Wait::kAny);

// One step as it ran.
struct StepRecord {
  int n = 0;
  std::string actor;
  pid_t pid = 0;
  std::string text;    // what the actor did, as a program would write it
  std::string result;  // "OK", "ETXTBSY", "blocked", "killed", ...
  Json value;          // what it returned (a lease id, a pin id), or null
  uint64_t time = 0;   // CLOCK_REALTIME ns when it ended (or was seen blocked)
  double seconds = 0;  // how long it took
  Expect expect;
  bool met = true;
  std::vector<std::string> notes;  // what leasefs did meanwhile, and why
  std::vector<uint64_t> note_times;  // CLOCK_REALTIME ns of each note, to tell them in order
};

// A step started and not yet finished (it may block).
struct Pending {
  Actor* actor = nullptr;
  std::string text;
  Json request;
  std::chrono::steady_clock::time_point start;
  std::optional<Json> reply;  // once it came
};

// Thrown when a scenario cannot go on (a setup step failed, an actor died
// unexpectedly): the run reports it and fails.
struct ScenarioAbort : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Set from a SIGINT/SIGTERM handler: the run stops at its next step (it then
// cleans up as always: kills its actors, unmounts, removes the pool).
extern volatile sig_atomic_t g_scenario_interrupted;

struct RunOptions {
  bool quiet = false;        // no narrative (compare, --json)
  std::string pool_size = "64M";
};

class Run {
 public:
  Run(const Policy& policy, const RunOptions& options);
  ~Run();

  // --- the policy
  const std::string& policy(const std::string& option) const;
  bool Is(const std::string& option, const std::string& value) const {
    return policy(option) == value;
  }
  double break_time() const;
  bool root() const { return geteuid() == 0; }

  // --- setting up (done by leasectl itself, before the actors come)
  // Creates `path` with `size` bytes of `fill` (its own blocks, written).
  void MakeFile(const std::string& path, uint64_t size, char fill = 's');
  // The same, in runs of 64 KiB with a gap after each in the pool (a filler
  // file takes every other run, then goes), so that defragmenting it would
  // move blocks.
  void MakeFragmentedFile(const std::string& path, uint64_t size, char fill = 's');
  // A new actor; `uid` -1: this user. Its first mention names its pid.
  Actor& Spawn(const std::string& name, uid_t uid = static_cast<uid_t>(-1));
  Actor& Find(const std::string& name);
  // Has `parent` fork (op::Fork), as step `text`: the child, with the
  // parent's descriptors, mappings and pin contexts, becomes actor
  // `child_name`, talked to over the channel the fork's reply carries.
  Actor& Fork(Actor& parent, const std::string& child_name, const std::string& text);
  // Names a process leasectl started itself (a program an actor cannot run:
  // actors do not exec) in the narrative and the event log; `what` says
  // what it is.
  void Name(pid_t pid, const std::string& name, const std::string& what);

  // --- steps
  // Runs a step to its end and checks it against `expect`; a step without
  // an expectation must succeed, else the scenario cannot go on.
  StepRecord& Do(Actor& a, const std::string& text, const Json& request,
                 std::optional<Expect> expect = std::nullopt);
  // Starts a step that may block.
  Pending Start(Actor& a, const std::string& text, const Json& request);
  // Whether it is still running after `ms` (then a step line says it
  // waits). Every wait the scenarios ask about is one the policy says must
  // happen: a step that has ended already is a difference from the stated
  // outcome (the run fails).
  bool StillWaiting(Pending& p, int ms, const std::string& why = "");
  // Waits for it to end (up to `timeout_ms`), then checks it.
  // 0: 30 s, or twice the break time and 10 s if that is longer.
  StepRecord& Finish(Pending& p, std::optional<Expect> expect = std::nullopt,
                     int timeout_ms = 0);
  // SIGKILLs an actor and waits for it to be gone.
  StepRecord& Kill(Actor& a, const std::string& why = "");
  // Has an actor exit(0) and waits (up to 5 s) until it is gone, so that the
  // next step meets what the daemon does about a death (leases released or
  // made ZOMBIE, contexts passed on) rather than a race with it.
  StepRecord& Exit(Actor& a, const std::string& why = "");
  // Waits up to `ms` for an actor to die, and checks it was by SIGKILL.
  StepRecord& ExpectKilled(Actor& a, int ms, const std::string& why);
  // How many notices of kind `what` ("break-signal", "thread-unpin",
  // "child-exit") actor `a` has sent in this run, after waiting up to `ms`
  // for at least `at_least`. An actor learns some things on its own (a break
  // signal) and may tell them after the step that caused them has ended;
  // those that come while this waits are told as a step of leasectl's, so
  // that the narrative shows them before the next step starts.
  int Notices(Actor& a, const std::string& what, int at_least = 0, int ms = 0);
  // A line of narrative that is not a step (what to notice).
  void Say(const std::string& text);
  // Checks a fact the scenario states (a file's content, a listing) as a step
  // of leasectl itself.
  StepRecord& Check(const std::string& text, bool met, const std::string& saw,
                    const std::string& why);

  // --- what leasectl can see of the mount
  std::string ReadFile(const std::string& path, size_t max = 64);
  uint64_t FileSize(const std::string& path);
  std::vector<leasefs_lease_info> Leases();
  std::vector<leasefs_pin_record> Pins();
  uint64_t QuarantinedBytes();
  // Waits up to `ms` until the mount has no lease and no pin (a dead
  // holder's go a moment after it is reaped), then checks that it came to
  // that as a step of leasectl's (`text`, `why`).
  StepRecord& CheckNothingHeld(const std::string& text, const std::string& why, int ms);
  // The block map of `path` as "P0..P1 P2..P3" (pool blocks), "" for none.
  std::string BlockMap(const std::string& path);
  int mount_fd() const { return dir_.get(); }
  const ScratchMount& mount() const { return mount_; }

  // Takes the snapshot the run document carries (snapshot.h: the block map,
  // leases, pins, quarantine), replacing an earlier one. Finish takes one
  // before it kills what is left, unless the scenario took its own at the
  // moment that matters.
  void Snapshot();

  // --- the outcome, for `compare` (breaker, wait, data, close, killed,
  // quarantine)
  void Outcome(const std::string& column, const std::string& text);

  // --- the end
  // Kills what is left, reads the last events, unmounts and checks the pool
  // with fsck.leasefs.
  void Finish();
  bool ok() const;
  Json Document(const std::string& scenario, const std::string& title) const;
  const std::vector<StepRecord>& steps() const { return steps_; }
  const std::map<std::string, std::string>& outcome() const { return outcome_; }
  const std::vector<std::string>& failures() const { return failures_; }
  void Fail(const std::string& why) { failures_.push_back(why); }

 private:
  StepRecord& Record(Actor* a, const std::string& text);
  void Link(Actor& a, Actor& b);
  void Judge(StepRecord& s, const Json& reply);
  void PollEvents(StepRecord* s);
  void CollectNotices(StepRecord* s);
  void Print(const StepRecord& s);
  std::string Who(pid_t pid) const;
  std::string FileOf(uint64_t ino);
  std::string Describe(const leasefs_event& e);

  Policy policy_;
  RunOptions options_;
  ScratchMount mount_;
  UniqueFd dir_;
  std::vector<std::unique_ptr<Actor>> actors_;
  std::map<pid_t, std::string> names_;
  std::map<uint64_t, std::string> files_;  // inode -> path, of files MakeFile made
  std::vector<StepRecord> steps_;
  std::vector<Json> events_;
  std::vector<Json> inbox_;  // actors' notices not yet told
  // Break signals leasefs sent that the holder has not told of yet, by
  // holder pid (of holders whose lease asked for a signal); and the actors
  // in the middle of a step (they read no signal until it ends).
  std::map<pid_t, int> signals_owed_;
  std::set<pid_t> notified_holders_;
  std::set<pid_t> busy_;
  std::vector<Json> collected_;  // every notice collected, in order (Notices counts them)
  std::vector<std::string> failures_;
  std::map<std::string, std::string> outcome_;
  uint64_t last_seq_ = 0;
  bool finished_ = false;
  Json snapshot_;  // null until taken
  std::string fsck_;
};

// A scenario of the debate.
struct ScenarioDef {
  std::string name;    // "seed", "zombie", ...
  std::string number;  // "§5.3", or "seed message"
  std::string title;   // one line
  std::string story;   // the Given/When/Then, cited
  // The options that change its outcome, with the values `compare` tries;
  // the first value of each is the default.
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;
  Policy fixed;  // other options it runs with (lease_break_time=...)
  std::function<void(Run&)> fn;
  // Why it cannot run here ("" when it can): a missing program, root needed.
  std::function<std::string()> unavailable;
};

// ScenarioDef::unavailable of a scenario that runs wherever leasefs does.
inline std::string Always() { return ""; }

// Every scenario, in the order `scenario list` prints them.
const std::vector<ScenarioDef>& Scenarios();
const ScenarioDef* FindScenario(const std::string& name);

// The scenario definitions, by family (scenarios_*.cc).
void AddLeaseScenarios(std::vector<ScenarioDef>* out);
void AddPinScenarios(std::vector<ScenarioDef>* out);

}  // namespace leasefs::leasectl
