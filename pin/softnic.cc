#include "pin/softnic.h"

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "pin/random.h"
#include "pin/softnic_wire.h"

namespace leasefs::pin {
namespace {

// Bytes of one READ_DATA frame.
constexpr uint32_t kReadChunk = 128u << 10;
// A connection with more output than this waiting to be sent takes no new
// request and produces no READ data until the peer reads: a peer that never
// reads its completions costs at most this plus one chunk.
constexpr size_t kOutLimit = 64u << 10;
// The serving thread's spin before it sleeps (SpinForWork), and the most
// sleeps it skips spinning before after fruitless spins.
constexpr int64_t kSpinNs = 50'000;
constexpr unsigned kMaxSpinSkip = 1024;

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// What a completion is for: the low 8 bits of its user_data; the connection
// id is above them.
enum Kind : uint64_t {
  kAccept = 1,
  kWake = 2,
  kRecv = 3,
  kSend = 4,
  kCancel = 5,
  kAcceptRetry = 6,
};
uint64_t Tag(uint64_t conn_id, Kind kind) { return conn_id << 8 | kind; }

// A registered region and its guard.
//
// The guard: a copy runs between Enter() and Exit(); Fence() sets `fenced`
// and waits until `copying` is 0. All five accesses are seq_cst, so they lie
// in one total order S, and this is a Dekker pair:
//   copier:  I = copying.fetch_add(1);  L = fenced.load();  [copy];  D = fetch_sub
//   fencer:  F = fenced.store(true);    W = copying.load() until it reads 0
// If L reads false, L precedes F in S (it would read F otherwise), so
// I < L < F < W: W and every later load see the increment until D, and the
// fencer waits for D; D is a release that W's acquire reads from, so the copy
// happens-before Fence returns. If I follows F in S, so does L, and L reads
// true: the copier never copies. Hence after Fence returns no copy is in
// progress, and none starts. Exit notifies only when it sees `fenced`; it
// cannot miss a waiter: a fencer waits only after F, and if Exit's load of
// `fenced` (after D) reads false, D < F < W and W reads the count without
// this copier (atomic wait rechecks the value it was given).
struct Region {
  Region(uint64_t k, uint8_t* b, uint64_t len, bool w, bool r)
      : rkey(k), base(b), length(len), remote_write(w), remote_read(r) {}

  bool Enter() {
    copying.fetch_add(1, std::memory_order_seq_cst);
    if (!fenced.load(std::memory_order_seq_cst)) return true;
    Exit();
    return false;
  }
  void Exit() {
    if (copying.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        fenced.load(std::memory_order_seq_cst)) {
      copying.notify_all();
    }
  }
  void FenceAndDrain() {
    fenced.store(true, std::memory_order_seq_cst);
    for (uint32_t n; (n = copying.load(std::memory_order_seq_cst)) != 0;) {
      copying.wait(n, std::memory_order_seq_cst);
    }
  }
  // offset + length inside the region, without overflow.
  bool Contains(uint64_t offset, uint64_t len) const {
    return offset <= length && len <= length - offset;
  }

  const uint64_t rkey;
  uint8_t* const base;
  const uint64_t length;
  const bool remote_write;
  const bool remote_read;
  std::atomic<uint32_t> copying{0};
  std::atomic<bool> fenced{false};
  std::atomic<uint64_t> writes{0}, reads{0}, bytes_written{0}, bytes_read{0}, refused{0};
};

enum class Refusal { kBadRkey, kFenced, kOutOfBounds, kPermission };

// One connection; touched only by the serving thread.
struct Conn {
  Conn(uint64_t i, int f, std::string p)
      : id(i), fd(f), peer(std::move(p)), in(new uint8_t[SoftNic::kStagingBytes]) {}

  size_t in_avail() const { return in_end - in_begin; }
  size_t out_bytes() const { return sending.size() - sent + pending.size(); }
  void Append(const wire::Frame& f) {
    const auto* p = reinterpret_cast<const uint8_t*>(&f);
    pending.insert(pending.end(), p, p + sizeof f);
  }

