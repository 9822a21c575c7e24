// POSIX ACLs in xattr blocks (docs/acl.md): the checker accepts what leasefs
// stores and treats any other ACL as damage of the block.
#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/acl.h"
#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;
using std::to_string;
namespace acl = engine::acl;

std::string Leaked(uint64_t b) {
  return "block " + to_string(b) + ": refcount 1 but nothing references it (leaked)";
}

// u::rw-,u:1000:r--,g::r--,m::r--,o::---
std::string NamedAcl() {
  return acl::Encode({{acl::kUserObj, 6, acl::kUndefinedId},
                      {acl::kUser, 4, 1000},
                      {acl::kGroupObj, 4, acl::kUndefinedId},
                      {acl::kMask, 4, acl::kUndefinedId},
                      {acl::kOther, 0, acl::kUndefinedId}});
}

TEST_SUITE("check") {
  TEST_CASE("ACL: valid access and default ACLs are clean") {
    Image img;
    const uint64_t d = img.Mkdir(1, "d");
    const uint64_t f = img.Create(1, "f");
    img.SetXattrs(d, {{std::string(acl::kAccessXattr), NamedAcl()},
                      {std::string(acl::kDefaultXattr), NamedAcl()}});
    img.SetXattrs(f, {{std::string(acl::kAccessXattr), NamedAcl()}, {"user.a", "1"}});
    const check::CheckReport r = Check(img);
    CHECK(Problems(r).empty());
  }

  TEST_CASE("ACL: a malformed or misplaced ACL is damage: the xattr block goes") {
    Image img;
    const uint64_t d = img.Mkdir(1, "d");
    const uint64_t f = img.Create(1, "f");
    const uint64_t l = img.Symlink(1, "l", "f");
    std::string bad = NamedAcl();
    uint64_t ino = f, x = 0;
    std::string why;
    SUBCASE("truncated") {
      bad.pop_back();
      x = img.SetXattrs(f, {{"user.a", "1"}, {std::string(acl::kAccessXattr), bad}});
      why = "has a malformed ACL 'system.posix_acl_access' (ACL is not a whole number of "
            "entries) at byte 12";
    }
    SUBCASE("without the mask its named entry needs") {
      bad = acl::Encode({{acl::kUserObj, 6, acl::kUndefinedId},
                         {acl::kUser, 4, 1000},
                         {acl::kGroupObj, 4, acl::kUndefinedId},
                         {acl::kOther, 0, acl::kUndefinedId}});
      x = img.SetXattrs(f, {{std::string(acl::kAccessXattr), bad}});
      why = "has a malformed ACL 'system.posix_acl_access' (ACL with named entries and no "
            "MASK) at byte 0";
    }
    SUBCASE("a default ACL on a file") {
      x = img.SetXattrs(f, {{std::string(acl::kDefaultXattr), NamedAcl()}});
      why = "has a default ACL on a regular file at byte 0";
    }
    SUBCASE("an ACL on a symlink") {
      ino = l;
      x = img.SetXattrs(l, {{std::string(acl::kAccessXattr), NamedAcl()}});
      why = "has an ACL 'system.posix_acl_access' on a symlink at byte 0";
    }
    SUBCASE("version 1 on a directory") {
      ino = d;
      bad[0] = 1;
      x = img.SetXattrs(d, {{std::string(acl::kDefaultXattr), bad}});
      why = "has a malformed ACL 'system.posix_acl_default' (ACL version is not 2) at byte 0";
    }
    ExpectRepaired(img, {"inode " + to_string(ino) + ": xattr block " + to_string(x) + " " + why,
                         Leaked(x)});
  }
}

}  // namespace
}  // namespace leasefs::testing
