// libleasefs_verbs.so's interposed libibverbs entry points (docs/verbs.md):
// each one serves the emulated device's objects (verbs_device.h) and hands
// every other object to libibverbs' own function, found with
// dlsym(RTLD_NEXT) (or in an already loaded libibverbs.so.1, for a program
// that dlopen'd it).
//
// A real device's registration of a leasefs file is a VERBS pin (below).
//
// Which devices a program sees (LEASEFS_VERBS, set by leasefs-run --verbs=):
//   auto (default): the real devices if libibverbs finds any, else leasefs0;
//   soft: leasefs0 first, then the real ones;
//   off:  the real ones only.
#include <dlfcn.h>
#include <infiniband/verbs.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "leasefs/ioctl.h"
#include "tools/run/run_pin.h"
#include "tools/run/verbs_device.h"

#undef ibv_reg_mr
#undef ibv_reg_mr_iova
#undef ibv_query_port

namespace leasefs::run::verbs {
namespace {

// libibverbs' own function `name` of type F, or null.
template <typename F>
F Real(const char* name) {
  return reinterpret_cast<F>(RealSymbolOf("libibverbs.so.1", name));
}

#define LEASEFS_REAL(fn) Real<decltype(&::fn)>(#fn)

enum class Mode { kAuto, kSoft, kOff };

Mode VerbsMode() {
  const char* v = getenv("LEASEFS_VERBS");
  if (v == nullptr || v[0] == '\0' || std::strcmp(v, "auto") == 0) return Mode::kAuto;
  if (std::strcmp(v, "soft") == 0) return Mode::kSoft;
  return Mode::kOff;
}

// Lists this file made, with the real list each wraps (to free it).
std::mutex g_lists_mu;
std::vector<std::pair<ibv_device**, ibv_device**>> g_lists;

// --- a real device's registrations over leasefs files are VERBS pins ---------------
//
// ibv_reg_mr with remote access on a real device, of memory inside a DAX
// mapping of the shim, is reported to the daemon as a LEASEFS_PIN_VERBS pin
// (docs/pins.md) through the shim's lease and context (run_pin.h); a
// registration the daemon refuses is undone and fails with its errno. When
// the shim must end the pin itself (a break of its lease, an exec), the
// fence hook first moves the MR onto scratch memory (ibv_rereg_mr with
// IBV_REREG_MR_CHANGE_TRANSLATION): the device stops reaching the file's
// blocks while the program's ibv_mr stays valid, and later peer operations
// land in the scratch. ibv_dereg_mr deregisters, then unpins (the daemon
// may reuse the blocks once UNPIN returns). Untested here: this machine
// has no RDMA device (tests/pin/verbs_device_test.cc is the device suite).
struct RealPin {
  uint64_t pin_id = 0;
  void* scratch = nullptr;  // reserved at registration: the hook allocates nothing
  size_t length = 0;
  int access = 0;
  bool fenced = false;
};
std::mutex g_real_mu;
std::unordered_map<ibv_mr*, RealPin> g_real;  // GUARDED_BY(g_real_mu)

void FenceRealPin(uint64_t pin_id) {
  std::lock_guard<std::mutex> l(g_real_mu);
  for (auto& [mr, rp] : g_real) {
    if (rp.pin_id != pin_id || rp.fenced) continue;
    static const auto rereg = Real<decltype(&::ibv_rereg_mr)>("ibv_rereg_mr");
    const int rc = rereg != nullptr ? rereg(mr, IBV_REREG_MR_CHANGE_TRANSLATION, nullptr,
                                            rp.scratch, rp.length, rp.access)
                                    : -1;
    if (rc != 0) {
      fprintf(stderr,
              "leasefs-run: the layout of a registered leasefs file changes, and the RDMA "
              "device's registration could not be moved off it (ibv_rereg_mr: %d)\n",
              rc);
    }
    rp.fenced = true;
  }
}

// After a real registration: the pin, or -errno (the caller undoes it).
int PinReal(ibv_mr* mr, void* addr, size_t length, int access) {
  const unsigned remote = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  if ((access & remote) == 0 || (access & IBV_ACCESS_ON_DEMAND) != 0) return 0;  // ODP: no pin
  using PinFn = int (*)(const void*, size_t, uint32_t, leasefs_run_pin*);
  static const auto pin =
      reinterpret_cast<PinFn>(dlsym(RTLD_DEFAULT, "leasefs_run_pin_range_verbs"));
  static const bool hooked = [] {
    using SetHook = void (*)(void (*)(uint64_t));
    auto set = reinterpret_cast<SetHook>(dlsym(RTLD_DEFAULT, "leasefs_run_set_fence_hook"));
    if (set != nullptr) set(FenceRealPin);
    return set != nullptr;
  }();
  if (pin == nullptr || !hooked) return 0;
  void* scratch = mmap(nullptr, length, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (scratch == MAP_FAILED) return -errno;
  leasefs_run_pin p{};
  const uint32_t flags = ((access & IBV_ACCESS_REMOTE_WRITE) != 0 ? LEASEFS_PIN_REMOTE_WRITE : 0u) |
                         ((access & IBV_ACCESS_REMOTE_READ) != 0 ? LEASEFS_PIN_REMOTE_READ : 0u);
  const int rc = pin(addr, length, flags, &p);
  if (rc != 0) {
    munmap(scratch, length);
    return rc == -ENOENT ? 0 : rc;  // ENOENT: not a leasefs DAX mapping
  }
  std::lock_guard<std::mutex> l(g_real_mu);
  g_real[mr] = RealPin{p.pin_id, scratch, length, access, false};
  return 0;
}

// A real registration, checked: over a leasefs file it is a pin or nothing.
ibv_mr* Checked(ibv_mr* mr, void* addr, size_t length, int access) {
  if (mr == nullptr) return nullptr;
  if (const int rc = PinReal(mr, addr, length, access); rc != 0) {
    LEASEFS_REAL(ibv_dereg_mr)(mr);
    errno = -rc;
    return nullptr;
  }
  return mr;
}

}  // namespace
}  // namespace leasefs::run::verbs

using namespace leasefs::run::verbs;  // NOLINT: the exported C functions below

#define LEASEFS_EXPORT extern "C" __attribute__((visibility("default")))

LEASEFS_EXPORT ibv_device** ibv_get_device_list(int* num) {
  static const auto real = LEASEFS_REAL(ibv_get_device_list);
  int n_real = 0;
  ibv_device** real_list = real != nullptr ? real(&n_real) : nullptr;
  if (real_list == nullptr) n_real = 0;
  const Mode mode = VerbsMode();
  if (mode == Mode::kOff || (mode == Mode::kAuto && n_real > 0)) {
    if (num != nullptr) *num = n_real;
    if (real_list == nullptr && real != nullptr) errno = ENOSYS;
    return real_list;
  }
  auto** list =
      static_cast<ibv_device**>(calloc(static_cast<size_t>(n_real) + 2, sizeof(ibv_device*)));
  if (list == nullptr) {
    if (real_list != nullptr) LEASEFS_REAL(ibv_free_device_list)(real_list);
    errno = ENOMEM;
    return nullptr;
  }
  int k = 0;
  list[k++] = SoftDevice();
  for (int i = 0; i < n_real; ++i) list[k++] = real_list[i];
  {
    std::lock_guard<std::mutex> l(g_lists_mu);
    g_lists.emplace_back(list, real_list);
  }
  if (num != nullptr) *num = k;
  return list;
}

LEASEFS_EXPORT void ibv_free_device_list(ibv_device** list) {
  ibv_device** real_list = list;
  {
    std::lock_guard<std::mutex> l(g_lists_mu);
    for (auto it = g_lists.begin(); it != g_lists.end(); ++it) {
      if (it->first == list) {
        real_list = it->second;
        free(list);
        g_lists.erase(it);
        break;
      }
    }
  }
  if (real_list != nullptr) {
    if (auto real = LEASEFS_REAL(ibv_free_device_list)) real(real_list);
  }
}

LEASEFS_EXPORT const char* ibv_get_device_name(ibv_device* d) {
  if (IsSoftDevice(d)) return d->name;
  return LEASEFS_REAL(ibv_get_device_name)(d);
}

LEASEFS_EXPORT __be64 ibv_get_device_guid(ibv_device* d) {
  if (IsSoftDevice(d)) return SoftGuid();
  return LEASEFS_REAL(ibv_get_device_guid)(d);
}

LEASEFS_EXPORT int ibv_get_device_index(ibv_device* d) {
  if (IsSoftDevice(d)) return -1;  // no kernel device
  return LEASEFS_REAL(ibv_get_device_index)(d);
}

LEASEFS_EXPORT ibv_context* ibv_open_device(ibv_device* d) {
  if (IsSoftDevice(d)) return SoftOpenDevice();
  return LEASEFS_REAL(ibv_open_device)(d);
}

LEASEFS_EXPORT int ibv_close_device(ibv_context* c) {
  if (IsSoft(c)) return SoftCloseDevice(c);
  return LEASEFS_REAL(ibv_close_device)(c);
}

LEASEFS_EXPORT int ibv_query_device(ibv_context* c, ibv_device_attr* a) {
  if (IsSoft(c)) return SoftQueryDevice(c, a);
  return LEASEFS_REAL(ibv_query_device)(c, a);
}

// The exported (compat) query_port: reached through the inline one only
// for contexts without the extended op, so never for ours; kept for
// programs that call the symbol directly.
LEASEFS_EXPORT int ibv_query_port(ibv_context* c, uint8_t port, _compat_ibv_port_attr* a) {
  if (IsSoft(c)) {
    // The compat struct is ibv_port_attr without its last field.
    return SoftQueryPort(c, port, reinterpret_cast<ibv_port_attr*>(a),
                         offsetof(ibv_port_attr, port_cap_flags2));
  }
  return LEASEFS_REAL(ibv_query_port)(c, port, a);
}

LEASEFS_EXPORT int ibv_query_gid(ibv_context* c, uint8_t port, int index, ibv_gid* gid) {
  if (IsSoft(c)) return SoftQueryGid(c, port, index, gid);
  return LEASEFS_REAL(ibv_query_gid)(c, port, index, gid);
}

LEASEFS_EXPORT int _ibv_query_gid_ex(ibv_context* c, uint32_t port, uint32_t index,
                                     ibv_gid_entry* e, uint32_t flags, size_t size) {
  if (IsSoft(c)) return SoftQueryGidEx(c, port, index, e, flags, size);
  return LEASEFS_REAL(_ibv_query_gid_ex)(c, port, index, e, flags, size);
}

LEASEFS_EXPORT ssize_t _ibv_query_gid_table(ibv_context* c, ibv_gid_entry* e, size_t max,
                                            uint32_t flags, size_t size) {
  if (IsSoft(c)) return SoftQueryGidTable(c, e, max, flags, size);
  return LEASEFS_REAL(_ibv_query_gid_table)(c, e, max, flags, size);
}

LEASEFS_EXPORT int ibv_query_pkey(ibv_context* c, uint8_t port, int index, __be16* pkey) {
  if (IsSoft(c)) return SoftQueryPkey(c, port, index, pkey);
  return LEASEFS_REAL(ibv_query_pkey)(c, port, index, pkey);
}

LEASEFS_EXPORT ibv_pd* ibv_alloc_pd(ibv_context* c) {
  if (IsSoft(c)) return SoftAllocPd(c);
  return LEASEFS_REAL(ibv_alloc_pd)(c);
}

LEASEFS_EXPORT int ibv_dealloc_pd(ibv_pd* pd) {
  if (IsSoft(pd->context)) return SoftDeallocPd(pd);
  return LEASEFS_REAL(ibv_dealloc_pd)(pd);
}

LEASEFS_EXPORT ibv_mr* ibv_reg_mr(ibv_pd* pd, void* addr, size_t length, int access) {
  if (IsSoft(pd->context)) {
    return SoftRegMr(pd, addr, length, reinterpret_cast<uintptr_t>(addr),
                     static_cast<unsigned>(access));
  }
  return Checked(LEASEFS_REAL(ibv_reg_mr)(pd, addr, length, access), addr, length, access);
}

LEASEFS_EXPORT ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                       int access) {
  if (IsSoft(pd->context)) return SoftRegMr(pd, addr, length, iova, static_cast<unsigned>(access));
  return Checked(LEASEFS_REAL(ibv_reg_mr_iova)(pd, addr, length, iova, access), addr, length,
                 access);
}

