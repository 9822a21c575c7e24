#include "fusefs/engine/media.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include <libpmem2.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "fusefs/engine/layout.h"

namespace leasefs::engine {

void Media::CopyFlush(void* dst, const void* src, size_t n) {
  std::memcpy(dst, src, n);
  Flush(dst, n);
}

void Media::SetFlush(void* dst, int c, size_t n) {
  std::memset(dst, c, n);
  Flush(dst, n);
}

namespace {

Status Pmem2Error(const char* what, int rc) {
  // libpmem2 returns -errno or a PMEM2_E_* code; its message says which.
  const int err = (rc < 0 && rc > -4096) ? -rc : EINVAL;
  return Status::Error(err, std::string(what) + ": " + pmem2_errormsg());
}

// Owners for the libpmem2 objects that only live during Open.
struct ConfigDeleter {
  void operator()(pmem2_config* c) const { pmem2_config_delete(&c); }
};
struct SourceDeleter {
  void operator()(pmem2_source* s) const { pmem2_source_delete(&s); }
};
using ConfigPtr = std::unique_ptr<pmem2_config, ConfigDeleter>;
using SourcePtr = std::unique_ptr<pmem2_source, SourceDeleter>;

Result<UniqueFd> OpenPoolFile(const std::string& path, const MapOptions& opts) {
  int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (opts.create) flags |= O_CREAT;
  UniqueFd fd(::open(path.c_str(), flags, 0600));
  if (!fd.valid()) return Status::FromErrno("open " + path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno("fstat " + path);
  if (S_ISREG(st.st_mode)) {
    if (opts.create_size != 0 && static_cast<uint64_t>(st.st_size) != opts.create_size) {
      if (ftruncate(fd.get(), static_cast<off_t>(opts.create_size)) != 0)
        return Status::FromErrno("resize " + path);
    }
  } else if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return Status::Error(EINVAL, path + " is neither a regular file nor a pmem/DAX device");
  }
  return fd;
}

Status TooSmall(const std::string& path, uint64_t size) {
  return Status::Error(EINVAL,
                       path + " is too small to hold a pool (" + std::to_string(size) + " bytes)");
}

}  // namespace

Result<std::unique_ptr<PoolMedia>> OpenPool(const std::string& path, const MapOptions& opts) {
  LFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenPoolFile(path, opts));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno("fstat " + path);
  if (S_ISBLK(st.st_mode)) {
    LFS_ASSIGN_OR_RETURN(auto m, BlockDeviceMedia::Open(std::move(fd), path, opts));
    return std::unique_ptr<PoolMedia>(std::move(m));
  }
  LFS_ASSIGN_OR_RETURN(auto m, Pmem2Media::Open(std::move(fd), path, opts));
  return std::unique_ptr<PoolMedia>(std::move(m));
}

Result<std::unique_ptr<Pmem2Media>> Pmem2Media::Open(UniqueFd fd, const std::string& path,
                                                     const MapOptions& opts) {
  pmem2_source* raw_src = nullptr;
  if (int rc = pmem2_source_from_fd(&raw_src, fd.get()); rc != 0)
    return Pmem2Error("pmem2_source_from_fd", rc);
  SourcePtr src(raw_src);
  size_t size = 0;
  if (int rc = pmem2_source_size(src.get(), &size); rc != 0)
    return Pmem2Error("pmem2_source_size", rc);
  if (size < layout::kMinPoolBytes) return TooSmall(path, size);

  pmem2_config* raw_cfg = nullptr;
  if (int rc = pmem2_config_new(&raw_cfg); rc != 0) return Pmem2Error("pmem2_config_new", rc);
  ConfigPtr cfg(raw_cfg);
  // Any granularity will do: the engine flushes through whatever libpmem2
  // grants (msync for files that are not DAX).
  pmem2_config_set_required_store_granularity(cfg.get(), PMEM2_GRANULARITY_PAGE);
  if (opts.read_only) {
    // Private, writable mapping: journal replay and repairs can be tried in
    // memory without touching the pool.
    pmem2_config_set_sharing(cfg.get(), PMEM2_PRIVATE);
  }
  pmem2_map* map = nullptr;
  if (int rc = pmem2_map_new(&map, cfg.get(), src.get()); rc != 0)
    return Pmem2Error("pmem2_map_new", rc);
  return std::unique_ptr<Pmem2Media>(new Pmem2Media(std::move(fd), map, opts.read_only));
}

