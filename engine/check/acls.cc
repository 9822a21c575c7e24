// POSIX ACLs in the xattr storage (docs/acl.md): what a stored list must be.
#include <dirent.h>

#include "engine/acl.h"
#include "engine/check/util.h"

namespace leasefs::check::internal {

std::string AclProblem(uint8_t type, std::string_view name, std::string_view value) {
  if (!engine::acl::IsAclXattr(name)) return "";
  // leasefs never stores these (the kernel refuses them before asking):
  // damage, or another program's writing.
  if (type == DT_LNK) return "has an ACL " + Quote(name) + " on a symlink";
  if (name == engine::acl::kDefaultXattr && type != DT_DIR)
    return "has a default ACL on a " + std::string(TypeName(type));
  auto parsed = engine::acl::Parse(value);
  if (!parsed.ok())
    return "has a malformed ACL " + Quote(name) + " (" + std::string(parsed.status().message()) +
           ")";
  // An access ACL equal to a mode is never stored, and is harmless.
  return "";
}

}  // namespace leasefs::check::internal
