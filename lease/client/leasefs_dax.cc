// The C API of the DAX path (leasefs_dax.h): DAX_INFO once per mount, the
// pool opened by the caller, DAX_MAP answers mapped extent by extent.
#include "lease/client/leasefs_dax.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace {

// --- the per-mount cache ------------------------------------------------------
//
// Lock-free, so that a fork in the middle of a call can leave nothing locked
// in the child and a signal handler or the shim's fork handlers may call in:
// a slot is claimed by a compare-and-swap of its device, filled, then
// published by `ready`; a caller that finds its mount's slot claimed but not
// ready asks DAX_INFO itself. A descriptor is published by compare-and-swap
// too; the loser of a race closes its own.

struct PoolInfo {
  uint64_t pool_bytes = 0;
  uint32_t block_size = 0;
  uint8_t uuid[16] = {};
};

struct MountSlot {
  std::atomic<uint64_t> dev{0};  // st_dev + 1; 0: free
  std::atomic<bool> ready{false};
  PoolInfo info;                 // written before `ready`, constant after
  std::atomic<int> fd_rw{-1};
  std::atomic<int> fd_ro{-1};
};

constexpr size_t kMountSlots = 16;
MountSlot g_mounts[kMountSlots];

// DAX_INFO of the mount `fd` is on; the path too when `path` is not null
// (4096 bytes).
int QueryInfo(int fd, PoolInfo* info, char* path) {
  leasefs_dax_info di{};
  if (ioctl(fd, LEASEFS_IOC_DAX_INFO, &di) != 0) return -errno;
  if (di.block_size == 0 || di.path_len >= sizeof di.path || di.path[0] != '/') return -EPROTO;
  info->pool_bytes = di.pool_bytes;
  info->block_size = di.block_size;
  std::memcpy(info->uuid, di.uuid, sizeof info->uuid);
  if (path != nullptr) std::memcpy(path, di.path, di.path_len + 1);
  return 0;
}

// The slot of device `dev`, claimed and filled if there is none yet; null
// when every slot is taken or another thread is filling it.
MountSlot* SlotFor(int fd, uint64_t dev) {
  for (MountSlot& s : g_mounts) {
    uint64_t cur = s.dev.load(std::memory_order_acquire);
    if (cur == dev + 1) return s.ready.load(std::memory_order_acquire) ? &s : nullptr;
    if (cur != 0) continue;
    if (!s.dev.compare_exchange_strong(cur, dev + 1, std::memory_order_acq_rel)) {
      if (cur == dev + 1) return s.ready.load(std::memory_order_acquire) ? &s : nullptr;
      continue;
    }
    if (QueryInfo(fd, &s.info, nullptr) != 0) {
      s.dev.store(0, std::memory_order_release);  // free it again: maybe not leasefs at all
      return nullptr;
    }
    s.ready.store(true, std::memory_order_release);
    return &s;
  }
  return nullptr;
}

// The cache slot of `fd`'s mount in *slot, null when it cannot be had (the
// caller then asks DAX_INFO itself). 0 or fstat's -errno.
int SlotOf(int fd, MountSlot** slot) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  *slot = SlotFor(fd, static_cast<uint64_t>(st.st_dev));
  return 0;
}

using PoolPath = char[sizeof(leasefs_dax_info::path)];

// Opens the pool at `path` (as DAX_INFO named it), with the caller's
// credentials, and checks that it is the mounted one (its superblock's uuid,
// bytes 40..56 of block 0).
int OpenPool(const PoolPath& path, bool writable, const PoolInfo& expect) {
  const int pool = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (pool < 0) return -errno;
  uint8_t uuid[16];
  if (pread(pool, uuid, sizeof uuid, 40) != static_cast<ssize_t>(sizeof uuid) ||
      std::memcmp(uuid, expect.uuid, sizeof uuid) != 0) {
    close(pool);
    return -ESTALE;
  }
  return pool;
}

