// libleasefs_verbs.so's interposed libibverbs entry points (docs/verbs.md):
// each one serves the emulated device's objects (verbs_device.h) and hands
// every other object to libibverbs' own function, found with
// dlsym(RTLD_NEXT) (or in an already loaded libibverbs.so.1, for a program
// that dlopen'd it).
//
// Which devices a program sees (LEASEFS_VERBS, set by leasefs-run --verbs=):
//   auto (default): the real devices if libibverbs finds any, else leasefs0;
//   soft: leasefs0 first, then the real ones;
//   off:  the real ones only.
#include <dlfcn.h>
#include <infiniband/verbs.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "tools/run/verbs_device.h"

#undef ibv_reg_mr
#undef ibv_reg_mr_iova
#undef ibv_query_port

namespace leasefs::run::verbs {
namespace {

void* RealSymbol(const char* name) {
  if (void* f = dlsym(RTLD_NEXT, name)) return f;
  // libibverbs loaded with dlopen (RTLD_LOCAL) is not after us in the
  // global scope; ask it directly, without loading it when absent.
  static void* lib = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_NOLOAD);
  return lib != nullptr ? dlsym(lib, name) : nullptr;
}

// The real function `name` of type F, or null.
template <typename F>
F Real(const char* name) {
  return reinterpret_cast<F>(RealSymbol(name));
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
  return LEASEFS_REAL(ibv_reg_mr)(pd, addr, length, access);
}

LEASEFS_EXPORT ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                       int access) {
  if (IsSoft(pd->context)) return SoftRegMr(pd, addr, length, iova, static_cast<unsigned>(access));
  return LEASEFS_REAL(ibv_reg_mr_iova)(pd, addr, length, iova, access);
}

LEASEFS_EXPORT ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                                        unsigned int access) {
  if (IsSoft(pd->context)) return SoftRegMr(pd, addr, length, iova, access);
  return LEASEFS_REAL(ibv_reg_mr_iova2)(pd, addr, length, iova, access);
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
  return LEASEFS_REAL(ibv_dereg_mr)(mr);
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
