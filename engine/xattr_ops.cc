// Extended attributes (docs/xattr.md; the structure: docs/pool_format.md
// "Extended attributes", engine/xattr_set.h).
//
// Every set, replace and remove is one transaction: a value too big to sit
// in its entry is written to fresh value blocks first (outside the journal,
// which never carries more than the entry), and the transaction switches
// the entry and the blocks' reference counts at once. A crash leaves the old
// value or the new one, and no block behind.
//
// Access rules follow Linux's xattr_permission(): user.* only on regular
// files and directories and only with read/write permission (owner only in
// sticky directories); trusted.* for root only (others neither see nor set
// them); security.* readable by all, settable by root; of system.*, the two
// POSIX ACL names, which acl_ops.cc serves with their own rules; other
// system.* names are not supported.
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <sys/xattr.h>

#include "base/clock.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

uint64_t BlocksFor(uint64_t bytes) { return (bytes + kBlockSize - 1) / kBlockSize; }

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

// Names come from the kernel NUL-terminated and at most 255 bytes long
// (longer is ERANGE there too); a NUL inside one would break listxattr's
// list, so the engine's own callers get EINVAL for it. A namespace prefix
// with nothing after it names no attribute: EINVAL, as Linux's
// xattr_resolve_name answers for ext4 and XFS (FUSE passes it through).
Status CheckName(std::string_view name) {
  if (name.empty() || name.size() > kMaxName) return Status::Error(ERANGE);
  if (name.find('\0') != std::string_view::npos) return Status::Error(EINVAL);
  if (name == "user." || name == "trusted." || name == "security.") return Status::Error(EINVAL);
  return Status::Ok();
}

// Writes `value` into the fresh blocks `runs` (in place: nothing points at
// them yet), zero-padded to the end of the last, and flushes them; the
// commit's drain makes them durable before the entry naming them.
void WriteValueBlocks(Filesystem::Impl& fs, const std::vector<BlockRange>& runs,
                      std::string_view value) {
  uint64_t at = 0;
  for (const BlockRange& r : runs) {
    char* p = fs.pool_.BlockPtr(r.start);
    const uint64_t room = r.count * kBlockSize;
    const uint64_t n = std::min<uint64_t>(room, value.size() - at);
    std::memcpy(p, value.data() + at, n);
    std::memset(p + n, 0, room - n);
    fs.media_->Flush(p, room);
    at += n;
  }
}

// Drops the in-memory set of an inode left without any attribute block.
void ForgetIfGone(Filesystem::Impl& fs, Ino ino) {
  Node* n = fs.N(ino);
  if (n && n->xattrs && !n->xattrs->single() && n->xattrs->leaves().empty()) n->xattrs.reset();
}

// Near the set's last leaf, where the allocator has room there.
uint64_t Goal(const XattrSet& set) { return set.leaves().empty() ? 0 : set.leaves().back() + 1; }

// Stages setting (change.value) or removing `change.name` of `set`: for a
// set, the value's blocks `runs` written and claimed, a leaf from `*leaves`
// (reserved, taken from the back) linked if FindSpot asks for one, the old
// entry removed before the new one goes in (they may share slots) and its
// leaf dropped if that left it empty. REQUIRES: the changes before this one
// in the same op are staged, and *leaves holds a block if FindSpot asks.
void StageOne(Filesystem::Impl& fs, Op& op, XattrSet& set,
              const Filesystem::Impl::XattrChange& change, const std::vector<BlockRange>& runs,
              std::vector<BlockRange>* leaves) {
  const std::string_view name = change.name;
  const XattrSet::Entry* old = set.Find(name);
  std::vector<BlockRange> freed;
  const uint64_t old_leaf = old ? old->block : 0;
  if (!change.value) {
    if (!old) return;
    set.Remove(op.tx, name, &freed);
  } else {
    const std::string_view value = *change.value;
    if (!runs.empty()) {
      WriteValueBlocks(fs, runs, value);
      for (const BlockRange& r : runs) op.Claim(r);
    }
    XattrSet::Spot spot = set.FindSpot(XattrSet::EntrySlots(name.size(), value.size(), runs.size()), old);
    if (spot.new_leaf) {
      assert(!leaves->empty());
      spot.leaf = leaves->back().start;
      leaves->pop_back();
      set.AddLeaf(op.tx, spot.leaf);
      op.Claim({spot.leaf, 1});
      spot.new_leaf = false;
    }
    if (old) set.Remove(op.tx, name, &freed);
    set.Insert(op.tx, spot, name, value, runs);
  }
  if (old_leaf != 0) set.DropIfEmpty(op.tx, old_leaf, &freed);
  for (const BlockRange& r : freed) op.Unref(r);
}

