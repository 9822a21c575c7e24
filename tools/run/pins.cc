// Pins for the verbs layer (run_pin.h): a memory registration over a DAX
// mapping of the shim becomes a pin of the file blocks behind it, made with
// the shim's own open file and lease (shim.h). The lease is made EXCLUSIVE
// while the inode has pins (LEASEFS_IOC_PIN requires it) and plain again
// after the last; an inode with pins stays open even when its mappings are
// gone, as a registered MR keeps its pages whatever the program unmaps.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lease/client/leasefs_lease.h"
#include "lease/client/leasefs_pin.h"
#include "tools/run/run_pin.h"
#include "tools/run/shim.h"

namespace leasefs::run {
namespace {

// The pin context of inode `i`'s mount, opened on first use. Returns its
// index or -errno.
int ContextFor(int i) {
  const Inode& n = g_state.inodes[i];
  int free_slot = -1;
  for (int c = 0; c < kMaxPinContexts; ++c) {
    const PinContext& pc = g_state.contexts[c];
    if (pc.used && pc.dev == n.dev) return c;
    if (!pc.used && free_slot < 0) free_slot = c;
  }
  if (free_slot < 0) return -ENOSPC;
  PinContext& pc = g_state.contexts[free_slot];
  if (const int rc = leasefs_pin_get_info(n.fd, &pc.info); rc != 0) return rc;
  if (const int rc = leasefs_pin_context_open(n.fd, &pc.ctx); rc != 0) return rc;
  pc.used = true;
  pc.dev = n.dev;
  return free_slot;
}

int NewPin() {
  for (int p = 0; p < kMaxPins; ++p) {
    if (!g_state.pin_table[p].used) return p;
  }
  return -1;
}

// Makes inode `i`'s lease EXCLUSIVE (of its type), if it is not yet.
int MakeExclusive(int i) {
  Inode& n = g_state.inodes[i];
  if (n.exclusive) return 0;
  if (n.lease_type == 0 || !n.lease_owned) return -EPERM;  // no lease of this process's
  const int rc = leasefs_convert_lease(n.fd, n.lease_id, 0, 0, n.lease_type,
                                       LEASEFS_LEASE_EXCLUSIVE | LEASEFS_LEASE_NONBLOCK, 0, 0);
  if (rc != 0) return rc;
  n.exclusive = true;
  return 0;
}

// After the last pin of inode `i`: the lease breakable again, or the inode
// released if no mapping needs it any more.
void AfterLastPin(int i) {
  Inode& n = g_state.inodes[i];
  if (n.exclusive) {
    const int rc = leasefs_convert_lease(n.fd, n.lease_id, 0, 0, n.lease_type,
                                         LEASEFS_LEASE_NONBLOCK, 0, 0);
    if (rc != 0) {
      Log("inode %llu: lease not made breakable again: %s",
          static_cast<unsigned long long>(n.ino), strerror(-rc));
    }
    n.exclusive = false;
  }
  if (!InodeHasRegions(i)) ReleaseInode(i);
}

// Ends pin slot `p` at the daemon and forgets it; REQUIRES g_mu.
int EndPin(int p, bool after) {
  Pin& pin = g_state.pin_table[p];
  const int i = pin.inode;
  const PinContext& pc = g_state.contexts[pin.context];
  const int rc = leasefs_pin_unregister(g_state.inodes[i].fd, &pc.ctx, pin.pin_id);
  if (rc != 0 && rc != -ENOENT) {
    Log("unpin %llu: %s", static_cast<unsigned long long>(pin.pin_id), strerror(-rc));
  }
  pin = Pin{};
  if (--g_state.inodes[i].pins == 0 && after) AfterLastPin(i);
  return rc == -ENOENT ? 0 : rc;
}

// Finds the piece run behind [a, a + len): one region's inode, contiguous
// file offsets. Returns the inode and the file offset of `a`, or -errno.
int Resolve(const char* a, uint64_t len, uint64_t* file_off) {
  int p = PieceAt(a);
  if (p < 0) return -ENOENT;
  const int i = g_state.regions[g_state.pieces[p].region].inode;
  *file_off = g_state.pieces[p].file_off + static_cast<uint64_t>(a - g_state.pieces[p].addr);
  const char* end = a + len;
  for (;;) {
    const Piece& c = g_state.pieces[p];
    const char* c_end = c.addr + c.len;
    if (c_end >= end) return i;
    const int q = PieceAt(c_end);
    if (q < 0) return -EINVAL;
    const Piece& d = g_state.pieces[q];
    if (g_state.regions[d.region].inode != i || d.file_off != c.file_off + c.len) return -EINVAL;
    p = q;
  }
}

}  // namespace

void UnpinInode(int i) {
  bool any = false;
  for (int p = 0; p < kMaxPins; ++p) {
    const Pin& pin = g_state.pin_table[p];
    if (!pin.used || pin.inode != i) continue;
    Log("inode %llu: ending pin %llu before its mappings go",
        static_cast<unsigned long long>(g_state.inodes[i].ino),
        static_cast<unsigned long long>(pin.pin_id));
    // A real device's registration moves off the blocks before they go.
    auto fence = __atomic_load_n(&g_state.fence, __ATOMIC_ACQUIRE);
    if (pin.provider == LEASEFS_PIN_VERBS && fence != nullptr) fence(pin.pin_id);
    (void)EndPin(p, false);
    any = true;
  }
  if (!any) return;
  Inode& n = g_state.inodes[i];
  if (n.exclusive) {
    // A lease that is breaking or revoked cannot be converted; the caller
    // releases it next anyway.
    (void)leasefs_convert_lease(n.fd, n.lease_id, 0, 0, n.lease_type, LEASEFS_LEASE_NONBLOCK, 0,
                                0);
    n.exclusive = false;
  }
}

void Invalidate(const void* addr, size_t len) {
  auto hook = __atomic_load_n(&g_state.invalidate, __ATOMIC_ACQUIRE);
  if (hook != nullptr) hook(addr, len);
}

void ForgetPinsAfterFork() {
  for (Pin& pin : g_state.pin_table) pin = Pin{};
  for (Inode& n : g_state.inodes) n.pins = 0;
  for (PinContext& pc : g_state.contexts) {
    if (pc.used) leasefs_pin_context_close(&pc.ctx);
    pc = PinContext{};
  }
}

}  // namespace leasefs::run

