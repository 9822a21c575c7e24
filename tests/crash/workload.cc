#include "tests/crash/workload.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>

#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "leasefs/ioctl.h"

namespace leasefs::crashtest {

// ---------------------------------------------------------------------------
// Randomness and data

uint64_t Rng::Next() {
  uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c) {
  Rng r(a ^ 0x5eed5eed5eed5eedull);
  uint64_t x = r.Next() ^ b;
  Rng r2(x);
  uint64_t y = r2.Next() ^ c;
  return Rng(y).Next();
}

std::string PatternBytes(uint64_t seed, size_t len) {
  std::string s(len, '\0');
  Rng r(seed);
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = r.Next();
    std::memcpy(&s[i], &v, std::min<size_t>(8, len - i));
  }
  return s;
}

namespace {

constexpr int kShortWrite = 100000;  // pseudo errno: write() returned a short count

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

std::string Printable(const std::string& s, size_t max = 40) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

const char* OpName(OpType t) {
  switch (t) {
    case OpType::kMkdir:
      return "mkdir";
    case OpType::kCreate:
      return "create";
    case OpType::kWrite:
      return "write";
    case OpType::kAppend:
      return "append";
    case OpType::kTruncate:
      return "truncate";
    case OpType::kFallocate:
      return "fallocate";
    case OpType::kRename:
      return "rename";
    case OpType::kLink:
      return "link";
    case OpType::kUnlink:
      return "unlink";
    case OpType::kRmdir:
      return "rmdir";
    case OpType::kSymlink:
      return "symlink";
    case OpType::kChmod:
      return "chmod";
    case OpType::kSetXattr:
      return "setxattr";
    case OpType::kRemoveXattr:
      return "removexattr";
    case OpType::kFsync:
      return "fsync";
    case OpType::kFdatasync:
      return "fdatasync";
    case OpType::kChattr:
      return "chattr";
    case OpType::kTmpfile:
      return "tmpfile";
    case OpType::kClone:
      return "clone";
    case OpType::kCopyRange:
      return "copy_file_range";
    case OpType::kPunch:
      return "punch";
    case OpType::kZeroRange:
      return "zero_range";
    case OpType::kCollapse:
      return "collapse";
    case OpType::kInsert:
      return "insert";
    case OpType::kUnshare:
      return "unshare";
    case OpType::kDefrag:
      return "defrag";
  }
  return "?";
}

}  // namespace

const char* ErrnoName(int err) {
  switch (err) {
    case 0:
      return "OK";
    case ENOENT:
      return "ENOENT";
    case EEXIST:
      return "EEXIST";
    case ENOTDIR:
      return "ENOTDIR";
    case EISDIR:
      return "EISDIR";
    case ENOTEMPTY:
      return "ENOTEMPTY";
    case EINVAL:
      return "EINVAL";
    case EPERM:
      return "EPERM";
    case EACCES:
      return "EACCES";
    case ENODATA:
      return "ENODATA";
    case ENOSPC:
      return "ENOSPC";
    case EIO:
      return "EIO";
    case EUCLEAN:
      return "EUCLEAN";
    case ENOTCONN:
      return "ENOTCONN";
    case ECONNABORTED:
      return "ECONNABORTED";
    case EMLINK:
      return "EMLINK";
    case EFBIG:
      return "EFBIG";
    case EOPNOTSUPP:
      return "EOPNOTSUPP";
    case ENAMETOOLONG:
      return "ENAMETOOLONG";
    case ERANGE:
      return "ERANGE";
    case E2BIG:
      return "E2BIG";
    case EBUSY:
      return "EBUSY";
    case kShortWrite:
      return "short write";
    default:
      return strerrorname_np(err) ? strerrorname_np(err) : "E?";
  }
}

std::string Describe(const Op& op) {
  std::string s = OpName(op.type);
  s += " '" + Printable(op.path) + "'";
  char buf[160];
  switch (op.type) {
    case OpType::kMkdir:
    case OpType::kCreate:
    case OpType::kChmod:
      std::snprintf(buf, sizeof buf, " mode %04o", op.mode);
      s += buf;
      break;
    case OpType::kWrite:
    case OpType::kAppend:
    case OpType::kFallocate:
      std::snprintf(buf, sizeof buf, " off %llu len %llu", static_cast<unsigned long long>(op.off),
                    static_cast<unsigned long long>(op.len));
      s += buf;
      break;
    case OpType::kTruncate:
      s += " to " + std::to_string(op.off);
      break;
    case OpType::kRename:
      s += " -> '" + Printable(op.path2) + "'";
      if (op.flags & RENAME_NOREPLACE) s += " NOREPLACE";
      if (op.flags & RENAME_EXCHANGE) s += " EXCHANGE";
      if (op.flags & RENAME_WHITEOUT) s += " WHITEOUT";
      break;
    case OpType::kLink:
      s += " -> '" + Printable(op.path2) + "'";
      break;
    case OpType::kSymlink:
      s += " target '" + Printable(op.text) + "'";
      break;
    case OpType::kSetXattr:
      s += " " + op.text + " = " + std::to_string(op.value.size()) + " bytes";
      if (op.flags == XATTR_CREATE) s += " CREATE";
      if (op.flags == XATTR_REPLACE) s += " REPLACE";
      break;
    case OpType::kRemoveXattr:
      s += " " + op.text;
      break;
    case OpType::kChattr:
      std::snprintf(buf, sizeof buf, " flags %#x", op.flags);
      s += buf;
      break;
    case OpType::kClone:
    case OpType::kCopyRange:
      std::snprintf(buf, sizeof buf, " off %llu from '", static_cast<unsigned long long>(op.off));
      s += buf + Printable(op.path2);
      std::snprintf(buf, sizeof buf, "' off %llu len %llu",
                    static_cast<unsigned long long>(op.off2),
                    static_cast<unsigned long long>(op.len));
      s += buf;
      break;
    case OpType::kPunch:
    case OpType::kZeroRange:
    case OpType::kCollapse:
    case OpType::kInsert:
    case OpType::kUnshare:
      std::snprintf(buf, sizeof buf, " off %llu len %llu", static_cast<unsigned long long>(op.off),
                    static_cast<unsigned long long>(op.len));
      s += buf;
      if (op.type == OpType::kZeroRange && (op.flags & FALLOC_FL_KEEP_SIZE)) s += " KEEP_SIZE";
      break;
    default:
      break;
  }
  return s;
}

bool WriteLike(const Op& op) {
  if (op.type == OpType::kWrite || op.type == OpType::kAppend) return true;
  // Offsets alike within their blocks share whole blocks and copy the
  // partial ones in one intent; other offsets go through the write path.
  return op.type == OpType::kCopyRange && op.off % kBlock != op.off2 % kBlock;
}

// ---------------------------------------------------------------------------
// Model

Model::Model(mode_t root_perm) {
  Node root;
  root.kind = Kind::kDir;
  root.perm = root_perm & 07777;
  nodes_[kRoot] = root;
  parent_of_dir_[kRoot] = kRoot;
}

