// libleasefs_verbs.so's rdma_cm (docs/verbs-cm.md): librdmacm's entry
// points for programs that connect their queue pairs through rdma_cm (fio's
// rdma engine, perftest -R). librdmacm itself needs the kernel's rdma_cm,
// which a machine without an RDMA subsystem lacks; when the emulated device
// leasefs0 is the one in use (LEASEFS_VERBS=soft, or auto with no real
// device: the first device ibv_get_device_list returns is leasefs0), the
// functions here serve event channels and IDs themselves, over a TCP side
// channel on the ID's own IPv4 address and port; otherwise, and for every
// object they did not make, they call librdmacm's own function, found with
// dlsym(RTLD_NEXT) (or in an already loaded librdmacm.so.1).
//
// Connection (the IB CM's exchange, on a TCP connection from the active
// ID's address to the listener's):
//   active  rdma_connect:  REQ (QPN, LID, PSN, private data) ->
//   passive CONNECT_REQUEST event on a new ID; rdma_accept: QP to RTR and
//           RTS, <- REP (its QPN, LID, PSN, private data)
//   active  QP to RTR and RTS, RTU ->, ESTABLISHED event
//   passive ESTABLISHED event at RTU
// rdma_reject sends REJ (REJECTED event); rdma_disconnect moves the QP to
// the error state and sends DREQ, answered by DREP; both sides then get
// DISCONNECTED (also when the connection just ends).
//
// Threads: a listening ID has an accepting thread, a connection's ID a
// reading thread; events are queued on the ID's channel, whose fd is
// readable while one is queued. Every ID is destroyed by the program
// (rdma_destroy_id), which stops and joins its thread first.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <endian.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "tools/run/verbs_device.h"

namespace leasefs::run::verbs {
namespace {

// --- the side channel's messages (docs/verbs-cm.md "Wire format") ----------------------------

constexpr uint32_t kCmMagic = 0x4D43464C;  // "LFCM" read as a LE u32
constexpr uint8_t kCmVersion = 1;

enum CmType : uint8_t { kReq = 1, kRep = 2, kRtu = 3, kRej = 4, kDreq = 5, kDrep = 6 };

// Little-endian, no padding; private_data_len bytes of private data follow.
struct CmMsg {
  uint32_t magic;    // kCmMagic
  uint8_t version;   // kCmVersion
  uint8_t type;      // CmType
  uint8_t private_data_len;
  uint8_t responder_resources;
  uint8_t initiator_depth;
  uint8_t retry_count;
  uint8_t rnr_retry_count;
  uint8_t reserved0;  // 0
  uint32_t qpn;       // REQ, REP: the sender's QP number
  uint32_t psn;       // REQ, REP: the sender's first send PSN (24 bits)
  uint16_t lid;       // REQ, REP: the sender's LID
  uint16_t reserved1; // 0
  uint32_t reason;    // REJ: the reject reason (IB CM codes)
};
static_assert(sizeof(CmMsg) == 28);

// The private data the IB CM carries (IBA 12.6; a REQ's for IPv4 less the
// 36-byte rdma_cm header). A receiver gets this many bytes, zero-padded.
constexpr uint8_t kReqPrivateData = 56;
constexpr uint8_t kRepPrivateData = 196;
constexpr uint8_t kRejPrivateData = 148;

// IB CM reject reasons the event's status reports.
constexpr int kRejInvalidServiceId = 8;  // no listener at the address
constexpr int kRejConsumer = 28;         // rdma_reject

constexpr int kConnectTimeoutMs = 5000;
constexpr int kRequestTimeoutMs = 5000;
constexpr int kMaxRdAtomic = 16;  // the device's max_qp_rd_atom

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  VLog("rdma_cm", fmt, ap);
  va_end(ap);
}

// --- librdmacm's own functions ---------------------------------------------------------------

template <typename F>
F Real(const char* name) {
  return reinterpret_cast<F>(RealSymbolOf("librdmacm.so.1", name));
}

#define LEASEFS_REAL(fn) Real<decltype(&::fn)>(#fn)

// Calls librdmacm's `fn`, or fails with ENOSYS when it is not loaded.
#define LEASEFS_FORWARD(fn, ...)               \
  do {                                         \
    static const auto real = LEASEFS_REAL(fn); \
    if (real == nullptr) {                     \
      errno = ENOSYS;                          \
      return -1;                               \
    }                                          \
    return real(__VA_ARGS__);                  \
  } while (0)

// Whether this process's verbs go to leasefs0: it comes first in the device
// list (verbs_exports.cc: LEASEFS_VERBS=soft, or auto without real devices).
bool Emulated() {
  static const bool emulated = [] {
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    const bool soft = list != nullptr && n > 0 && IsSoftDevice(list[0]);
    if (list != nullptr) ibv_free_device_list(list);
    Log("%s", soft ? "serving rdma_cm for leasefs0" : "rdma_cm is librdmacm's");
    return soft;
  }();
  return emulated;
}

// The process's leasefs0 context (every ID uses it) and its default PD.
std::mutex g_ctx_mu;
ibv_context* g_ctx = nullptr;  // GUARDED_BY(g_ctx_mu)
ibv_pd* g_pd = nullptr;        // GUARDED_BY(g_ctx_mu)

ibv_context* Context() {
  std::lock_guard<std::mutex> l(g_ctx_mu);
  if (g_ctx == nullptr) g_ctx = ibv_open_device(SoftDevice());
  return g_ctx;
}

ibv_pd* DefaultPd() {
  ibv_context* ctx = Context();
  std::lock_guard<std::mutex> l(g_ctx_mu);
  if (g_pd == nullptr && ctx != nullptr) g_pd = ibv_alloc_pd(ctx);
  return g_pd;
}

uint16_t LocalLid() {
  ibv_port_attr pa{};
  ibv_context* ctx = Context();
  return ctx != nullptr && ibv_query_port(ctx, 1, &pa) == 0 ? pa.lid : 0;
}

uint32_t RandomPsn() {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != sizeof v) {
  }
  return v & 0xFFFFFF;
}