  const uint64_t id;
  UniqueFd fd;
  const std::string peer;  // IPv4 address, for the refusal counts
  uint32_t max_message = wire::kMaxMessage;
  bool hello_done = false;

  // Staging input: bytes [in_begin, in_end) are received, not yet used. A
  // recv in flight writes at in_end; nothing moves the buffer meanwhile.
  std::unique_ptr<uint8_t[]> in;
  size_t in_begin = 0, in_end = 0;
  // Output: `sending` is in flight (from `sent` on) and never touched until
  // its send completes; new frames go to `pending`.
  std::vector<uint8_t> sending, pending;
  size_t sent = 0;
  bool recv_pending = false, send_pending = false;
  bool closing = false;  // take no more input; shut down once output is sent
  bool shut = false;     // shutdown(2) done; freed when no op is in flight

  // The request being served.
  bool in_op = false;
  wire::Request req{};
  uint64_t done = 0;  // payload bytes consumed (WRITE) or produced (READ)
  std::shared_ptr<Region> region;
  bool failed = false;

  // The regions this connection named, so that it can be told of a fence.
  // A region leaves the registry only fenced, so a cached one is safe to use:
  // its guard refuses.
  std::unordered_map<uint64_t, std::shared_ptr<Region>> used;
};

struct Counters {
  uint64_t accepted = 0, open = 0, refused_conn = 0, malformed = 0;
  uint64_t bad_rkey = 0, fenced = 0, out_of_bounds = 0, permission = 0;
  std::map<std::string, uint64_t> by_peer;
};

}  // namespace

class SoftNic::Impl {
 public:
  explicit Impl(SoftNicOptions o) : options_(std::move(o)) {}
  ~Impl() { Stop(); }

  Status Start() EXCLUDES(life_mu_, mu_);
  void Stop() EXCLUDES(life_mu_, mu_);
  uint16_t port() const { return port_.load(std::memory_order_relaxed); }
  Result<uint64_t> Register(void* base, uint64_t length, bool w, bool r) EXCLUDES(mu_);
  Status Fence(uint64_t rkey, bool forget) EXCLUDES(mu_);
  SoftNicStats Stats() const EXCLUDES(mu_);

 private:
  Status Listen();
  Status Setup();
  void Wake() REQUIRES(mu_);
  // The serving thread.
  void Run();
  void SpinForWork();
  void Dispatch(uint64_t user_data, int res);
  io_uring_sqe* Sqe();
  void ArmAccept();
  void ArmWake();
  void OnAccept(int res) EXCLUDES(mu_);
  void OnWake() EXCLUDES(mu_);
  void OnRecv(Conn& c, int res) EXCLUDES(mu_);
  void OnSend(Conn& c, int res);
  void Process(Conn& c) EXCLUDES(mu_);
  bool TakeHello(Conn& c) EXCLUDES(mu_);
  bool TakeRequest(Conn& c) EXCLUDES(mu_);
  void BeginOp(Conn& c) EXCLUDES(mu_);
  bool StepWrite(Conn& c) EXCLUDES(mu_);
  bool StepRead(Conn& c) EXCLUDES(mu_);
  void Complete(Conn& c, uint8_t op, bool ok);
  void Refuse(Conn& c, Refusal why) EXCLUDES(mu_);
  void Malformed(Conn& c, const wire::Request* req) EXCLUDES(mu_);
  void Pump(Conn& c);
  void Shut(Conn& c);
  void ReapIfIdle(uint64_t id) EXCLUDES(mu_);
  void BeginStop();

  const SoftNicOptions options_;
  std::atomic<uint16_t> port_{0};

  // Start and Stop. Lock order: life_mu_ before mu_.
  Mutex life_mu_ ACQUIRED_BEFORE(mu_);
  bool started_ GUARDED_BY(life_mu_) = false;
  std::thread thread_ GUARDED_BY(life_mu_);

