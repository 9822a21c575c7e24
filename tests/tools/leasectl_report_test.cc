// leasectl report on a real mount, opened in Debian's headless chromium.
//
// Real processes build a fixed situation under pinned_break=fence: files
// (two with hostile names), a reflink, a shared lease held by `leasectl
// hold`, a lease taken and released, an exclusive lease with a soft NIC pin
// whose file another process truncates (the break runs out: the pin is
// fenced, the lease revoked, the blocks quarantined), and the seed message's
// open, lease, pin, close (a zombie lease). The real `leasectl report
// --html` draws it; chromium loads the page twice, with JavaScript on at a
// phone's width (390 px) and with JavaScript off.
//
// Chromium is driven over its DevTools protocol on a pipe
// (--remote-debugging-pipe): the protocol says which console messages are
// errors (Runtime.consoleAPICalled, Runtime.exceptionThrown, Log.entryAdded
// with their levels; --enable-logging prints every console message at one
// level), lists every request the page makes (Network.requestWillBeSent),
// emulates a 390 px wide phone (headless chromium's --window-size stops at
// 500 px, measured), and serializes the DOM after load (DOM.getOuterHTML,
// what --dump-dom prints). Beside that, chromium's proxy is a socket of the
// test that must see no connection, and every host name fails to resolve.
//
// The numbers the page shows are compared with numbers this test computes
// from the ioctls itself (BMAP, LIST_LEASES, PIN_LIST, DAX_LIST, EVENTS),
// and those with the values the situation must have.
#define DOCTEST_CONFIG_IMPLEMENT
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "leasefs/ioctl.h"
#include "tests/fuse/pin_fixture.h"
#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

using Json = nlohmann::json;
using Counts = std::map<std::string, uint64_t>;

constexpr const char* kChromium = "/usr/bin/chromium";
// How long one answer of chromium may take before the test gives up on it
// (a bound against a hang, not a measurement).
constexpr int kAnswerMs = 120'000;

// ---- chromium over the DevTools protocol --------------------------------------

