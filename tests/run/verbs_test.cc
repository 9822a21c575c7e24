// The emulated device leasefs0 against libibverbs' documented behaviour
// (docs/verbs.md): run under leasefs-run (meson runs `leasefs-run
// verbs_test`), in one process, two RC queue pairs connected to each other
// through the device's QP link and soft NIC. Exact completion statuses,
// opcodes, byte counts, immediates, errno values and bytes.
#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

namespace {

ibv_context* OpenSoft() {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  REQUIRE(list != nullptr);
  ibv_context* ctx = nullptr;
  for (int i = 0; i < n; ++i) {
    if (std::strcmp(ibv_get_device_name(list[i]), "leasefs0") == 0) ctx = ibv_open_device(list[i]);
  }
  ibv_free_device_list(list);
  REQUIRE(ctx != nullptr);
  return ctx;
}

// One buffer and its MR.
struct Buf {
  std::vector<uint8_t> bytes;
  ibv_mr* mr = nullptr;
  Buf(ibv_pd* pd, size_t n, int access) : bytes(n) {
    mr = ibv_reg_mr(pd, bytes.data(), n, access);
    REQUIRE(mr != nullptr);
  }
  ~Buf() { CHECK(ibv_dereg_mr(mr) == 0); }
  uintptr_t addr(size_t at = 0) { return reinterpret_cast<uintptr_t>(bytes.data() + at); }
};

constexpr int kAll = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

// Two QPs, A and B, connected to each other, each with its own CQ.
struct Pair {
  ibv_context* ctx = OpenSoft();
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ibv_cq* cq_a = ibv_create_cq(ctx, 256, nullptr, nullptr, 0);
  ibv_cq* cq_b = ibv_create_cq(ctx, 256, nullptr, nullptr, 0);
  ibv_qp* a = nullptr;
  ibv_qp* b = nullptr;
  uint16_t lid = 0;

