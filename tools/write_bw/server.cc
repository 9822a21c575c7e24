// leasefs-write-bw's server: a buffer registered with a soft NIC, handed to
// one client over the exchange socket, released when the client is done.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "pin/softnic.h"
#include "tools/write_bw/exchange.h"
#include "tools/write_bw/report.h"
#include "tools/write_bw/write_bw.h"

namespace leasefs::write_bw {
namespace {

constexpr uint64_t kBlock = 4096;        // leasefs's block: pins are block-aligned
constexpr uint64_t kAllSizesMax = 8u << 20;  // -a runs up to 8 MiB

volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int sig) { g_signal = sig; }

// The registered memory the client writes into.
class Buffer {
 public:
  virtual ~Buffer() = default;
  // Ends the registration (and, for a leasefs file, the pin and the lease).
  // Idempotent.
  virtual Status Release() = 0;
  // A break of the buffer's lease is in progress (leasefs only).
  virtual bool BreakPending() { return false; }
  // A FENCED notice from the daemon, as its rkey (leasefs only; 0: none).
  virtual uint64_t TakeFenced() { return 0; }
  // Descriptors to poll: lease (POLLPRI) and pin context (POLLIN); -1: none.
  virtual int lease_fd() const { return -1; }
  virtual int context_fd() const { return -1; }

  Info info;
  std::string text;  // what the buffer is, for the test information
};

// Anonymous memory registered with a soft NIC of this process.
class AnonymousBuffer final : public Buffer {
 public:
  static Result<std::unique_ptr<Buffer>> Make(const Options& opts) {
    const uint64_t want = opts.all_sizes ? kAllSizesMax : opts.size;
    auto b = std::make_unique<AnonymousBuffer>(
        pin::SoftNicOptions{opts.softnic_bind, 0, 64}, (want + kBlock - 1) / kBlock * kBlock);
    if (b->mem_ == MAP_FAILED) return Status::FromErrno("mmap");
    LFS_RETURN_IF_ERROR(b->nic_.Start());
    LFS_ASSIGN_OR_RETURN(b->info.rkey, b->nic_.Register(b->mem_, b->len_, true, true));
    b->info.length = b->len_;
    b->info.softnic_address = opts.softnic_bind;
    b->info.softnic_port = b->nic_.port();
    b->text = "anonymous memory, " + std::to_string(b->len_) + "[B]";
    return std::unique_ptr<Buffer>(std::move(b));
  }
  AnonymousBuffer(pin::SoftNicOptions o, uint64_t len)
      : nic_(std::move(o)),
        len_(len),
        mem_(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) {}
  ~AnonymousBuffer() override {
    nic_.Stop();
    if (mem_ != MAP_FAILED) munmap(mem_, len_);
  }
  Status Release() override {
    if (info.rkey != 0) {
      Status st = nic_.Unregister(info.rkey);
      info.rkey = 0;
      return st;
    }
    return Status::Ok();
  }

 private:
  pin::SoftNic nic_;
  uint64_t len_;
  void* mem_;
};

Status Negative(int rc, const std::string& what) {
  return rc == 0 ? Status::Ok() : Status::Error(-rc, what);
}

// A range of a leasefs file: an EXCLUSIVE WRITE lease, a pin context, and a
// pin with the daemon's soft NIC (docs/pins.md).
class LeasefsBuffer final : public Buffer {
 public:
  static Result<std::unique_ptr<Buffer>> Make(const Options& opts) {
    auto b = std::make_unique<LeasefsBuffer>();
    b->fd_.reset(open(opts.mmap_file.c_str(), O_RDWR | O_CLOEXEC));
    if (!b->fd_.valid()) return Status::FromErrno("open " + opts.mmap_file);
    LFS_RETURN_IF_ERROR(b->Range(opts));
    leasefs_pin_info pi{};
    LFS_RETURN_IF_ERROR(Negative(leasefs_pin_get_info(b->fd_.get(), &pi), "pin info"));
    if ((pi.flags & LEASEFS_PIN_INFO_SOFTNIC) == 0) {
      return Status::Error(EOPNOTSUPP, "the mount has no soft NIC (-o softnic=off)");
    }
    LFS_RETURN_IF_ERROR(Negative(leasefs_set_lease(b->fd_.get(), b->off_, b->len_,
                                                   LEASEFS_LEASE_WRITE, LEASEFS_LEASE_EXCLUSIVE,
                                                   0, 0, &b->lease_id_),
                                 "exclusive write lease"));
    b->leased_ = true;
    LFS_RETURN_IF_ERROR(Negative(leasefs_pin_context_open(b->fd_.get(), &b->ctx_), "pin context"));
    LFS_RETURN_IF_ERROR(Negative(
        leasefs_pin_register(b->fd_.get(), &b->ctx_, b->off_, b->len_, LEASEFS_PIN_SOFTNIC,
                             LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ, &b->pin_id_,
                             &b->info.rkey),
        "pin"));
    b->info.flags = kInfoFlagLeasefsPin;
    b->info.length = b->len_;
    b->info.softnic_address = pi.softnic_address;
    b->info.softnic_port = pi.softnic_port;
    b->text = opts.mmap_file + " at " + std::to_string(b->off_) + ", " + std::to_string(b->len_) +
              "[B] (leasefs pin " + std::to_string(b->pin_id_) + ", lease " +
              std::to_string(b->lease_id_) + ")";
    return std::unique_ptr<Buffer>(std::move(b));
  }
  ~LeasefsBuffer() override { (void)Release(); }