LEASEFS_EXPORT ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                        unsigned int access) {
  if (IsSoft(pd->context)) return SoftRegMr(pd, addr, length, iova, access);
  return Checked(LEASEFS_REAL(ibv_reg_mr_iova2)(pd, addr, length, iova, access), addr, length,
                 static_cast<int>(access));
}

LEASEFS_EXPORT ibv_mr* ibv_reg_dmabuf_mr(ibv_pd* pd, uint64_t offset, size_t length,
                                         uint64_t iova, int fd, int access) {
  if (IsSoft(pd->context)) {
    errno = EOPNOTSUPP;
    return nullptr;
  }
  return LEASEFS_REAL(ibv_reg_dmabuf_mr)(pd, offset, length, iova, fd, access);
}

LEASEFS_EXPORT int ibv_rereg_mr(ibv_mr* mr, int flags, ibv_pd* pd, void* addr, size_t length,
                                int access) {
  if (IsSoft(mr->context)) {
    errno = EOPNOTSUPP;
    return IBV_REREG_MR_ERR_INPUT;
  }
  return LEASEFS_REAL(ibv_rereg_mr)(mr, flags, pd, addr, length, access);
}

LEASEFS_EXPORT int ibv_dereg_mr(ibv_mr* mr) {
  if (IsSoft(mr->context)) return SoftDeregMr(mr);
  RealPin rp;
  {
    std::lock_guard<std::mutex> l(g_real_mu);
    auto it = g_real.find(mr);
    if (it != g_real.end()) rp = it->second;
  }
  const int rc = LEASEFS_REAL(ibv_dereg_mr)(mr);
  if (rc != 0 || rp.pin_id == 0) return rc;  // a failed dereg keeps its pin
  {
    std::lock_guard<std::mutex> l(g_real_mu);
    g_real.erase(mr);
  }
  // Deregistered first: the device no longer reaches the blocks.
  using UnpinFn = int (*)(uint64_t);
  static const auto unpin = reinterpret_cast<UnpinFn>(dlsym(RTLD_DEFAULT, "leasefs_run_unpin"));
  if (unpin != nullptr) (void)unpin(rp.pin_id);
  munmap(rp.scratch, rp.length);
  return 0;
}

