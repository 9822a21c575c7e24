// leasefs-write-bw's client: WRITEs into the server's buffer through the
// soft NIC and prints perftest's result table.
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "pin/softnic_peer.h"
#include "tools/write_bw/exchange.h"
#include "tools/write_bw/report.h"
#include "tools/write_bw/write_bw.h"

namespace leasefs::write_bw {
namespace {

constexpr int kCompletionTimeoutMs = 30000;  // a soft NIC that says nothing this long has failed
constexpr int kExchangeTimeoutMs = 30000;
constexpr uint64_t kWarmupTag = 1ull << 63;  // wr_ids of warm-up WRITEs

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ibv_wc_status values perftest prints for the soft NIC's error statuses.
int IbvStatus(uint8_t softnic_status) {
  if (softnic_status == pin::wire::kStatusRemoteAccessError) return 10;  // IBV_WC_REM_ACCESS_ERR
  if (softnic_status == pin::wire::kStatusRemoteInvalidRequest) return 9;  // REM_INV_REQ_ERR
  return 11;  // IBV_WC_REM_OP_ERR
}

// Posts WRITEs of one size and takes their completions, in perftest's
// manner: up to tx_depth in flight, every cq_mod-th signaled. The messages
// go to consecutive slots of the buffer, wrapping around.
class Writer {
 public:
  Writer(pin::SoftNicPeer& peer, const Options& opts, uint64_t rkey, uint64_t buffer_len,
         const uint8_t* src)
      : peer_(peer), opts_(opts), rkey_(rkey), buffer_len_(buffer_len), src_(src) {}

  // Runs -n iterations (or -D seconds) of `size` after a warm-up.
  Result<Row> Run(uint64_t size) {
    size_ = size;
    slots_ = buffer_len_ / size;
    tx_depth_ = opts_.duration_s == 0 ? std::min<uint64_t>(opts_.tx_depth, opts_.iterations)
                                      : opts_.tx_depth;
    cq_mod_ = static_cast<uint32_t>(std::min<uint64_t>(opts_.cq_mod, tx_depth_));
    LFS_RETURN_IF_ERROR(Warmup());
    return opts_.duration_s == 0 ? Iterations() : Duration();
  }

 private:
  Status Post(uint64_t i, uint64_t wr_id, bool signaled) {
    ++posted_;
    return peer_.PostWrite(rkey_, (i % slots_) * size_, src_, static_cast<uint32_t>(size_), wr_id,
                           signaled);
  }

  // Takes the completions that are there (waiting for the first): *last is
  // the wr_id of the newest, `when` the time it was seen.
  Status Reap(uint64_t* last, double* when) {
    pin::Completion cqe[32];
    LFS_ASSIGN_OR_RETURN(size_t n, peer_.Poll(cqe, 32, kCompletionTimeoutMs));
    if (n == 0) return Status::Error(ETIMEDOUT, "no completion from the soft NIC in 30 s");
    *when = Now();
    for (size_t k = 0; k < n; ++k) {
      LFS_RETURN_IF_ERROR(Check(cqe[k]));
      *last = cqe[k].wr_id;
      ++completions_;
    }
    return Status::Ok();
  }

  Status Check(const pin::Completion& c) {
    if (c.op == pin::wire::kFrameFenced) {
      std::fflush(stdout);
      std::fprintf(stderr, " Region fenced by the server: rkey 0x%016" PRIx64 "\n", c.rkey);
      return Status::Error(EIO, "the buffer's rkey was fenced");
    }
    if (c.ok()) return Status::Ok();
    std::fflush(stdout);
    std::fprintf(stderr, " Completion with error at client\n");
    std::fprintf(stderr, " Failed status %d: wr_id %" PRIu64 " syndrom 0x%x\n", IbvStatus(c.status),
                 c.wr_id & ~kWarmupTag, c.status);
    std::fprintf(stderr, "scnt=%" PRIu64 ", ccnt=%" PRIu64 "\n", posted_, completions_);
    return Status::Error(EIO, c.status == pin::wire::kStatusRemoteAccessError
                                  ? "remote access error"
                                  : "remote invalid request");
  }

