// leasectl scenario: list, run and compare the debate's scenarios
// (scenario.h) on scratch pools.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "tools/leasectl/cli.h"
#include "tools/leasectl/commands.h"
#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/scenario.h"

namespace leasefs::leasectl {

// This command's own pieces (a namespace per file: libleasectl is a unity build).
namespace scenario_cmd {

constexpr const char* kManPage =
    R"man(leasectl scenario - run the 2019 debate's scenarios on a scratch pool

SYNOPSIS
  leasectl scenario list
  leasectl scenario run NAME [--policy OPTION=VALUE]... [--json] [--pool-size SIZE]
  leasectl scenario compare NAME [--markdown | --json]

DESCRIPTION
  Each scenario is a case of the 2019 debate on RDMA pins over FS-DAX files:
  the sequence of the seed message, and the Given/When/Then cases of
  semantics-2019 §5. `run` formats a pool of its own (in /dev/shm, else
  $TMPDIR), mounts it with the policy asked for, starts real processes (P, Q,
  R, ...) and has them make the system calls of the case, one step at a
  time. It prints a numbered narrative: what each process did and what it
  got, what leasefs decided meanwhile (from the mount's event log), why (the
  rule, cited as semantics-2019 cites it), and at the end the outcome. Then
  it kills what is left, unmounts, runs fsck.leasefs on the pool and removes
  it. It exits 1 when any decisive step did not come out as the debate
  states for that policy, or something was left behind.

  --policy OPTION=VALUE sets a mount option the outcome depends on:
  pinned_break (refuse, fence, wait), close_with_pins (zombie, block-close,
  kill-on-close), pin_passing (follow-fd, strict), write_break (unmap-only,
  xfs-faithful), lease_break_time (seconds). Each scenario has defaults.

  `compare` runs the scenario under every combination of the options that
  change its outcome and prints one line each: the breaker's result and how
  long it waited, where the data went, what the close did, who was killed,
  what stayed in quarantine, and whether it came out as stated.

  --json prints the run as one JSON document (the narrative's steps with
  their results and times, the event log, the processes, the outcome), which
  `leasectl report --from` draws.