unsigned Model::Nlink(int id) const {
  const Node& n = nodes_.at(id);
  if (n.kind != Kind::kDir) return links_.at(id);
  unsigned subdirs = 0;
  for (const auto& [name, child] : n.children)
    if (nodes_.at(child).kind == Kind::kDir) ++subdirs;
  return 2 + subdirs;
}

std::vector<std::string> Model::Paths() const {
  std::vector<std::string> out;
  std::function<void(int, const std::string&)> walk = [&](int id, const std::string& path) {
    for (const auto& [name, child] : nodes_.at(id).children) {
      std::string p = Join(path, name);
      out.push_back(p);
      if (nodes_.at(child).kind == Kind::kDir) walk(child, p);
    }
  };
  walk(kRoot, "");
  return out;
}

Model::Where Model::Locate(const std::string& path) const {
  Where w;
  if (path.empty()) {
    w.id = kRoot;
    return w;
  }
  int dir = kRoot;
  size_t pos = 0;
  for (;;) {
    size_t slash = path.find('/', pos);
    std::string comp =
        path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    const Node& d = nodes_.at(dir);
    auto it = d.children.find(comp);
    if (slash == std::string::npos) {
      w.parent = dir;
      w.name = comp;
      w.id = it == d.children.end() ? -1 : it->second;
      return w;
    }
    if (it == d.children.end() || nodes_.at(it->second).kind != Kind::kDir) return w;
    dir = it->second;
    pos = slash + 1;
  }
}

int Model::Resolve(const std::string& path) const { return Locate(path).id; }

bool Model::IsAncestor(int dir, int of) const {
  for (int cur = of;; cur = parent_of_dir_.at(cur)) {
    if (cur == dir) return true;
    if (cur == kRoot) return false;
  }
}

int Model::NewNode(Kind kind, mode_t perm) {
  int id = next_id_++;
  Node n;
  n.kind = kind;
  n.perm = perm;
  nodes_[id] = n;
  if (kind != Kind::kDir) links_[id] = 1;
  return id;
}

void Model::DropLink(int id) {
  if (nodes_.at(id).kind == Kind::kDir) {
    nodes_.erase(id);
    parent_of_dir_.erase(id);
    return;
  }
  if (--links_.at(id) == 0) {
    links_.erase(id);
    nodes_.erase(id);
  }
}

void Model::ReplaceData(int id, std::string data) { nodes_.at(id).data = std::move(data); }

int Model::Rename(const Op& op) {
  Where src = Locate(op.path);
  if (src.parent < 0 && src.id != kRoot) return ENOENT;
  if (src.id < 0) return ENOENT;
  if (src.id == kRoot) return EBUSY;
  Where dst = Locate(op.path2);
  if (dst.parent < 0) return dst.id == kRoot ? EBUSY : ENOENT;
  const bool exchange = op.flags & RENAME_EXCHANGE;
  if ((op.flags & RENAME_NOREPLACE) && dst.id >= 0) return EEXIST;
  if (exchange && dst.id < 0) return ENOENT;
  const bool src_dir = nodes_.at(src.id).kind == Kind::kDir;
  const bool dst_dir = dst.id >= 0 && nodes_.at(dst.id).kind == Kind::kDir;
  // The VFS's ancestry checks ("trap" of lock_rename) come before the rest.
  if (src.parent != dst.parent) {
    if (src_dir && IsAncestor(src.id, dst.parent)) return EINVAL;
    if (dst_dir && IsAncestor(dst.id, src.parent)) return exchange ? EINVAL : ENOTEMPTY;
  }
  if (src.id == dst.id) return 0;  // the same inode: nothing to do
  if (exchange) {
    nodes_.at(src.parent).children[src.name] = dst.id;
    nodes_.at(dst.parent).children[dst.name] = src.id;
    if (src_dir) parent_of_dir_[src.id] = dst.parent;
    if (dst_dir) parent_of_dir_[dst.id] = src.parent;
    return 0;
  }
  if (dst.id >= 0) {
    if (src_dir && !dst_dir) return ENOTDIR;
    if (!src_dir && dst_dir) return EISDIR;
    if (dst_dir && !nodes_.at(dst.id).children.empty()) return ENOTEMPTY;
  }
  if (dst.id >= 0) DropLink(dst.id);
  nodes_.at(src.parent).children.erase(src.name);
  nodes_.at(dst.parent).children[dst.name] = src.id;
  if (src_dir) parent_of_dir_[src.id] = dst.parent;
  if (op.flags & RENAME_WHITEOUT)
    nodes_.at(src.parent).children[src.name] = NewNode(Kind::kWhiteout, 0);
  return 0;
}

int Model::SetXattr(const Op& op) {
  Where w = Locate(op.path);
  if (w.id < 0) return ENOENT;
  Node& n = nodes_.at(w.id);
  if (n.kind == Kind::kSymlink) return EPERM;
  const bool exists = n.xattrs.count(op.text) != 0;
  if (op.flags == XATTR_CREATE && exists) return EEXIST;
  if (op.flags == XATTR_REPLACE && !exists) return ENODATA;
  n.xattrs[op.text] = op.value;
  return 0;
}