// The cached pool descriptor of `slot` (opened on first use: one DAX_INFO
// for the path, which must still name the slot's pool).
int PoolFd(int fd, bool writable, MountSlot* slot) {
  std::atomic<int>& cached = writable ? slot->fd_rw : slot->fd_ro;
  int cur = cached.load(std::memory_order_acquire);
  if (cur >= 0) return cur;
  if (!writable) {  // a read-write descriptor serves readers too
    if (const int rw = slot->fd_rw.load(std::memory_order_acquire); rw >= 0) return rw;
  }
  PoolInfo now;
  PoolPath path;
  if (const int rc = QueryInfo(fd, &now, path); rc != 0) return rc;
  if (std::memcmp(now.uuid, slot->info.uuid, sizeof now.uuid) != 0) return -ESTALE;
  const int pool = OpenPool(path, writable, slot->info);
  if (pool < 0) return pool;
  if (cached.compare_exchange_strong(cur, pool, std::memory_order_acq_rel)) return pool;
  close(pool);
  return cur;
}

// --- the extent digest ----------------------------------------------------------
//
// FNV-1a over the extents with adjacent runs merged, so that the digest does
// not depend on how the range was split into DAX_MAP calls.
struct Digest {
  uint64_t hash = 14695981039346656037ull;
  leasefs_dax_extent run{};
  bool have = false;

  void Mix(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      hash ^= (v >> (8 * i)) & 0xff;
      hash *= 1099511628211ull;
    }
  }
  void Emit() {
    if (!have) return;
    Mix(run.file_offset);
    Mix(run.pool_offset);
    Mix(run.length);
    Mix(run.flags);
  }
  void Add(const leasefs_dax_extent& e) {
    const bool hole = (e.flags & LEASEFS_DAX_HOLE) != 0;
    if (have && run.flags == e.flags && run.file_offset + run.length == e.file_offset &&
        (hole || run.pool_offset + run.length == e.pool_offset)) {
      run.length += e.length;
      return;
    }
    Emit();
    run = e;
    run.reserved = 0;
    if (hole) run.pool_offset = 0;
    have = true;
  }
  uint64_t Final() {
    Emit();
    have = false;
    return hash;
  }
};

// --- mapping ------------------------------------------------------------------------

int Confirm(int fd, uint64_t map_id) {
  struct leasefs_dax_unmap u{};
  u.map_id = map_id;
  return ioctl(fd, LEASEFS_IOC_DAX_UNMAP, &u) == 0 ? 0 : -errno;
}

void ConfirmAll(int fd, const uint64_t* ids, unsigned n) {
  for (unsigned i = 0; i < n; ++i) (void)Confirm(fd, ids[i]);
}

// One DAX_MAP call on `fd` for file bytes [pos, end): 0 with *req the
// answer, or -errno.
int AskMap(int fd, uint64_t pos, uint64_t end, bool writable, struct leasefs_dax_map* req) {
  std::memset(req, 0, sizeof *req);
  req->offset = pos;
  req->length = end - pos;
  req->flags = writable ? LEASEFS_DAX_WRITE : 0;
  return ioctl(fd, LEASEFS_IOC_DAX_MAP, req) == 0 ? 0 : -errno;
}

// Checks one DAX_MAP answer for the range asked from `pos` to `end`.
bool AnswerMakesSense(const struct leasefs_dax_map& req, uint64_t pos, uint64_t end,
                      const PoolInfo& info) {
  if (req.count > LEASEFS_DAX_MAX || req.length > end - pos) return false;
  const uint64_t bs = info.block_size;
  uint64_t at = pos;
  for (uint32_t i = 0; i < req.count; ++i) {
    const leasefs_dax_extent& e = req.extents[i];
    const bool hole = (e.flags & LEASEFS_DAX_HOLE) != 0;
    if (e.file_offset != at || e.length == 0 || e.length % bs != 0) return false;
    if (!hole && (e.pool_offset % bs != 0 || e.pool_offset > info.pool_bytes ||
                  e.length > info.pool_bytes - e.pool_offset))
      return false;
    at += e.length;
  }
  return at == pos + req.length;
}

// The state of one leasefs_dax_map call while it maps.
struct MapJob {
  int fd;
  int pool;
  int prot;
  int map_flags;
  bool writable;
  char* base;
  uint64_t offset;
  uint64_t length;
  PoolInfo info;
  leasefs_dax_mapping* out;
};