  As non-root the pool is mounted through fusermount3; steps that need
  another user are skipped then, and say so.

EXIT STATUS
  0 as stated; 1 not as stated, or the scenario could not run; 2 usage
  error; 77 skipped (a program it needs is missing here).)man";

const std::set<std::string> kOptions = {"pinned_break", "close_with_pins", "pin_passing",
                                        "write_break", "lease_break_time"};

struct Args {
  std::string name;
  std::vector<std::string> policy;
  bool json = false;
  bool markdown = false;
  std::string pool_size = "64M";
};

void OnInterrupt(int) { g_scenario_interrupted = 1; }

Policy DefaultPolicy(const ScenarioDef& d) {
  Policy p = d.fixed;
  for (const auto& [option, values] : d.axes) p[option] = values.front();
  return p;
}

std::string PolicyText(const Policy& p) {
  std::string s;
  for (const auto& [k, v] : p) s += (s.empty() ? "" : " ") + k + "=" + v;
  return s;
}

// Runs `d` once; fills *doc. Returns the exit status.
int RunOnce(const ScenarioDef& d, const Policy& policy, const Args& a, bool quiet, Json* doc) {
  if (const std::string why = d.unavailable(); !why.empty()) {
    if (!quiet) fmt::print("scenario {}: skipped: {}\n", d.name, why);
    *doc = Json{{"scenario", d.name}, {"skipped", why}, {"policy", policy}};
    return 77;
  }
  if (!quiet) {
    fmt::print("scenario {} ({}): {}\n", d.name, d.number, d.title);
    fmt::print("  {}\n", d.story);
    fmt::print("policy: {}\n", PolicyText(policy));
  }
  RunOptions ro;
  ro.quiet = quiet;
  ro.pool_size = a.pool_size;
  std::string abort;
  std::unique_ptr<Run> run;
  try {
    run = std::make_unique<Run>(policy, ro);
    if (!quiet)
      fmt::print("scratch pool: {} at {}, mounted at {}\n\n", a.pool_size, run->mount().pool(),
                 run->mount().mnt());
    d.fn(*run);
  } catch (const ScenarioAbort& e) {
    abort = e.what();
  } catch (const std::exception& e) {
    // Anything else (malformed JSON from an actor, say) still cleans up.
    abort = std::string("internal error: ") + e.what();
  }
  if (!run) {
    fmt::print(stderr, "leasectl: scenario: {}\n", abort);
    *doc = Json{{"scenario", d.name}, {"error", abort}, {"policy", policy}};
    return kExitFailure;
  }
  if (!abort.empty()) run->Fail("the scenario stopped: " + abort);
  else if (g_scenario_interrupted) run->Fail("interrupted");
  run->Finish();
  *doc = run->Document(d.name, fmt::format("{} ({}): {}", d.name, d.number, d.title));
  if (!quiet) {
    fmt::print("\noutcome:\n");
    for (const auto& [k, v] : run->outcome()) fmt::print("  {:<11} {}\n", k + ":", v);
    fmt::print("  {:<11} {}\n", "left over:", run->ok() ? "nothing (fsck.leasefs: clean)" : "see below");
    if (run->ok()) {
      fmt::print("as stated: yes\n");
    } else {
      fmt::print("as stated: NO\n");
      for (const std::string& f : run->failures()) fmt::print("  - {}\n", f);
    }
  }
  return run->ok() ? kExitOk : kExitFailure;
}

const ScenarioDef* Lookup(const std::string& name) {
  const ScenarioDef* d = FindScenario(name);
  if (d == nullptr)
    fmt::print(stderr,
               "leasectl: scenario: no scenario '{}' (leasectl scenario list names them)\n", name);
  return d;
}

int List() {
  std::vector<std::vector<std::string>> rows = {{"NAME", "CASE", "WHAT", "COMPARES"}};
  for (const ScenarioDef& d : Scenarios()) {
    std::string axes;
    for (const auto& [o, v] : d.axes) axes += (axes.empty() ? "" : ", ") + o;
    rows.push_back({d.name, d.number, d.title, axes.empty() ? "-" : axes});
  }
  fmt::print("{}", Columns(rows));
  return kExitOk;
}

int RunCommand(const Args& a) {
  const ScenarioDef* d = Lookup(a.name);
  if (d == nullptr) return kExitUsage;
  Policy policy = DefaultPolicy(*d);
  for (const std::string& kv : a.policy) {
    const size_t eq = kv.find('=');
    const std::string k = kv.substr(0, eq);
    if (eq == std::string::npos || !kOptions.count(k)) {
      fmt::print(stderr,
                 "leasectl: scenario: --policy {}: expected OPTION=VALUE with OPTION one of "
                 "pinned_break, close_with_pins, pin_passing, write_break, lease_break_time\n",
                 kv);
      return kExitUsage;
    }
    const std::string v = kv.substr(eq + 1);
    // A value goes into -o as it is: a comma would add options behind the
    // verdict's back.
    if (v.empty() || v.find_first_of(", \\") != std::string::npos) {
      fmt::print(stderr, "leasectl: scenario: --policy {}: the value must be one word\n", kv);
      return kExitUsage;
    }
    policy[k] = v;
  }
  Json doc;
  const int rc = RunOnce(*d, policy, a, a.json, &doc);
  if (a.json) fmt::print("{}\n", doc.dump(2, ' ', false, Json::error_handler_t::replace));
  return rc;
}

int Compare(const Args& a) {
  const ScenarioDef* d = Lookup(a.name);
  if (d == nullptr) return kExitUsage;
  // Every combination of the axes' values, the first axis slowest.
  std::vector<Policy> runs = {DefaultPolicy(*d)};
  for (const auto& [option, values] : d->axes) {
    std::vector<Policy> next;
    for (const Policy& p : runs)
      for (const std::string& v : values) {
        Policy q = p;
        q[option] = v;
        next.push_back(q);
      }
    runs = next;
  }
  const std::vector<std::string> columns = {"breaker", "close", "killed", "data", "quarantine"};
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head;
  for (const auto& [o, v] : d->axes) head.push_back(o);
  for (const std::string& c : columns) head.push_back(c);
  head.push_back("as stated");
  rows.push_back(head);
  Json all = Json::array();
  int rc = kExitOk;
  for (const Policy& p : runs) {
    if (g_scenario_interrupted) break;
    Json doc;
    const int one = RunOnce(*d, p, a, true, &doc);
    if (one == 77) {
      if (a.json)
        fmt::print("{}\n", Json::array({doc}).dump(2));
      else
        fmt::print("scenario {}: skipped: {}\n", d->name, doc.value("skipped", ""));
      return 77;
    }
    if (one != kExitOk) rc = kExitFailure;
    std::vector<std::string> row;
    for (const auto& [o, v] : d->axes) row.push_back(p.at(o));
    const Json outcome = doc.value("outcome", Json::object());
    for (const std::string& c : columns) row.push_back(outcome.value(c, "-"));
    row.push_back(one == kExitOk ? "yes" : "NO");
    rows.push_back(row);
    all.push_back(doc);
    if (!a.json && !a.markdown) {
      // Progress on a terminal: runs take seconds each.
      if (isatty(2)) fmt::print(stderr, "\r{}/{} runs", all.size(), runs.size());
    }
  }
  if (!a.json && !a.markdown && isatty(2)) fmt::print(stderr, "\r\033[K");
  if (a.json) {
    fmt::print("{}\n", all.dump(2, ' ', false, Json::error_handler_t::replace));
  } else if (a.markdown) {
    fmt::print("| {} |\n|", fmt::join(rows[0], " | "));
    for (size_t i = 0; i < rows[0].size(); ++i) fmt::print("---|");
    fmt::print("\n");
    for (size_t r = 1; r < rows.size(); ++r) fmt::print("| {} |\n", fmt::join(rows[r], " | "));
  } else {
    fmt::print("scenario {} ({}): {}\n", d->name, d->number, d->title);
    fmt::print("{}", Columns(rows));
  }
  for (const Json& doc : all)
    for (const auto& f : doc.value("failures", Json::array()))
      fmt::print(stderr, "leasectl: scenario: {} [{}]: {}\n", d->name,
                 PolicyText(doc.value("policy", Policy{})), f.get<std::string>());
  return rc;
}

}  // namespace scenario_cmd

