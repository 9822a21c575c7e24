#include "engine/check/check.h"

#include <algorithm>
#include <cstring>

#include "base/clock.h"
#include "engine/check/checker.h"
#include "engine/check/util.h"
#include "engine/superblock.h"

namespace leasefs::check {

using namespace layout;

std::string Finding::ToString() const {
  switch (kind) {
    case kError:
      return "error: " + where + ": " + what;
    case kRepaired:
      return "repaired: " + where + ": " + what + (fix.empty() ? "" : " (" + fix + ")");
    case kNote:
      break;
  }
  return "note: " + where + ": " + what;
}

int CheckReport::ExitCode() const noexcept {
  if (errors != 0) return 4;
  if (repaired != 0) return 1;
  return 0;
}

namespace {

// One check of the pool, in as many runs as it takes to find the inode mark
// (a run that finds a live inode past it stops early and raises its floor;
// the runs before the last write nothing that depends on what they could
// not see).
Result<CheckReport> RunOnce(engine::Media& media, const CheckOptions& opts) {
  internal::MarkFloor floor;
  std::vector<Finding> early;  // the first run's superblock and journal findings
  bool replayed = false;
  for (bool first = true;; first = false) {
    CheckReport report;
    internal::Checker checker(media, opts, &report, &floor);
    LFS_RETURN_IF_ERROR(checker.Run());
    if (first) {
      // What the first run found and did before it read the marks (a
      // replayed journal, a restored superblock) the later runs no longer
      // see: their report carries it.
      early.assign(
          report.findings.begin(),
          report.findings.begin() + static_cast<std::ptrdiff_t>(std::min(checker.early_findings(),
                                                                         report.findings.size())));
      replayed = report.journal_replayed;
    } else {
      report.findings.insert(report.findings.begin(), early.begin(), early.end());
      for (const Finding& f : early)
        ++(f.kind == Finding::kError      ? report.errors
           : f.kind == Finding::kRepaired ? report.repaired
                                          : report.notes);
      report.journal_replayed |= replayed;
    }
    if (!checker.needs_rerun()) return report;
  }
}

bool AnyLossy(const CheckReport& r) {
  return std::any_of(r.findings.begin(), r.findings.end(),
                     [](const Finding& f) { return f.kind == Finding::kError && f.loses_data; });
}

}  // namespace

Result<CheckReport> CheckPool(engine::Media& media, const CheckOptions& opts) {
  if (!opts.repair || !opts.preen) return RunOnce(media, opts);
  // Preen: look first, write only if every fix is harmless. The look replays a
  // committed journal transaction for real, as a mount would.
  CheckOptions look = opts;
  look.repair = false;
  look.max_findings = SIZE_MAX;  // AnyLossy must see every finding
  LFS_ASSIGN_OR_RETURN(CheckReport first, RunOnce(media, look));
  if (first.errors == 0 && first.orphans == 0) return first;
  if (AnyLossy(first)) {
    first.preen_declined = true;
    return first;
  }
  LFS_ASSIGN_OR_RETURN(CheckReport second, RunOnce(media, opts));
  if (first.journal_replayed) {
    // The look replayed the journal; say so in the report of the repair.
    second.journal_replayed = true;
    for (const Finding& f : first.findings) {
      if (f.where != "journal") continue;
      second.findings.insert(second.findings.begin(), f);
      ++second.notes;
      break;
    }
  }
  return second;
}

namespace internal {

Checker::Checker(engine::Media& media, const CheckOptions& opts, CheckReport* report,
                 MarkFloor* floor)
    : media_(media), opts_(opts), report_(report), floor_(floor), now_ns_(NowNs()) {}

Status Checker::Run() {
  bool usable = false;
  LFS_RETURN_IF_ERROR(CheckSuperblock(&usable));
  if (!usable) return Status::Ok();
  CheckJournal();
  // Only what the marks cover is read: the work and the memory follow what
  // the pool holds, not its size.
  early_findings_ = report_->findings.size();
  CheckMarks();
  if (opts_.verbose) DescribeMarks();
  blocks_ =
      std::make_unique<BlockRefs>(sb_.data_start, sb_.data_blocks, CoveredEnd() - sb_.data_start);
  info_.assign(marks_.inodes, InodeInfo{});
  ref_begin_.assign(marks_.inodes + 1, 0);

  CheckQuarantine();
  CheckInodes();
  ResolveSharedMetadata();
  CheckRefcountMark();
  writer_->Commit();  // later phases read back directory blocks and inodes

  CheckDirectories();
  // A live inode past the inode mark: nothing after this phase can be
  // decided without it. What is staged is dropped; the next run reads the
  // table up to it.
  if (rerun_) return Status::Ok();
  ResolveDirectoryNames();
  CheckParentFields();
  HandleOrphans();
  writer_->Commit();

  blocks_->Finish();
  CountQuarantined();  // before anything allocates a block
  CheckConnectivity();
  CheckLinkCounts();
  writer_->Commit();  // before the stored refcounts are compared
  CheckRefcounts();
  writer_->Commit();
  StoreMarks();
  Summarize();
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Findings

void Checker::Add(Finding f) {
  switch (f.kind) {
    case Finding::kError:
      ++report_->errors;
      break;
    case Finding::kRepaired:
      ++report_->repaired;
      break;
    case Finding::kNote:
      ++report_->notes;
      break;
  }
  if (report_->findings.size() < opts_.max_findings) report_->findings.push_back(std::move(f));
}

void Checker::Problem(std::string where, std::string what, std::string fix, bool lossy) {
  Add(Finding{opts_.repair ? Finding::kRepaired : Finding::kError, std::move(where),
              std::move(what), std::move(fix), lossy});
}

void Checker::Unfixable(std::string where, std::string what) {
  Add(Finding{Finding::kError, std::move(where), std::move(what), "", false});
}

void Checker::Note(std::string where, std::string what) {
  Add(Finding{Finding::kNote, std::move(where), std::move(what), "", false});
}

// ---------------------------------------------------------------------------
// Superblock

Status Checker::CheckSuperblock(bool* usable) {
  if (media_.size() < 2 * kBlockSize)
    return Status::Corruption("too small to be a leasefs pool (" + std::to_string(media_.size()) +
                              " bytes)");
  Superblock primary, backup;
  std::memcpy(&primary, BlockPtr(kSuperBlock), sizeof(primary));
  std::memcpy(&backup, BlockPtr(kBackupSuperBlock), sizeof(backup));
  LFS_RETURN_IF_ERROR(PickSuperblock(primary, backup, usable));
  if (!*usable) return Status::Ok();
  if (sb_.inode_count > (uint64_t{1} << 32)) {
    Unfixable("superblock",
              "inode table of " + std::to_string(sb_.inode_count) + " slots is larger than 2^32");
    *usable = false;
    return Status::Ok();
  }
  if ((sb_.feature_ro_compat & ~kKnownRoCompat) != 0 && opts_.repair)
    return Status::Error(EOPNOTSUPP,
                         "the pool has read-only-compatible features this fsck does not know: "
                         "it may check the pool but not repair it");
  CheckState();
  if (opts_.verbose) DescribeGeometry();
  return Status::Ok();
}

// Chooses the superblock to check the pool by: the primary if it is valid,
// else the backup (restoring the primary from it when repairing).
Status Checker::PickSuperblock(const Superblock& primary, const Superblock& backup, bool* usable) {
  const Status p = engine::ValidateSuperblock(primary, media_.size());
  if (p.err() == EOPNOTSUPP) return p;
  const Status b = engine::ValidateSuperblock(backup, media_.size());
  *usable = true;
  if (p.ok()) {
    sb_ = primary;
    CheckBackup(primary, b);
    return Status::Ok();
  }
  if (b.err() == EOPNOTSUPP) return b;
  if (b.ok() && engine::IsTornUpgrade(primary, backup)) {
    // A crash in the middle of the mount's upgrade (or of adding a
    // feature): the next mount finishes it the same way.
    // Which update it was: the upgrade's primary still has the older
    // version, or its checksum word does.
    bool upgrade = primary.version < backup.version;
    for (uint32_t v = kFormatVersionV1; v < backup.version && !upgrade; ++v) {
      Superblock older = backup;
      older.version = v;
      upgrade = primary.checksum == engine::SuperblockChecksum(older);
    }
    Note("superblock", (upgrade ? "an upgrade to format version " + std::to_string(backup.version) +
                                      " was interrupted"
                                : std::string("adding a feature was interrupted")) +
                           "; the backup holds it" +
                           (opts_.repair ? ", restored the primary from it" : ""));
    if (opts_.repair) {
      engine::WriteSuperblockCopy(media_, kSuperBlock, backup);
    }
    sb_ = backup;
    return Status::Ok();
  }
  if (b.ok()) {
    Problem("superblock", "primary is invalid: " + std::string(p.message()),
            "restored it from the backup in block 1");
    copy_damaged_[0] = true;
    if (opts_.repair) {
      // The journal cannot address the superblock. The primary is useless as
      // it is, so overwriting it in place cannot make anything worse.
      engine::WriteSuperblockCopy(media_, kSuperBlock, backup);
    }
    sb_ = backup;
    return Status::Ok();
  }
  *usable = false;
  const bool magic_p = std::memcmp(primary.magic, kSuperMagic, sizeof(kSuperMagic)) == 0;
  const bool magic_b = std::memcmp(backup.magic, kSuperMagic, sizeof(kSuperMagic)) == 0;
  if (!magic_p && !magic_b)
    return Status::Corruption("not a leasefs pool (no superblock magic in block 0 or 1)");
  Unfixable("superblock", "no valid copy: primary: " + std::string(p.message()) +
                              "; backup: " + std::string(b.message()));
  return Status::Ok();
}

void Checker::CheckBackup(const Superblock& primary, const Status& backup_status) {
  const char* backup = BlockPtr(kBackupSuperBlock);
  if (std::memcmp(&primary, backup, kSuperChecksummedBytes + 8) == 0) return;
  {
    // Adding a feature writes the backup first: a crash before the primary
    // leaves the backup with bits the primary lacks (or torn on its way
    // there), which the next addition of the feature finishes.
    Superblock got;
    std::memcpy(&got, backup, sizeof(got));
    const Superblock added =
        engine::WithFeatures(primary, got.feature_ro_compat, got.feature_incompat);
    if (std::memcmp(&added, &got, kSuperChecksummedBytes + 8) == 0 ||
        engine::IsTornUpgrade(got, added)) {
      Note("superblock",
           "the backup has (or was being given) feature bits the primary lacks: adding a "
           "feature was interrupted before the primary was written");
      return;
    }
  }
  if (primary.version < kFormatVersion) {
    // The mount's upgrade writes the backup first: a crash before the
    // primary leaves this, and the next mount upgrades both.
    const Superblock upgraded = engine::Upgraded(primary);
    Superblock b;
    std::memcpy(&b, backup, sizeof(b));
    if (std::memcmp(&upgraded, &b, kSuperChecksummedBytes + 8) == 0 ||
        engine::IsTornUpgrade(b, upgraded)) {
      Note("superblock", "the backup is upgraded (or part way) to format version " +
                             std::to_string(kFormatVersion) + "; the next mount finishes the upgrade");
      return;
    }
  }
  copy_damaged_[1] = true;  // its mark words too, which StoreMarks rewrites
  Problem("superblock",
          backup_status.ok()
              ? "backup in block 1 differs from the primary"
              : "backup in block 1 is invalid: " + std::string(backup_status.message()),
          "rewrote the backup from the primary");
  if (opts_.repair) {
    engine::WriteSuperblockCopy(media_, kBackupSuperBlock, primary);
  }
}

// The mutable area is only a hint, but its state must be one the format knows.
void Checker::CheckState() {
  auto* primary = reinterpret_cast<Superblock*>(BlockPtr(kSuperBlock));
  const uint32_t state = primary->state;
  if (state == kStateClean) return;
  if (state == kStateMounted) {
    if (opts_.verbose)
      Note("superblock", "marked mounted (the daemon died or did not unmount cleanly)");
    return;
  }
  Problem("superblock", "unknown state " + std::to_string(state), "set it to clean");
  if (opts_.repair) {
    // state and the reserved word after it: one aligned 8-byte store.
    const uint64_t word = kStateClean;
    media_.CopyFlush(&primary->state, &word, sizeof(word));
    media_.Drain();
  }
}

void Checker::DescribeGeometry() {
  Note("superblock",
       std::to_string(sb_.total_blocks) + " blocks: journal " + std::to_string(sb_.journal_blocks) +
           ", inode table " + std::to_string(sb_.inode_count / kInodesPerBlock) + " (" +
           std::to_string(sb_.inode_count) + " slots), quarantine " +
           std::to_string(sb_.quarantine_blocks) + ", refcounts " +
           std::to_string(sb_.refcount_blocks) + ", data " + std::to_string(sb_.data_blocks) +
           " from block " + std::to_string(sb_.data_start));
}

void Checker::DescribeMarks() {
  if (sb_.version < kFormatVersion) {
    Note("superblock", "format version " + std::to_string(sb_.version) +
                           ": both tables are initialized whole; the next writable mount "
                           "upgrades the pool to version " +
                           std::to_string(kFormatVersion));
    return;
  }
  Note("superblock",
       "initialized: " + std::to_string(marks_.inodes) + " of " + std::to_string(sb_.inode_count) +
           " inode slots, " + std::to_string(marks_.refcount_blocks) + " of " +
           std::to_string(sb_.refcount_blocks) + " refcount blocks (data blocks below " +
           std::to_string(CoveredEnd()) + ")");
}

// ---------------------------------------------------------------------------
// Journal

void Checker::CheckJournal() {
  journal_ = std::make_unique<engine::Journal>(media_, sb_);
  writer_ = std::make_unique<Writer>(journal_.get(), opts_.repair);
  JournalHeader h;
  std::memcpy(&h, BlockPtr(sb_.journal_start), sizeof(h));
  const std::string txn = "transaction " + std::to_string(h.seq);
  if (!journal_->HasCommitted()) {
    if (std::memcmp(h.magic, kJournalMagic, sizeof(kJournalMagic)) == 0)
      Note("journal", "ignored " + txn + ", which was never committed");
    return;
  }
  auto replayed = journal_->Recover();
  if (replayed.ok()) {
    report_->journal_replayed = true;
    Note("journal", "replayed committed " + txn + " (" + std::to_string(h.record_count) +
                        (h.record_count == 1 ? " record)" : " records)"));
    return;
  }
  Problem("journal",
          "committed " + txn + " is corrupt: " + std::string(replayed.status().message()),
          "discarded the transaction", /*lossy=*/true);
  if (opts_.repair) {
    // Nothing of it was applied; clearing the magic (one aligned 8-byte store)
    // makes it never-committed.
    const uint64_t zero = 0;
    media_.CopyFlush(BlockPtr(sb_.journal_start), &zero, sizeof(zero));
    media_.Drain();
  }
}

// ---------------------------------------------------------------------------
// Summary

void Checker::Summarize() {
  report_->inode_slots = sb_.inode_count - 1;
  report_->inode_mark = marks_.inodes;
  report_->refcount_mark = marks_.refcount_blocks;
  report_->data_blocks = sb_.data_blocks;
  report_->data_blocks_used = blocks_->used();
  for (uint64_t ino = 1; ino < info_.size(); ++ino) {
    switch (info_[ino].type) {
      case 0:
        continue;
      case DT_DIR:
        ++report_->directories;
        break;
      case DT_REG:
        ++report_->regular_files;
        break;
      case DT_LNK:
        ++report_->symlinks;
        break;
      default:
        ++report_->special_files;
        break;
    }
    ++report_->inodes_in_use;
  }
}

// ---------------------------------------------------------------------------
// Pool access

Inode* Checker::InodeAt(uint64_t ino) const {
  return reinterpret_cast<Inode*>(BlockPtr(sb_.inode_start)) + ino;
}

bool Checker::IsDir(uint64_t ino) const { return ino < info_.size() && info_[ino].type == DT_DIR; }

uint32_t* Checker::RefcountAt(uint64_t pool_block) const {
  return reinterpret_cast<uint32_t*>(BlockPtr(sb_.refcount_start)) + (pool_block - sb_.data_start);
}

}  // namespace internal
}  // namespace leasefs::check