using namespace leasefs::run;  // NOLINT: the exported C functions below

namespace leasefs::run {
// Pins [addr, addr + len) with `provider`: run_pin.h. Takes g_mu.
int PinRange(const void* addr, size_t len, uint32_t provider, uint32_t flags,
             struct leasefs_run_pin* out);
}  // namespace leasefs::run

extern "C" __attribute__((visibility("default"))) int leasefs_run_pin_range(
    const void* addr, size_t len, uint32_t flags, struct leasefs_run_pin* out) {
  return PinRange(addr, len, LEASEFS_PIN_SOFTNIC, flags, out);
}

extern "C" __attribute__((visibility("default"))) int leasefs_run_pin_range_verbs(
    const void* addr, size_t len, uint32_t flags, struct leasefs_run_pin* out) {
  return PinRange(addr, len, LEASEFS_PIN_VERBS, flags, out);
}

extern "C" __attribute__((visibility("default"))) void leasefs_run_set_fence_hook(
    void (*hook)(uint64_t pin_id)) {
  __atomic_store_n(&g_state.fence, hook, __ATOMIC_RELEASE);
}

int leasefs::run::PinRange(const void* addr, size_t len, uint32_t provider, uint32_t flags,
                           struct leasefs_run_pin* out) {
  if (addr == nullptr || len == 0 || out == nullptr) return -EINVAL;
  if (PieceCount() == 0) return -ENOENT;
  Locked lock;
  uint64_t file_off = 0;
  const int i = Resolve(static_cast<const char*>(addr), len, &file_off);
  if (i < 0) return i;
  Inode& n = g_state.inodes[i];
  if ((flags & LEASEFS_PIN_REMOTE_WRITE) != 0 && !n.fd_writable) return -EACCES;
  const int p = NewPin();
  if (p < 0) return -ENOSPC;
  const int c = ContextFor(i);
  if (c < 0) return c;
  if (const int rc = MakeExclusive(i); rc != 0) return rc;
  struct stat st;
  if (fstat(n.fd, &st) != 0) return -errno;
  const uint64_t block = st.st_blksize > 0 ? static_cast<uint64_t>(st.st_blksize) : 4096;
  const uint64_t start = file_off / block * block;
  const uint64_t end = (file_off + len + block - 1) / block * block;
  uint64_t pin_id = 0, rkey = 0;
  const PinContext& pc = g_state.contexts[c];
  const int rc = leasefs_pin_register(n.fd, &pc.ctx, start, end - start, provider, flags,
                                      &pin_id, &rkey);
  if (rc != 0) {
    if (n.pins == 0) AfterLastPin(i);
    return rc;
  }
  g_state.pin_table[p] = Pin{true, i, n.gen, c, pin_id, provider};
  ++n.pins;
  out->pin_id = pin_id;
  out->rkey = rkey;
  out->region_offset = file_off - start;
  out->region_length = end - start;
  out->softnic_port = pc.info.softnic_port;
  std::memcpy(out->softnic_address, pc.info.softnic_address, sizeof out->softnic_address);
  out->softnic_address[sizeof out->softnic_address - 1] = '\0';
  Log("pinned [%p, +%zu) of inode %llu: pin %llu, file range [%llu, %llu)", addr, len,
      static_cast<unsigned long long>(n.ino), static_cast<unsigned long long>(pin_id),
      static_cast<unsigned long long>(start), static_cast<unsigned long long>(end));
  return 0;
}

extern "C" __attribute__((visibility("default"))) int leasefs_run_unpin(uint64_t pin_id) {
  Locked lock;
  for (int p = 0; p < kMaxPins; ++p) {
    if (g_state.pin_table[p].used && g_state.pin_table[p].pin_id == pin_id) return EndPin(p, true);
  }
  // A break ended it already (UnpinInode), or it never was.
  return 0;
}

extern "C" __attribute__((visibility("default"))) void leasefs_run_set_invalidate_hook(
    void (*hook)(const void* addr, size_t len)) {
  __atomic_store_n(&g_state.invalidate, hook, __ATOMIC_RELEASE);
}
