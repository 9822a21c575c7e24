// `leasectl scenario` as a user runs it: every scenario under every policy
// combination it names (so the scenarios are the regression suite of the
// debate's semantics), the narrative's decisive lines word for word, usage
// errors, a run as an unprivileged user, and a run interrupted in the middle
// (nothing left mounted, no pool left behind).
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "tests/support/mount.h"
#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

using Json = nlohmann::json;

// Runs leasectl with stdout alone captured (stderr to `err` when given).
ProcessResult LeasectlStdout(const std::vector<std::string>& args, std::string* err = nullptr) {
  char tmpl[] = "/tmp/scenario-test-err-XXXXXX";
  const int fd = mkstemp(tmpl);
  REQUIRE(fd >= 0);
  close(fd);
  std::string cmd = LeasectlBin();
  for (const std::string& a : args) cmd += " '" + a + "'";
  ProcessResult r = Run({"/bin/sh", "-c", cmd + " 2>" + tmpl});
  if (err != nullptr) {
    std::ifstream in(tmpl);
    std::stringstream ss;
    ss << in.rdbuf();
    *err = ss.str();
  }
  unlink(tmpl);
  return r;
}

// The scratch pools and mountpoints leasectl makes, as they are now.
std::set<std::string> Leftovers() {
  std::set<std::string> out;
  for (const char* dir : {"/dev/shm", "/tmp"}) {
    DIR* d = opendir(dir);
    if (d == nullptr) continue;
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.rfind("leasectl-scenario-", 0) == 0) out.insert(std::string(dir) + "/" + n);
    }
    closedir(d);
  }
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line))
    if (line.find("leasectl-scenario-") != std::string::npos) out.insert("mount: " + line);
  return out;
}

// The narrative with times and pids taken out: "(0.12 ms)" -> "(T)",
// "process 1234" -> "process N", rkeys -> "rkey K".
std::string Normalized(const std::string& text) {
  std::string s = std::regex_replace(text, std::regex(R"(\(\d+\.\d+ m?s\))"), "(T)");
  s = std::regex_replace(s, std::regex(R"((process|pid) \d+)"), "$1 N");
  s = std::regex_replace(s, std::regex(R"(rkey 0x[0-9a-f]+)"), "rkey K");
  return s;
}

// Every scenario `scenario list` names.
std::vector<std::string> ScenarioNames() {
  const ProcessResult r = Leasectl({"scenario", "list"});
  REQUIRE(r.exit_code == 0);
  std::vector<std::string> names;
  std::istringstream in(r.output);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) names.push_back(line.substr(0, line.find(' ')));
  return names;
}

