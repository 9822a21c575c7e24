// The shim's tables and what happens to a mapping when it is dropped or
// degraded (shim.h).
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "lease/client/leasefs_lease.h"
#include "tools/run/shim.h"

namespace leasefs::run {

pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
State g_state;

// --- the real calls ---------------------------------------------------------

namespace {

using MmapFn = void* (*)(void*, size_t, int, int, int, off_t);
using MunmapFn = int (*)(void*, size_t);
using MremapFn = void* (*)(void*, size_t, size_t, int, ...);
using MprotectFn = int (*)(void*, size_t, int);

MmapFn g_mmap = nullptr;
MunmapFn g_munmap = nullptr;
MremapFn g_mremap = nullptr;
MprotectFn g_mprotect = nullptr;

thread_local bool t_in_shim = false;

}  // namespace

void ResolveReal() {
  // dlsym may allocate, and an allocator may call mmap: inside the shim, so
  // that such a call takes the raw system call instead of coming back here.
  InShimScope scope;
  if (g_mmap == nullptr) g_mmap = reinterpret_cast<MmapFn>(dlsym(RTLD_NEXT, "mmap"));
  if (g_munmap == nullptr) g_munmap = reinterpret_cast<MunmapFn>(dlsym(RTLD_NEXT, "munmap"));
  if (g_mremap == nullptr) g_mremap = reinterpret_cast<MremapFn>(dlsym(RTLD_NEXT, "mremap"));
  if (g_mprotect == nullptr)
    g_mprotect = reinterpret_cast<MprotectFn>(dlsym(RTLD_NEXT, "mprotect"));
}

// Each real call: the next definition once resolved, else the system call.
void* RealMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (g_mmap != nullptr) return g_mmap(addr, len, prot, flags, fd, off);
  return reinterpret_cast<void*>(syscall(SYS_mmap, addr, len, prot, flags, fd, off));
}

int RealMunmap(void* addr, size_t len) {
  if (g_munmap != nullptr) return g_munmap(addr, len);
  return static_cast<int>(syscall(SYS_munmap, addr, len));
}

void* RealMremap(void* old, size_t old_len, size_t new_len, int flags, void* new_addr) {
  if (g_mremap != nullptr) return g_mremap(old, old_len, new_len, flags, new_addr);
  return reinterpret_cast<void*>(syscall(SYS_mremap, old, old_len, new_len, flags, new_addr));
}

int RealMprotect(void* addr, size_t len, int prot) {
  if (g_mprotect != nullptr) return g_mprotect(addr, len, prot);
  return static_cast<int>(syscall(SYS_mprotect, addr, len, prot));
}

bool InShim() { return t_in_shim; }
InShimScope::InShimScope() : was_(t_in_shim) { t_in_shim = true; }
InShimScope::~InShimScope() { t_in_shim = was_; }

void Log(const char* fmt, ...) {
  if (!g_state.verbose) return;
  char line[512];
  int n = std::snprintf(line, sizeof line, "leasefs-run[%d]: ", static_cast<int>(getpid()));
  va_list ap;
  va_start(ap, fmt);
  const int m = std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, fmt, ap);
  va_end(ap);
  n += m < 0 ? 0 : m;
  if (n > static_cast<int>(sizeof line) - 2) n = static_cast<int>(sizeof line) - 2;
  line[n++] = '\n';
  (void)!write(STDERR_FILENO, line, static_cast<size_t>(n));
}

size_t PageSize() { return static_cast<size_t>(getpagesize()); }  // no guard: no libstdc++

// --- tables ------------------------------------------------------------------------

int FindInode(uint64_t dev, uint64_t ino) {
  for (int i = 0; i < kMaxInodes; ++i) {
    const Inode& n = g_state.inodes[i];
    if (n.used && n.dev == dev && n.ino == ino) return i;
  }
  return -1;
}

int NewInode() {
  for (int i = 0; i < kMaxInodes; ++i) {
    Inode& n = g_state.inodes[i];
    if (n.used) continue;
    const uint32_t gen = n.gen + 1;
    n = Inode{};
    n.used = true;
    n.gen = gen;
    return i;
  }
  return -1;
}

