// Small helpers the checker's phases share: file types and message text.
#pragma once

#include <dirent.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace leasefs::check::internal {

// The d_type of an inode mode (DT_REG, DT_DIR, ...), or 0 for a type the
// format does not know.
uint8_t TypeOfMode(uint32_t mode);
// "regular file", "directory", ...; "unknown type" for anything else.
const char* TypeName(uint8_t d_type);

std::string InodeWhere(uint64_t ino);  // "inode 12"
std::string Octal(uint64_t v);         // "0100644"
std::string Hex(uint64_t v);           // "0x1f"
// A name from the pool, quoted, with bytes outside printable ASCII (and the
// quote and backslash) escaped as \xNN: 'a\x0ab'.
std::string Quote(std::string_view name);
// What is wrong with an xattr `name` = `value` of an inode of d_type `type`
// if it is a POSIX ACL (acls.cc): a malformed list, a default ACL of a
// non-directory, an ACL of a symlink; "" if nothing (or not an ACL).
std::string AclProblem(uint8_t type, std::string_view name, std::string_view value);
// "1 entry" / "2 entries" for Plural(n, "entry", "entries").
std::string Plural(uint64_t n, const char* one, const char* many);

}  // namespace leasefs::check::internal