TEST_CASE("scenario list: the seed message's sequence and every case of semantics-2019 §5") {
  const ProcessResult r = Leasectl({"scenario", "list"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.rfind("NAME ", 0) == 0);
  CHECK(r.output.find("seed message") != std::string::npos);
  for (int n = 1; n <= 16; ++n) {
    // 3, 4, 5 are one sequence under three close policies: each has its row.
    const std::string tag = "§5." + std::to_string(n) + " ";
    CHECK_MESSAGE(r.output.find(tag) != std::string::npos, "missing " << tag);
  }
}

TEST_CASE("usage errors: an unknown scenario or option is exit 2 with one line saying so") {
  ProcessResult r = Leasectl({"scenario", "run", "no-such"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("no scenario 'no-such'") != std::string::npos);
  r = Leasectl({"scenario", "run", "seed", "--policy", "colour=blue"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--policy colour=blue: expected OPTION=VALUE") != std::string::npos);
  r = Leasectl({"scenario"});
  CHECK(r.exit_code == 2);
}

TEST_CASE("the seed sequence under the default policy: the narrative's decisive lines, word for word") {
  if (!CanMountFuse()) return;
  const auto before = Leftovers();
  const ProcessResult r = Leasectl({"scenario", "run", "seed"});
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  const std::string n = Normalized(r.output);
  for (const char* line : {
           "policy: close_with_pins=zombie lease_break_time=1 pinned_break=refuse\n",
           "  2. P: fcntl(fd, F_SETLEASE, F_WRLCK|F_LAYOUT|F_EXCLUSIVE) -> OK: 1 (T)\n"
           "       leasefs grants lease 1 (write,exclusive) on F bytes 0..end to P\n",
           "  6. P: mr = ibv_reg_mr(pd, addr, 64 KiB, REMOTE_WRITE|REMOTE_READ) -> OK: pin 1, rkey K (T)\n",
           "  8. leasectl: the peer's WRITE completes and its bytes are in F -> yes: \"success, F begins \"from R\"\"\n",
           " 10. P: close(fd) -> OK (T)\n"
           "       leasefs keeps lease 1 (write,exclusive) of P as ZOMBIE: its close came while it counts pins\n",
           " 11. Q: truncate(\"F\", 0) -> ETXTBSY (T)\n"
           "       leasefs refuses Q's change of F bytes 0..end (unmap): ETXTBSY: lease 1 (write,exclusive) of P cannot be broken\n",
           " 14. Q: truncate(\"F\", 0) -> OK (T)\n",
           "  breaker:    ETXTBSY at once\n",
           "  left over:  nothing (fsck.leasefs: clean)\nas stated: yes\n"}) {
    CHECK_MESSAGE(n.find(line) != std::string::npos, "missing:\n" << line << "\nin:\n" << n);
  }
  CHECK(Leftovers() == before);
}

TEST_CASE("seed, compared: each policy combination's outcome") {
  if (!CanMountFuse()) return;
  std::string err;
  const ProcessResult r = LeasectlStdout({"scenario", "compare", "seed", "--json"}, &err);
  REQUIRE_MESSAGE(r.exit_code == 0, err);
  const Json runs = Json::parse(r.output);
  REQUIRE(runs.size() == 9);
  std::map<std::string, Json> by;
  for (const Json& run : runs) {
    CHECK_MESSAGE(run["ok"] == true, run["failures"].dump());
    by[run["policy"]["pinned_break"].get<std::string>() + "/" +
       run["policy"]["close_with_pins"].get<std::string>()] = run["outcome"];
  }
  CHECK(by["refuse/zombie"]["breaker"] == "ETXTBSY at once");
  CHECK(by["refuse/zombie"]["data"] == "F kept; R's WRITEs still land");
  CHECK(by["fence/zombie"]["data"] == "F truncated; R's late WRITE refused");
  CHECK(by["fence/zombie"]["quarantine"] == "64 KiB until P lets go");
  CHECK(by["wait/zombie"]["data"] == "F truncated after the MR went");
  for (const char* pb : {"refuse", "fence", "wait"}) {
    CHECK(by[std::string(pb) + "/kill-on-close"]["killed"] == "P (SIGKILL at close)");
    CHECK(by[std::string(pb) + "/block-close"]["killed"] == "nobody");
    CHECK(by[std::string(pb) + "/block-close"]["breaker"] == "OK at once");
  }
}

TEST_CASE("every scenario comes out as stated under every policy combination it names") {
  if (!CanMountFuse()) return;
  for (const std::string& name : ScenarioNames()) {
    if (name == "seed") continue;  // above
    CAPTURE(name);
    std::string err;
    const ProcessResult r = LeasectlStdout({"scenario", "compare", name, "--json"}, &err);
    if (r.exit_code == 77) {
      MESSAGE("skipped: " << r.output);
      continue;
    }
    CHECK_MESSAGE(r.exit_code == 0, err);
    const Json runs = Json::parse(r.output, nullptr, false);
    REQUIRE(runs.is_array());
    CHECK(!runs.empty());
    for (const Json& run : runs) {
      CHECK_MESSAGE(run.value("ok", false), run.dump(1));
      // The document is what `report --from` draws: steps and events.
      CHECK(run["steps"].is_array());
      CHECK(run["events"].is_array());
    }
  }
}

TEST_CASE("a policy the daemon refuses: exit 1, the reason, nothing left behind") {
  if (!CanMountFuse()) return;
  const auto before = Leftovers();
  const ProcessResult r =
      Leasectl({"scenario", "run", "seed", "--policy", "pinned_break=sometimes"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("leasectl: scenario: cannot mount a scratch pool") != std::string::npos);
  CHECK(Leftovers() == before);
}

TEST_CASE("as an unprivileged user: the pool is mounted through fusermount3 and the run is as stated") {
  if (!CanMountFuse()) return;
  const int rc = RunAs(65534, 65534, {}, [] {
    const ProcessResult r = Leasectl({"scenario", "run", "close-kill"});
    if (r.exit_code != 0) fprintf(stderr, "%s\n", r.output.c_str());
    return r.exit_code == 0 && r.output.find("as stated: yes") != std::string::npos ? 0 : 1;
  });
  CHECK(rc == 0);
}

TEST_CASE("interrupted while a process waits: exit 1, actors gone, unmounted, pool removed") {
  if (!CanMountFuse()) return;
  const auto before = Leftovers();
  Background b({"scenario", "run", "seed", "--policy", "pinned_break=wait", "--policy",
                "lease_break_time=5"});
  std::string line;
  do {
    line = b.Line(20000);
  } while (line != "TIMEOUT" && line != "EOF" && line.find(" 10. P: close(fd) -> OK") == std::string::npos);
  // Q's truncate now waits for the pin (5 s of break time, then on).
  REQUIRE(line.find(" 10. P: close(fd) -> OK") != std::string::npos);
  REQUIRE(kill(b.pid(), SIGINT) == 0);
  std::string rest;
  for (std::string l = b.Line(30000); l != "EOF" && l != "TIMEOUT"; l = b.Line(30000)) rest += l + "\n";
  CHECK(b.Wait() == 1);
  CHECK_MESSAGE(rest.find("as stated: NO") != std::string::npos, rest);
  const auto after = Leftovers();
  for (const std::string& x : after)
    CHECK_MESSAGE(before.count(x) == 1, "left behind: " << x << "\nafter:\n" << rest);
}

}  // namespace
}  // namespace leasefs::testing