// A headless chromium started by the test, in a process group of its own,
// with a fresh profile in /tmp that goes with it.
class Chromium {
 public:
  explicit Chromium(const std::vector<std::string>& extra_flags) {
    char dir[] = "/tmp/leasectl-report-chromium-XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    dir_ = dir;
    int to[2], from[2];
    REQUIRE(pipe2(to, O_CLOEXEC) == 0);
    REQUIRE(pipe2(from, O_CLOEXEC) == 0);
    std::vector<std::string> args = {kChromium,
                                     "--headless",
                                     "--no-sandbox",  // as root it will not start otherwise
                                     "--disable-gpu",
                                     "--remote-debugging-pipe",
                                     "--user-data-dir=" + dir_,
                                     "--no-first-run",
                                     "--no-default-browser-check",
                                     "--disable-background-networking",
                                     "--disable-component-update",
                                     "--disable-sync",
                                     "--disable-extensions"};
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    args.push_back("about:blank");
    const std::string log = dir_ + "/chromium.log";
    std::vector<char*> argv;  // made before the fork: the child only execs
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      setpgid(0, 0);
      // Chromium reads commands on fd 3 and writes answers on fd 4.
      const int r = fcntl(to[0], F_DUPFD, 10), w = fcntl(from[1], F_DUPFD, 10);
      const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (r < 0 || w < 0 || out < 0 || dup2(r, 3) != 3 || dup2(w, 4) != 4 || dup2(out, 1) != 1 ||
          dup2(out, 2) != 2)
        _exit(127);
      execv(kChromium, argv.data());
      _exit(127);
    }
    close(to[0]);
    close(from[1]);
    to_ = to[1];
    from_ = from[0];
  }

  ~Chromium() {
    if (to_ >= 0) {
      const std::string close_cmd = R"({"id":999999,"method":"Browser.close"})";
      (void)!write(to_, close_cmd.c_str(), close_cmd.size() + 1);
      close(to_);
    }
    int status = 0;
    for (int i = 0; i < 1000 && waitpid(pid_, &status, WNOHANG) == 0; ++i) usleep(10'000);
    // Whatever it left (its own helpers are in its process group), by our
    // child's group id.
    kill(-pid_, SIGKILL);
    if (waitpid(pid_, &status, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    if (from_ >= 0) close(from_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Chromium(const Chromium&) = delete;
  Chromium& operator=(const Chromium&) = delete;

  // Sends `method` (to `session`, when given) and returns its result;
  // events that arrive meanwhile are kept.
  Json Call(const std::string& method, const Json& params = Json::object(),
            const std::string& session = "") {
    const int id = next_id_++;
    Json msg = {{"id", id}, {"method", method}, {"params", params}};
    if (!session.empty()) msg["sessionId"] = session;
    const std::string text = msg.dump();
    REQUIRE(write(to_, text.c_str(), text.size() + 1) == static_cast<ssize_t>(text.size() + 1));
    for (;;) {
      Json in;
      REQUIRE_MESSAGE(Read(&in), "chromium did not answer " << method << "; its log: " << Log());
      if (in.contains("id") && in["id"] == id) {
        REQUIRE_MESSAGE(!in.contains("error"), method << ": " << in.dump());
        return in.value("result", Json::object());
      }
      if (in.contains("method")) events_.push_back(std::move(in));
    }
  }

  // Waits for event `method` of `session`.
  Json Await(const std::string& method, const std::string& session) {
    for (size_t seen = 0;;) {
      for (; seen < events_.size(); ++seen) {
        if (events_[seen]["method"] == method && events_[seen].value("sessionId", "") == session)
          return events_[seen];
      }
      Json in;
      REQUIRE_MESSAGE(Read(&in), "no " << method << " from chromium; its log: " << Log());
      if (in.contains("method")) events_.push_back(std::move(in));
    }
  }

  const std::vector<Json>& events() const { return events_; }

  std::string Log() const {
    std::string all;
    (void)Slurp(dir_ + "/chromium.log", &all);
    return all.size() > 4000 ? all.substr(all.size() - 4000) : all;
  }

 private:
  // One NUL-terminated message.
  bool Read(Json* out) {
    for (;;) {
      if (const size_t nul = buf_.find('\0'); nul != std::string::npos) {
        *out = Json::parse(buf_.substr(0, nul), nullptr, false);
        buf_.erase(0, nul + 1);
        return !out->is_discarded();
      }
      pollfd p{from_, POLLIN, 0};
      if (poll(&p, 1, kAnswerMs) != 1) return false;
      char chunk[65536];
      const ssize_t n = read(from_, chunk, sizeof(chunk));
      if (n <= 0) return false;
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

  static bool Slurp(const std::string& path, std::string* out) {
    FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) return false;
    char chunk[4096];
    for (size_t n; (n = std::fread(chunk, 1, sizeof(chunk), f)) > 0;) out->append(chunk, n);
    std::fclose(f);
    return true;
  }

  std::string dir_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  int next_id_ = 1;
  std::string buf_;
  std::vector<Json> events_;
};

// The host a proxy request names: "CONNECT host:443 ..." or "GET
// http://host/... ..."; the line itself when it is neither.
std::string ProxyTarget(const std::string& line) {
  static const std::regex re(R"(^(?:CONNECT ([^: ]+)|[A-Z]+ [a-z]+://([^/:? ]+)))");
  std::smatch m;
  if (!std::regex_search(line, m, re)) return line;
  return m[1].matched ? m[1].str() : m[2].str();
}

// Chromium's own background requests, which it makes with any page (even an
// empty one) whatever the flags (measured with Debian's chromium 156:
// clients2.google.com's network time, update.googleapis.com's component
// updater, accounts.google.com), and which a page under the report's CSP
// could not make.
bool ChromiumsOwn(const std::string& host) {
  for (const char* suffix : {".google.com", ".googleapis.com", ".gstatic.com", ".gvt1.com"}) {
    const std::string s = suffix;
    if (host.size() > s.size() && host.compare(host.size() - s.size(), s.size(), s) == 0)
      return true;
  }
  return false;
}

// A listening TCP socket on 127.0.0.1 that chromium is told is its proxy:
// every request of the page (or of chromium) connects to it. A thread reads
// each connection's first line, keeps the host it names and closes it at
// once, so that a request fails fast instead of holding up the page's load.
class Sink {
 public:
  Sink() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(listen(fd_, 64) == 0);
    socklen_t len = sizeof(a);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 50) == 1) TakeAll();
      }
    });
  }
  ~Sink() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    close(fd_);
  }
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  int port() const { return port_; }
  // The hosts named so far (also by connections still queued).
  std::vector<std::string> Targets() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    TakeAll();
    return targets_;
  }

 private:
  void TakeAll() {
    for (int c; (c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0; close(c)) {
      std::string line;
      pollfd p{c, POLLIN, 0};
      char buf[1024];
      if (poll(&p, 1, 500) == 1) {
        const ssize_t n = read(c, buf, sizeof(buf));
        if (n > 0) line.assign(buf, static_cast<size_t>(n));
      }
      line = line.substr(0, line.find("\r\n"));
      std::lock_guard<std::mutex> l(mu_);
      targets_.push_back(line.empty() ? "(a connection that sent nothing)" : ProxyTarget(line));
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> targets_;
};

// What one load of the page gave.
struct Load {
  std::string dom;               // DOM.getOuterHTML of the document after load
  Json metrics;                  // JavaScript on: widths (see Open)
  std::vector<std::string> errors;    // console errors, exceptions, error log entries
  std::vector<std::string> requests;  // URLs requested other than the page's own
  std::vector<std::string> chromiums_own;  // chromium's background requests (hosts)
};

Load Open(const std::string& file, bool javascript) {
  Sink proxy;
  std::vector<std::string> flags = {
      fmt::format("--proxy-server=http://127.0.0.1:{}", proxy.port()),
      "--proxy-bypass-list=<-loopback>",  // loopback goes through the proxy too
      // Every name fails; the proxy's address must not, or nothing would
      // reach it (measured: without the EXCLUDE a request never connects).
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"};
  if (!javascript) flags.push_back("--blink-settings=scriptEnabled=false");
  Load out;
  {
    Chromium c(flags);
    const std::string target = c.Call("Target.createTarget", {{"url", "about:blank"}})["targetId"];
    const std::string s =
        c.Call("Target.attachToTarget", {{"targetId", target}, {"flatten", true}})["sessionId"];
    for (const char* domain : {"Page.enable", "Runtime.enable", "Log.enable", "Network.enable"})
      c.Call(domain, Json::object(), s);
    if (javascript) {
      c.Call("Emulation.setDeviceMetricsOverride",
             {{"width", 390}, {"height", 844}, {"deviceScaleFactor", 3}, {"mobile", true}}, s);
    }
    const std::string url = "file://" + file;
    c.Call("Page.navigate", {{"url", url}}, s);
    c.Await("Page.loadEventFired", s);
    if (javascript) {
      const Json r = c.Call("Runtime.evaluate",
                            {{"expression",
                              "JSON.stringify({scroll: document.documentElement.scrollWidth, "
                              "client: document.documentElement.clientWidth, inner: "
                              "window.innerWidth, body: document.body.scrollWidth})"},
                             {"returnByValue", true}},
                            s);
      out.metrics = Json::parse(r["result"].value("value", "{}"));
    }
    const Json root = c.Call("DOM.getDocument", {{"depth", 0}}, s)["root"];
    out.dom = c.Call("DOM.getOuterHTML", {{"nodeId", root["nodeId"]}}, s)["outerHTML"];
    for (const Json& e : c.events()) {
      const Json& p = e.value("params", Json::object());
      if (e["method"] == "Runtime.consoleAPICalled" &&
          (p["type"] == "error" || p["type"] == "assert" || p["type"] == "warning"))
        out.errors.push_back("console." + p["type"].get<std::string>() + ": " + p.dump());
      if (e["method"] == "Runtime.exceptionThrown") out.errors.push_back("exception: " + p.dump());
      if (e["method"] == "Log.entryAdded" && (p["entry"]["level"] == "error" ||
                                              p["entry"]["level"] == "warning"))
        out.errors.push_back("log: " + p["entry"].dump());
      if (e["method"] == "Network.requestWillBeSent" && p["request"]["url"] != url)
        out.requests.push_back(p["request"]["url"]);
    }
  }
  // Looked at after chromium is gone: nothing can connect any more.
  for (const std::string& host : proxy.Targets()) {
    if (ChromiumsOwn(host))
      out.chromiums_own.push_back(host);
    else
      out.requests.push_back("through the proxy: " + host);
  }
  return out;
}

// Every value of a data attribute pair in `html`: {"files": {16}}.
std::map<std::string, std::set<uint64_t>> Pairs(const std::string& html, const std::string& key,
                                                const std::string& value) {
  std::map<std::string, std::set<uint64_t>> out;
  const std::regex re(key + "=\"([^\"]*)\" " + value + "=\"([0-9]+)\"");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), re); it != std::sregex_iterator();
       ++it)
    out[(*it)[1]].insert(std::stoull((*it)[2]));
  return out;
}

