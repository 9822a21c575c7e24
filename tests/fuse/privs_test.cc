// Privileges on change, as a local Linux filesystem drops them: every change
// of a file's bytes or size removes its security.capability xattr (whoever
// makes it, root too), and clears setuid, and setgid (always when the group
// may execute, else for writers outside the group), unless the writer is
// root (CAP_FSETID). And a program that others may execute but not read
// (0711) runs for them.
//
// Files are set up by root; user 1000 (group 1000, not the files' group)
// acts, with write permission but not owning them. Run in reference mode on
// tmpfs and ext4 too (modes a filesystem lacks are skipped there).
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kAlice = 1000, kBob = 1001;
constexpr gid_t kAliceGid = 1000, kBobGid = 1001, kShared = 2000;
constexpr size_t kSize = 16384;
constexpr const char* kCapName = "security.capability";

// A valid VFS_CAP_REVISION_2 value (struct vfs_cap_data, little-endian):
// effective, permitted = CAP_SETUID, as `setcap cap_setuid+ep` writes it.
std::string CapabilityBlob() {
  const uint32_t words[5] = {0x02000000u | 1u /* VFS_CAP_FLAGS_EFFECTIVE */, 1u << 7, 0, 0, 0};
  std::string blob(20, '\0');
  for (size_t i = 0; i < 5; ++i)
    for (size_t b = 0; b < 4; ++b) blob[i * 4 + b] = static_cast<char>(words[i] >> (8 * b));
  return blob;
}

// "OK" if `path` has a capability xattr, else the errno name (ENODATA).
std::string CapState(const std::string& path) {
  char buf[64];
  return SYS(getxattr(path.c_str(), kCapName, buf, sizeof(buf)));
}

mode_t ModeOf(const std::string& path) { return Stat(path).st_mode & 07777; }

// As root: `path` with `data`, `mode`, group `gid` and a capability.
void MakePrivileged(const std::string& path, const std::string& data, mode_t mode,
                    gid_t gid = 0) {
  REQUIRE(WriteFile(path, data) == "");
  REQUIRE(chown(path.c_str(), 0, gid) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
  const std::string cap = CapabilityBlob();
  REQUIRE(SYS(setxattr(path.c_str(), kCapName, cap.data(), cap.size(), 0)) == "OK");
  REQUIRE(CapState(path) == "OK");
  REQUIRE(ModeOf(path) == mode);
}

// As root: `path` with `data` and exactly `mode` (whatever the umask).
void MakePlain(const std::string& path, const std::string& data, mode_t mode) {
  REQUIRE(WriteFile(path, data) == "");
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

// fsync(2) of `path`: ext4 has no blocks for data it has not written back,
// and EXT4_IOC_MOVE_EXT needs them (ENODATA otherwise).
void Sync(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY));
  REQUIRE(fd.ok());
  REQUIRE(fsync(fd.get()) == 0);
}

std::string Zeros(size_t n) { return std::string(n, '\0'); }

// The leasefs ioctl on leasefs; fallocate(2) with `mode` on a reference
// filesystem (FUSE does not pass those modes, so leasefs offers ioctls).
int RangeOp(const TestFs& fs, int fd, unsigned long cmd, int mode, uint64_t off, uint64_t len) {
  if (fs.reference()) return fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len));
  leasefs_range r{off, len};
  return ioctl(fd, cmd, &r);
}

int CloneOp(const TestFs& fs, int dst, int src, uint64_t len) {
  if (fs.reference()) {
    struct file_clone_range r {};  // FICLONERANGE
    r.src_fd = src;
    r.src_length = len;
    return ioctl(dst, FICLONERANGE, &r);
  }
  leasefs_clone_range r{src, 0, len, 0};
  return ioctl(dst, LEASEFS_IOC_CLONE_RANGE, &r);
}

// One byte-changing operation, issued by Alice on `fd` (open O_RDWR) or
// `path`, and the contents it leaves from `data`.
struct Change {
  const char* name;
  // Filesystems (FsTypeIn) the change runs on in reference mode; "" = all.
  const char* reference_types;
  std::function<int(const TestFs& fs, const std::string& path, int fd, int src)> run;
  std::function<std::string(const std::string& data, const std::string& src)> expect;
};

