#include "tests/fsx/exerciser.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include "base/unique_fd.h"
#include "leasefs/ioctl.h"
#include "tests/fsx/model.h"

namespace leasefs::fsx {

namespace {

constexpr uint64_t B = kBlockSize;
constexpr size_t kLogDepth = 20;  // operations shown with a failure

struct OpInfo {
  Op op;
  std::string_view name;
  unsigned weight;  // relative frequency of random choice
};
// Remount has weight 0: it runs at Options::remount_every, not at random.
constexpr std::array<OpInfo, static_cast<size_t>(Op::kCount)> kOps = {{
    {Op::kWrite, "write", 20},
    {Op::kRead, "read", 6},
    {Op::kTruncate, "truncate", 6},
    {Op::kFalloc, "falloc", 3},
    {Op::kFallocKeep, "falloc-keep", 3},
    {Op::kPunch, "punch", 4},
    {Op::kZero, "zero", 3},
    {Op::kZeroKeep, "zero-keep", 3},
    {Op::kCollapse, "collapse", 5},
    {Op::kInsert, "insert", 5},
    {Op::kUnshare, "unshare", 3},
    {Op::kClone, "clone", 9},
    {Op::kCopy, "copy", 6},
    {Op::kDefrag, "defrag", 2},
    {Op::kExchange, "exchange", 3},
    {Op::kTmpReplace, "tmpfile-replace", 2},
    {Op::kFreeze, "freeze", 2},
    {Op::kAppendOnly, "append-only", 2},
    {Op::kXattr, "xattr", 4},
    {Op::kRemount, "remount", 0},
}};

std::string ErrName(int err) {
  if (err == 0) return "OK";
  const char* n = strerrorname_np(err);
  return n ? n : fmt::format("errno {}", err);
}

bool Aligned(uint64_t v) { return v % B == 0; }
uint64_t AlignUp(uint64_t v) { return (v + B - 1) / B * B; }

// "0x1f000" for offsets and lengths in logs: block boundaries stand out.
std::string Hex(uint64_t v) { return fmt::format("{:#x}", v); }

// up to 16 bytes of `s` from `off`, as hex.
std::string HexBytes(std::string_view s, uint64_t off) {
  std::string out;
  for (uint64_t i = off; i < off + 16 && i < s.size(); ++i)
    out += fmt::format("{:02x} ", static_cast<unsigned char>(s[i]));
  return out.empty() ? "(end of file)" : out;
}

// One run of a file's block map (LEASEFS_IOC_BMAP).
struct MapRun {
  uint64_t file_off = 0;
  uint64_t pool_off = 0;
  uint64_t len = 0;
  uint32_t flags = 0;
  uint32_t refcount = 0;
};
// The block behind one file offset.
struct MapBlock {
  bool mapped = false;
  uint64_t pool_off = 0;
  uint32_t flags = 0;
  uint32_t refcount = 0;
};

enum class Outcome { kDone, kSkipped, kFailed };

}  // namespace

std::string_view OpName(Op op) { return kOps[static_cast<size_t>(op)].name; }

std::optional<OpMask> ParseOps(std::string_view list, std::string* bad) {
  OpMask mask = 0;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view name = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (name.empty()) continue;
    auto it =
        std::find_if(kOps.begin(), kOps.end(), [&](const OpInfo& i) { return i.name == name; });
    if (it == kOps.end()) {
      if (bad) *bad = std::string(name);
      return std::nullopt;
    }
    mask |= Bit(it->op);
  }
  return mask;
}

std::string AllOpNames() {
  std::string out;
  for (const auto& i : kOps) out += (out.empty() ? "" : ",") + std::string(i.name);
  return out;
}

class Exerciser::Impl {
 public:
  explicit Impl(Options opts) : opts_(std::move(opts)), rng_(opts_.seed) {}
  RunResult Run();

 private:
  struct File {
    std::string name;  // "f0"
    std::string path;
    UniqueFd rw;  // target of every call
    UniqueFd ro;  // reads for checking; the source of clones and copies
    FileModel model;
    std::map<std::string, std::string> xattrs;  // user.* name -> value
  };
  struct LogEntry {
    uint64_t step;
    std::string text;
  };

