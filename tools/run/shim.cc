// Not _FILE_OFFSET_BITS=64 here: <sys/mman.h> would then rename mmap to
// mmap64, and the shim must define both symbols.
#undef _FILE_OFFSET_BITS
// libleasefs_run.so: the calls leasefs-run interposes (docs/leasefs-run.md).
//
// mmap of a leasefs file becomes a DAX mapping under a layout lease of the
// shim's own open file description; munmap, mremap and mprotect keep the
// tables in step; fork makes the child an owner of what it inherited; exec
// drops every DAX mapping first. Everything else passes to the real calls.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "lease/client/leasefs_dax.h"
#include "lease/client/leasefs_lease.h"
#include "tools/run/shim.h"

namespace leasefs::run {
namespace {

constexpr long kFuseSuperMagic = 0x65735546;

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// --- which files are leasefs files with DAX --------------------------------------

struct DevVerdict {
  uint64_t dev = 0;  // st_dev + 1; 0: free
  bool dax = false;
};
constexpr int kDevCache = 32;
DevVerdict g_devs[kDevCache];  // GUARDED_BY(g_mu)

// The verdict cached for device key `key`, or null.
const DevVerdict* FindVerdict(uint64_t key) {
  for (const DevVerdict& d : g_devs) {
    if (d.dev == key) return &d;
  }
  return nullptr;
}

// True if `fd` is a regular file of a leasefs mount whose daemon serves DAX;
// fills *st. Costs fstat and fstatfs, and the version ioctl once per mount,
// all without g_mu (which it takes only to read and fill the cache): a
// thread that waits on the daemon holds up no other thread's mmap.
bool IsLeasefsDax(int fd, struct stat* st) {
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) return false;
  struct statfs sf;
  if (fstatfs(fd, &sf) != 0 || sf.f_type != kFuseSuperMagic) return false;
  const uint64_t key = static_cast<uint64_t>(st->st_dev) + 1;
  {
    Locked lock;
    if (const DevVerdict* d = FindVerdict(key)) return d->dax;
  }
  // Two threads may both ask: the answers are the same, the first is kept.
  uint64_t features = 0;
  const bool dax = leasefs_abi_version(fd, nullptr, &features) == 0 &&
                   (features & LEASEFS_FEATURE_DAX) != 0;
  Locked lock;
  if (FindVerdict(key) != nullptr) return dax;
  for (DevVerdict& d : g_devs) {
    if (d.dev == 0) {
      d = DevVerdict{key, dax};
      break;
    }
  }
  return dax;
}

// --- mmap ------------------------------------------------------------------------------

// One mmap call as the program made it.
struct MmapCall {
  void* addr;
  size_t len;  // rounded up to pages
  int prot;
  int flags;
  int fd;
  off_t off;
};

// MAP_SYNC (with MAP_SHARED_VALIDATE) asks that no page fault of the mapping
// need the filesystem's metadata to reach media first: a DAX mapping of the
// pool needs none at all (DAX_MAP made the blocks durable before it handed
// them out), so the shim grants it, as a local DAX filesystem does. That the
// pool's own medium is persistent is the pool's business (/dev/dax, /dev/pmem).
constexpr int kFlagsWeMap = MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE | MAP_FIXED |
                            MAP_FIXED_NOREPLACE | MAP_NORESERVE | MAP_POPULATE | MAP_NONBLOCK |
                            MAP_DENYWRITE | MAP_EXECUTABLE | MAP_SYNC;

bool IsShared(int flags) { return (flags & MAP_TYPE) != MAP_PRIVATE; }

// The inode entry for the program's `fd`, opened and leased as `need` asks:
// the shim's own open file description (from /proc/self/fd, read-write when
// the program's descriptor allows writing) with one lease on the whole file.
// Returns the index, or -errno.
int OpenInode(int fd, const struct stat& st, bool fd_writable) {
  int i = FindInode(static_cast<uint64_t>(st.st_dev), st.st_ino);
  if (i >= 0) return i;
  i = NewInode();
  if (i < 0) return -ENFILE;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  // O_NONBLOCK: a DAX_MAP that would have to wait for other holders' leases
  // to break fails with EWOULDBLOCK instead (the shim then uses the kernel's
  // mmap), so that the shim's lock is never held across a break.
  const int own = open(path, (fd_writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK);
  if (own < 0) {
    const int err = errno;
    g_state.inodes[i].used = false;
    return -err;
  }
  Inode& n = g_state.inodes[i];
  n.dev = static_cast<uint64_t>(st.st_dev);
  n.ino = st.st_ino;
  n.fd = own;
  n.fd_writable = fd_writable;
  return i;
}

// Makes inode `i`'s lease at least `need` (READ or WRITE): takes it, or
// converts READ to WRITE. Never waits for a break in progress (the caller
// holds g_mu, which the watcher needs to release our own breaking lease).
int EnsureLease(int i, uint32_t need) {
  Inode& n = g_state.inodes[i];
  if (n.lease_type >= need) return 0;
  if (need == LEASEFS_LEASE_WRITE && !n.fd_writable) return -EACCES;  // see docs: one description
  if (n.lease_type != 0 && !n.lease_owned) return -EAGAIN;  // the parent's lease: not ours to change
  int rc;
  if (n.lease_type == 0) {
    rc = leasefs_set_lease(n.fd, 0, 0, need, LEASEFS_LEASE_NONBLOCK, 0, 0, &n.lease_id);
  } else {
    rc = leasefs_convert_lease(n.fd, n.lease_id, 0, 0, need, LEASEFS_LEASE_NONBLOCK, 0, 0);
  }
  if (rc != 0) return rc;
  n.lease_type = need;
  n.lease_owned = true;
  WakeWatcher();
  return 0;
}

// Before a writable DAX mapping fills holes of inode `i`: the read-only
// mappings that show those holes as anonymous zero pages would no longer
// see the file, so they become page-cache mappings.
void DegradeHoleRegions(int i) {
  for (int r = 0; r < kMaxRegions; ++r) {
    const Region& g = g_state.regions[r];
    if (g.used && g.inode == i && g.m.holes != 0 && !g.m.writable) DegradeRegion(r, true);
  }
}

// Where to map: the program's fixed address, or a reservation the shim makes
// (at the hint, or with MAP_FIXED_NOREPLACE semantics). MAP_FAILED: errno.
void* Reserve(const MmapCall& c) {
  if ((c.flags & MAP_FIXED) != 0) return c.addr;
  const int fixed = c.flags & MAP_FIXED_NOREPLACE;
  return RealMmap(c.addr, c.len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | fixed,
                  -1, 0);
}

// Maps file bytes [off, off + len) of inode `i` at `base` (reserved, or
// mapped by older pieces, which it forgets) as a new region with one piece.
// Returns the region, or -errno (the range is then left PROT_NONE).
int MapRegion(int i, char* base, uint64_t len, uint64_t off, int prot, int flags) {
  const int r = NewRegion(i);
  if (r < 0) return -ENOMEM;
  Region& g = g_state.regions[r];
  const int dprot = prot | PROT_READ;
  const int mflags = IsShared(flags) ? MAP_SHARED : MAP_PRIVATE;
  if (const int rc = leasefs_dax_map(g_state.inodes[i].fd, off, len, dprot, mflags, base, &g.m);
      rc != 0) {
    g = Region{};
    return rc;
  }
  if (NewPiece(r, base, len, off, prot) < 0) {
    (void)leasefs_dax_unmap(g_state.inodes[i].fd, &g.m, 1);
    g = Region{};
    return -ENOMEM;
  }
  Log("DAX %s %s map of inode %llu [%llu, +%llu) at %p (%llu bytes backed)",
      g.m.writable ? "writable" : "read-only", mflags == MAP_SHARED ? "shared" : "private",
      static_cast<unsigned long long>(g_state.inodes[i].ino), static_cast<unsigned long long>(off),
      static_cast<unsigned long long>(len), static_cast<void*>(base),
      static_cast<unsigned long long>(g.m.covered));
  if (!ForgetRange(base, base + len, r)) Log("piece table full: %p keeps stale pieces", static_cast<void*>(base));
  return r;
}

// Leases inode `i` for the call and maps it at *base; -errno on failure.
int MapLeased(const MmapCall& c, int i, void** base) {
  const bool writable = IsShared(c.flags) && (c.prot & PROT_WRITE) != 0;
  if (const int rc = EnsureLease(i, writable ? LEASEFS_LEASE_WRITE : LEASEFS_LEASE_READ); rc != 0)
    return rc;
  *base = Reserve(c);
  if (*base == MAP_FAILED) return -errno;
  const int r = MapRegion(i, static_cast<char*>(*base), c.len, static_cast<uint64_t>(c.off),
                          c.prot, c.flags);
  const int rc = r < 0 ? r : 0;
  if (rc != 0 && (c.flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) == 0) {
    (void)RealMunmap(*base, c.len);
    *base = MAP_FAILED;
  }
  return rc;
}

// The DAX mapping of a leasefs file. Returns the address, or MAP_FAILED
// with *err (0: not for DAX, let the real mmap have it). *reserved is the
// address the shim reserved with MAP_FIXED_NOREPLACE and left (or null).
void* DaxMmap(const MmapCall& c, const struct stat& st, int* err, void** reserved) {
  const int acc = fcntl(c.fd, F_GETFL) & O_ACCMODE;
  const bool shared = IsShared(c.flags);
  // What the kernel refuses, it should refuse itself: the real mmap answers.
  if (acc == O_WRONLY || (shared && (c.prot & PROT_WRITE) != 0 && acc != O_RDWR)) return MAP_FAILED;
  if ((c.flags & ~kFlagsWeMap) != 0) {
    *err = EOPNOTSUPP;
    return MAP_FAILED;
  }
  Locked lock;
  // Before the lease: degrading may end the inode's last region, which
  // releases its lease and descriptor (OpenInode then opens anew).
  if (shared && (c.prot & PROT_WRITE) != 0) {
    if (const int old = FindInode(static_cast<uint64_t>(st.st_dev), st.st_ino); old >= 0)
      DegradeHoleRegions(old);
  }
  const int i = OpenInode(c.fd, st, acc == O_RDWR);
  if (i < 0) {
    *err = -i;
    return MAP_FAILED;
  }
  void* base = MAP_FAILED;
  if (const int rc = MapLeased(c, i, &base); rc != 0) {
    *err = -rc;
    if ((c.flags & MAP_FIXED_NOREPLACE) != 0 && base != MAP_FAILED) *reserved = base;
    if (!InodeHasRegions(i)) ReleaseInode(i);
    return MAP_FAILED;
  }
  return base;
}

// --- mremap -----------------------------------------------------------------------------

// Maps file bytes [file_off, +len) at `at` (reserved) like piece `p`: DAX,
// or the kernel's own mapping through the inode's descriptor if DAX cannot
// be had. 0 or -errno.
int MapLike(int p, char* at, uint64_t len, uint64_t file_off) {
  const Piece c = g_state.pieces[p];
  const Region& g = g_state.regions[c.region];
  const int i = g.inode;
  const int flags = g.m.map_flags;
  if (MapRegion(i, at, len, file_off, c.prot, flags) >= 0) return 0;
  if (RealMmap(at, len, c.prot, flags | MAP_FIXED, g_state.inodes[i].fd,
               static_cast<off_t>(file_off)) == MAP_FAILED)
    return -errno;
  return 0;
}

// Moves [from, +len) to `to` keeping every page as it is (pool pages, holes,
// private copies): in one call when it is one kernel mapping, else page by
// page (a DAX piece is one kernel mapping per extent).
void MovePages(char* from, char* to, uint64_t len) {
  if (RealMremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED) return;
  const size_t page = PageSize();
  for (uint64_t o = 0; o < len; o += page) {
    (void)RealMremap(from + o, page, page, MREMAP_MAYMOVE | MREMAP_FIXED, to + o);
  }
}

// Piece `p` (exactly [a, a + old_len)) moved to `to` (null: anywhere) and
// resized to new_len: the kept part moves, a grown tail is mapped from the
// file. MAP_FAILED with errno on failure (nothing changed).
void* MoveGrow(int p, uint64_t old_len, uint64_t new_len, void* to) {
  char* a = g_state.pieces[p].addr;
  const int fixed = to != nullptr ? MAP_FIXED : 0;
  if (to != nullptr && static_cast<char*>(to) < a + old_len && a < static_cast<char*>(to) + new_len) {
    errno = EINVAL;  // as the kernel: the ranges must not overlap
    return MAP_FAILED;
  }
  char* dest = static_cast<char*>(
      RealMmap(to, new_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | fixed, -1, 0));
  if (dest == MAP_FAILED) return MAP_FAILED;
  if (fixed != 0) (void)ForgetRange(dest, dest + new_len, -1);
  const uint64_t keep = old_len < new_len ? old_len : new_len;
  if (new_len > keep) {
    if (const int rc = MapLike(p, dest + keep, new_len - keep, g_state.pieces[p].file_off + keep);
        rc != 0) {
      (void)RealMunmap(dest, new_len);
      errno = -rc;
      return MAP_FAILED;
    }
  }
  if (keep < old_len) {
    (void)RealMunmap(a + keep, old_len - keep);
    (void)ForgetRange(a + keep, a + old_len, -1);
  }
  MovePages(a, dest, keep);
  // The range may be several pieces (a mapping grown by mremap is two).
  for (Piece& c : g_state.pieces) {
    if (c.used && c.addr >= a && c.addr < a + keep) c.addr = dest + (c.addr - a);
  }
  return dest;
}

// True if [piece p's start, end) is what the kernel would take for one
// mapping: pieces that follow each other in memory and in the file, of one
// file, with one protection and mapping type (a mapping that mremap grew is
// two pieces, as the shim maps the tail by itself).
bool OneMapping(int p, const char* end) {
  for (;;) {
    const Piece& c = g_state.pieces[p];
    if (end <= c.addr + c.len) return true;
    const int q = PieceAt(c.addr + c.len);
    if (q < 0) return false;
    const Piece& d = g_state.pieces[q];
    const Region& g = g_state.regions[c.region];
    const Region& h = g_state.regions[d.region];
    if (d.addr != c.addr + c.len || d.file_off != c.file_off + c.len || d.prot != c.prot ||
        g.inode != h.inode || g.m.map_flags != h.m.map_flags)
      return false;
    p = q;
  }
}

// mremap of the pieces from `p` on that are exactly [a, a + old_len) (one
// mapping, see OneMapping).
void* RemapPiece(int p, uint64_t old_len, uint64_t new_len, int flags, void* new_addr) {
  char* a = g_state.pieces[p].addr;
  if ((flags & MREMAP_FIXED) != 0) return MoveGrow(p, old_len, new_len, new_addr);
  if (new_len <= old_len) {
    if (new_len < old_len) {
      (void)RealMunmap(a + new_len, old_len - new_len);
      (void)ForgetRange(a + new_len, a + old_len, -1);
    }
    return a;
  }
  // Grow in place if the addresses after it are free.
  const uint64_t more = new_len - old_len;
  void* tail = RealMmap(a + old_len, more, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (tail != MAP_FAILED) {
    if (MapLike(p, a + old_len, more, g_state.pieces[p].file_off + old_len) == 0) return a;
    (void)RealMunmap(tail, more);
  }
  if ((flags & MREMAP_MAYMOVE) == 0) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return MoveGrow(p, old_len, new_len, nullptr);
}

void* ShimMremap(void* old, size_t old_size, size_t new_size, int flags, void* new_addr) {
  Locked lock;
  char* a = static_cast<char*>(old);
  const int p0 = PieceAt(a);
  if (p0 < 0) return RealMremap(old, old_size, new_size, flags, new_addr);
  const uint64_t page = PageSize();
  const uint64_t old_len = RoundUp(old_size, page), new_len = RoundUp(new_size, page);
  if (reinterpret_cast<uintptr_t>(a) % page != 0 || old_len == 0 || new_len == 0 ||
      (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED)) != 0 ||
      ((flags & MREMAP_FIXED) != 0 && (flags & MREMAP_MAYMOVE) == 0)) {
    errno = EINVAL;
    return MAP_FAILED;
  }
  if (!OneMapping(p0, a + old_len)) {
    errno = EFAULT;  // as the kernel for a range over more than one mapping
    return MAP_FAILED;
  }
  if (!SplitAt(a) || !SplitAt(a + old_len)) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return RemapPiece(PieceAt(a), old_len, new_len, flags, new_addr);
}

// --- msync ---------------------------------------------------------------------------------

// msync of DAX pieces: the pool pages are persisted by the real msync; then
// an fsync of each writable-mapped file is where plain (page-cache)
// mappings of it catch up with our stores (docs/mmap.md, "DAX").
int ShimMsync(void* addr, size_t len, int flags) {
  const int rc = static_cast<int>(syscall(SYS_msync, addr, len, flags));
  if (rc != 0 || (flags & MS_ASYNC) != 0) return rc;
  int fds[kMaxInodes];
  int n = 0;
  {
    Locked lock;
    char* a = static_cast<char*>(addr);
    char* b = a + RoundUp(len, PageSize());
    for (const Piece& p : g_state.pieces) {
      if (!p.used || p.addr >= b || p.addr + p.len <= a) continue;
      const Region& g = g_state.regions[p.region];
      if (!g.m.writable || g.m.map_flags != MAP_SHARED) continue;
      const int fd = g_state.inodes[g.inode].fd;
      if (std::find(fds, fds + n, fd) == fds + n && n < kMaxInodes) fds[n++] = fd;
    }
  }
  for (int i = 0; i < n; ++i) (void)fsync(fds[i]);
  return 0;
}

// --- mprotect, munmap ------------------------------------------------------------------

int ShimMprotect(void* addr, size_t len, int prot) {
  Locked lock;
  char* a = static_cast<char*>(addr);
  char* b = a + RoundUp(len, PageSize());
  if (!AnyPieceIn(a, b)) return RealMprotect(addr, len, prot);
  if (!SplitAt(a) || !SplitAt(b)) {
    errno = ENOMEM;
    return -1;
  }
  // A shared read-only DAX mapping made writable would store into holes'
  // zero pages or blocks shared by reflink: it becomes the kernel's mapping.
  for (int p = 0; p < kMaxPieces; ++p) {
    const Piece& c = g_state.pieces[p];
    if (!c.used || c.addr < a || c.addr + c.len > b) continue;
    const Region& g = g_state.regions[c.region];
    if ((prot & PROT_WRITE) != 0 && g.m.map_flags == MAP_SHARED && !g.m.writable) {
      Log("mprotect(PROT_WRITE) of a read-only DAX mapping: page-cache mapping instead");
      DegradeRegion(c.region, true);
    }
  }
  const int rc = RealMprotect(addr, len, prot);
  if (rc != 0) return rc;
  for (Piece& c : g_state.pieces) {
    if (c.used && c.addr >= a && c.addr + c.len <= b) c.prot = prot;
  }
  return 0;
}

int ShimMunmap(void* addr, size_t len) {
  Locked lock;
  char* a = static_cast<char*>(addr);
  char* b = a + RoundUp(len, PageSize());
  if (len == 0 || reinterpret_cast<uintptr_t>(a) % PageSize() != 0 || !AnyPieceIn(a, b))
    return RealMunmap(addr, len);
  if (!SplitAt(a) || !SplitAt(b)) {
    errno = ENOMEM;
    return -1;
  }
  const int rc = RealMunmap(addr, len);
  if (rc != 0) return rc;
  const int saved = errno;
  (void)ForgetRange(a, b, -1);
  errno = saved;
  return 0;
}

// --- mmap ---------------------------------------------------------------------------------

bool Candidate(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  (void)addr;
  return !InShim() && fd >= 0 && (flags & MAP_ANONYMOUS) == 0 && len != 0 && prot != PROT_NONE &&
         off >= 0 && static_cast<uint64_t>(off) % PageSize() == 0;
}

// The program's mmap: DAX for a leasefs file, else the kernel's. *dax tells
// which (a DAX mapping has updated the tables itself).
void* ProgramMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off, bool* dax) {
  *dax = false;
  if (!Candidate(addr, len, prot, flags, fd, off)) return RealMmap(addr, len, prot, flags, fd, off);
  struct stat st;
  if (!IsLeasefsDax(fd, &st)) return RealMmap(addr, len, prot, flags, fd, off);
  const MmapCall c{addr, RoundUp(len, PageSize()), prot, flags, fd, off};
  int err = 0;
  void* reserved = nullptr;
  if (void* r = DaxMmap(c, st, &err, &reserved); r != MAP_FAILED) {
    *dax = true;
    return r;
  }
  if (err != 0 && g_state.strict) {
    if (reserved != nullptr) (void)RealMunmap(reserved, c.len);
    Log("mmap of inode %llu fails (LEASEFS_RUN_STRICT): %s",
        static_cast<unsigned long long>(st.st_ino), strerror(err));
    errno = err;
    return MAP_FAILED;
  }
  if (err != 0) {
    Log("mmap of inode %llu: no DAX (%s): the kernel's mmap", static_cast<unsigned long long>(st.st_ino),
        strerror(err));
  }
  if (reserved == nullptr) return RealMmap(addr, len, prot, flags, fd, off);
  void* r = RealMmap(reserved, len, prot, (flags & ~MAP_FIXED_NOREPLACE) | MAP_FIXED, fd, off);
  const int saved = errno;
  if (r == MAP_FAILED) (void)RealMunmap(reserved, c.len);
  errno = saved;
  return r;
}

// Every mmap of the program ends here. A MAP_FIXED mapping of the kernel's
// (anonymous, PROT_NONE, another file, or the fallback) may have replaced
// DAX pieces: the shim forgets them, or a later break would map the file
// over the program's new memory.
void* ShimMmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  // The shim's own calls: it keeps the tables itself.
  if (InShim()) return RealMmap(addr, len, prot, flags, fd, off);
  bool dax = false;
  void* r = ProgramMmap(addr, len, prot, flags, fd, off, &dax);
  if (r == MAP_FAILED || dax || (flags & MAP_FIXED) == 0 || PieceCount() == 0) return r;
  const int saved = errno;
  {
    Locked lock;
    char* a = static_cast<char*>(r);
    if (!ForgetRange(a, a + RoundUp(len, PageSize()), -1))
      Log("piece table full: %p keeps stale pieces", r);
  }
  errno = saved;
  return r;
}