  // The registry, the counters and the serving thread's mailbox.
  mutable Mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Region>> regions_ GUARDED_BY(mu_);
  std::unordered_set<uint64_t> issued_ GUARDED_BY(mu_);  // every rkey ever returned
  Counters counters_ GUARDED_BY(mu_);
  bool running_ GUARDED_BY(mu_) = false;
  bool stop_requested_ GUARDED_BY(mu_) = false;
  std::vector<uint64_t> fenced_mail_ GUARDED_BY(mu_);  // rkeys to tell peers about

  // Set up by Start before the thread starts, used only by the serving
  // thread, torn down after it is joined.
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;
  io_uring ring_{};
  __kernel_timespec accept_backoff_{0, 10'000'000};
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_conn_id_ = 1;
  uint64_t wake_buf_ = 0;
  sockaddr_in accept_addr_{};
  socklen_t accept_len_ = 0;
  unsigned inflight_ = 0;  // submitted ops not yet completed
  // SpinForWork's backoff: sleeps to go before the next spin, and the value
  // it was given after the last fruitless spin.
  unsigned spin_skip_ = 0;
  unsigned spin_backoff_ = 0;
  bool stopping_ = false;
};

// ---- Registry (any thread) ----

Result<uint64_t> SoftNic::Impl::Register(void* base, uint64_t length, bool w, bool r) {
  if (base == nullptr || length == 0 || (!w && !r)) {
    return Status::Error(EINVAL, "soft NIC region: null base, zero length or no permission");
  }
  if (reinterpret_cast<uintptr_t>(base) + length < reinterpret_cast<uintptr_t>(base)) {
    return Status::Error(EINVAL, "soft NIC region wraps the address space");
  }
  MutexLock l(&mu_);
  uint64_t rkey = 0;
  while (rkey == 0 || issued_.count(rkey) != 0) {
    LFS_RETURN_IF_ERROR(RandomBytes(&rkey, sizeof rkey));
  }
  issued_.insert(rkey);
  regions_.emplace(rkey, std::make_shared<Region>(rkey, static_cast<uint8_t*>(base), length, w, r));
  return rkey;
}

Status SoftNic::Impl::Fence(uint64_t rkey, bool forget) {
  std::shared_ptr<Region> region;
  {
    MutexLock l(&mu_);
    auto it = regions_.find(rkey);
    if (it == regions_.end()) return Status::Error(ENOENT, "no such rkey");
    region = it->second;
    if (forget) regions_.erase(it);
  }
  // Waits without mu_: the serving thread takes mu_ to look rkeys up.
  region->FenceAndDrain();
  MutexLock l(&mu_);
  if (running_) {
    fenced_mail_.push_back(rkey);
    Wake();
  }
  return Status::Ok();
}

SoftNicStats SoftNic::Impl::Stats() const {
  SoftNicStats s;
  MutexLock l(&mu_);
  const Counters& c = counters_;
  s.connections_accepted = c.accepted;
  s.connections_open = c.open;
  s.connections_refused = c.refused_conn;
  s.malformed_frames = c.malformed;
  s.refused_bad_rkey = c.bad_rkey;
  s.refused_fenced = c.fenced;
  s.refused_out_of_bounds = c.out_of_bounds;
  s.refused_permission = c.permission;
  s.refused_by_peer = c.by_peer;
  for (const auto& kv : regions_) {
    const Region& r = *kv.second;
    s.regions.push_back(RegionStats{r.rkey, r.length, r.fenced.load(), r.writes.load(),
                                    r.reads.load(), r.bytes_written.load(), r.bytes_read.load(),
                                    r.refused.load()});
  }
  std::sort(s.regions.begin(), s.regions.end(),
            [](const RegionStats& a, const RegionStats& b) { return a.rkey < b.rkey; });
  return s;
}

// ---- Start and Stop ----

Status SoftNic::Impl::Listen() {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.port);
  if (inet_pton(AF_INET, options_.bind_address.c_str(), &addr.sin_addr) != 1) {
    return Status::Error(EINVAL, "soft NIC: not an IPv4 address: " + options_.bind_address);
  }
  listen_fd_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) return Status::FromErrno("socket");
  int one = 1;
  if (setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return Status::FromErrno("setsockopt(SO_REUSEADDR)");
  }
  if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno("bind " + options_.bind_address);
  }
  if (listen(listen_fd_.get(), 128) != 0) return Status::FromErrno("listen");
  socklen_t len = sizeof addr;
  if (getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Status::FromErrno("getsockname");
  }
  port_.store(ntohs(addr.sin_port), std::memory_order_relaxed);
  return Status::Ok();
}