  explicit Pair(uint32_t send_wr = 64) {
    REQUIRE(pd != nullptr);
    REQUIRE(cq_a != nullptr);
    REQUIRE(cq_b != nullptr);
    ibv_port_attr port{};
    REQUIRE(ibv_query_port(ctx, 1, &port) == 0);
    lid = port.lid;
    a = Make(cq_a, send_wr);
    b = Make(cq_b, send_wr);
    Connect(a, b->qp_num);
    Connect(b, a->qp_num);
  }
  ~Pair() {
    CHECK(ibv_destroy_qp(a) == 0);
    CHECK(ibv_destroy_qp(b) == 0);
    CHECK(ibv_destroy_cq(cq_a) == 0);
    CHECK(ibv_destroy_cq(cq_b) == 0);
    CHECK(ibv_dealloc_pd(pd) == 0);
    CHECK(ibv_close_device(ctx) == 0);
  }
  ibv_qp* Make(ibv_cq* cq, uint32_t send_wr) {
    ibv_qp_init_attr init{};
    init.send_cq = cq;
    init.recv_cq = cq;
    init.cap.max_send_wr = send_wr;
    init.cap.max_recv_wr = 64;
    init.cap.max_send_sge = 4;
    init.cap.max_recv_sge = 4;
    init.qp_type = IBV_QPT_RC;
    ibv_qp* qp = ibv_create_qp(pd, &init);
    REQUIRE(qp != nullptr);
    return qp;
  }
  void Connect(ibv_qp* qp, uint32_t dest) {
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_INIT;
    at.port_num = 1;
    at.qp_access_flags = kAll;
    REQUIRE(ibv_modify_qp(qp, &at,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == 0);
    at = {};
    at.qp_state = IBV_QPS_RTR;
    at.path_mtu = IBV_MTU_4096;
    at.dest_qp_num = dest;
    at.max_dest_rd_atomic = 1;
    at.min_rnr_timer = 12;
    at.ah_attr.dlid = lid;
    at.ah_attr.port_num = 1;
    REQUIRE(ibv_modify_qp(qp, &at,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) ==
            0);
    at = {};
    at.qp_state = IBV_QPS_RTS;
    at.timeout = 14;
    at.retry_cnt = 7;
    at.rnr_retry = 7;
    at.max_rd_atomic = 1;
    REQUIRE(ibv_modify_qp(qp, &at,
                          IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                              IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC) == 0);
  }
};

// Polls `cq` until `n` completions came (at most 10 s).
std::vector<ibv_wc> Poll(ibv_cq* cq, int n) {
  std::vector<ibv_wc> out;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (static_cast<int>(out.size()) < n && std::chrono::steady_clock::now() < end) {
    ibv_wc wc[16];
    const int k = ibv_poll_cq(cq, std::min(16, n - static_cast<int>(out.size())), wc);
    REQUIRE(k >= 0);
    out.insert(out.end(), wc, wc + k);
  }
  REQUIRE(static_cast<int>(out.size()) == n);
  return out;
}

// Nothing more on `cq` for a while.
void NoMore(ibv_cq* cq) {
  ibv_wc wc;
  for (int i = 0; i < 50; ++i) {
    REQUIRE(ibv_poll_cq(cq, 1, &wc) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int Post(ibv_qp* qp, ibv_wr_opcode op, std::vector<ibv_sge> sge, uint64_t wr_id, bool signaled,
         uint64_t raddr = 0, uint32_t rkey = 0, uint32_t imm = 0) {
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = op;
  wr.sg_list = sge.data();
  wr.num_sge = static_cast<int>(sge.size());
  wr.send_flags = signaled ? IBV_SEND_SIGNALED : 0;
  wr.wr.rdma.remote_addr = raddr;
  wr.wr.rdma.rkey = rkey;
  wr.imm_data = htobe32(imm);
  ibv_send_wr* bad = nullptr;
  const int rc = ibv_post_send(qp, &wr, &bad);
  if (rc != 0) CHECK(bad == &wr);
  return rc;
}

void PostRecv(ibv_qp* qp, std::vector<ibv_sge> sge, uint64_t wr_id) {
  ibv_recv_wr wr{};
  wr.wr_id = wr_id;
  wr.sg_list = sge.data();
  wr.num_sge = static_cast<int>(sge.size());
  ibv_recv_wr* bad = nullptr;
  REQUIRE(ibv_post_recv(qp, &wr, &bad) == 0);
}

void Fill(Buf& b, uint8_t seed) {
  for (size_t i = 0; i < b.bytes.size(); ++i) b.bytes[i] = static_cast<uint8_t>(i * 7 + seed);
}

TEST_CASE("leasefs0: what it says of itself") {
  ibv_context* ctx = OpenSoft();
  ibv_device_attr d{};
  REQUIRE(ibv_query_device(ctx, &d) == 0);
  CHECK(d.vendor_id == 0);
  CHECK(d.max_qp_wr == 16384);
  CHECK(d.max_sge == 16);
  CHECK(d.atomic_cap == IBV_ATOMIC_NONE);
  CHECK(d.phys_port_cnt == 1);
  ibv_port_attr p{};
  REQUIRE(ibv_query_port(ctx, 1, &p) == 0);
  CHECK(p.state == IBV_PORT_ACTIVE);
  CHECK(p.link_layer == IBV_LINK_LAYER_INFINIBAND);
  CHECK(p.active_mtu == IBV_MTU_4096);
  CHECK(p.max_msg_sz == 8u << 20);
  CHECK(p.lid != 0);
  CHECK(ibv_query_port(ctx, 2, &p) == EINVAL);
  ibv_gid gid{};
  REQUIRE(ibv_query_gid(ctx, 1, 0, &gid) == 0);
  CHECK(gid.raw[0] == 0xfe);
  CHECK(gid.raw[1] == 0x80);
  CHECK(ibv_query_gid(ctx, 1, 1, &gid) == EINVAL);
  __be16 pkey = 0;
  CHECK(ibv_query_pkey(ctx, 1, 0, &pkey) == 0);
  CHECK(pkey == htobe16(0xffff));
  CHECK(ibv_close_device(ctx) == 0);
}

TEST_CASE("leasefs0: a WRITE lands before the SEND posted after it is received") {
  Pair q;
  Buf src(q.pd, 65536, kAll), dst(q.pd, 65536, kAll), msg(q.pd, 64, kAll), in(q.pd, 64, kAll);
  Fill(src, 3);
  std::memcpy(msg.bytes.data(), "hello, B", 8);
  PostRecv(q.b, {{in.addr(), 64, in.mr->lkey}}, 77);
  REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{src.addr(), 65536, src.mr->lkey}}, 1, false, dst.addr(),
               dst.mr->rkey) == 0);
  REQUIRE(Post(q.a, IBV_WR_SEND_WITH_IMM, {{msg.addr(), 8, msg.mr->lkey}}, 2, true, 0, 0,
               0xC0FFEE) == 0);
  const std::vector<ibv_wc> r = Poll(q.cq_b, 1);
  CHECK(r[0].status == IBV_WC_SUCCESS);
  CHECK(r[0].wr_id == 77);
  CHECK(r[0].opcode == IBV_WC_RECV);
  CHECK(r[0].byte_len == 8);
  CHECK((r[0].wc_flags & IBV_WC_WITH_IMM) != 0);
  CHECK(be32toh(r[0].imm_data) == 0xC0FFEE);
  CHECK(r[0].qp_num == q.b->qp_num);
  CHECK(r[0].src_qp == q.a->qp_num);
  CHECK(std::memcmp(in.bytes.data(), "hello, B", 8) == 0);
  // RC order: the WRITE's bytes are there when the SEND is.
  CHECK(dst.bytes == src.bytes);
  const std::vector<ibv_wc> s = Poll(q.cq_a, 1);  // the unsignaled WRITE gives none
  CHECK(s[0].wr_id == 2);
  CHECK(s[0].status == IBV_WC_SUCCESS);
  CHECK(s[0].opcode == IBV_WC_SEND);
  NoMore(q.cq_a);
}

TEST_CASE("leasefs0: WRITE_WITH_IMM consumes a RECV with the immediate and the length") {
  Pair q;
  Buf src(q.pd, 8192, kAll), dst(q.pd, 16384, kAll), in(q.pd, 16, kAll);
  Fill(src, 9);
  PostRecv(q.b, {{in.addr(), 16, in.mr->lkey}}, 5);
  REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE_WITH_IMM, {{src.addr(), 8192, src.mr->lkey}}, 6, true,
               dst.addr(4096), dst.mr->rkey, 42) == 0);
  const std::vector<ibv_wc> r = Poll(q.cq_b, 1);
  CHECK(r[0].status == IBV_WC_SUCCESS);
  CHECK(r[0].opcode == IBV_WC_RECV_RDMA_WITH_IMM);
  CHECK(r[0].byte_len == 8192);
  CHECK(be32toh(r[0].imm_data) == 42);
  CHECK(std::memcmp(dst.bytes.data() + 4096, src.bytes.data(), 8192) == 0);
  CHECK(dst.bytes[4095] == 0);
  CHECK(dst.bytes[4096 + 8192] == 0);
  const std::vector<ibv_wc> s = Poll(q.cq_a, 1);
  CHECK(s[0].opcode == IBV_WC_RDMA_WRITE);
  CHECK(s[0].status == IBV_WC_SUCCESS);
}

