// Workload, model and verifier for the crash tests.
//
// A workload is a deterministic sequence of file system operations over a
// small tree. Op k is generated from (seed, k) and the state the tree is in
// before it, so that a workload can continue from whichever state a crash
// left behind. Model applies the same operations in memory and predicts each
// one's outcome (0 or an errno value, as Linux reports it); ApplyToDir runs an
// operation against a real directory (a leasefs mount, or tmpfs to validate
// the model). Snapshot reads a real tree back and Compare checks it against a
// model: names, types, permission bits, sizes, contents, symlink targets,
// link counts (and hard-link identity) and user.* xattrs.
//
// Every operation is one modifying system call (plus opens and closes around
// it), so that after a crash it is either wholly done or wholly absent;
// writes are at most kMaxWrite bytes, so that the kernel sends each as one
// FUSE request. (Writes, and copy_file_range between offsets unlike within
// their blocks, may be found partly done: see WriteLike.)
//
// Besides the POSIX calls, a workload can draw block-map operations
// (OpSet): reflinks, copy_file_range, punch hole, zero range, collapse,
// insert, unshare and defrag, the last four and reflink through leasefs's
// ioctls (include/leasefs/ioctl.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <sys/types.h>

namespace leasefs::crashtest {

// splitmix64: small, fast and good enough to drive a workload.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next();
  // Uniform in [0, n); n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }
  // Uniform in [lo, hi].
  uint64_t Range(uint64_t lo, uint64_t hi) { return lo + Below(hi - lo + 1); }
  bool Chance(unsigned percent) { return Below(100) < percent; }

 private:
  uint64_t s_;
};

// Mixes values into one seed (order matters).
uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0);

// `len` deterministic bytes derived from `seed`.
std::string PatternBytes(uint64_t seed, size_t len);

inline constexpr size_t kBlock = 4096;
inline constexpr size_t kMaxWrite = 40000;          // < 128 KiB: one FUSE WRITE
inline constexpr size_t kMaxFileSize = 320 * 1024;  // keeps the tree small

enum class OpType {
  kMkdir,
  kCreate,
  kWrite,      // pwrite at `off` (may leave a hole before it)
  kAppend,     // write with O_APPEND; `off` is the size the model expects
  kTruncate,   // truncate(2) to `off`
  kFallocate,  // fallocate mode 0 over [off, off + len)
  kRename,     // renameat2(path, path2, flags)
  kLink,       // link(path, path2)
  kUnlink,
  kRmdir,
  kSymlink,  // symlink(text, path)
  kChmod,
  kSetXattr,  // lsetxattr(path, text, value, flags)
  kRemoveXattr,
  kFsync,
  kFdatasync,
  kTmpfile,  // O_TMPFILE in path's directory, write PatternBytes(data_seed, len), linkat to path
  kChattr,   // FS_IOC_SETFLAGS: `flags` (kChattrFlags of them) on a file or directory
  // Block-map operations. `path` is the file changed; clone and copy read
  // `path2` from `off2`.
  kClone,      // LEASEFS_IOC_CLONE_RANGE on path: path2 [off2, +len) to off (len 0: to EOF)
  kCopyRange,  // copy_file_range(path2 at off2 -> path at off, len)
  kPunch,      // fallocate(PUNCH_HOLE | KEEP_SIZE) over [off, off + len)
  kZeroRange,  // fallocate(ZERO_RANGE, plus KEEP_SIZE if flags has it) over [off, off + len)
  kCollapse,   // LEASEFS_IOC_COLLAPSE_RANGE [off, off + len)
  kInsert,     // LEASEFS_IOC_INSERT_RANGE [off, off + len)
  kUnshare,    // LEASEFS_IOC_UNSHARE_RANGE [off, off + len)
  kDefrag,     // LEASEFS_IOC_DEFRAG
};

// Which operations a workload draws.
enum OpSet : unsigned {
  kPosixOps = 1u << 0,       // the POSIX calls (mkdir .. fdatasync)
  kPortableRemap = 1u << 1,  // punch hole and copy_file_range (tmpfs has them)
  kLeasefsRemap = 1u << 2,   // zero range and the leasefs ioctls
  kAllOps = kPosixOps | kPortableRemap | kLeasefsRemap,
};

struct Op {
  OpType type = OpType::kFsync;
  std::string path;   // relative to the tree's root, "" is the root
  std::string path2;  // rename/link destination
  std::string text;   // symlink target or xattr name
  std::string value;  // xattr value
  uint64_t off = 0;
  uint64_t len = 0;
  uint64_t off2 = 0;       // clone/copy: the source offset
  uint64_t data_seed = 0;  // write/append data: PatternBytes(data_seed, len)
  unsigned flags = 0;      // rename, xattr, zero-range (FALLOC_FL_KEEP_SIZE) or chattr flags
  mode_t mode = 0;         // permission bits for mkdir, create, chmod
};