Status SoftNic::Impl::Setup() {
  LFS_RETURN_IF_ERROR(Listen());
  wake_fd_.reset(eventfd(0, EFD_CLOEXEC));
  if (!wake_fd_.valid()) return Status::FromErrno("eventfd");
  // Each connection has at most a recv and a send in flight; the kernel
  // keeps completions that overflow the CQ (IORING_FEAT_NODROP) anyway.
  unsigned entries = 64;
  while (entries < 4096 && entries < 2 * options_.max_connections + 8) entries *= 2;
  // COOP_TASKRUN: a completion that comes while the thread runs waits for
  // its next io_uring_enter instead of an IPI (each one costs a VM exit on
  // a guest); TASKRUN_FLAG says one is waiting, which SpinForWork watches.
  io_uring_params params{};
  params.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  int err = io_uring_queue_init_params(entries, &ring_, &params);
  if (err == -EINVAL) err = io_uring_queue_init(entries, &ring_, 0);  // before Linux 5.19
  if (err < 0) return Status::Error(-err, "io_uring_queue_init");
  return Status::Ok();
}

Status SoftNic::Impl::Start() {
  MutexLock life(&life_mu_);
  if (started_) return Status::Error(EINVAL, "soft NIC started already");
  if (options_.max_connections == 0) return Status::Error(EINVAL, "max_connections is 0");
  if (Status st = Setup(); !st.ok()) {
    listen_fd_.reset();
    wake_fd_.reset();
    port_.store(0, std::memory_order_relaxed);
    return st;
  }
  stopping_ = false;
  {
    MutexLock l(&mu_);
    running_ = true;
    stop_requested_ = false;
  }
  started_ = true;
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void SoftNic::Impl::Stop() {
  MutexLock life(&life_mu_);
  if (!started_) return;
  {
    MutexLock l(&mu_);
    stop_requested_ = true;
    Wake();
  }
  thread_.join();
  started_ = false;
  {
    MutexLock l(&mu_);
    running_ = false;
    fenced_mail_.clear();
    counters_.open = 0;
  }
  // The thread ended with no op in flight, so nothing writes the buffers.
  io_uring_queue_exit(&ring_);
  conns_.clear();
  listen_fd_.reset();
  wake_fd_.reset();
}

// Under mu_, so that wake_fd_ is open: Stop closes it only after clearing
// running_ under mu_.
void SoftNic::Impl::Wake() {
  uint64_t one = 1;
  // An eventfd write fails only when the counter would overflow, and then a
  // wakeup is pending anyway.
  [[maybe_unused]] ssize_t n = write(wake_fd_.get(), &one, sizeof one);
}

// ---- The serving thread ----

io_uring_sqe* SoftNic::Impl::Sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  ++inflight_;
  return sqe;
}

void SoftNic::Impl::ArmAccept() {
  io_uring_sqe* sqe = Sqe();
  accept_len_ = sizeof accept_addr_;
  io_uring_prep_accept(sqe, listen_fd_.get(), reinterpret_cast<sockaddr*>(&accept_addr_),
                       &accept_len_, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, Tag(0, kAccept));
}