TEST_CASE("leasefs0: READ into two SGEs, SEND from two") {
  Pair q;
  Buf remote(q.pd, 8192, kAll), local(q.pd, 8192, kAll);
  Fill(remote, 1);
  REQUIRE(Post(q.a, IBV_WR_RDMA_READ,
               {{local.addr(0), 1000, local.mr->lkey}, {local.addr(4096), 3000, local.mr->lkey}}, 9,
               true, remote.addr(100), remote.mr->rkey) == 0);
  const std::vector<ibv_wc> s = Poll(q.cq_a, 1);
  CHECK(s[0].status == IBV_WC_SUCCESS);
  CHECK(s[0].opcode == IBV_WC_RDMA_READ);
  CHECK(s[0].byte_len == 4000);
  CHECK(std::memcmp(local.bytes.data(), remote.bytes.data() + 100, 1000) == 0);
  CHECK(std::memcmp(local.bytes.data() + 4096, remote.bytes.data() + 1100, 3000) == 0);
  Buf in(q.pd, 8192, kAll);
  PostRecv(q.b, {{in.addr(0), 10, in.mr->lkey}, {in.addr(100), 4000, in.mr->lkey}}, 1);
  REQUIRE(Post(q.a, IBV_WR_SEND,
               {{remote.addr(0), 5, remote.mr->lkey}, {remote.addr(50), 7, remote.mr->lkey}}, 2,
               true) == 0);
  const std::vector<ibv_wc> r = Poll(q.cq_b, 1);
  CHECK(r[0].byte_len == 12);
  CHECK((r[0].wc_flags & IBV_WC_WITH_IMM) == 0);
  CHECK(std::memcmp(in.bytes.data(), remote.bytes.data(), 5) == 0);
  CHECK(std::memcmp(in.bytes.data() + 5, remote.bytes.data() + 50, 5) == 0);
  CHECK(std::memcmp(in.bytes.data() + 100, remote.bytes.data() + 55, 2) == 0);
  Poll(q.cq_a, 1);
}