// --- fork, exec, start -----------------------------------------------------------------------

void BeforeFork() { pthread_mutex_lock(&g_mu); }
// In the parent: a leased open file is now shared with the child, and
// either may release its lease when it breaks. The watcher, asleep in a poll
// without timeout built before the fork, is woken to poll again with the
// shared files' periodic check: a POLLPRI that the child answers first is
// gone by the time the parent's poll asks the daemon for it.
void AfterForkParent() {
  bool shared_now = false;
  for (Inode& n : g_state.inodes) {
    const bool shared = n.shared || (n.used && n.lease_type != 0);
    shared_now = shared_now || (shared && !n.shared);
    n.shared = shared;
  }
  if (shared_now) WakeWatcher();
  pthread_mutex_unlock(&g_mu);
}

// In the child: the watcher is gone, the leases are the parent's (the open
// file descriptions are shared), and every mapping is recorded for the
// parent only: the child asks for its own records (leasefs_dax_adopt), and
// drops what it cannot adopt.
void AfterForkChild() {
  {
    InShimScope scope;
    g_state.pid = getpid();
    ResetWatcherAfterFork();
    ForgetPinsAfterFork();
    for (Inode& n : g_state.inodes) {
      n.lease_owned = false;
      n.shared = n.used && n.lease_type != 0;
    }
    for (int r = 0; r < kMaxRegions; ++r) {
      Region& g = g_state.regions[r];
      if (!g.used) continue;
      if (const int rc = leasefs_dax_adopt(g_state.inodes[g.inode].fd, &g.m); rc != 0) {
        Log("child cannot own the DAX mapping at %p: %s; page-cache mapping instead", g.m.addr,
            strerror(-rc));
        DegradeRegion(r, false);
      }
    }
    WakeWatcher();
  }
  pthread_mutex_unlock(&g_mu);
}

