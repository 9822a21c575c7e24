// The emulated verbs device (verbs_device.h, docs/verbs.md).
//
// Objects: each libibverbs struct the program sees is the first member of a
// box that also points at the device's C++ object (ContextBox, PdBox, ...).
//
// Data path of a queue pair (RC only):
//  - RDMA WRITE and READ go, from the program's own thread inside
//    ibv_post_send, to the soft NIC serving the remote region (a
//    SoftNicPeer per soft NIC and QP). Which soft NIC and rkey serve a
//    remote rkey the requester asks the responder once (RESOLVE, on the
//    QP link) and caches.
//  - SEND, and the immediate of WRITE_WITH_IMM, go on the QP link: an
//    abstract unix socket to the responder's process, whose thread for that
//    link scatters the payload into the next posted RECV.
//  - Completions of the requester are read in ibv_poll_cq and
//    ibv_get_cq_event (Progress); the responder's come from its link thread.
// Order: a soft NIC serves a connection in order, and the link too; an
// operation on the link waits until every earlier operation of its QP that
// went to a soft NIC is done (asking an unsignaled tail for a completion
// with a zero-length WRITE), so the responder sees a SEND after the data of
// every WRITE posted before it, as RC promises. Completions are delivered
// in the order the work requests were posted.
#include "tools/run/verbs_device.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/unique_fd.h"
#include "leasefs/ioctl.h"
#include "pin/softnic.h"
#include "pin/softnic_peer.h"
#include "tools/run/run_pin.h"
#include "tools/run/verbs_wire.h"

namespace leasefs::run::verbs {
namespace {

// --- limits the device announces --------------------------------------------------------------
constexpr int kMaxQpWr = 16384;
constexpr int kMaxSge = 16;
constexpr int kMaxCqe = 1 << 20;
constexpr int kMaxInline = 1024;
constexpr int kMaxRdAtom = 16;
constexpr uint32_t kMaxMessage = wire::kMaxMessage;
constexpr int kLinkTimeoutMs = 5000;
constexpr int kMaxHelloLinks = 64;

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  VLog("verbs", fmt, ap);
  va_end(ap);
}

uint32_t Random32() {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != sizeof v) {
  }
  return v;
}

// --- boxes ---------------------------------------------------------------------------------------
struct Context;
struct Pd;
struct Mr;
struct Cq;
struct Channel;
struct Qp;

struct ContextBox {
  verbs_context v;
  Context* impl;
};
struct PdBox {
  ibv_pd pd;
  Pd* impl;
};
struct MrBox {
  ibv_mr mr;
  std::shared_ptr<Mr>* impl;
};
struct CqBox {
  ibv_cq cq;
  std::shared_ptr<Cq>* impl;
};
struct ChannelBox {
  ibv_comp_channel ch;
  Channel* impl;
};
struct QpBox {
  ibv_qp qp;
  std::shared_ptr<Qp>* impl;
};

Context* Of(ibv_context* c) {
  return reinterpret_cast<ContextBox*>(reinterpret_cast<char*>(c) -
                                       offsetof(verbs_context, context))
      ->impl;
}
Pd* Of(ibv_pd* p) { return reinterpret_cast<PdBox*>(p)->impl; }
std::shared_ptr<Mr>& Of(ibv_mr* m) { return *reinterpret_cast<MrBox*>(m)->impl; }
std::shared_ptr<Cq>& Of(ibv_cq* c) { return *reinterpret_cast<CqBox*>(c)->impl; }
Channel* Of(ibv_comp_channel* c) { return reinterpret_cast<ChannelBox*>(c)->impl; }
std::shared_ptr<Qp>& Of(ibv_qp* q) { return *reinterpret_cast<QpBox*>(q)->impl; }

// --- objects ---------------------------------------------------------------------------------------

struct Pd {
  PdBox box{};
  Context* ctx = nullptr;
  std::atomic<int> users{0};  // MRs and QPs
};

// A memory region. Where its remote operations are served: the daemon's
// soft NIC (a pin) or the process's own; only local use otherwise.
struct Mr {
  MrBox box{};
  Pd* pd = nullptr;
  uint32_t key = 0;      // lkey and rkey
  char* host = nullptr;  // where the bytes are in this process
  uint64_t iova = 0;     // the address peers name
  uint64_t length = 0;
  unsigned access = 0;
  // Remote service.
  bool served = false;
  bool pinned = false;  // a pin of the daemon (else the process's soft NIC)
  bool odp = false;     // IBV_ACCESS_ON_DEMAND: never a pin; follows invalidations
  uint64_t pin_id = 0;
  uint64_t rkey64 = 0;
  uint64_t region_offset = 0;
  uint16_t port = 0;
  char address[16] = {};
  // Guard of the responder's copies into the region (SEND scatter): a copy
  // counts itself in, deregistration marks it dead and waits for none.
  std::mutex mu;
  std::condition_variable cv;
  int copying = 0;
  bool dead = false;
  std::atomic<bool> gone{false};  // deregistered: caches must look it up again
};

struct Channel {
  ChannelBox box{};
  Context* ctx = nullptr;
  int write_fd = -1;  // the event pipe's write end; box.ch.fd is its read end
  std::atomic<int> users{0};
  std::mutex mu;
  std::vector<std::weak_ptr<Cq>> cqs;  // GUARDED_BY(mu): the CQs that report here
};

struct Cq {
  CqBox box{};
  Context* ctx = nullptr;
  Channel* channel = nullptr;
  std::mutex mu;
  std::deque<ibv_wc> q;  // GUARDED_BY(mu)
  int capacity = 0;
  bool armed = false;    // GUARDED_BY(mu)
  bool overrun = false;  // GUARDED_BY(mu)
  std::vector<std::shared_ptr<Qp>> send_qps;  // GUARDED_BY(mu): whose completions Progress reads
  std::atomic<int> users{0};
  std::atomic<unsigned> events{0}, acked{0};
  // ibv_poll_cq callers waiting briefly for a completion pushed by another
  // thread (a link thread's RECVs): Push wakes them.
  std::condition_variable pushed;
  int waiters = 0;  // GUARDED_BY(mu)
  std::atomic<int> recv_users{0};  // QPs whose RECV completions come here

  void Push(const ibv_wc& wc);
};

struct Context {
  ContextBox box{};
  std::atomic<int> users{0};  // PDs, CQs, channels
  UniqueFd async_r, async_w;  // async events: none are ever sent
};

// One local work request in flight.
struct SendWqe {
  uint64_t seq = 0;
  uint64_t wr_id = 0;
  ibv_wc_opcode opcode = IBV_WC_SEND;
  bool signaled = false;
  int peer = -1;             // soft NIC connection of its one-sided part
  bool nic_pending = false;  // its soft NIC part is not done
  bool link_pending = false; // its link part (SEND, IMM) is not acknowledged
  bool on_link = false;      // it has a link part
  bool done = false;
  ibv_wc_status status = IBV_WC_SUCCESS;
  uint32_t byte_len = 0;
  std::vector<uint8_t> frame;     // link part: request and payload, until sent
  std::vector<uint8_t> tmp;       // READ into several SGEs: the bytes first land here
  std::vector<ibv_sge> scatter;   // ... and then go here
};

struct RecvWqe {
  uint64_t wr_id = 0;
  std::vector<ibv_sge> sge;
};

struct Target {
  int peer = -1;
  uint64_t rkey64 = 0;
  uint64_t mr_addr = 0;
  uint64_t mr_length = 0;
  uint64_t region_offset = 0;
  uint32_t access = 0;
};

struct PeerConn {
  std::string address;
  uint16_t port = 0;
  std::unique_ptr<pin::SoftNicPeer> peer;
  bool broken = false;
  uint64_t tail_seq = 0;  // the last WRITE sent on it, if unsignaled (0: none)
  uint64_t tail_rkey = 0;
};

constexpr uint64_t kMarkerBit = 1ull << 63;

struct Qp : std::enable_shared_from_this<Qp> {
  QpBox box{};
  Context* ctx = nullptr;
  Pd* pd = nullptr;
  std::shared_ptr<Cq> send_cq, recv_cq;
  uint32_t qpn = 0;
  ibv_qp_cap cap{};
  bool sq_sig_all = false;

  // Requester side and attributes.
  std::mutex mu;
  ibv_qp_state state = IBV_QPS_RESET;  // GUARDED_BY(mu)
  ibv_qp_attr attr{};                  // GUARDED_BY(mu)
  UniqueFd link;                       // GUARDED_BY(mu)
  bool link_broken = false;
  std::vector<uint8_t> link_out;  // bytes not yet sent on the link
  size_t link_out_off = 0;
  std::vector<uint8_t> link_in;   // bytes received, not yet parsed
  std::vector<PeerConn> peers;
  std::map<uint32_t, Target> targets;
  std::shared_ptr<Mr> last_mr;  // LocalBytes' cache
  std::atomic<bool> watched{false};  // on the progress thread's list (Engine::Watch)
  std::deque<SendWqe> sq;
  std::deque<uint64_t> link_queue;  // seqs whose link part waits to be sent, in order
  uint64_t next_seq = 1;
  uint64_t resolve_seq = 0;  // the RESOLVE waited for
  bool resolve_done = false;
  uint8_t resolve_status = 0;
  wire::Region resolve_region{};

  // Responder side.
  std::mutex rq_mu;
  std::condition_variable rq_cv;
  std::deque<RecvWqe> rq;     // GUARDED_BY(rq_mu)
  bool rq_error = false;      // GUARDED_BY(rq_mu): the QP is in the error state
  bool destroyed = false;     // GUARDED_BY(rq_mu)
  bool has_requester = false; // GUARDED_BY(rq_mu)
  int responder_fd = -1;      // GUARDED_BY(rq_mu): shut down at destroy
  uint32_t remote_qpn = 0;    // copies of attr for the link thread (under rq_mu)
  uint16_t remote_lid = 0;
  bool accepting = false;     // RTR or RTS
};

// --- the process's engine -----------------------------------------------------------------------

class Engine {
 public:
  static Engine& Get() {
    static Engine* e = new Engine();  // never destroyed: threads may outlive main
    return *e;
  }