LEASEFS_EXPORT ibv_comp_channel* ibv_create_comp_channel(ibv_context* c) {
  if (IsSoft(c)) return SoftCreateCompChannel(c);
  return LEASEFS_REAL(ibv_create_comp_channel)(c);
}

LEASEFS_EXPORT int ibv_destroy_comp_channel(ibv_comp_channel* ch) {
  if (IsSoft(ch->context)) return SoftDestroyCompChannel(ch);
  return LEASEFS_REAL(ibv_destroy_comp_channel)(ch);
}

LEASEFS_EXPORT ibv_cq* ibv_create_cq(ibv_context* c, int cqe, void* cq_context,
                                     ibv_comp_channel* ch, int comp_vector) {
  if (IsSoft(c)) return SoftCreateCq(c, cqe, cq_context, ch, comp_vector);
  return LEASEFS_REAL(ibv_create_cq)(c, cqe, cq_context, ch, comp_vector);
}

LEASEFS_EXPORT int ibv_resize_cq(ibv_cq* cq, int cqe) {
  if (IsSoft(cq->context)) return SoftResizeCq(cq, cqe);
  return LEASEFS_REAL(ibv_resize_cq)(cq, cqe);
}

LEASEFS_EXPORT int ibv_destroy_cq(ibv_cq* cq) {
  if (IsSoft(cq->context)) return SoftDestroyCq(cq);
  return LEASEFS_REAL(ibv_destroy_cq)(cq);
}

