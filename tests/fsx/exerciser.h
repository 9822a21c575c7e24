// A randomized exerciser of a mounted leasefs's data and block-map
// operations, in the spirit of fsx: a seeded sequence of writes, truncates,
// fallocate modes, leasefs's block-map ioctls (collapse, insert, unshare,
// clone, defrag), copy_file_range, xattrs and remounts over a few files, each
// file (contents, size and user.* xattrs) compared with an in-memory model
// (model.h) after every step.
//
// On the first mismatch it stops and reports the seed, the step, the last 20
// operations and the first differing byte, so that the run can be replayed
// with the same seed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace leasefs::fsx {

// The operations, each one bit of an OpMask.
enum class Op : uint8_t {
  kWrite,       // pwrite of random bytes, any alignment, sometimes past EOF
  kRead,        // pread of a random range, checked
  kTruncate,    // ftruncate, shrinking or growing
  kFalloc,      // fallocate mode 0
  kFallocKeep,  // FALLOC_FL_KEEP_SIZE
  kPunch,       // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
  kZero,        // FALLOC_FL_ZERO_RANGE
  kZeroKeep,    // FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
  kCollapse,    // LEASEFS_IOC_COLLAPSE_RANGE
  kInsert,      // LEASEFS_IOC_INSERT_RANGE
  kUnshare,     // LEASEFS_IOC_UNSHARE_RANGE
  kClone,       // LEASEFS_IOC_CLONE_RANGE, between files or within one
  kCopy,        // copy_file_range(2), between files or within one
  kDefrag,      // LEASEFS_IOC_DEFRAG
  kExchange,    // renameat2 RENAME_EXCHANGE of two files: their models swap
  kTmpReplace,  // O_TMPFILE written, linked, renamed over a file
  kFreeze,      // chattr +i, one change that must fail with EPERM, chattr -i
  kAppendOnly,  // chattr +a, an O_APPEND write, a pwrite that must fail, chattr -a
  kXattr,       // fsetxattr (empty to 64 KiB, any flags) or fremovexattr, user.*
  kRemount,     // close, unmount, mount, reopen (at Options::remount_every)
  kCount
};
using OpMask = uint32_t;
inline constexpr OpMask kAllOps = (OpMask{1} << static_cast<int>(Op::kCount)) - 1;
inline constexpr OpMask Bit(Op op) { return OpMask{1} << static_cast<int>(op); }

// "write", "read", "truncate", "falloc", "falloc-keep", "punch", "zero",
// "zero-keep", "collapse", "insert", "unshare", "clone", "copy", "defrag",
// "exchange", "tmpfile-replace", "freeze", "append-only", "xattr", "remount".
std::string_view OpName(Op op);
// A comma-separated list of those names into a mask; nullopt (and the bad
// name in *bad) if a name is unknown.
std::optional<OpMask> ParseOps(std::string_view list, std::string* bad = nullptr);
// Every op name, comma-separated (for --help).
std::string AllOpNames();

struct Options {
  std::string dir;  // an existing directory on the mount
  uint64_t seed = 1;
  uint64_t ops = 10000;           // steps to run
  uint64_t max_size = 256 << 10;  // no operation grows a file beyond this
  int files = 3;                  // 2 or 3 files are the point; 1..8 work
  OpMask mask = kAllOps;
  // Unmount and mount the filesystem again (the files' descriptors are
  // closed meanwhile); returns "" or why it failed. Every remount_every
  // steps when both are set and kRemount is in the mask.
  std::function<std::string()> remount;
  uint64_t remount_every = 0;
  // Probability, per collapse/insert/clone/copy step, of arguments the call
  // must refuse (whose exact errno is then checked).
  double invalid_rate = 0.05;
  // Check LEASEFS_IOC_BMAP invariants (sharing after clone, copy on write,
  // unshare, defrag).
  bool check_block_map = true;
  // Reference mode, for checking the model itself on a kernel filesystem
  // (xfs): collapse, insert and unshare go through fallocate(2) and clone
  // through FICLONERANGE; defrag, freeze, append-only and block-map checks
  // are skipped.
  bool kernel_ops = false;
  // Each step, as it runs.
  bool verbose = false;
  // "N ops passed" every progress_every steps (0: never).
  uint64_t progress_every = 0;
  std::FILE* out = stdout;
};

struct RunResult {
  bool ok = false;
  uint64_t steps = 0;  // steps completed (all of them when ok)
  std::string report;  // when !ok: seed, step, recent ops, first difference
  uint64_t op_counts[static_cast<int>(Op::kCount)] = {};  // how often each op ran
  uint64_t refused = 0;        // invalid calls refused with the expected errno
  uint64_t shared_checks = 0;  // clones whose block map was checked
  uint64_t cow_checks = 0;     // copy-on-write writes checked
};

// Runs one seeded sequence. Creates (truncating, and clearing their user.*
// xattrs) files fsx.0, fsx.1, ... in Options::dir and leaves them there.
//
// Thread safety: one Exerciser per thread; it owns its files.
class Exerciser {
 public:
  explicit Exerciser(Options opts);
  ~Exerciser();
  Exerciser(const Exerciser&) = delete;
  Exerciser& operator=(const Exerciser&) = delete;

  RunResult Run();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace leasefs::fsx