// --- objects ----------------------------------------------------------------------------------

struct CmId;

// One event; the program's pointer is &ev.
struct Event {
  rdma_cm_event ev{};
  uint8_t private_data[256] = {};
  CmId* owner = nullptr;  // whose rdma_destroy_id waits for its ack
};

struct Channel {
  rdma_event_channel ch{};  // ch.fd: an eventfd, readable while q is not empty
  std::mutex mu;
  std::deque<Event*> q;  // GUARDED_BY(mu)
};

enum class State {
  kIdle,
  kBound,
  kListening,
  kAddrResolved,
  kRouteResolved,
  kConnecting,   // active: REQ sent or being sent
  kRequested,    // passive: REQ received, not yet accepted
  kAccepted,     // passive: REP sent
  kEstablished,
  kDisconnected,
  kRejected,
};

struct CmId {
  rdma_cm_id id{};  // the program's object
  Channel* channel = nullptr;
  bool own_cqs = false;  // rdma_create_qp made the CQs (rdma_destroy_qp frees them)

  std::mutex mu;
  State state = State::kIdle;  // GUARDED_BY(mu)
  UniqueFd sock;               // listening or connection socket
  std::thread thread;          // the accepting or reading thread
  std::atomic<bool> destroyed{false};
  bool disconnect_reported = false;  // GUARDED_BY(mu)
  uint32_t psn = 0;                  // our QP's first send PSN
  CmMsg peer{};                      // the peer's REQ (passive) or REP (active)
  rdma_conn_param param{};           // ours, from rdma_connect or rdma_accept
  std::vector<uint8_t> private_data; // ours, to send

  std::mutex write_mu;  // one message at a time on sock

  std::mutex events_mu;
  std::condition_variable events_cv;
  int outstanding = 0;  // GUARDED_BY(events_mu): events queued or not acked
};

std::mutex g_reg_mu;
std::set<rdma_cm_id*> g_ids;                  // GUARDED_BY(g_reg_mu)
std::set<rdma_event_channel*> g_channels;     // GUARDED_BY(g_reg_mu)
std::set<ibv_context**> g_device_lists;       // GUARDED_BY(g_reg_mu)

CmId* Ours(rdma_cm_id* id) {
  std::lock_guard<std::mutex> l(g_reg_mu);
  return id != nullptr && g_ids.count(id) != 0 ? reinterpret_cast<CmId*>(id) : nullptr;
}

Channel* Ours(rdma_event_channel* ch) {
  std::lock_guard<std::mutex> l(g_reg_mu);
  return ch != nullptr && g_channels.count(ch) != 0 ? reinterpret_cast<Channel*>(ch) : nullptr;
}

static_assert(offsetof(CmId, id) == 0 && offsetof(Channel, ch) == 0 && offsetof(Event, ev) == 0);

int Fail(int err) {
  errno = err;
  return -1;
}

// --- event channels ---------------------------------------------------------------------------

void Push(CmId& owner, Event* e) {
  {
    std::lock_guard<std::mutex> l(owner.events_mu);
    ++owner.outstanding;
  }
  e->owner = &owner;
  Channel& ch = *owner.channel;
  std::lock_guard<std::mutex> l(ch.mu);
  ch.q.push_back(e);
  if (ch.q.size() == 1) {
    const uint64_t one = 1;
    (void)!write(ch.ch.fd, &one, sizeof one);
  }
}

// Clears the channel's fd once its queue is empty. REQUIRES: ch.mu held.
void ClearIfEmpty(Channel& ch) {
  if (!ch.q.empty()) return;
  pollfd p{ch.ch.fd, POLLIN, 0};
  uint64_t v;
  if (poll(&p, 1, 0) == 1) (void)!read(ch.ch.fd, &v, sizeof v);
}

void Done(CmId& owner) {
  std::lock_guard<std::mutex> l(owner.events_mu);
  --owner.outstanding;
  owner.events_cv.notify_all();
}

// Queues `type` for `id` (reported on id's channel, counted against `owner`).
void Report(CmId& id, rdma_cm_event_type type, int status, const CmMsg* msg = nullptr,
            const uint8_t* pdata = nullptr, uint8_t pdata_size = 0, CmId* listener = nullptr) {
  auto* e = new Event();
  e->ev.id = &id.id;
  e->ev.listen_id = listener != nullptr ? &listener->id : nullptr;
  e->ev.event = type;
  e->ev.status = status;
  if (msg != nullptr) {
    rdma_conn_param& c = e->ev.param.conn;
    // What the peer offers to answer is what we may ask, and the reverse.
    c.responder_resources = msg->initiator_depth;
    c.initiator_depth = msg->responder_resources;
    c.retry_count = msg->retry_count;
    c.rnr_retry_count = msg->rnr_retry_count;
    c.qp_num = msg->qpn;
    if (pdata_size > 0) {
      const size_t n = std::min<size_t>(msg->private_data_len, pdata_size);
      if (n > 0) std::memcpy(e->private_data, pdata, n);
      c.private_data = e->private_data;
      c.private_data_len = pdata_size;
    }
  }
  Log("event %d (status %d) for id %p", static_cast<int>(type), status,
      static_cast<void*>(&id.id));
  Push(listener != nullptr ? *listener : id, e);
}

// Reports DISCONNECTED once per connection.
void ReportDisconnect(CmId& id) {
  {
    std::lock_guard<std::mutex> l(id.mu);
    if (id.disconnect_reported) return;
    id.disconnect_reported = true;
    id.state = State::kDisconnected;
  }
  Report(id, RDMA_CM_EVENT_DISCONNECTED, 0);
}

// --- the side channel -------------------------------------------------------------------------