int Model::Apply(const Op& op) {
  if (op.type == OpType::kRename) return Rename(op);
  if (op.type == OpType::kSetXattr) return SetXattr(op);
  Where w = Locate(op.path);
  if (w.parent < 0 && w.id != kRoot) return ENOENT;  // a parent is missing
  switch (op.type) {
    case OpType::kMkdir:
    case OpType::kCreate:
    case OpType::kTmpfile:
    case OpType::kSymlink: {
      if (w.id >= 0) return EEXIST;
      int id = op.type == OpType::kMkdir  ? NewNode(Kind::kDir, op.mode & 01777)
               : op.type == OpType::kSymlink ? NewNode(Kind::kSymlink, 0777)
                                            : NewNode(Kind::kFile, op.mode & 07777);
      if (op.type == OpType::kSymlink) nodes_.at(id).data = op.text;
      if (op.type == OpType::kTmpfile) nodes_.at(id).data = PatternBytes(op.data_seed, op.len);
      if (op.type == OpType::kMkdir) parent_of_dir_[id] = w.parent;
      // Files and directories take nodump and noatime from their directory
      // (ext4, tmpfs and leasefs alike; symlinks are not compared).
      if (op.type != OpType::kSymlink)
        nodes_.at(id).attr_flags = nodes_.at(w.parent).attr_flags & kChattrFlags;
      nodes_.at(w.parent).children[w.name] = id;
      return 0;
    }
    case OpType::kLink: {
      if (w.id < 0) return ENOENT;
      Where dst = Locate(op.path2);
      if (dst.parent < 0) return dst.id == kRoot ? EEXIST : ENOENT;
      if (dst.id >= 0) return EEXIST;
      if (nodes_.at(w.id).kind == Kind::kDir) return EPERM;
      nodes_.at(dst.parent).children[dst.name] = w.id;
      ++links_.at(w.id);
      return 0;
    }
    default:
      break;
  }
  if (w.id < 0) return ENOENT;
  Node& n = nodes_.at(w.id);
  switch (op.type) {
    case OpType::kWrite:
    case OpType::kAppend: {
      if (n.kind == Kind::kDir) return EISDIR;
      const uint64_t off = op.type == OpType::kAppend ? n.data.size() : op.off;
      std::string bytes = PatternBytes(op.data_seed, op.len);
      if (n.data.size() < off + op.len) n.data.resize(off + op.len, '\0');
      n.data.replace(off, op.len, bytes);
      return 0;
    }
    case OpType::kTruncate:
      if (n.kind == Kind::kDir) return EISDIR;
      n.data.resize(op.off, '\0');
      return 0;
    case OpType::kFallocate:
      if (n.kind == Kind::kDir) return EISDIR;
      if (n.data.size() < op.off + op.len) n.data.resize(op.off + op.len, '\0');
      return 0;
    case OpType::kUnlink:
      if (n.kind == Kind::kDir) return EISDIR;
      nodes_.at(w.parent).children.erase(w.name);
      DropLink(w.id);
      return 0;
    case OpType::kRmdir:
      if (w.id == kRoot) return EBUSY;
      if (n.kind != Kind::kDir) return ENOTDIR;
      if (!n.children.empty()) return ENOTEMPTY;
      nodes_.at(w.parent).children.erase(w.name);
      DropLink(w.id);
      return 0;
    case OpType::kChmod:
      n.perm = op.mode & 07777;
      return 0;
    case OpType::kChattr:
      n.attr_flags = op.flags & kChattrFlags;
      return 0;
    case OpType::kRemoveXattr:
      if (n.kind == Kind::kSymlink) return EPERM;
      return n.xattrs.erase(op.text) ? 0 : ENODATA;
    case OpType::kFsync:
    case OpType::kFdatasync:
      return 0;
    default:
      break;
  }
  if (n.kind == Kind::kDir) return EISDIR;
  return Remap(op, w.id);
}

// The block-map operations on file `id`, with the errors of leasefs (the
// rules of XFS) and, for copy_file_range, of the VFS.
int Model::Remap(const Op& op, int id) {
  std::string& data = nodes_.at(id).data;
  const uint64_t size = data.size();
  const uint64_t end = op.off + op.len;
  auto zero = [&](uint64_t from, uint64_t to) {
    if (from < to) data.replace(from, to - from, to - from, '\0');
  };
  switch (op.type) {
    case OpType::kClone:
    case OpType::kCopyRange: {
      const int src_id = Resolve(op.path2);
      if (src_id < 0) return ENOENT;
      if (nodes_.at(src_id).kind == Kind::kDir) return EISDIR;
      const std::string src = nodes_.at(src_id).data;  // a copy: it may be `data`
      const uint64_t src_size = src.size();
      uint64_t n;
      if (op.type == OpType::kClone) {
        if (op.off2 > src_size) return EINVAL;
        n = op.len ? op.len : src_size - op.off2;
        if (n > src_size - op.off2) return EINVAL;
        if (n == 0) return 0;
        if (op.off2 % kBlock || op.off % kBlock) return EINVAL;
        // A length inside a block must end at the source's end of file and
        // reach the destination's.
        if (n % kBlock && (op.off2 + n != src_size || op.off + n < size)) return EINVAL;
      } else {
        n = op.off2 >= src_size ? 0 : std::min(op.len, src_size - op.off2);
      }
      if (src_id == id && op.off2 < op.off + n && op.off < op.off2 + n) return EINVAL;
      if (n == 0) return 0;
      if (size < op.off + n) data.resize(op.off + n, '\0');
      data.replace(op.off, n, src, op.off2, n);
      return 0;
    }
    case OpType::kPunch:
      if (op.len == 0) return EINVAL;
      zero(op.off, std::min(end, size));
      return 0;
    case OpType::kZeroRange:
      if (op.len == 0) return EINVAL;
      zero(op.off, std::min(end, size));
      if (!(op.flags & FALLOC_FL_KEEP_SIZE) && end > size) data.resize(end, '\0');
      return 0;
    case OpType::kCollapse:
      if (op.len == 0 || op.off % kBlock || op.len % kBlock || end >= size) return EINVAL;
      data.erase(op.off, op.len);
      return 0;
    case OpType::kInsert:
      if (op.len == 0 || op.off % kBlock || op.len % kBlock || op.off >= size) return EINVAL;
      data.insert(op.off, op.len, '\0');
      return 0;
    case OpType::kUnshare:
      return op.len == 0 ? EINVAL : 0;
    case OpType::kDefrag:
      return 0;
    default:
      return EINVAL;
  }
}

// ---------------------------------------------------------------------------
// Generator