bool EnvFlag(const char* name) {
  const char* v = getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

__attribute__((constructor)) void Start() {
  ResolveReal();
  g_state.pid = getpid();
  g_state.verbose = EnvFlag("LEASEFS_RUN_VERBOSE");
  g_state.strict = EnvFlag("LEASEFS_RUN_STRICT");
  pthread_atfork(BeforeFork, AfterForkParent, AfterForkChild);
}

}  // namespace

void BeforeExec() {
  // A vfork child (another pid, sharing our memory) must change nothing.
  if (PieceCount() == 0 || getpid() != g_state.pid) return;
  Locked lock;
  Log("exec: dropping every DAX mapping first");
  DropAllForExec();
}

}  // namespace leasefs::run

// --- the interposed symbols --------------------------------------------------------------

#define LEASEFS_EXPORT extern "C" __attribute__((visibility("default")))

using leasefs::run::InShim;
using leasefs::run::PieceCount;

LEASEFS_EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return leasefs::run::ShimMmap(addr, len, prot, flags, fd, off);
}

LEASEFS_EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
  return leasefs::run::ShimMmap(addr, len, prot, flags, fd, static_cast<off_t>(off));
}

LEASEFS_EXPORT int munmap(void* addr, size_t len) {
  if (!InShim()) leasefs::run::Invalidate(addr, len);  // registrations there stop first
  if (InShim() || PieceCount() == 0) return leasefs::run::RealMunmap(addr, len);
  return leasefs::run::ShimMunmap(addr, len);
}

