// overlayfs with its upper layer (upperdir and workdir) on a leasefs mount
// and its lower layer on tmpfs, mounted with mount(8) as root: copy-up on
// write, whiteouts, opaque directories, renames of merged directories
// (EXDEV by default, a redirect with redirect_dir=on), and what is left in
// the upper layer afterwards, read straight from leasefs. docs/namespace.md
// says what overlayfs needs from its upper layer and how leasefs gives it.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kNobody = 65534;

// The last lines of the kernel log, for a mount that failed.
std::string DmesgTail() {
  ProcessResult r = Run({"/usr/bin/dmesg"});
  const std::string& s = r.output;
  size_t at = s.size();
  for (int lines = 0; lines < 8 && at > 0; ++lines) at = s.rfind('\n', at - 1);
  return at == std::string::npos ? s : s.substr(at);
}

std::string Xattr(const std::string& path, const std::string& name) {
  char buf[4096];
  const ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof(buf));
  return n < 0 ? ErrnoName(errno) : std::string(buf, static_cast<size_t>(n));
}

bool IsWhiteout(const std::string& path) {
  const struct stat st = Lstat(path);
  return st.st_ino != 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

// A lower layer on tmpfs (a directory of /dev/shm), the upper layer and the
// work directory on the test's filesystem, and the overlay mounted over
// them; unmounted and removed again whatever happens.
class Overlay {
 public:
  explicit Overlay(TestFs& fs, const std::string& extra_options = "") {
    char lower[] = "/dev/shm/leasefs-overlay-lower-XXXXXX";
    char merged[] = "/tmp/leasefs-overlay-XXXXXX";
    REQUIRE(mkdtemp(lower) != nullptr);
    REQUIRE(mkdtemp(merged) != nullptr);
    lower_ = lower;
    merged_ = merged;
    upper_ = fs.path("upper");
    work_ = fs.path("work");
    REQUIRE(mkdir(upper_.c_str(), 0755) == 0);
    REQUIRE(mkdir(work_.c_str(), 0755) == 0);
    options_ = "lowerdir=" + lower_ + ",upperdir=" + upper_ + ",workdir=" + work_ +
               (extra_options.empty() ? "" : "," + extra_options);
  }
  ~Overlay() {
    if (mounted_) Run({"/usr/bin/umount", merged_});
    Run({"/usr/bin/rm", "-rf", lower_});
    rmdir(merged_.c_str());
  }
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  // mount(8); "" or its output and the kernel's last words.
  std::string Mount() {
    ProcessResult r = Run({"/usr/bin/mount", "-t", "overlay", "overlay", "-o", options_, merged_});
    if (r.exit_code != 0)
      return "mount exited " + std::to_string(r.exit_code) + ": " + r.output + DmesgTail();
    mounted_ = true;
    return "";
  }
  std::string Unmount() {
    ProcessResult r = Run({"/usr/bin/umount", merged_});
    if (r.exit_code != 0) return "umount exited " + std::to_string(r.exit_code) + ": " + r.output;
    mounted_ = false;
    return "";
  }

  std::string lower(const std::string& rel) const { return lower_ + "/" + rel; }
  std::string upper(const std::string& rel) const { return upper_ + "/" + rel; }
  std::string merged(const std::string& rel) const { return merged_ + "/" + rel; }
  const std::string& upper_dir() const { return upper_; }

 private:
  std::string lower_, upper_, work_, merged_, options_;
  bool mounted_ = false;
};

// The lower layer the tests start from.
void LowerTree(Overlay& o) {
  REQUIRE(WriteFile(o.lower("a"), "lower a") == "");
  REQUIRE(WriteFile(o.lower("b"), "lower b") == "");
  REQUIRE(mkdir(o.lower("d").c_str(), 0755) == 0);
  REQUIRE(WriteFile(o.lower("d/x"), "x") == "");
  REQUIRE(WriteFile(o.lower("d/y"), "y") == "");
  REQUIRE(mkdir(o.lower("m").c_str(), 0755) == 0);
  REQUIRE(WriteFile(o.lower("m/inner"), "inner") == "");
  REQUIRE(mkdir(o.lower("pub").c_str(), 01777) == 0);
  REQUIRE(chmod(o.lower("pub").c_str(), 01777) == 0);
  REQUIRE(WriteFile(o.lower("pub/nobodys"), "n") == "");
  REQUIRE(chown(o.lower("pub/nobodys").c_str(), kNobody, kNobody) == 0);
}

TEST_SUITE("fuse.overlay") {
  TEST_CASE("overlayfs: a leasefs upper layer mounts, copies up, whiteouts, opaque directories") {
    TestFs fs;
    Overlay o(fs);
    LowerTree(o);
    const std::string err = o.Mount();
    REQUIRE_MESSAGE(err == "", err);

    // Copy-up on write: the merged file changes, the lower one does not.
    CHECK(ReadFile(o.merged("a")) == "lower a");
    {
      Fd fd(open(o.merged("a").c_str(), O_WRONLY | O_APPEND));
      REQUIRE(fd.ok());
      REQUIRE(write(fd.get(), " + upper", 8) == 8);
    }
    CHECK(ReadFile(o.merged("a")) == "lower a + upper");
    CHECK(ReadFile(o.upper("a")) == "lower a + upper");
    CHECK(ReadFile(o.lower("a")) == "lower a");
    // A chmod copies up the metadata (and the data with it).
    REQUIRE(chmod(o.merged("d/x").c_str(), 0600) == 0);
    CHECK((Lstat(o.upper("d/x")).st_mode & 07777) == 0600);
    CHECK(ReadFile(o.upper("d/x")) == "x");

    // Whiteout on deleting a lower file: a 0/0 character device upstairs.
    REQUIRE(unlink(o.merged("b").c_str()) == 0);
    CHECK(SYS(access(o.merged("b").c_str(), F_OK)) == "ENOENT");
    CHECK(IsWhiteout(o.upper("b")));
    CHECK(ReadFile(o.lower("b")) == "lower b");

    // Opaque directory: rm -r of a lower directory, then mkdir of the name.
    CHECK(Run({"/usr/bin/rm", "-r", o.merged("d")}).exit_code == 0);
    CHECK(SYS(access(o.merged("d").c_str(), F_OK)) == "ENOENT");
    CHECK(IsWhiteout(o.upper("d")));
    REQUIRE(mkdir(o.merged("d").c_str(), 0755) == 0);
    CHECK(ListDir(o.merged("d")).empty());
    CHECK(S_ISDIR(Lstat(o.upper("d")).st_mode));
    CHECK(Xattr(o.upper("d"), "trusted.overlay.opaque") == "y");
    REQUIRE(WriteFile(o.merged("d/new"), "new") == "");
    CHECK(ListDir(o.merged("d")) == std::vector<std::string>{"new"});

    // A new file lives in the upper layer only.
    REQUIRE(WriteFile(o.merged("fresh"), "fresh") == "");
    CHECK(ReadFile(o.upper("fresh")) == "fresh");
    CHECK(SYS(access(o.lower("fresh").c_str(), F_OK)) == "ENOENT");
    CHECK(ListDir(o.merged("")) == std::vector<std::string>{"a", "d", "fresh", "m", "pub"});

    // What the upper layer holds, seen on leasefs with the overlay gone.
    REQUIRE(o.Unmount() == "");
    CHECK(ListDir(o.upper_dir()) == std::vector<std::string>{"a", "b", "d", "fresh"});
    CHECK(IsWhiteout(o.upper("b")));
    CHECK(Xattr(o.upper("d"), "trusted.overlay.opaque") == "y");
    CHECK(ListDir(o.upper("d")) == std::vector<std::string>{"new"});
    // ...and it is a consistent pool, and mounts again with the same view.
    CHECK(fs.UnmountFsckRemount() == "");
    const std::string again = o.Mount();
    REQUIRE_MESSAGE(again == "", again);
    CHECK(ReadFile(o.merged("a")) == "lower a + upper");
    CHECK(SYS(access(o.merged("b").c_str(), F_OK)) == "ENOENT");
    CHECK(ListDir(o.merged("d")) == std::vector<std::string>{"new"});
  }

  TEST_CASE("overlayfs: renaming a merged directory is EXDEV by default, a redirect when asked") {
    TestFs fs;
    SUBCASE("default") {
      Overlay o(fs);
      LowerTree(o);
      const std::string err = o.Mount();
      REQUIRE_MESSAGE(err == "", err);
      CHECK(SYS(rename(o.merged("m").c_str(), o.merged("m2").c_str())) == "EXDEV");
      // mv falls back to copy and remove: the result is the same to a user.
      CHECK(Run({"/usr/bin/mv", o.merged("m"), o.merged("m2")}).exit_code == 0);
      CHECK(ReadFile(o.merged("m2/inner")) == "inner");
      CHECK(IsWhiteout(o.upper("m")));
      // A file moves (copied up first) and leaves a whiteout behind.
      CHECK(SYS(rename(o.merged("a").c_str(), o.merged("a2").c_str())) == "OK");
      CHECK(IsWhiteout(o.upper("a")));
      CHECK(ReadFile(o.upper("a2")) == "lower a");
    }
    SUBCASE("redirect_dir=on") {
      Overlay o(fs, "redirect_dir=on");
      LowerTree(o);
      const std::string err = o.Mount();
      REQUIRE_MESSAGE(err == "", err);
      CHECK(SYS(rename(o.merged("m").c_str(), o.merged("m2").c_str())) == "OK");
      CHECK(ReadFile(o.merged("m2/inner")) == "inner");
      CHECK(SYS(access(o.merged("m").c_str(), F_OK)) == "ENOENT");
      CHECK(Xattr(o.upper("m2"), "trusted.overlay.redirect") == "m");
      CHECK(IsWhiteout(o.upper("m")));
    }
  }

  TEST_CASE("overlayfs: an ordinary user works in the merged tree; the upper layer follows") {
    TestFs fs;
    Overlay o(fs);
    LowerTree(o);
    const std::string err = o.Mount();
    REQUIRE_MESSAGE(err == "", err);
    CHECK(AsUser(kNobody, kNobody, {}, [&](ChildChecks& k) {
            KSYS(k, unlink(o.merged("pub/nobodys").c_str()), "OK");
            KEQ(k, WriteFile(o.merged("pub/made"), "mine"), "");
            KSYS(k, unlink(o.merged("a").c_str()), "EACCES");
            KSYS(k, open(o.merged("a").c_str(), O_WRONLY), "EACCES");
          }) == "");
    CHECK(IsWhiteout(o.upper("pub/nobodys")));
    CHECK(Lstat(o.upper("pub/made")).st_uid == kNobody);
    CHECK(ReadFile(o.upper("pub/made")) == "mine");
    CHECK(SYS(access(o.upper("a").c_str(), F_OK)) == "ENOENT");  // never copied up
  }
}

}  // namespace
}  // namespace leasefs::testing
