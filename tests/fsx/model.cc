#include "tests/fsx/model.h"

#include <algorithm>
#include <cassert>
#include <cerrno>

namespace leasefs::fsx {

namespace {

bool Aligned(uint64_t v) { return v % kBlockSize == 0; }
uint64_t AlignUp(uint64_t v) { return (v + kBlockSize - 1) / kBlockSize * kBlockSize; }

}  // namespace

void FileModel::Write(uint64_t off, std::string_view data) {
  if (data.empty()) return;  // writes nothing, extends nothing
  if (off + data.size() > data_.size()) data_.resize(off + data.size(), '\0');
  data_.replace(off, data.size(), data);
}

void FileModel::Truncate(uint64_t size) { data_.resize(size, '\0'); }

void FileModel::Preallocate(uint64_t off, uint64_t len, bool keep_size) {
  if (!keep_size && off + len > data_.size()) data_.resize(off + len, '\0');
}

void FileModel::PunchHole(uint64_t off, uint64_t len) {
  if (off >= data_.size()) return;
  uint64_t end = std::min<uint64_t>(off + len, data_.size());
  std::fill(data_.begin() + off, data_.begin() + end, '\0');
}

void FileModel::ZeroRange(uint64_t off, uint64_t len, bool keep_size) {
  Preallocate(off, len, keep_size);
  PunchHole(off, len);
}

void FileModel::Collapse(uint64_t off, uint64_t len) {
  assert(off + len <= data_.size());
  data_.erase(off, len);
}

void FileModel::Insert(uint64_t off, uint64_t len) {
  assert(off <= data_.size());
  data_.insert(off, len, '\0');
}

void FileModel::CopyFrom(const FileModel& src, uint64_t src_off, uint64_t dst_off, uint64_t len) {
  if (len == 0) return;
  assert(src_off + len <= src.size());
  // Take the source bytes first: src may be this file.
  std::string bytes = src.data_.substr(src_off, len);
  Write(dst_off, bytes);
}

int CollapseErrno(uint64_t size, uint64_t off, uint64_t len) {
  if (!Aligned(off) || !Aligned(len) || len == 0) return EINVAL;
  if (off + len >= size) return EINVAL;
  return 0;
}

int InsertErrno(uint64_t size, uint64_t off, uint64_t len) {
  if (!Aligned(off) || !Aligned(len) || len == 0) return EINVAL;
  if (off >= size) return EINVAL;
  if (len > kMaxFileSize - size) return EFBIG;
  return 0;
}

CloneOutcome Clone(uint64_t src_size, uint64_t src_off, uint64_t len, uint64_t dst_size,
                   uint64_t dst_off, bool same_file) {
  // In the order the VFS checks (fs/remap_range.c), so that arguments wrong
  // in several ways give the errno the first check gives.
  if (len == 0) {
    if (src_off == src_size) return {0, 0};
    if (src_off > src_size) return {EINVAL, 0};
    len = src_size - src_off;
  }
  if (!Aligned(src_off) || !Aligned(dst_off)) return {EINVAL, 0};
  if (src_off >= src_size || len > src_size - src_off) return {EINVAL, 0};
  uint64_t block_len = len;  // the range in whole blocks, for the overlap check
  if (src_off + len == src_size) {
    block_len = AlignUp(src_size) - src_off;
    // An unaligned end of file may not land inside the destination.
    if (!Aligned(len) && dst_off + len < dst_size) return {EINVAL, 0};
  } else if (!Aligned(len)) {
    return {EINVAL, 0};
  }
  if (same_file && dst_off + block_len > src_off && dst_off < src_off + block_len)
    return {EINVAL, 0};
  if (dst_off + len > kMaxFileSize) return {EFBIG, 0};
  return {0, len};
}

CopyOutcome CopyRange(uint64_t src_size, uint64_t src_off, uint64_t len, uint64_t dst_off,
                      bool same_file) {
  uint64_t n = src_off >= src_size ? 0 : std::min(len, src_size - src_off);
  if (same_file && n > 0 && src_off + n > dst_off && src_off < dst_off + n) return {EINVAL, 0};
  return {0, n};
}

}  // namespace leasefs::fsx
