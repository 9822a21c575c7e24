// leasefs through mount(8): `mount -t fuse.leasefs POOL MNT` and `mount -o
// remount,... MNT`, which util-linux hands to mount.fuse3, which runs
// `leasefs POOL MNT -o remount,...` through /bin/sh (docs/mount.md).
//
// mount(8) drops PATH before it runs its helper, so the shell finds
// `leasefs` only in its default path (/usr/local/sbin, /usr/local/bin, ...).
// This binary runs in a mount namespace of its own, in which a directory
// holding `leasefs` (the build's) is bind-mounted over /usr/local/sbin (or
// /usr/local/bin): nothing outside the test sees it. Skipped (77) without
// root, /dev/fuse, mount(8) or mount.fuse3 (LEASEFS_TEST_NEEDS).
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

const char* const kMount = "/bin/mount";

// Waits until no daemon holds the pool (it has marked it clean and exited).
bool WaitPoolFree(const std::string& pool) {
  Fd fd(open(pool.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.ok()) return false;
  for (int i = 0; i < 2000; ++i) {
    if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      flock(fd.get(), LOCK_UN);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Puts the build's leasefs where /bin/sh looks when PATH is unset, in a mount
// namespace of this process's own: a temporary directory holding a link to
// it, bind-mounted over /usr/local/sbin (or /usr/local/bin). Returns "" or
// why it cannot; *dir gets the temporary directory, to remove at the end.
std::string PutLeasefsOnDefaultPath(std::string* dir) {
  char real[PATH_MAX];
  if (realpath(LeasefsBin().c_str(), real) == nullptr) return "no leasefs binary";
  std::string target;
  for (const char* d : {"/usr/local/sbin", "/usr/local/bin"}) {
    struct stat st {};
    if (stat(d, &st) == 0 && S_ISDIR(st.st_mode)) {
      target = d;
      break;
    }
  }
  if (target.empty()) return "neither /usr/local/sbin nor /usr/local/bin exists";
  if (unshare(CLONE_NEWNS) != 0) return "unshare(CLONE_NEWNS): " + ErrnoName(errno);
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return "making / private: " + ErrnoName(errno);
  char tmpl[] = "/tmp/leasefs-path-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return "mkdtemp: " + ErrnoName(errno);
  *dir = tmpl;
  // Every user's shell must reach it (uid 65534 runs mount(8) too).
  if (chmod(dir->c_str(), 0755) != 0) return "chmod: " + ErrnoName(errno);
  if (symlink(real, (*dir + "/leasefs").c_str()) != 0) return "symlink: " + ErrnoName(errno);
  if (mount(dir->c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0)
    return "bind mount on " + target + ": " + ErrnoName(errno);
  return "";
}

void RemoveDir(const std::string& dir) {
  if (dir.empty()) return;
  unlink((dir + "/leasefs").c_str());
  rmdir(dir.c_str());
}

// Sets the namespace up once, before the first mount: every test needs it,
// and unshare(CLONE_NEWNS) needs the process single-threaded (it is, between
// tests). A failure fails each test with the reason.
const std::string& DefaultPathSetup() {
  static std::string dir;
  static const std::string why = [] {
    std::string w = PutLeasefsOnDefaultPath(&dir);
    std::atexit([] { RemoveDir(dir); });  // its bind mount ends with the namespace
    return w;
  }();
  return why;
}

// A pool formatted by TestMount (whose own daemon is then unmounted) and
// mounted with `mount -t fuse.leasefs`; unmounted with umount(8) at the end.
class Mount8 {
  // Before the pool and its first daemon.
  struct OnPath {
    OnPath() { REQUIRE_MESSAGE(DefaultPathSetup().empty(), DefaultPathSetup()); }
  };

 public:
  explicit Mount8(const std::string& options = "allow_other,nosuid,nodev") {
    REQUIRE(m_.Unmount() == 0);
    const ProcessResult r = Run({kMount, "-t", "fuse.leasefs", "-o", options, pool(), mnt()});
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    mounted_ = true;
  }
  ~Mount8() {
    if (mounted_) Unmount();
  }
  Mount8(const Mount8&) = delete;
  Mount8& operator=(const Mount8&) = delete;

  const std::string& mnt() const { return m_.mnt(); }
  const std::string& pool() const { return m_.pool(); }
  std::string path(const std::string& rel) const { return m_.path(rel); }
  // umount(8), then waits for the daemon to let go of the pool. Returns
  // umount's output ("" when it worked) and whether the daemon let go.
  std::string Unmount() {
    mounted_ = false;
    const ProcessResult r = Run({"/bin/umount", mnt()});
    std::string out = r.exit_code == 0 ? "" : "umount: " + r.output;
    if (!WaitPoolFree(pool())) out += "the daemon kept the pool";
    return out;
  }
  ProcessResult Fsck() const { return m_.Fsck(); }

 private:
  OnPath on_path_;
  TestMount m_;
  bool mounted_ = false;
};

// `mount -o OPTIONS MNT`, as root.
ProcessResult Remount(const Mount8& m, const std::string& options) {
  return Run({kMount, "-o", options, m.mnt()});
}

// The mount at `mnt` as /proc/self/mountinfo shows it: the mount point's
// options and the superblock's ("ro,nosuid,nodev,relatime", "ro,user_id=0,...").
struct MountLine {
  std::string mount_options;
  std::string super_options;
};
MountLine MountInfo(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  MountLine found;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point, opts;
    f >> id >> parent >> dev >> root >> point >> opts;
    if (point != mnt) continue;
    const size_t dash = line.find(" - ");
    std::istringstream rest(line.substr(dash + 3));
    std::string type, source, super;
    rest >> type >> source >> super;
    found = {opts, super};  // the last one is the top of the stack
  }
  return found;
}

// Runs argv as `uid` (group `uid`, no supplementary groups); output and
// exit code.
ProcessResult RunAsUser(uid_t uid, const std::vector<std::string>& argv) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    if (setgroups(0, nullptr) != 0 || setresgid(uid, uid, uid) != 0 ||
        setresuid(uid, uid, uid) != 0)
      _exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  ProcessResult r;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// LEASEFS_IOC_REMOUNT on the mount's root: the ioctl's errno (0 if it
// succeeded) and the daemon's answer in *out.
int RemountIoctl(const std::string& mnt, const std::string& options, uint32_t flags,
                 leasefs_remount* out) {
  Fd dir(open(mnt.c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(dir.ok());
  *out = {};
  out->flags = flags;
  std::snprintf(out->options, sizeof out->options, "%s", options.c_str());
  return ioctl(dir.get(), LEASEFS_IOC_REMOUNT, out) == 0 ? 0 : errno;
}

// Takes a lease on `fd` and asks for a DAX mapping of its first block:
// read-only under a READ lease, or (`writable`, fd open for writing) for
// stores under a WRITE lease. The ioctl's result as Err() text, and the map
// id in *map_id.
std::string DaxMapFirstBlock(int fd, uint64_t* map_id, bool writable = false) {
  leasefs_lease l{};
  l.type = writable ? LEASEFS_LEASE_WRITE : LEASEFS_LEASE_READ;
  REQUIRE(SYS(ioctl(fd, LEASEFS_IOC_SETLEASE, &l)) == "OK");
  auto m = std::make_unique<leasefs_dax_map>();
  m->offset = 0;
  m->length = 4096;
  m->flags = writable ? LEASEFS_DAX_WRITE : 0;
  const std::string rc = SYS(ioctl(fd, LEASEFS_IOC_DAX_MAP, m.get()));
  *map_id = m->map_id;
  return rc;
}

void DropLease(int fd) {
  leasefs_lease l{};
  l.type = LEASEFS_LEASE_UNLOCK;
  REQUIRE(SYS(ioctl(fd, LEASEFS_IOC_SETLEASE, &l)) == "OK");
}

std::string DaxUnmap(int fd, uint64_t map_id) {
  leasefs_dax_unmap u{};
  u.map_id = map_id;
  return SYS(ioctl(fd, LEASEFS_IOC_DAX_UNMAP, &u));
}

std::string Collapse(int fd) {
  leasefs_range r{};
  r.offset = 0;
  r.length = 4096;
  return SYS(ioctl(fd, LEASEFS_IOC_COLLAPSE_RANGE, &r));
}

int64_t AtimeNs(const std::string& path) { return Nanos(Stat(path).st_atim); }

// Sets atime before mtime, so that relatime (and strictatime) update it on
// the next read and noatime does not.
void OldAtime(const std::string& path) {
  struct timespec ts[2] = {{1'000'000'000, 0}, {1'500'000'000, 0}};
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), ts, 0) == 0);
}

TEST_CASE(
    "mount(8): remount,ro makes a leasefs mount read-only for the kernel and for its "
    "daemon, remount,rw makes it writable again, and the pool is clean after") {
  Mount8 m;
  REQUIRE(WriteFile(m.path("f"), std::string(8192, 'a')) == "");
  REQUIRE(mkdir(m.path("d").c_str(), 0755) == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");

  ProcessResult r = Remount(m, "remount,ro");
  CHECK(r.exit_code == 0);
  CHECK(r.output == "");
  const MountLine ro = MountInfo(m.mnt());
  CHECK(ro.mount_options == "ro,nosuid,nodev,relatime");
  CHECK(ro.super_options.rfind("ro,", 0) == 0);
  struct statvfs sv {};
  REQUIRE(statvfs(m.mnt().c_str(), &sv) == 0);
  CHECK((sv.f_flag & ST_RDONLY) != 0);

  // The VFS refuses every write...
  CHECK(SYS(open(m.path("f").c_str(), O_WRONLY)) == "EROFS");
  CHECK(SYS(open(m.path("new").c_str(), O_WRONLY | O_CREAT, 0644)) == "EROFS");
  CHECK(SYS(mkdir(m.path("d2").c_str(), 0755)) == "EROFS");
  CHECK(SYS(unlink(m.path("f").c_str())) == "EROFS");
  CHECK(SYS(rename(m.path("f").c_str(), m.path("g").c_str())) == "EROFS");
  CHECK(SYS(chmod(m.path("f").c_str(), 0600)) == "EROFS");
  CHECK(SYS(truncate(m.path("f").c_str(), 0)) == "EROFS");
  CHECK(SYS(setxattr(m.path("f").c_str(), "user.x", "1", 1, 0)) == "EROFS");
  CHECK(SYS(utimensat(AT_FDCWD, m.path("f").c_str(), nullptr, 0)) == "EROFS");
  // ...and reads work.
  CHECK(ReadFile(m.path("f")) == std::string(8192, 'a'));
  CHECK(ListDir(m.mnt()) == std::vector<std::string>{"d", "f"});
  // The leasefs ioctls reach the daemon whatever the kernel's flag: one
  // that needs a writable descriptor fails as fallocate(2) does (there is
  // none on a read-only mount), one that would write the pool gets EROFS.
  Fd rd(open(m.path("f").c_str(), O_RDONLY));
  REQUIRE(rd.ok());
  CHECK(Collapse(rd.get()) == "EBADF");
  uint64_t map_id = 0;
  CHECK(DaxMapFirstBlock(rd.get(), &map_id) == "EROFS");
  DropLease(rd.get());

  r = Remount(m, "remount,rw");
  CHECK(r.exit_code == 0);
  CHECK(r.output == "");
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
  CHECK(MountInfo(m.mnt()).super_options.rfind("rw,", 0) == 0);
  CHECK(WriteFile(m.path("f"), "after") == "");
  CHECK(ReadFile(m.path("f")) == "after");
  REQUIRE(mkdir(m.path("d2").c_str(), 0755) == 0);
  REQUIRE(WriteFile(m.path("f"), std::string(4096, 'b')) == "");
  CHECK(DaxMapFirstBlock(rd.get(), &map_id) == "OK");
  CHECK(DaxUnmap(rd.get(), map_id) == "OK");
  DropLease(rd.get());
  rd.Close();

  CHECK(m.Unmount() == "");
  const ProcessResult fsck = m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE(
    "remount: read-only is refused while a file is open for writing or mapped writably "
    "through DAX, and nothing changes; a read-only DAX mapping stays") {
  Mount8 m;
  REQUIRE(WriteFile(m.path("f"), std::string(4096, 'a')) == "");
  {
    Fd w(open(m.path("f").c_str(), O_WRONLY));
    REQUIRE(w.ok());
    const ProcessResult r = Remount(m, "remount,ro");
    CHECK(r.exit_code == 1);
    CHECK(r.output == "leasefs: cannot remount " + m.mnt() +
                          ": the kernel refused: Device or resource busy (a file is open for "
                          "writing?)\n");
    CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
    CHECK(PwriteAll(w.get(), "w", 0) == "");
  }
  // A mapping for stores outlives its descriptor; the kernel no longer
  // sees a writer, the daemon does.
  uint64_t write_map = 0;
  {
    Fd w(open(m.path("f").c_str(), O_RDWR));
    REQUIRE(w.ok());
    REQUIRE(DaxMapFirstBlock(w.get(), &write_map, /*writable=*/true) == "OK");
    DropLease(w.get());
  }
  Fd rd(open(m.path("f").c_str(), O_RDONLY));
  REQUIRE(rd.ok());
  ProcessResult r = Remount(m, "remount,ro");
  CHECK(r.exit_code == 1);
  CHECK(r.output == "leasefs: cannot remount " + m.mnt() +
                        ": 1 writable DAX mapping records are in use (mappings or pins; "
                        "`leasectl dax` lists them)\n");
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
  CHECK(WriteFile(m.path("g"), "still writable") == "");
  CHECK(DaxUnmap(rd.get(), write_map) == "OK");

  // A read-only mapping cannot store: it stays across ro and back, and
  // its record goes when it ends, read-only or not.
  uint64_t map_id = 0;
  REQUIRE(DaxMapFirstBlock(rd.get(), &map_id) == "OK");
  r = Remount(m, "remount,ro");
  CHECK(r.exit_code == 0);
  CHECK(r.output == "");
  CHECK(MountInfo(m.mnt()).mount_options == "ro,nosuid,nodev,relatime");
  CHECK(DaxUnmap(rd.get(), map_id) == "OK");
  CHECK(DaxUnmap(rd.get(), map_id) == "ENOENT");
  DropLease(rd.get());
  r = Remount(m, "remount,rw");
  CHECK(r.exit_code == 0);
  CHECK(DaxMapFirstBlock(rd.get(), &map_id) == "OK");
  r = Remount(m, "remount,ro");
  CHECK(r.exit_code == 0);
  CHECK(r.output == "");
  CHECK(DaxUnmap(rd.get(), map_id) == "OK");
  DropLease(rd.get());
  rd.Close();
  r = Remount(m, "remount,rw");  // clears the records that ended meanwhile
  CHECK(r.exit_code == 0);
  CHECK(m.Unmount() == "");
  const ProcessResult fsck = m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE(
    "remount: options a mounted leasefs cannot change are refused, naming them, and "
    "change nothing; those it has already pass") {
  Mount8 m;
  for (const char* opt : {"lease_break_time=5", "max_read=4096", "threads=200", "softnic=off",
                          "no_default_permissions", "mmap=private-only"}) {
    const ProcessResult r = Remount(m, std::string("remount,ro,") + opt);
    CHECK(r.exit_code == 1);
    CHECK(r.output == "leasefs: cannot remount " + m.mnt() + ": option '" + opt +
                          "' cannot be changed on a mounted leasefs (remount changes ro/rw and "
                          "the atime options): unmount and mount again\n");
    CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
    CHECK(WriteFile(m.path("f"), opt) == "");
  }
  // The values the mount has (lease_break_time's default is 45 s).
  const ProcessResult r = Remount(m, "remount,lease_break_time=45,allow_other,default_permissions");
  CHECK(r.exit_code == 0);
  CHECK(r.output == "");
  const ProcessResult bad = Remount(m, "remount,lease_break_time=x");
  CHECK(bad.exit_code == 1);
  CHECK(bad.output == "leasefs: bad option value 'lease_break_time=x'\n");
}

TEST_CASE("remount: the mount point's flags follow the options as mount(8) passes them") {
  Mount8 m;
  // mount(8) lists the mount's own options first: those not named stay.
  CHECK(Remount(m, "remount,noexec").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,noexec,relatime");
  CHECK(Remount(m, "remount,ro").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "ro,nosuid,nodev,noexec,relatime");
  CHECK(Remount(m, "remount,rw,exec,suid").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nodev,relatime");
  // Given the pool as well, mount(8) passes only the new options, and
  // mount.fuse3 adds dev and suid: as mount(2) takes them, the flags not
  // named are off.
  const ProcessResult r =
      Run({kMount, "-t", "fuse.leasefs", "-o", "remount,ro,noexec", m.pool(), m.mnt()});
  CHECK(r.exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "ro,noexec,relatime");
}

TEST_CASE("remount: the atime options change live") {
  Mount8 m;
  REQUIRE(WriteFile(m.path("f"), "x") == "");
  CHECK(Remount(m, "remount,noatime").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,noatime");
  OldAtime(m.path("f"));
  CHECK(ReadFile(m.path("f")) == "x");
  CHECK(AtimeNs(m.path("f")) == 1'000'000'000'000'000'000);

  CHECK(Remount(m, "remount,strictatime").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev");
  CHECK(ReadFile(m.path("f")) == "x");
  const int64_t read_once = AtimeNs(m.path("f"));
  CHECK(read_once > 1'500'000'000'000'000'000);
  TickClock();
  CHECK(ReadFile(m.path("f")) == "x");  // strictatime: every read
  CHECK(AtimeNs(m.path("f")) > read_once);

  CHECK(Remount(m, "remount,relatime").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
  const int64_t before = AtimeNs(m.path("f"));
  TickClock();
  CHECK(ReadFile(m.path("f")) == "x");  // relatime: atime is after mtime
  CHECK(AtimeNs(m.path("f")) == before);
}

TEST_CASE(
    "remount: refused to uid 65534, by mount(8)'s helper and by the daemon, and nothing "
    "changes") {
  Mount8 m;
  const std::string refused = "leasefs: cannot remount " + m.mnt() +
                              ": only root with CAP_SYS_ADMIN may remount it (Operation not "
                              "permitted)\n";
  ProcessResult r = RunAsUser(65534, {kMount, "-o", "remount,ro", m.mnt()});
  CHECK(r.exit_code != 0);
  CHECK(r.output == refused);
  r = RunAsUser(65534, {LeasefsBin(), m.pool(), m.mnt(), "-o", "remount,ro"});
  CHECK(r.exit_code == 1);
  CHECK(r.output == refused);
  // The ioctl itself, sent by the user.
  const std::string mnt = m.mnt();
  CHECK_AS(65534, 65534, {}, [&](ChildChecks& k) {
    leasefs_remount out{};
    KEQ(k, std::to_string(RemountIoctl(mnt, "ro", 0, &out)), std::to_string(EPERM));
    KEQ(k, std::to_string(RemountIoctl(mnt, "", LEASEFS_REMOUNT_DRY_RUN, &out)),
        std::to_string(EPERM));
  });
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
  CHECK(WriteFile(m.path("f"), "still writable") == "");
}

// The errno of LEASEFS_IOC_REMOUNT (a dry run to read-only) sent by root of
// a user namespace of its own, made in a child: uid 0 maps to uid 0, and
// it has every capability, in that namespace only. 0 if it was allowed.
int RemountIoctlFromUserNamespace(const std::string& mnt) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (unshare(CLONE_NEWUSER) != 0) _exit(200);
    const int map = open("/proc/self/uid_map", O_WRONLY);
    if (map < 0 || write(map, "0 0 1\n", 6) != 6) _exit(201);
    close(map);
    const int dir = open(mnt.c_str(), O_RDONLY | O_DIRECTORY);
    if (dir < 0) _exit(202);
    leasefs_remount out{};
    out.flags = LEASEFS_REMOUNT_DRY_RUN;
    std::snprintf(out.options, sizeof out.options, "ro");
    _exit(ioctl(dir, LEASEFS_IOC_REMOUNT, &out) == 0 ? 0 : errno);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

TEST_CASE("remount: refused to root of another user namespace, whose capabilities count there") {
  Mount8 m;
  CHECK(RemountIoctlFromUserNamespace(m.mnt()) == EPERM);
  leasefs_remount out{};
  CHECK(RemountIoctl(m.mnt(), "ro", LEASEFS_REMOUNT_DRY_RUN, &out) == 0);  // root here may
  CHECK(MountInfo(m.mnt()).mount_options == "rw,nosuid,nodev,relatime");
}

TEST_CASE(
    "remount: the daemon made read-only by the ioctl alone refuses writes and the leasefs "
    "ioctls that change files with EROFS") {
  // The kernel's flag stays rw here: this is the daemon's own refusal, which
  // covers what the VFS never checks (the leasefs ioctls).
  Mount8 m;
  REQUIRE(WriteFile(m.path("f"), std::string(8192, 'a')) == "");
  Fd rw(open(m.path("f").c_str(), O_RDWR));
  REQUIRE(rw.ok());
  leasefs_remount out{};
  REQUIRE(RemountIoctl(m.mnt(), "ro", LEASEFS_REMOUNT_DRY_RUN, &out) == 0);
  CHECK(out.error == 0);
  CHECK(out.before.read_only == 0);
  CHECK(out.after.read_only == 1);
  CHECK(PwriteAll(rw.get(), "dry run changed nothing", 0) == "");

  REQUIRE(RemountIoctl(m.mnt(), "ro", 0, &out) == 0);
  CHECK(out.error == 0);
  CHECK(out.before.read_only == 0);
  CHECK(out.after.read_only == 1);
  CHECK(out.after.atime == LEASEFS_ATIME_RELATIME);
  CHECK(SYS(pwrite(rw.get(), "x", 1, 0)) == "EROFS");
  CHECK(Collapse(rw.get()) == "EROFS");
  leasefs_defrag d{};
  CHECK(SYS(ioctl(rw.get(), LEASEFS_IOC_DEFRAG, &d)) == "EROFS");
  CHECK(SYS(ftruncate(rw.get(), 0)) == "EROFS");
  CHECK(SYS(mkdir(m.path("d").c_str(), 0755)) == "EROFS");
  CHECK(SYS(fsetxattr(rw.get(), "user.x", "1", 1, 0)) == "EROFS");
  CHECK(PreadAll(rw.get(), 23, 0) == "dry run changed nothing");

  REQUIRE(RemountIoctl(m.mnt(), "rw", 0, &out) == 0);
  CHECK(out.error == 0);
  CHECK(out.after.read_only == 0);
  CHECK(PwriteAll(rw.get(), "x", 0) == "");
  CHECK(Collapse(rw.get()) == "OK");

  // Malformed requests.
  Fd dir(open(m.mnt().c_str(), O_RDONLY | O_DIRECTORY));
  auto bad = std::make_unique<leasefs_remount>();
  bad->after.reserved = 1;
  CHECK(SYS(ioctl(dir.get(), LEASEFS_IOC_REMOUNT, bad.get())) == "EINVAL");
  *bad = {};
  std::memset(bad->options, 'a', sizeof bad->options);  // no NUL
  CHECK(SYS(ioctl(dir.get(), LEASEFS_IOC_REMOUNT, bad.get())) == "EINVAL");
  *bad = {};
  CHECK(SYS(ioctl(rw.get(), LEASEFS_IOC_REMOUNT, bad.get())) == "EINVAL");  // not the root
  rw.Close();
  dir.Close();
  CHECK(m.Unmount() == "");
  const ProcessResult fsck = m.Fsck();
  CHECK_MESSAGE(fsck.exit_code == 0, fsck.output);
}

TEST_CASE(
    "remount: a mount made with -o ro cannot become read-write; the reason is given and "
    "nothing changes") {
  Mount8 m("allow_other,ro");
  CHECK(MountInfo(m.mnt()).mount_options.rfind("ro,", 0) == 0);
  const ProcessResult r = Remount(m, "remount,rw");
  CHECK(r.exit_code == 1);
  CHECK(r.output == "leasefs: cannot remount " + m.mnt() +
                        ": the pool was mounted read-only (-o ro) and is mapped privately: "
                        "unmount it and mount it read-write\n");
  CHECK(MountInfo(m.mnt()).mount_options.rfind("ro,", 0) == 0);
  CHECK(SYS(mkdir(m.path("d").c_str(), 0755)) == "EROFS");
  // Changes it can make still work.
  CHECK(Remount(m, "remount,ro,noatime").exit_code == 0);
  CHECK(MountInfo(m.mnt()).mount_options.find("noatime") != std::string::npos);
}

}  // namespace
}  // namespace leasefs::testing