// What every element that states a count says, when they all agree: the
// first disagreement fails the test.
Counts Shown(const std::string& html, const std::string& key, const std::string& value) {
  Counts out;
  for (const auto& pair : Pairs(html, key, value)) {
    // Not a structured binding: clang (before 16) cannot capture one in the
    // lambda CHECK_MESSAGE makes of its message.
    const std::string& name = pair.first;
    const auto& values = pair.second;
    CHECK_MESSAGE(values.size() == 1, key << "=" << name << " shows several counts");
    out[name] = *values.begin();
  }
  return out;
}

// ---- the numbers, from the ioctls ------------------------------------------------

// Pool block numbers.
using BlockNums = std::set<uint64_t>;

struct Ext {
  uint64_t file_offset, pool_block, blocks, refcount;
};

std::vector<Ext> Bmap(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  std::vector<Ext> out;
  auto b = std::make_unique<leasefs_bmap>();
  *b = leasefs_bmap{};
  for (;;) {
    REQUIRE(ioctl(fd, LEASEFS_IOC_BMAP, b.get()) == 0);
    for (uint32_t i = 0; i < b->count; ++i) {
      const leasefs_extent& e = b->extents[i];
      out.push_back({e.file_offset, e.pool_offset / B, (e.length + B - 1) / B, e.refcount});
    }
    if (!(b->flags & LEASEFS_BMAP_MORE)) break;
    b->start = b->next;
  }
  close(fd);
  return out;
}