// One line describing `op`, for failure reports.
std::string Describe(const Op& op);
// True if `op` (when it succeeds) has write(2)'s contract across a crash:
// each byte of its range old or new, the size old or new. Everything else
// is wholly done or wholly absent.
bool WriteLike(const Op& op);
const char* ErrnoName(int err);

enum class Kind { kFile, kDir, kSymlink, kWhiteout /* character device 0/0 */ };

// The attribute flags kChattr sets: nodump and noatime (FS_NODUMP_FL,
// FS_NOATIME_FL), which change no other operation's outcome. Immutable and
// append-only are the mounted tests' and fsx's (docs/attr-flags.md).
inline constexpr unsigned kChattrFlags = 0x40 | 0x80;

struct Node {
  Kind kind = Kind::kFile;
  mode_t perm = 0;                            // permission bits (07777)
  std::string data;                           // file contents or symlink target
  std::map<std::string, std::string> xattrs;  // user.* only
  unsigned attr_flags = 0;                    // files and directories: kChattrFlags
  std::map<std::string, int> children;        // directories: name -> node id
};

// The tree as the operations so far should have left it.
class Model {
 public:
  // An empty root directory with permission bits `root_perm`.
  explicit Model(mode_t root_perm = 0755);

  // Applies `op`; returns 0 or the errno value Linux returns for it (the
  // model is then unchanged).
  int Apply(const Op& op);

  const Node& root() const { return nodes_.at(kRoot); }
  const Node& node(int id) const { return nodes_.at(id); }
  // Link count as stat reports it.
  unsigned Nlink(int id) const;
  size_t node_count() const { return nodes_.size(); }

  // Every path in the tree (not the root), depth first in name order.
  std::vector<std::string> Paths() const;
  // The node a path names, or -1.
  int Resolve(const std::string& path) const;
  // Sets a file's contents (to resynchronise with a partly applied write).
  void ReplaceData(int id, std::string data);

  static constexpr int kRoot = 0;

 private:
  struct Where {
    int parent = -1;  // directory holding the entry, -1 if not a directory
    std::string name;
    int id = -1;  // the entry's node, -1 if there is none
  };
  Where Locate(const std::string& path) const;
  bool IsAncestor(int dir, int of) const;  // dir == of or dir above of
  int NewNode(Kind kind, mode_t perm);
  void DropLink(int id);
  int Rename(const Op& op);
  int SetXattr(const Op& op);
  int Remap(const Op& op, int id);

  std::map<int, Node> nodes_;
  std::map<int, int> parent_of_dir_;  // directory -> its parent
  std::map<int, unsigned> links_;     // non-directories: entries naming them
  int next_id_ = 1;
};

// Op k of workload `seed`, chosen for the tree `m` holds, from `ops`.
Op Generate(const Model& m, uint64_t seed, uint64_t k, unsigned ops = kAllOps);

// Runs `op` on the tree at `root` (an absolute path). Returns 0 or errno.
int ApplyToDir(const std::string& root, const Op& op);

// A real tree read back.
struct RealNode {
  mode_t mode = 0;  // st_mode
  dev_t rdev = 0;
  nlink_t nlink = 0;
  uint64_t size = 0;
  std::string data;                           // file contents or symlink target
  std::map<std::string, std::string> xattrs;  // user.* only
  unsigned attr_flags = 0;                    // FS_IOC_GETFLAGS & kChattrFlags
  std::map<std::string, ino_t> children;
};
struct Snapshot {
  ino_t root = 0;
  std::map<ino_t, RealNode> nodes;
  std::vector<std::string> errors;  // what could not be read
};
Snapshot TakeSnapshot(const std::string& root);

// Bytes of one file whose in-flight write may be partly applied.
struct Tolerance {
  int node = -1;                     // model node id; -1: none
  const std::string* alt = nullptr;  // its contents had the write completed
  // Also accept any size between the two (a short write; tmpfs does that
  // when the writer is killed, leasefs must not).
  bool short_write = false;
};

// Differences between `snap` and `m` (empty when they match), at most
// `limit` of them. With a tolerance, that file may have either size, and each
// byte either value.
std::vector<std::string> Compare(const Snapshot& snap, const Model& m, const Tolerance& tol = {},
                                 size_t limit = 12);

}  // namespace leasefs::crashtest
