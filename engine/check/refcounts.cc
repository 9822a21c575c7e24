// Phase "quarantine" (first: its entries are references too) and phase
// "refcounts" (last): invariant 7 of docs/pool_format.md.
#include <algorithm>
#include <cstring>

#include "engine/check/checker.h"
#include "engine/check/util.h"

namespace leasefs::check::internal {

using namespace layout;

void Checker::CheckQuarantine() {
  auto* table = reinterpret_cast<QuarantineEntry*>(BlockPtr(sb_.quarantine_start));
  const uint64_t count = sb_.quarantine_blocks * kQuarantinePerBlock;
  for (uint64_t i = 0; i < count; ++i) {
    QuarantineEntry q;
    std::memcpy(&q, &table[i], sizeof(q));
    if (q.length == 0) continue;
    if (!InData(q.pool_block, q.length)) {
      Problem("quarantine entry " + std::to_string(i),
              Plural(q.length, "block", "blocks") + " from block " + std::to_string(q.pool_block) +
                  " lie outside the data area",
              "removed the entry", true);
      writer_->Zero(&table[i], sizeof(QuarantineEntry));
      continue;
    }
    blocks_->Add(q.pool_block, q.length);
    quarantine_.push_back({q.pool_block, Offset(&table[i]), q.length, static_cast<uint32_t>(i)});
  }
}

// Compares every stored refcount with the references found, reporting runs of
// neighbouring blocks that are wrong the same way as one finding. A refcount
// that is high by exactly the references reclaimed orphans released is fixed
// without a finding.
void Checker::CheckRefcounts() {
  std::vector<std::pair<uint64_t, int>> events;  // (block, +1 / -1), sorted
  for (const auto& [first, end] : released_) {
    events.emplace_back(first, 1);
    events.emplace_back(end, -1);
  }
  std::sort(events.begin(), events.end());
  size_t next_event = 0;
  uint32_t released = 0;

  uint64_t first = 0, count = 0;
  uint32_t run_stored = 0, run_want = 0;
  bool run_expected = false;
  for (uint64_t block = sb_.data_start; block < sb_.total_blocks; ++block) {
    for (; next_event < events.size() && events[next_event].first == block; ++next_event)
      released += events[next_event].second;
    const uint32_t stored = Read<uint32_t>(Offset(RefcountAt(block)));
    const uint32_t want = blocks_->count(block);
    if (stored == want) continue;
    const bool expected = stored == want + released;
    if (count != 0 && block == first + count && stored == run_stored && want == run_want &&
        expected == run_expected) {
      ++count;
      continue;
    }
    if (count != 0) ReportRefcountRun(first, count, run_stored, run_want, run_expected);
    first = block;
    count = 1;
    run_stored = stored;
    run_want = want;
    run_expected = expected;
  }
  if (count != 0) ReportRefcountRun(first, count, run_stored, run_want, run_expected);
}

void Checker::ReportRefcountRun(uint64_t first, uint64_t count, uint32_t stored, uint32_t want,
                                bool expected) {
  writer_->Fill32(RefcountAt(first), want, count);
  if (expected) return;
  const std::string where =
      count == 1 ? "block " + std::to_string(first)
                 : "blocks " + std::to_string(first) + "-" + std::to_string(first + count - 1);
  const std::string has = "refcount " + std::to_string(stored) + " but ";
  std::string what;
  if (want == 0) {
    what = has + "nothing references it (leaked)";
  } else if (stored == 0) {
    what = has + Plural(want, "reference", "references") + " (in use but marked free)";
  } else {
    what = has + Plural(want, "reference", "references");
  }
  Problem(where, what, "set it to " + std::to_string(want));
}

}  // namespace leasefs::check::internal