LEASEFS_EXPORT int ibv_get_cq_event(ibv_comp_channel* ch, ibv_cq** cq, void** cq_context) {
  if (IsSoft(ch->context)) return SoftGetCqEvent(ch, cq, cq_context);
  return LEASEFS_REAL(ibv_get_cq_event)(ch, cq, cq_context);
}

LEASEFS_EXPORT void ibv_ack_cq_events(ibv_cq* cq, unsigned int n) {
  if (IsSoft(cq->context)) return SoftAckCqEvents(cq, n);
  LEASEFS_REAL(ibv_ack_cq_events)(cq, n);
}

LEASEFS_EXPORT ibv_qp* ibv_create_qp(ibv_pd* pd, ibv_qp_init_attr* attr) {
  if (IsSoft(pd->context)) return SoftCreateQp(pd, attr);
  return LEASEFS_REAL(ibv_create_qp)(pd, attr);
}

LEASEFS_EXPORT int ibv_modify_qp(ibv_qp* qp, ibv_qp_attr* attr, int mask) {
  if (IsSoft(qp->context)) return SoftModifyQp(qp, attr, mask);
  return LEASEFS_REAL(ibv_modify_qp)(qp, attr, mask);
}

LEASEFS_EXPORT int ibv_query_qp(ibv_qp* qp, ibv_qp_attr* attr, int mask,
                                ibv_qp_init_attr* init) {
  if (IsSoft(qp->context)) return SoftQueryQp(qp, attr, mask, init);
  return LEASEFS_REAL(ibv_query_qp)(qp, attr, mask, init);
}