  // Binds the LID socket and starts accepting, once. Returns 0 or an errno.
  int Start() {
    std::lock_guard<std::mutex> l(mu_);
    if (started_) return 0;
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return errno;
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const uint16_t lid = static_cast<uint16_t>(1 + Random32() % 0xBFFE);
      sockaddr_un a{};
      const socklen_t len = LinkAddress(lid, &a);
      if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), len) == 0) {
        lid_ = lid;
        break;
      }
      if (errno != EADDRINUSE) return errno;
    }
    if (lid_ == 0) return EADDRINUSE;
    if (listen(s.get(), 64) != 0) return errno;
    listener_ = std::move(s);
    std::thread([this] { Accept(); }).detach();
    started_ = true;
    Log("device %s: LID %u", kDeviceName, lid_);
    return 0;
  }

  uint16_t lid() const { return lid_; }

  static socklen_t LinkAddress(uint16_t lid, sockaddr_un* a) {
    a->sun_family = AF_UNIX;
    const int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "leasefs-verbs/lid/%u",
                           static_cast<unsigned>(lid));
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  }

  uint32_t AddQp(const std::shared_ptr<Qp>& qp) {
    std::lock_guard<std::mutex> l(mu_);
    uint32_t qpn;
    do {
      qpn = 1 + Random32() % 0xFFFFFE;
    } while (qps_.count(qpn) != 0);
    qps_[qpn] = qp;
    return qpn;
  }
  void RemoveQp(uint32_t qpn) {
    std::lock_guard<std::mutex> l(mu_);
    qps_.erase(qpn);
  }
  std::shared_ptr<Qp> FindQp(uint32_t qpn) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = qps_.find(qpn);
    return it == qps_.end() ? nullptr : it->second;
  }

  uint32_t AddMr(const std::shared_ptr<Mr>& mr) {
    std::lock_guard<std::mutex> l(mu_);
    uint32_t key;
    do {
      key = Random32();
    } while (key == 0 || mrs_.count(key) != 0);
    mrs_[key] = mr;
    return key;
  }
  void RemoveMr(uint32_t key) {
    std::lock_guard<std::mutex> l(mu_);
    mrs_.erase(key);
  }
  std::shared_ptr<Mr> FindMr(uint32_t key) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = mrs_.find(key);
    return it == mrs_.end() ? nullptr : it->second;
  }

  // The process's own soft NIC, started on first use.
  pin::SoftNic* LocalNic(int* err) {
    std::lock_guard<std::mutex> l(mu_);
    if (!nic_) {
      auto nic = std::make_unique<pin::SoftNic>();
      if (Status s = nic->Start(); !s.ok()) {
        *err = s.err();
        return nullptr;
      }
      Log("own soft NIC on 127.0.0.1:%u", nic->port());
      nic_ = std::move(nic);
      nic_ptr_.store(nic_.get(), std::memory_order_release);
    }
    return nic_.get();
  }
  // The own soft NIC if started, without a lock (the invalidation hook).
  pin::SoftNic* StartedNic() const { return nic_ptr_.load(std::memory_order_acquire); }

 private:
  Engine() = default;
  void Accept();

  std::mutex mu_;
  bool started_ = false;
  uint16_t lid_ = 0;
  UniqueFd listener_;
  std::unordered_map<uint32_t, std::shared_ptr<Qp>> qps_;
  std::unordered_map<uint32_t, std::shared_ptr<Mr>> mrs_;
  std::unique_ptr<pin::SoftNic> nic_;
  std::atomic<int> hello_threads_{0};  // links not past their hello yet
  std::atomic<pin::SoftNic*> nic_ptr_{nullptr};

 public:
  // Asks the progress thread to move `qp`'s requester work that does not
  // wait for the program: link parts deferred behind one-sided ones, link
  // bytes the socket did not take. A real NIC does this without the
  // program's help; here the program's own calls do it when they can
  // (post, poll), and this thread when the program polls another CQ or
  // none. REQUIRES qp.mu (it is taken after qp.mu, never before).
  void Watch(const std::shared_ptr<Qp>& qp);

 private:
  void ProgressLoop();
  std::mutex watch_mu_;
  std::vector<std::weak_ptr<Qp>> watched_;  // GUARDED_BY(watch_mu_)
  UniqueFd watch_wake_;
  bool progress_started_ = false;  // GUARDED_BY(watch_mu_)
};

// --- completion queues ---------------------------------------------------------------------------

void Cq::Push(const ibv_wc& wc) {
  bool notify = false;
  {
    std::lock_guard<std::mutex> l(mu);
    if (static_cast<int>(q.size()) >= capacity) {
      overrun = true;  // a real CQ overruns too; the program sized it
      Log("CQ %p overrun (capacity %d)", static_cast<void*>(&box.cq), capacity);
      return;
    }
    q.push_back(wc);
    notify = armed;
    armed = false;
    if (waiters > 0) pushed.notify_all();
  }
  if (notify && channel != nullptr) {
    const uint64_t ptr = reinterpret_cast<uintptr_t>(&box.cq);
    (void)!write(channel->write_fd, &ptr, sizeof ptr);
    events.fetch_add(1);
  }
}

// --- the responder: one thread per QP link ---------------------------------------------------

ibv_wc RecvWc(const Qp& qp, uint64_t wr_id, ibv_wc_status status, ibv_wc_opcode op,
              uint32_t byte_len, const wire::Request& req) {
  ibv_wc wc{};
  wc.wr_id = wr_id;
  wc.status = status;
  wc.opcode = op;
  wc.byte_len = byte_len;
  wc.qp_num = qp.qpn;
  wc.src_qp = qp.remote_qpn;
  wc.slid = qp.remote_lid;
  if ((req.flags & wire::kFlagImm) != 0 || req.op == wire::kOpImm) {
    wc.wc_flags |= IBV_WC_WITH_IMM;
    wc.imm_data = req.imm;
  }
  return wc;
}

// Scatters `length` bytes from the link into r's SGEs, checked against the
// QP's MRs. Returns the WC status (the stream stays in step either way),
// or false in *ok when the link failed.
ibv_wc_status Scatter(int fd, const Qp& qp, const RecvWqe& r, uint32_t length, bool* ok) {
  uint64_t room = 0;
  for (const ibv_sge& s : r.sge) room += s.length;
  ibv_wc_status status = length > room ? IBV_WC_LOC_LEN_ERR : IBV_WC_SUCCESS;
  uint32_t left = length;
  for (const ibv_sge& s : r.sge) {
    if (left == 0 || status != IBV_WC_SUCCESS) break;
    const uint32_t k = std::min<uint64_t>(left, s.length);
    std::shared_ptr<Mr> mr = Engine::Get().FindMr(s.lkey);
    if (!mr || mr->pd != qp.pd || (mr->access & IBV_ACCESS_LOCAL_WRITE) == 0 ||
        s.addr < mr->iova || k > mr->length || s.addr - mr->iova > mr->length - k) {
      status = IBV_WC_LOC_PROT_ERR;
      break;
    }
    {
      std::unique_lock<std::mutex> g(mr->mu);
      if (mr->dead) {
        status = IBV_WC_LOC_PROT_ERR;
        break;
      }
      ++mr->copying;
    }
    const bool got = ReadFull(fd, mr->host + (s.addr - mr->iova), k);
    {
      std::lock_guard<std::mutex> g(mr->mu);
      if (--mr->copying == 0) mr->cv.notify_all();
    }
    if (!got) {
      *ok = false;
      return IBV_WC_GENERAL_ERR;
    }
    left -= k;
  }
  if (left > 0 && !Discard(fd, left)) *ok = false;
  return status;
}

void Reply(int fd, uint8_t op, uint8_t status, uint64_t seq, const wire::Region* region) {
  wire::Reply rep{};
  rep.op = op;
  rep.status = status;
  rep.seq = seq;
  rep.length = region != nullptr ? sizeof *region : 0;
  uint8_t buf[sizeof rep + sizeof(wire::Region)];
  std::memcpy(buf, &rep, sizeof rep);
  if (region != nullptr) std::memcpy(buf + sizeof rep, region, sizeof *region);
  (void)WriteFull(fd, buf, sizeof rep + rep.length);
}

void ServeResolve(int fd, const Qp& qp, const wire::Request& req) {
  std::shared_ptr<Mr> mr = Engine::Get().FindMr(req.rkey);
  const unsigned remote = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  if (!mr || mr->pd != qp.pd || !mr->served || (mr->access & remote) == 0) {
    Reply(fd, wire::kOpResolve, wire::kRemoteAccessError, req.seq, nullptr);
    return;
  }
  wire::Region g{};
  g.rkey = mr->rkey64;
  g.mr_addr = mr->iova;
  g.mr_length = mr->length;
  g.region_offset = mr->region_offset;
  g.access = mr->access & remote;
  g.port = mr->port;
  std::memcpy(g.address, mr->address, sizeof g.address);
  Reply(fd, wire::kOpResolve, wire::kOk, req.seq, &g);
}

// Serves one SEND or IMM: waits for a RECV, scatters, completes, replies.
// False when the link is to be closed.
bool ServeMessage(int fd, Qp& qp, const wire::Request& req) {
  RecvWqe r;
  {
    std::unique_lock<std::mutex> l(qp.rq_mu);
    // No RECV posted: as an RNR NAK retried forever (rnr_retry 7), the
    // requester waits; this link stops reading meanwhile.
    qp.rq_cv.wait(l, [&] { return !qp.rq.empty() || qp.rq_error || qp.destroyed; });
    if (qp.destroyed) return false;
    if (qp.rq_error) {
      l.unlock();
      if (req.op == wire::kOpSend && !Discard(fd, req.length)) return false;
      Reply(fd, req.op, wire::kRemoteOperationError, req.seq, nullptr);
      return true;
    }
    r = std::move(qp.rq.front());
    qp.rq.pop_front();
  }
  ibv_wc_status status = IBV_WC_SUCCESS;
  ibv_wc_opcode op = IBV_WC_RECV;
  if (req.op == wire::kOpSend) {
    bool ok = true;
    status = Scatter(fd, qp, r, req.length, &ok);
    if (!ok) return false;
  } else {
    op = IBV_WC_RECV_RDMA_WITH_IMM;
  }
  qp.recv_cq->Push(RecvWc(qp, r.wr_id, status, op, req.length, req));
  Reply(fd, req.op, status == IBV_WC_SUCCESS ? wire::kOk : wire::kRemoteInvalidRequest, req.seq,
        nullptr);
  return true;
}