namespace {

constexpr size_t kMaxNodes = 48;
constexpr int kMaxDepth = 4;
constexpr const char* kNames[] = {"a", "b", "c", "d", "e", "f", "g", "h"};

int Depth(const std::string& path) {
  if (path.empty()) return 0;
  int d = 1;
  for (char c : path) d += c == '/';
  return d;
}

struct Census {
  std::vector<std::string> all, files, dirs, symlinks, nondirs;  // dirs includes ""
};

Census Take(const Model& m) {
  Census c;
  c.dirs.push_back("");
  for (const auto& p : m.Paths()) {
    c.all.push_back(p);
    switch (m.node(m.Resolve(p)).kind) {
      case Kind::kFile:
        c.files.push_back(p);
        c.nondirs.push_back(p);
        break;
      case Kind::kDir:
        c.dirs.push_back(p);
        break;
      case Kind::kSymlink:
        c.symlinks.push_back(p);
        c.nondirs.push_back(p);
        break;
      case Kind::kWhiteout:
        c.nondirs.push_back(p);
        break;
    }
  }
  return c;
}

const std::string& Pick(Rng& r, const std::vector<std::string>& v) { return v[r.Below(v.size())]; }

std::string NewName(Rng& r) {
  uint64_t x = r.Below(100);
  if (x < 6) return "long-" + std::string(55, static_cast<char>('m' + r.Below(4)));  // 2 slots
  if (x < 8) return std::string(255, static_cast<char>('p' + r.Below(3)));           // 5 slots
  return kNames[r.Below(std::size(kNames))];
}

// A name in a directory shallow enough to hold `kind`.
std::string NewPath(Rng& r, const Census& c, bool for_dir) {
  for (int tries = 0; tries < 8; ++tries) {
    const std::string& d = Pick(r, c.dirs);
    if (Depth(d) < (for_dir ? kMaxDepth - 1 : kMaxDepth)) return Join(d, NewName(r));
  }
  return NewName(r);
}

mode_t FileMode(Rng& r) { return 0600 | static_cast<mode_t>(r.Below(0200)); }
mode_t DirMode(Rng& r) {
  return 0700 | static_cast<mode_t>(r.Below(0100)) | (r.Chance(10) ? 01000 : 0);
}

uint64_t WriteLen(Rng& r) {
  switch (r.Below(5)) {
    case 0:
      return r.Range(1, 100);
    case 1:
      return kBlock * r.Range(1, 3);
    case 2:
      return r.Range(1, 3 * kBlock);
    case 3:
      return r.Range(3 * kBlock, kMaxWrite);
    default:
      return r.Range(1, 2 * kBlock);
  }
}

uint64_t WriteOff(Rng& r, uint64_t size) {
  switch (r.Below(5)) {
    case 0:
      return r.Below(size + 1);  // overwrite / extend
    case 1:
      return size;  // right at the end
    case 2:
      return size + r.Range(1, 3 * kBlock);  // leaves a hole
    case 3:
      return kBlock * r.Below(size / kBlock + 3);  // block aligned
    default:
      return r.Below(kMaxFileSize);  // anywhere
  }
}

std::string SymlinkTarget(Rng& r, uint64_t seed) {
  uint64_t len;
  switch (r.Below(10)) {
    case 0:
      len = 144;
      break;  // the largest inline target
    case 1:
      len = 145;
      break;
    case 2:
      len = r.Range(146, 1500);
      break;
    case 3:
      len = r.Chance(30) ? 4095 : r.Range(1500, 4095);
      break;
    default:
      len = r.Range(1, 143);
      break;
  }
  std::string t = PatternBytes(seed, len);
  for (auto& ch : t)
    ch = static_cast<char>(
        "abcdefghijklmnopqrstuvwxyz0123456789._-/"[static_cast<unsigned char>(ch) % 40]);
  return t;
}

std::string XattrName(Rng& r) { return "user.x" + std::to_string(r.Below(5)); }

OpType PickType(Rng& r, bool crowded, unsigned ops) {
  // A crowded tree leans towards removing things. The block-map operations
  // are about a quarter of all.
  const bool posix = ops & kPosixOps, portable = ops & kPortableRemap,
             leasefs = ops & kLeasefsRemap;
  auto w = [](bool on, unsigned weight) { return on ? weight : 0u; };
  const struct {
    OpType t;
    unsigned w;
  } weights[] = {
      {OpType::kMkdir, w(posix, crowded ? 1u : 7u)},
      {OpType::kCreate, w(posix, crowded ? 1u : 10u)},
      {OpType::kWrite, w(posix, 16)},
      {OpType::kAppend, w(posix, 6)},
      {OpType::kTruncate, w(posix, 6)},
      {OpType::kFallocate, w(posix, 4)},
      {OpType::kRename, w(posix, 10)},
      {OpType::kLink, w(posix, crowded ? 1u : 4u)},
      {OpType::kUnlink, w(posix, crowded ? 20u : 7u)},
      {OpType::kRmdir, w(posix, crowded ? 10u : 4u)},
      {OpType::kSymlink, w(posix, crowded ? 1u : 5u)},
      {OpType::kChmod, w(posix, 4)},
      {OpType::kSetXattr, w(posix, 6)},
      {OpType::kRemoveXattr, w(posix, 3)},
      {OpType::kFsync, w(posix, 3)},
      {OpType::kFdatasync, w(posix, 2)},
      {OpType::kChattr, w(posix, 3)},
      {OpType::kTmpfile, w(posix, crowded ? 1u : 4u)},
      {OpType::kClone, w(leasefs, 8)},
      {OpType::kCopyRange, w(portable, 6)},
      {OpType::kPunch, w(portable, 5)},
      {OpType::kZeroRange, w(leasefs, 4)},
      {OpType::kCollapse, w(leasefs, 3)},
      {OpType::kInsert, w(leasefs, 3)},
      {OpType::kUnshare, w(leasefs, 3)},
      {OpType::kDefrag, w(leasefs, 2)},
  };
  unsigned total = 0;
  for (const auto& x : weights) total += x.w;
  uint64_t x = r.Below(total);
  for (const auto& y : weights) {
    if (x < y.w) return y.t;
    x -= y.w;
  }
  return OpType::kFsync;
}

// Fills in one op's arguments for the tree `m_`.
class Generator {
 public:
  Generator(const Model& m, uint64_t seed, uint64_t k, unsigned ops)
      : m_(m), c_(Take(m)), r_(MixSeed(seed, k)), seed_(seed), k_(k), ops_(ops) {}

  Op Next() {
    Op op;
    op.data_seed = MixSeed(seed_, k_, 0xda7a);
    op.type = PickType(r_, m_.node_count() > kMaxNodes, ops_);
    switch (op.type) {
      case OpType::kClone:
      case OpType::kCopyRange:
      case OpType::kPunch:
      case OpType::kZeroRange:
      case OpType::kCollapse:
      case OpType::kInsert:
      case OpType::kUnshare:
      case OpType::kDefrag:
        if (c_.files.empty()) {
          // Nothing to work on yet: make a file (any op set can).
          op.type = OpType::kCreate;
          Create(op);
        } else {
          Remap(op);
        }
        break;
      case OpType::kWrite:
      case OpType::kAppend:
      case OpType::kTruncate:
      case OpType::kFallocate:
        if (c_.files.empty()) {
          op.type = OpType::kCreate;
          Create(op);
        } else {
          Data(op);
        }
        break;
      case OpType::kMkdir:
      case OpType::kCreate:
      case OpType::kSymlink:
      case OpType::kTmpfile:
        Create(op);
        break;
      case OpType::kRename:
      case OpType::kLink:
        TwoNames(op);
        break;
      case OpType::kUnlink:
      case OpType::kRmdir:
        Remove(op);
        break;
      default:
        Attributes(op);
        break;
    }
    return op;
  }

 private:
  // A name that exists, or (sometimes) one that does not.
  std::string ExistingOrNew(unsigned new_percent) {
    if (c_.all.empty() || r_.Chance(new_percent)) return NewPath(r_, c_, false);
    return Pick(r_, c_.all);
  }
  uint64_t SizeOf(const std::string& path) const { return m_.node(m_.Resolve(path)).data.size(); }
  const Node& NodeAt(const std::string& path) const { return m_.node(m_.Resolve(path)); }
  std::vector<std::string> FilesAndDirs(bool with_root) const {
    std::vector<std::string> v = c_.files;
    v.insert(v.end(), c_.dirs.begin() + (with_root ? 0 : 1), c_.dirs.end());
    return v;
  }

  // mkdir, create, symlink: mostly new names, sometimes taken ones (EEXIST).
  void Create(Op& op) {
    const bool taken = r_.Chance(5) && !c_.all.empty();
    op.path = taken ? Pick(r_, c_.all) : NewPath(r_, c_, op.type == OpType::kMkdir);
    if (op.type == OpType::kMkdir) op.mode = DirMode(r_);
    if (op.type == OpType::kCreate || op.type == OpType::kTmpfile) op.mode = FileMode(r_);
    if (op.type == OpType::kTmpfile) op.len = WriteLen(r_);
    if (op.type == OpType::kSymlink) op.text = SymlinkTarget(r_, MixSeed(seed_, k_, 0x5711));
  }

