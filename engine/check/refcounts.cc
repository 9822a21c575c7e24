// Phase "quarantine" (first: the records, checked on their own) and phase
// "refcounts" (last): invariant 7 of docs/pool_format.md. A reach record
// holds a reference only on the blocks it covers that no file references.
#include <algorithm>
#include <cstring>

#include "engine/check/checker.h"
#include "engine/check/util.h"

namespace leasefs::check::internal {

using namespace layout;

void Checker::CheckQuarantine() {
  if (sb_.version == kFormatVersionV1) {
    CheckQuarantineV1();
    return;
  }
  auto* table = reinterpret_cast<QuarantineRecord*>(BlockPtr(sb_.quarantine_start));
  const uint64_t count = sb_.quarantine_blocks * kQuarantinePerBlock;
  for (uint64_t i = 0; i < count; ++i) {
    QuarantineRecord q;
    std::memcpy(&q, &table[i], sizeof(q));
    if (q.length == 0) continue;
    const std::string what = RecordProblem(q);
    if (!what.empty()) {
      // Not lossy: a record keeps no file's data, only blocks from reuse.
      Problem("quarantine record " + std::to_string(i), what, "removed the record");
      writer_->Zero(&table[i], sizeof(QuarantineRecord));
      continue;
    }
    quarantine_.push_back({q.pool_block, Offset(&table[i]), q.length, static_cast<uint32_t>(i)});
  }
}

std::string Checker::RecordProblem(const QuarantineRecord& q) const {
  if (!InData(q.pool_block, q.length))
    return Plural(q.length, "block", "blocks") + " from block " + std::to_string(q.pool_block) +
           " lie outside the data area";
  if (q.map_id == 0) return "map id 0";
  if (q.owner_pid <= 0) return "owner pid " + std::to_string(q.owner_pid);
  if (q.flags & ~kKnownReachFlags) return "unknown flags " + std::to_string(q.flags);
  return {};  // uid: any value is a user's
}

// Version 1 reserved the table, and no version of leasefs wrote it: an entry
// there is damage. Removing it lets the next mount upgrade the pool.
void Checker::CheckQuarantineV1() {
  auto* table = reinterpret_cast<QuarantineEntryV1*>(BlockPtr(sb_.quarantine_start));
  const uint64_t count = sb_.quarantine_blocks * kQuarantineV1PerBlock;
  static const QuarantineEntryV1 kZero{};
  for (uint64_t i = 0; i < count; ++i) {
    if (std::memcmp(&table[i], &kZero, sizeof(kZero)) == 0) continue;
    Problem("quarantine entry " + std::to_string(i),
            "a format version 1 pool never uses its quarantine table", "removed the entry");
    writer_->Zero(&table[i], sizeof(QuarantineEntryV1));
  }
}

// The union of the live records' ranges, in block order.
std::vector<std::pair<uint64_t, uint64_t>> Checker::CoveredRuns() const {
  std::vector<std::pair<uint64_t, uint64_t>> r;  // [first, end)
  for (const QuarantineRef& q : quarantine_)
    if (q.length) r.emplace_back(q.pool_block, q.pool_block + q.length);
  std::sort(r.begin(), r.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [b, e] : r) {
    if (!out.empty() && b <= out.back().second) {
      out.back().second = std::max(out.back().second, e);
    } else {
      out.emplace_back(b, e);
    }
  }
  return out;
}

// A record covering metadata (chain, xattr or directory blocks) is damage:
// DAX hands out file data only, and a covered block never changes owner.
// The metadata keeps the block; the record goes.
void Checker::DropRecordsOverMetadata() {
  std::vector<uint64_t> claimed;  // covered and claimed, ascending
  for (const auto& [b, e] : CoveredRuns())
    for (uint64_t x = b; x < e; ++x)
      if (blocks_->claimed(x)) claimed.push_back(x);
  if (claimed.empty()) return;
  for (QuarantineRef& q : quarantine_) {
    auto it = std::lower_bound(claimed.begin(), claimed.end(), q.pool_block);
    if (it == claimed.end() || *it - q.pool_block >= q.length) continue;
    Problem("quarantine record " + std::to_string(q.index),
            "covers block " + std::to_string(*it) + ", which holds metadata", "removed the record");
    writer_->Zero(Ptr(q.loc), sizeof(QuarantineRecord));
    q.length = 0;
  }
}

// Once the files' references are counted: every covered block that no file
// references holds one reference, the quarantine's.
void Checker::CountQuarantined() {
  for (const QuarantineRef& q : quarantine_) report_->reach_records += q.length ? 1 : 0;
  for (const auto& [b, e] : CoveredRuns()) {
    for (uint64_t x = b; x < e; ++x) {
      if (blocks_->count(x) != 0) continue;
      blocks_->Increment(x);
      ++report_->quarantined_blocks;
    }
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
  // Only the initialized refcounts: past the mark every block is free and
  // its refcount bytes mean nothing (CheckRefcountMark has raised the mark
  // over every block referenced).
  const uint64_t end = CoveredEnd();
  for (uint64_t block = sb_.data_start; block < end; ++block) {
    Progress("refcounts", block - sb_.data_start, end - sb_.data_start);
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
  Progress("refcounts", end - sb_.data_start, end - sb_.data_start);
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