void ServeLink(UniqueFd fd, std::atomic<int>* in_hello) {
  // The hello must come whole within the link timeout: a peer that sends
  // part of one and waits (or trickles it) holds this thread no longer.
  wire::Hello h{};
  const bool whole = ReadFullWithin(fd.get(), &h, sizeof h, kLinkTimeoutMs);
  in_hello->fetch_sub(1);
  if (!whole) return;
  wire::HelloReply hr{wire::kMagic, wire::kVersion, wire::kHelloOk};
  if (h.magic != wire::kMagic || h.version != wire::kVersion || h.reserved != 0) {
    hr.status = wire::kHelloMalformed;
    (void)WriteFull(fd.get(), &hr, sizeof hr);
    return;
  }
  std::shared_ptr<Qp> qp = Engine::Get().FindQp(h.dst_qpn);
  if (qp) {
    std::lock_guard<std::mutex> l(qp->rq_mu);
    if (qp->destroyed || !qp->accepting || qp->has_requester || qp->remote_qpn != h.src_qpn ||
        qp->remote_lid != h.src_lid) {
      qp.reset();
    } else {
      qp->has_requester = true;
      qp->responder_fd = fd.get();
    }
  }
  if (!qp) {
    Log("link refused: no QP %u for LID %u QP %u", h.dst_qpn, h.src_lid, h.src_qpn);
    hr.status = wire::kHelloNoQp;
    (void)WriteFull(fd.get(), &hr, sizeof hr);
    return;
  }
  (void)WriteFull(fd.get(), &hr, sizeof hr);
  Log("QP %u: link from LID %u QP %u", qp->qpn, h.src_lid, h.src_qpn);
  for (;;) {
    wire::Request req{};
    if (!ReadFull(fd.get(), &req, sizeof req)) break;
    const bool bad_flags = (req.flags & ~wire::kKnownFlags) != 0 || req.reserved != 0;
    if (req.op == wire::kOpResolve && !bad_flags && req.length == 0) {
      ServeResolve(fd.get(), *qp, req);
    } else if ((req.op == wire::kOpSend || req.op == wire::kOpImm) && !bad_flags &&
               req.rkey == 0 && req.length <= kMaxMessage) {
      if (!ServeMessage(fd.get(), *qp, req)) break;
    } else {
      Log("QP %u: malformed link request (op %u): closing", qp->qpn, req.op);
      Reply(fd.get(), req.op, wire::kRemoteInvalidRequest, req.seq, nullptr);
      break;
    }
  }
  std::lock_guard<std::mutex> l(qp->rq_mu);
  qp->responder_fd = -1;
}

void Engine::Accept() {
  for (;;) {
    const int c = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) usleep(10000);
        continue;
      }
      return;
    }
    // Links still in their hello are capped: connecting costs an
    // unprivileged peer nothing, a thread costs us memory.
    if (hello_threads_.load() >= kMaxHelloLinks) {
      close(c);
      continue;
    }
    hello_threads_.fetch_add(1);
    std::thread([this, c] {
      ServeLink(UniqueFd(c), &hello_threads_);
    }).detach();
  }
}

// --- invalidations -----------------------------------------------------------------------------
//
// The process's own soft NIC copies into registered memory through this
// process's addresses. When memory under such a registration is about to be
// unmapped or replaced (munmap, mremap, a break of the DAX mapping behind
// it), the shim calls Invalidate first (run_pin.h) and the registration is
// fenced: no copy into the old memory is in progress or will start, and
// peers' later operations fail with a remote access error. For an ODP
// registration this is the MMU notifier's invalidation (semantics-2019,
// scenario 16); for others it replaces a crash (a NIC would go on writing
// the orphaned pages, which a process has no way to keep).
//
// The table is fixed-size and its lock is held only to scan it: the hook
// may run inside any munmap of the process, allocator and soft NIC
// included, and must neither allocate nor take another of our locks.

struct Served {
  uintptr_t start = 0, end = 0;  // 0, 0: free
  uint64_t rkey64 = 0;
  bool fenced = false;
};
constexpr int kMaxServed = 4096;
std::mutex g_served_mu;
Served g_served[kMaxServed];  // GUARDED_BY(g_served_mu)