  void Data(Op& op) {
    op.path = Pick(r_, c_.files);
    const uint64_t size = SizeOf(op.path);
    switch (op.type) {
      case OpType::kWrite:
      case OpType::kAppend:
        op.len = WriteLen(r_);
        op.off = op.type == OpType::kAppend ? size : WriteOff(r_, size);
        if (op.off + op.len > kMaxFileSize) {
          op.type = OpType::kWrite;
          op.off = r_.Below(kMaxFileSize - op.len);
        }
        break;
      case OpType::kTruncate:
        switch (r_.Below(4)) {
          case 0:
            op.off = 0;
            break;
          case 1:
            op.off = r_.Below(size + 1);
            break;
          case 2:
            op.off = size + r_.Range(1, 4 * kBlock);
            break;
          default:
            op.off = kBlock * r_.Below(size / kBlock + 2);
            break;
        }
        op.off = std::min<uint64_t>(op.off, kMaxFileSize);
        break;
      default:  // fallocate
        op.off = r_.Below(size + 2 * kBlock);
        op.len = r_.Chance(50) ? r_.Range(1, 3 * kBlock) : r_.Range(1, 16 * kBlock);
        if (op.off + op.len > kMaxFileSize) op.off = r_.Below(kMaxFileSize - op.len);
        break;
    }
  }

  void TwoNames(Op& op) {
    if (op.type == OpType::kLink) {
      op.path = c_.nondirs.empty() || r_.Chance(5) ? Pick(r_, c_.dirs) : Pick(r_, c_.nondirs);
      op.path2 = ExistingOrNew(90);
      return;
    }
    op.path = c_.all.empty() || r_.Chance(3) ? NewPath(r_, c_, false) : Pick(r_, c_.all);
    const uint64_t f = r_.Below(100);
    op.flags = f < 60   ? 0u
               : f < 75 ? unsigned{RENAME_NOREPLACE}
               : f < 88 ? unsigned{RENAME_EXCHANGE}
               : f < 96 ? unsigned{RENAME_WHITEOUT}
                        : unsigned{RENAME_WHITEOUT | RENAME_NOREPLACE};
    op.path2 = ExistingOrNew(op.flags == RENAME_EXCHANGE ? 10 : 55);
    // Keep the tree shallow.
    if (Depth(op.path2) > kMaxDepth - 1 && m_.Resolve(op.path) >= 0 &&
        NodeAt(op.path).kind == Kind::kDir)
      op.path2 = NewName(r_);
  }

  void Remove(Op& op) {
    if (op.type == OpType::kUnlink) {
      op.path = c_.nondirs.empty() || r_.Chance(8) ? ExistingOrNew(50) : Pick(r_, c_.nondirs);
      return;
    }
    if (c_.dirs.size() <= 1 || r_.Chance(8)) {
      op.path = ExistingOrNew(50);
      return;
    }
    // Prefer empty directories, so that rmdir mostly succeeds.
    std::vector<std::string> empty;
    for (size_t i = 1; i < c_.dirs.size(); ++i)
      if (NodeAt(c_.dirs[i]).children.empty()) empty.push_back(c_.dirs[i]);
    op.path = !empty.empty() && r_.Chance(75) ? Pick(r_, empty)
                                              : c_.dirs[1 + r_.Below(c_.dirs.size() - 1)];
  }

  // chmod, chattr, xattrs, fsync, fdatasync.
  void Attributes(Op& op) {
    if (op.type == OpType::kChattr) {
      const std::vector<std::string> v = FilesAndDirs(true);
      op.path = Pick(r_, v);
      op.flags = static_cast<unsigned>(r_.Below(4)) << 6;  // a subset of kChattrFlags
      return;
    }
    if (op.type == OpType::kChmod) {
      const std::vector<std::string> v = FilesAndDirs(false);
      if (v.empty()) {
        op.type = OpType::kFsync;  // an empty tree: nothing to chmod
        return;
      }
      op.path = Pick(r_, v);
      op.mode = NodeAt(op.path).kind == Kind::kDir ? DirMode(r_) : FileMode(r_);
      return;
    }
    op.path = Pick(r_, FilesAndDirs(true));
    if (op.type == OpType::kSetXattr) {
      op.text = XattrName(r_);
      // Mostly small values; a fifth in value blocks of their own, up to
      // XATTR_SIZE_MAX (a replace of one switches all its blocks at once).
      const uint64_t kind = r_.Below(100);
      const uint64_t len = kind < 10 ? 0 : kind < 30 ? r_.Range(2000, 65536) : r_.Range(1, 300);
      op.value = PatternBytes(op.data_seed, len);
      const uint64_t f = r_.Below(100);
      op.flags = f < 70 ? 0 : f < 85 ? XATTR_CREATE : XATTR_REPLACE;
    } else if (op.type == OpType::kRemoveXattr) {
      const Node& n = NodeAt(op.path);
      if (!n.xattrs.empty() && r_.Chance(85)) {
        auto it = n.xattrs.begin();
        std::advance(it, static_cast<long>(r_.Below(n.xattrs.size())));
        op.text = it->first;
      } else {
        op.text = XattrName(r_);
      }
    }
  }

  // The block-map operations: mostly arguments that succeed, sometimes ones
  // that fail (unaligned, out of range, overlapping).
  void Remap(Op& op) {
    op.path = Pick(r_, c_.files);
    const uint64_t size = SizeOf(op.path);
    const uint64_t blocks = size / kBlock;  // whole blocks
    switch (op.type) {
      case OpType::kClone:
      case OpType::kCopyRange:
        TwoFiles(op, size);
        break;
      case OpType::kPunch:
      case OpType::kZeroRange:
      case OpType::kUnshare:
        op.off = r_.Chance(50) ? kBlock * r_.Below(blocks + 2) : r_.Below(size + 2 * kBlock);
        op.len = r_.Chance(50) ? kBlock * r_.Range(1, 8) : r_.Range(1, 10 * kBlock);
        if (op.type == OpType::kUnshare && op.off < size && r_.Chance(70))
          op.len = std::min<uint64_t>(op.len, size - op.off);  // mostly within the file
        if (op.type == OpType::kZeroRange && r_.Chance(50)) op.flags = FALLOC_FL_KEEP_SIZE;
        if (op.off + op.len > kMaxFileSize) op.off = kMaxFileSize - op.len;
        break;
      case OpType::kCollapse: {
        // Valid: aligned, and ending before the end of file.
        const uint64_t last = size ? (size - 1) / kBlock : 0;  // blocks that may go
        if (last >= 1 && r_.Chance(92)) {
          const uint64_t first = r_.Below(last);
          op.off = first * kBlock;
          op.len = kBlock * r_.Range(1, std::min<uint64_t>(8, last - first));
        } else {
          op.off = kBlock * r_.Below(blocks + 2);
          op.len = kBlock * r_.Range(1, 4);
        }
        if (r_.Chance(4)) op.off += r_.Range(1, kBlock - 1);  // EINVAL
        break;
      }
      case OpType::kInsert: {
        const uint64_t room = (kMaxFileSize - std::min(size, kMaxFileSize)) / kBlock;
        op.off = kBlock * r_.Below(size ? (size - 1) / kBlock + 1 : 1);
        op.len = kBlock * r_.Range(1, std::max<uint64_t>(1, std::min<uint64_t>(8, room)));
        if (room == 0 || r_.Chance(4)) op.len += r_.Range(1, kBlock - 1);  // EINVAL
        if (r_.Chance(4)) op.off = size + kBlock * r_.Below(2);            // at or past EOF: EINVAL
        break;
      }
      default:  // defrag
        break;
    }
  }