// Reads one message and its private data (within timeout_ms in all, or
// without limit for -1). False at EOF, on error, at the timeout or on a
// malformed message (the connection is then dropped).
bool ReadMsg(int fd, CmMsg* m, std::vector<uint8_t>* pdata, int timeout_ms = -1) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto read = [&](void* buf, size_t n) {
    if (timeout_ms < 0) return ReadFull(fd, buf, n);
    const auto spent =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    return spent < timeout_ms &&
           ReadFullWithin(fd, buf, n, timeout_ms - static_cast<int>(spent));
  };
  if (!read(m, sizeof *m)) return false;
  if (le32toh(m->magic) != kCmMagic || m->version != kCmVersion || m->type < kReq ||
      m->type > kDrep || m->reserved0 != 0 || m->reserved1 != 0) {
    Log("malformed side-channel message (type %u)", m->type);
    return false;
  }
  m->qpn = le32toh(m->qpn);
  m->psn = le32toh(m->psn);
  m->lid = le16toh(m->lid);
  m->reason = le32toh(m->reason);
  pdata->assign(m->private_data_len, 0);
  return m->private_data_len == 0 || read(pdata->data(), pdata->size());
}

// Sends a message of `type` with our QP's numbers and `pdata`.
bool SendMsg(CmId& id, CmType type, const void* pdata = nullptr, uint8_t len = 0,
             uint32_t reason = 0) {
  CmMsg m{};
  m.magic = htole32(kCmMagic);
  m.version = kCmVersion;
  m.type = type;
  m.private_data_len = len;
  m.responder_resources = id.param.responder_resources;
  m.initiator_depth = id.param.initiator_depth;
  m.retry_count = id.param.retry_count;
  m.rnr_retry_count = id.param.rnr_retry_count;
  if (type == kReq || type == kRep) {
    // Only these carry the QP's numbers: the program may have destroyed
    // its QP (fio does, with ibv_destroy_qp) before a late DREQ is answered.
    m.qpn = htole32(id.id.qp->qp_num);
    m.psn = htole32(id.psn);
    m.lid = htole16(LocalLid());
  }
  m.reason = htole32(reason);
  std::vector<uint8_t> buf(sizeof m + len);
  std::memcpy(buf.data(), &m, sizeof m);
  if (len > 0) std::memcpy(buf.data() + sizeof m, pdata, len);
  std::lock_guard<std::mutex> l(id.write_mu);
  size_t off = 0;
  while (off < buf.size()) {
    const ssize_t r = send(id.sock.get(), buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
    if (r > 0) {
      off += static_cast<size_t>(r);
    } else if (r < 0 && errno != EINTR) {
      return false;
    }
  }
  return true;
}

// --- queue pairs -------------------------------------------------------------------------------

// The QP to RTR and RTS towards the peer of `m`, as librdmacm moves it.
// Returns 0 or an errno.
int ConnectQp(CmId& id, const CmMsg& m) {
  ibv_qp* qp = id.id.qp;
  if (qp == nullptr) return 0;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_4096;
  a.dest_qp_num = m.qpn;
  a.rq_psn = m.psn;
  a.max_dest_rd_atomic = std::min<uint8_t>(id.param.responder_resources, kMaxRdAtomic);
  a.min_rnr_timer = 12;
  a.ah_attr.dlid = m.lid;
  a.ah_attr.port_num = 1;
  int mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
             IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  if (int rc = ibv_modify_qp(qp, &a, mask); rc != 0) return rc;
  a = ibv_qp_attr{};
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;
  // The active side's retry count serves both (accept ignores its own).
  a.retry_cnt = std::min<uint8_t>(m.type == kReq ? m.retry_count : id.param.retry_count, 7);
  a.rnr_retry = std::min<uint8_t>(id.param.rnr_retry_count, 7);
  a.sq_psn = id.psn;
  a.max_rd_atomic = std::min<uint8_t>(id.param.initiator_depth, kMaxRdAtomic);
  mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
         IBV_QP_MAX_QP_RD_ATOMIC;
  return ibv_modify_qp(qp, &a, mask);
}

void QpToError(CmId& id) {
  if (id.id.qp == nullptr) return;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  (void)ibv_modify_qp(id.id.qp, &a, IBV_QP_STATE);
}

// --- the reading thread of a connection --------------------------------------------------------

// What a message means for a connection's ID.
void OnMessage(CmId& id, const CmMsg& m, const std::vector<uint8_t>& pdata) {
  State state;
  {
    std::lock_guard<std::mutex> l(id.mu);
    state = id.state;
  }
  switch (m.type) {
    case kRep: {
      if (state != State::kConnecting) return;
      id.peer = m;
      if (const int rc = ConnectQp(id, m); rc != 0) {
        Log("QP to RTS failed: %s", strerror(rc));
        (void)SendMsg(id, kRej, nullptr, 0, kRejConsumer);
        {
          std::lock_guard<std::mutex> l(id.mu);
          id.state = State::kRejected;
        }
        Report(id, RDMA_CM_EVENT_CONNECT_ERROR, -rc);
        return;
      }
      {
        std::lock_guard<std::mutex> l(id.mu);
        id.state = State::kEstablished;
      }
      (void)SendMsg(id, kRtu);
      Report(id, RDMA_CM_EVENT_ESTABLISHED, 0, &m, pdata.data(), kRepPrivateData);
      return;
    }
    case kRtu:
      if (state != State::kAccepted) return;
      {
        std::lock_guard<std::mutex> l(id.mu);
        id.state = State::kEstablished;
      }
      Report(id, RDMA_CM_EVENT_ESTABLISHED, 0);
      return;
    case kRej:
      if (state != State::kConnecting && state != State::kAccepted) return;
      {
        std::lock_guard<std::mutex> l(id.mu);
        id.state = State::kRejected;
      }
      Report(id, RDMA_CM_EVENT_REJECTED, static_cast<int>(m.reason), &m, pdata.data(),
             kRejPrivateData);
      return;
    case kDreq:
      (void)SendMsg(id, kDrep);
      ReportDisconnect(id);
      return;
    case kDrep:
      ReportDisconnect(id);
      return;
    default:
      return;
  }
}

// The connection ended (peer closed, or error).
void OnEnd(CmId& id) {
  if (id.destroyed.load()) return;
  State state;
  {
    std::lock_guard<std::mutex> l(id.mu);
    state = id.state;
  }
  if (state == State::kEstablished) {
    ReportDisconnect(id);
  } else if (state == State::kConnecting || state == State::kAccepted) {
    {
      std::lock_guard<std::mutex> l(id.mu);
      id.state = State::kRejected;
    }
    Report(id, RDMA_CM_EVENT_CONNECT_ERROR, -ECONNRESET);
  }
}

void ReadLoop(CmId* id) {
  CmMsg m{};
  std::vector<uint8_t> pdata;
  while (ReadMsg(id->sock.get(), &m, &pdata)) {
    if (id->destroyed.load()) return;
    OnMessage(*id, m, pdata);
  }
  OnEnd(*id);
}

// Connects the active ID's socket to its destination (non-blocking, with a
// timeout). Returns 0 or an errno.
int TcpConnect(CmId& id) {
  const int fd = id.sock.get();
  const int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int err = 0;
  if (connect(fd, &id.id.route.addr.dst_addr, sizeof(sockaddr_in)) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int r;
      do {
        r = poll(&p, 1, kConnectTimeoutMs);
      } while (r < 0 && errno == EINTR);
      socklen_t len = sizeof err;
      if (r == 0) {
        err = ETIMEDOUT;
      } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
    }
  }
  fcntl(fd, F_SETFL, flags);
  return err;
}