// Reserves in `op` what `changes` to `set` need: each new value's blocks
// (*runs, by change) and the leaves (*leaves, one block each): exactly what
// FindSpot says for one change; for several, one per value set (StageChanges
// gives back what it does not use). Errors: ENOSPC (what was reserved stays
// in `op`, which the caller abandons).
Status Reserve(Op& op, const XattrSet& set, const std::vector<Filesystem::Impl::XattrChange>& changes,
               std::vector<std::vector<BlockRange>>* runs, std::vector<BlockRange>* leaves) {
  runs->assign(changes.size(), {});
  size_t sets = 0;
  for (size_t i = 0; i < changes.size(); ++i) {
    const auto& ch = changes[i];
    if (!ch.value) continue;
    ++sets;
    if (XattrSet::IsRemote(ch.name.size(), ch.value->size()))
      LFS_RETURN_IF_ERROR(op.Reserve(BlocksFor(ch.value->size()), Goal(set), &(*runs)[i]));
    assert((*runs)[i].size() <= kXattrMaxRuns);
  }
  size_t need = sets;
  if (set.leaves().empty()) {
    // New entries fill a fresh leaf from its first slot: one leaf holds
    // them all while their slots add up to what it has.
    uint32_t slots = 0;
    for (size_t i = 0; i < changes.size(); ++i)
      if (changes[i].value)
        slots += XattrSet::EntrySlots(changes[i].name.size(), changes[i].value->size(),
                                      (*runs)[i].size());
    if (sets > 0 && slots <= kXattrMaxSlots) need = 1;
  } else if (changes.size() == 1 && sets == 1) {
    const auto& ch = changes[0];
    const uint32_t slots = XattrSet::EntrySlots(ch.name.size(), ch.value->size(), (*runs)[0].size());
    need = set.FindSpot(slots, set.Find(ch.name)).new_leaf ? 1 : 0;
  }
  for (size_t i = 0; i < need; ++i) LFS_RETURN_IF_ERROR(op.Reserve(1, Goal(set), leaves));
  return Status::Ok();
}

// Stages `changes` to `set` (see Impl::StageXattrChanges); cannot fail
// once Reserve has succeeded.
void StageChanges(Filesystem::Impl& fs, Op& op, XattrSet& set,
                  const std::vector<Filesystem::Impl::XattrChange>& changes,
                  const std::vector<std::vector<BlockRange>>& runs, std::vector<BlockRange> leaves) {
  for (size_t i = 0; i < changes.size(); ++i) StageOne(fs, op, set, changes[i], runs[i], &leaves);
  for (const BlockRange& r : leaves) op.Unreserve(r);
}

}  // namespace

// ---------------------------------------------------------------------------
// Impl helpers