TEST_CASE("leasefs0: a SEND waits for the RECV (RNR retried forever), then both complete") {
  Pair q;
  Buf m(q.pd, 64, kAll), in(q.pd, 64, kAll);
  REQUIRE(Post(q.a, IBV_WR_SEND, {{m.addr(), 64, m.mr->lkey}}, 1, true) == 0);
  NoMore(q.cq_a);
  PostRecv(q.b, {{in.addr(), 64, in.mr->lkey}}, 2);
  CHECK(Poll(q.cq_b, 1)[0].status == IBV_WC_SUCCESS);
  CHECK(Poll(q.cq_a, 1)[0].status == IBV_WC_SUCCESS);
}

TEST_CASE("leasefs0: remote errors: bad rkey, out of the MR, no remote right; the QP flushes") {
  Pair q;
  Buf local(q.pd, 4096, kAll), remote(q.pd, 4096, kAll),
      readonly(q.pd, 4096, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
  SUBCASE("an rkey nobody registered") {
    REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{local.addr(), 16, local.mr->lkey}}, 1, false,
                 remote.addr(), remote.mr->rkey ^ 0x5a5a5a5a) == 0);
  }
  SUBCASE("past the end of the MR") {
    REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{local.addr(), 16, local.mr->lkey}}, 1, false,
                 remote.addr(4090), remote.mr->rkey) == 0);
  }
  SUBCASE("a WRITE into an MR without REMOTE_WRITE") {
    REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{local.addr(), 16, local.mr->lkey}}, 1, false,
                 readonly.addr(), readonly.mr->rkey) == 0);
  }
  REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{local.addr(), 16, local.mr->lkey}}, 2, true,
               remote.addr(), remote.mr->rkey) == 0);
  const std::vector<ibv_wc> s = Poll(q.cq_a, 2);
  CHECK(s[0].wr_id == 1);  // unsignaled, but an error always completes
  CHECK(s[0].status == IBV_WC_REM_ACCESS_ERR);
  CHECK(s[1].wr_id == 2);
  CHECK(s[1].status == IBV_WC_WR_FLUSH_ERR);
  ibv_qp_attr at{};
  ibv_qp_init_attr init{};
  REQUIRE(ibv_query_qp(q.a, &at, IBV_QP_STATE, &init) == 0);
  CHECK(at.qp_state == IBV_QPS_ERR);
  // Posting to a QP in error completes at once, flushed.
  REQUIRE(Post(q.a, IBV_WR_SEND, {{local.addr(), 16, local.mr->lkey}}, 3, true) == 0);
  CHECK(Poll(q.cq_a, 1)[0].status == IBV_WC_WR_FLUSH_ERR);
  CHECK(remote.bytes == std::vector<uint8_t>(4096, 0));
  CHECK(readonly.bytes == std::vector<uint8_t>(4096, 0));
}

