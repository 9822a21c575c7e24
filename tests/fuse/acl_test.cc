// POSIX ACLs on a mounted leasefs through Debian's acl tools (setfacl,
// getfacl) and attr's getfattr, and through the raw xattr calls: the
// kernel's semantics as ext4 has them (docs/acl.md). meson runs this binary
// with default_permissions (the kernel checks the ACLs it caches, and the
// daemon again) and with no_default_permissions (the daemon alone).
//
// The unprivileged user is nobody (65534, group 65534); group 4242 is a
// supplementary group some tests give it.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534, kExtra = 4242;

constexpr const char* kSetfacl = "/usr/bin/setfacl";
constexpr const char* kGetfacl = "/usr/bin/getfacl";
constexpr const char* kGetfattr = "/usr/bin/getfattr";
constexpr const char* kAccess = "system.posix_acl_access";
constexpr const char* kDefault = "system.posix_acl_default";

// "OK" or the tool's exit code and output.
std::string Tool(const std::vector<std::string>& argv) {
  const ProcessResult r = Run(argv);
  if (r.exit_code == 0 && !r.signaled()) return "OK";
  return "exit " + std::to_string(r.exit_code) + ": " + r.output;
}

std::string Setfacl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kSetfacl};
  argv.insert(argv.end(), args.begin(), args.end());
  return Tool(argv);
}

// getfacl's entries without the header or the "#effective" notes, numeric.
std::string Getfacl(const std::string& path, const std::string& which = "") {
  std::vector<std::string> argv = {kGetfacl, "--omit-header", "--numeric", "--absolute-names",
                                   "--no-effective"};
  if (!which.empty()) argv.push_back(which);
  argv.push_back(path);
  const ProcessResult r = Run(argv);
  if (r.exit_code != 0) return "exit " + std::to_string(r.exit_code) + ": " + r.output;
  return r.output;
}

// What getfattr dumps of every namespace, header line included.
std::string Getfattr(const std::string& path) {
  const ProcessResult r = Run({kGetfattr, "--absolute-names", "-d", "-m", "-", path});
  return r.exit_code == 0 ? r.output : "exit " + std::to_string(r.exit_code) + ": " + r.output;
}

// The raw xattr value, or "<ERRNO>".
std::string Raw(const std::string& path, const char* name) {
  char buf[4096];
  errno = 0;
  const ssize_t n = getxattr(path.c_str(), name, buf, sizeof buf);
  if (n < 0) return "<" + ErrnoName(errno) + ">";
  return std::string(buf, static_cast<size_t>(n));
}

// A value in the kernel's format, built here independently of the engine:
// {tag, perm, id} entries after the version-2 header.
struct E {
  uint16_t tag, perm;
  uint32_t id = UINT32_MAX;
};
std::string Bytes(const std::vector<E>& entries, uint32_t version = 2) {
  std::string v(reinterpret_cast<const char*>(&version), 4);
  for (const E& e : entries) {
    v.append(reinterpret_cast<const char*>(&e.tag), 2);
    v.append(reinterpret_cast<const char*>(&e.perm), 2);
    v.append(reinterpret_cast<const char*>(&e.id), 4);
  }
  return v;
}
constexpr uint16_t kUserObj = 1, kUser = 2, kGroupObj = 4, kGroup = 8, kMask = 0x10,
                   kOther = 0x20;

std::string SetRaw(const std::string& path, const char* name, const std::string& value) {
  return SYS(setxattr(path.c_str(), name, value.data(), value.size(), 0));
}

mode_t ModeOf(const std::string& path) { return Lstat(path).st_mode & 07777; }

// Opens with `flags` (and `mode`, to create) and closes: "OK" or the
// errno's name.
std::string OpenAs(const std::string& path, int flags, mode_t mode = 0) {
  Fd fd(open(path.c_str(), flags, mode));
  if (!fd.ok()) return ErrnoName(errno);
  return "OK";
}

