// Name, path and link-count limits on a mounted leasefs, with the errnos a
// local filesystem gives at each.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include <doctest/doctest.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

const std::string kName255(255, 'n');
const std::string kName256(256, 'n');

TEST_SUITE("fuse.limits") {
  TEST_CASE("Names: 255 bytes work for every kind of entry") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("f").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("l").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("h").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("p").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("r").c_str(), 0755) == 0);
    CHECK(WriteFile(fs.path("f/" + kName255), "x") == "");
    CHECK(SYS(mkdir(fs.path("d/" + kName255).c_str(), 0755)) == "OK");
    CHECK(SYS(symlink("x", fs.path("l/" + kName255).c_str())) == "OK");
    CHECK(SYS(link(fs.path("f/" + kName255).c_str(), fs.path("h/" + kName255).c_str())) == "OK");
    CHECK(SYS(mkfifo(fs.path("p/" + kName255).c_str(), 0644)) == "OK");
    REQUIRE(WriteFile(fs.path("r/short"), "y") == "");
    CHECK(SYS(rename(fs.path("r/short").c_str(), fs.path("r/" + kName255).c_str())) == "OK");
    for (const char* dir : {"f", "d", "l", "h", "p", "r"}) {
      CAPTURE(dir);
      CHECK(ListDir(fs.path(dir)) == std::vector<std::string>{kName255});
      CHECK(Lstat(fs.path(std::string(dir) + "/" + kName255)).st_ino != 0);
    }
    CHECK(ReadFile(fs.path("h/" + kName255)) == "x");
  }

  TEST_CASE("Names: 256 bytes are ENAMETOOLONG for every operation") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("src"), "x") == "");
    REQUIRE(mkdir(fs.path("dir").c_str(), 0755) == 0);
    const std::string p = fs.path(kName256);
    CHECK(SYS(open(p.c_str(), O_CREAT | O_WRONLY, 0644)) == "ENAMETOOLONG");
    CHECK(SYS(mkdir(p.c_str(), 0755)) == "ENAMETOOLONG");
    CHECK(SYS(symlink("x", p.c_str())) == "ENAMETOOLONG");
    CHECK(SYS(link(fs.path("src").c_str(), p.c_str())) == "ENAMETOOLONG");
    CHECK(SYS(mkfifo(p.c_str(), 0644)) == "ENAMETOOLONG");
    CHECK(SYS(rename(fs.path("src").c_str(), p.c_str())) == "ENAMETOOLONG");
    CHECK(SYS(rename(fs.path("dir").c_str(), p.c_str())) == "ENAMETOOLONG");
    // Lookups of a too-long name fail the same way, not with ENOENT.
    struct stat st {};
    CHECK(SYS(lstat(p.c_str(), &st)) == "ENAMETOOLONG");
    CHECK(SYS(open(p.c_str(), O_RDONLY)) == "ENAMETOOLONG");
    CHECK(SYS(unlink(p.c_str())) == "ENAMETOOLONG");
    CHECK(SYS(rmdir(p.c_str())) == "ENAMETOOLONG");
    CHECK(SYS(rename(p.c_str(), fs.path("x").c_str())) == "ENAMETOOLONG");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"dir", "src"});
  }

  TEST_CASE("Names: any byte but '/' and NUL is allowed and listed back exactly") {
    TestFs fs;
    std::vector<std::string> names = {" leading space",
                                      "trailing space ",
                                      "new\nline",
                                      "tab\there",
                                      "\x01\x02\x7f",
                                      "\xc3\xa9t\xc3\xa9 \xe2\x82\xac",  // UTF-8
                                      "\xff\xfe\x80 not utf-8",
                                      "...",
                                      "..a",
                                      "-dash",
                                      "#%*?[]{}\\\"'"};
    // A 255-byte name made of 3-byte UTF-8 characters.
    std::string euros;
    for (int i = 0; i < 85; ++i) euros += "\xe2\x82\xac";
    names.push_back(euros);
    for (const auto& n : names) REQUIRE(WriteFile(fs.path(n), n) == "");
    std::vector<std::string> sorted = names;
    std::sort(sorted.begin(), sorted.end());
    CHECK(ListDir(fs.root()) == sorted);
    for (const auto& n : names) CHECK(ReadFile(fs.path(n)) == n);
    // 86 euro signs are 258 bytes: too long although only 86 characters.
    CHECK(SYS(mkdir(fs.path(euros + "\xe2\x82\xac").c_str(), 0755)) == "ENAMETOOLONG");
  }

  TEST_CASE("Paths: 4096 bytes or more are ENAMETOOLONG; deeper trees work relatively") {
    TestFs fs;
    // 30 levels of 200-byte names: about 6000 bytes of path.
    const std::string comp(200, 'c');
    Fd dir(open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
    std::string rel;
    for (int i = 0; i < 30; ++i) {
      REQUIRE(SYS(mkdirat(dir.get(), comp.c_str(), 0755)) == "OK");
      dir = Fd(openat(dir.get(), comp.c_str(), O_RDONLY | O_DIRECTORY));
      REQUIRE(dir.ok());
      rel += (rel.empty() ? "" : "/") + comp;
    }
    Fd f(openat(dir.get(), "leaf", O_CREAT | O_WRONLY, 0644));
    CHECK(f.ok());
    CHECK(SYS(write(f.get(), "deep", 4)) == "OK");
    const std::string full = fs.path(rel + "/leaf");
    REQUIRE(full.size() >= 4096);
    CHECK(SYS(open(full.c_str(), O_RDONLY)) == "ENAMETOOLONG");
    struct stat st {};
    CHECK(SYS(stat(full.c_str(), &st)) == "ENAMETOOLONG");
    // A path of exactly 4095 bytes is fine (PATH_MAX counts the NUL).
    std::string p4095 = fs.root() + "/";
    while (p4095.size() + 201 <= 4095) {
      p4095 += comp + "/";
    }
    p4095 += std::string(4095 - p4095.size(), 'z');
    REQUIRE(p4095.size() == 4095);
    const std::string last = p4095.substr(p4095.rfind('/') + 1);
    if (last.size() <= 255) {
      CHECK(SYS(close(open(p4095.c_str(), O_CREAT | O_WRONLY, 0644))) == "OK");
      CHECK(SYS(stat((p4095 + "/").c_str(), &st)) == "ENAMETOOLONG");
    }
  }

  TEST_CASE("Link: 65000 links is the limit; one more is EMLINK") {
    TestFs fs;
    // ext4 shares the 65000 limit; tmpfs and xfs allow (far) more.
    LEASEFS_AND_REFERENCE(fs, "ext4", "65000-link limit");
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    REQUIRE(mkdir(fs.path("links").c_str(), 0755) == 0);
    Fd dir(open(fs.path("links").c_str(), O_RDONLY | O_DIRECTORY));
    int made = 1;
    for (; made < 65000; ++made) {
      if (linkat(AT_FDCWD, fs.path("f").c_str(), dir.get(), std::to_string(made).c_str(), 0) != 0)
        break;
    }
    REQUIRE_MESSAGE(made == 65000, "link #" << made << ": " << ErrnoName(errno));
    CHECK(Lstat(fs.path("f")).st_nlink == 65000);
    CHECK(SYS(link(fs.path("f").c_str(), fs.path("one-more").c_str())) == "EMLINK");
    CHECK(Lstat(fs.path("f")).st_nlink == 65000);
    REQUIRE(unlink(fs.path("links/1").c_str()) == 0);
    CHECK(SYS(link(fs.path("f").c_str(), fs.path("one-more").c_str())) == "OK");
  }

  TEST_CASE("Mkdir: a directory with 64998 subdirectories (65000 links) refuses more (EMLINK)") {
    TestFs fs(FsOptions{.pool_size = "512M", .mkfs_args = {"-N", "70000"}});
    // ext4 (dir_nlink) and xfs have no such limit; leasefs documents EMLINK.
    LEASEFS_ONLY(fs, "the 65000-link limit on directories is leasefs's");
    REQUIRE(mkdir(fs.path("p").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("other").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("other/mover").c_str(), 0755) == 0);
    Fd dir(open(fs.path("p").c_str(), O_RDONLY | O_DIRECTORY));
    int made = 0;
    for (; made < 64998; ++made)
      if (mkdirat(dir.get(), std::to_string(made).c_str(), 0755) != 0) break;
    REQUIRE_MESSAGE(made == 64998, "mkdir #" << made << ": " << ErrnoName(errno));
    CHECK(Lstat(fs.path("p")).st_nlink == 65000);
    CHECK(SYS(mkdir(fs.path("p/one-more").c_str(), 0755)) == "EMLINK");
    CHECK(SYS(rename(fs.path("other/mover").c_str(), fs.path("p/mover").c_str())) == "EMLINK");
    // Files are not subdirectories: they still fit.
    CHECK(WriteFile(fs.path("p/file"), "") == "");
    REQUIRE(rmdir(fs.path("p/0").c_str()) == 0);
    CHECK(SYS(rename(fs.path("other/mover").c_str(), fs.path("p/mover").c_str())) == "OK");
    CHECK(Lstat(fs.path("p")).st_nlink == 65000);
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