void InvalidateRange(const void* addr, size_t len) {
  if (len == 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t b = a + len < a ? UINTPTR_MAX : a + len;
  uint64_t rkeys[64];
  for (;;) {
    int n = 0;
    {
      std::lock_guard<std::mutex> l(g_served_mu);
      for (Served& r : g_served) {
        if (r.end == 0 || r.fenced || r.end <= a || r.start >= b) continue;
        r.fenced = true;
        rkeys[n++] = r.rkey64;
        if (n == 64) break;
      }
    }
    pin::SoftNic* nic = Engine::Get().StartedNic();
    for (int i = 0; i < n && nic != nullptr; ++i) (void)nic->Fence(rkeys[i]);
    if (n < 64) return;
  }
}

// Lists a registration served by the own soft NIC; installs the hook once.
bool AddServed(uintptr_t start, uint64_t len, uint64_t rkey64) {
  static const bool hooked = [] {
    using SetHook = void (*)(void (*)(const void*, size_t));
    auto set = reinterpret_cast<SetHook>(dlsym(RTLD_DEFAULT, "leasefs_run_set_invalidate_hook"));
    if (set != nullptr) set(InvalidateRange);
    return set != nullptr;
  }();
  (void)hooked;
  std::lock_guard<std::mutex> l(g_served_mu);
  for (Served& r : g_served) {
    if (r.end != 0) continue;
    r = Served{start, start + len, rkey64, false};
    return true;
  }
  return false;
}

void RemoveServed(uint64_t rkey64) {
  std::lock_guard<std::mutex> l(g_served_mu);
  for (Served& r : g_served) {
    if (r.end != 0 && r.rkey64 == rkey64) r = Served{};
  }
}

// --- the requester --------------------------------------------------------------------------------

ibv_wc_status StatusOf(uint8_t softnic_status) {
  switch (softnic_status) {
    case pin::wire::kStatusOk:
      return IBV_WC_SUCCESS;
    case pin::wire::kStatusRemoteAccessError:
      return IBV_WC_REM_ACCESS_ERR;
    default:
      return IBV_WC_REM_INV_REQ_ERR;
  }
}

ibv_wc_status LinkStatusOf(uint8_t s) {
  switch (s) {
    case wire::kOk:
      return IBV_WC_SUCCESS;
    case wire::kRemoteAccessError:
      return IBV_WC_REM_ACCESS_ERR;
    case wire::kRemoteOperationError:
      return IBV_WC_REM_OP_ERR;
    default:
      return IBV_WC_REM_INV_REQ_ERR;
  }
}

SendWqe* FindWqe(Qp& qp, uint64_t seq) {
  // The queue is in seq order: binary search.
  auto it = std::lower_bound(qp.sq.begin(), qp.sq.end(), seq,
                             [](const SendWqe& w, uint64_t s) { return w.seq < s; });
  return it != qp.sq.end() && it->seq == seq ? &*it : nullptr;
}

void Finish(SendWqe& w, ibv_wc_status status) {
  if (w.status == IBV_WC_SUCCESS) w.status = status;
  if (status != IBV_WC_SUCCESS) {
    w.nic_pending = false;
    w.link_pending = false;
  }
  w.done = !w.nic_pending && !w.link_pending;
}

void FailPeer(Qp& qp, int peer) {
  qp.peers[peer].broken = true;
  for (SendWqe& w : qp.sq) {
    if (w.peer == peer && w.nic_pending) Finish(w, IBV_WC_RETRY_EXC_ERR);
  }
}

void FailLink(Qp& qp) {
  qp.link_broken = true;
  qp.link.reset();
  qp.link_queue.clear();
  for (SendWqe& w : qp.sq) {
    if (w.on_link && w.link_pending) Finish(w, IBV_WC_RETRY_EXC_ERR);
  }
}

void OnNicCompletion(Qp& qp, int peer, const pin::Completion& c) {
  if (c.op == pin::wire::kFrameFenced) {
    Log("QP %u: the soft NIC fenced rkey %#llx", qp.qpn, static_cast<unsigned long long>(c.rkey));
    return;
  }
  const bool marker = (c.wr_id & kMarkerBit) != 0;
  const uint64_t seq = c.wr_id & ~kMarkerBit;
  if (qp.peers[peer].tail_seq == seq) qp.peers[peer].tail_seq = 0;
  // A completion says every earlier request on the connection is done.
  for (SendWqe& w : qp.sq) {
    if (w.seq > seq) break;
    if (w.peer != peer || !w.nic_pending) continue;
    if (w.seq == seq && !marker) {
      w.nic_pending = false;
      w.byte_len = c.length;
      if (c.ok() && !w.scatter.empty()) {
        size_t at = 0;
        for (const ibv_sge& s : w.scatter) {
          std::memcpy(reinterpret_cast<void*>(s.addr), w.tmp.data() + at, s.length);
          at += s.length;
        }
      }
      Finish(w, StatusOf(c.status));
    } else {
      w.nic_pending = false;
      Finish(w, IBV_WC_SUCCESS);
    }
  }
}

void PushSendWc(Qp& qp, const SendWqe& w, ibv_wc_status status) {
  ibv_wc wc{};
  wc.wr_id = w.wr_id;
  wc.status = status;
  wc.opcode = w.opcode;
  wc.byte_len = w.byte_len;
  wc.qp_num = qp.qpn;
  wc.vendor_err = status == IBV_WC_SUCCESS ? 0 : static_cast<uint32_t>(status);
  qp.send_cq->Push(wc);
}

void FlushRecvs(Qp& qp) {
  std::deque<RecvWqe> flushed;
  {
    std::lock_guard<std::mutex> l(qp.rq_mu);
    qp.rq_error = true;
    flushed.swap(qp.rq);
  }
  qp.rq_cv.notify_all();
  for (const RecvWqe& r : flushed) {
    ibv_wc wc{};
    wc.wr_id = r.wr_id;
    wc.status = IBV_WC_WR_FLUSH_ERR;
    wc.opcode = IBV_WC_RECV;
    wc.qp_num = qp.qpn;
    qp.recv_cq->Push(wc);
  }
}

// The QP goes to the error state: every outstanding request is flushed.
void EnterError(Qp& qp) {
  if (qp.state == IBV_QPS_ERR) return;
  Log("QP %u: error state", qp.qpn);
  qp.state = IBV_QPS_ERR;
  for (const SendWqe& w : qp.sq) PushSendWc(qp, w, IBV_WC_WR_FLUSH_ERR);
  qp.sq.clear();
  qp.link_queue.clear();
  FlushRecvs(qp);
}

// Parses what the link brought: replies to SEND and IMM, and RESOLVE's.
void ParseLink(Qp& qp) {
  size_t at = 0;
  while (qp.link_in.size() - at >= sizeof(wire::Reply)) {
    wire::Reply rep;
    std::memcpy(&rep, qp.link_in.data() + at, sizeof rep);
    if (rep.length != 0 && rep.length != sizeof(wire::Region)) {
      FailLink(qp);
      return;
    }
    if (qp.link_in.size() - at < sizeof rep + rep.length) break;
    if (rep.op == wire::kOpResolve) {
      if (rep.seq == qp.resolve_seq) {
        qp.resolve_done = true;
        qp.resolve_status = rep.status;
        if (rep.length != 0)
          std::memcpy(&qp.resolve_region, qp.link_in.data() + at + sizeof rep, rep.length);
      }
    } else if (SendWqe* w = FindWqe(qp, rep.seq); w != nullptr && w->link_pending) {
      w->link_pending = false;
      Finish(*w, LinkStatusOf(rep.status));
    }
    at += sizeof rep + rep.length;
  }
  qp.link_in.erase(qp.link_in.begin(), qp.link_in.begin() + static_cast<ptrdiff_t>(at));
}

// Moves link bytes both ways without waiting.
void PumpLink(Qp& qp) {
  if (!qp.link.valid()) return;
  while (qp.link_out_off < qp.link_out.size()) {
    const ssize_t n = send(qp.link.get(), qp.link_out.data() + qp.link_out_off,
                           qp.link_out.size() - qp.link_out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      qp.link_out_off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      FailLink(qp);
      return;
    }
  }
  if (qp.link_out_off == qp.link_out.size()) {
    qp.link_out.clear();
    qp.link_out_off = 0;
  } else if (qp.link_out_off >= (1u << 20)) {
    qp.link_out.erase(qp.link_out.begin(),
                      qp.link_out.begin() + static_cast<ptrdiff_t>(qp.link_out_off));
    qp.link_out_off = 0;
  }
  uint8_t buf[16384];
  for (;;) {
    const ssize_t n = recv(qp.link.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      qp.link_in.insert(qp.link_in.end(), buf, buf + n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    ParseLink(qp);
    FailLink(qp);  // the responder closed the link, or an error
    return;
  }
  ParseLink(qp);
}

// Opens the link to the responder QP (connected in RTR). Returns 0 or errno.
int EnsureLink(Qp& qp) {
  if (qp.link.valid()) return 0;
  if (qp.link_broken) return ECONNRESET;
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return errno;
  sockaddr_un a{};
  const socklen_t len = Engine::LinkAddress(qp.attr.ah_attr.dlid, &a);
  wire::Hello h{wire::kMagic, wire::kVersion, Engine::Get().lid(), qp.qpn, qp.attr.dest_qp_num,
                0};
  wire::HelloReply hr{};
  if (connect(s.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 ||
      !WriteFull(s.get(), &h, sizeof h) || !ReadFullWithin(s.get(), &hr, sizeof hr, kLinkTimeoutMs)) {
    Log("QP %u: no link to LID %u QP %u: %s", qp.qpn, qp.attr.ah_attr.dlid, qp.attr.dest_qp_num,
        strerror(errno));
    qp.link_broken = true;
    return ECONNREFUSED;
  }
  if (hr.magic != wire::kMagic || hr.status != wire::kHelloOk) {
    Log("QP %u: LID %u refused the link to QP %u (status %u)", qp.qpn, qp.attr.ah_attr.dlid,
        qp.attr.dest_qp_num, hr.status);
    qp.link_broken = true;
    return ECONNREFUSED;
  }
  fcntl(s.get(), F_SETFL, fcntl(s.get(), F_GETFL) | O_NONBLOCK);
  qp.link = std::move(s);
  return 0;
}

// Looks up where remote rkey `rkey` is served (RESOLVE, cached).
// Returns the target, or null with *status the error completion to give.
const Target* Resolve(Qp& qp, uint32_t rkey, ibv_wc_status* status) {
  if (auto it = qp.targets.find(rkey); it != qp.targets.end()) return &it->second;
  if (EnsureLink(qp) != 0) {
    *status = IBV_WC_RETRY_EXC_ERR;
    return nullptr;
  }
  wire::Request req{};
  req.op = wire::kOpResolve;
  req.rkey = rkey;
  req.seq = qp.resolve_seq = (qp.resolve_seq + 1) | kMarkerBit;
  qp.resolve_done = false;
  const auto* p = reinterpret_cast<const uint8_t*>(&req);
  qp.link_out.insert(qp.link_out.end(), p, p + sizeof req);
  for (int waited = 0; !qp.resolve_done;) {
    PumpLink(qp);
    if (qp.resolve_done) break;
    if (!qp.link.valid() || waited >= kLinkTimeoutMs) {
      *status = IBV_WC_RETRY_EXC_ERR;
      return nullptr;
    }
    pollfd pf{qp.link.get(), static_cast<short>(POLLIN | (qp.link_out.empty() ? 0 : POLLOUT)),
              0};
    (void)poll(&pf, 1, 10);
    waited += 10;
  }
  if (qp.resolve_status != wire::kOk) {
    *status = IBV_WC_REM_ACCESS_ERR;
    return nullptr;
  }
  const wire::Region& g = qp.resolve_region;
  Target t;
  t.rkey64 = g.rkey;
  t.mr_addr = g.mr_addr;
  t.mr_length = g.mr_length;
  t.region_offset = g.region_offset;
  t.access = g.access;
  char address[sizeof g.address + 1] = {};
  std::memcpy(address, g.address, sizeof g.address);
  for (size_t i = 0; i < qp.peers.size(); ++i) {
    if (qp.peers[i].address == address && qp.peers[i].port == g.port) t.peer = static_cast<int>(i);
  }
  if (t.peer < 0) {
    auto peer = pin::SoftNicPeer::Connect(address, g.port);
    if (!peer.ok()) {
      Log("QP %u: soft NIC %s:%u: %s", qp.qpn, address, g.port,
          peer.status().ToString().c_str());
      *status = IBV_WC_RETRY_EXC_ERR;
      return nullptr;
    }
    PeerConn pc;
    pc.address = address;
    pc.port = g.port;
    pc.peer = std::make_unique<pin::SoftNicPeer>(std::move(peer).value());
    qp.peers.push_back(std::move(pc));
    t.peer = static_cast<int>(qp.peers.size() - 1);
  }
  Log("QP %u: rkey %#x is %#llx at %s:%u (+%llu)", qp.qpn, rkey,
      static_cast<unsigned long long>(t.rkey64), address, g.port,
      static_cast<unsigned long long>(t.region_offset));
  return &(qp.targets[rkey] = t);
}

// Whether `qp` has requester work that needs no call of the program to
// go on: link parts waiting for earlier one-sided ones, link bytes unsent.
bool Stalled(const Qp& qp) {
  return qp.state != IBV_QPS_ERR && (!qp.link_queue.empty() || !qp.link_out.empty());
}

// Reads what the soft NICs sent, sends what the link may take, moves link
// parts whose turn came, and delivers completions in order. REQUIRES qp.mu.
void Progress(Qp& qp) {
  for (size_t p = 0; p < qp.peers.size(); ++p) {
    PeerConn& pc = qp.peers[p];
    if (pc.broken) continue;
    pin::Completion c[64];
    for (;;) {
      Result<size_t> n = pc.peer->Poll(c, 64, 0);
      if (!n.ok()) {
        FailPeer(qp, static_cast<int>(p));
        break;
      }
      for (size_t k = 0; k < *n; ++k) OnNicCompletion(qp, static_cast<int>(p), c[k]);
      if (*n < 64) break;
    }
  }
  PumpLink(qp);
  // Link parts go in order, each after every earlier one-sided part is done.
  bool queued = false;
  while (!qp.link_queue.empty()) {
    const uint64_t s = qp.link_queue.front();
    bool ready = true;
    for (const SendWqe& w : qp.sq) {
      if (w.seq > s) break;
      if (!w.nic_pending) continue;
      ready = false;
      PeerConn& pc = qp.peers[w.peer];
      if (pc.tail_seq != 0 && !pc.broken) {
        // Its last WRITE was unsignaled: ask for a completion behind it.
        if (!pc.peer->PostWrite(pc.tail_rkey, 0, nullptr, 0, pc.tail_seq | kMarkerBit, true)
                 .ok()) {
          FailPeer(qp, w.peer);
        }
        pc.tail_seq = 0;
      }
    }
    if (!ready) break;
    qp.link_queue.pop_front();
    SendWqe* w = FindWqe(qp, s);
    if (w == nullptr || !w->link_pending) continue;
    if (EnsureLink(qp) != 0) {
      Finish(*w, IBV_WC_RETRY_EXC_ERR);
      continue;
    }
    qp.link_out.insert(qp.link_out.end(), w->frame.begin(), w->frame.end());
    std::vector<uint8_t>().swap(w->frame);
    queued = true;
  }
  if (queued) PumpLink(qp);
  while (!qp.sq.empty() && qp.sq.front().done) {
    const SendWqe& w = qp.sq.front();
    const ibv_wc_status st = w.status;
    if (st != IBV_WC_SUCCESS || w.signaled) PushSendWc(qp, w, st);
    qp.sq.pop_front();
    if (st != IBV_WC_SUCCESS) {
      EnterError(qp);
      break;
    }
  }
  if (Stalled(qp)) Engine::Get().Watch(qp.shared_from_this());
}

void Engine::Watch(const std::shared_ptr<Qp>& qp) {
  std::lock_guard<std::mutex> l(watch_mu_);
  if (!progress_started_) {
    watch_wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!watch_wake_.valid()) return;
    progress_started_ = true;
    std::thread([this] { ProgressLoop(); }).detach();
  }
  // qp->watched says whether the list holds it; the loop clears it under
  // qp->mu when it finds the QP idle and drops only entries still clear, so
  // a QP that stalls again meanwhile is never dropped (at worst listed
  // twice).
  if (!qp->watched.exchange(true)) watched_.push_back(qp);
  const uint64_t one = 1;
  (void)!write(watch_wake_.get(), &one, sizeof one);
}

void Engine::ProgressLoop() {
  for (;;) {
    std::vector<std::shared_ptr<Qp>> qps;
    {
      std::lock_guard<std::mutex> l(watch_mu_);
      for (const std::weak_ptr<Qp>& w : watched_) {
        if (auto q = w.lock()) qps.push_back(std::move(q));
      }
    }
    std::vector<pollfd> fds = {pollfd{watch_wake_.get(), POLLIN, 0}};
    for (const std::shared_ptr<Qp>& qp : qps) {
      std::lock_guard<std::mutex> l(qp->mu);
      if (qp->link.valid()) {
        fds.push_back(pollfd{qp->link.get(),
                             static_cast<short>(POLLIN | (qp->link_out.empty() ? 0 : POLLOUT)), 0});
      }
      for (const PeerConn& pc : qp->peers) {
        if (!pc.broken) fds.push_back(pollfd{pc.peer->fd(), POLLIN, 0});
      }
    }
    (void)poll(fds.data(), fds.size(), qps.empty() ? -1 : 100);
    if ((fds[0].revents & POLLIN) != 0) {
      uint64_t v;
      (void)!read(watch_wake_.get(), &v, sizeof v);
    }
    for (const std::shared_ptr<Qp>& qp : qps) {
      std::lock_guard<std::mutex> l(qp->mu);
      Progress(*qp);
      if (!Stalled(*qp)) qp->watched.store(false);
    }
    std::lock_guard<std::mutex> l(watch_mu_);
    watched_.erase(std::remove_if(watched_.begin(), watched_.end(),
                                  [](const std::weak_ptr<Qp>& w) {
                                    auto q = w.lock();
                                    return !q || !q->watched.load();
                                  }),
                   watched_.end());
  }
}

// Checks one SGE against the QP's MRs: its bytes in this process, or null.
char* LocalBytes(Qp& qp, const ibv_sge& s, bool write) {
  // The QP remembers its last local MR: a program posts from the same
  // buffer again and again, and the engine's table is behind a lock.
  if (qp.last_mr == nullptr || qp.last_mr->key != s.lkey ||
      qp.last_mr->gone.load(std::memory_order_acquire)) {
    qp.last_mr = Engine::Get().FindMr(s.lkey);
  }
  const Mr* mr = qp.last_mr.get();
  if (mr == nullptr || mr->pd != qp.pd || s.addr < mr->iova || s.length > mr->length ||
      s.addr - mr->iova > mr->length - s.length) {
    return nullptr;
  }
  if (write && (mr->access & IBV_ACCESS_LOCAL_WRITE) == 0) return nullptr;
  return mr->host + (s.addr - mr->iova);
}

// Posts one work request. Returns 0, or the errno ibv_post_send returns for it.
int PostOne(Qp& qp, const ibv_send_wr& wr) {
  if (static_cast<int>(qp.sq.size()) >= static_cast<int>(qp.cap.max_send_wr)) return ENOMEM;
  if (wr.num_sge < 0 || wr.num_sge > static_cast<int>(qp.cap.max_send_sge)) return EINVAL;
  SendWqe w;
  w.seq = qp.next_seq++;
  w.wr_id = wr.wr_id;
  w.signaled = qp.sq_sig_all || (wr.send_flags & IBV_SEND_SIGNALED) != 0;
  switch (wr.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      w.opcode = IBV_WC_RDMA_WRITE;
      break;
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      w.opcode = IBV_WC_SEND;
      break;
    case IBV_WR_RDMA_READ:
      w.opcode = IBV_WC_RDMA_READ;
      break;
    default:
      return EINVAL;  // atomics, binds, LSO, TSO: not offered (atomic_cap NONE)
  }
  if (qp.state == IBV_QPS_ERR) {
    PushSendWc(qp, w, IBV_WC_WR_FLUSH_ERR);
    return 0;
  }
  uint64_t total = 0;
  for (int i = 0; i < wr.num_sge; ++i) total += wr.sg_list[i].length;
  w.byte_len = static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX));
  const bool read = wr.opcode == IBV_WR_RDMA_READ;
  const bool inline_data = (wr.send_flags & IBV_SEND_INLINE) != 0 && !read;
  ibv_wc_status bad = IBV_WC_SUCCESS;
  // The local bytes: checked against the MRs (inline data is not).
  std::vector<char*> bytes(static_cast<size_t>(wr.num_sge));
  for (int i = 0; i < wr.num_sge && bad == IBV_WC_SUCCESS; ++i) {
    bytes[i] = inline_data ? reinterpret_cast<char*>(wr.sg_list[i].addr)
                           : LocalBytes(qp, wr.sg_list[i], read);
    if (bytes[i] == nullptr && wr.sg_list[i].length > 0) bad = IBV_WC_LOC_PROT_ERR;
  }
  if (total > kMaxMessage) bad = IBV_WC_LOC_LEN_ERR;
  if (inline_data && total > kMaxInline) return EINVAL;
  if (bad != IBV_WC_SUCCESS) {
    Finish(w, bad);
    qp.sq.push_back(std::move(w));
    return 0;
  }
  const uint32_t len = static_cast<uint32_t>(total);
  auto gather = [&](std::vector<uint8_t>* out) {
    for (int i = 0; i < wr.num_sge; ++i) {
      const auto* b = reinterpret_cast<const uint8_t*>(bytes[i]);
      out->insert(out->end(), b, b + wr.sg_list[i].length);
    }
  };
  if (wr.opcode == IBV_WR_SEND || wr.opcode == IBV_WR_SEND_WITH_IMM ||
      wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
    wire::Request req{};
    req.op = wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ? wire::kOpImm : wire::kOpSend;
    req.flags = static_cast<uint8_t>(
        (wr.opcode != IBV_WR_SEND ? wire::kFlagImm : 0) |
        ((wr.send_flags & IBV_SEND_SOLICITED) != 0 ? wire::kFlagSolicited : 0));
    req.length = len;
    req.imm = wr.imm_data;
    req.seq = w.seq;
    const auto* p = reinterpret_cast<const uint8_t*>(&req);
    w.frame.assign(p, p + sizeof req);
    if (req.op == wire::kOpSend) gather(&w.frame);
    w.on_link = true;
    w.link_pending = true;
    qp.link_queue.push_back(w.seq);
  }
  if (wr.opcode != IBV_WR_SEND && wr.opcode != IBV_WR_SEND_WITH_IMM) {
    ibv_wc_status st = IBV_WC_SUCCESS;
    const Target* t = Resolve(qp, wr.wr.rdma.rkey, &st);
    const uint64_t raddr = wr.wr.rdma.remote_addr;
    const uint32_t need = read ? IBV_ACCESS_REMOTE_READ : IBV_ACCESS_REMOTE_WRITE;
    if (t != nullptr && ((t->access & need) == 0 || raddr < t->mr_addr || len > t->mr_length ||
                         raddr - t->mr_addr > t->mr_length - len)) {
      t = nullptr;
      st = IBV_WC_REM_ACCESS_ERR;
    }
    if (t == nullptr || qp.peers[t->peer].broken) {
      Finish(w, t == nullptr ? st : IBV_WC_RETRY_EXC_ERR);
      qp.sq.push_back(std::move(w));
      return 0;
    }
    PeerConn& pc = qp.peers[t->peer];
    const uint64_t offset = raddr - t->mr_addr + t->region_offset;
    w.peer = t->peer;
    w.nic_pending = true;
    Status s;
    if (read) {
      void* dst = wr.num_sge == 1 ? bytes[0] : nullptr;
      if (wr.num_sge != 1) {
        w.tmp.resize(len);
        dst = w.tmp.data();
        for (int i = 0; i < wr.num_sge; ++i) {
          ibv_sge sg = wr.sg_list[i];
          sg.addr = reinterpret_cast<uintptr_t>(bytes[i]);
          w.scatter.push_back(sg);
        }
      }
      // The deque may move w, not w.tmp's heap buffer: dst stays valid.
      s = pc.peer->PostRead(t->rkey64, offset, dst, len, w.seq);
      pc.tail_seq = 0;
    } else {
      const bool wire_signaled = w.signaled || w.on_link;
      const void* src = wr.num_sge == 1 ? bytes[0] : nullptr;
      std::vector<uint8_t> tmp;
      if (wr.num_sge != 1) {
        gather(&tmp);
        src = tmp.data();
      }
      s = pc.peer->PostWrite(t->rkey64, offset, src, len, w.seq, wire_signaled);
      pc.tail_seq = wire_signaled ? 0 : w.seq;
      pc.tail_rkey = t->rkey64;
    }
    qp.sq.push_back(std::move(w));
    if (!s.ok()) FailPeer(qp, qp.sq.back().peer);
    return 0;
  }
  qp.sq.push_back(std::move(w));
  return 0;
}

int PostSend(ibv_qp* ibqp, ibv_send_wr* wr, ibv_send_wr** bad) {
  Qp& qp = *Of(ibqp);
  std::lock_guard<std::mutex> l(qp.mu);
  if (qp.state != IBV_QPS_RTS && qp.state != IBV_QPS_ERR) {
    *bad = wr;
    return EINVAL;
  }
  int rc = 0;
  for (; wr != nullptr; wr = wr->next) {
    if ((rc = PostOne(qp, *wr)) != 0) {
      *bad = wr;
      break;
    }
  }
  // One-sided operations are in their sockets already; their completions
  // are read when the program polls. Link work is started now.
  if (!qp.link_queue.empty() || !qp.link_out.empty()) Progress(qp);
  return rc;
}

int PostRecv(ibv_qp* ibqp, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  Qp& qp = *Of(ibqp);
  bool flush = false;
  {
    std::lock_guard<std::mutex> l(qp.mu);
    if (qp.state == IBV_QPS_RESET) {
      *bad = wr;
      return EINVAL;
    }
    flush = qp.state == IBV_QPS_ERR;
  }
  int rc = 0;
  {
    std::lock_guard<std::mutex> l(qp.rq_mu);
    for (; wr != nullptr; wr = wr->next) {
      if (wr->num_sge < 0 || wr->num_sge > static_cast<int>(qp.cap.max_recv_sge)) {
        rc = EINVAL;
      } else if (static_cast<int>(qp.rq.size()) >= static_cast<int>(qp.cap.max_recv_wr)) {
        rc = ENOMEM;
      }
      if (rc != 0) {
        *bad = wr;
        break;
      }
      RecvWqe r;
      r.wr_id = wr->wr_id;
      r.sge.assign(wr->sg_list, wr->sg_list + wr->num_sge);
      qp.rq.push_back(std::move(r));
    }
  }
  qp.rq_cv.notify_all();
  if (flush) FlushRecvs(qp);
  return rc;
}

// Runs Progress on the QPs whose send completions go to `cq`.
void ProgressCq(Cq& cq, bool wait_for_lock) {
  std::vector<std::shared_ptr<Qp>> qps;
  {
    std::lock_guard<std::mutex> l(cq.mu);
    qps = cq.send_qps;
  }
  for (const std::shared_ptr<Qp>& qp : qps) {
    if (wait_for_lock) {
      std::lock_guard<std::mutex> l(qp->mu);
      Progress(*qp);
    } else if (qp->mu.try_lock()) {
      Progress(*qp);
      qp->mu.unlock();
    }
  }
}

// How long an empty ibv_poll_cq may wait for a completion that is owed:
// long enough to give the CPU away, short next to any timeout a program has.
constexpr auto kPollWait = std::chrono::microseconds(200);

// After an empty poll of `cq`: waits up to kPollWait for the sockets that
// owe its QPs a completion (a signaled one-sided operation, a link reply),
// or, when none is owed but the CQ takes RECV completions, for a push.
// Returns at once with a yield when nothing can come.
void WaitBriefly(Cq& cq) {
  std::vector<std::shared_ptr<Qp>> qps;
  {
    std::lock_guard<std::mutex> l(cq.mu);
    qps = cq.send_qps;
  }
  pollfd fds[16];
  nfds_t n = 0;
  const bool receives = cq.recv_users.load(std::memory_order_relaxed) > 0;
  auto add = [&](int fd) {  // no allocation: this runs on every empty poll
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].fd == fd) return;
    }
    if (n < 16) fds[n++] = pollfd{fd, POLLIN, 0};
  };
  for (const std::shared_ptr<Qp>& qp : qps) {
    if (!qp->mu.try_lock()) continue;
    for (const SendWqe& w : qp->sq) {
      if (w.nic_pending && (w.signaled || w.on_link) && !qp->peers[w.peer].broken) {
        add(qp->peers[w.peer].peer->fd());
      }
      if (w.link_pending && qp->link.valid()) add(qp->link.get());
    }
    qp->mu.unlock();
  }
  if (n > 0) {
    const timespec ts{0, std::chrono::nanoseconds(kPollWait).count()};
    (void)ppoll(fds, n, &ts, nullptr);
    return;
  }
  if (receives) {
    std::unique_lock<std::mutex> l(cq.mu);
    if (!cq.q.empty()) return;
    ++cq.waiters;
    cq.pushed.wait_for(l, kPollWait);
    --cq.waiters;
    return;
  }
  sched_yield();
}