  // --- random choices
  uint64_t Uniform(uint64_t lo, uint64_t hi) {  // inclusive; lo if hi < lo
    return hi <= lo ? lo : std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  size_t PickFile() { return Uniform(0, files_.size() - 1); }
  uint64_t PickOffset(uint64_t size, uint64_t limit);
  uint64_t PickLength(uint64_t max);
  uint64_t PickBlocks(uint64_t lo, uint64_t hi);
  std::string RandomBytes(uint64_t len);
  bool SetUpWeights();
  Op PickOp();

  // --- steps
  bool Step();
  Outcome Dispatch(Op op);
  Outcome DoWrite(File& f);
  Outcome DoRead(File& f);
  Outcome DoTruncate(File& f);
  Outcome DoFallocate(File& f, Op op);
  Outcome DoCollapse(File& f);
  Outcome DoInsert(File& f);
  Outcome DoUnshare(File& f);
  Outcome DoClone();
  Outcome DoCopy();
  Outcome DoDefrag(File& f);
  Outcome DoExchange();
  Outcome DoTmpReplace(File& f);
  Outcome DoFreeze(File& f);
  Outcome DoAppendOnly(File& f);
  Outcome DoXattr(File& f);
  Outcome DoRemount();

  // --- calls; each returns 0 or errno
  int RangeIoctl(File& f, Op op, uint64_t off, uint64_t len);
  int CloneCall(File& src, uint64_t src_off, uint64_t len, File& dst, uint64_t dst_off);
  // FS_IOC_SETFLAGS: replaces f's attribute flags.
  static int SetFlags(File& f, unsigned flags);

  // --- checks
  bool OpenFiles(bool create);
  bool ClearXattrs(File& f);
  bool VerifyAll();
  bool VerifyFile(File& f);
  bool VerifyXattrs(File& f);
  Outcome Expect(int got, int want);
  int BlockMap(File& f, uint64_t off, uint64_t end, std::vector<MapRun>* runs);
  static MapBlock Lookup(const std::vector<MapRun>& runs, uint64_t off);
  Outcome CheckShared(File& src, uint64_t src_off, File& dst, uint64_t dst_off, uint64_t len);
  Outcome CheckCopyOnWrite(File& a, uint64_t a_off, File& b, uint64_t b_off, uint64_t pool_off);
  Outcome CheckUnshared(File& f, uint64_t off, uint64_t len);

  // --- log and report
  void Log(std::string text);
  Outcome Fail(const std::string& what);
  std::string MapText(File& f, uint64_t off, uint64_t end);
  bool BlockMapChecks() const { return opts_.check_block_map && !opts_.kernel_ops; }

  Options opts_;
  std::mt19937_64 rng_;
  std::discrete_distribution<size_t> pick_;
  bool any_random_op_ = false;
  std::vector<File> files_;
  std::deque<LogEntry> log_;
  std::string readbuf_;
  uint64_t step_ = 0;
  RunResult result_;
};

// --- random choices ------------------------------------------------------------

// An offset in [0, limit], biased to where bugs live: block boundaries and
// the neighbourhood of end of file, sometimes past it (a hole).
uint64_t Exerciser::Impl::PickOffset(uint64_t size, uint64_t limit) {
  uint64_t off = 0;
  switch (Uniform(0, 9)) {
    case 0:
    case 1:
    case 2:
      off = Uniform(0, std::min(size, limit));
      break;
    case 3:
    case 4: {
      uint64_t b = Uniform(0, limit / B) * B;
      off = b + Uniform(0, 2) - (b > 0 ? 1 : 0);  // b-1, b or b+1
      break;
    }
    case 5:
    case 6:
      off = size + Uniform(0, 2 * B);
      off = off > B ? off - B : 0;  // within a block either side of EOF
      break;
    case 7:
    case 8:
      off = Uniform(size, limit);  // at or past EOF
      break;
    default:
      off = Uniform(0, limit);
  }
  return std::min(off, limit);
}

// A length in [1, max] (max >= 1): mostly small, some block-sized, some large.
uint64_t Exerciser::Impl::PickLength(uint64_t max) {
  uint64_t len = 1;
  switch (Uniform(0, 9)) {
    case 0:
    case 1:
    case 2:
      len = Uniform(1, 512);
      break;
    case 3:
    case 4:
      len = Uniform(1, 3 * B);
      break;
    case 5:
    case 6:
      len = Uniform(1, 8) * B + Uniform(0, 2) - 1;  // kB-1, kB, kB+1
      break;
    default:
      len = Uniform(1, max);
  }
  return std::clamp<uint64_t>(len, 1, std::max<uint64_t>(max, 1));
}

// A block count in [lo, hi], half the time among the first few.
uint64_t Exerciser::Impl::PickBlocks(uint64_t lo, uint64_t hi) {
  return Chance(0.5) ? Uniform(lo, std::min(hi, lo + 3)) : Uniform(lo, hi);
}

std::string Exerciser::Impl::RandomBytes(uint64_t len) {
  std::string s(len, '\0');
  for (uint64_t i = 0; i < len; i += 8) {
    uint64_t r = rng_();
    std::memcpy(s.data() + i, &r, std::min<uint64_t>(8, len - i));
  }
  return s;
}

// The enabled random ops, by weight; false if there is none.
bool Exerciser::Impl::SetUpWeights() {
  std::array<unsigned, kOps.size()> w{};
  for (size_t i = 0; i < kOps.size(); ++i)
    if (opts_.mask & Bit(kOps[i].op)) w[i] = kOps[i].weight;
  // Defrag is leasefs's own; so are the rules freeze and append-only hold a
  // descriptor opened before the flag to (ext4 and xfs let it append).
  if (opts_.kernel_ops) {
    for (Op op : {Op::kDefrag, Op::kFreeze, Op::kAppendOnly}) w[static_cast<size_t>(op)] = 0;
  }
  if (std::all_of(w.begin(), w.end(), [](unsigned x) { return x == 0; })) return false;
  pick_ = std::discrete_distribution<size_t>(w.begin(), w.end());
  return true;
}

Op Exerciser::Impl::PickOp() { return kOps[pick_(rng_)].op; }

// --- the run -------------------------------------------------------------------

RunResult Exerciser::Impl::Run() {
  files_.resize(static_cast<size_t>(std::clamp(opts_.files, 1, 8)));
  for (size_t i = 0; i < files_.size(); ++i) {
    files_[i].name = fmt::format("f{}", i);
    files_[i].path = fmt::format("{}/fsx.{}", opts_.dir, i);
  }
  if (opts_.max_size < 2 * B) opts_.max_size = 2 * B;
  any_random_op_ = SetUpWeights();
  if (!OpenFiles(true)) return result_;
  for (step_ = 1; step_ <= opts_.ops; ++step_) {
    if (!Step() || !VerifyAll()) return result_;
    result_.steps = step_;
    if (opts_.progress_every && step_ % opts_.progress_every == 0 && step_ < opts_.ops) {
      fmt::print(opts_.out, "{} ops passed so far\n", step_);
      std::fflush(opts_.out);
    }
  }
  result_.ok = true;
  return result_;
}

bool Exerciser::Impl::Step() {
  if (opts_.remount && opts_.remount_every && (opts_.mask & Bit(Op::kRemount)) &&
      step_ % opts_.remount_every == 0)
    return DoRemount() == Outcome::kDone;
  // An op whose arguments cannot be made for the files as they are (a
  // collapse of an empty file) is skipped and another one drawn.
  for (int tries = 0; any_random_op_ && tries < 64; ++tries) {
    Op op = PickOp();
    Outcome o = Dispatch(op);
    if (o == Outcome::kSkipped) continue;
    if (o == Outcome::kDone) ++result_.op_counts[static_cast<size_t>(op)];
    return o == Outcome::kDone;
  }
  Log("(no enabled operation applies)");
  return true;
}

Outcome Exerciser::Impl::Dispatch(Op op) {
  File& f = files_[PickFile()];
  switch (op) {
    case Op::kWrite:
      return DoWrite(f);
    case Op::kRead:
      return DoRead(f);
    case Op::kTruncate:
      return DoTruncate(f);
    case Op::kFalloc:
    case Op::kFallocKeep:
    case Op::kPunch:
    case Op::kZero:
    case Op::kZeroKeep:
      return DoFallocate(f, op);
    case Op::kCollapse:
      return DoCollapse(f);
    case Op::kInsert:
      return DoInsert(f);
    case Op::kUnshare:
      return DoUnshare(f);
    case Op::kClone:
      return DoClone();
    case Op::kCopy:
      return DoCopy();
    case Op::kDefrag:
      return DoDefrag(f);
    case Op::kExchange:
      return DoExchange();
    case Op::kTmpReplace:
      return DoTmpReplace(f);
    case Op::kFreeze:
      return DoFreeze(f);
    case Op::kAppendOnly:
      return DoAppendOnly(f);
    case Op::kXattr:
      return DoXattr(f);
    case Op::kRemount:
    case Op::kCount:
      break;
  }
  return Outcome::kSkipped;
}

// --- plain data operations ------------------------------------------------------

Outcome Exerciser::Impl::DoWrite(File& f) {
  uint64_t off = PickOffset(f.model.size(), opts_.max_size - 1);
  uint64_t len = PickLength(opts_.max_size - off);
  std::string data = RandomBytes(len);
  ssize_t n = pwrite(f.rw.get(), data.data(), len, static_cast<off_t>(off));
  int err = n < 0 ? errno : 0;
  Log(fmt::format("write {} off {} len {} = {}", f.name, Hex(off), Hex(len),
                  n < 0 ? ErrName(err) : Hex(static_cast<uint64_t>(n))));
  if (n < 0 || static_cast<uint64_t>(n) != len)
    return Fail(fmt::format("pwrite returned {} ({}), expected {}", n, ErrName(err), len));
  f.model.Write(off, data);
  return Outcome::kDone;
}

Outcome Exerciser::Impl::DoRead(File& f) {
  uint64_t off = PickOffset(f.model.size(), opts_.max_size);
  uint64_t len = PickLength(opts_.max_size);
  std::string buf(len, '\0');
  ssize_t n = pread(f.ro.get(), buf.data(), len, static_cast<off_t>(off));
  int err = n < 0 ? errno : 0;
  Log(fmt::format("read {} off {} len {} = {}", f.name, Hex(off), Hex(len),
                  n < 0 ? ErrName(err) : Hex(static_cast<uint64_t>(n))));
  const std::string& m = f.model.bytes();
  uint64_t want = off >= m.size() ? 0 : std::min<uint64_t>(len, m.size() - off);
  if (n < 0 || static_cast<uint64_t>(n) != want)
    return Fail(fmt::format("pread returned {} ({}), expected {}", n, ErrName(err), want));
  for (uint64_t i = 0; i < want; ++i) {
    if (buf[i] != m[off + i])
      return Fail(fmt::format("pread of {}: byte at {} differs\n  expected: {}\n  actual:   {}",
                              f.name, Hex(off + i), HexBytes(m, off + i),
                              HexBytes(std::string_view(buf).substr(0, want), i)));
  }
  return Outcome::kDone;
}

Outcome Exerciser::Impl::DoTruncate(File& f) {
  uint64_t size = f.model.size();
  uint64_t to = Chance(0.5) ? Uniform(0, size) : Uniform(size, opts_.max_size);
  if (Chance(0.3)) to = std::min(to / B * B, opts_.max_size);
  int err = ftruncate(f.rw.get(), static_cast<off_t>(to)) == 0 ? 0 : errno;
  Log(fmt::format("truncate {} {} -> {} = {}", f.name, Hex(size), Hex(to), ErrName(err)));
  Outcome o = Expect(err, 0);
  if (o == Outcome::kDone) f.model.Truncate(to);
  return o;
}

Outcome Exerciser::Impl::DoFallocate(File& f, Op op) {
  int mode = 0;
  switch (op) {
    case Op::kFallocKeep:
      mode = FALLOC_FL_KEEP_SIZE;
      break;
    case Op::kPunch:
      mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
      break;
    case Op::kZero:
      mode = FALLOC_FL_ZERO_RANGE;
      break;
    case Op::kZeroKeep:
      mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
      break;
    default:
      break;
  }
  uint64_t off = PickOffset(f.model.size(), opts_.max_size - 1);
  uint64_t len = PickLength(opts_.max_size - off);
  int err = fallocate(f.rw.get(), mode, static_cast<off_t>(off), static_cast<off_t>(len)) == 0
                ? 0
                : errno;
  Log(fmt::format("{} {} off {} len {} = {}", OpName(op), f.name, Hex(off), Hex(len),
                  ErrName(err)));
  Outcome o = Expect(err, 0);
  if (o != Outcome::kDone) return o;
  bool keep = mode & FALLOC_FL_KEEP_SIZE;
  if (mode & FALLOC_FL_PUNCH_HOLE)
    f.model.PunchHole(off, len);
  else if (mode & FALLOC_FL_ZERO_RANGE)
    f.model.ZeroRange(off, len, keep);
  else
    f.model.Preallocate(off, len, keep);
  return o;
}

// --- block-map operations -----------------------------------------------------------

int Exerciser::Impl::RangeIoctl(File& f, Op op, uint64_t off, uint64_t len) {
  int rc = 0;
  if (opts_.kernel_ops) {
    int mode = op == Op::kCollapse ? FALLOC_FL_COLLAPSE_RANGE
               : op == Op::kInsert ? FALLOC_FL_INSERT_RANGE
                                   : FALLOC_FL_UNSHARE_RANGE;
    rc = fallocate(f.rw.get(), mode, static_cast<off_t>(off), static_cast<off_t>(len));
  } else {
    unsigned long cmd = op == Op::kCollapse ? LEASEFS_IOC_COLLAPSE_RANGE
                        : op == Op::kInsert ? LEASEFS_IOC_INSERT_RANGE
                                            : LEASEFS_IOC_UNSHARE_RANGE;
    leasefs_range r{off, len};
    rc = ioctl(f.rw.get(), cmd, &r);
  }
  return rc < 0 ? errno : 0;
}

Outcome Exerciser::Impl::DoCollapse(File& f) {
  uint64_t size = f.model.size();
  uint64_t off = 0;
  uint64_t len = 0;
  if (Chance(opts_.invalid_rate)) {
    off = Uniform(0, size / B) * B;
    len = Uniform(1, 4) * B;
    switch (Uniform(0, 2)) {
      case 0:
        off += Uniform(1, B - 1);  // unaligned offset
        break;
      case 1:
        len += Uniform(1, B - 1);  // unaligned length
        break;
      default:
        off = size > len ? (size - len) / B * B + B : 0;  // reaching EOF
    }
  } else {
    if (size <= B) return Outcome::kSkipped;  // nothing collapsible short of EOF
    uint64_t blocks = (size - 1) / B;         // whole blocks before EOF
    uint64_t n = PickBlocks(1, blocks);
    off = Uniform(0, blocks - n) * B;
    len = n * B;
  }
  int want = CollapseErrno(size, off, len);
  int err = RangeIoctl(f, Op::kCollapse, off, len);
  Log(fmt::format("collapse {} off {} len {} (size {}) = {}", f.name, Hex(off), Hex(len), Hex(size),
                  ErrName(err)));
  Outcome o = Expect(err, want);
  if (o == Outcome::kDone && want == 0) f.model.Collapse(off, len);
  return o;
}

Outcome Exerciser::Impl::DoInsert(File& f) {
  uint64_t size = f.model.size();
  uint64_t off = 0;
  uint64_t len = 0;
  if (Chance(opts_.invalid_rate)) {
    off = Uniform(0, size / B) * B;
    len = Uniform(1, 4) * B;
    switch (Uniform(0, opts_.kernel_ops ? 2 : 3)) {
      case 0:
        off += Uniform(1, B - 1);
        break;
      case 1:
        len += Uniform(1, B - 1);
        break;
      case 2:
        off = AlignUp(size);  // at or past EOF
        break;
      default:  // past leasefs's size limit (xfs's is another)
        if (size == 0) return Outcome::kSkipped;
        off = (size - 1) / B * B;
        len = AlignUp(kMaxFileSize - size + 1);
    }
  } else {
    if (size == 0 || size + B > opts_.max_size) return Outcome::kSkipped;
    off = Uniform(0, (size - 1) / B) * B;
    len = PickBlocks(1, (opts_.max_size - size) / B) * B;
  }
  int want = InsertErrno(size, off, len);
  int err = RangeIoctl(f, Op::kInsert, off, len);
  Log(fmt::format("insert {} off {} len {} (size {}) = {}", f.name, Hex(off), Hex(len), Hex(size),
                  ErrName(err)));
  Outcome o = Expect(err, want);
  if (o == Outcome::kDone && want == 0) f.model.Insert(off, len);
  return o;
}

// Unshare keeps to the file: whether it may also extend the file (as
// fallocate's UNSHARE_RANGE without KEEP_SIZE does on xfs) is not part of
// the ioctl's contract, so the exerciser does not ask.
Outcome Exerciser::Impl::DoUnshare(File& f) {
  uint64_t size = f.model.size();
  if (size == 0) return Outcome::kSkipped;
  uint64_t off = Uniform(0, size - 1);
  if (Chance(0.5)) off = off / B * B;
  uint64_t len = PickLength(size - off);
  int err = RangeIoctl(f, Op::kUnshare, off, len);
  Log(fmt::format("unshare {} off {} len {} = {}", f.name, Hex(off), Hex(len), ErrName(err)));
  Outcome o = Expect(err, 0);
  if (o == Outcome::kDone && BlockMapChecks()) o = CheckUnshared(f, off, len);
  return o;
}

int Exerciser::Impl::CloneCall(File& src, uint64_t src_off, uint64_t len, File& dst,
                               uint64_t dst_off) {
  int rc = 0;
  if (opts_.kernel_ops) {
    file_clone_range r{src.ro.get(), src_off, len, dst_off};
    rc = ioctl(dst.rw.get(), FICLONERANGE, &r);
  } else {
    leasefs_clone_range r{src.ro.get(), src_off, len, dst_off};
    rc = ioctl(dst.rw.get(), LEASEFS_IOC_CLONE_RANGE, &r);
  }
  return rc < 0 ? errno : 0;
}

// Clones mostly valid ranges: whole blocks inside the source, or from a
// block boundary to the source's end of file (which may be unaligned: then
// the destination offset is chosen so that the range reaches the
// destination's end of file, and the model replaces the destination's whole
// tail, FileModel::CopyFrom). Sometimes src_length 0 ("to end of file").
// Invalid ones: unaligned offsets or length, past the source's end of file,
// an unaligned end landing inside the destination, overlap within one file.
Outcome Exerciser::Impl::DoClone() {
  File& src = files_[PickFile()];
  File& dst = Chance(0.25) ? src : files_[PickFile()];
  bool same = &src == &dst;
  uint64_t ssize = src.model.size();
  uint64_t dsize = dst.model.size();
  bool invalid = Chance(opts_.invalid_rate);
  uint64_t src_off = 0, len = 0, dst_off = 0;
  CloneOutcome want;
  for (int tries = 0;; ++tries) {
    if (tries == 16 || ssize == 0) return Outcome::kSkipped;
    uint64_t last_block = (ssize - 1) / B;  // the block holding the last byte
    bool to_eof = Chance(0.3) || ssize < B;
    src_off = PickBlocks(0, to_eof ? last_block : ssize / B - 1) * B;
    len = to_eof ? ssize - src_off : PickBlocks(1, ssize / B - src_off / B) * B;
    if (len > opts_.max_size) continue;
    uint64_t lo = 0;  // lowest destination block
    if (!Aligned(len) && dsize > len) lo = AlignUp(dsize - len) / B;
    uint64_t hi = (opts_.max_size - len) / B;
    if (lo > hi) continue;
    dst_off = (Chance(0.7) ? Uniform(lo, std::min(hi, std::max(lo, AlignUp(dsize) / B)))
                           : Uniform(lo, hi)) *
              B;
    uint64_t len_arg = to_eof && Chance(0.3) ? 0 : len;
    if (invalid) {
      switch (Uniform(0, 4)) {
        case 0:
          src_off += Uniform(1, B - 1);
          break;
        case 1:
          dst_off += Uniform(1, B - 1);
          break;
        case 2:
          len_arg = len + (Aligned(len) ? Uniform(1, B - 1) : B);  // past EOF or unaligned
          break;
        case 3:
          if (!to_eof || Aligned(len) || dsize <= len + B) continue;
          dst_off = Uniform(0, (dsize - len - 1) / B) * B;  // EOF lands mid-destination
          break;
        default:
          if (!same) continue;
          dst_off = src_off + Uniform(0, AlignUp(len) / B - 1) * B;  // overlapping
      }
    }
    want = Clone(ssize, src_off, len_arg, dsize, dst_off, same);
    if ((want.err != 0) != invalid) continue;
    if (dst_off + want.len > opts_.max_size && want.err == 0) continue;
    len = len_arg;
    break;
  }
  int err = CloneCall(src, src_off, len, dst, dst_off);
  Log(fmt::format("clone {} off {} len {} -> {} off {} (sizes {} {}) = {}", src.name, Hex(src_off),
                  Hex(len), dst.name, Hex(dst_off), Hex(ssize), Hex(dsize), ErrName(err)));
  Outcome o = Expect(err, want.err);
  if (o != Outcome::kDone || want.err != 0) return o;
  dst.model.CopyFrom(src.model, src_off, dst_off, want.len);
  if (BlockMapChecks() && Aligned(want.len) && want.len > 0)
    o = CheckShared(src, src_off, dst, dst_off, want.len);
  return o;
}

Outcome Exerciser::Impl::DoCopy() {
  File& src = files_[PickFile()];
  File& dst = Chance(0.25) ? src : files_[PickFile()];
  bool same = &src == &dst;
  uint64_t ssize = src.model.size();
  bool invalid = same && Chance(opts_.invalid_rate);
  uint64_t src_off = 0, len = 0, dst_off = 0;
  CopyOutcome want;
  for (int tries = 0;; ++tries) {
    if (tries == 16) return Outcome::kSkipped;
    src_off = Chance(0.1) ? Uniform(ssize, ssize + B) : PickOffset(ssize, ssize);
    dst_off = PickOffset(dst.model.size(), opts_.max_size - 1);
    // Half the time at the source's offset within its block: leasefs then
    // clones the whole blocks in the middle instead of copying them.
    if (Chance(0.5)) {
      uint64_t block = Uniform(0, (opts_.max_size - 1) / B);
      if (Chance(0.5)) block = std::min(block, AlignUp(dst.model.size()) / B);
      dst_off = std::min(block * B + src_off % B, opts_.max_size - 1);
    }
    len = PickLength(opts_.max_size - dst_off);
    if (invalid) dst_off = src_off + Uniform(0, len - 1);  // overlapping
    want = CopyRange(ssize, src_off, len, dst_off, same);
    if ((want.err != 0) != invalid) continue;
    if (dst_off + len > opts_.max_size && want.err == 0) continue;
    break;
  }
  loff_t in = static_cast<loff_t>(src_off);
  loff_t out = static_cast<loff_t>(dst_off);
  ssize_t n = copy_file_range(src.ro.get(), &in, dst.rw.get(), &out, len, 0);
  int err = n < 0 ? errno : 0;
  Log(fmt::format("copy {} off {} len {} -> {} off {} (sizes {} {}) = {}", src.name, Hex(src_off),
                  Hex(len), dst.name, Hex(dst_off), Hex(ssize), Hex(dst.model.size()),
                  n < 0 ? ErrName(err) : Hex(static_cast<uint64_t>(n))));
  Outcome o = Expect(err, want.err);
  if (o != Outcome::kDone || want.err != 0) return o;
  uint64_t copied = static_cast<uint64_t>(n);
  // copy_file_range(2) may copy less than asked (xfs stops at a block
  // boundary after remapping); leasefs copies all, and must.
  bool short_ok = opts_.kernel_ops && copied > 0 && copied < want.len;
  if (copied != want.len && !short_ok)
    return Fail(fmt::format("copy_file_range copied {} bytes, expected {}", n, want.len));
  dst.model.CopyFrom(src.model, src_off, dst_off, copied);
  return o;
}

Outcome Exerciser::Impl::DoDefrag(File& f) {
  std::vector<MapRun> before;
  if (BlockMapChecks()) {
    if (int err = BlockMap(f, 0, UINT64_MAX, &before))
      return Fail(
          fmt::format("LEASEFS_IOC_BMAP of {} before defrag failed: {}", f.name, ErrName(err)));
  }
  leasefs_defrag d{};
  int err = ioctl(f.rw.get(), LEASEFS_IOC_DEFRAG, &d) < 0 ? errno : 0;
  Log(fmt::format("defrag {} = {} (extents {} -> {}, {} blocks moved)", f.name, ErrName(err),
                  d.extents_before, d.extents_after, d.blocks_moved));
  Outcome o = Expect(err, 0);
  if (o != Outcome::kDone || !BlockMapChecks()) return o;
  // Blocks shared with another file stay where they are.
  std::vector<MapRun> after;
  if ((err = BlockMap(f, 0, UINT64_MAX, &after)))
    return Fail(
        fmt::format("LEASEFS_IOC_BMAP of {} after defrag failed: {}", f.name, ErrName(err)));
  for (const MapRun& r : before) {
    if (!(r.flags & LEASEFS_EXTENT_SHARED)) continue;
    for (uint64_t i = 0; i < r.len; i += B) {
      MapBlock now = Lookup(after, r.file_off + i);
      if (!now.mapped || now.pool_off != r.pool_off + i)
        return Fail(fmt::format("defrag moved {}'s shared block at {} (pool {} -> {})\n{}", f.name,
                                Hex(r.file_off + i), Hex(r.pool_off + i),
                                now.mapped ? Hex(now.pool_off) : "hole",
                                MapText(f, 0, UINT64_MAX)));
    }
  }
  return o;
}

// --- namespace operations ------------------------------------------------------

// The two names swap inodes; each File keeps its name, so it takes the
// other's descriptors and model. The names must then lead to the swapped
// inodes.
Outcome Exerciser::Impl::DoExchange() {
  if (files_.size() < 2) return Outcome::kSkipped;
  const size_t a = PickFile();
  size_t b = PickFile();
  if (a == b) b = (b + 1) % files_.size();
  File& fa = files_[a];
  File& fb = files_[b];
  const int err = syscall(SYS_renameat2, AT_FDCWD, fa.path.c_str(), AT_FDCWD, fb.path.c_str(),
                          RENAME_EXCHANGE) == 0
                      ? 0
                      : errno;
  Log(fmt::format("exchange {} {} = {}", fa.name, fb.name, ErrName(err)));
  Outcome o = Expect(err, 0);
  if (o != Outcome::kDone) return o;
  std::swap(fa.rw, fb.rw);
  std::swap(fa.ro, fb.ro);
  std::swap(fa.model, fb.model);
  std::swap(fa.xattrs, fb.xattrs);
  for (File* f : {&fa, &fb}) {
    struct stat by_name {}, by_fd {};
    if (stat(f->path.c_str(), &by_name) != 0 || fstat(f->rw.get(), &by_fd) != 0 ||
        by_name.st_ino != by_fd.st_ino)
      return Fail(fmt::format("after exchange, {} names inode {}, expected {}", f->name,
                              by_name.st_ino, by_fd.st_ino));
  }
  return o;
}

// The safe-replace idiom: new contents in an O_TMPFILE (the old ones with a
// random write applied), linked under a temporary name, renamed over the
// file. The File then uses the new inode.
Outcome Exerciser::Impl::DoTmpReplace(File& f) {
  const std::string dir = f.path.substr(0, f.path.rfind('/'));
  UniqueFd tmp(open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644));
  if (!tmp.valid()) {
    Log(fmt::format("tmpfile-replace {}: open O_TMPFILE = {}", f.name, ErrName(errno)));
    return Fail(fmt::format("open(O_TMPFILE) in {}: {}", dir, ErrName(errno)));
  }
  FileModel next = f.model;
  const uint64_t off = PickOffset(next.size(), opts_.max_size - 1);
  next.Write(off, RandomBytes(PickLength(opts_.max_size - off)));
  const std::string& bytes = next.bytes();
  for (uint64_t done = 0; done < bytes.size();) {
    const ssize_t n = pwrite(tmp.get(), bytes.data() + done, bytes.size() - done,
                             static_cast<off_t>(done));
    if (n <= 0) return Fail(fmt::format("pwrite to the tmpfile: {}", ErrName(errno)));
    done += static_cast<uint64_t>(n);
  }
  const std::string proc = fmt::format("/proc/self/fd/{}", tmp.get());
  const std::string temp_name = f.path + ".tmp";
  int err = linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp_name.c_str(), AT_SYMLINK_FOLLOW) == 0
                ? 0
                : errno;
  if (err == 0) err = rename(temp_name.c_str(), f.path.c_str()) == 0 ? 0 : errno;
  Log(fmt::format("tmpfile-replace {} size {} (write at {}) = {}", f.name, Hex(bytes.size()),
                  Hex(off), ErrName(err)));
  Outcome o = Expect(err, 0);
  if (o != Outcome::kDone) return o;
  f.ro.reset(open(f.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.ro.valid()) return Fail(fmt::format("open {}: {}", f.path, ErrName(errno)));
  f.rw = std::move(tmp);
  f.model = std::move(next);
  f.xattrs.clear();  // a new inode: none of the old one's xattrs
  return o;
}