  // Clone and copy_file_range: a source (often the same file), its range and
  // a destination offset, keeping the destination within kMaxFileSize.
  void TwoFiles(Op& op, uint64_t size) {
    const bool clone = op.type == OpType::kClone;
    op.path2 = r_.Chance(20) ? op.path : Pick(r_, c_.files);
    const uint64_t src_size = SizeOf(op.path2);
    op.off2 = clone || r_.Chance(60) ? kBlock * r_.Below(src_size / kBlock + 1)
                                     : r_.Below(src_size + kBlock);
    const uint64_t avail = src_size > op.off2 ? src_size - op.off2 : 0;
    if (clone && r_.Chance(35))
      op.len = 0;  // to the source's end of file
    else if (avail >= kBlock && r_.Chance(80))
      op.len = kBlock * r_.Range(1, std::min<uint64_t>(avail / kBlock, 16));
    else
      op.len = r_.Range(1, 6 * kBlock);
    // The bytes that would move.
    const uint64_t n = std::min(op.len ? op.len : avail, avail);
    if (clone) {
      // An unaligned length must reach the destination's end of file.
      op.off = n % kBlock && r_.Chance(75) ? kBlock * ((size > n ? size - n : 0) / kBlock + 1)
                                           : kBlock * r_.Below(size / kBlock + 3);
    } else if (r_.Chance(60)) {
      op.off = kBlock * r_.Below(size / kBlock + 3) + op.off2 % kBlock;  // alike in the block
    } else {
      op.off = r_.Below(size + 2 * kBlock);
    }
    if (op.off + n > kMaxFileSize) op.off = (kMaxFileSize - n) / kBlock * kBlock;
    if (clone && r_.Chance(4)) op.off += r_.Range(1, kBlock - 1);  // EINVAL
  }

  const Model& m_;
  const Census c_;
  Rng r_;
  const uint64_t seed_;
  const uint64_t k_;
  const unsigned ops_;
};

}  // namespace

Op Generate(const Model& m, uint64_t seed, uint64_t k, unsigned ops) {
  return Generator(m, seed, k, ops).Next();
}

// ---------------------------------------------------------------------------
// Running an op on a real directory

namespace {

int Err(int rc) { return rc == 0 ? 0 : errno; }

// Closes fd; the first error of op and close wins.
int Finish(int fd, int err) {
  if (close(fd) != 0 && err == 0) return errno;
  return err;
}

int WriteOp(const std::string& p, const Op& op) {
  const bool append = op.type == OpType::kAppend;
  int fd = open(p.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC | (append ? O_APPEND : 0));
  if (fd < 0) return errno;
  std::string data = PatternBytes(op.data_seed, op.len);
  ssize_t n = append ? write(fd, data.data(), data.size())
                     : pwrite(fd, data.data(), data.size(), static_cast<off_t>(op.off));
  int err = n < 0 ? errno : static_cast<size_t>(n) != data.size() ? kShortWrite : 0;
  return Finish(fd, err);
}

int FdOp(const std::string& p, const Op& op) {
  int flags = op.type == OpType::kFallocate ? O_WRONLY : O_RDONLY;
  int fd = open(p.c_str(), flags | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc;
  if (op.type == OpType::kFallocate)
    rc = fallocate(fd, 0, static_cast<off_t>(op.off), static_cast<off_t>(op.len));
  else if (op.type == OpType::kFsync)
    rc = fsync(fd);
  else
    rc = fdatasync(fd);
  return Finish(fd, Err(rc));
}

// chattr: replaces the kChattrFlags of `p` (a file or directory) with
// op.flags, keeping the others, as chattr(1) does.
static_assert(kChattrFlags == (FS_NODUMP_FL | FS_NOATIME_FL));

int ChattrOp(const std::string& p, const Op& op) {
  int fd = open(p.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  unsigned flags = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return Finish(fd, errno);
  flags = (flags & ~kChattrFlags) | (op.flags & kChattrFlags);
  return Finish(fd, Err(ioctl(fd, FS_IOC_SETFLAGS, &flags)));
}

// The block-map operations, on file `p` (and `p2`, the source of a clone or
// copy).
int RemapOp(const std::string& p, const std::string& p2, const Op& op) {
  int fd = open(p.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = 0;
  switch (op.type) {
    case OpType::kClone:
    case OpType::kCopyRange: {
      const int src = open(p2.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (src < 0) return Finish(fd, errno);
      if (op.type == OpType::kClone) {
        leasefs_clone_range c{src, op.off2, op.len, op.off};
        rc = Err(ioctl(fd, LEASEFS_IOC_CLONE_RANGE, &c));
      } else {
        // copy_file_range copies up to the source's end of file: anything
        // less is a short copy.
        struct stat st {};
        fstat(src, &st);
        const uint64_t size = static_cast<uint64_t>(st.st_size);
        const uint64_t want = op.off2 >= size ? 0 : std::min(op.len, size - op.off2);
        loff_t in = static_cast<loff_t>(op.off2), out = static_cast<loff_t>(op.off);
        const ssize_t n = copy_file_range(src, &in, fd, &out, op.len, 0);
        rc = n < 0 ? errno : static_cast<uint64_t>(n) != want ? kShortWrite : 0;
      }
      close(src);
      break;
    }
    case OpType::kPunch:
      rc = Err(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(op.off),
                         static_cast<off_t>(op.len)));
      break;
    case OpType::kZeroRange:
      rc = Err(fallocate(fd, FALLOC_FL_ZERO_RANGE | static_cast<int>(op.flags),
                         static_cast<off_t>(op.off), static_cast<off_t>(op.len)));
      break;
    case OpType::kCollapse:
    case OpType::kInsert:
    case OpType::kUnshare: {
      leasefs_range r{op.off, op.len};
      const unsigned long cmd = op.type == OpType::kCollapse ? LEASEFS_IOC_COLLAPSE_RANGE
                                : op.type == OpType::kInsert ? LEASEFS_IOC_INSERT_RANGE
                                                             : LEASEFS_IOC_UNSHARE_RANGE;
      rc = Err(ioctl(fd, cmd, &r));
      break;
    }
    case OpType::kDefrag: {
      leasefs_defrag d{};
      rc = Err(ioctl(fd, LEASEFS_IOC_DEFRAG, &d));
      break;
    }
    default:
      rc = EINVAL;
      break;
  }
  return Finish(fd, rc);
}

}  // namespace

// O_TMPFILE in the directory of `p`, written whole, then linked as `p`: the
// link is the one change a crash can show, with all the bytes or none.
static int TmpfileOp(const std::string& p, const Op& op) {
  const std::string dir = p.substr(0, p.rfind('/'));
  const int fd = open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, op.mode);
  if (fd < 0) return errno;
  const std::string data = PatternBytes(op.data_seed, op.len);
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) return Finish(fd, n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  return Finish(fd, Err(linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, p.c_str(), AT_SYMLINK_FOLLOW)));
}

int ApplyToDir(const std::string& root, const Op& op) {
  const std::string p = op.path.empty() ? root : root + "/" + op.path;
  const std::string p2 = root + "/" + op.path2;
  switch (op.type) {
    case OpType::kMkdir:
      return Err(mkdir(p.c_str(), op.mode));
    case OpType::kCreate: {
      int fd = open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, op.mode);
      if (fd < 0) return errno;
      return Finish(fd, 0);
    }
    case OpType::kWrite:
    case OpType::kAppend:
      return WriteOp(p, op);
    case OpType::kTruncate:
      return Err(truncate(p.c_str(), static_cast<off_t>(op.off)));
    case OpType::kFallocate:
    case OpType::kFsync:
    case OpType::kFdatasync:
      return FdOp(p, op);
    case OpType::kRename:
      return Err(renameat2(AT_FDCWD, p.c_str(), AT_FDCWD, p2.c_str(), op.flags));
    case OpType::kTmpfile:
      return TmpfileOp(p, op);
    case OpType::kLink:
      return Err(link(p.c_str(), p2.c_str()));
    case OpType::kUnlink:
      return Err(unlink(p.c_str()));
    case OpType::kRmdir:
      return Err(rmdir(p.c_str()));
    case OpType::kSymlink:
      return Err(symlink(op.text.c_str(), p.c_str()));
    case OpType::kChmod:
      return Err(chmod(p.c_str(), op.mode));
    case OpType::kChattr:
      return ChattrOp(p, op);
    case OpType::kSetXattr:
      return Err(lsetxattr(p.c_str(), op.text.c_str(), op.value.data(), op.value.size(),
                           static_cast<int>(op.flags)));
    case OpType::kRemoveXattr:
      return Err(lremovexattr(p.c_str(), op.text.c_str()));
    case OpType::kClone:
    case OpType::kCopyRange:
    case OpType::kPunch:
    case OpType::kZeroRange:
    case OpType::kCollapse:
    case OpType::kInsert:
    case OpType::kUnshare:
    case OpType::kDefrag:
      return RemapOp(p, p2, op);
  }
  return EINVAL;
}