int NewRegion(int inode) {
  for (int r = 0; r < kMaxRegions; ++r) {
    Region& g = g_state.regions[r];
    if (g.used) continue;
    g = Region{};
    g.used = true;
    g.inode = inode;
    return r;
  }
  return -1;
}

int NewPiece(int region, char* addr, uint64_t len, uint64_t file_off, int prot) {
  for (int p = 0; p < kMaxPieces; ++p) {
    Piece& c = g_state.pieces[p];
    if (c.used) continue;
    c = Piece{true, region, addr, len, file_off, prot};
    ++g_state.regions[region].pieces;
    __atomic_add_fetch(&g_state.npieces, 1, __ATOMIC_RELAXED);
    return p;
  }
  return -1;
}

int PieceAt(const char* addr) {
  for (int p = 0; p < kMaxPieces; ++p) {
    const Piece& c = g_state.pieces[p];
    if (c.used && addr >= c.addr && addr < c.addr + c.len) return p;
  }
  return -1;
}

bool AnyPieceIn(const char* a, const char* b) {
  for (const Piece& c : g_state.pieces) {
    if (c.used && c.addr < b && a < c.addr + c.len) return true;
  }
  return false;
}

int PieceCount() { return __atomic_load_n(&g_state.npieces, __ATOMIC_RELAXED); }

bool InodeHasRegions(int i) {
  for (const Region& g : g_state.regions) {
    if (g.used && g.inode == i) return true;
  }
  return false;
}

bool SplitAt(char* addr) {
  const int p = PieceAt(addr);
  if (p < 0 || g_state.pieces[p].addr == addr) return true;
  Piece& c = g_state.pieces[p];
  const uint64_t head = static_cast<uint64_t>(addr - c.addr);
  const int q = NewPiece(c.region, addr, c.len - head, c.file_off + head, c.prot);
  if (q < 0) return false;
  g_state.pieces[p].len = head;
  return true;
}

namespace {

void ConfirmIds(int fd, leasefs_dax_mapping* m) {
  for (unsigned i = 0; i < m->map_id_count; ++i) {
    if (const int rc = leasefs_dax_confirm(fd, m->map_ids[i]); rc != 0)
      Log("DAX_UNMAP of map %llu: %s", static_cast<unsigned long long>(m->map_ids[i]),
          strerror(-rc));
  }
  m->map_id_count = 0;
}

// Ends region `r` (no piece left): confirms its ids, and releases its inode
// when it was the last.
void EndRegion(int r, bool confirm) {
  Region& g = g_state.regions[r];
  const int i = g.inode;
  if (confirm) ConfirmIds(g_state.inodes[i].fd, &g.m);
  g = Region{};
  // Pins keep the inode (its open file and lease) after its last mapping,
  // as a registered MR keeps its pages after munmap (pins.cc).
  if (!InodeHasRegions(i) && g_state.inodes[i].pins == 0) ReleaseInode(i);
}

void PutProtNone(char* addr, uint64_t len) {
  (void)RealMmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                 -1, 0);
}

// The bytes of piece `c` that its region's file blocks backed.
uint64_t CoveredBytes(const Piece& c) {
  const leasefs_dax_mapping& m = g_state.regions[c.region].m;
  const uint64_t end = m.offset + m.covered;
  if (c.file_off >= end) return 0;
  return end - c.file_off < c.len ? end - c.file_off : c.len;
}

// A private piece becomes an anonymous copy of its bytes, swapped in by one
// mremap (atomic for other threads). A store another thread makes to it
// between the copy and the swap is lost: docs/leasefs-run.md.
bool CopyPrivate(const Piece& c) {
  const uint64_t n = CoveredBytes(c);
  if (n == 0) return true;  // nothing but PROT_NONE: it stays so
  void* tmp = RealMmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (tmp == MAP_FAILED) return false;
  if ((c.prot & PROT_READ) == 0) (void)RealMprotect(c.addr, n, PROT_READ);
  std::memcpy(tmp, c.addr, n);
  if (RealMprotect(tmp, n, c.prot) != 0 ||
      RealMremap(tmp, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, c.addr) == MAP_FAILED) {
    (void)RealMunmap(tmp, n);
    return false;
  }
  return true;
}

