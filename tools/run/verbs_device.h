// The emulated verbs device of leasefs-run (docs/verbs.md): "leasefs0", an
// RC-only RDMA device whose one-sided operations go to soft NICs
// (docs/softnic.md): the daemon's for memory registered over a leasefs DAX
// mapping (a pin: docs/pins.md), the process's own for other memory.
//
// These are the device's verbs, called by the interposed libibverbs entry
// points (verbs_exports.cc) when the object is the device's, and through
// the context's ops table by libibverbs' inline functions (ibv_post_send,
// ibv_poll_cq, ibv_req_notify_cq, ibv_post_recv, ibv_query_port,
// ibv_query_device_ex). They follow libibverbs' conventions: pointers NULL
// with errno set, ints as the man pages say (errno values, or -1 and errno).
//
// Thread safety: as libibverbs promises its users: any verb from any
// thread; one object's destroy must not race with its other uses.
#pragma once

#include <infiniband/verbs.h>

#include <cstdarg>

namespace leasefs::run::verbs {

inline constexpr char kDeviceName[] = "leasefs0";

// Writes "leasefs-run[PID] WHO: ..." to stderr when LEASEFS_RUN_VERBOSE is
// set (and not "0").
void VLog(const char* who, const char* fmt, va_list ap);

// Blocking-socket helpers of the device and its rdma_cm. Each returns false
// at end of file or on an error (EINTR is retried).
// Reads exactly n bytes.
bool ReadFull(int fd, void* buf, size_t n);
// Reads exactly n bytes within timeout_ms in all: a peer that sends part
// of them and stalls, or trickles them, holds the reader no longer.
bool ReadFullWithin(int fd, void* buf, size_t n, int timeout_ms);
// Writes exactly n bytes (MSG_NOSIGNAL).
bool WriteFull(int fd, const void* buf, size_t n);
// Reads and drops n bytes.
bool Discard(int fd, size_t n);
// Whether fd becomes readable within timeout_ms.
bool WaitReadable(int fd, int timeout_ms);

// `name` of the library `soname` as it would be without us: the next
// definition after ours in the global scope, or, for a library loaded with
// dlopen (RTLD_LOCAL), its own, when it is loaded. Null otherwise.
void* RealSymbolOf(const char* soname, const char* name);

// The device (one per process), and whether a context or device is it.
ibv_device* SoftDevice();
inline bool IsSoftDevice(const ibv_device* d) { return d != nullptr && d == SoftDevice(); }
inline bool IsSoft(const ibv_context* c) { return c != nullptr && IsSoftDevice(c->device); }

__be64 SoftGuid();
ibv_context* SoftOpenDevice();
int SoftCloseDevice(ibv_context* ctx);
int SoftQueryDevice(ibv_context* ctx, ibv_device_attr* attr);
int SoftQueryPort(ibv_context* ctx, uint8_t port, ibv_port_attr* attr, size_t attr_size);
int SoftQueryGid(ibv_context* ctx, uint8_t port, int index, ibv_gid* gid);
int SoftQueryGidEx(ibv_context* ctx, uint32_t port, uint32_t index, ibv_gid_entry* entry,
                   uint32_t flags, size_t entry_size);
ssize_t SoftQueryGidTable(ibv_context* ctx, ibv_gid_entry* entries, size_t max, uint32_t flags,
                          size_t entry_size);
int SoftQueryPkey(ibv_context* ctx, uint8_t port, int index, __be16* pkey);

ibv_pd* SoftAllocPd(ibv_context* ctx);
int SoftDeallocPd(ibv_pd* pd);
ibv_mr* SoftRegMr(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned access);
int SoftDeregMr(ibv_mr* mr);

ibv_comp_channel* SoftCreateCompChannel(ibv_context* ctx);
int SoftDestroyCompChannel(ibv_comp_channel* ch);
ibv_cq* SoftCreateCq(ibv_context* ctx, int cqe, void* cq_context, ibv_comp_channel* ch,
                     int comp_vector);
int SoftResizeCq(ibv_cq* cq, int cqe);
int SoftDestroyCq(ibv_cq* cq);
int SoftGetCqEvent(ibv_comp_channel* ch, ibv_cq** cq, void** cq_context);
void SoftAckCqEvents(ibv_cq* cq, unsigned n);

ibv_qp* SoftCreateQp(ibv_pd* pd, ibv_qp_init_attr* attr);
int SoftModifyQp(ibv_qp* qp, ibv_qp_attr* attr, int mask);
int SoftQueryQp(ibv_qp* qp, ibv_qp_attr* attr, int mask, ibv_qp_init_attr* init);
int SoftDestroyQp(ibv_qp* qp);

int SoftGetAsyncEvent(ibv_context* ctx, ibv_async_event* event);

}  // namespace leasefs::run::verbs