void SoftNic::Impl::ArmWake() {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_read(sqe, wake_fd_.get(), &wake_buf_, sizeof wake_buf_, 0);
  io_uring_sqe_set_data64(sqe, Tag(0, kWake));
}

void SoftNic::Impl::Run() {
  ArmAccept();
  ArmWake();
  while (inflight_ > 0) {
    if (io_uring_cq_ready(&ring_) == 0) {
      if (spin_skip_ > 0) {
        --spin_skip_;
      } else {
        io_uring_submit(&ring_);  // arms the recvs the spin waits for
        SpinForWork();
      }
    }
    io_uring_submit_and_wait(&ring_, 1);
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      --inflight_;
      Dispatch(cqe->user_data, cqe->res);
    }
    io_uring_cq_advance(&ring_, seen);
  }
}

// A peer that streams into a region sends its next bytes within
// microseconds, and waking a sleeping thread from another CPU costs far
// more on a VM (an IPI, a halted vCPU woken: ~100 µs). So before sleeping,
// the thread watches the rings for up to kSpinNs. A spin that finds nothing
// (the peer waits for us, or shares our CPU and cannot run while we spin)
// skips the next 1, 2, 4 ... kMaxSpinSkip sleeps' spins; one that finds
// work spins again next time.
void SoftNic::Impl::SpinForWork() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(kSpinNs);
  for (unsigned i = 1;; ++i) {
    if (io_uring_cq_ready(&ring_) > 0 ||
        (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) != 0) {
      spin_backoff_ = 0;
      spin_skip_ = 0;
      return;
    }
    CpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) break;
  }
  spin_backoff_ = std::min(kMaxSpinSkip, std::max(1u, 2 * spin_backoff_));
  spin_skip_ = spin_backoff_;
}

void SoftNic::Impl::Dispatch(uint64_t user_data, int res) {
  const auto kind = static_cast<Kind>(user_data & 0xff);
  const uint64_t id = user_data >> 8;
  switch (kind) {
    case kAccept:
      OnAccept(res);
      return;
    case kWake:
      OnWake();
      return;
    case kCancel:
      return;
    case kAcceptRetry:
      if (!stopping_) ArmAccept();
      return;
    case kRecv:
    case kSend: {
      auto it = conns_.find(id);
      if (it == conns_.end()) return;  // cannot happen: freed only when idle
      Conn& c = *it->second;
      if (kind == kRecv) {
        OnRecv(c, res);
      } else {
        OnSend(c, res);
      }
      ReapIfIdle(id);
      return;
    }
  }
}

void SoftNic::Impl::OnAccept(int res) {
  if (stopping_) {
    if (res >= 0) close(res);
    return;
  }
  if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
    // Out of descriptors or memory: retrying at once would spin; back off.
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_timeout(sqe, &accept_backoff_, 0, 0);
    io_uring_sqe_set_data64(sqe, Tag(0, kAcceptRetry));
    return;
  }
  ArmAccept();
  if (res < 0) return;  // ECONNABORTED...: the next accept may do better
  if (conns_.size() >= options_.max_connections) {
    {
      MutexLock l(&mu_);
      ++counters_.refused_conn;  // counted before the peer can see the close
    }
    close(res);  // the peer sees the end of the stream where the hello should be
    return;
  }
  int one = 1;
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // completions are small
  char text[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &accept_addr_.sin_addr, text, sizeof text);
  const uint64_t id = next_conn_id_++;
  auto conn = std::make_unique<Conn>(id, res, text);
  Conn& c = *conn;
  conns_.emplace(id, std::move(conn));
  {
    MutexLock l(&mu_);
    ++counters_.accepted;
    ++counters_.open;
  }
  const wire::Hello hello{wire::kMagic, wire::kVersion, 0, wire::kMaxMessage, 0, 0};
  const auto* p = reinterpret_cast<const uint8_t*>(&hello);
  c.pending.insert(c.pending.end(), p, p + sizeof hello);
  Pump(c);
}