TEST_CASE("leasefs0: local errors: a bad lkey; a SEND longer than the RECV") {
  Pair q;
  Buf local(q.pd, 4096, kAll), remote(q.pd, 4096, kAll), in(q.pd, 64, kAll);
  REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{local.addr(), 16, local.mr->lkey + 1}}, 1, true,
               remote.addr(), remote.mr->rkey) == 0);
  CHECK(Poll(q.cq_a, 1)[0].status == IBV_WC_LOC_PROT_ERR);
  // B sends to A, whose QP is in error: a remote operation error for B,
  // whose QP then flushes its posted RECV.
  PostRecv(q.b, {{in.addr(), 64, in.mr->lkey}}, 7);
  REQUIRE(Post(q.b, IBV_WR_SEND, {{remote.addr(), 16, remote.mr->lkey}}, 8, true) == 0);
  const std::vector<ibv_wc> s = Poll(q.cq_b, 2);
  CHECK(s[0].wr_id == 8);
  CHECK(s[0].status == IBV_WC_REM_OP_ERR);
  CHECK(s[1].wr_id == 7);
  CHECK(s[1].status == IBV_WC_WR_FLUSH_ERR);
}

TEST_CASE("leasefs0: a SEND longer than its RECV: LOC_LEN_ERR there, REM_INV_REQ_ERR here") {
  Pair q;
  Buf m(q.pd, 4096, kAll), in(q.pd, 64, kAll);
  PostRecv(q.b, {{in.addr(), 64, in.mr->lkey}}, 7);
  REQUIRE(Post(q.a, IBV_WR_SEND, {{m.addr(), 65, m.mr->lkey}}, 8, true) == 0);
  const std::vector<ibv_wc> r = Poll(q.cq_b, 1);
  CHECK(r[0].wr_id == 7);
  CHECK(r[0].status == IBV_WC_LOC_LEN_ERR);
  const std::vector<ibv_wc> s = Poll(q.cq_a, 1);
  CHECK(s[0].wr_id == 8);
  CHECK(s[0].status == IBV_WC_REM_INV_REQ_ERR);
}

TEST_CASE("leasefs0: the verbs' own errno values") {
  Pair q(2);
  Buf local(q.pd, 4096, kAll), remote(q.pd, 4096, kAll);
  // Unknown opcodes: atomics are not offered.
  CHECK(Post(q.a, IBV_WR_ATOMIC_FETCH_AND_ADD, {{local.addr(), 8, local.mr->lkey}}, 4, true) ==
        EINVAL);
  // A send queue of two: the third outstanding request is ENOMEM (B has
  // no RECV posted: the two wait).
  for (int i = 0; i < 2; ++i) {
    REQUIRE(Post(q.a, IBV_WR_SEND, {{local.addr(), 8, local.mr->lkey}}, i, true) == 0);
  }
  CHECK(Post(q.a, IBV_WR_SEND, {{local.addr(), 8, local.mr->lkey}}, 3, true) == ENOMEM);
  // A QP in RESET takes no sends; RESET to RTR is no transition.
  ibv_qp* fresh = q.Make(q.cq_a, 4);
  CHECK(Post(fresh, IBV_WR_SEND, {{local.addr(), 8, local.mr->lkey}}, 5, true) == EINVAL);
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_RTR;
  CHECK(ibv_modify_qp(fresh, &at, IBV_QP_STATE) == EINVAL);
  at.qp_state = IBV_QPS_INIT;
  at.port_num = 1;
  REQUIRE(ibv_modify_qp(fresh, &at, IBV_QP_STATE | IBV_QP_PORT) == 0);
  at.qp_state = IBV_QPS_RTR;  // RC's RTR needs its peer
  CHECK(ibv_modify_qp(fresh, &at, IBV_QP_STATE) == EINVAL);
  // Objects in use are not destroyed.
  CHECK(ibv_destroy_cq(q.cq_a) == EBUSY);
  CHECK(ibv_dealloc_pd(q.pd) == EBUSY);
  CHECK(ibv_destroy_qp(fresh) == 0);
  // Registrations.
  std::vector<uint8_t> mem(4096);
  errno = 0;
  const int remote_write_only = IBV_ACCESS_REMOTE_WRITE;
  CHECK(ibv_reg_mr(q.pd, mem.data(), mem.size(), remote_write_only) == nullptr);
  CHECK(errno == EINVAL);  // REMOTE_WRITE needs LOCAL_WRITE
  errno = 0;
  CHECK(ibv_reg_mr(q.pd, mem.data(), 0, kAll) == nullptr);
  CHECK(errno == EINVAL);
  ibv_qp_init_attr ud{};
  ud.send_cq = q.cq_a;
  ud.recv_cq = q.cq_a;
  ud.qp_type = IBV_QPT_UD;
  ud.cap.max_send_wr = 1;
  errno = 0;
  CHECK(ibv_create_qp(q.pd, &ud) == nullptr);
  CHECK(errno == EOPNOTSUPP);
  PostRecv(q.b, {{remote.addr(0), 8, remote.mr->lkey}}, 20);
  PostRecv(q.b, {{remote.addr(8), 8, remote.mr->lkey}}, 21);
  const std::vector<ibv_wc> s = Poll(q.cq_a, 2);
  CHECK(s[0].wr_id == 0);
  CHECK(s[1].wr_id == 1);
  CHECK(Poll(q.cq_b, 2)[1].wr_id == 21);
}

