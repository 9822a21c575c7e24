// Media: the pool's bytes mapped into memory, and the one layer every persist
// goes through.
//
// The engine stores with plain CPU stores (or Copy/Set below) and makes them
// durable with Flush + Drain. Correct code never relies on a store staying
// volatile until it is flushed: on real pmem a cache line can be written back
// at any moment (pmem2_get_persist_fn(3)).
//
// Implementations: Pmem2Media maps a real pool file or device with libpmem2;
// SimMedia (sim_media.h) keeps a separate "durable" image and can crash at any
// persist point, for tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

struct pmem2_map;
struct pmem2_source;

namespace leasefs::engine {

class Media {
 public:
  virtual ~Media() = default;
  Media(const Media&) = delete;
  Media& operator=(const Media&) = delete;

  char* base() const noexcept { return base_; }
  size_t size() const noexcept { return size_; }

  // Starts writing back [p, p+n) to the persistence domain.
  virtual void Flush(const void* p, size_t n) = 0;
  // Waits until every earlier Flush is durable.
  virtual void Drain() = 0;
  void Persist(const void* p, size_t n) {
    Flush(p, n);
    Drain();
  }
  // memcpy into the pool followed by Flush of the destination (no Drain).
  virtual void CopyFlush(void* dst, const void* src, size_t n);
  // memset into the pool followed by Flush of the destination (no Drain).
  // (Pmem2Media leaves out the holes of a pool file when zeroing: they read
  // as zeros already.)
  virtual void SetFlush(void* dst, int c, size_t n);

  // Bytes a single Flush covers at least (4096 for msync-based media, 64 for
  // cache-line flushing). Callers merge ranges to this granularity.
  virtual size_t flush_unit() const noexcept = 0;
  // Short name of the persistence mechanism, for logs and benchmark reports.
  virtual std::string describe() const = 0;

 protected:
  Media(char* base, size_t size) : base_(base), size_(size) {}

 private:
  char* base_;
  size_t size_;
};

struct MapOptions {
  // Open the file read-only and map it privately (PrivateMedia): stores stay
  // in this process and nothing is committed for the mapping's size.
  bool read_only = false;
  bool create = false;       // create the file if it does not exist
  uint64_t create_size = 0;  // with create (or to grow a regular file): its size
};

// A pool opened by path, which keeps the open file (for flock and, later,
// for handing to DAX clients).
class PoolMedia : public Media {
 public:
  int fd() const noexcept { return fd_.get(); }

 protected:
  PoolMedia(char* base, size_t size, UniqueFd fd) : Media(base, size), fd_(std::move(fd)) {}

 private:
  UniqueFd fd_;
};

// Opens and maps the pool at `path`: a regular file or a device-DAX
// character device through libpmem2 (Pmem2Media), or a block device such as
// /dev/pmem0, which libpmem2 does not map, through BlockDeviceMedia; with
// opts.read_only, a file or block device through PrivateMedia.
// Errors: ENOENT (no such pool), EACCES, EINVAL (another kind of file, too
// small, or device DAX read-only), and errors from libpmem2 with its message.
Result<std::unique_ptr<PoolMedia>> OpenPool(const std::string& path, const MapOptions& opts);

// A pool file or DAX device mapped with libpmem2.
class Pmem2Media final : public PoolMedia {
 public:
  // Maps the open pool `fd`, shared (see OpenPool).
  static Result<std::unique_ptr<Pmem2Media>> Open(UniqueFd fd, const std::string& path);
  ~Pmem2Media() override;

  void Flush(const void* p, size_t n) override;
  void Drain() override;
  void CopyFlush(void* dst, const void* src, size_t n) override;
  void SetFlush(void* dst, int c, size_t n) override;
  size_t flush_unit() const noexcept override { return flush_unit_; }
  std::string describe() const override;

 private:
  Pmem2Media(UniqueFd fd, pmem2_map* map);
  // Zeroes the parts of [p, p+n) that are not holes of the pool file (all
  // of it on a device). SetFlush's way for large zeroing.
  void ZeroData(char* p, size_t n);
  static constexpr size_t kSkipHolesBytes = 1 << 20;  // and the chunk it looks at

  pmem2_map* map_;
  size_t flush_unit_;
  void (*flush_)(const void*, size_t);
  void (*drain_)();
  void* (*memcpy_)(void*, const void*, size_t, unsigned);
  void* (*memset_)(void*, int, size_t, unsigned);
};

// A block device (a /dev/pmem* namespace in fsdax mode, or any other) mapped
// with mmap: stores go through the device's page cache and msync makes them
// durable. Not direct access; for DAX use the device-DAX form (/dev/dax*).
class BlockDeviceMedia final : public PoolMedia {
 public:
  // Maps the open block device `fd`, shared. Errors: EINVAL (too small),
  // errno from ioctl(BLKGETSIZE64) or mmap.
  static Result<std::unique_ptr<BlockDeviceMedia>> Open(UniqueFd fd, const std::string& path);
  ~BlockDeviceMedia() override;

  void Flush(const void* p, size_t n) override;
  void Drain() override {}
  size_t flush_unit() const noexcept override { return 4096; }
  std::string describe() const override;

 private:
  BlockDeviceMedia(char* base, size_t size, UniqueFd fd) : PoolMedia(base, size, std::move(fd)) {}
};

// A read-only view of a pool file or block device: a private, copy-on-write
// mapping, so that what the engine or the checker stores (the replay of a
// committed journal transaction) stays in this process and the pool is
// never written. Flush and Drain do nothing. The mapping commits no memory for its
// size (see Open), so a pool of any size can be opened; only the pages
// actually stored to take memory.
class PrivateMedia final : public PoolMedia {
 public:
  // Maps the pool `fd`, opened read-only, of `size` bytes. Errors: EINVAL
  // (too small), ENOMEM (see the comment in Open), errno from mmap.
  static Result<std::unique_ptr<PrivateMedia>> Open(UniqueFd fd, const std::string& path,
                                                    uint64_t size);
  ~PrivateMedia() override;

  void Flush(const void*, size_t) override {}
  void Drain() override {}
  size_t flush_unit() const noexcept override { return 4096; }
  std::string describe() const override { return "private mapping (no persistence)"; }

 private:
  PrivateMedia(char* base, size_t size, UniqueFd fd) : PoolMedia(base, size, std::move(fd)) {}
};

}  // namespace leasefs::engine