int PollCq(ibv_cq* ibcq, int n, ibv_wc* wc) {
  if (n < 0) return -1;
  Cq& cq = *Of(ibcq);
  bool queued;
  {
    std::lock_guard<std::mutex> l(cq.mu);
    queued = static_cast<int>(cq.q.size()) >= n;
  }
  if (!queued) ProgressCq(cq, false);  // enough queued already: no socket reads
  int k = 0;
  {
    std::lock_guard<std::mutex> l(cq.mu);
    while (k < n && !cq.q.empty()) {
      wc[k++] = cq.q.front();
      cq.q.pop_front();
    }
  }
  // Nothing yet: the work is done by other threads here (a soft NIC, a link
  // thread), not by a NIC beside the CPU, and a program that polls without
  // pause would keep them off a CPU on a small machine. Wait a little for
  // what is owed instead (bench/results/2026-12-05-verbs.md).
  if (k == 0) WaitBriefly(cq);
  return k;
}

int ReqNotifyCq(ibv_cq* ibcq, int /*solicited_only*/) {
  Cq& cq = *Of(ibcq);
  if (cq.channel == nullptr) return EINVAL;
  std::lock_guard<std::mutex> l(cq.mu);
  cq.armed = true;
  return 0;
}

int PostSrqRecv(ibv_srq*, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  *bad = wr;
  return EOPNOTSUPP;
}

