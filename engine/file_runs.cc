#include "engine/file_runs.h"

namespace leasefs::engine {

std::vector<FileRun> Survey(const ExtentMap& em, uint64_t first, uint64_t count) {
  std::vector<FileRun> runs;
  uint64_t at = first;
  for (const Mapping& m : em.Overlapping(first, count)) {
    if (m.file_block > at) runs.push_back({at, m.file_block - at, FileRun::kHole, 0});
    runs.push_back({m.file_block, m.length, m.unwritten() ? FileRun::kUnwritten : FileRun::kWritten,
                    m.pool_block});
    at = m.file_end();
  }
  if (at < first + count) runs.push_back({at, first + count - at, FileRun::kHole, 0});
  return runs;
}

std::vector<FileRun> SplitShared(const PoolView& pool, const std::vector<FileRun>& runs) {
  std::vector<FileRun> out;
  out.reserve(runs.size());
  for (const FileRun& r : runs) {
    if (r.kind != FileRun::kWritten) {
      out.push_back(r);
      continue;
    }
    const uint32_t* rc = pool.refcount(r.pool_block);
    for (uint64_t i = 0; i < r.length;) {
      const bool shared = rc[i] > 1;
      uint64_t j = i + 1;
      while (j < r.length && (rc[j] > 1) == shared) ++j;
      out.push_back({r.file_block + i, j - i, shared ? FileRun::kShared : FileRun::kWritten,
                     r.pool_block + i});
      i = j;
    }
  }
  return out;
}

uint64_t GoalFor(const ExtentMap& em, uint64_t file_block) {
  if (file_block == 0) return 0;
  if (auto m = em.Find(file_block - 1)) return m->pool_block + (file_block - m->file_block);
  return 0;
}

}  // namespace leasefs::engine