// One of a few user.* names of the file: removed, or set to a value that
// is empty, small, or up to XATTR_SIZE_MAX (then in value blocks of its own
// on leasefs), with XATTR_CREATE or XATTR_REPLACE now and then (their
// errnos are checked).
Outcome Exerciser::Impl::DoXattr(File& f) {
  const std::string name = fmt::format("user.fsx{}", Uniform(0, 3));
  const bool exists = f.xattrs.count(name) != 0;
  if (Uniform(0, 9) < 3) {
    const int err = fremovexattr(f.rw.get(), name.c_str()) == 0 ? 0 : errno;
    Log(fmt::format("removexattr {} {} = {}", f.name, name, ErrName(err)));
    const Outcome o = Expect(err, exists ? 0 : ENODATA);
    if (o == Outcome::kDone) f.xattrs.erase(name);
    return o;
  }
  const uint64_t kind = Uniform(0, 9);
  const uint64_t len = kind == 0 ? 0 : kind < 4 ? Uniform(2000, 65536) : Uniform(1, 300);
  const uint64_t pick = Uniform(0, 9);
  const int flags = pick < 7 ? 0 : pick == 7 ? XATTR_CREATE : XATTR_REPLACE;
  const std::string value = RandomBytes(len);
  const int err = fsetxattr(f.rw.get(), name.c_str(), value.data(), len, flags) == 0 ? 0 : errno;
  Log(fmt::format("setxattr {} {} len {}{} = {}", f.name, name, Hex(len),
                  flags == XATTR_CREATE ? " CREATE" : flags == XATTR_REPLACE ? " REPLACE" : "",
                  ErrName(err)));
  const int want = flags == XATTR_CREATE && exists    ? EEXIST
                   : flags == XATTR_REPLACE && !exists ? ENODATA
                                                       : 0;
  const Outcome o = Expect(err, want);
  if (o == Outcome::kDone && want == 0) f.xattrs[name] = value;
  return o;
}