void ConnectThread(CmId* id) {
  const int err = TcpConnect(*id);
  if (id->destroyed.load()) return;
  if (err != 0 || !SendMsg(*id, kReq, id->private_data.data(),
                           static_cast<uint8_t>(id->private_data.size()))) {
    Log("no listener reached: %s", strerror(err != 0 ? err : errno));
    {
      std::lock_guard<std::mutex> l(id->mu);
      id->state = State::kRejected;
    }
    // A real CM answers a REQ for no listener with REJ (invalid service
    // ID); a peer that does not answer at all is unreachable.
    if (err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH) {
      Report(*id, RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT);
    } else {
      Report(*id, RDMA_CM_EVENT_REJECTED, kRejInvalidServiceId);
    }
    return;
  }
  ReadLoop(id);
}

// --- listening ---------------------------------------------------------------------------------

// A new passive ID for the connection `fd` whose REQ is `m`.
CmId* NewChild(CmId& listener, UniqueFd fd, const CmMsg& m) {
  auto* c = new CmId();
  c->channel = listener.channel;
  c->id.channel = listener.id.channel;
  c->id.context = listener.id.context;
  c->id.ps = listener.id.ps;
  c->id.qp_type = listener.id.qp_type;
  c->id.verbs = Context();
  c->id.port_num = 1;
  socklen_t len = sizeof c->id.route.addr.src_storage;
  getsockname(fd.get(), &c->id.route.addr.src_addr, &len);
  len = sizeof c->id.route.addr.dst_storage;
  getpeername(fd.get(), &c->id.route.addr.dst_addr, &len);
  c->sock = std::move(fd);
  c->state = State::kRequested;
  c->peer = m;
  c->psn = RandomPsn();
  std::lock_guard<std::mutex> l(g_reg_mu);
  g_ids.insert(&c->id);
  return c;
}

// Connections accepted but still in their request, at most this many at
// once: each has a thread for up to kRequestTimeoutMs, and connecting costs
// any local user nothing.
constexpr size_t kMaxPendingRequests = 64;

// Reads the request of a new connection to listener `l` and reports it.
void TakeRequest(CmId* l, UniqueFd conn) {
  CmMsg m{};
  std::vector<uint8_t> pdata;
  if (!ReadMsg(conn.get(), &m, &pdata, kRequestTimeoutMs) || m.type != kReq) return;
  if (l->destroyed.load()) return;
  CmId* c = NewChild(*l, std::move(conn), m);
  c->thread = std::thread(ReadLoop, c);
  Report(*c, RDMA_CM_EVENT_CONNECT_REQUEST, 0, &m, pdata.data(), kReqPrivateData, l);
}

