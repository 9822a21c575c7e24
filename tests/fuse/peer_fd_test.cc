// Descriptors that name a second file (include/leasefs/ioctl.h): what an
// unprivileged caller on a shared (allow_other) mount can make the daemon do
// with the clone source and the move donor it names by number.
//
// A descriptor carries the rights it was opened with, as on Linux: a caller
// that holds a file open for reading (inherited from root, say) may clone
// from it, though it could not open the file itself. What must never work is
// a descriptor that carries no right to read (O_PATH, O_WRONLY) lending its
// file's bytes to the caller, whatever another thread does to the number.
#include <fcntl.h>
#include <sys/wait.h>
#include <signal.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr size_t B = 4096;
constexpr uid_t kAlice = 1000, kNobody = 65534;
constexpr gid_t kAliceGid = 1000, kNogroup = 65534;

std::string Clone(int dst, int64_t src, uint64_t so, uint64_t len, uint64_t dof) {
  leasefs_clone_range c{src, so, len, dof};
  return SYS(ioctl(dst, LEASEFS_IOC_CLONE_RANGE, &c));
}

std::string MoveExt(int orig, uint32_t donor, uint64_t orig_start, uint64_t donor_start,
                    uint64_t len) {
  leasefs_move_extent m{0, donor, orig_start, donor_start, len, 0};
  return SYS(ioctl(orig, LEASEFS_EXT4_IOC_MOVE_EXT, &m));
}

// The file root owns with mode 0600: nobody else may open it.
std::string MakeSecret(TestFs& fs, const std::string& data) {
  const std::string p = fs.path("secret");
  REQUIRE(WriteFile(p, data, 0600) == "");
  REQUIRE(chmod(p.c_str(), 0600) == 0);
  return p;
}

void MakePublicDir(TestFs& fs) {
  REQUIRE(mkdir(fs.path("pub").c_str(), 0777) == 0);
  REQUIRE(chmod(fs.path("pub").c_str(), 0777) == 0);
}

// bindfs, for a FUSE mount of a user's own: ./dev installs it, so a missing
// one is a broken setup, not a reason to pass.
std::string Bindfs() {
  const std::string path = "/usr/bin/bindfs";
  REQUIRE_MESSAGE(access(path.c_str(), X_OK) == 0, path << " is missing (./dev deps installs it)");
  return path;
}

// Descriptors that root opens and the unprivileged child inherits: the
// secret in three modes, fs's root directory, a file and a directory on
// tmpfs (the file at `tmpfs_path`, which the caller deletes), a file on a
// second leasefs mount, a socket and a pipe.
struct Inherited {
  Fd secret_path, secret_wo, secret_ro, dir, tmpfs_file, tmpfs_dir, other_mount, sock[2], pipe[2];
};

Inherited OpenInherited(const std::string& secret, TestFs& fs, TestFs& other,
                        const std::string& tmpfs_path) {
  Inherited r;
  r.secret_path = Fd(open(secret.c_str(), O_PATH));
  r.secret_wo = Fd(open(secret.c_str(), O_WRONLY));
  r.secret_ro = Fd(open(secret.c_str(), O_RDONLY));
  r.dir = Fd(open(fs.root().c_str(), O_RDONLY | O_DIRECTORY));
  r.tmpfs_file = Fd(open(tmpfs_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600));
  REQUIRE(PwriteAll(r.tmpfs_file.get(), Pattern(4 * B, 8), 0) == "");
  r.tmpfs_dir = Fd(open("/dev/shm", O_RDONLY | O_DIRECTORY));
  r.other_mount = Fd(open(other.path("f").c_str(), O_RDWR | O_CREAT, 0600));
  REQUIRE(PwriteAll(r.other_mount.get(), Pattern(4 * B, 9), 0) == "");
  int sv[2], pv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  REQUIRE(pipe(pv) == 0);
  r.sock[0] = Fd(sv[0]), r.sock[1] = Fd(sv[1]);
  r.pipe[0] = Fd(pv[0]), r.pipe[1] = Fd(pv[1]);
  return r;
}