// One piece: the kernel's own mapping in place of the DAX one, in one call.
void DegradePiece(const Piece& c, int fd, int map_flags) {
  bool ok;
  if (map_flags == MAP_SHARED) {
    ok = RealMmap(c.addr, c.len, c.prot, MAP_SHARED | MAP_FIXED, fd,
                  static_cast<off_t>(c.file_off)) != MAP_FAILED;
  } else {
    ok = CopyPrivate(c);
  }
  if (!ok) {
    Log("no page-cache mapping for %p (+%llu): %s; left PROT_NONE", static_cast<void*>(c.addr),
        static_cast<unsigned long long>(c.len), strerror(errno));
    PutProtNone(c.addr, c.len);
  }
}

}  // namespace

bool ForgetRange(char* a, char* b, int keep) {
  if (!SplitAt(a) || !SplitAt(b)) return false;
  for (int p = 0; p < kMaxPieces; ++p) {
    const Piece& c = g_state.pieces[p];
    if (c.used && c.region != keep && c.addr >= a && c.addr + c.len <= b) DropPiece(p);
  }
  return true;
}

void DropPiece(int p) {
  Piece& c = g_state.pieces[p];
  const int r = c.region;
  c = Piece{};
  __atomic_sub_fetch(&g_state.npieces, 1, __ATOMIC_RELAXED);
  if (--g_state.regions[r].pieces == 0) EndRegion(r, true);
}

void ReleaseInode(int i) {
  if (g_state.inodes[i].pins > 0) UnpinInode(i);  // a lease may not go before its pins
  Inode& n = g_state.inodes[i];
  if (n.lease_type != 0) {
    leasefs_lease_info info{};
    // A child of fork shares the open file but not the lease's ownership: it
    // lets go only of a lease that is breaking or revoked (the owner may have
    // taken a new one meanwhile).
    if (n.lease_owned ||
        (leasefs_get_lease(n.fd, 0, &info) == 0 && info.state != LEASEFS_STATE_ACTIVE &&
         info.id == n.lease_id)) {
      if (const int rc = leasefs_release_all(n.fd); rc != 0)
        Log("releasing the lease of inode %llu: %s", static_cast<unsigned long long>(n.ino),
            strerror(-rc));
    }
  }
  if (n.fd >= 0) close(n.fd);
  const uint32_t gen = n.gen;
  n = Inode{};
  n.gen = gen;
  WakeWatcher();
}

void DegradeRegion(int r, bool confirm) {
  Region& g = g_state.regions[r];
  const int fd = g_state.inodes[g.inode].fd;
  for (int p = 0; p < kMaxPieces; ++p) {
    Piece& c = g_state.pieces[p];
    if (!c.used || c.region != r) continue;
    Invalidate(c.addr, c.len);
    DegradePiece(c, fd, g.m.map_flags);
    c = Piece{};
    --g.pieces;
    __atomic_sub_fetch(&g_state.npieces, 1, __ATOMIC_RELAXED);
  }
  EndRegion(r, confirm);
}

void DegradeInode(int i) {
  const uint32_t gen = g_state.inodes[i].gen;
  for (int r = 0; r < kMaxRegions; ++r) {
    // The last region's end releases the inode (and the slot's gen moves on).
    if (!g_state.inodes[i].used || g_state.inodes[i].gen != gen) return;
    if (g_state.regions[r].used && g_state.regions[r].inode == i) DegradeRegion(r, true);
  }
  if (g_state.inodes[i].used && g_state.inodes[i].gen == gen) ReleaseInode(i);
}

void DropAllForExec() {
  for (int p = 0; p < kMaxPieces; ++p) {
    Piece& c = g_state.pieces[p];
    if (!c.used) continue;
    PutProtNone(c.addr, c.len);
    DropPiece(p);
  }
  // An exec ends the program's verbs objects: their pins go too.
  for (int i = 0; i < kMaxInodes; ++i) {
    if (g_state.inodes[i].used && g_state.inodes[i].pins > 0) ReleaseInode(i);
  }
}

}  // namespace leasefs::run