// The listener's thread: accepts, and hands each connection's request to a
// thread of its own, so that a peer that connects and stalls (or trickles
// half a request) keeps nobody else out. Those threads are joined before
// this one returns (Retire joins this one).
void AcceptLoop(CmId* l) {
  struct Pending {
    std::thread thread;
    int fd;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Pending> pending;
  auto reap = [&pending](bool all) {
    for (auto it = pending.begin(); it != pending.end();) {
      if (all || it->done->load()) {
        if (all && !it->done->load()) shutdown(it->fd, SHUT_RDWR);
        it->thread.join();
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
  };
  for (;;) {
    const int fd = accept4(l->sock.get(), nullptr, nullptr, SOCK_CLOEXEC);
    reap(false);
    if (l->destroyed.load()) {
      if (fd >= 0) close(fd);
      break;
    }
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      break;
    }
    if (pending.size() >= kMaxPendingRequests) {
      close(fd);
      continue;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread t([l, fd, done] {
      TakeRequest(l, UniqueFd(fd));
      done->store(true);
    });
    pending.push_back(Pending{std::move(t), fd, std::move(done)});
  }
  reap(true);
}

// --- IDs ---------------------------------------------------------------------------------------

// A TCP socket bound to `addr` (IPv4). Returns it, or invalid with errno.
UniqueFd BoundSocket(const sockaddr* addr) {
  if (addr == nullptr || addr->sa_family != AF_INET) {
    errno = EAFNOSUPPORT;
    return UniqueFd();
  }
  UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return s;
  const int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s.get(), addr, sizeof(sockaddr_in)) != 0) return UniqueFd();
  return s;
}

// Binds `id` to `addr` (its port 0: one of the system's). Returns 0 or an errno.
int Bind(CmId& id, const sockaddr* addr) {
  UniqueFd s = BoundSocket(addr);
  if (!s.valid()) return errno;
  socklen_t len = sizeof id.id.route.addr.src_storage;
  getsockname(s.get(), &id.id.route.addr.src_addr, &len);
  id.sock = std::move(s);
  id.state = State::kBound;
  // A wildcard address binds no device, as with librdmacm.
  if (reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr != htonl(INADDR_ANY)) {
    id.id.verbs = Context();
    id.id.port_num = 1;
  }
  return 0;
}

// The local address packets to `dst` leave from, or an errno: the QP links
// of leasefs0 are unix sockets, so the peer must be on this machine.
int SourceFor(const sockaddr_in& dst, sockaddr_in* src) {
  UniqueFd probe(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return errno;
  sockaddr_in local = dst;
  local.sin_port = 0;
  if (bind(probe.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    return errno == EADDRNOTAVAIL ? EHOSTUNREACH : errno;
  }
  *src = sockaddr_in{};
  src->sin_family = AF_INET;
  src->sin_addr = dst.sin_addr;
  return 0;
}

int ResolveAddr(CmId& id, const sockaddr* src, const sockaddr* dst) {
  if (dst == nullptr || dst->sa_family != AF_INET) return Fail(EAFNOSUPPORT);
  std::lock_guard<std::mutex> l(id.mu);
  if (id.state != State::kIdle && id.state != State::kBound) return Fail(EINVAL);
  const auto& din = *reinterpret_cast<const sockaddr_in*>(dst);
  std::memcpy(&id.id.route.addr.dst_sin, &din, sizeof din);
  int status = 0;
  if (id.state == State::kIdle) {
    sockaddr_in from{};
    if (src != nullptr) {
      if (src->sa_family != AF_INET) return Fail(EAFNOSUPPORT);
      std::memcpy(&from, src, sizeof from);
    } else {
      status = SourceFor(din, &from);
    }
    if (status == 0) {
      if (int rc = Bind(id, reinterpret_cast<sockaddr*>(&from)); rc != 0) return Fail(rc);
    }
  }
  id.id.verbs = Context();
  id.id.port_num = 1;
  ibv_query_gid(id.id.verbs, 1, 0, &id.id.route.addr.addr.ibaddr.sgid);
  id.id.route.addr.addr.ibaddr.pkey = htobe16(0xFFFF);
  if (status == 0) id.state = State::kAddrResolved;
  Report(id, status == 0 ? RDMA_CM_EVENT_ADDR_RESOLVED : RDMA_CM_EVENT_ADDR_ERROR, -status);
  return 0;
}

// Stops the ID's thread and its connection; waits for its events' acks.
void Retire(CmId& id) {
  id.destroyed.store(true);
  if (id.sock.valid()) shutdown(id.sock.get(), SHUT_RDWR);
  if (id.thread.joinable()) id.thread.join();
  Channel& ch = *id.channel;
  std::vector<Event*> dropped;
  {
    std::lock_guard<std::mutex> l(ch.mu);
    for (auto it = ch.q.begin(); it != ch.q.end();) {
      if ((*it)->owner == &id) {
        dropped.push_back(*it);
        it = ch.q.erase(it);
      } else {
        ++it;
      }
    }
    ClearIfEmpty(ch);
  }
  for (Event* e : dropped) {
    // A connection request nobody took: its ID goes with it.
    if (e->ev.event == RDMA_CM_EVENT_CONNECT_REQUEST && e->ev.id != &id.id) {
      CmId* child = reinterpret_cast<CmId*>(e->ev.id);
      {
        std::lock_guard<std::mutex> l(g_reg_mu);
        g_ids.erase(&child->id);
      }
      Retire(*child);
      delete child;
    }
    delete e;
    Done(id);
  }
  std::unique_lock<std::mutex> l(id.events_mu);
  id.events_cv.wait(l, [&] { return id.outstanding == 0; });
}

int CreateQp(CmId& id, ibv_pd* pd, ibv_qp_init_attr* attr) {
  if (id.id.verbs == nullptr || attr == nullptr) return Fail(EINVAL);
  if (id.id.qp != nullptr) return Fail(EINVAL);
  if (pd == nullptr) pd = DefaultPd();
  if (pd == nullptr || pd->context != id.id.verbs) return Fail(EINVAL);
  ibv_qp_init_attr a = *attr;
  ibv_comp_channel* sch = nullptr;
  ibv_comp_channel* rch = nullptr;
  ibv_cq* scq = nullptr;
  ibv_cq* rcq = nullptr;
  if (a.send_cq == nullptr || a.recv_cq == nullptr) {
    // As librdmacm: a channel and a CQ each for the missing ones.
    sch = ibv_create_comp_channel(id.id.verbs);
    rch = ibv_create_comp_channel(id.id.verbs);
    if (sch != nullptr && a.send_cq == nullptr) {
      scq = ibv_create_cq(id.id.verbs, static_cast<int>(std::max(a.cap.max_send_wr, 1u)),
                          &id.id, sch, 0);
    }
    if (rch != nullptr && a.recv_cq == nullptr) {
      rcq = ibv_create_cq(id.id.verbs, static_cast<int>(std::max(a.cap.max_recv_wr, 1u)),
                          &id.id, rch, 0);
    }
    if (a.send_cq == nullptr) a.send_cq = scq;
    if (a.recv_cq == nullptr) a.recv_cq = rcq;
  }
  errno = 0;
  ibv_qp* qp = a.send_cq != nullptr && a.recv_cq != nullptr ? ibv_create_qp(pd, &a) : nullptr;
  int err = qp == nullptr ? (errno != 0 ? errno : ENOMEM) : 0;
  if (qp != nullptr) {
    ibv_qp_attr ia{};
    ia.qp_state = IBV_QPS_INIT;
    ia.pkey_index = 0;
    ia.port_num = 1;
    ia.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    err = ibv_modify_qp(qp, &ia, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                     IBV_QP_ACCESS_FLAGS);
    if (err != 0) {
      ibv_destroy_qp(qp);
      qp = nullptr;
    }
  }
  if (qp == nullptr) {
    if (scq != nullptr) ibv_destroy_cq(scq);
    if (rcq != nullptr) ibv_destroy_cq(rcq);
    if (sch != nullptr) ibv_destroy_comp_channel(sch);
    if (rch != nullptr) ibv_destroy_comp_channel(rch);
    return Fail(err);
  }
  attr->cap = a.cap;
  id.own_cqs = scq != nullptr || rcq != nullptr;
  id.id.send_cq_channel = sch;
  id.id.recv_cq_channel = rch;
  id.id.send_cq = a.send_cq;
  id.id.recv_cq = a.recv_cq;
  id.id.pd = pd;
  id.id.qp = qp;
  id.id.qp_type = IBV_QPT_RC;
  if (id.psn == 0) id.psn = RandomPsn();
  Log("QP %u on id %p (INIT)", qp->qp_num, static_cast<void*>(&id.id));
  return 0;
}

void DestroyQp(CmId& id) {
  if (id.id.qp != nullptr) ibv_destroy_qp(id.id.qp);
  id.id.qp = nullptr;
  if (id.own_cqs) {
    // Only the CQs rdma_create_qp made (a program's own it destroys).
    if (id.id.send_cq != nullptr && id.id.send_cq->cq_context == &id.id) {
      ibv_destroy_cq(id.id.send_cq);
    }
    if (id.id.recv_cq != nullptr && id.id.recv_cq != id.id.send_cq &&
        id.id.recv_cq->cq_context == &id.id) {
      ibv_destroy_cq(id.id.recv_cq);
    }
    if (id.id.send_cq_channel != nullptr) ibv_destroy_comp_channel(id.id.send_cq_channel);
    if (id.id.recv_cq_channel != nullptr) ibv_destroy_comp_channel(id.id.recv_cq_channel);
  }
  id.own_cqs = false;
  id.id.send_cq = id.id.recv_cq = nullptr;
  id.id.send_cq_channel = id.id.recv_cq_channel = nullptr;
}

// Copies the private data of `p` (at most `max` bytes). Returns 0 or EINVAL.
int TakeParam(CmId& id, const rdma_conn_param* p, uint8_t max) {
  id.param = rdma_conn_param{};
  id.private_data.clear();
  if (p == nullptr) {
    id.param.responder_resources = id.param.initiator_depth = 1;
    id.param.retry_count = id.param.rnr_retry_count = 7;
    return 0;
  }
  if (p->private_data_len > max || (p->private_data_len > 0 && p->private_data == nullptr)) {
    return EINVAL;
  }
  id.param = *p;
  id.param.private_data = nullptr;
  const auto* d = static_cast<const uint8_t*>(p->private_data);
  id.private_data.assign(d, d + p->private_data_len);
  return 0;
}

}  // namespace
}  // namespace leasefs::run::verbs

using namespace leasefs::run::verbs;  // NOLINT: the exported C functions below

#define LEASEFS_EXPORT extern "C" __attribute__((visibility("default")))

LEASEFS_EXPORT rdma_event_channel* rdma_create_event_channel() {
  if (!Emulated()) {
    static const auto real = LEASEFS_REAL(rdma_create_event_channel);
    if (real == nullptr) {
      errno = ENOSYS;
      return nullptr;
    }
    return real();
  }
  const int fd = eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return nullptr;
  auto* ch = new Channel();
  ch->ch.fd = fd;
  std::lock_guard<std::mutex> l(g_reg_mu);
  g_channels.insert(&ch->ch);
  return &ch->ch;
}

LEASEFS_EXPORT void rdma_destroy_event_channel(rdma_event_channel* channel) {
  Channel* ch = Ours(channel);
  if (ch == nullptr) {
    if (auto real = LEASEFS_REAL(rdma_destroy_event_channel)) real(channel);
    return;
  }
  {
    std::lock_guard<std::mutex> l(g_reg_mu);
    g_channels.erase(channel);
  }
  close(ch->ch.fd);
  delete ch;
}

LEASEFS_EXPORT int rdma_create_id(rdma_event_channel* channel, rdma_cm_id** id, void* context,
                                  rdma_port_space ps) {
  Channel* ch = Ours(channel);
  if (ch == nullptr) {
    // Without a channel (synchronous use) an emulated ID is not offered.
    if (channel == nullptr && Emulated()) return Fail(EOPNOTSUPP);
    LEASEFS_FORWARD(rdma_create_id, channel, id, context, ps);
  }
  if (id == nullptr) return Fail(EINVAL);
  if (ps != RDMA_PS_TCP && ps != RDMA_PS_IB) return Fail(EOPNOTSUPP);  // RC only
  auto* c = new CmId();
  c->channel = ch;
  c->id.channel = channel;
  c->id.context = context;
  c->id.ps = ps;
  c->id.qp_type = IBV_QPT_RC;
  {
    std::lock_guard<std::mutex> l(g_reg_mu);
    g_ids.insert(&c->id);
  }
  *id = &c->id;
  return 0;
}

LEASEFS_EXPORT int rdma_destroy_id(rdma_cm_id* id) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_destroy_id, id);
  {
    std::lock_guard<std::mutex> l(g_reg_mu);
    g_ids.erase(id);
  }
  Retire(*c);
  delete c;
  return 0;
}

