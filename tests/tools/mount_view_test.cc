// The bounded walk that finds a pinned file's path, and the mount root it
// starts from, on a tree in /dev/shm.
#include "tools/leasectl/mount_view.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>

namespace leasefs::leasectl {
namespace {

// root/a/b/f and root/g, removed at the end.
class Tree {
 public:
  Tree() {
    char t[] = "/dev/shm/leasectl-walk-XXXXXX";
    REQUIRE(mkdtemp(t) != nullptr);
    root_ = t;
    REQUIRE(mkdir((root_ + "/a").c_str(), 0755) == 0);
    REQUIRE(mkdir((root_ + "/a/b").c_str(), 0755) == 0);
    for (const char* f : {"/a/b/f", "/g"}) {
      const int fd = open((root_ + f).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      REQUIRE(fd >= 0);
      close(fd);
    }
  }
  ~Tree() {
    for (const char* p : {"/a/b/f", "/g"}) unlink((root_ + p).c_str());
    for (const char* p : {"/a/b", "/a", ""}) rmdir((root_ + p).c_str());
  }
  Tree(const Tree&) = delete;
  Tree& operator=(const Tree&) = delete;

  const std::string& root() const { return root_; }
  uint64_t Ino(const std::string& rel) const {
    struct stat st {};
    REQUIRE(stat((root_ + rel).c_str(), &st) == 0);
    return st.st_ino;
  }

 private:
  std::string root_;
};

TEST_SUITE("leasectl") {
  TEST_CASE("FindInodes: every inode wanted under the root, by readdir, within the budget") {
    Tree t;
    const uint64_t f = t.Ino("/a/b/f"), g = t.Ino("/g");
    const auto found = FindInodes(t.root(), {f, g}, 100);
    CHECK(found == std::map<uint64_t, std::string>{{f, t.root() + "/a/b/f"}, {g, t.root() + "/g"}});
    // Three entries (a, g, then b) are not enough to reach a/b/f; g is met.
    CHECK(FindInodes(t.root(), {f, g}, 3) ==
          std::map<uint64_t, std::string>{{g, t.root() + "/g"}});
    CHECK(FindInodes(t.root(), {f}, 0).empty());
    CHECK(FindInodes(t.root(), {}, 100).empty());
    CHECK(FindInodes(t.root() + "/missing", {f}, 100).empty());
  }

  TEST_CASE("MountRoot: the path climbed while its parent is on the same device") {
    Tree t;
    struct stat st {};
    REQUIRE(stat("/dev/shm", &st) == 0);
    struct stat parent {};
    REQUIRE(stat("/dev", &parent) == 0);
    if (parent.st_dev == st.st_dev) return;  // /dev/shm is no mount of its own here
    CHECK(MountRoot(t.root() + "/a/b/f", st.st_dev) == "/dev/shm");
    CHECK(MountRoot(t.root() + "/a", st.st_dev) == "/dev/shm");
    CHECK(MountRoot(t.root() + "/missing", st.st_dev) == "");
  }
}

}  // namespace
}  // namespace leasefs::leasectl
