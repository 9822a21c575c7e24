// POSIX ACLs: parsing, validation and the rules of fs/posix_acl.c (see
// acl.h). Facts from the kernel; the code is leasefs's own.
#include "engine/acl.h"

#include <errno.h>
#include <unistd.h>

#include <cstring>

namespace leasefs::engine::acl {

namespace {

// Where an entry may come in a valid list: each state admits the tags of its
// own rank and the next ones.
enum class Rank { kUserObj, kUsers, kGroups, kOther, kDone };

Status Invalid(std::string_view why) { return Status::Error(EINVAL, why); }

uint16_t Load16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint32_t Load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Checks the order and the named ids of `acl` (posix_acl_valid, plus unique
// and sorted ids, which the kernel does not check but its permission check
// and libacl's acl_valid assume).
Status Validate(const Acl& acl) {
  Rank rank = Rank::kUserObj;
  bool named = false, mask = false;
  uint64_t last_id = 0;  // of the previous named entry of the same tag, + 1
  for (const Entry& e : acl) {
    if (e.perm & ~7u) return Invalid("ACL entry with perm bits beyond rwx");
    switch (e.tag) {
      case kUserObj:
        if (rank != Rank::kUserObj) return Invalid("ACL USER_OBJ out of place");
        rank = Rank::kUsers;
        last_id = 0;
        break;
      case kUser:
      case kGroup:
        if (rank != (e.tag == kUser ? Rank::kUsers : Rank::kGroups))
          return Invalid("ACL named entry out of place");
        if (e.id == kUndefinedId) return Invalid("ACL named entry without an id");
        if (e.id < last_id) return Invalid("ACL named entries unsorted or repeated");
        last_id = uint64_t{e.id} + 1;
        named = true;
        break;
      case kGroupObj:
        if (rank != Rank::kUsers) return Invalid("ACL GROUP_OBJ out of place");
        rank = Rank::kGroups;
        last_id = 0;
        break;
      case kMask:
        if (rank != Rank::kGroups) return Invalid("ACL MASK out of place");
        rank = Rank::kOther;
        mask = true;
        break;
      case kOther:
        if (rank != Rank::kGroups && rank != Rank::kOther) return Invalid("ACL OTHER out of place");
        rank = Rank::kDone;
        break;
      default:
        return Invalid("ACL entry with an unknown tag");
    }
    if (rank == Rank::kDone && &e != &acl.back()) return Invalid("ACL entries after OTHER");
  }
  if (rank != Rank::kDone) return Invalid("ACL without USER_OBJ, GROUP_OBJ and OTHER");
  if (named && !mask) return Invalid("ACL with named entries and no MASK");
  return Status::Ok();
}

// The entry with `tag` (the first), or nullptr.
template <typename A>
auto Find(A& acl, uint16_t tag) -> decltype(&acl[0]) {
  for (auto& e : acl)
    if (e.tag == tag) return &e;
  return nullptr;
}

// The entry that carries the group bits of the mode: MASK, else GROUP_OBJ.
template <typename A>
auto GroupClass(A& acl) -> decltype(&acl[0]) {
  auto* m = Find(acl, kMask);
  return m ? m : Find(acl, kGroupObj);
}

}  // namespace

bool IsAclXattr(std::string_view name) { return name == kAccessXattr || name == kDefaultXattr; }

Result<Acl> Parse(std::string_view value) {
  if (value.size() > kMaxValueBytes) return Status::Error(E2BIG, "ACL too large");
  if (value.size() < kHeaderBytes) return Invalid("ACL shorter than its header");
  if ((value.size() - kHeaderBytes) % kEntryBytes != 0)
    return Invalid("ACL is not a whole number of entries");
  if (Load32(value.data()) != kVersion) return Invalid("ACL version is not 2");
  Acl acl;
  acl.reserve((value.size() - kHeaderBytes) / kEntryBytes);
  for (size_t off = kHeaderBytes; off < value.size(); off += kEntryBytes) {
    const char* p = value.data() + off;
    Entry e{Load16(p), Load16(p + 2), Load32(p + 4)};
    if (e.tag != kUser && e.tag != kGroup) e.id = kUndefinedId;
    acl.push_back(e);
  }
  LFS_RETURN_IF_ERROR(Validate(acl));
  return acl;
}

std::string Encode(const Acl& acl) {
  std::string out(kHeaderBytes + acl.size() * kEntryBytes, '\0');
  const uint32_t version = kVersion;
  std::memcpy(out.data(), &version, sizeof version);
  char* p = out.data() + kHeaderBytes;
  for (const Entry& e : acl) {
    const uint32_t id = (e.tag == kUser || e.tag == kGroup) ? e.id : kUndefinedId;
    std::memcpy(p, &e.tag, 2);
    std::memcpy(p + 2, &e.perm, 2);
    std::memcpy(p + 4, &id, 4);
    p += kEntryBytes;
  }
  return out;
}

Acl FromMode(mode_t mode) {
  return {{kUserObj, static_cast<uint16_t>((mode >> 6) & 7), kUndefinedId},
          {kGroupObj, static_cast<uint16_t>((mode >> 3) & 7), kUndefinedId},
          {kOther, static_cast<uint16_t>(mode & 7), kUndefinedId}};
}

bool EquivalentToMode(const Acl& acl) {
  for (const Entry& e : acl)
    if (e.tag == kUser || e.tag == kGroup || e.tag == kMask) return false;
  return true;
}

mode_t ModeBits(const Acl& acl) {
  mode_t mode = 0;
  if (const Entry* u = Find(acl, kUserObj)) mode |= mode_t{u->perm} << 6;
  if (const Entry* g = GroupClass(acl)) mode |= mode_t{g->perm} << 3;
  if (const Entry* o = Find(acl, kOther)) mode |= o->perm;
  return mode;
}

void ApplyMode(Acl* acl, mode_t mode) {
  if (Entry* u = Find(*acl, kUserObj)) u->perm = (mode >> 6) & 7;
  if (Entry* g = GroupClass(*acl)) g->perm = (mode >> 3) & 7;
  if (Entry* o = Find(*acl, kOther)) o->perm = mode & 7;
}

bool CreateMasq(Acl* acl, mode_t* mode) {
  // Each class's bits are what both the ACL and the requested mode allow.
  const mode_t asked = *mode & 0777;
  const mode_t both = ModeBits(*acl) & asked;
  ApplyMode(acl, both);
  *mode = (*mode & ~mode_t{0777}) | both;
  return !EquivalentToMode(*acl);
}

bool Permits(const Acl& acl, uid_t owner, gid_t group, const Asker& who, int want) {
  want &= 7;
  const Entry* mask = Find(acl, kMask);
  auto masked = [&](const Entry& e) {
    const unsigned perm = mask ? (e.perm & mask->perm) : e.perm;
    return (want & ~perm) == 0;
  };
  bool group_matched = false;
  for (const Entry& e : acl) {
    switch (e.tag) {
      case kUserObj:
        if (who.uid == owner) return (want & ~e.perm) == 0;
        break;
      case kUser:
        if (who.uid == e.id) return masked(e);
        break;
      case kGroupObj:
      case kGroup:
        // A group entry that matches but does not grant everything asked
        // for does not decide: another matching group may.
        if (who.in_group(e.tag == kGroupObj ? group : static_cast<gid_t>(e.id))) {
          group_matched = true;
          if ((want & ~e.perm) == 0) return masked(e);
        }
        break;
      case kOther:
        return !group_matched && (want & ~e.perm) == 0;
      default:
        break;
    }
  }
  return false;
}

}  // namespace leasefs::engine::acl