// --- attribute flags (docs/attr-flags.md) -------------------------------------------

int Exerciser::Impl::SetFlags(File& f, unsigned flags) {
  return ioctl(f.ro.get(), FS_IOC_SETFLAGS, &flags) == 0 ? 0 : errno;
}

// chattr +i, then one change of the file picked at random, which must fail
// with EPERM and change nothing (the model stays), then chattr -i.
Outcome Exerciser::Impl::DoFreeze(File& f) {
  if (int err = SetFlags(f, FS_IMMUTABLE_FL); err != 0)
    return Fail(fmt::format("chattr +i {}: {}", f.name, ErrName(err)));
  File& other = files_[PickFile()];
  const auto size = static_cast<off_t>(f.model.size());
  const auto at = static_cast<off_t>(Uniform(0, f.model.size()));
  // The kernel answers a copy of no bytes, and one within a file whose
  // ranges overlap, without asking the daemon: copy only from another
  // file that has bytes.
  const bool can_copy = &other != &f && other.model.size() > 0;
  // Each call's errno, 0 if it went through.
  auto err_of = [](bool ok) { return ok ? 0 : errno; };
  std::string what;
  int got = 0;
  switch (Uniform(0, can_copy ? 5 : 4)) {
    case 0:
      what = "pwrite";
      got = err_of(pwrite(f.rw.get(), "x", 1, at) == 1);
      break;
    case 1:
      what = "ftruncate";
      got = err_of(ftruncate(f.rw.get(), Chance(0.5) ? at : size + 1) == 0);
      break;
    case 2:
      what = "punch";
      got = err_of(fallocate(f.rw.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, B) == 0);
      break;
    case 3:
      what = "collapse";
      got = RangeIoctl(f, Op::kCollapse, 0, B);
      break;
    case 4:
      what = "clone from " + other.name;
      got = CloneCall(other, 0, 0, f, 0);
      break;
    default: {
      what = "copy from " + other.name;
      loff_t in = 0, out = at;
      got = err_of(copy_file_range(other.ro.get(), &in, f.rw.get(), &out, B, 0) >= 0);
      break;
    }
  }
  Log(fmt::format("freeze {}: {} = {}", f.name, what, ErrName(got)));
  const Outcome o = Expect(got, EPERM);
  if (int err = SetFlags(f, 0); err != 0)
    return Fail(fmt::format("chattr -i {}: {}", f.name, ErrName(err)));
  return o;
}