int QueryPortOp(ibv_context* ctx, uint8_t port, ibv_port_attr* attr, size_t size) {
  return SoftQueryPort(ctx, port, attr, size);
}

int QueryDeviceEx(ibv_context* ctx, const ibv_query_device_ex_input* input,
                  ibv_device_attr_ex* attr, size_t size) {
  if (input != nullptr && input->comp_mask != 0) return EINVAL;
  ibv_device_attr_ex a{};
  if (int rc = SoftQueryDevice(ctx, &a.orig_attr); rc != 0) return rc;
  // On-demand paging for RC: an ODP registration is never a pin; it
  // follows the invalidations of its memory (docs/verbs.md).
  a.odp_caps.general_caps = IBV_ODP_SUPPORT;
  a.odp_caps.per_transport_caps.rc_odp_caps = IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV |
                                              IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ;
  std::memcpy(attr, &a, std::min(size, sizeof a));
  return 0;
}

// --- the device -----------------------------------------------------------------------------------

ibv_device g_device = [] {
  ibv_device d{};
  d.node_type = IBV_NODE_CA;
  d.transport_type = IBV_TRANSPORT_IB;
  snprintf(d.name, sizeof d.name, "%s", kDeviceName);
  snprintf(d.dev_name, sizeof d.dev_name, "uverbs-%s", kDeviceName);
  snprintf(d.dev_path, sizeof d.dev_path, "leasefs-run:%s", kDeviceName);
  snprintf(d.ibdev_path, sizeof d.ibdev_path, "leasefs-run:%s", kDeviceName);
  return d;
}();

// Progress for every CQ of a channel (ibv_get_cq_event waits on it).
// Progress for every CQ of a channel (ibv_get_cq_event waits on it); adds
// to *fds the sockets whose data would bring those CQs completions.
void ProgressChannel(Channel& ch, std::vector<pollfd>* fds) {
  std::vector<std::shared_ptr<Cq>> cqs;
  {
    std::lock_guard<std::mutex> l(ch.mu);
    for (const std::weak_ptr<Cq>& w : ch.cqs) {
      if (auto c = w.lock()) cqs.push_back(std::move(c));
    }
  }
  for (const std::shared_ptr<Cq>& c : cqs) {
    ProgressCq(*c, true);
    std::vector<std::shared_ptr<Qp>> qps;
    {
      std::lock_guard<std::mutex> l(c->mu);
      qps = c->send_qps;
    }
    for (const std::shared_ptr<Qp>& qp : qps) {
      std::lock_guard<std::mutex> l(qp->mu);
      if (qp->link.valid()) fds->push_back(pollfd{qp->link.get(), POLLIN, 0});
      for (const PeerConn& pc : qp->peers) {
        if (!pc.broken) fds->push_back(pollfd{pc.peer->fd(), POLLIN, 0});
      }
    }
  }
}

}  // namespace

void VLog(const char* who, const char* fmt, va_list ap) {
  static const bool verbose = [] {
    const char* e = getenv("LEASEFS_RUN_VERBOSE");
    return e != nullptr && e[0] != '\0' && std::strcmp(e, "0") != 0;
  }();
  if (!verbose) return;
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  fprintf(stderr, "leasefs-run[%d] %s: %s\n", static_cast<int>(getpid()), who, line);
}

bool ReadFull(int fd, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0 || errno != EINTR) {
      return false;
    }
  }
  return true;
}

bool ReadFullWithin(int fd, void* buf, size_t n, int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || !WaitReadable(fd, static_cast<int>(left))) return false;
    const ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
      return false;
    }
  }
  return true;
}

bool WriteFull(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r < 0 && errno != EINTR) {
      return false;
    }
  }
  return true;
}

bool Discard(int fd, size_t n) {
  uint8_t sink[4096];
  while (n > 0) {
    const size_t k = std::min(n, sizeof sink);
    if (!ReadFull(fd, sink, k)) return false;
    n -= k;
  }
  return true;
}

bool WaitReadable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

void* RealSymbolOf(const char* soname, const char* name) {
  if (void* f = dlsym(RTLD_NEXT, name)) return f;
  void* lib = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return nullptr;
  void* f = dlsym(lib, name);
  dlclose(lib);  // NOLOAD took a reference of its own; the program keeps its
  return f;
}

ibv_device* SoftDevice() { return &g_device; }

__be64 SoftGuid() {
  // "LFS" and the LID: unique among the devices of this machine.
  return htobe64(0x4C46530000000000ull | Engine::Get().lid());
}

