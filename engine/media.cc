#include "engine/media.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <libpmem2.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "engine/layout.h"

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

Result<uint64_t> BlockDeviceSize(int fd, const std::string& path) {
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) return Status::FromErrno("BLKGETSIZE64 " + path);
  return size;
}

// A read-only open of a pool file or block device. Device DAX cannot be
// opened so: the kernel maps it shared only (and libpmem2 refused a private
// mapping of it before this was plain mmap).
Result<std::unique_ptr<PoolMedia>> OpenPrivate(UniqueFd fd, const std::string& path,
                                               const struct stat& st) {
  if (S_ISCHR(st.st_mode))
    return Status::Error(EINVAL, path + ": device DAX cannot be mapped privately");
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    LFS_ASSIGN_OR_RETURN(size, BlockDeviceSize(fd.get(), path));
  }
  LFS_ASSIGN_OR_RETURN(auto m, PrivateMedia::Open(std::move(fd), path, size));
  return std::unique_ptr<PoolMedia>(std::move(m));
}

}  // namespace

Result<std::unique_ptr<PoolMedia>> OpenPool(const std::string& path, const MapOptions& opts) {
  LFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenPoolFile(path, opts));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno("fstat " + path);
  if (opts.read_only) return OpenPrivate(std::move(fd), path, st);
  if (S_ISBLK(st.st_mode)) {
    LFS_ASSIGN_OR_RETURN(auto m, BlockDeviceMedia::Open(std::move(fd), path));
    return std::unique_ptr<PoolMedia>(std::move(m));
  }
  LFS_ASSIGN_OR_RETURN(auto m, Pmem2Media::Open(std::move(fd), path));
  return std::unique_ptr<PoolMedia>(std::move(m));
}

Result<std::unique_ptr<Pmem2Media>> Pmem2Media::Open(UniqueFd fd, const std::string& path) {
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
  pmem2_map* map = nullptr;
  if (int rc = pmem2_map_new(&map, cfg.get(), src.get()); rc != 0)
    return Pmem2Error("pmem2_map_new", rc);
  return std::unique_ptr<Pmem2Media>(new Pmem2Media(std::move(fd), map));
}

Pmem2Media::Pmem2Media(UniqueFd fd, pmem2_map* map)
    : PoolMedia(static_cast<char*>(pmem2_map_get_address(map)), pmem2_map_get_size(map),
                std::move(fd)),
      map_(map),
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
  if (n != 0) flush_(p, n);
}

void Pmem2Media::Drain() { drain_(); }

void Pmem2Media::CopyFlush(void* dst, const void* src, size_t n) {
  // Large copies bypass the cache: the data is not read back by the daemon,
  // and non-temporal stores leave nothing to write back.
  const unsigned flags = PMEM2_F_MEM_NODRAIN | (n >= 16384 ? PMEM2_F_MEM_NONTEMPORAL : 0);
  memcpy_(dst, src, n, flags);
}

void Pmem2Media::SetFlush(void* dst, int c, size_t n) {
  // Zeroing a large range of a pool file skips the file's holes: they read
  // as zeros already, durably (a hole is the file's own metadata), while
  // storing into one makes the kernel first allocate and clear a page per
  // 4 KiB, at a page fault each: measured in a VM, zeroing 1 GiB of a
  // never-touched tmpfs pool took 5 s, of touched pages 0.1 s.
  if (c == 0 && n >= kSkipHolesBytes) {
    ZeroData(static_cast<char*>(dst), n);
    return;
  }
  memset_(dst, c, n, PMEM2_F_MEM_NODRAIN);
}

void Pmem2Media::ZeroData(char* p, size_t n) {
  const off_t end = static_cast<off_t>(p - base() + n);
  for (off_t at = p - base(); at < end;) {
    const off_t data = lseek(fd(), at, SEEK_DATA);
    if (data < 0 && errno == ENXIO) return;  // nothing but holes from `at` on
    if (data < 0) {  // no holes here (a device): zero it all
      memset_(base() + at, 0, static_cast<size_t>(end - at), PMEM2_F_MEM_NODRAIN);
      return;
    }
    if (data >= end) return;
    // Zero up to the next chunk boundary without asking where the data ends:
    // SEEK_HOLE walks every page of the data it crosses, however far past
    // `end` that goes, while SEEK_DATA skips holes cheaply.
    constexpr off_t kChunk = kSkipHolesBytes;
    const off_t stop = std::min(end, (data / kChunk + 1) * kChunk);
    memset_(base() + data, 0, static_cast<size_t>(stop - data), PMEM2_F_MEM_NODRAIN);
    at = stop;
  }
}

std::string Pmem2Media::describe() const {
  return flush_unit_ == layout::kBlockSize ? "libpmem2, page granularity (msync)"
                                           : "libpmem2, cache-line granularity";
}

}  // namespace leasefs::engine

namespace leasefs::engine {

Result<std::unique_ptr<BlockDeviceMedia>> BlockDeviceMedia::Open(UniqueFd fd,
                                                                 const std::string& path) {
  LFS_ASSIGN_OR_RETURN(const uint64_t size, BlockDeviceSize(fd.get(), path));
  if (size < layout::kMinPoolBytes) return TooSmall(path, size);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return Status::FromErrno("mmap " + path);
  return std::unique_ptr<BlockDeviceMedia>(
      new BlockDeviceMedia(static_cast<char*>(p), size, std::move(fd)));
}

BlockDeviceMedia::~BlockDeviceMedia() { munmap(base(), size()); }

void BlockDeviceMedia::Flush(const void* p, size_t n) {
  if (n == 0) return;
  const uintptr_t page = 4096;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  // msync cannot fail on a valid range of our own mapping; a device that
  // fails its writes shows up as EIO there, which the engine cannot mend
  // either way, so it is not reported.
  msync(reinterpret_cast<void*>(b), e - b, MS_SYNC);
}

std::string BlockDeviceMedia::describe() const { return "block device mapping (msync)"; }

Result<std::unique_ptr<PrivateMedia>> PrivateMedia::Open(UniqueFd fd, const std::string& path,
                                                         uint64_t size) {
  if (size < layout::kMinPoolBytes) return TooSmall(path, size);
  // Writable, because the replay of a committed journal transaction stores
  // into it (Journal::Recover, at mount and in fsck -n); private, so that
  // those stores never reach the pool (open read-only, the file could not be
  // mapped shared and writable anyway).
  //
  // A private writable mapping is charged its whole size against the commit
  // limit, and the default heuristic overcommit (vm.overcommit_memory 0)
  // refuses one larger than RAM + swap: a 32 GiB pool could not be checked
  // on a 24 GiB machine. MAP_NORESERVE skips that charge in modes 0 and 1;
  // only the pages actually stored to (those one journal replay touches)
  // become anonymous memory. Read-only PROT_READ with writable windows
  // opened on demand would avoid the charge in mode 2 as well, but every
  // store path would have to ask first and a forgotten one would crash; in
  // mode 2 (strict, the administrator's choice) the kernel ignores
  // MAP_NORESERVE and a pool larger than the commit limit fails with ENOMEM.
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd.get(), 0);
  if (p == MAP_FAILED) return Status::FromErrno("mmap " + path);
  return std::unique_ptr<PrivateMedia>(
      new PrivateMedia(static_cast<char*>(p), size, std::move(fd)));
}

PrivateMedia::~PrivateMedia() { munmap(base(), size()); }

}  // namespace leasefs::engine