LEASEFS_EXPORT int rdma_bind_addr(rdma_cm_id* id, sockaddr* addr) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_bind_addr, id, addr);
  std::lock_guard<std::mutex> l(c->mu);
  if (c->state != State::kIdle) return Fail(EINVAL);
  const int rc = Bind(*c, addr);
  return rc == 0 ? 0 : Fail(rc);
}

LEASEFS_EXPORT int rdma_listen(rdma_cm_id* id, int backlog) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_listen, id, backlog);
  std::lock_guard<std::mutex> l(c->mu);
  if (c->state != State::kBound) return Fail(EINVAL);
  if (listen(c->sock.get(), backlog > 0 ? backlog : SOMAXCONN) != 0) return -1;
  c->state = State::kListening;
  c->thread = std::thread(AcceptLoop, c);
  Log("listening on port %u", ntohs(c->id.route.addr.src_sin.sin_port));
  return 0;
}

LEASEFS_EXPORT int rdma_resolve_addr(rdma_cm_id* id, sockaddr* src_addr, sockaddr* dst_addr,
                                     int timeout_ms) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_resolve_addr, id, src_addr, dst_addr, timeout_ms);
  return ResolveAddr(*c, src_addr, dst_addr);
}

LEASEFS_EXPORT int rdma_resolve_route(rdma_cm_id* id, int timeout_ms) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_resolve_route, id, timeout_ms);
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->state != State::kAddrResolved) return Fail(EINVAL);
    c->state = State::kRouteResolved;
  }
  Report(*c, RDMA_CM_EVENT_ROUTE_RESOLVED, 0);
  return 0;
}