// Blocks of the file range [off, off + len) (len 0: to the end) under `exts`.
void AddRange(const std::vector<Ext>& exts, uint64_t off, uint64_t len, BlockNums* out) {
  const uint64_t end = len == 0 ? UINT64_MAX : off + len;
  for (const Ext& e : exts) {
    for (uint64_t k = 0; k < e.blocks; ++k) {
      const uint64_t at = e.file_offset + k * B;
      if (at + B > off && at < end) out->insert(e.pool_block + k);
    }
  }
}

Counts Expected(TestMount& m, const std::vector<std::string>& files) {
  std::map<uint64_t, std::vector<Ext>> by_ino;
  BlockNums all, shared;
  for (const std::string& f : files) {
    struct stat st {};
    REQUIRE(stat(f.c_str(), &st) == 0);
    by_ino[st.st_ino] = Bmap(f);
    for (const Ext& e : by_ino[st.st_ino]) {
      for (uint64_t k = 0; k < e.blocks; ++k) {
        all.insert(e.pool_block + k);
        if (e.refcount > 1) shared.insert(e.pool_block + k);
      }
    }
  }
  const int dir = open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  std::map<std::string, BlockNums> leased{{"active", {}}, {"breaking", {}}, {"revoked", {}},
                                       {"zombie", {}}};
  auto list = std::make_unique<leasefs_lease_list>();
  REQUIRE(ioctl(dir, LEASEFS_IOC_LIST_LEASES, list.get()) == 0);
  REQUIRE((list->flags & LEASEFS_LIST_MORE) == 0);
  static const std::map<uint32_t, std::string> kState = {{LEASEFS_STATE_ACTIVE, "active"},
                                                         {LEASEFS_STATE_BREAKING, "breaking"},
                                                         {LEASEFS_STATE_REVOKED, "revoked"},
                                                         {LEASEFS_STATE_ZOMBIE, "zombie"}};
  for (uint32_t i = 0; i < list->count; ++i) {
    const leasefs_lease_info& l = list->leases[i];
    AddRange(by_ino[l.ino], l.offset, l.length, &leased[kState.at(l.state)]);
  }
  leasefs_dax_list dax{};
  REQUIRE(ioctl(dir, LEASEFS_IOC_DAX_LIST, &dax) == 0);
  REQUIRE((dax.flags & LEASEFS_LIST_MORE) == 0);
  BlockNums pinned, fenced, quarantined;
  for (const leasefs_pin_record& p : Pins(dir)) {
    for (uint32_t i = 0; i < dax.count; ++i) {
      const leasefs_dax_record& r = dax.records[i];
      if (r.owner_pid != m.daemon_pid() || r.ino != p.ino) continue;
      AddRange({{r.file_offset, r.pool_offset / B, r.length / B, 1}}, p.offset, p.length, &pinned);
      if (p.flags & LEASEFS_PIN_REC_FENCED)
        AddRange({{r.file_offset, r.pool_offset / B, r.length / B, 1}}, p.offset, p.length,
                 &fenced);
    }
  }
  for (uint32_t i = 0; i < dax.count; ++i) {
    const leasefs_dax_record& r = dax.records[i];
    if (r.quarantined == 0) continue;
    for (uint64_t k = 0; k < r.length / B; ++k)
      if (r.quarantined == r.length || all.count(r.pool_offset / B + k) == 0)
        quarantined.insert(r.pool_offset / B + k);
  }
  CHECK(quarantined.size() == dax.quarantined_total / B);
  close(dir);
  Counts c = {{"files", all.size()},      {"shared", shared.size()}, {"pinned", pinned.size()},
              {"fenced", fenced.size()},  {"quarantined", quarantined.size()}};
  BlockNums any;
  for (const auto& [state, blocks] : leased) {
    c["leased-" + state] = blocks.size();
    any.insert(blocks.begin(), blocks.end());
  }
  c["leased"] = any.size();
  return c;
}