LEASEFS_EXPORT int ibv_destroy_qp(ibv_qp* qp) {
  if (IsSoft(qp->context)) return SoftDestroyQp(qp);
  return LEASEFS_REAL(ibv_destroy_qp)(qp);
}

LEASEFS_EXPORT ibv_qp_ex* ibv_qp_to_qp_ex(ibv_qp* qp) {
  if (IsSoft(qp->context)) return nullptr;  // no extended QPs: the classic post API
  return LEASEFS_REAL(ibv_qp_to_qp_ex)(qp);
}

LEASEFS_EXPORT ibv_srq* ibv_create_srq(ibv_pd* pd, ibv_srq_init_attr* attr) {
  if (IsSoft(pd->context)) {
    errno = EOPNOTSUPP;  // no shared receive queues (max_srq 0)
    return nullptr;
  }
  return LEASEFS_REAL(ibv_create_srq)(pd, attr);
}

LEASEFS_EXPORT ibv_ah* ibv_create_ah(ibv_pd* pd, ibv_ah_attr* attr) {
  if (IsSoft(pd->context)) {
    errno = EOPNOTSUPP;  // address handles serve UD, which is not offered
    return nullptr;
  }
  return LEASEFS_REAL(ibv_create_ah)(pd, attr);
}

LEASEFS_EXPORT ibv_ah* ibv_create_ah_from_wc(ibv_pd* pd, ibv_wc* wc, ibv_grh* grh,
                                             uint8_t port) {
  if (IsSoft(pd->context)) {
    errno = EOPNOTSUPP;
    return nullptr;
  }
  return LEASEFS_REAL(ibv_create_ah_from_wc)(pd, wc, grh, port);
}

LEASEFS_EXPORT int ibv_attach_mcast(ibv_qp* qp, const ibv_gid* gid, uint16_t lid) {
  if (IsSoft(qp->context)) return EOPNOTSUPP;
  return LEASEFS_REAL(ibv_attach_mcast)(qp, gid, lid);
}

LEASEFS_EXPORT int ibv_detach_mcast(ibv_qp* qp, const ibv_gid* gid, uint16_t lid) {
  if (IsSoft(qp->context)) return EOPNOTSUPP;
  return LEASEFS_REAL(ibv_detach_mcast)(qp, gid, lid);
}

LEASEFS_EXPORT int ibv_get_async_event(ibv_context* c, ibv_async_event* event) {
  if (IsSoft(c)) return SoftGetAsyncEvent(c, event);
  return LEASEFS_REAL(ibv_get_async_event)(c, event);
}

LEASEFS_EXPORT void ibv_ack_async_event(ibv_async_event* event) {
  // Ours never returns an event to acknowledge; a real one's is the real one's.
  LEASEFS_REAL(ibv_ack_async_event)(event);
}
