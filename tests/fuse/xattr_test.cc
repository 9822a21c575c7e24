// Extended attributes on a mounted leasefs: user.* and trusted.*, flags,
// size probes, limits and permissions.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kAlice = 1000;
constexpr gid_t kAliceGid = 1000;

std::string Set(const std::string& path, const std::string& name, const std::string& value,
                int flags = 0) {
  return SYS(setxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags));
}

std::string LSet(const std::string& path, const std::string& name, const std::string& value) {
  return SYS(lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0));
}

// The value, or "<ERRNO>" on failure.
std::string Get(const std::string& path, const std::string& name) {
  std::vector<char> buf(70000);
  errno = 0;
  ssize_t n = getxattr(path.c_str(), name.c_str(), buf.data(), buf.size());
  if (n < 0) return "<" + ErrnoName(errno) + ">";
  return std::string(buf.data(), static_cast<size_t>(n));
}

// Sorted names, or {"<ERRNO>"}.
std::vector<std::string> List(const std::string& path) {
  std::vector<char> buf(70000);
  errno = 0;
  ssize_t n = llistxattr(path.c_str(), buf.data(), buf.size());
  if (n < 0) return {"<" + ErrnoName(errno) + ">"};
  std::vector<std::string> names;
  for (ssize_t i = 0; i < n;) {
    std::string name(buf.data() + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

using Names = std::vector<std::string>;

TEST_SUITE("fuse.xattr") {
  TEST_CASE("Xattr: user.* attributes set, get, list and remove") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    const std::string binary("\0\x01\xff value with NUL\0", 19);
    CHECK(Set(fs.path("f"), "user.a", "alpha") == "OK");
    CHECK(Set(fs.path("f"), "user.b", binary) == "OK");
    CHECK(Set(fs.path("f"), "user.empty", "") == "OK");
    CHECK(Get(fs.path("f"), "user.a") == "alpha");
    CHECK(Get(fs.path("f"), "user.b") == binary);
    CHECK(Get(fs.path("f"), "user.empty") == "");
    CHECK(List(fs.path("f")) == Names{"user.a", "user.b", "user.empty"});
    CHECK(SYS(removexattr(fs.path("f").c_str(), "user.a")) == "OK");
    CHECK(Get(fs.path("f"), "user.a") == "<ENODATA>");
    CHECK(List(fs.path("f")) == Names{"user.b", "user.empty"});
    CHECK(Get(fs.path("f"), "user.b") == binary);
  }

  TEST_CASE("Xattr: replacing a value with a longer or shorter one") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(Set(fs.path("f"), "user.v", "short") == "OK");
    REQUIRE(Set(fs.path("f"), "user.w", "neighbour") == "OK");
    CHECK(Set(fs.path("f"), "user.v", std::string(1000, 'L')) == "OK");
    CHECK(Get(fs.path("f"), "user.v") == std::string(1000, 'L'));
    CHECK(Set(fs.path("f"), "user.v", "s") == "OK");
    CHECK(Get(fs.path("f"), "user.v") == "s");
    CHECK(Get(fs.path("f"), "user.w") == "neighbour");
  }

  TEST_CASE("Xattr: XATTR_CREATE on an existing name is EEXIST") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(Set(fs.path("f"), "user.a", "1") == "OK");
    CHECK(Set(fs.path("f"), "user.a", "2", XATTR_CREATE) == "EEXIST");
    CHECK(Get(fs.path("f"), "user.a") == "1");
    CHECK(Set(fs.path("f"), "user.new", "3", XATTR_CREATE) == "OK");
  }

  TEST_CASE("Xattr: XATTR_REPLACE on a missing name is ENODATA") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(Set(fs.path("f"), "user.a", "1", XATTR_REPLACE) == "ENODATA");
    CHECK(List(fs.path("f")) == Names{});
    REQUIRE(Set(fs.path("f"), "user.a", "1") == "OK");
    CHECK(Set(fs.path("f"), "user.a", "2", XATTR_REPLACE) == "OK");
    CHECK(Get(fs.path("f"), "user.a") == "2");
  }

  TEST_CASE("Xattr: get and remove of a missing name are ENODATA") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(Get(fs.path("f"), "user.none") == "<ENODATA>");
    CHECK(SYS(removexattr(fs.path("f").c_str(), "user.none")) == "ENODATA");
    CHECK(Get(fs.path("missing"), "user.none") == "<ENOENT>");
  }

  TEST_CASE("Xattr: a zero-size buffer probes the size; a small buffer is ERANGE") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(Set(fs.path("f"), "user.a", "0123456789") == "OK");
    REQUIRE(Set(fs.path("f"), "user.bb", "x") == "OK");
    CHECK(getxattr(fs.path("f").c_str(), "user.a", nullptr, 0) == 10);
    char small[4];
    CHECK(SYS(getxattr(fs.path("f").c_str(), "user.a", small, sizeof small)) == "ERANGE");
    const ssize_t list_len = static_cast<ssize_t>(sizeof("user.a") + sizeof("user.bb"));
    CHECK(listxattr(fs.path("f").c_str(), nullptr, 0) == list_len);
    char list_small[8];
    CHECK(SYS(listxattr(fs.path("f").c_str(), list_small, sizeof list_small)) == "ERANGE");
    // A file without attributes lists nothing.
    REQUIRE(WriteFile(fs.path("g"), "") == "");
    CHECK(listxattr(fs.path("g").c_str(), nullptr, 0) == 0);
  }

  TEST_CASE("Xattr: names over 255 bytes are ERANGE; 255 bytes work") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    const std::string n255 = "user." + std::string(250, 'n');
    const std::string n256 = "user." + std::string(251, 'n');
    CHECK(Set(fs.path("f"), n255, "v") == "OK");
    CHECK(Get(fs.path("f"), n255) == "v");
    CHECK(Set(fs.path("f"), n256, "v") == "ERANGE");
    CHECK(Get(fs.path("f"), n256) == "<ERANGE>");
    CHECK(Set(fs.path("f"), "", "v") == "ERANGE");
  }

  TEST_CASE("Xattr: values over 64 KiB are E2BIG") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(Set(fs.path("f"), "user.huge", std::string(65537, 'v')) == "E2BIG");
    CHECK(List(fs.path("f")) == Names{});
  }

  TEST_CASE("Xattr: unknown namespaces are EOPNOTSUPP") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(Set(fs.path("f"), "nonsense.a", "v") == "EOPNOTSUPP");
    CHECK(Set(fs.path("f"), "usera", "v") == "EOPNOTSUPP");
    CHECK(Get(fs.path("f"), "nonsense.a") == "<EOPNOTSUPP>");
  }

  TEST_CASE("Xattr: directories carry user.* attributes too") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(Set(fs.path("d"), "user.dir", "yes") == "OK");
    CHECK(Get(fs.path("d"), "user.dir") == "yes");
    CHECK(List(fs.path("d")) == Names{"user.dir"});
  }

  TEST_CASE("Xattr: user.* on a symlink or FIFO is EPERM; reading them gives ENODATA") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    REQUIRE(mkfifo(fs.path("p").c_str(), 0644) == 0);
    CHECK(LSet(fs.path("l"), "user.a", "v") == "EPERM");
    CHECK(LSet(fs.path("p"), "user.a", "v") == "EPERM");
    std::vector<char> buf(100);
    CHECK(SYS(lgetxattr(fs.path("l").c_str(), "user.a", buf.data(), buf.size())) == "ENODATA");
    // Through the link, the target's attributes are used.
    CHECK(Set(fs.path("l"), "user.a", "v") == "OK");
    CHECK(Get(fs.path("f"), "user.a") == "v");
  }

  TEST_CASE("Xattr: trusted.* works for root") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(Set(fs.path("f"), "trusted.t", "root only") == "OK");
    CHECK(Set(fs.path("f"), "user.u", "everyone") == "OK");
    CHECK(Get(fs.path("f"), "trusted.t") == "root only");
    CHECK(List(fs.path("f")) == Names{"trusted.t", "user.u"});
    REQUIRE(LSet(fs.path("f"), "trusted.on-symlink-ok", "") == "OK");
  }

  TEST_CASE("Xattr: trusted.* is hidden from and refused to non-root users") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "", 0666) == "");
    REQUIRE(Set(fs.path("f"), "trusted.t", "secret") == "OK");
    REQUIRE(Set(fs.path("f"), "user.u", "public") == "OK");
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KEQ(k, Get(fs.path("f"), "trusted.t"), "<ENODATA>");
      KEQ(k, Set(fs.path("f"), "trusted.t", "mine"), "EPERM");
      KEQ(k, Set(fs.path("f"), "trusted.new", "mine"), "EPERM");
      KSYS(k, removexattr(fs.path("f").c_str(), "trusted.t"), "EPERM");
      KTRUE(k, List(fs.path("f")) == Names{"user.u"});
      KEQ(k, Get(fs.path("f"), "user.u"), "public");
    });
    CHECK(Get(fs.path("f"), "trusted.t") == "secret");
  }

  TEST_CASE("Xattr: user.* needs read permission to get and write permission to set") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("ro"), "", 0644) == "");
    REQUIRE(WriteFile(fs.path("private"), "", 0600) == "");
    REQUIRE(Set(fs.path("ro"), "user.a", "1") == "OK");
    REQUIRE(Set(fs.path("private"), "user.a", "1") == "OK");
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KEQ(k, Get(fs.path("ro"), "user.a"), "1");
      KEQ(k, Set(fs.path("ro"), "user.a", "2"), "EACCES");
      KSYS(k, removexattr(fs.path("ro").c_str(), "user.a"), "EACCES");
      KEQ(k, Get(fs.path("private"), "user.a"), "<EACCES>");
      // Listing names needs no permission on the file.
      KTRUE(k, List(fs.path("private")) == Names{"user.a"});
    });
    CHECK(Get(fs.path("ro"), "user.a") == "1");
  }

  TEST_CASE("Xattr: on a sticky directory only its owner may set user.* (EPERM)") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("tmp").c_str(), 0700) == 0);
    REQUIRE(chmod(fs.path("tmp").c_str(), 01777) == 0);
    CHECK_AS(kAlice, kAliceGid, {},
             [&](ChildChecks& k) { KEQ(k, Set(fs.path("tmp"), "user.a", "v"), "EPERM"); });
    CHECK(Set(fs.path("tmp"), "user.a", "v") == "OK");
  }

  TEST_CASE("Xattr: changing attributes updates ctime, not mtime") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    struct stat before = Lstat(fs.path("f"));
    TickClock();
    REQUIRE(Set(fs.path("f"), "user.a", "v") == "OK");
    struct stat after = Lstat(fs.path("f"));
    CHECK(Nanos(after.st_ctim) > Nanos(before.st_ctim));
    CHECK(Nanos(after.st_mtim) == Nanos(before.st_mtim));
    before = after;
    TickClock();
    REQUIRE(SYS(removexattr(fs.path("f").c_str(), "user.a")) == "OK");
    after = Lstat(fs.path("f"));
    CHECK(Nanos(after.st_ctim) > Nanos(before.st_ctim));
  }

  TEST_CASE("Xattr: attributes belong to the inode: they follow renames and hard links") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    REQUIRE(Set(fs.path("f"), "user.a", "v") == "OK");
    REQUIRE(link(fs.path("f").c_str(), fs.path("g").c_str()) == 0);
    REQUIRE(rename(fs.path("f").c_str(), fs.path("h").c_str()) == 0);
    CHECK(Get(fs.path("g"), "user.a") == "v");
    CHECK(Get(fs.path("h"), "user.a") == "v");
    // A new file in the old place starts without attributes.
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(List(fs.path("f")) == Names{});
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