// ---------------------------------------------------------------------------
// Snapshot

namespace {

void ReadXattrs(const std::string& p, RealNode* n, std::vector<std::string>* errors) {
  ssize_t len = llistxattr(p.c_str(), nullptr, 0);
  if (len < 0) {
    errors->push_back(p + ": llistxattr: " + ErrnoName(errno));
    return;
  }
  std::string names(static_cast<size_t>(len), '\0');
  len = llistxattr(p.c_str(), names.data(), names.size());
  if (len < 0) {
    errors->push_back(p + ": llistxattr: " + ErrnoName(errno));
    return;
  }
  names.resize(static_cast<size_t>(len));
  for (size_t pos = 0; pos < names.size();) {
    std::string name = names.c_str() + pos;
    pos += name.size() + 1;
    if (name.rfind("user.", 0) != 0) continue;
    std::string value(65536, '\0');
    ssize_t v = lgetxattr(p.c_str(), name.c_str(), value.data(), value.size());
    if (v < 0) {
      errors->push_back(p + ": lgetxattr " + name + ": " + ErrnoName(errno));
      continue;
    }
    value.resize(static_cast<size_t>(v));
    n->xattrs[name] = value;
  }
}

void ReadAttrFlags(const std::string& p, RealNode* n, std::vector<std::string>* errors) {
  const int fd = open(p.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  unsigned flags = 0;
  if (fd < 0 || ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0)
    errors->push_back(p + ": FS_IOC_GETFLAGS: " + ErrnoName(errno));
  if (fd >= 0) close(fd);
  n->attr_flags = flags & kChattrFlags;
}

void ReadContents(const std::string& p, RealNode* n, std::vector<std::string>* errors) {
  if (S_ISLNK(n->mode)) {
    std::string buf(8192, '\0');
    ssize_t len = readlink(p.c_str(), buf.data(), buf.size());
    if (len < 0) {
      errors->push_back(p + ": readlink: " + ErrnoName(errno));
      return;
    }
    n->data.assign(buf.data(), static_cast<size_t>(len));
    return;
  }
  int fd = open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    errors->push_back(p + ": open: " + ErrnoName(errno));
    return;
  }
  char buf[65536];
  for (;;) {
    ssize_t len = read(fd, buf, sizeof buf);
    if (len < 0) {
      errors->push_back(p + ": read at " + std::to_string(n->data.size()) + ": " +
                        ErrnoName(errno));
      break;
    }
    if (len == 0) break;
    n->data.append(buf, static_cast<size_t>(len));
  }
  close(fd);
}

void Walk(const std::string& p, const struct stat& st, Snapshot* snap) {
  if (snap->nodes.count(st.st_ino)) return;  // another link of a file read already
  RealNode& n = snap->nodes[st.st_ino];
  n.mode = st.st_mode;
  n.rdev = st.st_rdev;
  n.nlink = st.st_nlink;
  n.size = static_cast<uint64_t>(st.st_size);
  if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) ReadContents(p, &n, &snap->errors);
  if (!S_ISLNK(st.st_mode)) ReadXattrs(p, &n, &snap->errors);
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) ReadAttrFlags(p, &n, &snap->errors);
  if (!S_ISDIR(st.st_mode)) return;
  DIR* d = opendir(p.c_str());
  if (!d) {
    snap->errors.push_back(p + ": opendir: " + ErrnoName(errno));
    return;
  }
  std::vector<std::pair<std::string, struct stat>> kids;
  errno = 0;
  while (struct dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat cst {};
    if (fstatat(dirfd(d), e->d_name, &cst, AT_SYMLINK_NOFOLLOW) != 0) {
      snap->errors.push_back(p + "/" + name + ": lstat: " + ErrnoName(errno));
      continue;
    }
    if (n.children.count(name)) snap->errors.push_back(p + ": readdir returned " + name + " twice");
    n.children[name] = cst.st_ino;
    kids.emplace_back(name, cst);
    errno = 0;
  }
  if (errno != 0) snap->errors.push_back(p + ": readdir: " + ErrnoName(errno));
  closedir(d);
  // `n` may move as the map grows: read the children after we are done with it.
  for (const auto& [name, cst] : kids) Walk(p + "/" + name, cst, snap);
}

}  // namespace