ibv_context* SoftOpenDevice() {
  if (const int rc = Engine::Get().Start(); rc != 0) {
    errno = rc;
    return nullptr;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return nullptr;
  auto* c = new Context();
  c->async_r.reset(p[0]);
  c->async_w.reset(p[1]);
  c->box.impl = c;
  verbs_context& v = c->box.v;
  v.sz = sizeof(verbs_context);
  v.query_port = QueryPortOp;
  v.query_device_ex = QueryDeviceEx;
  ibv_context& ctx = v.context;
  ctx.device = &g_device;
  ctx.cmd_fd = -1;
  ctx.async_fd = p[0];
  ctx.num_comp_vectors = 1;
  pthread_mutex_init(&ctx.mutex, nullptr);
  ctx.abi_compat = __VERBS_ABI_IS_EXTENDED;
  ctx.ops.poll_cq = PollCq;
  ctx.ops.req_notify_cq = ReqNotifyCq;
  ctx.ops.post_send = PostSend;
  ctx.ops.post_recv = PostRecv;
  ctx.ops.post_srq_recv = PostSrqRecv;
  return &ctx;
}

int SoftCloseDevice(ibv_context* ibctx) {
  Context* c = Of(ibctx);
  if (c->users.load() != 0) {
    // As libibverbs does (the kernel frees what is left), closing succeeds;
    // the objects still open keep the context's memory.
    Log("context closed with %d objects open", c->users.load());
    return 0;
  }
  pthread_mutex_destroy(&ibctx->mutex);
  delete c;
  return 0;
}

int SoftQueryDevice(ibv_context*, ibv_device_attr* a) {
  *a = ibv_device_attr{};
  snprintf(a->fw_ver, sizeof a->fw_ver, "leasefs-1");
  a->node_guid = SoftGuid();
  a->sys_image_guid = SoftGuid();
  a->max_mr_size = 1ull << 40;
  a->page_size_cap = 4096;
  a->vendor_id = 0;  // no vendor: perftest treats the device as unknown (no inline, old post API)
  a->vendor_part_id = 0;
  a->hw_ver = 1;
  a->max_qp = 4096;
  a->max_qp_wr = kMaxQpWr;
  a->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_PORT_ACTIVE_EVENT;
  a->max_sge = kMaxSge;
  a->max_sge_rd = kMaxSge;
  a->max_cq = 4096;
  a->max_cqe = kMaxCqe;
  a->max_mr = 65536;
  a->max_pd = 4096;
  a->max_qp_rd_atom = kMaxRdAtom;
  a->max_qp_init_rd_atom = kMaxRdAtom;
  a->max_res_rd_atom = kMaxRdAtom * 4096;
  a->atomic_cap = IBV_ATOMIC_NONE;
  a->max_pkeys = 1;
  a->phys_port_cnt = 1;
  return 0;
}

int SoftQueryPort(ibv_context*, uint8_t port, ibv_port_attr* attr, size_t size) {
  if (port != 1) return EINVAL;
  ibv_port_attr a{};
  a.state = IBV_PORT_ACTIVE;
  a.max_mtu = IBV_MTU_4096;
  a.active_mtu = IBV_MTU_4096;
  a.gid_tbl_len = 1;
  a.max_msg_sz = kMaxMessage;
  a.pkey_tbl_len = 1;
  a.lid = Engine::Get().lid();
  a.sm_lid = 1;
  a.max_vl_num = 1;
  a.active_width = 2;   // 4X
  a.active_speed = 32;  // EDR
  a.phys_state = 5;     // LinkUp
  a.link_layer = IBV_LINK_LAYER_INFINIBAND;
  std::memcpy(attr, &a, std::min(size, sizeof a));
  return 0;
}

int SoftQueryGid(ibv_context*, uint8_t port, int index, ibv_gid* gid) {
  if (port != 1 || index != 0) return EINVAL;
  *gid = ibv_gid{};
  gid->global.subnet_prefix = htobe64(0xfe80000000000000ull);
  gid->global.interface_id = SoftGuid();
  return 0;
}

int SoftQueryGidEx(ibv_context* ctx, uint32_t port, uint32_t index, ibv_gid_entry* entry,
                   uint32_t flags, size_t entry_size) {
  if (flags != 0 || entry_size < sizeof *entry) return EINVAL;
  if (port != 1 || index != 0) return ENODATA;
  *entry = ibv_gid_entry{};
  SoftQueryGid(ctx, 1, 0, &entry->gid);
  entry->gid_index = 0;
  entry->port_num = 1;
  entry->gid_type = IBV_GID_TYPE_IB;
  return 0;
}

ssize_t SoftQueryGidTable(ibv_context* ctx, ibv_gid_entry* entries, size_t max, uint32_t flags,
                          size_t entry_size) {
  if (flags != 0 || entry_size < sizeof *entries) return -EINVAL;
  if (max < 1) return -EINVAL;
  return SoftQueryGidEx(ctx, 1, 0, entries, 0, sizeof *entries) == 0 ? 1 : -EINVAL;
}

int SoftQueryPkey(ibv_context*, uint8_t port, int index, __be16* pkey) {
  if (port != 1 || index != 0) return EINVAL;
  *pkey = htobe16(0xffff);
  return 0;
}

ibv_pd* SoftAllocPd(ibv_context* ibctx) {
  auto* pd = new Pd();
  pd->ctx = Of(ibctx);
  pd->box.pd.context = ibctx;
  pd->box.pd.handle = 0;
  pd->box.impl = pd;
  pd->ctx->users.fetch_add(1);
  return &pd->box.pd;
}

int SoftDeallocPd(ibv_pd* ibpd) {
  Pd* pd = Of(ibpd);
  if (pd->users.load() != 0) return EBUSY;
  pd->ctx->users.fetch_sub(1);
  delete pd;
  return 0;
}

ibv_mr* SoftRegMr(ibv_pd* ibpd, void* addr, size_t length, uint64_t iova, unsigned access) {
  const unsigned known = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                         IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                         IBV_ACCESS_RELAXED_ORDERING | IBV_ACCESS_ON_DEMAND;
  const bool remote_write = (access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) != 0;
  if ((access & ~known) != 0 || (addr == nullptr && length != 0) ||
      (remote_write && (access & IBV_ACCESS_LOCAL_WRITE) == 0)) {
    errno = EINVAL;
    return nullptr;
  }
  if (length == 0 || length > (1ull << 40)) {
    errno = EINVAL;
    return nullptr;
  }
  auto mr = std::make_shared<Mr>();
  mr->pd = Of(ibpd);
  mr->host = static_cast<char*>(addr);
  mr->iova = iova;
  mr->length = length;
  mr->access = access;
  mr->odp = (access & IBV_ACCESS_ON_DEMAND) != 0;
  const bool rw = (access & IBV_ACCESS_REMOTE_WRITE) != 0;
  const bool rd = (access & IBV_ACCESS_REMOTE_READ) != 0;
  if (rw || rd) {
    // Over a leasefs DAX mapping: a pin with the daemon's soft NIC.
    using PinFn = int (*)(const void*, size_t, uint32_t, leasefs_run_pin*);
    static const auto pin_range =
        reinterpret_cast<PinFn>(dlsym(RTLD_DEFAULT, "leasefs_run_pin_range"));
    leasefs_run_pin p{};
    int rc = -ENOENT;  // not a leasefs DAX mapping (or ODP, which pins nothing)
    if (pin_range != nullptr && !mr->odp) {
      rc = pin_range(addr, length,
                     (rw ? LEASEFS_PIN_REMOTE_WRITE : 0u) | (rd ? LEASEFS_PIN_REMOTE_READ : 0u),
                     &p);
    }
    if (rc == 0) {
      mr->pinned = true;
      mr->pin_id = p.pin_id;
      mr->rkey64 = p.rkey;
      mr->region_offset = p.region_offset;
      mr->port = p.softnic_port;
      std::memcpy(mr->address, p.softnic_address, sizeof mr->address);
      mr->address[sizeof mr->address - 1] = '\0';
    } else if (rc != -ENOENT) {
      Log("registration of [%p, +%zu) over a leasefs file: the pin failed: %s", addr, length,
          strerror(-rc));
      errno = -rc;
      return nullptr;
    } else {
      int err = 0;
      pin::SoftNic* nic = Engine::Get().LocalNic(&err);
      if (nic == nullptr) {
        errno = err;
        return nullptr;
      }
      Result<uint64_t> rkey = nic->Register(addr, length, rw, rd);
      if (!rkey.ok()) {
        errno = rkey.status().err();
        return nullptr;
      }
      mr->rkey64 = *rkey;
      mr->region_offset = 0;
      mr->port = nic->port();
      snprintf(mr->address, sizeof mr->address, "127.0.0.1");
      if (!AddServed(reinterpret_cast<uintptr_t>(addr), length, mr->rkey64)) {
        (void)nic->Unregister(mr->rkey64);
        errno = ENOMEM;
        return nullptr;
      }
    }
    mr->served = true;
  }
  mr->key = Engine::Get().AddMr(mr);
  ibv_mr& m = mr->box.mr;
  m.context = ibpd->context;
  m.pd = ibpd;
  m.addr = addr;
  m.length = length;
  m.handle = mr->key;
  m.lkey = mr->key;
  m.rkey = mr->key;
  mr->box.impl = new std::shared_ptr<Mr>(mr);
  mr->pd->users.fetch_add(1);
  Log("MR %#x: [%p, +%zu) access %#x%s", mr->key, addr, length, access,
      mr->pinned ? " (a pin of a leasefs file)"
                 : (mr->served ? (mr->odp ? " (own soft NIC, on demand)" : " (own soft NIC)") : ""));
  return &m;
}

int SoftDeregMr(ibv_mr* ibmr) {
  std::shared_ptr<Mr> mr = Of(ibmr);
  mr->gone.store(true, std::memory_order_release);
  Engine::Get().RemoveMr(mr->key);
  {
    std::unique_lock<std::mutex> g(mr->mu);
    mr->dead = true;
    mr->cv.wait(g, [&] { return mr->copying == 0; });
  }
  if (mr->pinned) {
    using UnpinFn = int (*)(uint64_t);
    static const auto unpin = reinterpret_cast<UnpinFn>(dlsym(RTLD_DEFAULT, "leasefs_run_unpin"));
    if (unpin != nullptr) {
      if (const int rc = unpin(mr->pin_id); rc != 0) {
        Log("MR %#x: unpin %llu: %s", mr->key, static_cast<unsigned long long>(mr->pin_id),
            strerror(-rc));
      }
    }
  } else if (mr->served) {
    RemoveServed(mr->rkey64);
    int err = 0;
    if (pin::SoftNic* nic = Engine::Get().LocalNic(&err)) (void)nic->Unregister(mr->rkey64);
  }
  mr->pd->users.fetch_sub(1);
  delete reinterpret_cast<MrBox*>(ibmr)->impl;
  return 0;
}

ibv_comp_channel* SoftCreateCompChannel(ibv_context* ibctx) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return nullptr;
  auto* ch = new Channel();
  ch->ctx = Of(ibctx);
  ch->write_fd = p[1];
  ch->box.ch.context = ibctx;
  ch->box.ch.fd = p[0];
  ch->box.ch.refcnt = 0;
  ch->box.impl = ch;
  ch->ctx->users.fetch_add(1);
  return &ch->box.ch;
}

int SoftDestroyCompChannel(ibv_comp_channel* ibch) {
  Channel* ch = Of(ibch);
  if (ch->users.load() != 0) return EBUSY;
  close(ibch->fd);
  close(ch->write_fd);
  ch->ctx->users.fetch_sub(1);
  delete ch;
  return 0;
}

ibv_cq* SoftCreateCq(ibv_context* ibctx, int cqe, void* cq_context, ibv_comp_channel* ibch,
                     int comp_vector) {
  if (cqe < 1 || cqe > kMaxCqe || comp_vector != 0 ||
      (ibch != nullptr && ibch->context != ibctx)) {
    errno = EINVAL;
    return nullptr;
  }
  auto cq = std::make_shared<Cq>();
  cq->ctx = Of(ibctx);
  cq->channel = ibch != nullptr ? Of(ibch) : nullptr;
  cq->capacity = cqe;
  ibv_cq& c = cq->box.cq;
  c.context = ibctx;
  c.channel = ibch;
  c.cq_context = cq_context;
  c.cqe = cqe;
  pthread_mutex_init(&c.mutex, nullptr);
  pthread_cond_init(&c.cond, nullptr);
  cq->box.impl = new std::shared_ptr<Cq>(cq);
  cq->ctx->users.fetch_add(1);
  if (cq->channel != nullptr) {
    cq->channel->users.fetch_add(1);
    std::lock_guard<std::mutex> l(cq->channel->mu);
    cq->channel->cqs.push_back(cq);
  }
  return &c;
}

int SoftResizeCq(ibv_cq* ibcq, int cqe) {
  Cq& cq = *Of(ibcq);
  std::lock_guard<std::mutex> l(cq.mu);
  if (cqe < 1 || cqe > kMaxCqe || cqe < static_cast<int>(cq.q.size())) return EINVAL;
  cq.capacity = cqe;
  ibcq->cqe = cqe;
  return 0;
}

int SoftDestroyCq(ibv_cq* ibcq) {
  std::shared_ptr<Cq> cq = Of(ibcq);
  if (cq->users.load() != 0) return EBUSY;
  if (cq->channel != nullptr) cq->channel->users.fetch_sub(1);
  cq->ctx->users.fetch_sub(1);
  pthread_mutex_destroy(&ibcq->mutex);
  pthread_cond_destroy(&ibcq->cond);
  delete reinterpret_cast<CqBox*>(ibcq)->impl;
  return 0;
}

int SoftGetCqEvent(ibv_comp_channel* ibch, ibv_cq** out_cq, void** out_context) {
  const bool nonblocking = (fcntl(ibch->fd, F_GETFL) & O_NONBLOCK) != 0;
  for (;;) {
    // The requester's completions come only from reading the soft NICs and
    // links: read them for every CQ on this channel, then wait for the
    // event pipe or for more of their data (a non-blocking channel gets one
    // round).
    std::vector<pollfd> fds = {pollfd{ibch->fd, POLLIN, 0}};
    ProgressChannel(*Of(ibch), &fds);
    if (poll(fds.data(), fds.size(), nonblocking ? 0 : 100) < 0 && errno != EINTR) return -1;
    if ((fds[0].revents & POLLIN) != 0) {
      uint64_t ptr = 0;
      const ssize_t n = read(ibch->fd, &ptr, sizeof ptr);
      if (n == sizeof ptr) {
        *out_cq = reinterpret_cast<ibv_cq*>(ptr);
        *out_context = (*out_cq)->cq_context;
        return 0;
      }
      if (n < 0 && errno != EINTR && errno != EAGAIN) return -1;
    }
    if (nonblocking) {
      errno = EAGAIN;
      return -1;
    }
  }
}