std::vector<Change> Changes() {
  auto falloc = [](int mode, off_t off, off_t len) {
    return [=](const TestFs&, const std::string&, int fd, int) {
      return fallocate(fd, mode, off, len);
    };
  };
  auto hole = [](const std::string& d, const std::string&) {
    return d.substr(0, 4096) + Zeros(4096) + d.substr(8192);
  };
  auto same = [](const std::string& d, const std::string&) { return d; };
  auto src_head = [](const std::string& d, const std::string& s) {
    return s.substr(0, 4096) + d.substr(4096);
  };
  return {
      {"write", "",
       [](const TestFs&, const std::string&, int fd, int) {
         return static_cast<int>(pwrite(fd, "x", 1, 0));
       },
       [](const std::string& d, const std::string&) { return "x" + d.substr(1); }},
      {"O_TRUNC", "",
       [](const TestFs&, const std::string& path, int, int) {
         Fd t(open(path.c_str(), O_WRONLY | O_TRUNC));
         return t.ok() ? 0 : -1;
       },
       [](const std::string&, const std::string&) { return std::string(); }},
      {"ftruncate", "",
       [](const TestFs&, const std::string&, int fd, int) { return ftruncate(fd, 100); },
       [](const std::string& d, const std::string&) { return d.substr(0, 100); }},
      {"truncate", "",
       [](const TestFs&, const std::string& path, int, int) { return truncate(path.c_str(), 100); },
       [](const std::string& d, const std::string&) { return d.substr(0, 100); }},
      {"fallocate", "", falloc(0, 0, 2 * kSize),
       [](const std::string& d, const std::string&) { return d + Zeros(kSize); }},
      {"fallocate KEEP_SIZE", "", falloc(FALLOC_FL_KEEP_SIZE, 0, 2 * kSize), same},
      {"fallocate PUNCH_HOLE", "", falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096),
       hole},
      {"fallocate ZERO_RANGE", "ext4,xfs", falloc(FALLOC_FL_ZERO_RANGE, 4096, 4096), hole},
      {"collapse", "ext4,xfs",
       [](const TestFs& fs, const std::string&, int fd, int) {
         return RangeOp(fs, fd, LEASEFS_IOC_COLLAPSE_RANGE, FALLOC_FL_COLLAPSE_RANGE, 4096, 4096);
       },
       [](const std::string& d, const std::string&) { return d.substr(0, 4096) + d.substr(8192); }},
      {"insert", "ext4,xfs",
       [](const TestFs& fs, const std::string&, int fd, int) {
         return RangeOp(fs, fd, LEASEFS_IOC_INSERT_RANGE, FALLOC_FL_INSERT_RANGE, 4096, 4096);
       },
       [](const std::string& d, const std::string&) {
         return d.substr(0, 4096) + Zeros(4096) + d.substr(4096);
       }},
      {"unshare", "xfs",
       [](const TestFs& fs, const std::string&, int fd, int) {
         return RangeOp(fs, fd, LEASEFS_IOC_UNSHARE_RANGE, FALLOC_FL_UNSHARE_RANGE, 0, kSize);
       },
       same},
      {"copy_file_range", "",
       [](const TestFs&, const std::string&, int fd, int src) {
         loff_t in = 0, out = 0;
         return static_cast<int>(copy_file_range(src, &in, fd, &out, 4096, 0));
       },
       src_head},
      {"clone", "xfs,btrfs",
       [](const TestFs& fs, const std::string&, int fd, int src) {
         return CloneOp(fs, fd, src, 4096);
       },
       src_head},
  };
}

// Runs every change as Alice on its own file made by `make`, then checks the
// result as root with `check` (mode expected, and the change's contents).
void RunChanges(TestFs& fs, uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                const std::function<void(const std::string&, const std::string&)>& make,
                mode_t want_mode) {
  const std::string data = Pattern(kSize, 1), src_data = Pattern(8192, 2);
  REQUIRE(WriteFile(fs.path("src"), src_data, 0644) == "");
  for (const Change& ch : Changes()) {
    if (fs.reference() && *ch.reference_types && !FsTypeIn(fs, ch.reference_types)) {
      MESSAGE("reference mode on " << FsType(fs) << ": " << std::string(ch.name) << " skipped");
      continue;
    }
    CAPTURE(ch.name);
    const std::string path = fs.path(std::string("f-") + ch.name);
    make(path, data);
    CHECK_AS(uid, gid, groups, [&](ChildChecks& k) {
      Fd fd(open(path.c_str(), O_RDWR));
      Fd src(open(fs.path("src").c_str(), O_RDONLY));
      KTRUE(k, fd.ok() && src.ok());
      const int rc = ch.run(fs, path, fd.get(), src.get());
      KEQ(k, rc >= 0 ? std::string("OK") : ErrnoName(errno), "OK");
    });
    // Checked at once: the kernel's cached attributes must show the change.
    CHECK(ModeOf(path) == want_mode);
    CHECK(CapState(path) == "ENODATA");
    bool ok = false;
    CHECK(Diff(ReadFile(path, &ok), ch.expect(data, src_data)) == "");
    CHECK(ok);
  }
}