// Maps the extents of one answer at their places.
int MapExtents(const MapJob& job, const struct leasefs_dax_map& req, Digest* digest) {
  for (uint32_t i = 0; i < req.count; ++i) {
    const leasefs_dax_extent& e = req.extents[i];
    char* at = job.base + (e.file_offset - job.offset);
    void* got;
    if ((e.flags & LEASEFS_DAX_HOLE) != 0) {
      if (job.writable) return -EPROTO;  // the ABI promises blocks for every writable byte
      const int prot = job.map_flags == MAP_SHARED ? (job.prot & ~PROT_WRITE) : job.prot;
      got = mmap(at, e.length, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      job.out->holes = 1;
    } else {
      got = mmap(at, e.length, job.prot, job.map_flags | MAP_FIXED, job.pool,
                 static_cast<off_t>(e.pool_offset));
    }
    if (got == MAP_FAILED) return -errno;
    digest->Add(e);
  }
  return 0;
}

// DAX_MAP calls until the range is covered or the file ends.
int MapAll(const MapJob& job) {
  leasefs_dax_mapping* out = job.out;
  const uint64_t end = job.offset + job.length;
  uint64_t pos = job.offset;
  Digest digest;
  while (pos < end) {
    if (out->map_id_count == LEASEFS_DAX_MAP_CALLS) return -E2BIG;
    struct leasefs_dax_map req;  // 4 KiB: on the stack, so that no call allocates
    if (const int rc = AskMap(job.fd, pos, end, job.writable, &req); rc != 0) return rc;
    out->map_ids[out->map_id_count++] = req.map_id;
    // The pool we map from must be the one these extents are of: a cached
    // pool of a mount whose device number came back for another one is not.
    if (std::memcmp(req.pool_uuid, job.info.uuid, sizeof req.pool_uuid) != 0) return -ESTALE;
    if (!AnswerMakesSense(req, pos, end, job.info)) return -EPROTO;
    if (const int rc = MapExtents(job, req, &digest); rc != 0) return rc;
    pos += req.length;
    const uint64_t bs = job.info.block_size;
    const uint64_t eof = (req.file_size + bs - 1) / bs * bs;
    if (req.length == 0 || pos >= eof) break;  // the rest is past the end of the file
  }
  out->covered = pos - job.offset;
  out->layout_hash = digest.Final();
  return 0;
}

// Replaces [base, base + len) by PROT_NONE memory.
void Reserve(void* base, uint64_t len) {
  (void)mmap(base, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}

bool ValidArgs(uint64_t offset, uint64_t length, int prot, int map_flags, const PoolInfo& info) {
  const uint64_t bs = info.block_size;
  const long page = sysconf(_SC_PAGESIZE);
  if (page <= 0 || bs % static_cast<uint64_t>(page) != 0) return false;
  if (length == 0 || offset % bs != 0 || length % bs != 0 || offset + length < offset) return false;
  if ((prot & PROT_READ) == 0 || (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) != 0) return false;
  return map_flags == MAP_SHARED || map_flags == MAP_PRIVATE;
}

// One leasefs_dax_map, through the mount cache if `cached`.
int DaxMap(int fd, uint64_t offset, uint64_t length, int prot, int map_flags, void* addr_hint,
           struct leasefs_dax_mapping* out, bool cached) {
  if (out == nullptr) return -EINVAL;
  MapJob job{};
  MountSlot* slot = nullptr;
  if (cached) {
    if (const int rc = SlotOf(fd, &slot); rc != 0) return rc;
  }
  PoolPath path;  // without a slot: DAX_INFO once, for the info and the path
  if (slot != nullptr) {
    job.info = slot->info;
  } else if (const int rc = QueryInfo(fd, &job.info, path); rc != 0) {
    return rc;
  }
  if (!ValidArgs(offset, length, prot, map_flags, job.info)) return -EINVAL;
  job.writable = map_flags == MAP_SHARED && (prot & PROT_WRITE) != 0;
  // Without a slot the descriptor is the call's own, closed below.
  job.pool = slot != nullptr ? PoolFd(fd, job.writable, slot)
                             : OpenPool(path, job.writable, job.info);
  if (job.pool < 0) return job.pool;
  void* base = addr_hint;
  if (base == nullptr) {
    base = mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
      const int err = errno;
      if (slot == nullptr) close(job.pool);
      return -err;
    }
  }
  *out = leasefs_dax_mapping{};
  out->addr = base;
  out->offset = offset;
  out->length = length;
  out->writable = job.writable;
  out->map_flags = map_flags;
  job = MapJob{fd, job.pool, prot, map_flags, job.writable, static_cast<char*>(base),
               offset, length, job.info, out};
  const int rc = MapAll(job);
  // A stale slot is never used again: this mount's calls go uncached.
  if (rc == -ESTALE && slot != nullptr) slot->ready.store(false, std::memory_order_release);
  if (rc == 0 && addr_hint != nullptr && out->covered < length) {
    Reserve(static_cast<char*>(base) + out->covered, length - out->covered);
  }
  if (slot == nullptr) close(job.pool);  // the mappings keep the pool file
  if (rc == 0) return 0;
  // Unwind: first make the blocks unreachable, then say so.
  if (addr_hint == nullptr) {
    munmap(base, length);
  } else {
    Reserve(base, length);
  }
  ConfirmAll(fd, out->map_ids, out->map_id_count);
  *out = leasefs_dax_mapping{};
  return rc;
}

}  // namespace

