// The offline consistency checker behind fsck.leasefs.
//
// CheckPool verifies every invariant of docs/pool_format.md ("Invariants fsck
// checks") over a pool that nobody has mounted, and with `repair` mends what
// can be mended. It is the independent judge of the engine: everything it
// knows comes from the format spec, none of it from engine internals.
//
// Robustness: the pool may hold arbitrary bytes. Every number read from it is
// bounds-checked before use, chains are walked with cycle detection, and the
// work and memory are linear in the size of the metadata.
//
// Writes: a check without `repair` writes nothing to `media` except the replay
// of a committed journal transaction, which is what a mount would do; give it
// a private mapping (MapOptions::read_only) to leave the pool untouched.
// Repairs go through engine::Journal transactions, ordered so that an
// interrupted repair leaves at worst leaked blocks or link counts that are too
// high, which the next run fixes. Only the superblock copies, which the
// journal cannot address, are written directly.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "engine/media.h"

namespace leasefs::check {

// One problem found (and perhaps mended), or a remark.
struct Finding {
  enum Kind {
    kError,     // the pool breaks an invariant and still does
    kRepaired,  // the pool broke an invariant; `fix` has been applied
    kNote,      // not a problem (an orphan, a replayed journal, ...)
  };
  Kind kind = kError;
  std::string where;        // "superblock", "journal", "inode 12", "block 4711", ...
  std::string what;         // the problem, e.g. "nlink 3 but 2 entries name it"
  std::string fix;          // what repair does or did ("set nlink to 2"); may be empty
  bool loses_data = false;  // the fix discards data (file blocks, names, xattrs)

  // "error: inode 12: nlink 3 but 2 entries name it",
  // "repaired: inode 12: nlink 3 but 2 entries name it (set nlink to 2)",
  // "note: ...".
  std::string ToString() const;
};

struct CheckOptions {
  // Write fixes to the pool. Without it nothing is written (see above).
  bool repair = false;
  // With repair: fix only if no fix loses data. The pool is checked first
  // without writing; if any fix would discard data (a file's blocks, an entry's
  // name, extended attributes), nothing is repaired and
  // every problem is reported as an error (fsck -p).
  bool preen = false;
  // Adds notes about the pool's geometry and state.
  bool verbose = false;
  // Findings kept in the report; the counts stay exact beyond it.
  size_t max_findings = 100000;
  // Called as the walks that grow with the pool go: the phase ("inodes",
  // "directories", "link counts", "refcounts"), and how many of its items
  // (inode slots, data blocks) are done, every kProgressStep items and at
  // its end. fsck.leasefs draws its progress line with it. May be empty.
  std::function<void(std::string_view phase, uint64_t done, uint64_t total)> progress;
};

// How many items a phase walks between two calls of CheckOptions::progress.
inline constexpr uint64_t kProgressStep = 4096;

struct CheckReport {
  std::vector<Finding> findings;  // in the order found
  uint64_t errors = 0;            // kError findings (including any beyond max_findings)
  uint64_t repaired = 0;          // kRepaired findings
  uint64_t notes = 0;             // kNote findings
  bool journal_replayed = false;  // a committed transaction was applied
  bool preen_declined = false;    // preen found problems whose fix loses data

  // Summary of the filesystem as it stands after the run. Orphans count as
  // in use unless repair reclaimed them.
  uint64_t inode_slots = 0;  // inode_count - 1
  // What the pool's tables have initialized (version 3; an older pool: the
  // whole tables), after any repair: inode slots and refcount blocks.
  uint64_t inode_mark = 0;
  uint64_t refcount_mark = 0;
  uint64_t inodes_in_use = 0;
  uint64_t directories = 0;
  uint64_t regular_files = 0;
  uint64_t symlinks = 0;
  uint64_t special_files = 0;  // devices, FIFOs, sockets
  uint64_t data_blocks = 0;
  uint64_t data_blocks_used = 0;  // blocks with a non-zero reference count
  uint64_t orphans = 0;           // nlink == 0 (found; reclaimed if repairing)
  uint64_t reach_records = 0;       // valid records in the quarantine table (version 2)
  uint64_t quarantined_blocks = 0;  // blocks only the quarantine holds

  bool clean() const noexcept { return errors == 0 && repaired == 0; }
  // fsck(8) exit status: 4 if errors remain, else 1 if any were corrected,
  // else 0.
  int ExitCode() const noexcept;
};

// Checks (and with opts.repair, repairs) the pool in `media`.
// REQUIRES: nobody else uses `media` during the call.
// Errors (no report can be made): EUCLEAN when neither superblock copy
// carries the leasefs magic ("not a leasefs pool") or `media` is too small for
// one; EOPNOTSUPP for a newer format version or unknown incompatible features.
// A pool with the magic but no valid superblock copy yields a report with an
// error finding instead.
Result<CheckReport> CheckPool(engine::Media& media, const CheckOptions& opts);

}  // namespace leasefs::check