LEASEFS_EXPORT int rdma_create_qp(rdma_cm_id* id, ibv_pd* pd, ibv_qp_init_attr* attr) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_create_qp, id, pd, attr);
  return CreateQp(*c, pd, attr);
}

LEASEFS_EXPORT int rdma_create_qp_ex(rdma_cm_id* id, ibv_qp_init_attr_ex* attr) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_create_qp_ex, id, attr);
  // The classic attributes only: leasefs0 has no extended QPs.
  if (attr == nullptr || (attr->comp_mask & ~IBV_QP_INIT_ATTR_PD) != 0) return Fail(EOPNOTSUPP);
  ibv_qp_init_attr a{};
  a.qp_context = attr->qp_context;
  a.send_cq = attr->send_cq;
  a.recv_cq = attr->recv_cq;
  a.srq = attr->srq;
  a.cap = attr->cap;
  a.qp_type = attr->qp_type;
  a.sq_sig_all = attr->sq_sig_all;
  const int rc = CreateQp(*c, (attr->comp_mask & IBV_QP_INIT_ATTR_PD) != 0 ? attr->pd : nullptr,
                          &a);
  if (rc == 0) attr->cap = a.cap;
  return rc;
}

LEASEFS_EXPORT void rdma_destroy_qp(rdma_cm_id* id) {
  CmId* c = Ours(id);
  if (c == nullptr) {
    if (auto real = LEASEFS_REAL(rdma_destroy_qp)) real(id);
    return;
  }
  DestroyQp(*c);
}

LEASEFS_EXPORT int rdma_connect(rdma_cm_id* id, rdma_conn_param* conn_param) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_connect, id, conn_param);
  std::lock_guard<std::mutex> l(c->mu);
  if (c->state != State::kRouteResolved) return Fail(EINVAL);
  // The QP's number travels in REQ: an ID without a QP (conn_param's
  // qp_num, rdma_establish) is not offered.
  if (c->id.qp == nullptr) return Fail(EOPNOTSUPP);
  if (int rc = TakeParam(*c, conn_param, kReqPrivateData); rc != 0) return Fail(rc);
  c->state = State::kConnecting;
  c->thread = std::thread(ConnectThread, c);
  return 0;
}

LEASEFS_EXPORT int rdma_accept(rdma_cm_id* id, rdma_conn_param* conn_param) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_accept, id, conn_param);
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->state != State::kRequested) return Fail(EINVAL);
    if (c->id.qp == nullptr) return Fail(EOPNOTSUPP);
    if (int rc = TakeParam(*c, conn_param, kRepPrivateData); rc != 0) return Fail(rc);
    if (conn_param == nullptr) {
      // librdmacm's defaults: answer what the peer asks for.
      c->param.responder_resources = std::min<uint8_t>(c->peer.initiator_depth, kMaxRdAtomic);
      c->param.initiator_depth = std::min<uint8_t>(c->peer.responder_resources, kMaxRdAtomic);
    }
    if (const int rc = ConnectQp(*c, c->peer); rc != 0) return Fail(rc);
    c->state = State::kAccepted;
  }
  if (!SendMsg(*c, kRep, c->private_data.data(), static_cast<uint8_t>(c->private_data.size()))) {
    // The peer is gone: the reading thread reports it.
    Log("REP not sent: %s", strerror(errno));
  }
  return 0;
}

LEASEFS_EXPORT int rdma_reject(rdma_cm_id* id, const void* private_data,
                               uint8_t private_data_len) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_reject, id, private_data, private_data_len);
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->state != State::kRequested) return Fail(EINVAL);
    if (private_data_len > kRejPrivateData) return Fail(EINVAL);
    c->state = State::kRejected;
  }
  (void)SendMsg(*c, kRej, private_data, private_data_len, kRejConsumer);
  shutdown(c->sock.get(), SHUT_WR);
  return 0;
}

LEASEFS_EXPORT int rdma_disconnect(rdma_cm_id* id) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_disconnect, id);
  State state;
  {
    std::lock_guard<std::mutex> l(c->mu);
    state = c->state;
  }
  if (state != State::kEstablished && state != State::kDisconnected &&
      state != State::kAccepted && state != State::kConnecting) {
    return Fail(EINVAL);
  }
  // As librdmacm on IB: the QP to the error state first.
  QpToError(*c);
  if (state != State::kDisconnected) (void)SendMsg(*c, kDreq);
  return 0;
}

LEASEFS_EXPORT int rdma_get_cm_event(rdma_event_channel* channel, rdma_cm_event** event) {
  Channel* ch = Ours(channel);
  if (ch == nullptr) LEASEFS_FORWARD(rdma_get_cm_event, channel, event);
  if (event == nullptr) return Fail(EINVAL);
  for (;;) {
    {
      std::lock_guard<std::mutex> l(ch->mu);
      if (!ch->q.empty()) {
        Event* e = ch->q.front();
        ch->q.pop_front();
        ClearIfEmpty(*ch);
        *event = &e->ev;
        return 0;
      }
    }
    if ((fcntl(ch->ch.fd, F_GETFL) & O_NONBLOCK) != 0) return Fail(EAGAIN);
    pollfd p{ch->ch.fd, POLLIN, 0};
    if (poll(&p, 1, -1) < 0 && errno != EINTR) return -1;
  }
}

LEASEFS_EXPORT int rdma_ack_cm_event(rdma_cm_event* event) {
  if (event == nullptr) return Fail(EINVAL);
  // Ours are events of our IDs; a CONNECT_REQUEST's listener is ours too.
  if (Ours(event->id) == nullptr && Ours(event->listen_id) == nullptr) {
    LEASEFS_FORWARD(rdma_ack_cm_event, event);
  }
  auto* e = reinterpret_cast<Event*>(event);
  CmId* owner = e->owner;
  delete e;
  Done(*owner);
  return 0;
}