Counts EventCounts(const std::string& mnt) {
  static const std::map<uint32_t, std::string> kType = {
      {LEASEFS_EVENT_GRANT, "grant"},     {LEASEFS_EVENT_BREAK, "break"},
      {LEASEFS_EVENT_RELEASE, "release"}, {LEASEFS_EVENT_REVOKE, "revoke"},
      {LEASEFS_EVENT_REFUSED, "refused"}, {LEASEFS_EVENT_BREAK_DONE, "break-done"},
      {LEASEFS_EVENT_ZOMBIE, "zombie"},   {LEASEFS_EVENT_FENCE, "fence"}};
  Counts c;
  for (const auto& [type, name] : kType) c[name] = 0;
  c["lost"] = 0;
  const int dir = open(mnt.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(dir >= 0);
  std::vector<leasefs_event> ev(LEASEFS_EVENTS_MAX);
  for (uint64_t after = 0;;) {
    size_t n = 0;
    uint64_t lost = 0;
    REQUIRE(leasefs_read_events(dir, after, 0, ev.data(), ev.size(), &n, &lost) == 0);
    c["lost"] += lost;
    for (size_t i = 0; i < n; ++i) ++c[kType.at(ev[i].type)];
    if (n == 0) break;
    after = ev[n - 1].seq;
  }
  close(dir);
  return c;
}

// ---- the situation -----------------------------------------------------------------

// A process that holds an exclusive WRITE lease on `path` with a soft NIC
// pin of its first `blocks` blocks; with `close_file`, it then closes the
// file (the seed message's close: the lease lives on as a zombie). It holds
// on, answering no break, until the test ends it.
class PinHolder {
 public:
  PinHolder(const std::string& path, uint64_t blocks, bool close_file) {
    int said[2], hold[2];
    REQUIRE(pipe2(said, O_CLOEXEC) == 0);
    REQUIRE(pipe2(hold, O_CLOEXEC) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      close(said[0]);
      close(hold[1]);
      const int fd = open(path.c_str(), O_RDWR);
      leasefs_pin_context c{};
      uint64_t id = 0;
      int rc = fd < 0 ? -errno : Lease(fd, 0, 0, LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE);
      if (rc == 0) rc = leasefs_pin_context_open(fd, &c);
      if (rc == 0)
        rc = leasefs_pin_register(fd, &c, 0, blocks * B, LEASEFS_PIN_SOFTNIC, kRW, &id, nullptr);
      if (rc == 0 && close_file) rc = close(fd) == 0 ? 0 : -errno;
      (void)!write(said[1], &rc, sizeof(rc));
      char byte;
      while (read(hold[0], &byte, 1) != 0) {
      }
      _exit(0);
    }
    close(said[1]);
    close(hold[0]);
    hold_ = hold[1];
    int rc = -1;
    const bool got = read(said[0], &rc, sizeof(rc)) == sizeof(rc);
    close(said[0]);
    REQUIRE(got);
    REQUIRE_MESSAGE(rc == 0, "the pin holder failed: " << strerror(-rc));
  }
  // SIGKILL, as the test's end needs nothing else of it (a later holder
  // inherited this one's pipe, so EOF alone would not end it).
  ~PinHolder() {
    close(hold_);
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  PinHolder(const PinHolder&) = delete;
  PinHolder& operator=(const PinHolder&) = delete;

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
};

TEST_CASE("report: chromium shows the mount's numbers, with no console error, no request, at "
          "390 px, and with JavaScript off") {
  MountOptions o;
  o.pool_size = "64M";
  o.options = "allow_other,lease_break_time=1,pinned_break=fence";
  TestMount m(o);
  const std::string a = m.path("a"), b = m.path("b"), c = m.path("c"), f = m.path("f"),
                    z = m.path("z"), img = m.path("<img src=x onerror=alert(1)>"),
                    script = m.path("<script>document.title='owned'");
  WriteAt(a, 0, Blocks("abcdefgh"));
  REQUIRE(Leasectl({"reflink", a, b}).exit_code == 0);
  WriteAt(c, 0, Blocks("cc"));
  WriteAt(f, 0, std::string(16 * B, 'f'));
  WriteAt(z, 0, Blocks("zzzz"));
  WriteAt(img, 0, Blocks("i"));
  WriteAt(script, 0, Blocks("s"));
  // A shared lease held by leasectl, and one taken and released.
  Background hold({"hold", "--shared", a});
  REQUIRE(hold.Line().find(" granted: ") != std::string::npos);
  REQUIRE(Leasectl({"hold", "--shared", c, "--", "true"}).exit_code == 0);
  // Scenario 10 under fence: a pinned exclusive lease, a truncate from
  // another process; the holder answers nothing.
  auto holder = std::make_unique<PinHolder>(f, 16, false);
  const pid_t breaker = fork();
  REQUIRE(breaker >= 0);
  if (breaker == 0) _exit(truncate(f.c_str(), 0) == 0 ? 0 : errno);
  int status = 0;
  REQUIRE(waitpid(breaker, &status, 0) == breaker);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  // The seed message: open, lease, pin, close.
  auto seed = std::make_unique<PinHolder>(z, 4, true);

  const std::vector<std::string> files = {a, b, c, f, z, img, script};
  const Counts bands = Expected(m, files);
  // The situation is the one meant: a's 8 blocks shared with b, c 2, z 4,
  // one each for the hostile names, f truncated; a leased by hold, z by a
  // zombie; f's 16 pinned blocks fenced and quarantined, z's 4 pinned.
  CHECK(bands == Counts{{"files", 16},        {"shared", 8},         {"leased", 12},
                        {"leased-active", 8}, {"leased-breaking", 0}, {"leased-revoked", 0},
                        {"leased-zombie", 4}, {"pinned", 20},        {"fenced", 16},
                        {"quarantined", 16}});
  const Counts events = EventCounts(m.mnt());
  CHECK(events.at("break") == 1);
  CHECK(events.at("fence") == 1);
  CHECK(events.at("revoke") == 1);
  CHECK(events.at("zombie") == 1);
  CHECK(events.at("release") >= 1);
  CHECK(events.at("grant") >= 4);

  const std::string html = "/tmp/leasectl-report-" + std::to_string(getpid()) + ".html";
  const std::string svg = "/tmp/leasectl-report-" + std::to_string(getpid());
  const ProcessResult r = Leasectl({"report", "--html", html, "--svg", svg, m.mnt()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK(r.output.empty());
  // Nothing changed while the report was made.
  CHECK(Expected(m, files) == bands);
  CHECK(EventCounts(m.mnt()) == events);

  {
    INFO("JavaScript on, at a phone's width");
    const Load load = Open(html, true);
    CHECK_MESSAGE(load.errors.empty(), fmt::format("{}", fmt::join(load.errors, "\n")));
    CHECK_MESSAGE(load.requests.empty(), fmt::format("{}", fmt::join(load.requests, "\n")));
    MESSAGE("chromium's own requests: " << fmt::format("{}", fmt::join(load.chromiums_own, ", ")));
    CHECK(Shown(load.dom, "data-band", "data-blocks") == bands);
    CHECK(Shown(load.dom, "data-event-type", "data-count") == events);
    CHECK(load.dom.find("data-js=\"on\"") != std::string::npos);  // the script ran
    // The hostile names are text: the title is the page's, no image was made.
    CHECK(load.dom.find("<img") == std::string::npos);
    CHECK(load.dom.find("&lt;img src=x onerror=alert(1)&gt;") != std::string::npos);
    CHECK(load.dom.find("&lt;script&gt;document.title='owned'") != std::string::npos);
    CHECK(load.dom.find("<title>" + m.mnt() + "</title>") != std::string::npos);
    INFO("widths: " << load.metrics.dump());
    CHECK(load.metrics["inner"] == 390);
    CHECK(load.metrics["scroll"].get<int>() <= load.metrics["inner"].get<int>());
    CHECK(load.metrics["body"].get<int>() <= load.metrics["inner"].get<int>());
  }
  {
    INFO("JavaScript off: every number is in the static page");
    const Load load = Open(html, false);
    CHECK_MESSAGE(load.errors.empty(), fmt::format("{}", fmt::join(load.errors, "\n")));
    CHECK_MESSAGE(load.requests.empty(), fmt::format("{}", fmt::join(load.requests, "\n")));
    CHECK(load.dom.find("data-js=") == std::string::npos);  // no script ran
    CHECK(Shown(load.dom, "data-band", "data-blocks") == bands);
    CHECK(Shown(load.dom, "data-event-type", "data-count") == events);
  }
  {
    INFO("the SVG files for slides carry the same counts");
    for (const char* part : {"-blocks.svg", "-timeline.svg"}) {
      const std::string text = ReadAll(svg + part);
      CHECK(text.rfind("<?xml", 0) == 0);
      CHECK(text.find("<script") == std::string::npos);
      CHECK(text.find("<img") == std::string::npos);
    }
    const Counts in_svg = Shown(ReadAll(svg + "-blocks.svg"), "data-band", "data-blocks");
    for (const auto& [band, n] : in_svg) CHECK(bands.at(band) == n);
    CHECK(in_svg.size() == 6);
    const Counts ev_svg = Shown(ReadAll(svg + "-timeline.svg"), "data-event-type", "data-count");
    for (const auto& [type, n] : ev_svg) CHECK(events.at(type) == n);
    CHECK(ev_svg.size() == 8);
  }
  // LEASECTL_REPORT_KEEP=1 keeps the page and the pictures, to look at.
  if (std::getenv("LEASECTL_REPORT_KEEP") != nullptr) {
    MESSAGE("kept " << html << ", " << svg << "-blocks.svg and " << svg << "-timeline.svg");
  } else {
    unlink(html.c_str());
    unlink((svg + "-blocks.svg").c_str());
    unlink((svg + "-timeline.svg").c_str());
  }
}

}  // namespace
}  // namespace leasefs::testing

int main(int argc, char** argv) {
  if (!leasefs::testing::CanMountFuse()) {
    std::fprintf(stderr, "skipped: needs root and /dev/fuse\n");
    return 77;
  }
  if (access(leasefs::testing::kChromium, X_OK) != 0) {
    std::fprintf(stderr, "skipped: no chromium (%s; Debian's package chromium)\n",
                 leasefs::testing::kChromium);
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
