#include "tools/leasectl/scenario.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>
#include <tuple>

#include <fmt/core.h>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "tools/leasectl/lease_format.h"
#include "tools/leasectl/mount_view.h"
#include "tools/leasectl/snapshot.h"
#include "tools/leasectl/text.h"

namespace leasefs::leasectl {

volatile sig_atomic_t g_scenario_interrupted = 0;

namespace op {

namespace {
Json Req(const char* op, Json args) {
  args["op"] = op;
  return args;
}
}  // namespace

Json Open(const std::string& path, const std::string& flags, const std::string& as) {
  return Req("open", {{"path", path}, {"flags", flags}, {"as", as.empty() ? path : as}});
}
Json Close(const std::string& fd) { return Req("close", {{"fd", fd}}); }
Json Lease(const std::string& fd, const std::string& type, std::vector<std::string> flags,
           uint64_t off, uint64_t len, bool notify, const std::string& answer) {
  return Req("lease", {{"fd", fd}, {"type", type}, {"flags", flags}, {"off", off}, {"len", len},
                       {"notify", notify}, {"answer", answer}});
}
Json Convert(const std::string& fd, uint64_t id, const std::string& type,
             std::vector<std::string> flags) {
  return Req("convert", {{"fd", fd}, {"id", id}, {"type", type}, {"flags", flags}});
}
Json Unlock(const std::string& fd, uint64_t off, uint64_t len) {
  return Req("unlock", {{"fd", fd}, {"off", off}, {"len", len}});
}
Json GetLease(const std::string& fd, uint64_t off) {
  return Req("getlease", {{"fd", fd}, {"off", off}});
}
Json Map(const std::string& fd, uint64_t off, uint64_t len, const std::string& as) {
  return Req("map", {{"fd", fd}, {"off", off}, {"len", len}, {"as", as}});
}
Json Store(const std::string& map, uint64_t off, const std::string& text) {
  return Req("store", {{"map", map}, {"off", off}, {"text", text}});
}
Json Unmap(const std::string& fd, const std::string& map) {
  return Req("unmap", {{"fd", fd}, {"map", map}});
}
Json Context(const std::string& fd, const std::string& as) {
  return Req("context", {{"fd", fd}, {"as", as}});
}
Json Pin(const std::string& fd, uint64_t off, uint64_t len, const std::string& ctx,
         const std::string& provider) {
  return Req("pin",
             {{"fd", fd}, {"ctx", ctx}, {"off", off}, {"len", len}, {"provider", provider}});
}
Json Unpin(const std::string& ctx, uint64_t id) { return Req("unpin", {{"ctx", ctx}, {"id", id}}); }
Json UnpinLater(int ms, const std::string& ctx, uint64_t id) {
  return Req("unpin_later", {{"ctx", ctx}, {"id", id}, {"ms", ms}});
}
Json ContextClose(const std::string& ctx) { return Req("context_close", {{"ctx", ctx}}); }
Json Truncate(const std::string& path, uint64_t size) {
  return Req("truncate", {{"path", path}, {"size", size}});
}
Json Ftruncate(const std::string& fd, uint64_t size) {
  return Req("ftruncate", {{"fd", fd}, {"size", size}});
}
Json Fallocate(const std::string& fd, const std::string& mode, uint64_t off, uint64_t len) {
  return Req("fallocate", {{"fd", fd}, {"mode", mode}, {"off", off}, {"len", len}});
}
Json Clone(const std::string& dst, const std::string& src, uint64_t off, uint64_t len,
           uint64_t dstoff) {
  return Req("clone", {{"dst", dst}, {"src", src}, {"off", off}, {"len", len}, {"dstoff", dstoff}});
}
Json Defrag(const std::string& fd) { return Req("defrag", {{"fd", fd}}); }
Json Pwrite(const std::string& fd, uint64_t off, uint64_t len, char byte) {
  return Req("pwrite", {{"fd", fd}, {"off", off}, {"len", len}, {"byte", std::string(1, byte)}});
}
Json Pread(const std::string& fd, uint64_t off, uint64_t len) {
  return Req("pread", {{"fd", fd}, {"off", off}, {"len", len}});
}
Json PeerWrite(uint64_t rkey, uint64_t off, const std::string& text) {
  return Req("peer_write", {{"rkey", rkey}, {"off", off}, {"text", text}});
}
Json Send(const std::string& what, const std::string& to) {
  return Req("send", {{"what", what}, {"to", to}});
}
Json Receive(const std::string& as) { return Req("receive", {{"as", as}}); }
Json Fork(const std::string& name) { return Req("fork", {{"name", name}}); }
Json Exit(int code) { return Req("exit", {{"code", code}}); }

}  // namespace op

Expect Must(const std::string& result, const std::string& why, Expect::Wait wait) {
  return Expect{result, why, wait};
}

namespace {

std::string Seconds(double s) {
  if (s < 0.001) return fmt::format("{:.2f} ms", s * 1000);
  if (s < 1) return fmt::format("{:.1f} ms", s * 1000);
  return fmt::format("{:.2f} s", s);
}

std::string WaitWords(Expect::Wait w) {
  switch (w) {
    case Expect::Wait::kAtOnce: return " at once";
    case Expect::Wait::kBreakTime: return " after the break time";
    default: return "";
  }
}

// Whether `result` is `expected`, or one of its "|"-separated words.
bool OneOf(const std::string& result, const std::string& expected) {
  for (size_t at = 0; at <= expected.size();) {
    size_t end = expected.find('|', at);
    if (end == std::string::npos) end = expected.size();
    if (expected.compare(at, end - at, result) == 0) return true;
    at = end + 1;
  }
  return false;
}

uint64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

Run::Run(const Policy& policy, const RunOptions& options) : policy_(policy), options_(options) {
  // Actors forked by actors become ours when their parent dies, so that we
  // can reap them and see how they ended.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  std::string opts;
  for (const auto& [k, v] : policy_) opts += (opts.empty() ? "" : ",") + k + "=" + v;
  // Root mounts for every user, so that an actor may act as another user.
  if (root()) opts = "allow_other," + opts;
  const Status s = mount_.Start(options_.pool_size, opts);
  if (!s.ok()) throw ScenarioAbort("cannot mount a scratch pool: " + s.ToString());
  dir_ = UniqueFd(open(mount_.mnt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_.valid()) throw ScenarioAbort("cannot open the mount: " + std::string(strerror(errno)));
  // Start the narrative after whatever the mount logged so far.
  size_t n = 0;
  uint64_t lost = 0;
  leasefs_event e[LEASEFS_EVENTS_MAX];
  while (leasefs_read_events(dir_.get(), last_seq_, 0, e, LEASEFS_EVENTS_MAX, &n, &lost) == 0 &&
         n > 0)
    last_seq_ = e[n - 1].seq;
}

Run::~Run() {
  if (!finished_) {
    try {
      Finish();
    } catch (...) {
    }
  }
}

const std::string& Run::policy(const std::string& option) const {
  static const std::string kNone;
  const auto it = policy_.find(option);
  return it == policy_.end() ? kNone : it->second;
}

double Run::break_time() const {
  const std::string& v = policy("lease_break_time");
  return v.empty() ? 45.0 : std::stod(v);
}

void Run::MakeFile(const std::string& path, uint64_t size, char fill) {
  const std::string full = mount_.path(path);
  const int fd = open(full.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw ScenarioAbort("creating " + path + ": " + strerror(errno));
  const std::string data(size, fill);
  const bool ok = pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size());
  fchmod(fd, 0666);
  struct stat st {};
  fstat(fd, &st);
  close(fd);
  if (!ok) throw ScenarioAbort("writing " + path);
  files_[st.st_ino] = path;
  if (!options_.quiet)
    fmt::print("    (leasectl creates {}: {} of '{}', blocks of its own)\n", path,
               size >= kKiB ? fmt::format("{} KiB", size / kKiB) : Plural(size, "byte"), fill);
}

void Run::MakeFragmentedFile(const std::string& path, uint64_t size, char fill) {
  const std::string full = mount_.path(path);
  const std::string filler = mount_.path(".filler");
  const int fd = open(full.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  const int gap = open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || gap < 0) throw ScenarioAbort("creating " + path + ": " + strerror(errno));
  // Runs of 16 blocks: a handful of pieces, so a DAX mapping of the file
  // still fits one request.
  const uint64_t piece = 16 * kBlock;
  const std::string block(piece, fill);
  bool ok = true;
  for (uint64_t off = 0; off < size && ok; off += piece) {
    ok = pwrite(fd, block.data(), piece, static_cast<off_t>(off)) == static_cast<ssize_t>(piece) &&
         pwrite(gap, block.data(), piece, static_cast<off_t>(off)) == static_cast<ssize_t>(piece);
  }
  fchmod(fd, 0666);
  struct stat st {};
  fstat(fd, &st);
  close(fd);
  close(gap);
  unlink(filler.c_str());
  if (!ok) throw ScenarioAbort("writing " + path);
  files_[st.st_ino] = path;
  if (!options_.quiet)
    fmt::print("    (leasectl creates {}: {} KiB of '{}', in runs of 64 KiB that are not contiguous)\n",
               path, size / kKiB, fill);
}

Actor& Run::Spawn(const std::string& name, uid_t uid) {
  auto a = Actor::Spawn(name, mount_.mnt(), uid);
  if (!a.ok()) throw ScenarioAbort("starting actor " + name + ": " + a.status().ToString());
  actors_.push_back(std::make_unique<Actor>(std::move(*a)));
  // A link with every actor before it, for passing descriptors (SCM_RIGHTS):
  // a socket pair, one end each, so that no other process can reach it.
  for (size_t i = 0; i + 1 < actors_.size(); ++i) Link(*actors_[i], *actors_.back());
  names_[actors_.back()->pid()] = name;
  if (!options_.quiet) {
    std::string who = fmt::format("    {} is process {}", name, actors_.back()->pid());
    if (uid != static_cast<uid_t>(-1)) who += fmt::format(", running as uid {}", uid);
    fmt::print("{}\n", who);
  }
  return *actors_.back();
}

void Run::Link(Actor& a, Actor& b) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw ScenarioAbort(std::string("socketpair: ") + strerror(errno));
  const UniqueFd ea(sv[0]), eb(sv[1]);
  for (auto [actor, end, peer] : {std::tuple{&a, ea.get(), &b}, std::tuple{&b, eb.get(), &a}}) {
    const Json req{{"op", "adopt"}, {"as", "link " + peer->name()}};
    if (!actor->Send(req, end).ok()) throw ScenarioAbort(actor->name() + " is gone");
    const auto reply = actor->Reply(5000, &inbox_);
    if (!reply || reply->value("rc", -1) != 0)
      throw ScenarioAbort("linking " + a.name() + " and " + b.name());
  }
}

Actor& Run::Find(const std::string& name) {
  for (auto& a : actors_)
    if (a->name() == name) return *a;
  throw ScenarioAbort("no actor " + name);
}

Actor& Run::Fork(Actor& parent, const std::string& child_name, const std::string& text) {
  if (g_scenario_interrupted) throw ScenarioAbort("interrupted");
  CollectNotices(nullptr);
  const auto start = std::chrono::steady_clock::now();
  if (!parent.Send(op::Fork(child_name)).ok()) throw ScenarioAbort(parent.name() + " is gone");
  // Finish cannot take the reply: it carries the child's channel.
  UniqueFd channel;
  const std::optional<Json> reply = parent.Reply(30000, &inbox_, &channel);
  StepRecord& s = Record(&parent, text);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (reply && reply->contains("ns")) s.seconds = (*reply)["ns"].get<double>() / 1e9;
  if (reply) Judge(s, *reply);
  const pid_t pid = reply ? reply->value("value", 0) : 0;
  if (!reply || s.result != "OK" || pid <= 0 || !channel.valid()) {
    if (!reply) s.result = "no reply";
    Print(s);
    throw ScenarioAbort(fmt::format("{} could not fork: {}", parent.name(), s.result));
  }
  actors_.push_back(std::make_unique<Actor>(child_name, pid, std::move(channel)));
  names_[pid] = child_name;
  CollectNotices(&s);
  PollEvents(&s);
  Print(s);
  if (!options_.quiet)
    fmt::print("    {} is process {}, {}'s child\n", child_name, pid, parent.name());
  return *actors_.back();
}

void Run::Name(pid_t pid, const std::string& name, const std::string& what) {
  names_[pid] = name;
  if (!options_.quiet) fmt::print("    {} is process {}: {}\n", name, pid, what);
}

std::string Run::Who(pid_t pid) const {
  const auto it = names_.find(pid);
  if (it != names_.end()) return it->second;
  if (pid == getpid()) return "leasectl";
  if (pid == mount_.daemon_pid()) return "leasefs";
  if (pid == 0) return "no process";
  return fmt::format("pid {}", pid);
}

std::string Run::FileOf(uint64_t ino) {
  const auto it = files_.find(ino);
  return it != files_.end() ? it->second : fmt::format("inode {}", ino);
}

std::string Run::Describe(const leasefs_event& e) {
  const std::string lease =
      e.lease_id != 0
          ? fmt::format("lease {} ({})", e.lease_id,
                        LeaseKind(e.lease_type & 0xff, e.lease_type >> 8))
          : std::string("the change");
  const std::string where = fmt::format("{} bytes {}", FileOf(e.ino), RangeText(e.offset, e.length));
  const std::string why = EventWhy(e.type, e.why);
  const std::string err = e.err != 0 ? ": " + ErrnoName(e.err) : "";
  switch (e.type) {
    case LEASEFS_EVENT_GRANT:
      return fmt::format("grants {} on {} to {}", lease, where, Who(e.holder_pid));
    case LEASEFS_EVENT_BREAK:
      return fmt::format("breaks {} on {} held by {}: {} changes the layout ({}); the holder is told",
                         lease, where, Who(e.holder_pid), Who(e.actor_pid), why);
    case LEASEFS_EVENT_RELEASE:
      return fmt::format("{} of {} is released ({} by {})", lease, Who(e.holder_pid), why,
                         Who(e.actor_pid));
    case LEASEFS_EVENT_REVOKE:
      return fmt::format("revokes {} of {}: the break time ran out", lease, Who(e.holder_pid));
    case LEASEFS_EVENT_REFUSED:
      return fmt::format("refuses {}'s change of {} ({}){}: {} of {} cannot be broken",
                         Who(e.actor_pid), where, why, err, lease, Who(e.holder_pid));
    case LEASEFS_EVENT_BREAK_DONE:
      return fmt::format("lets {}'s change of {} go on ({}){}", Who(e.actor_pid), where, why,
                         e.err != 0 ? " - no: " + ErrnoName(e.err) : "");
    case LEASEFS_EVENT_ZOMBIE:
      return fmt::format("keeps {} of {} as ZOMBIE: its {} came while it counts pins", lease,
                         Who(e.holder_pid), e.why == LEASEFS_WHY_EXIT ? "holder's exit" : "close");
    case LEASEFS_EVENT_FENCE:
      return fmt::format("fences the pins under {} of {}: the soft NIC refuses them from now on",
                         lease, Who(e.holder_pid));
    default:
      return fmt::format("event {} on {}", e.type, where);
  }
}

void Run::PollEvents(StepRecord* s) {
  leasefs_event e[LEASEFS_EVENTS_MAX];
  for (;;) {
    size_t n = 0;
    uint64_t lost = 0;
    if (leasefs_read_events(dir_.get(), last_seq_, 0, e, LEASEFS_EVENTS_MAX, &n, &lost) != 0 ||
        n == 0)
      return;
    for (size_t i = 0; i < n; ++i) {
      events_.push_back(EventJson(e[i]));
      if (e[i].type == LEASEFS_EVENT_BREAK && notified_holders_.count(e[i].holder_pid))
        ++signals_owed_[e[i].holder_pid];
      if (s != nullptr) {
        s->notes.push_back("leasefs " + Describe(e[i]));
        s->note_times.push_back(e[i].time);
      }
    }
    last_seq_ = e[n - 1].seq;
  }
  if (s == nullptr) return;
  // A holder tells of its break signal when it reads it, a moment after the
  // break: wait for what is owed (up to 1 s, and not from an actor in the
  // middle of a step), so that the narrative does not depend on who was
  // faster.
  for (int i = 0; i < 100; ++i) {
    bool owed = false;
    for (const auto& [pid, count] : signals_owed_)
      owed |= count > 0 && !busy_.count(pid) && names_.count(pid);
    if (!owed) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CollectNotices(s);
  }
  // Then every note in the order it happened.
  std::vector<size_t> order(s->notes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return s->note_times[a] < s->note_times[b]; });
  std::vector<std::string> notes;
  std::vector<uint64_t> times;
  for (size_t i : order) {
    notes.push_back(s->notes[i]);
    times.push_back(s->note_times[i]);
  }
  s->notes = std::move(notes);
  s->note_times = std::move(times);
}

void Run::CollectNotices(StepRecord* s) {
  if (s == nullptr) {
    // Between steps: keep them for the next step's notes.
    for (auto& a : actors_) a->Drain(&inbox_);
    return;
  }
  std::vector<Json> notices = std::move(inbox_);
  inbox_.clear();
  for (auto& a : actors_) a->Drain(&notices);
  for (const Json& n : notices) {
    collected_.push_back(n);
    std::string line;
    const std::string who = n.value("actor", "?");
    if (n.value("what", "") == "break-signal") {
      for (const auto& [pid, name] : names_)
        if (name == who && signals_owed_[pid] > 0) --signals_owed_[pid];
      line = fmt::format("{} gets {} with si_fd {} ({}'s lease is breaking)", who,
                         n.value("signal", "a signal"), n.value("si_fd", -1), n.value("file", "?"));
      if (n.contains("answer"))
        line += fmt::format(" and releases it: {}", n.value("err", "?"));
      else
        line += ", and does nothing";
    } else if (n.value("what", "") == "forged-signal") {
      line = fmt::format("{} ignores a break signal from pid {}, which is not leasefs", who,
                         n.value("pid", 0));
    } else if (n.value("what", "") == "thread-unpin") {
      line = fmt::format("{}'s other thread calls ibv_dereg_mr (UNPIN): {}", who, n.value("err", "?"));
    } else if (n.value("what", "") == "child-exit") {
      line = fmt::format("{}'s child {} exits", who, Who(n.value("pid", 0)));
    } else {
      line = who + ": " + n.dump();
    }
    if (s != nullptr) {
      s->notes.push_back(line);
      s->note_times.push_back(n.value("time", uint64_t{0}));
    }
  }
}

StepRecord& Run::Record(Actor* a, const std::string& text) {
  StepRecord s;
  s.n = static_cast<int>(steps_.size()) + 1;
  if (a != nullptr) {
    s.actor = a->name();
    s.pid = a->pid();
  } else {
    s.actor = "leasectl";
    s.pid = getpid();
  }
  s.text = text;
  steps_.push_back(std::move(s));
  return steps_.back();
}

void Run::Judge(StepRecord& s, const Json& reply) {
  s.result = reply.value("err", "?");
  if (reply.contains("value")) s.value = reply["value"];
  if (reply.contains("rkey")) s.value = Json{{"id", reply["value"]}, {"rkey", reply["rkey"]}};
  if (reply.contains("text")) s.value = reply["text"];
  s.time = reply.value("end", uint64_t{0});
  if (s.expect.result.empty()) return;
  bool met = OneOf(s.result, s.expect.result);
  const double bt = break_time();
  if (s.expect.wait == Expect::Wait::kAtOnce && bt > 0 && s.seconds >= bt * 0.5) met = false;
  if (s.expect.wait == Expect::Wait::kBreakTime && s.seconds < bt * 0.8) met = false;
  s.met = met;
  if (!met)
    failures_.push_back(fmt::format("step {}: {} {}: expected {}{}, got {} after {}", s.n,
                                    s.actor, s.text, s.expect.result, WaitWords(s.expect.wait),
                                    s.result, Seconds(s.seconds)));
}

void Run::Print(const StepRecord& s) {
  if (options_.quiet) return;
  std::string value;
  if (s.value.is_number()) value = fmt::format(": {}", s.value.dump());
  if (s.value.is_object()) value = fmt::format(": pin {}, rkey {:#x}", s.value.value("id", 0ull),
                                               s.value.value("rkey", 0ull));
  if (s.value.is_string()) value = fmt::format(": \"{}\"", s.value.get<std::string>());
  if (s.actor == "leasectl")
    fmt::print("{:>3}. {}: {} -> {}{}\n", s.n, s.actor, s.text, s.result, value);
  else
    fmt::print("{:>3}. {}: {} -> {}{} ({})\n", s.n, s.actor, s.text, s.result, value,
               Seconds(s.seconds));
  for (const std::string& n : s.notes) fmt::print("       {}\n", n);
  if (!s.expect.why.empty()) fmt::print("       why: {}\n", s.expect.why);
  if (!s.met)
    fmt::print("       NOT AS STATED: expected {}{}\n", s.expect.result, WaitWords(s.expect.wait));
  std::fflush(stdout);  // a reader on a pipe sees each step as it happens
}

StepRecord& Run::Do(Actor& a, const std::string& text, const Json& request,
                    std::optional<Expect> expect) {
  Pending p = Start(a, text, request);
  return Finish(p, std::move(expect));
}

Pending Run::Start(Actor& a, const std::string& text, const Json& request) {
  if (g_scenario_interrupted) throw ScenarioAbort("interrupted");
  CollectNotices(nullptr);
  Pending p{&a, text, request, std::chrono::steady_clock::now()};
  if (request.value("op", "") == "lease" && request.value("notify", false))
    notified_holders_.insert(a.pid());
  busy_.insert(a.pid());
  const Status s = a.Send(request);
  if (!s.ok()) throw ScenarioAbort(a.name() + " is gone: " + s.ToString());
  return p;
}

bool Run::StillWaiting(Pending& p, int ms, const std::string& why) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until && !g_scenario_interrupted)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (g_scenario_interrupted) throw ScenarioAbort("interrupted");
  if (!p.reply) p.reply = p.actor->Reply(0, &inbox_);
  if (p.reply) {
    // It was to wait (that is what the policy says), and it is done already.
    failures_.push_back(fmt::format("{} {}: expected to be still waiting after {} ms, but it "
                                    "had ended ({})",
                                    p.actor->name(), p.text, ms, p.reply->value("err", "?")));
    return false;
  }
  StepRecord& s = Record(p.actor, p.text);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
  s.result = "waiting";
  s.time = RealtimeNs();
  s.expect.why = why;
  CollectNotices(&s);
  PollEvents(&s);
  Print(s);
  return true;
}