LEASEFS_EXPORT int rdma_set_option(rdma_cm_id* id, int level, int optname, void* optval,
                                   size_t optlen) {
  CmId* c = Ours(id);
  if (c == nullptr) LEASEFS_FORWARD(rdma_set_option, id, level, optname, optval, optlen);
  // The ID options (TOS, REUSEADDR, AFONLY, ACK_TIMEOUT) change nothing
  // here; a path record is not taken.
  return level == RDMA_OPTION_ID ? 0 : Fail(ENOSYS);
}

// What the emulation does not offer, for its IDs; librdmacm's for others.
LEASEFS_EXPORT int rdma_migrate_id(rdma_cm_id* id, rdma_event_channel* channel) {
  if (Ours(id) != nullptr) return Fail(EOPNOTSUPP);
  LEASEFS_FORWARD(rdma_migrate_id, id, channel);
}

LEASEFS_EXPORT int rdma_get_request(rdma_cm_id* listen, rdma_cm_id** id) {
  if (Ours(listen) != nullptr) return Fail(EOPNOTSUPP);
  LEASEFS_FORWARD(rdma_get_request, listen, id);
}

LEASEFS_EXPORT int rdma_establish(rdma_cm_id* id) {
  if (Ours(id) != nullptr) return Fail(EOPNOTSUPP);
  LEASEFS_FORWARD(rdma_establish, id);
}

LEASEFS_EXPORT int rdma_notify(rdma_cm_id* id, ibv_event_type event) {
  if (Ours(id) != nullptr) return 0;  // connections are established by RTU alone
  LEASEFS_FORWARD(rdma_notify, id, event);
}

LEASEFS_EXPORT int rdma_init_qp_attr(rdma_cm_id* id, ibv_qp_attr* qp_attr, int* qp_attr_mask) {
  if (Ours(id) != nullptr) return Fail(EOPNOTSUPP);
  LEASEFS_FORWARD(rdma_init_qp_attr, id, qp_attr, qp_attr_mask);
}

LEASEFS_EXPORT int rdma_join_multicast(rdma_cm_id* id, sockaddr* addr, void* context) {
  if (Ours(id) != nullptr) return Fail(EOPNOTSUPP);  // no UD
  LEASEFS_FORWARD(rdma_join_multicast, id, addr, context);
}

LEASEFS_EXPORT int rdma_leave_multicast(rdma_cm_id* id, sockaddr* addr) {
  if (Ours(id) != nullptr) return Fail(EOPNOTSUPP);
  LEASEFS_FORWARD(rdma_leave_multicast, id, addr);
}

LEASEFS_EXPORT ibv_context** rdma_get_devices(int* num_devices) {
  if (!Emulated()) {
    static const auto real = LEASEFS_REAL(rdma_get_devices);
    if (real == nullptr) {
      errno = ENOSYS;
      return nullptr;
    }
    return real(num_devices);
  }
  auto** list = static_cast<ibv_context**>(calloc(2, sizeof(ibv_context*)));
  if (list == nullptr) return nullptr;
  list[0] = Context();
  if (num_devices != nullptr) *num_devices = list[0] != nullptr ? 1 : 0;
  std::lock_guard<std::mutex> l(g_reg_mu);
  g_device_lists.insert(list);
  return list;
}

LEASEFS_EXPORT void rdma_free_devices(ibv_context** list) {
  {
    std::lock_guard<std::mutex> l(g_reg_mu);
    if (g_device_lists.erase(list) != 0) {
      free(list);
      return;
    }
  }
  if (auto real = LEASEFS_REAL(rdma_free_devices)) real(list);
}

// rdma_getaddrinfo: librdmacm's asks the kernel's rdma_cm first; here the
// system's resolver answers, IPv4 only, for RC over the TCP port space.
// The result is freed by librdmacm's rdma_freeaddrinfo (malloc'd fields).
LEASEFS_EXPORT int rdma_getaddrinfo(const char* node, const char* service,
                                    const rdma_addrinfo* hints, rdma_addrinfo** res) {
  if (!Emulated()) LEASEFS_FORWARD(rdma_getaddrinfo, node, service, hints, res);
  const bool passive = hints != nullptr && (hints->ai_flags & RAI_PASSIVE) != 0;
  addrinfo h{};
  h.ai_family = AF_INET;
  h.ai_socktype = SOCK_STREAM;
  h.ai_flags = (passive ? AI_PASSIVE : 0) |
               (hints != nullptr && (hints->ai_flags & RAI_NUMERICHOST) != 0 ? AI_NUMERICHOST : 0);
  addrinfo* ai = nullptr;
  if (const int rc = getaddrinfo(node, service, &h, &ai); rc != 0) return rc;
  auto* r = static_cast<rdma_addrinfo*>(calloc(1, sizeof(rdma_addrinfo)));
  auto* sa = static_cast<sockaddr*>(calloc(1, sizeof(sockaddr_in)));
  if (r == nullptr || sa == nullptr) {
    free(r);
    free(sa);
    freeaddrinfo(ai);
    return Fail(ENOMEM);
  }
  std::memcpy(sa, ai->ai_addr, sizeof(sockaddr_in));
  freeaddrinfo(ai);
  r->ai_flags = hints != nullptr ? hints->ai_flags : 0;
  r->ai_family = AF_INET;
  r->ai_qp_type = IBV_QPT_RC;
  r->ai_port_space = hints != nullptr && hints->ai_port_space != 0 ? hints->ai_port_space
                                                                    : RDMA_PS_TCP;
  if (passive) {
    r->ai_src_addr = sa;
    r->ai_src_len = sizeof(sockaddr_in);
  } else {
    r->ai_dst_addr = sa;
    r->ai_dst_len = sizeof(sockaddr_in);
  }
  *res = r;
  return 0;
}