TEST_CASE("leasefs0: completion events through a channel") {
  Pair q;
  ibv_comp_channel* ch = ibv_create_comp_channel(q.ctx);
  REQUIRE(ch != nullptr);
  ibv_cq* cq = ibv_create_cq(q.ctx, 16, reinterpret_cast<void*>(0x1234), ch, 0);
  REQUIRE(cq != nullptr);
  ibv_qp* c = q.Make(cq, 8);
  ibv_qp* d = q.Make(q.cq_b, 8);
  q.Connect(c, d->qp_num);
  q.Connect(d, c->qp_num);
  Buf src(q.pd, 4096, kAll), dst(q.pd, 4096, kAll);
  Fill(src, 5);
  REQUIRE(ibv_req_notify_cq(cq, 0) == 0);
  REQUIRE(Post(c, IBV_WR_RDMA_WRITE, {{src.addr(), 4096, src.mr->lkey}}, 11, true, dst.addr(),
               dst.mr->rkey) == 0);
  ibv_cq* ev_cq = nullptr;
  void* ev_ctx = nullptr;
  REQUIRE(ibv_get_cq_event(ch, &ev_cq, &ev_ctx) == 0);
  CHECK(ev_cq == cq);
  CHECK(ev_ctx == reinterpret_cast<void*>(0x1234));
  ibv_ack_cq_events(cq, 1);
  const std::vector<ibv_wc> s = Poll(cq, 1);
  CHECK(s[0].wr_id == 11);
  CHECK(dst.bytes == src.bytes);
  CHECK(ibv_destroy_comp_channel(ch) == EBUSY);  // a CQ reports to it
  CHECK(ibv_destroy_qp(c) == 0);
  CHECK(ibv_destroy_qp(d) == 0);
  CHECK(ibv_destroy_cq(cq) == 0);
  CHECK(ibv_destroy_comp_channel(ch) == 0);
}


TEST_CASE("leasefs0: on-demand paging: offered for RC; an unmapped registration faults") {
  Pair q;
  ibv_device_attr_ex ex{};
  REQUIRE(ibv_query_device_ex(q.ctx, nullptr, &ex) == 0);
  CHECK((ex.odp_caps.general_caps & IBV_ODP_SUPPORT) != 0);
  CHECK(ex.odp_caps.per_transport_caps.rc_odp_caps ==
        (IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV | IBV_ODP_SUPPORT_WRITE |
         IBV_ODP_SUPPORT_READ));
  const size_t len = 1 << 20;
  bool odp = false;
  SUBCASE("ODP") { odp = true; }
  SUBCASE("not ODP: unmapping it makes it fault too, instead of a crash") {}
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  ibv_mr* mr = ibv_reg_mr(q.pd, mem, len, kAll | (odp ? IBV_ACCESS_ON_DEMAND : 0));
  REQUIRE(mr != nullptr);
  Buf src(q.pd, 4096, kAll);
  Fill(src, 2);
  const uintptr_t at = reinterpret_cast<uintptr_t>(mem);
  REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{src.addr(), 4096, src.mr->lkey}}, 1, true, at,
               mr->rkey) == 0);
  CHECK(Poll(q.cq_a, 1)[0].status == IBV_WC_SUCCESS);
  CHECK(std::memcmp(mem, src.bytes.data(), 4096) == 0);
  // The memory goes (the MMU's invalidation): the registration stops first.
  REQUIRE(munmap(mem, len) == 0);
  REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{src.addr(), 4096, src.mr->lkey}}, 2, true, at,
               mr->rkey) == 0);
  CHECK(Poll(q.cq_a, 1)[0].status == IBV_WC_REM_ACCESS_ERR);
  CHECK(ibv_dereg_mr(mr) == 0);
}

