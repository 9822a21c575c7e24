// Phase "directories": the entries of every directory (invariant 4 of
// docs/pool_format.md), then which entry names each directory and the parent
// fields (invariant 5, the directory half).
#include <cstring>

#include "engine/check/checker.h"
#include "engine/check/util.h"

namespace leasefs::check::internal {

using namespace layout;

namespace {

bool NameValid(std::string_view name) {
  return name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

}  // namespace

void Checker::CheckDirectories() {
  std::unordered_set<std::string_view> names;
  for (uint64_t dir = 1; dir < info_.size(); ++dir) {
    Progress("directories", dir - 1, info_.size() - 1);
    if (info_[dir].type != DT_DIR) continue;
    names.clear();
    uint64_t index = 0;
    for (const Ref* r = RefsBegin(dir); r != RefsEnd(dir); ++r) {
      if (r->kind != RefKind::kDir) continue;
      for (uint32_t j = 0; j < r->length; ++j)
        CheckDirBlock(dir, index++, r->pool_block + j, &names);
    }
    // The root comes first, so /lost+found is known by the time it is read.
    if (dir == lf_ino_ && lf_ino_ != 0) {
      for (std::string_view n : names) lf_names_.emplace(n);
    }
  }
  Progress("directories", info_.size() - 1, info_.size() - 1);
}

// Walks the entries of one block. A malformed entry is removed slot by slot:
// its slot_count cannot be trusted to find the next one.
void Checker::CheckDirBlock(uint64_t dir, uint64_t index, uint64_t pool_block,
                            std::unordered_set<std::string_view>* names) {
  const char* block = BlockPtr(pool_block);
  for (uint32_t slot = 1; slot < kDirSlotsPerBlock;) {
    const uint64_t loc = pool_block * kBlockSize + slot * kDirSlotSize;
    DirEntryHeader h;
    std::memcpy(&h, block + slot * kDirSlotSize, sizeof(h));
    const std::string at =
        "(block " + std::to_string(index) + ", slot " + std::to_string(slot) + ")";
    if (h.ino == 0) {
      if (h.slot_count != 0) {
        Problem(InodeWhere(dir),
                "free slot " + at + " has slot_count " + std::to_string(h.slot_count),
                "zeroed the slot");
        writer_->Zero(Ptr(loc), kDirSlotSize);
      }
      ++slot;
      continue;
    }
    const std::string why = EntryShapeProblem(h, slot);
    if (!why.empty()) {
      Problem(InodeWhere(dir), "entry " + at + " " + why, "removed it", true);
      writer_->Zero(Ptr(loc), kDirSlotSize);
      ++slot;
      continue;
    }
    const std::string_view name(block + slot * kDirSlotSize + sizeof(h), h.name_len);
    CheckEntry(dir, loc, "entry " + Quote(name) + " " + at, h, name, names);
    slot += h.slot_count;
  }
}

std::string Checker::EntryShapeProblem(const DirEntryHeader& h, uint32_t slot) const {
  if (h.name_len == 0) return "has an empty name";
  if (h.slot_count != DirEntrySlots(h.name_len))
    return "spans " + std::to_string(h.slot_count) + " slots but a name of " +
           std::to_string(h.name_len) + " bytes needs " + std::to_string(DirEntrySlots(h.name_len));
  if (slot + h.slot_count > kDirSlotsPerBlock) return "runs past the end of its block";
  return "";
}

void Checker::CheckEntry(uint64_t dir, uint64_t loc, const std::string& entry,
                         const DirEntryHeader& h, std::string_view name,
                         std::unordered_set<std::string_view>* names) {
  const std::string where = InodeWhere(dir);
  if (!NameValid(name)) {
    Problem(where, entry + " has an invalid name", "removed the entry", true);
    writer_->Zero(Ptr(loc), h.slot_count * kDirSlotSize);
    return;
  }
  if (!CheckEntryTarget(dir, loc, entry, h)) return;
  if (!names->insert(name).second) {
    Problem(where, entry + " repeats an earlier name", "removed the entry", true);
    writer_->Zero(Ptr(loc), h.slot_count * kDirSlotSize);
    return;
  }
  InodeInfo& target = info_[h.ino];
  if (h.type != target.type) {
    Problem(where,
            entry + " has type " + std::to_string(h.type) + " but inode " + std::to_string(h.ino) +
                " is a " + TypeName(target.type),
            "set the type to " + std::to_string(target.type));
    writer_->Put(&reinterpret_cast<DirEntryHeader*>(Ptr(loc))->type, target.type);
  }
  ++info_[dir].entries;
  if (target.type == DT_DIR) {
    dir_refs_.push_back({loc, static_cast<uint32_t>(dir), static_cast<uint32_t>(h.ino)});
  } else {
    ++target.links;
  }
  if (dir == kRootIno && name == "lost+found") {
    if (target.type == DT_DIR) {
      lf_ino_ = h.ino;
      lf_entry_loc_ = loc;
    } else {
      lf_name_owner_ = h.ino;
    }
  }
}

// Returns false (having removed the entry) if it names no inode it may name.
bool Checker::CheckEntryTarget(uint64_t dir, uint64_t loc, const std::string& entry,
                               const DirEntryHeader& h) {
  std::string why;
  if (h.ino >= sb_.inode_count) {
    why = "names inode " + std::to_string(h.ino) + ", beyond the inode table";
  } else if (h.ino >= info_.size()) {
    // Past the inode mark: the mark is too low (the next run raises it), or
    // the entry names a slot no inode was ever made in.
    if (LiveBeyondMark(dir, entry, h)) return false;
    why = "names inode " + std::to_string(h.ino) + ", past the inode table's mark (" +
          std::to_string(info_.size()) + " slots), where no inode was ever made";
  } else if (h.ino == kRootIno) {
    why = "names the root directory";
  } else if (info_[h.ino].type == 0) {
    why = "names inode " + std::to_string(h.ino) + ", which is free";
  } else {
    return true;
  }
  Problem(InodeWhere(dir), entry + " " + why, "removed the entry");
  writer_->Zero(Ptr(loc), h.slot_count * kDirSlotSize);
  return false;
}

// Removes a well-formed entry.
void Checker::ZeroEntry(uint64_t loc) {
  const auto* h = reinterpret_cast<const DirEntryHeader*>(Ptr(loc));
  writer_->Zero(Ptr(loc), h->slot_count * kDirSlotSize);
}

std::string Checker::EntryName(uint64_t loc) const {
  const auto* h = reinterpret_cast<const DirEntryHeader*>(Ptr(loc));
  return std::string(Ptr(loc) + sizeof(DirEntryHeader), h->name_len);
}

// ---------------------------------------------------------------------------
// Which entry names each directory

// Every directory but the root must be named by exactly one entry. Of several,
// the one in the directory its parent field gives wins, else the first found;
// the others are removed (the directory itself loses nothing).
void Checker::ResolveDirectoryNames() {
  for (size_t i = 0; i < dir_refs_.size(); ++i) KeepOrDropDirRef(i);
  for (size_t i = 0; i < dir_refs_.size(); ++i) {
    const DirRef& d = dir_refs_[i];
    InodeInfo& target = info_[d.target];
    if (target.kept_ref != i) continue;
    ++info_[d.dir].subdirs;
    target.links = 1;
  }
}

void Checker::KeepOrDropDirRef(size_t i) {
  const DirRef& d = dir_refs_[i];
  InodeInfo& target = info_[d.target];
  if (target.named_in == 0) {
    target.named_in = d.dir;
    target.kept_ref = static_cast<uint32_t>(i);
    return;
  }
  size_t drop = i;
  if (d.dir == target.parent && target.named_in != target.parent) {
    drop = target.kept_ref;
    target.named_in = d.dir;
    target.kept_ref = static_cast<uint32_t>(i);
  }
  const DirRef& x = dir_refs_[drop];
  Problem(InodeWhere(x.dir),
          "entry " + Quote(EntryName(x.loc)) + " names directory " + std::to_string(d.target) +
              ", which already has an entry in directory " + std::to_string(target.named_in),
          "removed the entry");
  ZeroEntry(x.loc);
  --info_[x.dir].entries;
}

void Checker::CheckParentFields() {
  for (uint64_t ino = 1; ino < info_.size(); ++ino) {
    InodeInfo& info = info_[ino];
    if (info.type != DT_DIR) continue;
    const uint32_t want = ino == kRootIno ? kRootIno : info.named_in;
    if (want == 0 || info.parent == want) continue;  // unnamed: reattached later
    const uint64_t was = InodeAt(ino)->parent;
    Problem(InodeWhere(ino),
            ino == kRootIno ? "parent is " + std::to_string(was) + " but the root's is itself"
                            : "parent is " + std::to_string(was) +
                                  " but its entry is in directory " + std::to_string(want),
            "set it to " + std::to_string(want));
    info.parent = want;
    writer_->Put(&InodeAt(ino)->parent, uint64_t{want});
  }
}

}  // namespace leasefs::check::internal