LEASEFS_EXPORT int msync(void* addr, size_t len, int flags) {
  if (InShim() || PieceCount() == 0) return static_cast<int>(syscall(SYS_msync, addr, len, flags));
  return leasefs::run::ShimMsync(addr, len, flags);
}

LEASEFS_EXPORT int mprotect(void* addr, size_t len, int prot) {
  if (InShim() || PieceCount() == 0) return leasefs::run::RealMprotect(addr, len, prot);
  return leasefs::run::ShimMprotect(addr, len, prot);
}

LEASEFS_EXPORT void* mremap(void* old, size_t old_size, size_t new_size, int flags, ...) {
  void* new_addr = nullptr;
  if ((flags & MREMAP_FIXED) != 0) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  if (!InShim()) {
    // What may stop being mapped where it was: all of it if it may move,
    // else the tail it loses.
    if ((flags & MREMAP_MAYMOVE) != 0) {
      leasefs::run::Invalidate(old, old_size);
    } else if (new_size < old_size) {
      leasefs::run::Invalidate(static_cast<char*>(old) + new_size, old_size - new_size);
    }
  }
  if (InShim() || PieceCount() == 0)
    return leasefs::run::RealMremap(old, old_size, new_size, flags, new_addr);
  return leasefs::run::ShimMremap(old, old_size, new_size, flags, new_addr);
}