StepRecord& Run::Finish(Pending& p, std::optional<Expect> expect, int timeout_ms) {
  if (timeout_ms <= 0)
    timeout_ms = std::max(30000, static_cast<int>(break_time() * 2000) + 10000);
  std::optional<Json> reply = p.reply ? p.reply : p.actor->Reply(timeout_ms, &inbox_);
  if (reply) busy_.erase(p.actor->pid());
  if (!reply && g_scenario_interrupted) throw ScenarioAbort("interrupted");
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
  // A reply's own time is the actor's; ours includes the channel.
  double seconds = took;
  if (reply && reply->contains("ns")) seconds = (*reply)["ns"].get<double>() / 1e9;
  StepRecord& s = Record(p.actor, p.text);
  s.seconds = seconds;
  if (expect) s.expect = *expect;
  CollectNotices(&s);
  PollEvents(&s);
  if (!reply) {
    s.result = p.actor->gone() || p.actor->Exited() ? "killed" : "still blocked";
    s.seconds = took;
    s.time = RealtimeNs();
    if (s.expect.result.empty() || !OneOf(s.result, s.expect.result)) {
      s.met = false;
      failures_.push_back(fmt::format("step {}: {} {}: {}", s.n, s.actor, s.text, s.result));
    }
    Print(s);
    if (s.result == "still blocked")
      throw ScenarioAbort(fmt::format("{} did not finish '{}' within {} s", s.actor, s.text,
                                      timeout_ms / 1000));
    return s;
  }
  Judge(s, *reply);
  Print(s);
  if (!expect && s.result != "OK")
    throw ScenarioAbort(fmt::format("{}'s step '{}' failed with {}: the scenario cannot go on",
                                    s.actor, s.text, s.result));
  return s;
}