TEST_SUITE("fuse.peer_fd") {
  TEST_CASE("regression: an O_PATH clone source does not read a file its caller may not") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    const std::string secret = MakeSecret(fs, "TOP SECRET\n");
    MakePublicDir(fs);
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KSYS(k, open(secret.c_str(), O_RDONLY), "EACCES");
      Fd src(open(secret.c_str(), O_PATH));
      KTRUE(k, src.ok());
      Fd dst(open(fs.path("pub/mine").c_str(), O_RDWR | O_CREAT, 0644));
      KTRUE(k, dst.ok());
      KEQ(k, Clone(dst.get(), src.get(), 0, 0, 0), "EBADF");
      KEQ(k, PreadAll(dst.get(), 100, 0), "");
    });
    CHECK(ReadFile(fs.path("pub/mine")) == "");
  }

  TEST_CASE("every descriptor a command may not use gets the kernel's errno") {
    TestFs fs, other;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    const std::string secret_data = Pattern(4 * B, 7);
    const std::string secret = MakeSecret(fs, secret_data);
    MakePublicDir(fs);
    const std::string tmpfs_path = "/dev/shm/leasefs-peer-fd-test";
    Inherited in = OpenInherited(secret, fs, other, tmpfs_path);
    const int closed = 900;  // not open in the child
    const std::string mine = Pattern(4 * B, 10);

    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd dst(open(fs.path("pub/dst").c_str(), O_RDWR | O_CREAT, 0644));
      KEQ(k, PwriteAll(dst.get(), mine, 0), "");
      Fd own_path(open(fs.path("pub/dst").c_str(), O_PATH));
      // The clone source.
      KEQ(k, Clone(dst.get(), in.secret_path.get(), 0, B, 0), "EBADF");
      KEQ(k, Clone(dst.get(), own_path.get(), 0, B, 0), "EBADF");  // O_PATH, even if readable
      KEQ(k, Clone(dst.get(), in.secret_wo.get(), 0, B, 0), "EBADF");
      KEQ(k, Clone(dst.get(), closed, 0, B, 0), "EBADF");
      KEQ(k, Clone(dst.get(), int64_t{1} << 32, 0, B, 0), "EBADF");
      KEQ(k, Clone(dst.get(), in.tmpfs_file.get(), 0, B, 0), "EXDEV");
      KEQ(k, Clone(dst.get(), in.other_mount.get(), 0, B, 0), "EXDEV");
      KEQ(k, Clone(dst.get(), in.dir.get(), 0, B, 0), "EISDIR");
      KEQ(k, Clone(dst.get(), in.tmpfs_dir.get(), 0, B, 0), "EXDEV");
      KEQ(k, Clone(dst.get(), in.sock[0].get(), 0, B, 0), "EXDEV");
      KEQ(k, Clone(dst.get(), in.pipe[0].get(), 0, B, 0), "EXDEV");
      KEQ(k, Diff(PreadAll(dst.get(), 5 * B, 0), mine), "");
      // The destination: open for writing and not O_APPEND, as FICLONERANGE.
      Fd dst_ro(open(fs.path("pub/dst").c_str(), O_RDONLY));
      Fd dst_append(open(fs.path("pub/dst").c_str(), O_WRONLY | O_APPEND));
      Fd own(open(fs.path("pub/dst").c_str(), O_RDONLY));
      KEQ(k, Clone(dst_ro.get(), own.get(), 0, B, B), "EBADF");
      KEQ(k, Clone(dst_append.get(), own.get(), 0, B, B), "EBADF");
      KEQ(k, Diff(PreadAll(dst.get(), 5 * B, 0), mine), "");
      // A descriptor open for reading carries the right to read, as on Linux.
      KEQ(k, Clone(dst.get(), in.secret_ro.get(), 0, B, 0), "OK");
      KEQ(k, Diff(PreadAll(dst.get(), B, 0), secret_data.substr(0, B)), "");
      // A request names the calling thread, not the process: a thread other
      // than the main one is served the same.
      std::string from_thread;
      std::thread([&] { from_thread = Clone(dst.get(), own.get(), B, B, 2 * B); }).join();
      KEQ(k, from_thread, "OK");
      KEQ(k, Diff(PreadAll(dst.get(), B, 2 * B), mine.substr(B, B)), "");
    });
    unlink(tmpfs_path.c_str());
  }

  TEST_CASE("move-extent donors: open for writing, on this mount, regular") {
    TestFs fs, other;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    const std::string secret_data = Pattern(4 * B, 11);
    const std::string secret = MakeSecret(fs, secret_data);
    MakePublicDir(fs);
    const std::string tmpfs_path = "/dev/shm/leasefs-peer-fd-donor";
    Inherited in = OpenInherited(secret, fs, other, tmpfs_path);
    // Not block-aligned: the tail of its last block must not pick up the
    // donor's bytes.
    const std::string mine = Pattern(B + 100, 13);

    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd orig(open(fs.path("pub/orig").c_str(), O_RDWR | O_CREAT, 0644));
      KEQ(k, PwriteAll(orig.get(), mine, 0), "");
      auto donor = [](const Fd& f) { return static_cast<uint32_t>(f.get()); };
      KEQ(k, MoveExt(orig.get(), donor(in.secret_path), 0, 0, 2), "EBADF");
      KEQ(k, MoveExt(orig.get(), donor(in.secret_ro), 0, 0, 2), "EBADF");
      KEQ(k, MoveExt(orig.get(), 900, 0, 0, 2), "EBADF");
      KEQ(k, MoveExt(orig.get(), 0x80000000u, 0, 0, 2), "EBADF");
      KEQ(k, MoveExt(orig.get(), donor(in.dir), 0, 0, 2), "EBADF");  // not writable
      KEQ(k, MoveExt(orig.get(), donor(in.pipe[0]), 0, 0, 2), "EBADF");
      KEQ(k, MoveExt(orig.get(), donor(in.pipe[1]), 0, 0, 2), "EXDEV");
      KEQ(k, MoveExt(orig.get(), donor(in.sock[0]), 0, 0, 2), "EXDEV");
      KEQ(k, MoveExt(orig.get(), donor(in.tmpfs_file), 0, 0, 2), "EXDEV");
      KEQ(k, MoveExt(orig.get(), donor(in.other_mount), 0, 0, 2), "EXDEV");
      Fd orig_ro(open(fs.path("pub/orig").c_str(), O_RDONLY));
      KEQ(k, MoveExt(orig_ro.get(), donor(in.secret_wo), 0, 0, 2), "EBADF");
      KEQ(k, Diff(PreadAll(orig.get(), 3 * B, 0), mine), "");
      // A donor open for writing may be used, as on ext4; the original keeps
      // its bytes, and no byte of the donor shows through its last block.
      KEQ(k, MoveExt(orig.get(), donor(in.secret_wo), 0, 0, 2), "OK");
      KEQ(k, Diff(PreadAll(orig.get(), 3 * B, 0), mine), "");
      KSYS(k, ftruncate(orig.get(), 2 * B), "OK");
      KEQ(k, Diff(PreadAll(orig.get(), 3 * B, 0), mine + std::string(B - 100, '\0')), "");
    });
    unlink(tmpfs_path.c_str());
  }

  TEST_CASE("race: swapping the named number never lends an unreadable file") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    const std::string secret = MakeSecret(fs, std::string(B, 'S'));
    MakePublicDir(fs);
    const std::string pub(B, 'p');
    constexpr int kRounds = 100000;
    CHECK_AS(kNobody, kNogroup, {}, [&](ChildChecks& k) {
      KEQ(k, WriteFile(fs.path("pub/public"), pub), "");
      Fd readable(open(fs.path("pub/public").c_str(), O_RDONLY));
      Fd secret_path(open(secret.c_str(), O_PATH));
      Fd dst(open(fs.path("pub/dst").c_str(), O_RDWR | O_CREAT, 0644));
      KTRUE(k, readable.ok() && secret_path.ok() && dst.ok());
      constexpr int kNamed = 700;
      std::atomic<bool> stop{false};
      std::thread swapper([&] {
        while (!stop.load(std::memory_order_relaxed)) {
          dup2(readable.get(), kNamed);
          dup2(secret_path.get(), kNamed);
        }
      });
      int ok = 0, ebadf = 0;
      std::string other;
      for (int i = 0; i < kRounds && other.empty(); ++i) {
        const std::string rc = Clone(dst.get(), kNamed, 0, B, 0);
        if (rc == "EBADF") {
          ++ebadf;
        } else if (rc != "OK") {
          other = "clone gave " + rc;
        } else if (++ok, PreadAll(dst.get(), B, 0) != pub) {
          other = "the destination holds bytes that are not the public file's";
        }
      }
      stop = true;
      swapper.join();
      KEQ(k, other, "");
      std::fprintf(stderr, "race: %d clones OK, %d EBADF\n", ok, ebadf);
      KTRUE(k, ok > 0);
      KTRUE(k, ebadf > 0);
      KTRUE(k, ok + ebadf == kRounds);
    });
  }

  TEST_CASE("another user's FUSE mount stacked on the mount point is not this filesystem") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    const std::string bindfs = Bindfs();
    // Whoever may write the root may mount on it (fusermount3's rule). The
    // daemon looks its own mount up in mountinfo when a command first names
    // a descriptor; the mount on top is then the user's, and taking its
    // device for ours would make every file of ours EXDEV for good (and, with
    // user_allow_other, let the user's files name any inode of ours).
    REQUIRE(chmod(fs.root().c_str(), 0777) == 0);
    const std::string under = "/dev/shm/leasefs-peer-fd-stack";
    REQUIRE((mkdir(under.c_str(), 0755) == 0 || errno == EEXIST));
    REQUIRE(chown(under.c_str(), kAlice, kAliceGid) == 0);
    const std::string data = Pattern(B, 15);
    REQUIRE(WriteFile(fs.path("src"), data, 0644) == "");
    Fd tmpfs_dir(open("/dev/shm", O_RDONLY | O_DIRECTORY));
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd dst(open(fs.path("dst").c_str(), O_RDWR | O_CREAT, 0644));
      Fd src(open(fs.path("src").c_str(), O_RDONLY));
      KTRUE(k, dst.ok() && src.ok());
      // fusermount3 mounts only on an empty directory: the files stay open.
      KSYS(k, unlink(fs.path("dst").c_str()), "OK");
      KSYS(k, unlink(fs.path("src").c_str()), "OK");
      const ProcessResult stacked = Run({bindfs, "--no-allow-other", under, fs.root()});
      KEQ(k, std::to_string(stacked.exit_code) + " " + stacked.output, "0 ");
      KEQ(k, Clone(dst.get(), tmpfs_dir.get(), 0, B, 0), "EXDEV");
      const ProcessResult unstacked = Run({"/bin/fusermount3", "-u", fs.root()});
      KEQ(k, std::to_string(unstacked.exit_code) + " " + unstacked.output, "0 ");
      KEQ(k, Clone(dst.get(), src.get(), 0, B, 0), "OK");
      KEQ(k, Diff(PreadAll(dst.get(), B, 0), data), "");
    });
    // If the child stopped before unmounting bindfs, do it here.
    std::ifstream mounts("/proc/self/mounts");
    for (std::string source, target, rest; mounts >> source >> target && std::getline(mounts, rest);)
      if (source == under && target == fs.root()) umount2(fs.root().c_str(), MNT_DETACH);
    rmdir(under.c_str());
  }

  TEST_CASE("files of a FUSE mount that never answers cannot use up the daemon") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs ioctls");
    const std::string bindfs = Bindfs();
    // Alice's own FUSE mount (bindfs), which she then stops: closing any
    // duplicate of its files waits for a FLUSH nobody answers. Each file she
    // names leaves the daemon one such close; past a few, she is refused
    // (EAGAIN) before the daemon takes another, and nobody else is affected.
    char top[] = "/dev/shm/leasefs-peer-fd-slow-XXXXXX";
    REQUIRE(mkdtemp(top) != nullptr);
    const std::string src = std::string(top) + "/src", mnt = std::string(top) + "/mnt";
    REQUIRE(chmod(top, 0755) == 0);
    for (const std::string& d : {src, mnt}) {
      REQUIRE(mkdir(d.c_str(), 0755) == 0);
      REQUIRE(chown(d.c_str(), kAlice, kAliceGid) == 0);
    }
    REQUIRE(WriteFile(src + "/f", "slow", 0666) == "");
    const pid_t slow = fork();
    if (slow == 0) {
      if (setgroups(0, nullptr) != 0 || setgid(kAliceGid) != 0 || setuid(kAlice) != 0) _exit(126);
      execl(bindfs.c_str(), bindfs.c_str(), "-f", "--no-allow-other", src.c_str(), mnt.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    REQUIRE(slow > 0);
    auto mounted = [&] {
      std::ifstream mounts("/proc/self/mounts");
      for (std::string source, target, rest; mounts >> source >> target && std::getline(mounts, rest);)
        if (target == mnt) return true;
      return false;
    };
    for (int i = 0; i < 500 && !mounted(); ++i) usleep(10000);
    REQUIRE(mounted());
    const std::string tmpfs_path = std::string(top) + "/tmp";
    Fd tmpfs_file(open(tmpfs_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
    REQUIRE(WriteFile(fs.path("dst"), "", 0666) == "");
    REQUIRE(chmod(fs.path("dst").c_str(), 0666) == 0);
    constexpr int kAllowed = 16;  // Closer::kMaxPendingPerUser
    // Root's clone, run on request while Alice's closes are stuck.
    int go[2], result[2];
    REQUIRE(pipe(go) == 0);
    REQUIRE(pipe(result) == 0);
    const pid_t root_caller = fork();
    if (root_caller == 0) {
      close(go[1]);  // so that a child that never asks ends this one
      char c = 0;
      if (read(go[0], &c, 1) != 1) _exit(1);
      Fd dst(open(fs.path("dst").c_str(), O_RDWR));
      const std::string rc = Clone(dst.get(), tmpfs_file.get(), 0, B, 0);
      _exit(write(result[1], rc.data(), rc.size()) == static_cast<ssize_t>(rc.size()) ? 0 : 1);
    }
    REQUIRE(root_caller > 0);
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd dst(open(fs.path("dst").c_str(), O_RDWR));
      std::vector<Fd> slow_files;
      for (int i = 0; i <= kAllowed; ++i) slow_files.emplace_back(open((mnt + "/f").c_str(), O_RDONLY));
      KTRUE(k, dst.ok() && slow_files.back().ok());
      KSYS(k, kill(slow, SIGSTOP), "OK");
      for (int i = 0; i < kAllowed; ++i) KEQ(k, Clone(dst.get(), slow_files[i].get(), 0, B, 0), "EXDEV");
      KEQ(k, Clone(dst.get(), slow_files[kAllowed].get(), 0, B, 0), "EAGAIN");
      KEQ(k, Clone(dst.get(), tmpfs_file.get(), 0, B, 0), "EAGAIN");
      // Another user is not affected.
      KTRUE(k, write(go[1], "x", 1) == 1);
      char buf[16] = {};
      const ssize_t n = read(result[0], buf, sizeof buf);
      KEQ(k, std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "EXDEV");
      // Once the filesystem answers again, the closes finish and Alice is
      // served as before (her own closes of its files need it too).
      KSYS(k, kill(slow, SIGCONT), "OK");
      std::string rc = "EAGAIN";
      for (int i = 0; i < 1000 && rc == "EAGAIN"; ++i) {
        rc = Clone(dst.get(), tmpfs_file.get(), 0, B, 0);
        if (rc == "EAGAIN") usleep(10000);
      }
      KEQ(k, rc, "EXDEV");
    });
    kill(slow, SIGCONT);
    close(go[1]);
    waitpid(root_caller, nullptr, 0);
    for (int f : {go[0], result[0], result[1]}) close(f);
    Run({"/bin/fusermount3", "-u", mnt});
    if (mounted()) umount2(mnt.c_str(), MNT_DETACH);
    kill(slow, SIGKILL);
    waitpid(slow, nullptr, 0);
    unlink((src + "/f").c_str());
    rmdir(src.c_str());
    rmdir(mnt.c_str());
    unlink(tmpfs_path.c_str());
    rmdir(top);
  }

  TEST_CASE("a daemon that may not take the caller's descriptors refuses and says why") {
    if (ReferenceMode()) return;
    MountOptions o;
    o.options = "";  // an unprivileged daemon mounts without allow_other
    o.daemon_uid = kAlice;
    TestMount m(o);
    // Yama (when present and not 0) stops even a same-user daemon.
    int yama = 0;
    std::ifstream("/proc/sys/kernel/yama/ptrace_scope") >> yama;
    const std::string same_user = yama == 0 ? "OK" : "EPERM";
    CHECK_AS(kAlice, kAliceGid, {}, [&](ChildChecks& k) {
      Fd a(open(m.path("a").c_str(), O_RDWR | O_CREAT, 0644));
      Fd b(open(m.path("b").c_str(), O_RDWR | O_CREAT, 0644));
      KEQ(k, PwriteAll(a.get(), Pattern(B, 14), 0), "");
      // setuid() left this child not dumpable; a process of the user's own
      // (a shell's child, say) is.
      KSYS(k, prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "OK");
      KEQ(k, Clone(b.get(), a.get(), 0, B, 0), same_user);
      // A caller that is not dumpable cannot be ptraced by an unprivileged
      // process: the daemon must refuse, not fall back to something weaker.
      KSYS(k, prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "OK");
      KEQ(k, Clone(b.get(), a.get(), 0, B, B), "EPERM");
      KEQ(k, Diff(PreadAll(b.get(), 3 * B, 0),
                  same_user == "OK" ? Pattern(B, 14) : std::string()),
          "");
    });
    const std::string log = m.DaemonLog();
    CHECK_MESSAGE(log.find("may not ptrace the caller") != std::string::npos, log);
  }
}

}  // namespace
}  // namespace leasefs::testing