void SoftNic::Impl::OnWake() {
  std::vector<uint64_t> fenced;
  bool stop = false;
  {
    MutexLock l(&mu_);
    fenced.swap(fenced_mail_);
    stop = stop_requested_;
  }
  if (stop) {
    BeginStop();
    return;
  }
  ArmWake();
  for (uint64_t rkey : fenced) {
    for (auto& kv : conns_) {
      Conn& c = *kv.second;
      if (c.closing || c.used.erase(rkey) == 0) continue;
      c.Append(wire::Frame{wire::kFrameFenced, 0, 0, 0, 0, 0, rkey});
      Pump(c);
    }
  }
}

// Shuts every socket down and cancels the accept; Run ends when the last
// completion is in.
void SoftNic::Impl::BeginStop() {
  stopping_ = true;
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_cancel64(sqe, Tag(0, kAccept), 0);
  io_uring_sqe_set_data64(sqe, Tag(0, kCancel));
  std::vector<uint64_t> ids;
  for (auto& kv : conns_) {
    Shut(*kv.second);
    ids.push_back(kv.first);
  }
  for (uint64_t id : ids) ReapIfIdle(id);
}

void SoftNic::Impl::Shut(Conn& c) {
  if (c.shut) return;
  c.closing = true;
  c.shut = true;
  // Ends the recv and send in flight, if any, at once.
  shutdown(c.fd.get(), SHUT_RDWR);
}

void SoftNic::Impl::ReapIfIdle(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  const Conn& c = *it->second;
  if (!c.shut || c.recv_pending || c.send_pending) return;
  conns_.erase(it);
  MutexLock l(&mu_);
  --counters_.open;
}

void SoftNic::Impl::OnRecv(Conn& c, int res) {
  c.recv_pending = false;
  if (c.shut) return;
  if (res <= 0) {
    // End of stream (or a reset) inside a frame is a truncated frame.
    if (c.in_avail() > 0 || c.in_op) Malformed(c, nullptr);
    Shut(c);
    return;
  }
  c.in_end += static_cast<size_t>(res);
  Process(c);
  Pump(c);
}

void SoftNic::Impl::OnSend(Conn& c, int res) {
  c.send_pending = false;
  if (res < 0 || c.shut) {
    Shut(c);
    return;
  }
  c.sent += static_cast<size_t>(res);
  if (c.sent == c.sending.size()) {
    c.sending.clear();
    c.sent = 0;
    std::swap(c.sending, c.pending);
  }
  if (!c.closing) Process(c);  // may have waited for the output to drain
  Pump(c);
}

// Arms what the connection needs next: a send of waiting output, a recv if
// there is room, or the shutdown of a closing connection once its output
// (the error completion) is sent.
void SoftNic::Impl::Pump(Conn& c) {
  if (c.shut) return;
  if (!c.send_pending && c.sent == c.sending.size() && !c.pending.empty()) {
    c.sending.clear();
    c.sent = 0;
    std::swap(c.sending, c.pending);
  }
  if (!c.send_pending && c.sent < c.sending.size()) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_send(sqe, c.fd.get(), c.sending.data() + c.sent, c.sending.size() - c.sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, Tag(c.id, kSend));
    c.send_pending = true;
  }
  if (c.closing) {
    if (!c.send_pending) Shut(c);
    return;
  }
  if (c.recv_pending) return;
  if (c.in_begin == c.in_end) {
    c.in_begin = c.in_end = 0;
  } else if (c.in_begin > 0 && (c.in_avail() <= 4096 || c.in_end == SoftNic::kStagingBytes)) {
    // A partial frame: moving it is cheap and leaves room for a large recv.
    std::memmove(c.in.get(), c.in.get() + c.in_begin, c.in_avail());
    c.in_end -= c.in_begin;
    c.in_begin = 0;
  }
  if (c.in_end == SoftNic::kStagingBytes) return;  // full: waits for the output to drain
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_recv(sqe, c.fd.get(), c.in.get() + c.in_end, SoftNic::kStagingBytes - c.in_end,
                     0);
  io_uring_sqe_set_data64(sqe, Tag(c.id, kRecv));
  c.recv_pending = true;
}

