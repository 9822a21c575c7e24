// The in-memory model the exerciser holds a mounted file to: the exact bytes
// a file must contain after each data or block-map operation, and the rules
// that say which arguments an operation refuses, with which errno.
//
// The rules are those of XFS, which leasefs follows (include/leasefs/ioctl.h):
// block-aligned collapse/insert/clone, collapse short of end of file, insert
// inside the file, clones within one file not overlapping, and the VFS's
// clamping of copy_file_range at the source's end of file.
//
// Pure code: no I/O, so the model can be checked on its own (suite unit).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace leasefs::fsx {

inline constexpr uint64_t kBlockSize = 4096;
// leasefs's size limit (EFBIG beyond; engine/layout.h kMaxFileSize).
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 60;

// The expected contents of one file. Holes and preallocated space read as
// zeros, so a file is just its bytes.
class FileModel {
 public:
  const std::string& bytes() const { return data_; }
  uint64_t size() const { return data_.size(); }

  // pwrite(2): past end of file the gap reads as zeros.
  void Write(uint64_t off, std::string_view data);
  // ftruncate(2): shrinks, or grows with zeros.
  void Truncate(uint64_t size);
  // fallocate mode 0 / FALLOC_FL_KEEP_SIZE: contents unchanged; without
  // keep_size the file grows to off + len with zeros.
  void Preallocate(uint64_t off, uint64_t len, bool keep_size);
  // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: zeros inside the file; the
  // size never changes.
  void PunchHole(uint64_t off, uint64_t len);
  // FALLOC_FL_ZERO_RANGE [| KEEP_SIZE]: zeros; without keep_size the file
  // grows to off + len.
  void ZeroRange(uint64_t off, uint64_t len, bool keep_size);
  // Collapse: removes [off, off + len) and moves the tail down.
  // REQUIRES: off + len <= size()
  void Collapse(uint64_t off, uint64_t len);
  // Insert: len zero bytes at off, the tail moves up.
  // REQUIRES: off <= size()
  void Insert(uint64_t off, uint64_t len);
  // Clone and copy_file_range once their length is settled: bytes
  // [dst_off, dst_off + len) become src's [src_off, src_off + len) as they
  // were before the call, and the file grows to dst_off + len if shorter.
  // src may be *this. REQUIRES: len == 0 or src_off + len <= src.size()
  void CopyFrom(const FileModel& src, uint64_t src_off, uint64_t dst_off, uint64_t len);

 private:
  std::string data_;
};

// --- Which arguments a call refuses ------------------------------------------
// Each returns 0 when the call must succeed, else the errno it must fail with.

// LEASEFS_IOC_COLLAPSE_RANGE: EINVAL unless off and len are block-aligned,
// len > 0 and off + len < size.
int CollapseErrno(uint64_t size, uint64_t off, uint64_t len);
// LEASEFS_IOC_INSERT_RANGE: EINVAL unless off and len are block-aligned,
// len > 0 and off < size; EFBIG if size + len passes kMaxFileSize.
int InsertErrno(uint64_t size, uint64_t off, uint64_t len);

// What a clone (LEASEFS_IOC_CLONE_RANGE, FICLONERANGE) must do.
struct CloneOutcome {
  int err = 0;       // 0 or the errno
  uint64_t len = 0;  // bytes cloned when err == 0 (src_length 0 resolved)
};
// The VFS's remap rules: len 0 means "to src's end of file"; offsets
// block-aligned; src_off + len within src; len block-aligned unless the range
// ends at src's end of file and dst_off + len reaches dst's end of file (then
// dst becomes dst[0, dst_off) + src[src_off, src_size)); within one file the
// ranges, with an unaligned end rounded up to the block, must not overlap.
CloneOutcome Clone(uint64_t src_size, uint64_t src_off, uint64_t len, uint64_t dst_size,
                   uint64_t dst_off, bool same_file);

// What copy_file_range(2) must do: copy min(len, src_size - src_off) bytes
// (0 at or past src's end of file) at any alignment; EINVAL if, within one
// file, that clamped source range overlaps the destination range.
struct CopyOutcome {
  int err = 0;
  uint64_t len = 0;  // bytes copied when err == 0
};
CopyOutcome CopyRange(uint64_t src_size, uint64_t src_off, uint64_t len, uint64_t dst_off,
                      bool same_file);

}  // namespace leasefs::fsx