  Status Warmup() {
    const uint64_t n = std::min<uint64_t>(tx_depth_, std::max<uint64_t>(slots_, 1));
    for (uint64_t i = 0; i < n; ++i) LFS_RETURN_IF_ERROR(Post(i, kWarmupTag | i, i + 1 == n));
    for (uint64_t last = 0; last != (kWarmupTag | (n - 1));) {
      double when;
      LFS_RETURN_IF_ERROR(Reap(&last, &when));
    }
    posted_ = completions_ = 0;
    return Status::Ok();
  }

  Result<Row> Iterations() {
    const uint64_t n = opts_.iterations;
    Timings t{std::vector<double>(n), std::vector<double>(n)};
    uint64_t posted = 0, done = 0;
    while (done < n) {
      while (posted < n && posted - done < tx_depth_) {
        t.posted[posted] = Now();
        LFS_RETURN_IF_ERROR(Post(posted, posted, Signaled(posted, n, cq_mod_)));
        ++posted;
      }
      uint64_t last = 0;
      double when = 0;
      LFS_RETURN_IF_ERROR(Reap(&last, &when));
      if (last >= n) return Status::Error(EPROTO, "a completion for a WRITE never posted");
      t.completed[last] = when;
      done = last + 1;
    }
    return IterationsRow(size_, t, cq_mod_);
  }

  Result<Row> Duration() {
    const double start = Now(), end = start + opts_.duration_s;
    uint64_t posted = 0, done = 0;
    double last_when = start;
    for (bool stopped = false;;) {
      if (!stopped && Now() >= end) {
        stopped = true;
        // The tail must end with a signaled WRITE for its completion to come.
        if (posted % cq_mod_ != 0) {
          LFS_RETURN_IF_ERROR(Post(posted, posted, true));
          ++posted;
        }
      }
      if (stopped && done >= posted) break;
      while (!stopped && posted - done < tx_depth_) {
        LFS_RETURN_IF_ERROR(Post(posted, posted, (posted + 1) % cq_mod_ == 0));
        ++posted;
      }
      uint64_t last = 0;
      LFS_RETURN_IF_ERROR(Reap(&last, &last_when));
      done = last + 1;
    }
    return DurationRow(size_, posted, last_when - start);
  }