// chattr +a, then an append through a new O_APPEND descriptor (which the
// model follows) and a pwrite through the file's own descriptor, which is
// not O_APPEND and must fail with EPERM wherever it aims, then chattr -a.
Outcome Exerciser::Impl::DoAppendOnly(File& f) {
  const uint64_t size = f.model.size();
  if (size >= opts_.max_size) return Outcome::kSkipped;
  if (int err = SetFlags(f, FS_APPEND_FL); err != 0)
    return Fail(fmt::format("chattr +a {}: {}", f.name, ErrName(err)));
  UniqueFd app(open(f.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (!app.valid()) return Fail(fmt::format("open O_APPEND {}: {}", f.path, ErrName(errno)));
  const std::string data = RandomBytes(PickLength(std::min(opts_.max_size - size, 2 * B)));
  const ssize_t n = write(app.get(), data.data(), data.size());
  const int werr = n < 0 ? errno : 0;
  Log(fmt::format("append-only {}: append {} = {}", f.name, Hex(data.size()),
                  n < 0 ? ErrName(werr) : Hex(static_cast<uint64_t>(n))));
  if (n < 0 || static_cast<size_t>(n) != data.size())
    return Fail(fmt::format("O_APPEND write returned {} ({}), expected {}", n, ErrName(werr),
                            data.size()));
  f.model.Write(size, data);
  const auto at = static_cast<off_t>(Uniform(0, f.model.size()));
  const int got = pwrite(f.rw.get(), "x", 1, at) == 1 ? 0 : errno;
  Log(fmt::format("append-only {}: pwrite at {} = {}", f.name, Hex(at), ErrName(got)));
  const Outcome o = Expect(got, EPERM);
  if (int err = SetFlags(f, 0); err != 0)
    return Fail(fmt::format("chattr -a {}: {}", f.name, ErrName(err)));
  return o;
}

Outcome Exerciser::Impl::DoRemount() {
  for (File& f : files_) {
    f.rw.reset();
    f.ro.reset();
  }
  std::string err = opts_.remount();
  Log(fmt::format("remount = {}", err.empty() ? "OK" : err));
  if (!err.empty()) return Fail("remount failed: " + err);
  if (!OpenFiles(false)) return Outcome::kFailed;
  ++result_.op_counts[static_cast<size_t>(Op::kRemount)];
  return Outcome::kDone;
}

// --- checks ---------------------------------------------------------------------------

bool Exerciser::Impl::OpenFiles(bool create) {
  int flags = O_RDWR | (create ? O_CREAT | O_TRUNC : 0);
  for (File& f : files_) {
    f.rw.reset(open(f.path.c_str(), flags | O_CLOEXEC, 0644));
    if (f.rw.valid()) f.ro.reset(open(f.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f.rw.valid() || !f.ro.valid()) {
      Fail(fmt::format("open {}: {}", f.path, ErrName(errno)));
      return false;
    }
    // A file left by an earlier run is truncated; it loses its xattrs too.
    if (create && !ClearXattrs(f)) return false;
  }
  return true;
}

bool Exerciser::Impl::ClearXattrs(File& f) {
  std::string names(65536, '\0');
  const ssize_t n = flistxattr(f.rw.get(), names.data(), names.size());
  for (ssize_t at = 0; at < n;) {
    const std::string name(names.data() + at);
    at += static_cast<ssize_t>(name.size()) + 1;
    if (name.rfind("user.", 0) == 0 && fremovexattr(f.rw.get(), name.c_str()) != 0) {
      Fail(fmt::format("removing {} of {}: {}", name, f.path, ErrName(errno)));
      return false;
    }
  }
  return true;
}

bool Exerciser::Impl::VerifyAll() {
  for (File& f : files_)
    if (!VerifyFile(f)) return false;
  return true;
}

// The whole file through pread, and its fstat size, against the model.
bool Exerciser::Impl::VerifyFile(File& f) {
  const std::string& m = f.model.bytes();
  struct stat st {};
  if (fstat(f.rw.get(), &st) != 0) {
    Fail(fmt::format("fstat of {}: {}", f.name, ErrName(errno)));
    return false;
  }
  // One byte more than the model, to see end of file where it should be.
  readbuf_.resize(m.size() + 1);
  uint64_t got = 0;
  while (got < readbuf_.size()) {
    ssize_t n =
        pread(f.ro.get(), readbuf_.data() + got, readbuf_.size() - got, static_cast<off_t>(got));
    if (n < 0) {
      Fail(fmt::format("pread of {}: {}", f.name, ErrName(errno)));
      return false;
    }
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  readbuf_.resize(got);
  uint64_t common = std::min<uint64_t>(got, m.size());
  auto diff = std::mismatch(m.begin(), m.begin() + common, readbuf_.begin());
  bool same_bytes = diff.first == m.begin() + common;
  if (same_bytes && got == m.size() && static_cast<uint64_t>(st.st_size) == m.size())
    return VerifyXattrs(f);
  std::string what = fmt::format("{}: expected size {}, fstat says {}, read gave {} bytes", f.name,
                                 Hex(m.size()), Hex(st.st_size), Hex(got));
  if (!same_bytes) {
    uint64_t at = diff.first - m.begin();
    uint64_t last = at, count = 0;
    for (uint64_t i = at; i < common; ++i)
      if (m[i] != readbuf_[i]) last = i, ++count;
    uint64_t from = at / 16 * 16;
    what += fmt::format(
        "\nfirst difference at {} (block {} + {}); {} bytes differ, the last at {}"
        "\n  from {}:\n  expected: {}\n  actual:   {}",
        Hex(at), at / B, Hex(at % B), count, Hex(last), Hex(from), HexBytes(m, from),
        HexBytes(readbuf_, from));
  }
  Fail(what);
  return false;
}

// The file's names (flistxattr) and each value (fgetxattr) against the
// model.
bool Exerciser::Impl::VerifyXattrs(File& f) {
  std::string names(4096, '\0');
  const ssize_t n = flistxattr(f.ro.get(), names.data(), names.size());
  if (n < 0) {
    Fail(fmt::format("flistxattr of {}: {}", f.name, ErrName(errno)));
    return false;
  }
  std::map<std::string, std::string> got;
  std::string value(65536, '\0');
  for (size_t at = 0; at < static_cast<size_t>(n);) {
    const std::string name(names.data() + at);
    at += name.size() + 1;
    if (name.rfind("user.", 0) != 0) continue;  // security.* of the system, say
    const ssize_t len = fgetxattr(f.ro.get(), name.c_str(), value.data(), value.size());
    if (len < 0) {
      Fail(fmt::format("fgetxattr {} of {}: {}", name, f.name, ErrName(errno)));
      return false;
    }
    got[name] = value.substr(0, static_cast<size_t>(len));
  }
  if (got == f.xattrs) return true;
  std::string what = fmt::format("{}: xattrs differ from the model:", f.name);
  for (const auto& [name, v] : f.xattrs) {
    auto it = got.find(name);
    if (it == got.end())
      what += fmt::format("\n  {} ({} bytes) is missing", name, v.size());
    else if (it->second != v)
      what += fmt::format("\n  {} has {} bytes, expected {}{}", name, it->second.size(), v.size(),
                          it->second.size() == v.size() ? " (contents differ)" : "");
  }
  for (const auto& [name, v] : got)
    if (!f.xattrs.count(name))
      what += fmt::format("\n  {} ({} bytes) should not exist", name, v.size());
  Fail(what);
  return false;
}

Outcome Exerciser::Impl::Expect(int got, int want) {
  if (got == want) {
    if (want != 0) ++result_.refused;
    return Outcome::kDone;
  }
  return Fail(fmt::format("the call returned {}, expected {}", ErrName(got), ErrName(want)));
}

int Exerciser::Impl::BlockMap(File& f, uint64_t off, uint64_t end, std::vector<MapRun>* runs) {
  auto map = std::make_unique<leasefs_bmap>();
  runs->clear();
  for (uint64_t start = off;;) {
    *map = leasefs_bmap{};
    map->start = start;
    if (ioctl(f.ro.get(), LEASEFS_IOC_BMAP, map.get()) < 0) return errno;
    for (uint32_t i = 0; i < map->count && i < LEASEFS_BMAP_MAX; ++i) {
      const leasefs_extent& e = map->extents[i];
      runs->push_back({e.file_offset, e.pool_offset, e.length, e.flags, e.refcount});
    }
    if (!(map->flags & LEASEFS_BMAP_MORE) || map->next >= end || map->next <= start) return 0;
    start = map->next;
  }
}

MapBlock Exerciser::Impl::Lookup(const std::vector<MapRun>& runs, uint64_t off) {
  for (const MapRun& r : runs)
    if (off >= r.file_off && off - r.file_off < r.len)
      return {true, r.pool_off + (off - r.file_off), r.flags, r.refcount};
  return {};
}

std::string Exerciser::Impl::MapText(File& f, uint64_t off, uint64_t end) {
  std::vector<MapRun> runs;
  if (int err = BlockMap(f, off, end, &runs)) return "(bmap: " + ErrName(err) + ")";
  std::string out = fmt::format("block map of {} from {}:", f.name, Hex(off));
  for (const MapRun& r : runs) {
    if (r.file_off >= end) break;
    out += fmt::format("\n  file {} +{} -> pool {} flags {:#x} refcount {}", Hex(r.file_off),
                       Hex(r.len), Hex(r.pool_off), r.flags, r.refcount);
  }
  return out;
}

// After a block-aligned clone: every written block of the source range and
// its destination block are one pool block, marked shared. Then, sometimes,
// a write into one of a pair must move that one to a block of its own.
Outcome Exerciser::Impl::CheckShared(File& src, uint64_t src_off, File& dst, uint64_t dst_off,
                                     uint64_t len) {
  std::vector<MapRun> sruns, druns;
  int err = BlockMap(src, src_off, src_off + len, &sruns);
  if (!err) err = BlockMap(dst, dst_off, dst_off + len, &druns);
  if (err) return Fail("LEASEFS_IOC_BMAP after clone failed: " + ErrName(err));
  ++result_.shared_checks;
  std::vector<uint64_t> pairs;  // block indexes sharing a written block
  for (uint64_t i = 0; i < len; i += B) {
    MapBlock s = Lookup(sruns, src_off + i);
    if (!s.mapped || (s.flags & LEASEFS_EXTENT_UNWRITTEN)) continue;  // reads as zeros: no rule
    MapBlock d = Lookup(druns, dst_off + i);
    bool ok = d.mapped && d.pool_off == s.pool_off && (s.flags & LEASEFS_EXTENT_SHARED) &&
              (d.flags & LEASEFS_EXTENT_SHARED) && s.refcount >= 2 && d.refcount >= 2;
    if (!ok)
      return Fail(fmt::format(
          "after the clone, {} at {} and {} at {} are not one shared block "
          "(src pool {} flags {:#x} refcount {}; dst {})\n{}\n{}",
          src.name, Hex(src_off + i), dst.name, Hex(dst_off + i), Hex(s.pool_off), s.flags,
          s.refcount,
          d.mapped
              ? fmt::format("pool {} flags {:#x} refcount {}", Hex(d.pool_off), d.flags, d.refcount)
              : "a hole",
          MapText(src, src_off, src_off + len), MapText(dst, dst_off, dst_off + len)));
    pairs.push_back(i);
  }
  if (pairs.empty() || !Chance(0.4)) return Outcome::kDone;
  uint64_t i = pairs[Uniform(0, pairs.size() - 1)];
  uint64_t pool_off = Lookup(sruns, src_off + i).pool_off;
  if (Chance(0.5)) return CheckCopyOnWrite(src, src_off + i, dst, dst_off + i, pool_off);
  return CheckCopyOnWrite(dst, dst_off + i, src, src_off + i, pool_off);
}

// Writes a few bytes into block `a_off` of `a`, which shares pool block
// `pool_off` with block `b_off` of `b`: a gets a block of its own, b keeps
// the old one.
Outcome Exerciser::Impl::CheckCopyOnWrite(File& a, uint64_t a_off, File& b, uint64_t b_off,
                                          uint64_t pool_off) {
  uint64_t len = Chance(0.2) ? B : Uniform(1, 64);
  uint64_t off = a_off + Uniform(0, B - len);
  std::string data = RandomBytes(len);
  ssize_t n = pwrite(a.rw.get(), data.data(), len, static_cast<off_t>(off));
  int err = n < 0 ? errno : 0;
  Log(fmt::format("cow-write {} off {} len {} (shares pool {} with {} off {}) = {}", a.name,
                  Hex(off), Hex(len), Hex(pool_off), b.name, Hex(b_off),
                  n < 0 ? ErrName(err) : Hex(static_cast<uint64_t>(n))));
  if (n < 0 || static_cast<uint64_t>(n) != len)
    return Fail(fmt::format("pwrite returned {} ({}), expected {}", n, ErrName(err), len));
  a.model.Write(off, data);
  ++result_.cow_checks;
  std::vector<MapRun> aruns, bruns;
  err = BlockMap(a, a_off, a_off + B, &aruns);
  if (!err) err = BlockMap(b, b_off, b_off + B, &bruns);
  if (err) return Fail("LEASEFS_IOC_BMAP after copy on write failed: " + ErrName(err));
  MapBlock ab = Lookup(aruns, a_off);
  MapBlock bb = Lookup(bruns, b_off);
  if (ab.mapped && ab.pool_off != pool_off && !(ab.flags & LEASEFS_EXTENT_SHARED) && bb.mapped &&
      bb.pool_off == pool_off)
    return Outcome::kDone;
  return Fail(fmt::format(
      "copy on write: after writing {} at {}, it should have a block of its own and {} at {} "
      "keep pool {}\n{}\n{}",
      a.name, Hex(a_off), b.name, Hex(b_off), Hex(pool_off), MapText(a, a_off, a_off + B),
      MapText(b, b_off, b_off + B)));
}

// After unshare: no block wholly inside the range is shared.
Outcome Exerciser::Impl::CheckUnshared(File& f, uint64_t off, uint64_t len) {
  uint64_t first = AlignUp(off);
  uint64_t end = (off + len) / B * B;
  if (first >= end) return Outcome::kDone;
  std::vector<MapRun> runs;
  if (int err = BlockMap(f, first, end, &runs))
    return Fail("LEASEFS_IOC_BMAP after unshare failed: " + ErrName(err));
  for (uint64_t o = first; o < end; o += B) {
    MapBlock b = Lookup(runs, o);
    if (b.mapped && (b.flags & LEASEFS_EXTENT_SHARED))
      return Fail(fmt::format("after unshare, {}'s block at {} is still shared\n{}", f.name, Hex(o),
                              MapText(f, first, end)));
  }
  return Outcome::kDone;
}

// --- log and report ---------------------------------------------------------------------

void Exerciser::Impl::Log(std::string text) {
  if (opts_.verbose) fmt::print(opts_.out, "{:>7} {}\n", step_, text);
  log_.push_back({step_, std::move(text)});
  while (log_.size() > kLogDepth) log_.pop_front();
}

Outcome Exerciser::Impl::Fail(const std::string& what) {
  std::string r = fmt::format("FAILED: seed {}, step {} of {}\n{}\nlast {} operations:\n",
                              opts_.seed, step_, opts_.ops, what, log_.size());
  for (const LogEntry& e : log_) r += fmt::format("{:>7} {}\n", e.step, e.text);
  result_.report = std::move(r);
  result_.ok = false;
  return Outcome::kFailed;
}

Exerciser::Exerciser(Options opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}
Exerciser::~Exerciser() = default;
RunResult Exerciser::Run() { return impl_->Run(); }

}  // namespace leasefs::fsx