Snapshot TakeSnapshot(const std::string& root) {
  Snapshot snap;
  struct stat st {};
  if (lstat(root.c_str(), &st) != 0) {
    snap.errors.push_back(root + ": lstat: " + ErrnoName(errno));
    return snap;
  }
  snap.root = st.st_ino;
  Walk(root, st, &snap);
  return snap;
}

// ---------------------------------------------------------------------------
// Compare

namespace {

const char* KindName(Kind k) {
  return k == Kind::kFile      ? "file"
         : k == Kind::kDir     ? "directory"
         : k == Kind::kSymlink ? "symlink"
                               : "whiteout";
}

const char* TypeName(mode_t mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISDIR(mode)) return "directory";
  if (S_ISLNK(mode)) return "symlink";
  if (S_ISCHR(mode)) return "character device";
  return "special file";
}

bool KindMatches(Kind k, mode_t mode, dev_t rdev) {
  return (k == Kind::kFile && S_ISREG(mode)) || (k == Kind::kDir && S_ISDIR(mode)) ||
         (k == Kind::kSymlink && S_ISLNK(mode)) ||
         (k == Kind::kWhiteout && S_ISCHR(mode) && rdev == makedev(0, 0));
}

class Comparer {
 public:
  Comparer(const Snapshot& s, const Model& m, const Tolerance& t, size_t limit)
      : s_(s), m_(m), t_(t), limit_(limit) {}

  std::vector<std::string> Run() {
    for (const auto& e : s_.errors) Diff(e);
    if (s_.nodes.count(s_.root)) Visit(Model::kRoot, s_.root, "/");
    return std::move(diffs_);
  }

 private:
  void Diff(const std::string& d) {
    if (diffs_.size() < limit_) diffs_.push_back(d);
  }

  void Visit(int id, ino_t ino, const std::string& path) {
    auto mi = m2r_.find(id);
    auto ri = r2m_.find(ino);
    if (mi != m2r_.end() || ri != r2m_.end()) {
      if (mi == m2r_.end() || ri == r2m_.end() || mi->second != ino)
        Diff(path + ": hard links differ (" + (mi == m2r_.end() ? "unexpectedly" : "should be") +
             " the same inode as another path)");
      return;
    }
    m2r_[id] = ino;
    r2m_[ino] = id;
    const Node& mn = m_.node(id);
    const RealNode& rn = s_.nodes.at(ino);
    if (!KindMatches(mn.kind, rn.mode, rn.rdev)) {
      Diff(path + ": is a " + TypeName(rn.mode) + ", expected a " + KindName(mn.kind));
      return;
    }
    char buf[128];
    const mode_t want_perm = mn.kind == Kind::kSymlink ? 0777 : mn.perm;
    if ((rn.mode & 07777) != want_perm) {
      std::snprintf(buf, sizeof buf, ": mode %04o, expected %04o", rn.mode & 07777, want_perm);
      Diff(path + buf);
    }
    if (rn.nlink != m_.Nlink(id))
      Diff(path + ": nlink " + std::to_string(rn.nlink) + ", expected " +
           std::to_string(m_.Nlink(id)));
    if (mn.xattrs != rn.xattrs) DiffXattrs(path, mn.xattrs, rn.xattrs);
    if (mn.attr_flags != rn.attr_flags) {
      std::snprintf(buf, sizeof buf, ": attribute flags %#x, expected %#x", rn.attr_flags,
                    mn.attr_flags);
      Diff(path + buf);
    }
    if (mn.kind == Kind::kFile) CompareData(id, path, mn.data, rn);
    if (mn.kind == Kind::kSymlink) {
      if (rn.data != mn.data) Diff(path + ": symlink target differs");
      if (rn.size != mn.data.size())
        Diff(path + ": symlink size " + std::to_string(rn.size) + ", expected " +
             std::to_string(mn.data.size()));
    }
    if (mn.kind == Kind::kDir) VisitChildren(mn, rn, path);
  }

  void VisitChildren(const Node& mn, const RealNode& rn, const std::string& path) {
    const std::string base = path == "/" ? "/" : path + "/";
    for (const auto& [name, cid] : mn.children)
      if (!rn.children.count(name))
        Diff(base + name + ": missing (a " + KindName(m_.node(cid).kind) + ")");
    for (const auto& [name, cino] : rn.children)
      if (!mn.children.count(name))
        Diff(base + name + ": unexpected " +
             TypeName(s_.nodes.count(cino) ? s_.nodes.at(cino).mode : 0));
    for (const auto& [name, cid] : mn.children) {
      auto it = rn.children.find(name);
      if (it != rn.children.end() && s_.nodes.count(it->second))
        Visit(cid, it->second, base + name);
    }
  }

  void DiffXattrs(const std::string& path, const std::map<std::string, std::string>& want,
                  const std::map<std::string, std::string>& got) {
    std::string d = path + ": xattrs differ:";
    for (const auto& [k, v] : want) {
      auto it = got.find(k);
      if (it == got.end())
        d += " " + k + " missing;";
      else if (it->second != v)
        d += " " + k + " has " + std::to_string(it->second.size()) + " bytes, expected " +
             std::to_string(v.size()) +
             (it->second.size() == v.size() ? " (contents differ)" : "") + ";";
    }
    for (const auto& [k, v] : got)
      if (!want.count(k)) d += " unexpected " + k + ";";
    Diff(d);
  }

  void CompareData(int id, const std::string& path, const std::string& want, const RealNode& rn) {
    const std::string& got = rn.data;
    if (rn.size != got.size())
      Diff(path + ": stat size " + std::to_string(rn.size) + " but read " +
           std::to_string(got.size()) + " bytes");
    const std::string* alt = t_.node == id ? t_.alt : nullptr;
    const bool between = alt && t_.short_write &&
                         got.size() >= std::min(want.size(), alt->size()) &&
                         got.size() <= std::max(want.size(), alt->size());
    if (got.size() != want.size() && !(alt && got.size() == alt->size()) && !between) {
      Diff(path + ": size " + std::to_string(got.size()) + ", expected " +
           std::to_string(want.size()) + (alt ? " or " + std::to_string(alt->size()) : ""));
      return;
    }
    auto at = [](const std::string& s, size_t i) { return i < s.size() ? s[i] : '\0'; };
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] == at(want, i) || (alt && got[i] == at(*alt, i))) continue;
      if (bad++ == 0) first = i;
    }
    if (bad) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    ": %zu bytes differ, the first at offset %zu (0x%02x, expected 0x%02x)", bad,
                    first, static_cast<unsigned char>(got[first]),
                    static_cast<unsigned char>(at(want, first)));
      Diff(path + buf);
    }
  }

  const Snapshot& s_;
  const Model& m_;
  const Tolerance& t_;
  size_t limit_;
  std::vector<std::string> diffs_;
  std::map<int, ino_t> m2r_;
  std::map<ino_t, int> r2m_;
};

}  // namespace

std::vector<std::string> Compare(const Snapshot& snap, const Model& m, const Tolerance& tol,
                                 size_t limit) {
  return Comparer(snap, m, tol, limit).Run();
}

}  // namespace leasefs::crashtest