void MakeFile(const std::string& path, const std::string& data, mode_t mode, uid_t uid = 0,
              gid_t gid = 0) {
  REQUIRE(WriteFile(path, data) == "");
  REQUIRE(chown(path.c_str(), uid, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

TEST_SUITE("fuse.acl") {
  TEST_CASE("ACL: setfacl and getfacl round-trip a named entry; the group bits show the mask") {
    TestFs fs;
    umask(022);
    const std::string f = fs.path("f");
    MakeFile(f, "x", 0644);
    CHECK(Setfacl({"-m", "u:65534:rw-,g:4242:r-x", f}) == "OK");
    CHECK(Getfacl(f) ==
          "user::rw-\nuser:65534:rw-\ngroup::r--\ngroup:4242:r-x\nmask::rwx\nother::r--\n\n");
    CHECK(ModeOf(f) == 0674);
    // The stored value is the kernel's format, byte for byte.
    CHECK(Raw(f, kAccess) == Bytes({{kUserObj, 6},
                                    {kUser, 6, 65534},
                                    {kGroupObj, 4},
                                    {kGroup, 5, 4242},
                                    {kMask, 7},
                                    {kOther, 4}}));
    CHECK(Getfattr(f) == "# file: " + f + "\nsystem.posix_acl_access=0sAgAAAAEABgD/////AgAGAP7/"
                                          "AAAEAAQA/////wgABQCSEAAAEAAHAP////8gAAQA/////w==\n\n");
    // Directories take both kinds.
    REQUIRE(mkdir(fs.path("d").c_str(), 0750) == 0);
    CHECK(Setfacl({"-m", "u:65534:r-x", "-m", "d:u:65534:rwx", fs.path("d")}) == "OK");
    CHECK(Getfacl(fs.path("d")) ==
          "user::rwx\nuser:65534:r-x\ngroup::r-x\nmask::r-x\nother::---\n"
          "default:user::rwx\ndefault:user:65534:rwx\ndefault:group::r-x\ndefault:mask::rwx\n"
          "default:other::---\n\n");
  }

  TEST_CASE("ACL: a list equal to the mode is not stored; the mode is set instead") {
    TestFs fs;
    const std::string f = fs.path("f");
    MakeFile(f, "x", 0644);
    CHECK(Setfacl({"--set", "u::rwx,g::r-x,o::---", f}) == "OK");
    CHECK(ModeOf(f) == 0750);
    CHECK(Raw(f, kAccess) == "<ENODATA>");
    CHECK(Getfattr(f) == "");
    CHECK(Getfacl(f) == "user::rwx\ngroup::r-x\nother::---\n\n");
    // A stored list goes when an equivalent one replaces it (setfacl -b
    // sets the base entries): the group bits become GROUP_OBJ's again.
    CHECK(Setfacl({"-m", "u:65534:rwx", f}) == "OK");
    CHECK(ModeOf(f) == 0770);
    CHECK(Setfacl({"-b", f}) == "OK");
    CHECK(ModeOf(f) == 0750);
    CHECK(Raw(f, kAccess) == "<ENODATA>");
    CHECK(Getfattr(f) == "");
    // Removing a list that is not there succeeds, as on ext4.
    CHECK(SYS(removexattr(f.c_str(), kAccess)) == "OK");
    CHECK(SYS(removexattr(f.c_str(), kDefault)) == "OK");
  }

  TEST_CASE("ACL: only the owner or root may change one (EPERM); anyone may read it") {
    TestFs fs;
    const std::string f = fs.path("f"), mine = fs.path("mine");
    MakeFile(f, "x", 0666);
    MakeFile(mine, "x", 0600, kNobody, kNogroup);
    REQUIRE(Setfacl({"-m", "u:1000:r--", f}) == "OK");
    const std::string value = Raw(f, kAccess);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, Setfacl({"-m", "u:65534:rwx", f}),
          "exit 1: setfacl: " + f + ": Operation not permitted\n");
      KEQ(k, SetRaw(f, kAccess, value), "EPERM");
      KSYS(k, removexattr(f.c_str(), kAccess), "EPERM");
      KEQ(k, Getfacl(f), "user::rw-\nuser:1000:r--\ngroup::rw-\nmask::rw-\nother::rw-\n\n");
      // The owner may, and a chmod-like change of its own file is its own.
      KEQ(k, Setfacl({"-m", "u:1000:r--", mine}), "OK");
      KEQ(k, Getfacl(mine), "user::rw-\nuser:1000:r--\ngroup::---\nmask::r--\nother::---\n\n");
      KEQ(k, Setfacl({"-b", mine}), "OK");
    });
    CHECK(Raw(f, kAccess) == value);
    CHECK(ModeOf(mine) == 0600);
  }

  TEST_CASE("ACL: a named user entry grants and denies, within the mask (EACCES)") {
    TestFs fs;
    const std::string f = fs.path("f");
    MakeFile(f, "secret", 0640);
    CHECK_AS(kNobody, kNogroup, {},
             [&](ChildChecks& k) { KEQ(k, OpenAs(f, O_RDONLY), "EACCES"); });
    REQUIRE(Setfacl({"-m", "u:65534:r--", f}) == "OK");
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(f), "secret");
      KEQ(k, OpenAs(f, O_WRONLY), "EACCES");
      KSYS(k, access(f.c_str(), R_OK), "OK");
      KSYS(k, access(f.c_str(), W_OK), "EACCES");
    });
    // The entry allows rw-, the mask only -w-.
    REQUIRE(Setfacl({"-m", "u:65534:rw-,m::-w-", f}) == "OK");
    CHECK(ModeOf(f) == 0620);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, OpenAs(f, O_RDONLY), "EACCES");
      KEQ(k, OpenAs(f, O_WRONLY), "OK");
      KEQ(k, OpenAs(f, O_RDWR), "EACCES");
    });
    // Named and owning groups, masked; a matching group that grants nothing
    // shuts "other" out.
    REQUIRE(Setfacl({"--set", "u::rw-,g::---,g:4242:r--,m::r--,o::r--", f}) == "OK");
    CHECK_AS(kNobody, kNogroup, {kExtra}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(f), "secret");
      KEQ(k, OpenAs(f, O_WRONLY), "EACCES");
    });
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) { KEQ(k, ReadFile(f), "secret"); });
    REQUIRE(chown(f.c_str(), 0, kNogroup) == 0);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) { KEQ(k, OpenAs(f, O_RDONLY), "EACCES"); });
  }

  TEST_CASE("ACL: search and listing of a directory follow its ACL") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0700) == 0);
    MakeFile(fs.path("d/f"), "in", 0644);
    CHECK_AS(kNobody, kNogroup, {},
             [&](ChildChecks& k) { KEQ(k, OpenAs(fs.path("d/f"), O_RDONLY), "EACCES"); });
    REQUIRE(Setfacl({"-m", "u:65534:--x", fs.path("d")}) == "OK");
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(fs.path("d/f")), "in");
      KSYS(k, open(fs.path("d").c_str(), O_RDONLY | O_DIRECTORY), "EACCES");
      KSYS(k, creat(fs.path("d/new").c_str(), 0644), "EACCES");
    });
    REQUIRE(Setfacl({"-m", "u:65534:rwx", fs.path("d")}) == "OK");
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KTRUE(k, ListDir(fs.path("d")) == std::vector<std::string>{"f"});
      KSYS(k, mkdir(fs.path("d/mine").c_str(), 0755), "OK");
    });
  }

  TEST_CASE("ACL: chmod changes the mask (or GROUP_OBJ), USER_OBJ and OTHER; named entries stay") {
    TestFs fs;
    const std::string f = fs.path("f"), g = fs.path("g");
    MakeFile(f, "data", 0644);
    REQUIRE(Setfacl({"-m", "u:65534:rwx", f}) == "OK");
    CHECK(ModeOf(f) == 0674);
    REQUIRE(chmod(f.c_str(), 0640) == 0);
    CHECK(Getfacl(f) == "user::rw-\nuser:65534:rwx\ngroup::r--\nmask::r--\nother::---\n\n");
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(f), "data");
      KEQ(k, OpenAs(f, O_WRONLY), "EACCES");
    });
    REQUIRE(chmod(f.c_str(), 0660) == 0);
    CHECK(Getfacl(f) == "user::rw-\nuser:65534:rwx\ngroup::r--\nmask::rw-\nother::---\n\n");
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) { KEQ(k, OpenAs(f, O_RDWR), "OK"); });
    // A mask of --- : the kernel consults no ACL then, and a named user gets
    // the other bits (as on ext4).
    REQUIRE(chmod(f.c_str(), 0604) == 0);
    CHECK(Getfacl(f) == "user::rw-\nuser:65534:rwx\ngroup::r--\nmask::---\nother::r--\n\n");
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(f), "data");
      KEQ(k, OpenAs(f, O_WRONLY), "EACCES");
    });
    // A mask without named entries is still a list; chmod changes the mask.
    MakeFile(g, "", 0640);
    REQUIRE(Setfacl({"-m", "m::rwx", g}) == "OK");
    CHECK(ModeOf(g) == 0670);
    REQUIRE(chmod(g.c_str(), 0600) == 0);
    CHECK(Getfacl(g) == "user::rw-\ngroup::r--\nmask::---\nother::---\n\n");
  }

  TEST_CASE("ACL: setting one as a non-member of the file's group clears setgid") {
    TestFs fs;
    const std::string f = fs.path("f");
    MakeFile(f, "", 02755, kNobody, 0);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, Setfacl({"-m", "u:1000:r-x", f}), "OK");
      KTRUE(k, ModeOf(f) == 0755);
    });
    REQUIRE(chmod(f.c_str(), 02755) == 0);
    // Root keeps it (CAP_FSETID).
    CHECK(Setfacl({"-m", "u:1001:r--", f}) == "OK");
    CHECK(ModeOf(f) == 02755);
  }

  TEST_CASE("ACL: default ACLs are inherited with exact modes; the umask yields to them") {
    TestFs fs;
    const std::string d = fs.path("d");
    REQUIRE(mkdir(d.c_str(), 0777) == 0);
    REQUIRE(chmod(d.c_str(), 0777) == 0);
    REQUIRE(Setfacl({"-d", "--set", "u::rwx,u:65534:rwx,g::r-x,m::rwx,o::r-x", d}) == "OK");
    const std::string open_dir = fs.path("open");
    REQUIRE(mkdir(open_dir.c_str(), 0777) == 0);
    REQUIRE(chmod(open_dir.c_str(), 0777) == 0);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      umask(077);  // ignored under a default ACL
      KEQ(k, OpenAs(d + "/file", O_CREAT | O_WRONLY, 0666), "OK");
      KTRUE(k, ModeOf(d + "/file") == 0664);
      KEQ(k, Getfacl(d + "/file"),
          "user::rw-\nuser:65534:rwx\ngroup::r-x\nmask::rw-\nother::r--\n\n");
      KSYS(k, mkdir((d + "/sub").c_str(), 0751), "OK");
      KTRUE(k, ModeOf(d + "/sub") == 0751);
      KEQ(k, Getfacl(d + "/sub"),
          "user::rwx\nuser:65534:rwx\ngroup::r-x\nmask::r-x\nother::--x\n"
          "default:user::rwx\ndefault:user:65534:rwx\ndefault:group::r-x\ndefault:mask::rwx\n"
          "default:other::r-x\n\n");
      KSYS(k, mkfifo((d + "/fifo").c_str(), 0600), "OK");
      KTRUE(k, ModeOf(d + "/fifo") == 0600);
      KEQ(k, Getfacl(d + "/fifo"), "user::rw-\nuser:65534:rwx\ngroup::r-x\nmask::---\nother::---\n\n");
      KSYS(k, symlink("file", (d + "/link").c_str()), "OK");
      KTRUE(k, (Lstat(d + "/link").st_mode & 07777) == 0777);
      // Two levels down: the subdirectory passed its default ACL on.
      KEQ(k, OpenAs(d + "/sub/deep", O_CREAT | O_WRONLY, 0640), "OK");
      KTRUE(k, ModeOf(d + "/sub/deep") == 0640);
      // O_TMPFILE inherits as a create does, and takes the umask elsewhere.
      Fd t(open(d.c_str(), O_TMPFILE | O_WRONLY, 0640));
      KTRUE(k, t.ok());
      struct stat st {};
      KSYS(k, fstat(t.get(), &st), "OK");
      KTRUE(k, (st.st_mode & 07777) == 0640);
      char value[256];
      const ssize_t n = fgetxattr(t.get(), kAccess, value, sizeof value);
      KEQ(k, std::string(value, n > 0 ? static_cast<size_t>(n) : 0),
          Bytes({{kUserObj, 6}, {kUser, 7, kNobody}, {kGroupObj, 5}, {kMask, 4}, {kOther, 0}}));
      Fd u(open(open_dir.c_str(), O_TMPFILE | O_WRONLY, 0666));
      KTRUE(k, u.ok());
      KSYS(k, fstat(u.get(), &st), "OK");
      KTRUE(k, (st.st_mode & 07777) == 0600);
    });
    // A minimal default ACL: no access ACL is stored on what it makes. Without
    // a default ACL the umask applies, and nothing is stored either.
    REQUIRE(Setfacl({"-d", "--set", "u::rwx,g::r-x,o::---", d}) == "OK");
    umask(0);
    REQUIRE(WriteFile(d + "/min", "", 0666) == "");
    CHECK(ModeOf(d + "/min") == 0640);
    CHECK(Getfattr(d + "/min") == "");
    umask(027);
    REQUIRE(mkdir(fs.path("plain").c_str(), 0777) == 0);
    CHECK(ModeOf(fs.path("plain")) == 0750);
    CHECK(Getfattr(fs.path("plain")) == "");
    umask(022);
  }

  TEST_CASE("ACL: default ACLs only on directories (EACCES); none on symlinks") {
    TestFs fs;
    const std::string f = fs.path("f");
    MakeFile(f, "", 0644);
    const std::string value = Bytes({{kUserObj, 7}, {kGroupObj, 5}, {kOther, 5}});
    CHECK(SetRaw(f, kDefault, value) == "EACCES");
    CHECK(Raw(f, kDefault) == "<ENODATA>");
    REQUIRE(symlink("f", fs.path("l").c_str()) == 0);
    CHECK(SYS(lsetxattr(fs.path("l").c_str(), kAccess, value.data(), value.size(), 0)) ==
          "EOPNOTSUPP");
    REQUIRE(mkfifo(fs.path("p").c_str(), 0644) == 0);
    CHECK(Setfacl({"-m", "u:65534:rw-", fs.path("p")}) == "OK");
    CHECK(ModeOf(fs.path("p")) == 0664);
  }

  TEST_CASE("ACL: malformed values are refused with the kernel's errors, EINVAL") {
    TestFs fs;
    const std::string f = fs.path("f");
    MakeFile(f, "", 0644);
    const std::string good = Bytes(
        {{kUserObj, 6}, {kUser, 4, 1000}, {kGroupObj, 4}, {kMask, 4}, {kOther, 0}});
    CHECK(SetRaw(f, kAccess, good.substr(0, good.size() - 3)) == "EINVAL");  // truncated
    CHECK(SetRaw(f, kAccess, good.substr(0, 3)) == "EINVAL");                // short header
    // A version other than 2: the kernel answers EOPNOTSUPP before leasefs
    // sees it (posix_acl_from_xattr); leasefs's own parser says EINVAL.
    CHECK(SetRaw(f, kAccess, Bytes({{kUserObj, 6}, {kGroupObj, 4}, {kOther, 0}}, 1)) ==
          "EOPNOTSUPP");
    CHECK(SetRaw(f, kAccess, Bytes({{kUserObj, 6}, {kUser, 4, 1000}, {kGroupObj, 4}, {kOther, 0}})) ==
          "EINVAL");  // no mask
    CHECK(SetRaw(f, kAccess, Bytes({{kGroupObj, 4}, {kUserObj, 6}, {kOther, 0}})) ==
          "EINVAL");  // tags out of order
    CHECK(SetRaw(f, kAccess, Bytes({{kUserObj, 8}, {kGroupObj, 4}, {kOther, 0}})) == "EINVAL");
    CHECK(SetRaw(f, kAccess, Bytes({{kUserObj, 6}, {0x40, 4}, {kGroupObj, 4}, {kOther, 0}})) ==
          "EINVAL");
    CHECK(Raw(f, kAccess) == "<ENODATA>");
    CHECK(ModeOf(f) == 0644);
    // The header alone and the empty value mean "no list" to the kernel.
    CHECK(SetRaw(f, kAccess, good) == "OK");
    CHECK(SetRaw(f, kAccess, Bytes({})) == "OK");
    CHECK(Raw(f, kAccess) == "<ENODATA>");
  }

  TEST_CASE("ACL: repeated or unsorted ids are EINVAL on leasefs") {
    TestFs fs;
    // The kernel passes these on, and ext4 stores them; leasefs refuses
    // lists its permission check would read ambiguously (docs/acl.md).
    LEASEFS_ONLY(fs, "ext4 and xfs accept repeated and unsorted ids");
    const std::string f = fs.path("f");
    MakeFile(f, "", 0644);
    CHECK(SetRaw(f, kAccess,
                 Bytes({{kUserObj, 6}, {kUser, 4, 7}, {kUser, 6, 7}, {kGroupObj, 4}, {kMask, 6},
                        {kOther, 0}})) == "EINVAL");
    CHECK(SetRaw(f, kAccess,
                 Bytes({{kUserObj, 6}, {kUser, 4, 9}, {kUser, 6, 7}, {kGroupObj, 4}, {kMask, 6},
                        {kOther, 0}})) == "EINVAL");
    CHECK(SetRaw(f, kAccess,
                 Bytes({{kUserObj, 6}, {kGroupObj, 4}, {kGroup, 4, 3}, {kGroup, 4, 3}, {kMask, 6},
                        {kOther, 0}})) == "EINVAL");
    CHECK(Raw(f, kAccess) == "<ENODATA>");
    CHECK(ModeOf(f) == 0644);
  }

  TEST_CASE("ACL: lists and modes survive a remount and fsck") {
    TestFs fs;
    const std::string d = fs.path("d"), f = fs.path("d/f");
    REQUIRE(mkdir(d.c_str(), 0750) == 0);
    REQUIRE(Setfacl({"-m", "u:65534:r-x,d:g:4242:rwx", d}) == "OK");
    umask(022);
    REQUIRE(WriteFile(f, "kept", 0640) == "");
    REQUIRE(Setfacl({"-m", "u:1000:rw-", f}) == "OK");
    const std::string dir_acl = Getfacl(d), file_acl = Getfacl(f);
    CHECK(file_acl ==
          "user::rw-\nuser:1000:rw-\ngroup::r-x\ngroup:4242:rwx\nmask::rwx\nother::---\n\n");
    const mode_t file_mode = ModeOf(f);
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(Getfacl(d) == dir_acl);
    CHECK(Getfacl(f) == file_acl);
    CHECK(ModeOf(f) == file_mode);
    CHECK_AS(kNobody, kNogroup, {kExtra}, [&](ChildChecks& k) {
      KEQ(k, ReadFile(f), "kept");
      KEQ(k, OpenAs(f, O_RDWR), "OK");
    });
  }

  TEST_CASE("ACL: a check racing ACL changes never grants more than either list") {
    TestFs fs;
    const std::string f = fs.path("f");
    MakeFile(f, "race", 0600);
    // Both lists let nobody read and not write: one by its entry (rw-
    // masked to r--), the other by its mask (r-- under rw-). Taking the
    // entry of one and the mask of the other would grant writing.
    const std::string a = Bytes({{kUserObj, 6}, {kUser, 6, kNobody}, {kGroupObj, 0}, {kMask, 4},
                                 {kOther, 0}});
    const std::string b = Bytes({{kUserObj, 6}, {kUser, 4, kNobody}, {kGroupObj, 0}, {kMask, 6},
                                 {kOther, 0}});
    REQUIRE(SetRaw(f, kAccess, a) == "OK");
    auto* stop = static_cast<std::atomic<int>*>(
        mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
             -1, 0));
    REQUIRE(stop != MAP_FAILED);
    stop->store(0);
    int changes = 0;
    std::thread setter([&] {
      // Alternate until the checker has made enough checks, at least 400
      // changes in all.
      for (; changes < 400 || stop->load() == 0; ++changes) {
        if (SetRaw(f, kAccess, changes % 2 ? a : b) != "OK") break;
      }
      stop->store(2);
    });
    const std::string failures = AsUser(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      int n = 0;
      for (; stop->load() != 2; ++n) {
        KEQ(k, OpenAs(f, O_RDONLY), "OK");
        KEQ(k, OpenAs(f, O_WRONLY), "EACCES");
        KSYS(k, access(f.c_str(), W_OK), "EACCES");
        if (n == 1000) stop->store(1);
        if (!k.failures().empty()) break;
      }
      int zero = 0;
      stop->compare_exchange_strong(zero, 1);  // a failure ends the setter too
      KTRUE(k, n >= 1000);
    });
    int zero = 0;
    stop->compare_exchange_strong(zero, 1);  // also if the child died
    setter.join();
    CHECK_MESSAGE(failures.empty(), failures);
    CHECK(stop->load() == 2);
    CHECK(changes >= 400);
    MESSAGE(changes << " ACL changes raced the checks");
    munmap(stop, sizeof(std::atomic<int>));
    // Whatever list won, the mode matches its mask.
    const std::string last = Raw(f, kAccess);
    CHECK(ModeOf(f) == (last == a ? 0640u : 0660u));
  }
}

}  // namespace
}  // namespace leasefs::testing
