// Extended attributes: one block per inode (docs/pool_format.md "Extended
// attributes"), rewritten whole through the journal by every change.
//
// Access rules follow Linux's xattr_permission(): user.* only on regular
// files and directories and only with read/write permission (owner only in
// sticky directories); trusted.* for root only (others neither see nor set
// them); security.* readable by all, settable by root; of system.*, the two
// POSIX ACL names, which acl_ops.cc serves with their own rules; other
// system.* names are not supported.
#include <unistd.h>

#include <cassert>
#include <cstring>
#include <string>
#include <vector>

#include <sys/xattr.h>

#include "base/clock.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr size_t kMaxXattrValue = 65536;  // XATTR_SIZE_MAX

struct Xattr {
  std::string name;
  std::string value;
};

size_t EntryBytes(size_t name_len, size_t value_len) {
  return (sizeof(XattrEntryHeader) + name_len + value_len + 3) & ~size_t{3};
}

// Calls visit(name, value) for each entry of an xattr block, in order, until
// it returns false; stops at anything malformed.
template <typename Visit>
void ForEachEntry(const char* block, Visit&& visit) {
  XattrBlockHeader h;
  std::memcpy(&h, block, sizeof(h));
  const size_t used = std::min<size_t>(h.used_bytes, kXattrSpace);
  const char* p = block + sizeof(h);
  uint32_t seen = 0;
  for (size_t off = 0; off + sizeof(XattrEntryHeader) <= used && seen < h.entry_count; ++seen) {
    XattrEntryHeader e;
    std::memcpy(&e, p + off, sizeof(e));
    const size_t bytes = EntryBytes(e.name_len, e.value_len);
    if (e.name_len == 0 || off + bytes > used) break;
    const char* name = p + off + sizeof(e);
    if (!visit(std::string_view(name, e.name_len), std::string_view(name + e.name_len, e.value_len)))
      break;
    off += bytes;
  }
}

// The entries of an xattr block (see ForEachEntry).
std::vector<Xattr> Parse(const char* block) {
  std::vector<Xattr> out;
  ForEachEntry(block, [&out](std::string_view name, std::string_view value) {
    out.push_back({std::string(name), std::string(value)});
    return true;
  });
  return out;
}

size_t EncodedBytes(const std::vector<Xattr>& attrs) {
  size_t n = 0;
  for (const Xattr& a : attrs) n += EntryBytes(a.name.size(), a.value.size());
  return n;
}

// Writes header and entries into `out` (kBlockSize bytes); returns the bytes
// that matter (header + entries).
size_t Encode(const std::vector<Xattr>& attrs, Ino owner, char* out) {
  std::memset(out, 0, kBlockSize);
  XattrBlockHeader h{};
  std::memcpy(h.magic, kXattrBlockMagic, 8);
  h.owner_ino = owner;
  h.entry_count = static_cast<uint32_t>(attrs.size());
  size_t off = sizeof(h);
  for (const Xattr& a : attrs) {
    XattrEntryHeader e{static_cast<uint8_t>(a.name.size()), 0,
                       static_cast<uint16_t>(a.value.size())};
    std::memcpy(out + off, &e, sizeof(e));
    std::memcpy(out + off + sizeof(e), a.name.data(), a.name.size());
    std::memcpy(out + off + sizeof(e) + a.name.size(), a.value.data(), a.value.size());
    off += EntryBytes(a.name.size(), a.value.size());
  }
  h.used_bytes = static_cast<uint32_t>(off - sizeof(h));
  std::memcpy(out, &h, sizeof(h));
  return off;
}

