#include "tests/crash/crash_loop.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

namespace leasefs::crashtest {

namespace {

// Lives in memory shared between the parent and the workload child.
struct Shared {
  std::atomic<uint64_t> done;  // operations completed
  std::atomic<int> crashing;   // set by the parent before it crashes the target
  uint64_t bad_op;             // the op whose outcome the model did not predict
  int expected;
  int got;
};

constexpr int kChildLost = 10;      // the target went away under an operation
constexpr int kChildMismatch = 11;  // an outcome the model did not predict
constexpr auto kChildGrace = std::chrono::seconds(10);

[[noreturn]] void ChildMain(const std::string& root, uint64_t seed, unsigned ops, uint64_t k,
                            Model model, Shared* sh) {
  // The test process's handlers unmount everything: not ours to run.
  for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGHUP}) signal(sig, SIG_DFL);
  umask(0);
  for (;;) {
    Op op = Generate(model, seed, k + 1, ops);
    int expected = model.Apply(op);
    int got = ApplyToDir(root, op);
    if (got != expected) {
      if (sh->crashing.load()) _exit(kChildLost);
      sh->bad_op = k + 1;
      sh->expected = expected;
      sh->got = got;
      _exit(kChildMismatch);
    }
    sh->done.store(++k);
  }
}

// Waits up to `limit` for `pid`; returns its wait status, or -1 if it is
// still running.
int WaitFor(pid_t pid, std::chrono::microseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return 0;
    if (std::chrono::steady_clock::now() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

// Replays ops (from, to] of `seed` on `m`; keeps the last few descriptions.
void Replay(Model& m, uint64_t seed, unsigned ops, uint64_t from, uint64_t to,
            std::vector<std::string>* log) {
  for (uint64_t j = from + 1; j <= to; ++j) {
    Op op = Generate(m, seed, j, ops);
    int e = m.Apply(op);
    if (log && to - j < 6)
      log->push_back("  op " + std::to_string(j) + ": " + Describe(op) + " -> " + ErrnoName(e));
  }
}

std::string Lines(const std::vector<std::string>& v, const std::string& indent = "    ") {
  std::string s;
  for (const auto& l : v) s += indent + l + "\n";
  return s;
}

}  // namespace

uint64_t SeedFromEnv(uint64_t fallback) {
  const char* v = std::getenv("LEASEFS_CRASH_SEED");
  if (!v || !*v) return fallback;
  if (std::strcmp(v, "random") == 0)
    return static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
           (static_cast<uint64_t>(getpid()) << 32);
  return std::strtoull(v, nullptr, 0);
}

int IterationsFromEnv(int fallback) {
  const char* v = std::getenv("LEASEFS_CRASH_ITERATIONS");
  return v && *v ? std::atoi(v) : fallback;
}

std::string RunWorkload(const std::string& root, uint64_t seed, uint64_t first, uint64_t last,
                        Model& model, unsigned ops) {
  const mode_t old = umask(0);
  std::string failure;
  for (uint64_t k = first; k <= last && failure.empty(); ++k) {
    Op op = Generate(model, seed, k, ops);
    int expected = model.Apply(op);
    int got = ApplyToDir(root, op);
    if (got != expected)
      failure = "seed " + std::to_string(seed) + " op " + std::to_string(k) + ": " + Describe(op) +
                ": got " + ErrnoName(got) + ", the model expected " + ErrnoName(expected);
  }
  umask(old);
  return failure;
}

namespace {

// The states the tree may be in after a crash in one iteration.
struct Candidates {
  uint64_t n = 0;  // operations the workload saw complete
  Model after_n;   // the tree after op n
  Op next;         // op n + 1, perhaps in flight
  int next_err = 0;
  Model after_next;
  std::vector<std::string> log;  // the last completed ops, described
};

// One RunCrashLoop: owns the shared record and the loop's state.
class CrashLoop {
 public:
  CrashLoop(CrashTarget& target, const CrashLoopOptions& opts, Model& model, uint64_t& ops,
            Shared* sh)
      : target_(target), opts_(opts), model_(model), ops_(ops), sh_(sh), root_(target.root()) {}

  // Runs one crash/recover/verify round. Returns "" or the failure.
  std::string Iteration(int iter, CrashLoopResult* res);

 private:
  std::string Where() const {
    return "seed " + std::to_string(opts_.seed) + ", iteration " + std::to_string(iter_) +
           ", crash after " + std::to_string(delay_us_) + " us, ops " + std::to_string(start_ + 1) +
           ".." + std::to_string(sh_->done.load());
  }
  std::string StoppedEarly(int status) const;
  Candidates Rebuild(uint64_t n) const;
  // Matches the recovered tree to a candidate and adopts it.
  std::string Resync(Candidates& c, CrashLoopResult* res, const char** found);
  void Progress(const Candidates& c, const char* found) const;

  CrashTarget& target_;
  const CrashLoopOptions& opts_;
  Model& model_;
  uint64_t& ops_;
  Shared* sh_;
  const std::string root_;
  int iter_ = 0;
  uint64_t start_ = 0;
  uint64_t delay_us_ = 0;
};

std::string CrashLoop::Iteration(int iter, CrashLoopResult* res) {
  iter_ = iter;
  start_ = ops_;
  sh_->done.store(start_);
  sh_->crashing.store(0);
  delay_us_ =
      Rng(MixSeed(opts_.seed, static_cast<uint64_t>(iter), 0xde1a)).Below(opts_.max_delay_us + 1);
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) return "fork failed";
  if (child == 0) ChildMain(root_, opts_.seed, opts_.ops, start_, model_, sh_);

  int status = WaitFor(child, std::chrono::microseconds(delay_us_));
  if (status != -1) return StoppedEarly(status);
  sh_->crashing.store(1);
  target_.Crash(child);
  if (WaitFor(child, kChildGrace) == -1) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return Where() + ": the workload did not end within 10 s of the crash";
  }
  Candidates c = Rebuild(sh_->done.load());
  if (std::string err = target_.Recover(iter); !err.empty())
    return Where() + ": recovery failed: " + err + "\n  in flight: op " + std::to_string(c.n + 1) +
           ": " + Describe(c.next) + "\n" + target_.Diagnostics(iter);
  const char* found = "";
  if (std::string err = Resync(c, res, &found); !err.empty()) return err;
  res->iterations = iter + 1;
  res->ops = ops_;
  Progress(c, found);
  return {};
}