// Connects to the QP link socket of LID `lid` (docs/verbs.md), or -1.
int LinkSocket(uint16_t lid) {
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leasefs-verbs/lid/%u", lid);
  if (connect(s, reinterpret_cast<sockaddr*>(&a),
              static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n)) != 0) {
    close(s);
    return -1;
  }
  return s;
}

struct HelloFrame {
  uint32_t magic = 0x4B4C5156;
  uint16_t version = 1;
  uint16_t src_lid = 0;
  uint32_t src_qpn = 0;
  uint32_t dst_qpn = 0;
  uint64_t reserved = 0;
};

// The 8-byte reply's status to `hello` (bytes as given), or -1 if the link
// closed without one.
int HelloStatus(uint16_t lid, const void* hello, size_t len) {
  const int s = LinkSocket(lid);
  if (s < 0) return -2;
  if (write(s, hello, len) != static_cast<ssize_t>(len)) {
    close(s);
    return -1;
  }
  if (len < sizeof(HelloFrame)) shutdown(s, SHUT_WR);  // and says no more
  uint8_t reply[8];
  size_t got = 0;
  while (got < sizeof reply) {
    const ssize_t r = read(s, reply + got, sizeof reply - got);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  close(s);
  if (got != sizeof reply) return -1;
  uint16_t status;
  std::memcpy(&status, reply + 6, 2);
  return status;
}

// In a child as uid 65534: hostile links to the pair's QPs, from several
// threads at once. Exit 0 if every answer was the refusal expected.
int Hostile(uint16_t lid, uint32_t qp_a, uint32_t qp_b) {
  if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) return 10;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        HelloFrame h;
        h.src_lid = lid;
        switch ((i + t) % 5) {
          case 0:  // noise
            h.magic = 0xdeadbeef;
            if (HelloStatus(lid, &h, sizeof h) != 2) ++bad;
            break;
          case 1:  // a nonzero reserved field
            h.reserved = 1;
            if (HelloStatus(lid, &h, sizeof h) != 2) ++bad;
            break;
          case 2:  // a QP that does not exist
            h.src_qpn = qp_a;
            h.dst_qpn = (qp_b + 1 + static_cast<uint32_t>(i)) & 0xffffff;
            if (h.dst_qpn == qp_a) h.dst_qpn ^= 0x800000;
            if (HelloStatus(lid, &h, sizeof h) != 1) ++bad;
            break;
          case 3:  // B's QP, claiming to be a QP B is not connected to
            h.src_qpn = qp_b;
            h.dst_qpn = qp_b;
            if (HelloStatus(lid, &h, sizeof h) != 1) ++bad;
            break;
          default:  // half a hello, then gone
            if (HelloStatus(lid, &h, 10) != -1) ++bad;
            break;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  return bad.load() == 0 ? 0 : 20;
}

TEST_CASE("leasefs0: another user's hostile links are refused; the pair still works") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root to become uid 65534");
    return;
  }
  Pair q;
  Buf src(q.pd, 65536, kAll), dst(q.pd, 65536, kAll), in(q.pd, 64, kAll);
  Fill(src, 11);
  // A has not used its link yet: the hostile links race B's acceptance of it.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(Hostile(q.lid, q.a->qp_num, q.b->qp_num));
  for (int round = 0; round < 20; ++round) {
    PostRecv(q.b, {{in.addr(), 64, in.mr->lkey}}, round);
    REQUIRE(Post(q.a, IBV_WR_RDMA_WRITE, {{src.addr(), 65536, src.mr->lkey}}, 100, false,
                 dst.addr(), dst.mr->rkey) == 0);
    REQUIRE(Post(q.a, IBV_WR_SEND, {{src.addr(), 64, src.mr->lkey}}, 200 + round, true) == 0);
    CHECK(Poll(q.cq_b, 1)[0].status == IBV_WC_SUCCESS);
    CHECK(Poll(q.cq_a, 1)[0].status == IBV_WC_SUCCESS);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(dst.bytes == src.bytes);
}

}  // namespace