const std::vector<ScenarioDef>& Scenarios() {
  static const std::vector<ScenarioDef> all = [] {
    std::vector<ScenarioDef> v;
    AddPinScenarios(&v);
    AddLeaseScenarios(&v);
    // In the order of semantics-2019 §5, after the seed message.
    auto rank = [](const ScenarioDef& d) {
      return d.number.rfind("§5.", 0) == 0 ? std::stoi(d.number.substr(std::string("§5.").size()))
                                            : 0;
    };
    std::stable_sort(v.begin(), v.end(),
                     [&](const ScenarioDef& a, const ScenarioDef& b) { return rank(a) < rank(b); });
    return v;
  }();
  return all;
}

const ScenarioDef* FindScenario(const std::string& name) {
  for (const ScenarioDef& d : Scenarios())
    if (d.name == name) return &d;
  return nullptr;
}

void AddScenarioCommand(CLI::App& app, int* rc) {
  using namespace scenario_cmd;
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("scenario", kManPage);
  sub->require_subcommand(1);
  CLI::App* list = sub->add_subcommand("list", "list the scenarios");
  list->callback([rc] { *rc = List(); });
  auto install = [] {
    struct sigaction sa {};
    sa.sa_handler = OnInterrupt;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(sig, &sa, nullptr);
    // A reader that goes away (`| head`) must not end leasectl before it
    // has cleaned up: writes then fail with EPIPE instead.
    signal(SIGPIPE, SIG_IGN);
  };
  CLI::App* run = sub->add_subcommand("run", "run one scenario");
  run->add_option("NAME", args->name, "the scenario (leasectl scenario list)")->required();
  run->add_option("--policy", args->policy, "OPTION=VALUE, a mount option (repeatable)");
  run->add_flag("--json", args->json, "print the run as JSON");
  run->add_option("--pool-size", args->pool_size, "the scratch pool's size (default 64M)");
  run->callback([args, rc, install] {
    install();
    *rc = RunCommand(*args);
  });
  CLI::App* cmp = sub->add_subcommand("compare", "run one scenario under every policy");
  cmp->add_option("NAME", args->name, "the scenario")->required();
  cmp->add_flag("--markdown", args->markdown, "a Markdown table");
  cmp->add_flag("--json", args->json, "every run as JSON");
  cmp->add_option("--pool-size", args->pool_size, "the scratch pool's size (default 64M)");
  cmp->callback([args, rc, install] {
    install();
    *rc = Compare(*args);
  });
}

}  // namespace leasefs::leasectl
