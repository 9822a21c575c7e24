// POSIX access control lists: the value format of the system.posix_acl_access
// and system.posix_acl_default extended attributes, and the rules a Linux
// filesystem applies with them. docs/acl.md describes how leasefs uses them.
//
// The format is the kernel's (include/uapi/linux/posix_acl_xattr.h), stored
// unchanged in the inode's xattr storage: a 4-byte header holding version 2,
// then 8-byte entries {tag u16, perm u16, id u32}, little-endian. The rules
// follow fs/posix_acl.c: which lists are valid, when one is equivalent to a
// mode, what chmod and create do to one, and the access check.
//
// Nothing here touches the pool; everything is a pure function of its
// arguments, so that hostile values can be fed to it in tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace leasefs::engine::acl {

inline constexpr std::string_view kAccessXattr = "system.posix_acl_access";
inline constexpr std::string_view kDefaultXattr = "system.posix_acl_default";

// True for the two names above.
bool IsAclXattr(std::string_view name);

inline constexpr uint32_t kVersion = 2;            // POSIX_ACL_XATTR_VERSION
inline constexpr uint32_t kUndefinedId = UINT32_MAX;  // the id of unnamed entries
inline constexpr size_t kHeaderBytes = 4;
inline constexpr size_t kEntryBytes = 8;
// The largest value accepted: what the kernel's FUSE client reads and writes
// in one page (fs/fuse/acl.c refuses bigger lists with E2BIG). 511 entries.
inline constexpr size_t kMaxValueBytes = 4096;

enum Tag : uint16_t {
  kUserObj = 0x01,
  kUser = 0x02,
  kGroupObj = 0x04,
  kGroup = 0x08,
  kMask = 0x10,
  kOther = 0x20,
};

struct Entry {
  uint16_t tag = 0;
  uint16_t perm = 0;  // 4 = read, 2 = write, 1 = execute
  uint32_t id = kUndefinedId;  // uid (kUser) or gid (kGroup); kUndefinedId otherwise
  bool operator==(const Entry&) const = default;
};

// A valid list: USER_OBJ, USER entries by increasing uid, GROUP_OBJ, GROUP
// entries by increasing gid, MASK (required when there is a named entry),
// OTHER; perms of three bits.
using Acl = std::vector<Entry>;

// Parses and validates a value. Unnamed entries may carry any id (the kernel
// ignores it); Encode writes kUndefinedId. Errors: EINVAL (shorter than a
// header, not a whole number of entries, version other than 2, no entries,
// an unknown tag, perm bits beyond rwx, entries out of the order above, a
// uid or gid twice, a named entry with id kUndefinedId, a missing USER_OBJ,
// GROUP_OBJ, OTHER or required MASK), E2BIG (longer than kMaxValueBytes).
Result<Acl> Parse(std::string_view value);
// The xattr value of a valid list.
std::string Encode(const Acl& acl);

// The minimal list equal to `mode`'s permission bits.
Acl FromMode(mode_t mode);
// True if the list says no more than a mode does (three entries): then it is
// not stored, and ModeBits(acl) is the mode (posix_acl_equiv_mode). A list
// with a MASK is never equivalent, even without named entries.
bool EquivalentToMode(const Acl& acl);
// The mode's permission bits (0777) the list implies: USER_OBJ as the owner
// bits, MASK (or GROUP_OBJ without one) as the group bits, OTHER as the
// other bits.
mode_t ModeBits(const Acl& acl);
// Sets those three entries from `mode`'s permission bits, as chmod does to
// an access ACL (posix_acl_chmod).
void ApplyMode(Acl* acl, mode_t mode);
// Inheritance: turns a copy of the parent's default ACL into the new inode's
// access ACL and narrows *mode's permission bits by it, as
// posix_acl_create_masq does. The requested mode's bits limit USER_OBJ,
// OTHER and MASK (or GROUP_OBJ); named entries and GROUP_OBJ under a MASK
// are kept whole. Returns true when the result must be stored (not
// EquivalentToMode).
bool CreateMasq(Acl* acl, mode_t* mode);

// Who asks, for Permits: the uid and group membership.
struct Asker {
  uid_t uid;
  std::function<bool(gid_t)> in_group;
};
// The access check of an ACL for a caller who is not the file's owner
// (posix_acl_permission): the named user entry that matches, masked; else
// the owning and named groups that match (one of them must grant all of
// `want`, masked); else OTHER when no group matched. `want`: R_OK | W_OK |
// X_OK bits. REQUIRES: a valid list.
bool Permits(const Acl& acl, uid_t owner, gid_t group, const Asker& who, int want);

}  // namespace leasefs::engine::acl