// Serves what the staging buffer holds, as far as the output allows.
void SoftNic::Impl::Process(Conn& c) {
  while (!c.closing) {
    bool progress = false;
    if (!c.hello_done) {
      progress = TakeHello(c);
    } else if (c.in_op) {
      progress = c.req.op == wire::kOpWrite ? StepWrite(c) : StepRead(c);
    } else if (c.out_bytes() <= kOutLimit) {
      progress = TakeRequest(c);
    }
    if (!progress) return;
  }
}

bool SoftNic::Impl::TakeHello(Conn& c) {
  if (c.in_avail() < sizeof(wire::Hello)) return false;
  wire::Hello h;
  std::memcpy(&h, c.in.get() + c.in_begin, sizeof h);
  c.in_begin += sizeof h;
  if (h.magic != wire::kMagic || h.version != wire::kVersion || h.flags != 0 ||
      h.max_message == 0 || h.reserved0 != 0 || h.reserved1 != 0) {
    Malformed(c, nullptr);
    return false;
  }
  c.max_message = std::min(h.max_message, wire::kMaxMessage);
  c.hello_done = true;
  return true;
}

bool SoftNic::Impl::TakeRequest(Conn& c) {
  if (c.in_avail() < sizeof(wire::Request)) return false;
  wire::Request r;
  std::memcpy(&r, c.in.get() + c.in_begin, sizeof r);
  c.in_begin += sizeof r;
  const bool op_ok = r.op == wire::kOpWrite || r.op == wire::kOpRead;
  const bool flags_ok = (r.flags & ~wire::kKnownFlags) == 0 &&
                        !(r.op == wire::kOpRead && (r.flags & wire::kFlagUnsignaled) != 0);
  if (!op_ok || !flags_ok || r.reserved != 0 || r.length > c.max_message) {
    Malformed(c, &r);
    return false;
  }
  c.req = r;
  BeginOp(c);
  return true;
}

// Looks the rkey up and checks the whole operation once; a refused WRITE
// still consumes its payload (discarded), so the stream stays in step.
void SoftNic::Impl::BeginOp(Conn& c) {
  c.in_op = true;
  c.done = 0;
  c.failed = false;
  c.region.reset();
  const uint64_t rkey = c.req.rkey;
  auto it = c.used.find(rkey);
  if (it != c.used.end()) {
    c.region = it->second;
  } else {
    MutexLock l(&mu_);
    auto rit = regions_.find(rkey);
    if (rit != regions_.end()) c.region = rit->second;
  }
  if (c.region == nullptr) return Refuse(c, Refusal::kBadRkey);
  c.used.emplace(rkey, c.region);
  Region& region = *c.region;
  const bool write = c.req.op == wire::kOpWrite;
  if (region.fenced.load(std::memory_order_relaxed)) return Refuse(c, Refusal::kFenced);
  if (write ? !region.remote_write : !region.remote_read) {
    return Refuse(c, Refusal::kPermission);
  }
  if (!region.Contains(c.req.offset, c.req.length)) return Refuse(c, Refusal::kOutOfBounds);
}

bool SoftNic::Impl::StepWrite(Conn& c) {
  const size_t n = std::min<uint64_t>(c.in_avail(), c.req.length - c.done);
  if (n == 0 && c.done < c.req.length) return false;
  if (!c.failed && n > 0) {
    Region& region = *c.region;
    if (region.Enter()) {
      std::memcpy(region.base + c.req.offset + c.done, c.in.get() + c.in_begin, n);
      region.Exit();
    } else {
      Refuse(c, Refusal::kFenced);  // fenced mid-payload: a prefix may have landed
    }
  }
  c.in_begin += n;
  c.done += n;
  if (c.done == c.req.length) Complete(c, wire::kFrameWriteDone, !c.failed);
  return true;
}