extern "C" {

int leasefs_dax_map(int fd, uint64_t offset, uint64_t length, int prot, int map_flags,
                    void* addr_hint, struct leasefs_dax_mapping* out) {
  const int rc = DaxMap(fd, offset, length, prot, map_flags, addr_hint, out, true);
  if (rc != -ESTALE) return rc;
  // The cache named another pool (see MapAll): ask afresh, uncached.
  return DaxMap(fd, offset, length, prot, map_flags, addr_hint, out, false);
}

int leasefs_dax_unmap(int fd, const struct leasefs_dax_mapping* m, int keep_reserved) {
  int rc = 0;
  if (keep_reserved) {
    if (mmap(m->addr, m->length, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
      rc = -errno;
  } else if (munmap(m->addr, m->length) != 0) {
    rc = -errno;
  }
  // A mapping we failed to drop must not be confirmed as dropped.
  if (rc != 0) return rc;
  for (unsigned i = 0; i < m->map_id_count && i < LEASEFS_DAX_MAP_CALLS; ++i) {
    if (const int c = Confirm(fd, m->map_ids[i]); c != 0 && rc == 0) rc = c;
  }
  return rc;
}

int leasefs_dax_confirm(int fd, uint64_t map_id) { return Confirm(fd, map_id); }

int leasefs_dax_adopt(int fd, struct leasefs_dax_mapping* m) {
  uint64_t ids[LEASEFS_DAX_MAP_CALLS];
  unsigned n = 0;
  const uint64_t end = m->offset + m->covered;
  uint64_t pos = m->offset;
  Digest digest;
  while (pos < end) {
    if (n == LEASEFS_DAX_MAP_CALLS) {
      ConfirmAll(fd, ids, n);
      return -E2BIG;
    }
    struct leasefs_dax_map req;
    if (const int rc = AskMap(fd, pos, end, m->writable != 0, &req); rc != 0) {
      ConfirmAll(fd, ids, n);
      return rc;
    }
    ids[n++] = req.map_id;
    if (req.count > LEASEFS_DAX_MAX || req.length == 0 || req.length > end - pos) break;
    for (uint32_t i = 0; i < req.count; ++i) digest.Add(req.extents[i]);
    pos += req.length;
  }
  if (pos != end || digest.Final() != m->layout_hash) {
    ConfirmAll(fd, ids, n);
    return -ESTALE;
  }
  std::memcpy(m->map_ids, ids, n * sizeof ids[0]);
  m->map_id_count = n;
  return 0;
}

int leasefs_dax_pool_fd(int fd, int writable) {
  MountSlot* slot = nullptr;
  if (const int rc = SlotOf(fd, &slot); rc != 0) return rc;
  if (slot == nullptr) {
    PoolInfo info;  // not leasefs, or not cached: nobody would close it
    const int rc = QueryInfo(fd, &info, nullptr);
    return rc != 0 ? rc : -ENFILE;
  }
  return PoolFd(fd, writable != 0, slot);
}

}  // extern "C"