StepRecord& Run::Kill(Actor& a, const std::string& why) {
  CollectNotices(nullptr);
  a.Signal(SIGKILL);
  for (int i = 0; i < 500 && !a.Exited(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  int status = 0;
  (void)waitpid(a.pid(), &status, 0);
  // The daemon learns of the death through its pidfd: give it a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  StepRecord& s = Record(nullptr, fmt::format("kill -KILL {} ({})", a.pid(), a.name()));
  s.result = "OK";
  s.time = RealtimeNs();
  s.expect.why = why;
  CollectNotices(&s);
  PollEvents(&s);
  Print(s);
  return s;
}

StepRecord& Run::Exit(Actor& a, const std::string& why) {
  if (g_scenario_interrupted) throw ScenarioAbort("interrupted");
  CollectNotices(nullptr);
  const auto start = std::chrono::steady_clock::now();
  if (!a.Send(op::Exit(0)).ok()) throw ScenarioAbort(a.name() + " is gone");
  (void)a.Reply(5000, &inbox_);  // it answers, then calls _exit
  for (int i = 0; i < 500 && !a.Exited(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // Ours to reap, unless another actor forked it and still lives.
  (void)waitpid(a.pid(), nullptr, WNOHANG);
  // The daemon learns of the death through its pidfd: give it a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  StepRecord& s = Record(&a, "exit(0)");
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  s.result = a.Exited() ? "OK" : "still running";
  s.time = RealtimeNs();
  s.expect.why = why;
  if (s.result != "OK") {
    s.met = false;
    failures_.push_back(fmt::format("step {}: {} did not exit within 5 s", s.n, a.name()));
  }
  CollectNotices(&s);
  PollEvents(&s);
  Print(s);
  return s;
}

StepRecord& Run::ExpectKilled(Actor& a, int ms, const std::string& why) {
  int status = 0;
  bool dead = false;
  for (int i = 0; i < ms / 10 && !dead; ++i) {
    dead = waitpid(a.pid(), &status, WNOHANG) == a.pid();
    if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const bool killed = dead && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  std::string saw = !dead ? "still alive" : killed ? "killed by SIGKILL"
                                                   : fmt::format("ended with status {:#x}", status);
  return Check(fmt::format("{} (pid {}) is killed", a.name(), a.pid()), killed, saw, why);
}

int Run::Notices(Actor& a, const std::string& what, int at_least, int ms) {
  auto count = [&] {
    int n = 0;
    for (const std::vector<Json>* v : {&collected_, &inbox_})
      for (const Json& j : *v) n += j.value("actor", "") == a.name() && j.value("what", "") == what;
    return n;
  };
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    a.Drain(&inbox_);
    if (count() >= at_least || std::chrono::steady_clock::now() >= until || g_scenario_interrupted)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const int n = count();
  if (!inbox_.empty()) {
    StepRecord& s = Record(nullptr, fmt::format("(what {} learned meanwhile)", a.name()));
    s.result = "OK";
    s.time = RealtimeNs();
    CollectNotices(&s);
    PollEvents(&s);
    Print(s);
  }
  return n;
}

void Run::Say(const std::string& text) {
  if (!options_.quiet) fmt::print("     -- {}\n", text);
}

StepRecord& Run::Check(const std::string& text, bool met, const std::string& saw,
                       const std::string& why) {
  StepRecord& s = Record(nullptr, text);
  s.result = met ? "yes" : "no";
  s.value = saw;
  s.expect.result = "yes";
  s.expect.why = why;
  s.met = met;
  s.time = RealtimeNs();
  if (!met) failures_.push_back(fmt::format("step {}: {}: saw {}", s.n, text, saw));
  PollEvents(&s);
  Print(s);
  return s;
}

std::string Run::ReadFile(const std::string& path, size_t max) {
  const int fd = open(mount_.path(path).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("(") + strerror(errno) + ")";
  std::string buf(max, '\0');
  const ssize_t n = pread(fd, buf.data(), max, 0);
  close(fd);
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

uint64_t Run::FileSize(const std::string& path) {
  struct statx sx {};
  if (statx(AT_FDCWD, mount_.path(path).c_str(), AT_STATX_FORCE_SYNC, STATX_SIZE, &sx) != 0)
    return ~0ull;
  return sx.stx_size;
}

std::vector<leasefs_lease_info> Run::Leases() {
  std::vector<leasefs_lease_info> out;
  (void)ListLeases(dir_.get(), &out);
  return out;
}

std::vector<leasefs_pin_record> Run::Pins() {
  PinListing l;
  (void)ListPins(dir_.get(), &l);
  return l.pins;
}

uint64_t Run::QuarantinedBytes() {
  leasefs_dax_list l{};
  if (ioctl(dir_.get(), LEASEFS_IOC_DAX_LIST, &l) != 0) return 0;
  return l.quarantined_total;
}

StepRecord& Run::CheckNothingHeld(const std::string& text, const std::string& why, int ms) {
  for (int waited = 0; waited < ms && !(Pins().empty() && Leases().empty()); waited += 10)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const size_t pins = Pins().size(), leases = Leases().size();
  return Check(text, pins == 0 && leases == 0, fmt::format("{} pins, {} leases", pins, leases),
               why);
}

std::string Run::BlockMap(const std::string& path) {
  const int fd = open(mount_.path(path).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("(") + strerror(errno) + ")";
  std::string out;
  auto b = std::make_unique<leasefs_bmap>();
  b->start = 0;
  for (;;) {
    if (ioctl(fd, LEASEFS_IOC_BMAP, b.get()) != 0) {
      out = std::string("(") + strerror(errno) + ")";
      break;
    }
    for (uint32_t i = 0; i < b->count; ++i) {
      const auto& x = b->extents[i];
      out += fmt::format("{}{}..{}", out.empty() ? "" : " ", x.pool_offset / b->block_size,
                         (x.pool_offset + x.length) / b->block_size - 1);
    }
    if (!(b->flags & LEASEFS_BMAP_MORE)) break;
    b->start = b->next;
  }
  close(fd);
  return out;
}

void Run::Outcome(const std::string& column, const std::string& text) { outcome_[column] = text; }

void Run::Snapshot() {
  Json snap;
  const int rc = CollectSnapshot(mount_.mnt(), &snap);
  snapshot_ = rc == 0 ? snap : Json{{"error", ErrnoName(rc)}};
}

void Run::Finish() {
  if (finished_) return;
  finished_ = true;
  CollectNotices(nullptr);
  if (snapshot_.is_null() && dir_.valid()) Snapshot();
  for (auto& a : actors_)
    if (!a->Exited()) a->Signal(SIGKILL);
  for (auto& a : actors_) {
    for (int i = 0; i < 500 && !a->Exited(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    (void)waitpid(a->pid(), nullptr, WNOHANG);
  }
  // Whatever the scenario did, once its processes are gone nothing of theirs
  // may stay: no lease, no pin, nothing in quarantine (DESIGN.md §4: a crash
  // never leaves them behind forever).
  bool clean = false;
  for (int i = 0; i < 500 && !clean; ++i) {
    clean = Leases().empty() && Pins().empty() && QuarantinedBytes() == 0;
    if (!clean) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& a : actors_) (void)waitpid(a->pid(), nullptr, WNOHANG);
  StepRecord last;
  PollEvents(&last);
  if (!clean)
    failures_.push_back(fmt::format(
        "after every process was gone: {} leases, {} pins, {} bytes in quarantine left",
        Leases().size(), Pins().size(), QuarantinedBytes()));
  dir_ = UniqueFd();
  const Status s = mount_.Stop(&fsck_);
  if (!s.ok()) failures_.push_back("at the end: " + s.ToString() + "\n" + fsck_);
}

bool Run::ok() const { return failures_.empty(); }

Json Run::Document(const std::string& scenario, const std::string& title) const {
  Json doc;
  doc["scenario"] = scenario;
  doc["title"] = title;
  doc["policy"] = policy_;
  doc["ok"] = ok();
  doc["failures"] = failures_;
  doc["outcome"] = outcome_;
  Json actors = Json::object();
  for (const auto& [pid, name] : names_) actors[name] = pid;
  doc["actors"] = actors;
  Json steps = Json::array();
  for (const StepRecord& s : steps_) {
    Json j{{"n", s.n},          {"actor", s.actor},     {"pid", s.pid},
           {"time", s.time},    {"text", s.text},       {"result", s.result},
           {"seconds", s.seconds}, {"notes", s.notes}, {"met", s.met}};
    if (!s.value.is_null()) j["value"] = s.value;
    if (!s.expect.result.empty()) j["expected"] = s.expect.result;
    if (!s.expect.why.empty()) j["why"] = s.expect.why;
    steps.push_back(std::move(j));
  }
  doc["steps"] = steps;
  doc["events"] = events_;
  if (!snapshot_.is_null()) doc["snapshot"] = snapshot_;
  return doc;
}

}  // namespace leasefs::leasectl