Status Filesystem::Impl::ConvertSingleXattrBlock(Ino ino) {
  XattrSet& old = *N(ino)->xattrs;
  std::vector<std::pair<std::string, std::string>> attrs;
  Status bad = Status::Ok();
  old.ForEachName([&](std::string_view name) {
    auto v = old.ReadValue(name, *old.Find(name));
    if (!v.ok()) bad = v.status();
    if (bad.ok()) attrs.emplace_back(std::string(name), std::move(*v));
    return bad.ok();
  });
  LFS_RETURN_IF_ERROR(bad);
  // Entry by entry into a fresh set, each reserved exactly before it is
  // staged: if the space runs out part way, the op and the fresh set are
  // dropped, and nothing has changed.
  Op op(*this);
  auto fresh = std::make_unique<XattrSet>();
  fresh->InitEmpty(pool_, ino);
  const uint64_t single = I(ino)->xattr_block;
  for (const auto& [name, value] : attrs) {
    const std::vector<XattrChange> one = {{name, value}};
    std::vector<std::vector<BlockRange>> runs;
    std::vector<BlockRange> leaves;
    LFS_RETURN_IF_ERROR(Reserve(op, *fresh, one, &runs, &leaves));
    AddFeatures(0, kIncompatXattrLeaves);
    StageChanges(*this, op, *fresh, one, runs, std::move(leaves));
  }
  // The first new leaf took over the inode's link (XattrSet::AddLeaf).
  if (attrs.empty()) op.tx.Put(&I(ino)->xattr_block, uint64_t{0});
  op.Unref({single, 1});
  op.Commit();
  N(ino)->xattrs = std::move(fresh);
  ForgetIfGone(*this, ino);
  return Status::Ok();
}

Status Filesystem::Impl::StageXattrChanges(Op& op, Ino ino,
                                           const std::vector<XattrChange>& changes) {
  bool any_set = false;
  for (const XattrChange& ch : changes) {
    LFS_RETURN_IF_ERROR(CheckName(ch.name));
    if (ch.value && ch.value->size() > kXattrMaxValue) return Status::Error(E2BIG);
    any_set |= ch.value.has_value();
  }
  Node* n = N(ino);
  if (n && n->xattrs && n->xattrs->single()) {
    if (!any_set) {
      // Removals rewrite the older block in place: no new block, so they
      // cannot fail for lack of space (DropPrivs depends on that).
      std::vector<BlockRange> freed;
      for (const XattrChange& ch : changes)
        if (n->xattrs && n->xattrs->Find(ch.name)) n->xattrs->RemoveFromSingle(op.tx, ch.name, &freed);
      for (const BlockRange& r : freed) op.Unref(r);
      ForgetIfGone(*this, ino);
      return Status::Ok();
    }
    LFS_RETURN_IF_ERROR(ConvertSingleXattrBlock(ino));
  }
  // The node's set, or a new one (for an inode without attributes, or one
  // that `op` creates and that has no node yet).
  std::unique_ptr<XattrSet> fresh;
  XattrSet* set = n && n->xattrs ? n->xattrs.get() : nullptr;
  if (set == nullptr) {
    fresh = std::make_unique<XattrSet>();
    fresh->InitEmpty(pool_, ino);
    set = fresh.get();
  }
  std::vector<std::vector<BlockRange>> runs;
  std::vector<BlockRange> leaves;
  LFS_RETURN_IF_ERROR(Reserve(op, *set, changes, &runs, &leaves));
  // Before anything that links a leaf can commit (docs/pool_format.md
  // "Adding a feature").
  if (!leaves.empty()) AddFeatures(0, kIncompatXattrLeaves);
  StageChanges(*this, op, *set, changes, runs, std::move(leaves));
  if (fresh && !fresh->leaves().empty()) {
    if (n) {
      n->xattrs = std::move(fresh);
    } else {
      op.xattr_sets.emplace_back(ino, std::move(fresh));  // Op::Commit gives it to the node
    }
  }
  ForgetIfGone(*this, ino);
  return Status::Ok();
}

Result<std::optional<std::string>> Filesystem::Impl::XattrValue(Ino ino,
                                                                std::string_view name) const {
  const Node* n = N(ino);
  const XattrSet::Entry* e = n && n->xattrs ? n->xattrs->Find(name) : nullptr;
  if (e == nullptr) return std::optional<std::string>();
  LFS_ASSIGN_OR_RETURN(std::string v, n->xattrs->ReadValue(name, *e));
  return std::optional<std::string>(std::move(v));
}

bool Filesystem::Impl::HasXattr(Ino ino, std::string_view name) const {
  const Node* n = N(ino);
  return n && n->xattrs && n->xattrs->Find(name) != nullptr;
}

