// The layout guard: how the engine asks, under its own lock, whether a
// change of a file's layout may go ahead.
//
// A file's layout is the mapping of its bytes to pool blocks, including the
// file size and the sharing of blocks among files (semantics-2019 §1 A.1).
// Layout leases (lease/) promise a holder that the layout of a byte range
// stays put until the lease is broken. The daemon breaks conflicting leases
// before it calls the engine, waiting with no engine lock held; but a lease
// may be granted while it waited. So every operation that changes a layout
// describes the change to the guard, with the engine's writer lock held and
// before it changes anything, and fails without a trace if the guard says no.
// There is one guard per mounted filesystem (Filesystem::SetLayoutGuard);
// without one every change may go ahead.
//
// The engine defines this interface and knows nothing of leases; lease/
// implements it.
#pragma once

#include <cstdint>
#include <limits>

#include "base/status.h"

namespace leasefs::engine {

class Cred;
using Ino = uint64_t;

// The two reasons XFS breaks layouts for (xfs_break_layouts), with writes
// split by whether they allocate (semantics-2019 §1 D.13-14, and [Dan]'s
// split in B.8).
enum class LayoutChangeKind : uint8_t {
  // Blocks may leave the file or move within it, or other files may come to
  // share them: truncate, every fallocate mode, either file of a clone or of
  // copy_file_range's shared middle, defrag, the two files of a move.
  kUnmap,
  // A write that maps new blocks into its range: it fills a hole, copies a
  // shared block (copy on write) or extends the file. Writing into an
  // unwritten (preallocated) block is not this: the block stays where it is.
  kAllocatingWrite,
  // A write into blocks the file already owns alone: the layout stays the
  // same. Only a mount that breaks on every write (xfs-faithful) cares.
  kOverwrite,
};

const char* ToString(LayoutChangeKind kind);

// One change of one file, as the engine is about to make it.
struct LayoutChange {
  static constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();

  Ino ino = 0;
  LayoutChangeKind kind = LayoutChangeKind::kUnmap;
  // The bytes whose mapping may change: [offset, offset + length), or from
  // offset on when length is kToEnd. Block-granular changes report the
  // blocks' bytes.
  uint64_t offset = 0;
  uint64_t length = 0;
  // Whether the size changes, and from what to what. A size change touches
  // every lease whose range reaches the smaller of the two sizes: such a
  // holder sees the end of the file move.
  bool size_changes = false;
  uint64_t old_size = 0;
  uint64_t new_size = 0;

  uint64_t end() const { return length == kToEnd ? kToEnd : offset + length; }
};

class LayoutGuard {
 public:
  virtual ~LayoutGuard() = default;

  // Whether `by` may make `change` now. Called with the engine's writer lock
  // held, once per file per step of the operation (a clone asks for both
  // files; a defrag asks before each piece), before anything changes. Must
  // not block and must not call into the engine.
  //
  // Returns OK to go ahead, or the error the operation fails with, unchanged:
  //   ERESTART: a lease conflicts and must be broken first; the daemon breaks
  //             it (with no engine lock held) and calls again.
  //   ETXTBSY:  an unbreakable lease conflicts.
  //   EDEADLOCK: `by` itself holds the unbreakable lease that conflicts.
  virtual Status MayChange(const Cred& by, const LayoutChange& change) = 0;
};

}  // namespace leasefs::engine