bool SoftNic::Impl::StepRead(Conn& c) {
  if (!c.failed && c.done < c.req.length) {
    if (c.out_bytes() > kOutLimit) return false;
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kReadChunk, c.req.length - c.done));
    const size_t at = c.pending.size();
    c.Append(wire::Frame{wire::kFrameReadData, 0, 0, 0, n, c.req.wr_id, c.done});
    c.pending.resize(at + sizeof(wire::Frame) + n);
    Region& region = *c.region;
    if (region.Enter()) {
      std::memcpy(c.pending.data() + at + sizeof(wire::Frame), region.base + c.req.offset + c.done,
                  n);
      region.Exit();
      c.done += n;
    } else {
      c.pending.resize(at);
      Refuse(c, Refusal::kFenced);
    }
    return true;
  }
  Complete(c, wire::kFrameReadDone, !c.failed);
  return true;
}

void SoftNic::Impl::Complete(Conn& c, uint8_t op, bool ok) {
  c.in_op = false;
  if (ok && c.region != nullptr) {
    Region& r = *c.region;
    if (op == wire::kFrameWriteDone) {
      r.writes.fetch_add(1, std::memory_order_relaxed);
      r.bytes_written.fetch_add(c.req.length, std::memory_order_relaxed);
    } else {
      r.reads.fetch_add(1, std::memory_order_relaxed);
      r.bytes_read.fetch_add(c.req.length, std::memory_order_relaxed);
    }
  }
  c.region.reset();
  if (ok && (c.req.flags & wire::kFlagUnsignaled) != 0) return;
  const uint8_t status = ok ? wire::kStatusOk : wire::kStatusRemoteAccessError;
  c.Append(wire::Frame{op, status, c.req.flags, 0, ok ? c.req.length : 0, c.req.wr_id, 0});
}

void SoftNic::Impl::Refuse(Conn& c, Refusal why) {
  c.failed = true;
  if (c.region != nullptr) c.region->refused.fetch_add(1, std::memory_order_relaxed);
  MutexLock l(&mu_);
  switch (why) {
    case Refusal::kBadRkey:
      ++counters_.bad_rkey;
      break;
    case Refusal::kFenced:
      ++counters_.fenced;
      break;
    case Refusal::kOutOfBounds:
      ++counters_.out_of_bounds;
      break;
    case Refusal::kPermission:
      ++counters_.permission;
      break;
  }
  ++counters_.by_peer[c.peer];
}

// A frame that breaks the protocol: an error completion if a request header
// was read, then the connection is closed once it is sent.
void SoftNic::Impl::Malformed(Conn& c, const wire::Request* req) {
  {
    MutexLock l(&mu_);
    ++counters_.malformed;
  }
  c.closing = true;
  c.in_op = false;
  c.region.reset();
  const uint8_t op = req != nullptr ? req->op : 0;
  const uint64_t wr_id = req != nullptr ? req->wr_id : 0;
  const uint8_t flags = req != nullptr ? req->flags : 0;
  c.Append(wire::Frame{op, wire::kStatusRemoteInvalidRequest, flags, 0, 0, wr_id, 0});
}

// ---- SoftNic ----

SoftNic::SoftNic(SoftNicOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
SoftNic::~SoftNic() = default;
Status SoftNic::Start() { return impl_->Start(); }
void SoftNic::Stop() { impl_->Stop(); }
uint16_t SoftNic::port() const { return impl_->port(); }
Result<uint64_t> SoftNic::Register(void* base, uint64_t length, bool remote_write,
                                   bool remote_read) {
  return impl_->Register(base, length, remote_write, remote_read);
}
Status SoftNic::Fence(uint64_t rkey) { return impl_->Fence(rkey, false); }
Status SoftNic::Unregister(uint64_t rkey) { return impl_->Fence(rkey, true); }
SoftNicStats SoftNic::Stats() const { return impl_->Stats(); }

}  // namespace leasefs::pin