void Filesystem::Impl::StageRemoveXattr(Op& op, Ino ino, std::string_view name) {
  const Status s = StageXattrChanges(op, ino, {{name, std::nullopt}});
  assert(s.ok() && "a removal needs no block");
  (void)s;
}

void Filesystem::Impl::FreeXattrs(Ino ino) {
  Node* n = N(ino);
  if (!n->xattrs || n->xattrs->single()) return;  // FreeInode drops a single block
  XattrSet& set = *n->xattrs;
  const std::unordered_map<uint64_t, size_t> runs = set.RunsPerLeaf();
  // A few leaves per transaction, with their values' blocks, as many as the
  // journal holds: each state between two is an inode with fewer leaves.
  while (!set.leaves().empty()) {
    Op op(*this);
    const size_t budget = op.room() > 8192 ? op.room() - 8192 : 0;
    size_t count = 0, cost = 0;
    for (; count < set.leaves().size(); ++count) {
      auto it = runs.find(set.leaves()[count]);
      // A refcount record per run, and one for the leaf and its link.
      const size_t c = 64 + 24 * ((it == runs.end() ? 0 : it->second) + 1);
      if (count > 0 && cost + c > budget) break;
      cost += c;
    }
    std::vector<BlockRange> freed;
    set.DropHead(op.tx, count, &freed);
    for (const BlockRange& r : freed) op.Unref(r);
    op.Commit();
  }
  n->xattrs.reset();
}

// ---------------------------------------------------------------------------
// The calls

Status Filesystem::SetXattr(const Cred& c, Ino ino, std::string_view name, std::string_view value,
                            int flags) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  LFS_RETURN_IF_ERROR(CheckName(name));
  if (value.size() > kXattrMaxValue) return Status::Error(E2BIG);
  if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) return Status::Error(EINVAL);
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(ino));  // xattr_permission, first
  if (acl::IsAclXattr(name)) return fs.SetAcl(c, ino, name, value);
  LFS_RETURN_IF_ERROR(CheckAccess(fs, c, ino, name, true));
  if (fs.read_only_) return Status::Error(EROFS);
  const bool exists = fs.HasXattr(ino, name);
  if (exists && (flags & XATTR_CREATE)) return Status::Error(EEXIST);
  if (!exists && (flags & XATTR_REPLACE)) return Status::Error(ENODATA);
  Op op(fs);
  LFS_RETURN_IF_ERROR(fs.StageXattrChanges(op, ino, {{name, value}}));
  Inode img = *fs.I(ino);
  img.ctime_ns = NowNs();
  fs.StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

Result<std::string> Filesystem::GetXattr(const Cred& c, Ino ino, std::string_view name) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  LFS_RETURN_IF_ERROR(CheckName(name));
  if (acl::IsAclXattr(name)) return fs.GetAcl(ino, name);
  LFS_RETURN_IF_ERROR(CheckAccess(fs, c, ino, name, false));
  const XattrSet::Entry* e = n->xattrs ? n->xattrs->Find(name) : nullptr;
  if (e == nullptr) return Status::Error(ENODATA);
  return n->xattrs->ReadValue(name, *e);
}

Result<std::string> Filesystem::ListXattr(const Cred& c, Ino ino, size_t limit) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  std::string out;
  if (!n->xattrs) return out;
  bool over = false;
  n->xattrs->ForEachName([&](std::string_view name) {
    if (HasPrefix(name, "trusted.") && !c.is_root()) return true;
    over = out.size() + name.size() + 1 > limit;
    if (over) return false;
    out += name;
    out.push_back('\0');
    return true;
  });
  if (over) return Status::Error(ERANGE);
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
  if (!fs.HasXattr(ino, name)) return Status::Error(ENODATA);
  Op op(fs);
  LFS_RETURN_IF_ERROR(fs.StageXattrChanges(op, ino, {{name, std::nullopt}}));
  Inode img = *fs.I(ino);
  img.ctime_ns = NowNs();
  fs.StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

}  // namespace leasefs::engine