void SoftAckCqEvents(ibv_cq* ibcq, unsigned n) {
  Of(ibcq)->acked.fetch_add(n);
  pthread_mutex_lock(&ibcq->mutex);
  ibcq->comp_events_completed += n;
  pthread_cond_signal(&ibcq->cond);
  pthread_mutex_unlock(&ibcq->mutex);
}


ibv_qp* SoftCreateQp(ibv_pd* ibpd, ibv_qp_init_attr* init) {
  if (init->qp_type != IBV_QPT_RC) {
    Log("create_qp: type %d is not offered (RC only)", init->qp_type);
    errno = EOPNOTSUPP;
    return nullptr;
  }
  if (init->srq != nullptr || init->send_cq == nullptr || init->recv_cq == nullptr ||
      !IsSoft(init->send_cq->context) || !IsSoft(init->recv_cq->context)) {
    errno = init->srq != nullptr ? EOPNOTSUPP : EINVAL;
    return nullptr;
  }
  ibv_qp_cap& cap = init->cap;
  if (cap.max_send_wr > kMaxQpWr || cap.max_recv_wr > kMaxQpWr || cap.max_send_sge > kMaxSge ||
      cap.max_recv_sge > kMaxSge || cap.max_inline_data > kMaxInline) {
    errno = EINVAL;
    return nullptr;
  }
  auto qp = std::make_shared<Qp>();
  qp->ctx = Of(ibpd->context);
  qp->pd = Of(ibpd);
  qp->send_cq = Of(init->send_cq);
  qp->recv_cq = Of(init->recv_cq);
  cap.max_send_wr = std::max(cap.max_send_wr, 1u);
  cap.max_recv_wr = std::max(cap.max_recv_wr, 1u);
  cap.max_send_sge = std::max(cap.max_send_sge, 1u);
  cap.max_recv_sge = std::max(cap.max_recv_sge, 1u);
  cap.max_inline_data = kMaxInline;
  qp->cap = cap;
  qp->sq_sig_all = init->sq_sig_all != 0;
  qp->qpn = Engine::Get().AddQp(qp);
  ibv_qp& q = qp->box.qp;
  q.context = ibpd->context;
  q.qp_context = init->qp_context;
  q.pd = ibpd;
  q.send_cq = init->send_cq;
  q.recv_cq = init->recv_cq;
  q.srq = nullptr;
  q.handle = qp->qpn;
  q.qp_num = qp->qpn;
  q.state = IBV_QPS_RESET;
  q.qp_type = IBV_QPT_RC;
  pthread_mutex_init(&q.mutex, nullptr);
  pthread_cond_init(&q.cond, nullptr);
  qp->box.impl = new std::shared_ptr<Qp>(qp);
  qp->pd->users.fetch_add(1);
  qp->send_cq->users.fetch_add(1);
  qp->recv_cq->users.fetch_add(1);
  qp->recv_cq->recv_users.fetch_add(1);
  {
    std::lock_guard<std::mutex> l(qp->send_cq->mu);
    qp->send_cq->send_qps.push_back(qp);
  }
  Log("QP %u created (send %u x %u SGE, recv %u x %u SGE)", qp->qpn, cap.max_send_wr,
      cap.max_send_sge, cap.max_recv_wr, cap.max_recv_sge);
  return &q;
}

namespace {

// The transitions of a QP's state machine that modify_qp may make.
bool Allowed(ibv_qp_state from, ibv_qp_state to) {
  if (to == IBV_QPS_RESET || to == IBV_QPS_ERR) return true;
  switch (from) {
    case IBV_QPS_RESET:
      return to == IBV_QPS_INIT;
    case IBV_QPS_INIT:
      return to == IBV_QPS_INIT || to == IBV_QPS_RTR;
    case IBV_QPS_RTR:
      return to == IBV_QPS_RTS;
    case IBV_QPS_RTS:
      return to == IBV_QPS_RTS;
    default:
      return false;
  }
}

// Back to RESET: every queue emptied without completions, links closed.
void Reset(Qp& qp) {
  qp.sq.clear();
  qp.link_queue.clear();
  qp.link.reset();
  qp.link_broken = false;
  qp.link_out.clear();
  qp.link_out_off = 0;
  qp.link_in.clear();
  qp.peers.clear();
  qp.targets.clear();
  std::lock_guard<std::mutex> l(qp.rq_mu);
  qp.rq.clear();
  qp.rq_error = false;
  qp.accepting = false;
  qp.has_requester = false;
  if (qp.responder_fd >= 0) shutdown(qp.responder_fd, SHUT_RDWR);
}

}  // namespace

int SoftModifyQp(ibv_qp* ibqp, ibv_qp_attr* a, int mask) {
  Qp& qp = *Of(ibqp);
  std::lock_guard<std::mutex> l(qp.mu);
  const ibv_qp_state cur =
      (mask & IBV_QP_CUR_STATE) != 0 ? a->cur_qp_state : qp.state;
  const ibv_qp_state to = (mask & IBV_QP_STATE) != 0 ? a->qp_state : qp.state;
  if (cur != qp.state || !Allowed(qp.state, to)) return EINVAL;
  if (to == IBV_QPS_RTR && qp.state != IBV_QPS_RTR &&
      ((mask & IBV_QP_AV) == 0 || (mask & IBV_QP_DEST_QPN) == 0)) {
    return EINVAL;  // RC needs its peer: the address vector and QP number
  }
  if ((mask & IBV_QP_PORT) != 0 && a->port_num != 1) return EINVAL;
  if ((mask & IBV_QP_PATH_MTU) != 0 && (a->path_mtu < IBV_MTU_256 || a->path_mtu > IBV_MTU_4096))
    return EINVAL;
  if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) != 0 && a->max_rd_atomic > kMaxRdAtom) return EINVAL;
  if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) != 0 && a->max_dest_rd_atomic > kMaxRdAtom)
    return EINVAL;
  if ((mask & IBV_QP_ACCESS_FLAGS) != 0) qp.attr.qp_access_flags = a->qp_access_flags;
  if ((mask & IBV_QP_PKEY_INDEX) != 0) qp.attr.pkey_index = a->pkey_index;
  if ((mask & IBV_QP_PORT) != 0) qp.attr.port_num = a->port_num;
  if ((mask & IBV_QP_AV) != 0) qp.attr.ah_attr = a->ah_attr;
  if ((mask & IBV_QP_PATH_MTU) != 0) qp.attr.path_mtu = a->path_mtu;
  if ((mask & IBV_QP_TIMEOUT) != 0) qp.attr.timeout = a->timeout;
  if ((mask & IBV_QP_RETRY_CNT) != 0) qp.attr.retry_cnt = a->retry_cnt;
  if ((mask & IBV_QP_RNR_RETRY) != 0) qp.attr.rnr_retry = a->rnr_retry;
  if ((mask & IBV_QP_RQ_PSN) != 0) qp.attr.rq_psn = a->rq_psn;
  if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) != 0) qp.attr.max_rd_atomic = a->max_rd_atomic;
  if ((mask & IBV_QP_MIN_RNR_TIMER) != 0) qp.attr.min_rnr_timer = a->min_rnr_timer;
  if ((mask & IBV_QP_SQ_PSN) != 0) qp.attr.sq_psn = a->sq_psn;
  if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) != 0) qp.attr.max_dest_rd_atomic = a->max_dest_rd_atomic;
  if ((mask & IBV_QP_DEST_QPN) != 0) qp.attr.dest_qp_num = a->dest_qp_num;
  if (to == qp.state) return 0;
  Log("QP %u: state %d -> %d", qp.qpn, qp.state, to);
  if (to == IBV_QPS_RESET) {
    Reset(qp);
  } else if (to == IBV_QPS_ERR) {
    EnterError(qp);
  } else if (to == IBV_QPS_RTR) {
    std::lock_guard<std::mutex> r(qp.rq_mu);
    qp.remote_qpn = qp.attr.dest_qp_num;
    qp.remote_lid = qp.attr.ah_attr.dlid;
    qp.accepting = true;
  }
  qp.state = to;
  ibqp->state = to;
  return 0;
}

int SoftQueryQp(ibv_qp* ibqp, ibv_qp_attr* a, int, ibv_qp_init_attr* init) {
  Qp& qp = *Of(ibqp);
  std::lock_guard<std::mutex> l(qp.mu);
  *a = qp.attr;
  a->qp_state = qp.state;
  a->cur_qp_state = qp.state;
  a->cap = qp.cap;
  *init = ibv_qp_init_attr{};
  init->qp_context = ibqp->qp_context;
  init->send_cq = ibqp->send_cq;
  init->recv_cq = ibqp->recv_cq;
  init->cap = qp.cap;
  init->qp_type = IBV_QPT_RC;
  init->sq_sig_all = qp.sq_sig_all ? 1 : 0;
  return 0;
}

int SoftDestroyQp(ibv_qp* ibqp) {
  std::shared_ptr<Qp> qp = Of(ibqp);
  Engine::Get().RemoveQp(qp->qpn);
  {
    std::lock_guard<std::mutex> l(qp->send_cq->mu);
    auto& v = qp->send_cq->send_qps;
    v.erase(std::remove(v.begin(), v.end(), qp), v.end());
  }
  {
    std::lock_guard<std::mutex> l(qp->mu);
    qp->link.reset();
    qp->peers.clear();
  }
  {
    std::lock_guard<std::mutex> l(qp->rq_mu);
    qp->destroyed = true;
    if (qp->responder_fd >= 0) shutdown(qp->responder_fd, SHUT_RDWR);
  }
  qp->rq_cv.notify_all();
  qp->pd->users.fetch_sub(1);
  qp->send_cq->users.fetch_sub(1);
  qp->recv_cq->users.fetch_sub(1);
  qp->recv_cq->recv_users.fetch_sub(1);
  pthread_mutex_destroy(&ibqp->mutex);
  pthread_cond_destroy(&ibqp->cond);
  Log("QP %u destroyed", qp->qpn);
  delete reinterpret_cast<QpBox*>(ibqp)->impl;
  return 0;
}

int SoftGetAsyncEvent(ibv_context* ibctx, ibv_async_event* event) {
  // The device raises no asynchronous events: wait as a real one would
  // when nothing happens, until the context is closed under us.
  uint8_t b;
  for (;;) {
    const ssize_t n = read(ibctx->async_fd, &b, 1);
    if (n < 0 && errno == EINTR) continue;
    (void)event;
    errno = n == 0 ? EIO : errno;
    return -1;
  }
}

}  // namespace leasefs::run::verbs