  Status Release() override {
    Status st;
    if (pin_id_ != 0) {
      st = Negative(leasefs_pin_unregister(fd_.get(), &ctx_, pin_id_), "unpin");
      pin_id_ = 0;
    }
    leasefs_pin_context_close(&ctx_);
    if (leased_) {
      Status rel = Negative(leasefs_release_lease(fd_.get(), off_, len_), "release the lease");
      if (st.ok()) st = rel;
      leased_ = false;
    }
    return st;
  }
  bool BreakPending() override {
    leasefs_lease_info li{};
    return leased_ && leasefs_get_lease(fd_.get(), off_, &li) == 0 &&
           li.state != LEASEFS_STATE_ACTIVE;
  }
  uint64_t TakeFenced() override {
    uint64_t rkey = 0;
    if (ctx_.fd < 0 || leasefs_pin_wait_fenced(&ctx_, 0, nullptr, &rkey) != 0) return 0;
    return rkey;
  }
  int lease_fd() const override { return leased_ ? fd_.get() : -1; }
  int context_fd() const override { return ctx_.fd; }

 private:
  // The pinned range: from --mmap-offset to the file's last whole block.
  Status Range(const Options& opts) {
    struct stat st {};
    if (fstat(fd_.get(), &st) != 0) return Status::FromErrno("stat " + opts.mmap_file);
    if (opts.mmap_offset % kBlock != 0) {
      return Status::Error(EINVAL, "--mmap-offset must be a multiple of 4096 (pins are block-aligned)");
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    off_ = opts.mmap_offset;
    len_ = size > off_ ? std::min<uint64_t>((size - off_) / kBlock * kBlock, LEASEFS_PIN_MAX_BYTES)
                       : 0;
    if (len_ == 0) {
      return Status::Error(EINVAL, opts.mmap_file + " has no whole 4 KiB block past offset " +
                                       std::to_string(off_));
    }
    return Status::Ok();
  }

  UniqueFd fd_;
  leasefs_pin_context ctx_{-1, 0, {}};
  uint64_t off_ = 0, len_ = 0, lease_id_ = 0, pin_id_ = 0;
  bool leased_ = false;
};

int Fail(const Status& st) {
  std::fflush(stdout);
  std::fprintf(stderr, "leasefs-write-bw: %s\n", st.ToString().c_str());
  return 1;
}

// Waits for the listener to have a connection, watching for signals.
Result<UniqueFd> AcceptOne(int listener) {
  for (;;) {
    if (g_signal != 0) return Status::Error(EINTR, "interrupted by a signal");
    pollfd pfd{listener, POLLIN, 0};
    const int ready = poll(&pfd, 1, 200);
    if (ready < 0 && errno != EINTR) return Status::FromErrno("poll");
    if (ready > 0) return Accept(listener);
  }
}

// Notices of the buffer's lease breaking or its pin being fenced: printed,
// and on a break the buffer is released at once so that the breaker may
// proceed (the client's later WRITEs then fail).
void WatchBuffer(Buffer& buf) {
  if (const uint64_t rkey = buf.TakeFenced(); rkey != 0) {
    std::printf(" Pin fenced by leasefs (a break ran out): rkey 0x%016" PRIx64 "\n", rkey);
  }
  if (buf.BreakPending()) {
    std::printf(" Lease break on the buffer: unpinning and releasing it\n");
    if (Status st = buf.Release(); !st.ok()) std::printf(" %s\n", st.ToString().c_str());
  }
  std::fflush(stdout);
}

// Waits for the client's DONE, watching the buffer meanwhile.
Result<Done> WaitDone(int conn, Buffer& buf) {
  for (;;) {
    if (g_signal != 0) return Status::Error(EINTR, "interrupted by a signal");
    pollfd pfd[3] = {{conn, POLLIN, 0}, {buf.lease_fd(), POLLPRI, 0}, {buf.context_fd(), POLLIN, 0}};
    const int ready = poll(pfd, 3, 1000);
    if (ready < 0 && errno != EINTR) return Status::FromErrno("poll");
    // Also once a second: a poll notification is a hint, the lease's state the truth.
    if (ready == 0 || pfd[1].revents != 0 || pfd[2].revents != 0) WatchBuffer(buf);
    if (pfd[0].revents == 0) continue;
    uint8_t rec[kDoneBytes];
    LFS_RETURN_IF_ERROR(RecvAll(conn, rec, sizeof rec, 10000));
    return DecodeDone(rec);
  }
}

void PrintDoneRow(const Options& opts, const Done& d) {
  Row row;
  row.size = d.size;
  row.iterations = d.iterations;
  row.peak_bps = d.bw_peak_mib * 1048576.0;
  row.avg_bps = d.bw_avg_mib * 1048576.0;
  row.msg_rate_mpps = d.msg_rate_mpps;
  if (d.iterations > 0) std::fputs(FormatRow(row, opts.report_gbits).c_str(), stdout);
  std::fputs(kResultLine, stdout);
  std::fflush(stdout);
}

Result<std::unique_ptr<Buffer>> MakeBuffer(const Options& opts) {
  if (opts.mmap_file.empty()) return AnonymousBuffer::Make(opts);
  return LeasefsBuffer::Make(opts);
}

int Serve(const Options& opts, int listener, Buffer& buf) {
  std::printf("\n************************************\n");
  std::printf("* Waiting for client to connect... *\n");
  std::printf("************************************\n");
  std::fflush(stdout);
  auto conn = AcceptOne(listener);
  if (!conn.ok()) return Fail(conn.status());
  uint8_t rec[kInfoBytes];
  EncodeInfo(buf.info, rec);
  if (Status st = SendAll(conn->get(), rec, sizeof rec); !st.ok()) return Fail(st);
  PrintTestInfo(opts, true, buf.text);
  std::printf(" local address: IP %s PORT %u RKey 0x%016" PRIx64 " Length %" PRIu64 "\n",
              buf.info.softnic_address.c_str(), buf.info.softnic_port, buf.info.rkey,
              buf.info.length);
  std::printf(" remote address: %s\n", Endpoint(conn->get(), true).c_str());
  std::fputs(kResultLine, stdout);
  std::fputs(ResultHeader(opts.report_gbits).c_str(), stdout);
  std::fflush(stdout);
  auto done = WaitDone(conn->get(), buf);
  Status released = buf.Release();
  if (!done.ok()) return Fail(done.status().Annotate("waiting for the client's DONE"));
  PrintDoneRow(opts, *done);
  if (!released.ok()) return Fail(released);
  if (done->status != 0) {
    return Fail(Status::Error(done->status, "the client's test failed"));
  }
  return 0;
}

}  // namespace

int RunServer(const Options& opts) {
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  auto listener = Listen(opts.port);
  if (!listener.ok()) return Fail(listener.status());
  auto buf = MakeBuffer(opts);
  if (!buf.ok()) return Fail(buf.status());
  const int rc = Serve(opts, listener->get(), **buf);
  // The exchange socket closes (the client's sign that the buffer is
  // released) when `conn` goes out of scope in Serve.
  return g_signal != 0 ? 128 + g_signal : rc;
}

}  // namespace leasefs::write_bw