Pmem2Media::Pmem2Media(UniqueFd fd, pmem2_map* map, bool read_only)
    : PoolMedia(static_cast<char*>(pmem2_map_get_address(map)), pmem2_map_get_size(map),
                std::move(fd)),
      map_(map),
      read_only_(read_only),
      flush_(pmem2_get_flush_fn(map)),
      drain_(pmem2_get_drain_fn(map)),
      memcpy_(pmem2_get_memcpy_fn(map)),
      memset_(pmem2_get_memset_fn(map)) {
  switch (pmem2_map_get_store_granularity(map)) {
    case PMEM2_GRANULARITY_PAGE:
      flush_unit_ = layout::kBlockSize;
      break;
    default:
      flush_unit_ = 64;
      break;
  }
}

Pmem2Media::~Pmem2Media() { pmem2_map_delete(&map_); }

void Pmem2Media::Flush(const void* p, size_t n) {
  if (!read_only_ && n != 0) flush_(p, n);
}

void Pmem2Media::Drain() {
  if (!read_only_) drain_();
}

void Pmem2Media::CopyFlush(void* dst, const void* src, size_t n) {
  if (read_only_) {
    std::memcpy(dst, src, n);
    return;
  }
  // Large copies bypass the cache: the data is not read back by the daemon,
  // and non-temporal stores leave nothing to write back.
  const unsigned flags = PMEM2_F_MEM_NODRAIN | (n >= 16384 ? PMEM2_F_MEM_NONTEMPORAL : 0);
  memcpy_(dst, src, n, flags);
}

void Pmem2Media::SetFlush(void* dst, int c, size_t n) {
  if (read_only_) {
    std::memset(dst, c, n);
    return;
  }
  memset_(dst, c, n, PMEM2_F_MEM_NODRAIN);
}

std::string Pmem2Media::describe() const {
  if (read_only_) return "private mapping (no persistence)";
  return flush_unit_ == layout::kBlockSize ? "libpmem2, page granularity (msync)"
                                           : "libpmem2, cache-line granularity";
}

}  // namespace leasefs::engine

namespace leasefs::engine {

Result<std::unique_ptr<BlockDeviceMedia>> BlockDeviceMedia::Open(UniqueFd fd,
                                                                 const std::string& path,
                                                                 const MapOptions& opts) {
  uint64_t size = 0;
  if (ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return Status::FromErrno("BLKGETSIZE64 " + path);
  if (size < layout::kMinPoolBytes) return TooSmall(path, size);
  // Private when read-only, as with libpmem2: replays stay in memory.
  const int prot = PROT_READ | PROT_WRITE;
  void* p = mmap(nullptr, size, prot, opts.read_only ? MAP_PRIVATE : MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return Status::FromErrno("mmap " + path);
  return std::unique_ptr<BlockDeviceMedia>(
      new BlockDeviceMedia(static_cast<char*>(p), size, std::move(fd), opts.read_only));
}

BlockDeviceMedia::~BlockDeviceMedia() { munmap(base(), size()); }

void BlockDeviceMedia::Flush(const void* p, size_t n) {
  if (read_only_ || n == 0) return;
  const uintptr_t page = 4096;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  // msync cannot fail on a valid range of our own mapping; a device that
  // fails its writes shows up as EIO there, which the engine cannot mend
  // either way, so it is not reported.
  msync(reinterpret_cast<void*>(b), e - b, MS_SYNC);
}

std::string BlockDeviceMedia::describe() const {
  return read_only_ ? "private mapping (no persistence)" : "block device mapping (msync)";
}

}  // namespace leasefs::engine