  pin::SoftNicPeer& peer_;
  const Options& opts_;
  uint64_t rkey_, buffer_len_;
  const uint8_t* src_;
  uint64_t size_ = 0, slots_ = 0, tx_depth_ = 0;
  uint32_t cq_mod_ = 1;
  uint64_t posted_ = 0, completions_ = 0;  // for the error line (perftest's scnt, ccnt)
};

int Fail(const Status& st, const char* perftest_line = nullptr) {
  std::fflush(stdout);
  if (perftest_line != nullptr) std::fprintf(stderr, " %s\n", perftest_line);
  std::fprintf(stderr, "leasefs-write-bw: %s\n", st.ToString().c_str());
  return 1;
}

// Message sizes to run: -s, or 2 B .. 8 MiB with -a, up to `cap`.
std::vector<uint64_t> Sizes(const Options& opts, uint64_t cap) {
  std::vector<uint64_t> sizes;
  if (!opts.all_sizes) return {opts.size};
  for (uint64_t s = 2; s <= (8u << 20) && s <= cap; s <<= 1) sizes.push_back(s);
  return sizes;
}

// What the client knows of the server's buffer.
std::string BufferText(const Info& info) {
  return std::string((info.flags & kInfoFlagLeasefsPin) != 0 ? "leasefs pin" : "anonymous memory") +
         " of the server, " + std::to_string(info.length) + "[B]";
}

// Runs every size and prints its row; the last row goes into *done.
Status RunAll(pin::SoftNicPeer& peer, const Options& opts, const Info& info, Done* done) {
  const uint64_t cap = std::min<uint64_t>(info.length, peer.max_message());
  const std::vector<uint64_t> sizes = Sizes(opts, cap);
  if (sizes.empty() || sizes.back() > cap) {
    return Status::Error(EINVAL, "message size " + std::to_string(opts.size) +
                                     " is larger than the server's buffer (" +
                                     std::to_string(cap) + " bytes)");
  }
  std::vector<uint8_t> src(sizes.back());
  for (size_t i = 0; i < src.size(); ++i) {
    src[i] = static_cast<uint8_t>(opts.pattern >= 0 ? opts.pattern : static_cast<int>(i & 0xff));
  }
  Writer writer(peer, opts, info.rkey, info.length, src.data());
  for (uint64_t size : sizes) {
    LFS_ASSIGN_OR_RETURN(Row row, writer.Run(size));
    std::fputs(FormatRow(row, opts.report_gbits).c_str(), stdout);
    std::fflush(stdout);
    *done = Done{0, row.size, row.iterations, row.peak_bps / 1048576.0, row.avg_bps / 1048576.0,
                 row.msg_rate_mpps};
  }
  return Status::Ok();
}

// Tells the server how it went and waits for it to close the connection,
// which it does once the buffer is released (unpinned, lease let go).
Status Finish(int conn, const Done& done) {
  uint8_t rec[kDoneBytes];
  EncodeDone(done, rec);
  LFS_RETURN_IF_ERROR(SendAll(conn, rec, sizeof rec));
  uint8_t byte;
  Status st = RecvAll(conn, &byte, 1, kExchangeTimeoutMs);
  if (st.err() == ECONNRESET) return Status::Ok();
  return st.ok() ? Status::Error(EPROTO, "the server sent more than its INFO") : st;
}

}  // namespace

int RunClient(const Options& opts) {
  auto conn = ConnectTo(opts.host, opts.port);
  if (!conn.ok()) return Fail(conn.status(), "Unable to init the socket connection");
  uint8_t rec[kInfoBytes];
  if (Status st = RecvAll(conn->get(), rec, sizeof rec, kExchangeTimeoutMs); !st.ok()) {
    return Fail(st, "Failed to exchange data between server and clients");
  }
  auto info = DecodeInfo(rec);
  if (!info.ok()) return Fail(info.status(), "Failed to exchange data between server and clients");
  PrintTestInfo(opts, false, BufferText(*info));
  auto peer = pin::SoftNicPeer::Connect(info->softnic_address, info->softnic_port);
  if (!peer.ok()) return Fail(peer.status(), "Unable to Connect the HCA's through the link");
  std::printf(" local address: %s\n", Endpoint(peer->fd(), false).c_str());
  std::printf(" remote address: IP %s PORT %u RKey 0x%016" PRIx64 " Length %" PRIu64 "\n",
              info->softnic_address.c_str(), info->softnic_port, info->rkey, info->length);
  std::fputs(kResultLine, stdout);
  std::fputs(ResultHeader(opts.report_gbits).c_str(), stdout);
  std::fflush(stdout);
  Done done;
  Status run = RunAll(*peer, opts, *info, &done);
  if (run.ok()) std::fputs(kResultLine, stdout);
  if (!run.ok()) done.status = run.err();
  Status fin = Finish(conn->get(), done);
  if (!run.ok()) return Fail(run, "Failed to complete run_iter_bw function successfully");
  if (!fin.ok()) return Fail(fin, "Failed to close connection between server and client");
  return 0;
}

void PrintTestInfo(const Options& opts, bool server, const std::string& buffer_text) {
  std::fputs(kResultLine, stdout);
  std::printf("                    RDMA_Write BW Test\n");
  std::printf(" Dual-port       : OFF\t\tDevice         : softnic\n");
  std::printf(" Number of qps   : 1\t\tTransport type : TCP\n");
  std::printf(" Connection type : RC\t\tUsing SRQ      : OFF\n");
  if (!server) std::printf(" TX depth        : %u\n", opts.tx_depth);
  if (!server) std::printf(" CQ Moderation   : %u\n", opts.cq_mod);
  std::printf(" Max msg size    : %u[B]\n", pin::wire::kMaxMessage);
  std::printf(" Link type       : Ethernet\n");
  std::printf(" Buffer          : %s\n", buffer_text.c_str());
  std::printf(" Data ex. method : Ethernet\n");
  std::fputs(kResultLine, stdout);
}

}  // namespace leasefs::write_bw