TEST_SUITE("fuse.privs") {
  TEST_CASE("Privs: every change by a non-owner writer drops setuid, setgid and the capability") {
    TestFs fs;
    RunChanges(
        fs, kAlice, kAliceGid, {},
        [](const std::string& p, const std::string& d) { MakePrivileged(p, d, 06777); }, 0777);
  }

  TEST_CASE("Privs: a writer in the group keeps setgid without group execute, not the capability") {
    TestFs fs;
    RunChanges(
        fs, kAlice, kAliceGid, {kShared},
        [](const std::string& p, const std::string& d) { MakePrivileged(p, d, 06766, kShared); },
        02766);
  }

  TEST_CASE("Privs: root keeps setuid and setgid (CAP_FSETID) but loses the capability") {
    TestFs fs;
    // Root, owning nothing in particular: the capability check asks only
    // whether the xattr exists (cap_inode_need_killpriv).
    RunChanges(
        fs, 0, 0, {},
        [](const std::string& p, const std::string& d) { MakePrivileged(p, d, 06777, kAliceGid); },
        06777);
  }

  TEST_CASE("Privs: a file without privileges is changed as usual, its other xattrs kept") {
    TestFs fs;
    MakePlain(fs.path("f"), "0123456789", 0666);
    REQUIRE(SYS(setxattr(fs.path("f").c_str(), "user.note", "kept", 4, 0)) == "OK");
    MakePrivileged(fs.path("g"), "0123456789", 0766);
    REQUIRE(SYS(setxattr(fs.path("g").c_str(), "user.note", "kept", 4, 0)) == "OK");
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      for (const char* name : {"f", "g"}) {
        Fd fd(open(fs.path(name).c_str(), O_WRONLY));
        KSYS(k, pwrite(fd.get(), "AB", 2, 0), "OK");
      }
    });
    for (const char* name : {"f", "g"}) {
      CAPTURE(name);
      CHECK(ReadFile(fs.path(name)) == "AB23456789");
      char v[8] = {};
      CHECK(getxattr(fs.path(name).c_str(), "user.note", v, sizeof(v)) == 4);
      CHECK(std::string(v) == "kept");
      CHECK(CapState(fs.path(name)) == "ENODATA");
    }
    CHECK(ModeOf(fs.path("f")) == 0666);
    CHECK(ModeOf(fs.path("g")) == 0766);
  }

  TEST_CASE("Privs: a caller who may not write changes nothing, privileges stay") {
    TestFs fs;
    MakePrivileged(fs.path("f"), "0123456789", 06755);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, truncate(fs.path("f").c_str(), 3), "EACCES");
      KSYS(k, open(fs.path("f").c_str(), O_WRONLY | O_TRUNC), "EACCES");
      // removexattr(2) of the capability needs CAP_SETFCAP, even for a writer.
    });
    CHECK(ModeOf(fs.path("f")) == 06755);
    CHECK(CapState(fs.path("f")) == "OK");
    CHECK(ReadFile(fs.path("f")) == "0123456789");
  }

  TEST_CASE("Privs: removexattr of the capability by a writer without CAP_SETFCAP is EPERM") {
    TestFs fs;
    MakePrivileged(fs.path("f"), "0123456789", 06777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, removexattr(fs.path("f").c_str(), kCapName), "EPERM");
      const std::string cap = CapabilityBlob();
      KSYS(k, setxattr(fs.path("f").c_str(), kCapName, cap.data(), cap.size(), 0), "EPERM");
    });
    CHECK(CapState(fs.path("f")) == "OK");
    CHECK(ModeOf(fs.path("f")) == 06777);
  }

  TEST_CASE("Privs: a writer's chmod of a file it does not own is EPERM and drops nothing") {
    TestFs fs;
    MakePrivileged(fs.path("f"), "0123456789", 06777);
    // A mode that only clears setuid/setgid looks like the kernel's own
    // privilege dropping (which follows a REMOVEXATTR whose serving may
    // already have cleared them), so without default_permissions it is
    // served as that: the documented gap (README). Anything else is EPERM.
    const bool kernel_checks = !DaemonChecksAlone(fs);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      KSYS(k, chmod(fs.path("f").c_str(), 0777 | S_ISVTX), "EPERM");
      KSYS(k, chmod(fs.path("f").c_str(), 0666), "EPERM");
      if (kernel_checks) KSYS(k, chmod(fs.path("f").c_str(), 06777), "EPERM");
    });
    CHECK(CapState(fs.path("f")) == "OK");
    CHECK(ModeOf(fs.path("f")) == 06777);
  }

  TEST_CASE("Privs: a zero-length write and a failed fallocate drop nothing") {
    TestFs fs;
    MakePrivileged(fs.path("f"), "0123456789", 06777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd fd(open(fs.path("f").c_str(), O_RDWR));
      KSYS(k, pwrite(fd.get(), "", 0, 0), "OK");
      KSYS(k, fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE, 0, 4096), "EOPNOTSUPP");
    });
    CHECK(ModeOf(fs.path("f")) == 06777);
    CHECK(CapState(fs.path("f")) == "OK");
  }

  TEST_CASE("Privs: EXT4_IOC_MOVE_EXT refuses a setuid or setgid donor; the original keeps all") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "ext4", "EXT4_IOC_MOVE_EXT");
    const std::string data = Pattern(kSize, 3);
    MakePrivileged(fs.path("orig"), data, 06777);
    MakePrivileged(fs.path("suid-donor"), Pattern(kSize, 4), 04777);
    MakePlain(fs.path("donor"), Pattern(kSize, 5), 0666);
    for (const char* name : {"orig", "suid-donor", "donor"}) Sync(fs.path(name));
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd orig(open(fs.path("orig").c_str(), O_RDWR));
      Fd bad(open(fs.path("suid-donor").c_str(), O_WRONLY));
      Fd donor(open(fs.path("donor").c_str(), O_WRONLY));
      KTRUE(k, orig.ok() && bad.ok() && donor.ok());
      leasefs_move_extent m{0, static_cast<uint32_t>(bad.get()), 0, 0, 4, 0};
      KSYS(k, ioctl(orig.get(), LEASEFS_EXT4_IOC_MOVE_EXT, &m), "EINVAL");
      m.donor_fd = static_cast<uint32_t>(donor.get());
      KSYS(k, ioctl(orig.get(), LEASEFS_EXT4_IOC_MOVE_EXT, &m), "OK");
      KEQ(k, std::to_string(m.moved_len), "4");
    });
    // The original's bytes did not change: it keeps its privileges.
    CHECK(ModeOf(fs.path("orig")) == 06777);
    CHECK(CapState(fs.path("orig")) == "OK");
    CHECK(Diff(ReadFile(fs.path("orig")), data) == "");
    CHECK(ModeOf(fs.path("suid-donor")) == 04777);
  }

  TEST_CASE("Privs: EXT4_IOC_MOVE_EXT drops the donor's capability (leasefs's rule)") {
    TestFs fs;
    LEASEFS_ONLY(fs, "ext4 keeps the donor's capability; leasefs puts the original's bytes there");
    const std::string data = Pattern(kSize, 6);
    MakePlain(fs.path("orig"), data, 0666);
    MakePrivileged(fs.path("donor"), Pattern(kSize, 7), 0777);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd orig(open(fs.path("orig").c_str(), O_RDWR));
      Fd donor(open(fs.path("donor").c_str(), O_WRONLY));
      leasefs_move_extent m{0, static_cast<uint32_t>(donor.get()), 0, 0, 4, 0};
      KSYS(k, ioctl(orig.get(), LEASEFS_EXT4_IOC_MOVE_EXT, &m), "OK");
    });
    CHECK(CapState(fs.path("donor")) == "ENODATA");
    CHECK(ModeOf(fs.path("donor")) == 0777);
    CHECK(Diff(ReadFile(fs.path("orig")), data) == "");
  }

  TEST_CASE("Exec: others run an execute-only program (0711) but cannot read it") {
    TestFs fs;
    bool ok = false;
    const std::string prog = ReadFile("/bin/true", &ok);
    REQUIRE(ok);
    REQUIRE(WriteFile(fs.path("true"), prog, 0755) == "");
    REQUIRE(chmod(fs.path("true").c_str(), 0711) == 0);
    REQUIRE(WriteFile(fs.path("private"), prog, 0700) == "");
    auto run = [](const std::string& path) {
      const pid_t pid = fork();
      if (pid == 0) {
        char* const argv[] = {const_cast<char*>(path.c_str()), nullptr};
        execv(path.c_str(), argv);
        _exit(errno == EACCES ? 126 : 127);
      }
      int status = 0;
      if (pid < 0 || waitpid(pid, &status, 0) != pid) return std::string("fork/wait failed");
      return WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : "signaled";
    };
    // Without default_permissions nothing would stop whoever runs it from
    // reading its memory, so there an exec needs read permission too.
    const std::string others_run = DaemonChecksAlone(fs) ? "exit 126" : "exit 0";
    CHECK_AS(kBob, kBobGid, {}, [&](ChildChecks& k) {
      KEQ(k, run(fs.path("true")), others_run);
      KSYS(k, open(fs.path("true").c_str(), O_RDONLY), "EACCES");
      KSYS(k, open(fs.path("true").c_str(), O_RDWR), "EACCES");
      KSYS(k, access(fs.path("true").c_str(), X_OK), "OK");
      KSYS(k, access(fs.path("true").c_str(), R_OK), "EACCES");
      KEQ(k, run(fs.path("private")), "exit 126");
    });
    CHECK(run(fs.path("true")) == "exit 0");
  }
}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::testing