bool HasPrefix(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Linux's xattr_permission(), for a read (write == false) or a write.
Status CheckAccess(const Filesystem::Impl& fs, const Cred& c, Ino ino, std::string_view name,
                   bool write) {
  const Inode& in = *fs.I(ino);
  if (HasPrefix(name, "security.")) {
    return write && !c.is_root() ? Status::Error(EPERM) : Status::Ok();
  }
  if (HasPrefix(name, "trusted.")) {
    if (!c.is_root()) return Status::Error(write ? EPERM : ENODATA);
    return Status::Ok();
  }
  if (!HasPrefix(name, "user.")) return Status::Error(EOPNOTSUPP, "unsupported xattr namespace");
  if (!S_ISREG(in.mode) && !S_ISDIR(in.mode)) return Status::Error(write ? EPERM : ENODATA);
  if (write && S_ISDIR(in.mode) && (in.mode & S_ISVTX) && !fs.OwnerOrRoot(c, in))
    return Status::Error(EPERM);
  return fs.Require(c, ino, write ? W_OK : R_OK);
}

Status CheckName(std::string_view name) {
  if (name.empty() || name.size() > kMaxName) return Status::Error(ERANGE);
  return Status::Ok();
}

std::vector<Xattr> Load(const Filesystem::Impl& fs, Ino ino) {
  const uint64_t b = fs.I(ino)->xattr_block;
  return b ? Parse(fs.pool_.BlockPtr(b)) : std::vector<Xattr>{};
}

// Stages `attrs` as the inode's new attribute set in `op`: a new block, a
// rewritten one, or none. Only a new block can fail. Errors: ENOSPC.
Status StageXattrs(Filesystem::Impl& fs, Op& op, Ino ino, const std::vector<Xattr>& attrs) {
  if (EncodedBytes(attrs) > kXattrSpace) return Status::Error(ENOSPC, "xattrs do not fit");
  Inode* in = fs.I(ino);
  const uint64_t old = in->xattr_block;
  if (attrs.empty()) {
    if (old) {
      op.tx.Put(&in->xattr_block, uint64_t{0});
      op.Unref({old, 1});
    }
  } else if (old) {
    char buf[kBlockSize];
    const size_t n = Encode(attrs, ino, buf);
    op.tx.Copy(fs.pool_.BlockPtr(old), buf, n);
  } else {
    std::vector<BlockRange> got;
    LFS_RETURN_IF_ERROR(op.Reserve(1, 0, &got));
    char* block = fs.pool_.BlockPtr(got[0].start);
    Encode(attrs, ino, block);  // a fresh block: written in place, then linked
    fs.media_->Flush(block, kBlockSize);
    op.tx.Put(&in->xattr_block, got[0].start);
    op.Claim(got[0]);
  }
  return Status::Ok();
}

// Commits `attrs` as the inode's new attribute set, with the ctime change.
// Errors: ENOSPC.
Status Store(Filesystem::Impl& fs, Ino ino, const std::vector<Xattr>& attrs) REQUIRES(fs.mu_) {
  Op op(fs);
  LFS_RETURN_IF_ERROR(StageXattrs(fs, op, ino, attrs));
  Inode img = *fs.I(ino);
  img.ctime_ns = NowNs();
  fs.StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

}  // namespace

// Asked before every write of a file with xattrs (PrivsToDrop): a scan of the
// block in place, with no copies.
bool Filesystem::Impl::HasXattr(Ino ino, std::string_view name) const {
  const uint64_t b = I(ino)->xattr_block;
  bool found = false;
  if (b != 0)
    ForEachEntry(pool_.BlockPtr(b), [&](std::string_view n, std::string_view) {
      found = n == name;
      return !found;
    });
  return found;
}

std::optional<std::string> Filesystem::Impl::XattrValue(Ino ino, std::string_view name) const {
  const uint64_t b = I(ino)->xattr_block;
  std::optional<std::string> found;
  if (b != 0)
    ForEachEntry(pool_.BlockPtr(b), [&](std::string_view n, std::string_view v) {
      if (n == name) found.emplace(v);
      return !found;
    });
  return found;
}

Status Filesystem::Impl::StageXattrChanges(Op& op, Ino ino,
                                           const std::vector<XattrChange>& changes) {
  std::vector<Xattr> attrs = engine::Load(*this, ino);
  for (const XattrChange& ch : changes) {
    auto it = std::find_if(attrs.begin(), attrs.end(),
                           [&](const Xattr& a) { return a.name == ch.name; });
    if (!ch.value) {
      if (it != attrs.end()) attrs.erase(it);
    } else if (it != attrs.end()) {
      it->value = std::string(*ch.value);
    } else {
      attrs.push_back({std::string(ch.name), std::string(*ch.value)});
    }
  }
  return StageXattrs(*this, op, ino, attrs);
}

void Filesystem::Impl::StageRemoveXattr(Op& op, Ino ino, std::string_view name) {
  std::vector<Xattr> attrs = engine::Load(*this, ino);
  std::erase_if(attrs, [name](const Xattr& a) { return a.name == name; });
  // Fewer bytes in the block it has, or no block: nothing to reserve.
  const Status s = StageXattrs(*this, op, ino, attrs);
  assert(s.ok());
  (void)s;
}

Status Filesystem::SetXattr(const Cred& c, Ino ino, std::string_view name, std::string_view value,
                            int flags) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  LFS_RETURN_IF_ERROR(CheckName(name));
  if (value.size() > kMaxXattrValue) return Status::Error(E2BIG);
  if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) return Status::Error(EINVAL);
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(ino));  // xattr_permission, first
  if (acl::IsAclXattr(name)) return fs.SetAcl(c, ino, name, value);
  LFS_RETURN_IF_ERROR(CheckAccess(fs, c, ino, name, true));
  if (fs.read_only_) return Status::Error(EROFS);
  std::vector<Xattr> attrs = Load(fs, ino);
  auto it =
      std::find_if(attrs.begin(), attrs.end(), [&](const Xattr& a) { return a.name == name; });
  if (it != attrs.end()) {
    if (flags & XATTR_CREATE) return Status::Error(EEXIST);
    it->value = std::string(value);
  } else {
    if (flags & XATTR_REPLACE) return Status::Error(ENODATA);
    attrs.push_back({std::string(name), std::string(value)});
  }
  return Store(fs, ino, attrs);
}

Result<std::string> Filesystem::GetXattr(const Cred& c, Ino ino, std::string_view name) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  LFS_RETURN_IF_ERROR(CheckName(name));
  if (acl::IsAclXattr(name)) return fs.GetAcl(ino, name);
  LFS_RETURN_IF_ERROR(CheckAccess(fs, c, ino, name, false));
  for (Xattr& a : Load(fs, ino))
    if (a.name == name) return std::move(a.value);
  return Status::Error(ENODATA);
}

Result<std::string> Filesystem::ListXattr(const Cred& c, Ino ino) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  std::string out;
  for (const Xattr& a : Load(fs, ino)) {
    if (HasPrefix(a.name, "trusted.") && !c.is_root()) continue;
    out += a.name;
    out.push_back('\0');
  }
  return out;
}

Status Filesystem::RemoveXattr(const Cred& c, Ino ino, std::string_view name) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  LFS_RETURN_IF_ERROR(CheckName(name));
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(ino));  // xattr_permission, first
  if (acl::IsAclXattr(name)) return fs.RemoveAcl(c, ino, name);
  LFS_RETURN_IF_ERROR(CheckAccess(fs, c, ino, name, true));
  if (fs.read_only_) return Status::Error(EROFS);
  std::vector<Xattr> attrs = Load(fs, ino);
  auto it =
      std::find_if(attrs.begin(), attrs.end(), [&](const Xattr& a) { return a.name == name; });
  if (it == attrs.end()) return Status::Error(ENODATA);
  attrs.erase(it);
  return Store(fs, ino, attrs);
}

}  // namespace leasefs::engine
