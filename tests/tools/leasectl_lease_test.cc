// leasectl hold, leases and events against a real leasefs daemon: the lines
// hold prints as a truncate by another process breaks its lease, the
// revocation of a holder that ignores breaks, the lease list in JSON, and the
// event log in order.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

MountOptions Options(int break_time_s) {
  MountOptions o;
  o.pool_size = "64M";
  o.options = fmt::format("allow_other,lease_break_time={}", break_time_s);
  return o;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// truncate(2) of `path` in a process of its own (coreutils' truncate opens
// with O_NONBLOCK, which makes a breaker give up with EWOULDBLOCK instead of
// waiting). Returns its errno (0: done) and how long it took.
struct Truncated {
  int err = -1;
  double seconds = 0;
  pid_t pid = -1;
};
class Truncater {
 public:
  Truncater(const std::string& path, uint64_t size) : start_(Clock::now()) {
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

  Truncated Wait() {
    Truncated t;
    t.pid = pid_;
    int status = 0;
    REQUIRE(waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    t.seconds = Seconds(Clock::now() - start_);
    t.err = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return t;
  }

 private:
  pid_t pid_ = -1;
  Clock::time_point start_;
};

// "lease N granted: ..." -> N, or 0.
uint64_t GrantedId(const std::string& line) {
  unsigned long long id = 0;
  return std::sscanf(line.c_str(), "lease %llu granted:", &id) == 1 ? id : 0;
}

std::vector<Json> EventsJson(const std::string& path) {
  const ProcessResult r = Leasectl({"events", "--json", path});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  std::vector<Json> events;
  size_t start = 0;
  for (size_t nl; (nl = r.output.find('\n', start)) != std::string::npos; start = nl + 1)
    events.push_back(Json::parse(r.output.substr(start, nl - start)));
  CHECK(start == r.output.size());
  return events;
}

TEST_SUITE("leasectl") {
  TEST_CASE("hold: a truncate by another process is told at once; hold releases and exits 0") {
    TestMount m(Options(20));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("abcd"));
    Background hold({"hold", f});
    const pid_t holder = hold.pid();
    const std::string granted = hold.Line();
    const uint64_t id = GrantedId(granted);
    REQUIRE_MESSAGE(id != 0, granted);
    CHECK(granted == fmt::format("lease {} granted: {} bytes 0..end read", id, f));

    Truncater breaker(f, kBlock);
    const std::string notice = hold.Line();
    double left = -1;
    CHECK(std::sscanf(notice.c_str(),
                      ("lease " + std::to_string(id) + " breaking: deadline in %lfs").c_str(),
                      &left) == 1);
    CHECK(left > 15.0);
    CHECK(left <= 20.0);
    CHECK(hold.Line() == fmt::format("lease {} released", id));
    CHECK(hold.Line() == "EOF");
    CHECK(hold.Wait() == 0);
    const Truncated t = breaker.Wait();
    CHECK(t.err == 0);
    CHECK(t.seconds < 5.0);
    CHECK(SizeOf(f) == kBlock);

    SUBCASE("events: grant, break, release, then the breaker goes on") {
      const std::vector<Json> events = EventsJson(m.mnt());
      REQUIRE(events.size() == 4);
      const char* want[] = {"grant", "break", "release", "break-done"};
      for (size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK(events[i]["type"] == want[i]);
        CHECK(events[i]["seq"] == i + 1);
        CHECK(events[i]["lease_id"] == (i < 3 ? id : 0));
      }
      CHECK(events[0]["holder_pid"] == holder);
      CHECK(events[1]["actor_pid"] == t.pid);
      CHECK(events[1]["why"] == "unmap");
      CHECK(events[2]["why"] == "unlock");
      CHECK(events[3]["err"] == 0);
      // The text: one line each, in the same order.
      const ProcessResult text = Leasectl({"events", m.mnt()});
      REQUIRE(text.exit_code == 0);
      size_t at = 0;
      for (const char* kind : {" #1 grant lease ", " #2 break lease ", " #3 release lease ",
                               " #4 break-done inode "}) {
        CAPTURE(kind);
        const size_t found = text.output.find(kind, at);
        REQUIRE(found != std::string::npos);
        at = found;
      }
    }
  }

  TEST_CASE("hold --ignore-breaks: kept until revoked after lease_break_time, exit 1") {
    TestMount m(Options(1));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("ab"));
    Background hold({"hold", "--ignore-breaks", "--write", f});
    const uint64_t id = GrantedId(hold.Line());
    REQUIRE(id != 0);
    Truncater breaker(f, 0);
    const std::string notice = hold.Line();
    CHECK(notice.find(fmt::format("lease {} breaking: deadline in ", id)) == 0);
    CHECK(notice.size() > 9);
    CHECK(notice.substr(notice.size() - 9) == "(ignored)");
    CHECK(hold.Line() == fmt::format("lease {} revoked", id));
    CHECK(hold.Wait() == 1);
    const Truncated t = breaker.Wait();
    CHECK(t.err == 0);
    CHECK(t.seconds >= 0.9);
    CHECK(t.seconds < 5.0);
    CHECK(SizeOf(f) == 0);
    const std::vector<Json> events = EventsJson(m.mnt());
    std::vector<std::string> types;
    for (const Json& e : events) types.push_back(e["type"]);
    // The breaker goes on (break-done) and hold forgets the revoked lease
    // (release) at about the same time, in either order.
    REQUIRE(types.size() == 5);
    CHECK(std::vector<std::string>(types.begin(), types.begin() + 3) ==
          std::vector<std::string>{"grant", "break", "revoke"});
    std::sort(types.begin() + 3, types.end());
    CHECK(types[3] == "break-done");
    CHECK(types[4] == "release");
  }

  TEST_CASE("leases --json: the holder's lease, parsed back; SIGTERM releases it") {
    TestMount m(Options(20));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("abcd"));
    Background hold({"hold", "--write", "--range", "4K:8K", f});
    const uint64_t id = GrantedId(hold.Line());
    REQUIRE(id != 0);
    struct stat st {};
    REQUIRE(stat(f.c_str(), &st) == 0);

    const ProcessResult r = Leasectl({"leases", "--json", m.mnt()});
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    const Json j = Json::parse(r.output);
    CHECK(j["monotonic_now"].get<uint64_t>() > 0);
    REQUIRE(j["leases"].size() == 1);
    const Json& l = j["leases"][0];
    CHECK(l["id"] == id);
    CHECK(l["file"] == f);
    CHECK(l["ino"] == st.st_ino);
    CHECK(l["offset"] == 4096);
    CHECK(l["length"] == 8192);
    CHECK(l["type"] == "write");
    CHECK(l["flags"] == Json::array());
    CHECK(l["state"] == "active");
    CHECK(l["holder_pid"] == hold.pid() + 0);
    CHECK(l["open_file"].get<uint64_t>() != 0);
    CHECK(l["breaking_since"] == 0);
    CHECK(l["break_deadline"] == 0);

    const ProcessResult text = Leasectl({"leases", f});
    REQUIRE(text.exit_code == 0);
    // The header, then the lease's line; columns padded with spaces.
    std::istringstream lines(text.output);
    std::string header, row, rest;
    std::getline(lines, header);
    std::getline(lines, row);
    CHECK(!std::getline(lines, rest));
    std::istringstream cells(row);
    std::vector<std::string> words;
    for (std::string w; cells >> w;) words.push_back(w);
    CHECK(words == std::vector<std::string>{std::to_string(id), f, "4096..12287", "write", "active",
                                            std::to_string(hold.pid()),
                                            words.size() > 6 ? words[6] : "", "-"});

    REQUIRE(kill(hold.pid(), SIGTERM) == 0);
    CHECK(hold.Line() == fmt::format("lease {} released", id));
    CHECK(hold.Wait() == 128 + SIGTERM);
    CHECK(Leasectl({"leases", m.mnt()}).output == "no leases\n");
  }

  TEST_CASE("hold -- CMD: the lease is held while CMD runs; CMD's exit status") {
    TestMount m(Options(20));
    const std::string f = m.path("f");
    WriteAt(f, 0, Blocks("a"));
    const std::string out = m.path("leases.json");
    const std::string script =
        fmt::format("'{}' leases --json '{}' > '{}'; exit 7", LeasectlBin(), m.mnt(), out);
    const ProcessResult r = Leasectl({"hold", "--shared", f, "--", "sh", "-c", script});
    CHECK(r.exit_code == 7);
    const Json j = Json::parse(ReadAll(out));
    REQUIRE(j["leases"].size() == 1);
    CHECK(j["leases"][0]["file"] == f);
    CHECK(j["leases"][0]["type"] == "read");
    CHECK(Leasectl({"leases", m.mnt()}).output == "no leases\n");
    CHECK(Leasectl({"hold", f, "--", "/nonexistent/cmd"}).exit_code == 127);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