// The child stopped before the crash: the model mispredicted an outcome.
std::string CrashLoop::StoppedEarly(int status) const {
  std::string f = Where() + ": the workload stopped before the crash: ";
  if (WIFEXITED(status) && WEXITSTATUS(status) == kChildMismatch) {
    Model m = model_;
    std::vector<std::string> log;
    Replay(m, opts_.seed, opts_.ops, start_, sh_->bad_op, &log);
    f += "op " + std::to_string(sh_->bad_op) + " returned " + ErrnoName(sh_->got) +
         ", the model expected " + ErrnoName(sh_->expected) + "\n" + Lines(log, "");
  } else {
    f += "wait status " + std::to_string(status);
  }
  return f + target_.Diagnostics(iter_);
}

Candidates CrashLoop::Rebuild(uint64_t n) const {
  Candidates c;
  c.n = n;
  c.after_n = model_;
  Replay(c.after_n, opts_.seed, opts_.ops, start_, n, &c.log);
  c.next = Generate(c.after_n, opts_.seed, n + 1, opts_.ops);
  c.after_next = c.after_n;
  c.next_err = c.after_next.Apply(c.next);
  return c;
}

std::string CrashLoop::Resync(Candidates& c, CrashLoopResult* res, const char** found) {
  const Snapshot snap = TakeSnapshot(root_);
  const std::vector<std::string> d0 = Compare(snap, c.after_n);
  if (d0.empty()) {
    model_ = std::move(c.after_n);
    ops_ = c.n;
    *found = "absent";
    return {};
  }
  const std::vector<std::string> d1 = Compare(snap, c.after_next);
  if (d1.empty()) {
    model_ = std::move(c.after_next);
    ops_ = c.n + 1;
    *found = "done";
    ++res->in_flight_done;
    return {};
  }
  // A write in flight (or a copy_file_range with write(2)'s contract) may
  // have landed in part: each byte old or new, the size old or new. Where
  // copies are short when killed (tmpfs), any copy_file_range may.
  const bool is_write =
      (WriteLike(c.next) || (opts_.short_writes && c.next.type == OpType::kCopyRange)) &&
      c.next_err == 0;
  std::vector<std::string> d2;
  if (is_write) {
    const int id = c.after_n.Resolve(c.next.path);
    d2 = Compare(snap, c.after_n, Tolerance{id, &c.after_next.node(id).data, opts_.short_writes});
    if (d2.empty()) {
      const Snapshot file = TakeSnapshot(root_ + "/" + c.next.path);
      c.after_n.ReplaceData(id, file.nodes.count(file.root) ? file.nodes.at(file.root).data : "");
      model_ = std::move(c.after_n);
      ops_ = c.n + 1;
      *found = "partly done";
      ++res->in_flight_partial;
      return {};
    }
  }
  return Where() + ": after recovery the tree matches neither model.\n" +
         "  last completed ops:\n" + Lines(c.log) + "  in flight: op " + std::to_string(c.n + 1) +
         ": " + Describe(c.next) + " (model: " + ErrnoName(c.next_err) + ")\n" +
         "  differences from the state after op " + std::to_string(c.n) + ":\n" + Lines(d0) +
         "  differences from the state after op " + std::to_string(c.n + 1) + ":\n" + Lines(d1) +
         (is_write ? "  allowing a partial write:\n" + Lines(d2) : "") + target_.Diagnostics(iter_);
}

void CrashLoop::Progress(const Candidates& c, const char* found) const {
  if (opts_.progress_every <= 0) return;
  if (iter_ % opts_.progress_every != 0 && iter_ + 1 != opts_.iterations) return;
  std::printf("  iteration %d: crash after %llu us, %llu ops done, op %llu (%s) in flight: %s\n",
              iter_, static_cast<unsigned long long>(delay_us_),
              static_cast<unsigned long long>(c.n), static_cast<unsigned long long>(c.n + 1),
              Describe(c.next).substr(0, 60).c_str(), found);
  std::fflush(stdout);
}

}  // namespace

CrashLoopResult RunCrashLoop(CrashTarget& target, const CrashLoopOptions& opts, Model& model,
                             uint64_t& ops) {
  CrashLoopResult res;
  void* mem =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    res.failure = "mmap of the shared record failed";
    return res;
  }
  auto* sh = new (mem) Shared{};
  std::printf("crash loop: seed %llu, %d iterations, root %s (replay: LEASEFS_CRASH_SEED=%llu)\n",
              static_cast<unsigned long long>(opts.seed), opts.iterations, target.root().c_str(),
              static_cast<unsigned long long>(opts.seed));
  std::fflush(stdout);
  CrashLoop loop(target, opts, model, ops, sh);
  for (int iter = 0; iter < opts.iterations && res.failure.empty(); ++iter)
    res.failure = loop.Iteration(iter, &res);
  res.ops = ops;
  munmap(mem, sizeof(Shared));
  return res;
}

}  // namespace leasefs::crashtest
