// O_TMPFILE, linkat of an O_TMPFILE, renameat2's RENAME_WHITEOUT (and the
// errors of every flag combination), whiteouts by mknod, and statx's birth
// time, on a mounted leasefs, as root and as uid 65534. The calls no Debian
// tool makes go through leasefs-nsop (nsop.c), run as a child process; the
// birth time also through coreutils' stat. docs/namespace.md has the design.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <linux/fs.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

constexpr uid_t kNobody = 65534;

std::string Nsop() { return ToolPath("LEASEFS_NSOP_BIN", "leasefs-nsop"); }

// leasefs-nsop's output for `args` (exit code and output when it failed).
std::string NsopOut(const std::vector<std::string>& args) {
  std::vector<std::string> argv{Nsop()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = Run(argv);
  if (r.signaled() || r.exit_code != 0)
    return "exit " + std::to_string(r.exit_code) + ": " + r.output;
  return r.output;
}

// The same as uid/gid 65534; failures come back as text ("" if none).
std::string NsopAsNobody(const std::vector<std::string>& args, const std::string& want) {
  return AsUser(kNobody, kNobody, {},
                [&](ChildChecks& k) { KEQ(k, NsopOut(args), want); });
}

long Renameat2(const std::string& from, const std::string& to, unsigned flags) {
  return syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags);
}

bool IsWhiteout(const std::string& path) {
  const struct stat st = Lstat(path);
  return st.st_ino != 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

// statx's birth time of `path`, in ns; -1 if statx gave none.
int64_t Btime(const std::string& path) {
  struct statx sx {};
  if (statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &sx) != 0)
    return -2;
  if (!(sx.stx_mask & STATX_BTIME)) return -1;
  return int64_t{sx.stx_btime.tv_sec} * 1'000'000'000 + sx.stx_btime.tv_nsec;
}

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return Nanos(ts);
}

// A world-writable (1777 unless told) directory for the other user's tests.
std::string SharedDir(TestFs& fs, const std::string& name, mode_t mode = 01777) {
  const std::string d = fs.path(name);
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  REQUIRE(chmod(d.c_str(), mode) == 0);
  return d;
}

TEST_SUITE("fuse.tmpfile") {
  // --- O_TMPFILE ---------------------------------------------------------------

  TEST_CASE("O_TMPFILE: an unnamed file with nlink 0 that holds its bytes and shows in no directory") {
    TestFs fs;
    Fd fd(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0640));
    REQUIRE_MESSAGE(fd.ok(), ErrnoName(errno));
    REQUIRE(PwriteAll(fd.get(), "unnamed bytes", 0) == "");
    CHECK(PreadAll(fd.get(), 100, 0) == "unnamed bytes");
    struct stat st {};
    REQUIRE(fstat(fd.get(), &st) == 0);
    CHECK(st.st_nlink == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 0640);  // umask 022 leaves 0640 alone
    CHECK(st.st_size == 13);
    CHECK(ListDir(fs.root()).empty());
  }

  TEST_CASE("O_TMPFILE: the kernel's own rules: a directory is needed, and write access") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "") == "");
    CHECK(SYS(open(fs.path("f").c_str(), O_TMPFILE | O_RDWR, 0600)) == "ENOTDIR");
    CHECK(SYS(open(fs.root().c_str(), O_TMPFILE | O_RDONLY, 0600)) == "EINVAL");
    CHECK(SYS(open(fs.path("missing").c_str(), O_TMPFILE | O_RDWR, 0600)) == "ENOENT");
    // A removed directory still open takes one (as on ext4 and tmpfs), but
    // nothing can be linked into it.
    REQUIRE(mkdir(fs.path("gone").c_str(), 0755) == 0);
    Fd dir(open(fs.path("gone").c_str(), O_RDONLY | O_DIRECTORY));
    REQUIRE(dir.ok());
    REQUIRE(rmdir(fs.path("gone").c_str()) == 0);
    Fd tmp(openat(dir.get(), ".", O_TMPFILE | O_RDWR, 0600));
    REQUIRE_MESSAGE(tmp.ok(), ErrnoName(errno));
    CHECK(SYS(linkat(tmp.get(), "", dir.get(), "x", AT_EMPTY_PATH)) == "ENOENT");
  }

  TEST_CASE("O_TMPFILE: linkat(AT_EMPTY_PATH) names it in one step: nlink 1, same inode and bytes") {
    TestFs fs;
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    CHECK(NsopOut({"tmpfile", fs.path("d"), "mode=0644", "write=linked!", "nlink",
                   "link-empty=" + fs.path("d/name"), "nlink"}) ==
          "open OK\nwrite OK\nnlink 0\nlink OK\nnlink 1\n");
    CHECK(ReadFile(fs.path("d/name")) == "linked!");
    CHECK(Lstat(fs.path("d/name")).st_nlink == 1);
    CHECK((Lstat(fs.path("d/name")).st_mode & 07777) == 0644);
    CHECK(ListDir(fs.path("d")) == std::vector<std::string>{"name"});
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(ReadFile(fs.path("d/name")) == "linked!");
  }

  TEST_CASE("O_TMPFILE: linkat through /proc/self/fd works for root and for an ordinary user") {
    TestFs fs;
    const std::string d = SharedDir(fs, "shared");
    CHECK(NsopOut({"tmpfile", d, "write=root's", "link-proc=" + d + "/r"}) ==
          "open OK\nwrite OK\nlink OK\n");
    CHECK(NsopAsNobody({"tmpfile", d, "write=nobody's", "link-proc=" + d + "/n", "nlink"},
                       "open OK\nwrite OK\nlink OK\nnlink 1\n") == "");
    CHECK(ReadFile(d + "/r") == "root's");
    CHECK(ReadFile(d + "/n") == "nobody's");
    CHECK(Lstat(d + "/n").st_uid == kNobody);
    CHECK(Lstat(d + "/n").st_gid == kNobody);
  }

  TEST_CASE("O_TMPFILE: linkat(AT_EMPTY_PATH) by a user: its own open works, another's is ENOENT") {
    TestFs fs;
    const std::string d = SharedDir(fs, "shared");
    // Since Linux 6.10 the opener's own credentials are enough; before, and
    // for a descriptor opened by somebody else, only CAP_DAC_READ_SEARCH.
    CHECK(NsopAsNobody({"tmpfile", d, "mode=0666", "link-empty=" + d + "/mine"},
                       "open OK\nlink OK\n") == "");
    Fd roots(open(d.c_str(), O_TMPFILE | O_RDWR, 0666));
    REQUIRE(roots.ok());
    CHECK(AsUser(kNobody, kNobody, {}, [&](ChildChecks& k) {
            KSYS(k, linkat(roots.get(), "", AT_FDCWD, (d + "/theirs").c_str(), AT_EMPTY_PATH),
                 "ENOENT");
          }) == "");
    CHECK(ListDir(d) == std::vector<std::string>{"mine"});
    CHECK(Lstat(d + "/mine").st_uid == kNobody);
  }

  TEST_CASE("O_TMPFILE|O_EXCL: never linkable (ENOENT), by either way of linking") {
    TestFs fs;
    CHECK(NsopOut({"tmpfile", fs.root(), "excl", "write=x", "link-empty=" + fs.path("a"),
                   "link-proc=" + fs.path("b"), "nlink"}) ==
          "open OK\nwrite OK\nlink ENOENT\nlink ENOENT\nnlink 0\n");
    CHECK(ListDir(fs.root()).empty());
  }

  TEST_CASE("O_TMPFILE: a second link after the first works; once unlinked again it stays unnamed") {
    TestFs fs;
    CHECK(NsopOut({"tmpfile", fs.root(), "link-proc=" + fs.path("a"),
                   "link-proc=" + fs.path("b"), "nlink"}) == "open OK\nlink OK\nlink OK\nnlink 2\n");
    CHECK(Lstat(fs.path("a")).st_ino == Lstat(fs.path("b")).st_ino);
    // A named file that loses its names is an ordinary unlinked file: the
    // kernel (and the daemon) refuse to link it again.
    Fd fd(open(fs.path("a").c_str(), O_RDWR));
    REQUIRE(fd.ok());
    REQUIRE(unlink(fs.path("a").c_str()) == 0);
    REQUIRE(unlink(fs.path("b").c_str()) == 0);
    const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    CHECK(SYS(linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, fs.path("c").c_str(), AT_SYMLINK_FOLLOW)) ==
          "ENOENT");
  }

  TEST_CASE("O_TMPFILE: permissions: no write access to the directory is EACCES") {
    TestFs fs;
    const std::string ro = SharedDir(fs, "ro", 0755);
    CHECK(NsopAsNobody({"tmpfile", ro}, "open EACCES\n") == "");
    const std::string rw = SharedDir(fs, "rw");
    // ...and the target directory of the link is checked as for any link.
    CHECK(NsopAsNobody({"tmpfile", rw, "link-proc=" + ro + "/x"}, "open OK\nlink EACCES\n") == "");
  }

  TEST_CASE("O_TMPFILE: a setgid directory passes on its group") {
    TestFs fs;
    const std::string d = SharedDir(fs, "sg", 02777);
    REQUIRE(chown(d.c_str(), 0, 4242) == 0);
    REQUIRE(chmod(d.c_str(), 02777) == 0);
    CHECK(NsopAsNobody({"tmpfile", d, "link-proc=" + d + "/f"}, "open OK\nlink OK\n") == "");
    CHECK(Lstat(d + "/f").st_gid == 4242);
    CHECK(Lstat(d + "/f").st_uid == kNobody);
  }

  TEST_CASE("O_TMPFILE: write, link, rename over the old file: readers see old or new, whole") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("config"), "old contents") == "");
    const ino_t old_ino = Lstat(fs.path("config")).st_ino;
    CHECK(NsopOut({"tmpfile", fs.root(), "mode=0644", "write=new contents",
                   "link-proc=" + fs.path(".config.tmp"),
                   "rename-over=" + fs.path(".config.tmp") + ":" + fs.path("config")}) ==
          "open OK\nwrite OK\nlink OK\nrename OK\n");
    CHECK(ReadFile(fs.path("config")) == "new contents");
    CHECK(Lstat(fs.path("config")).st_ino != old_ino);
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"config"});
  }

  TEST_CASE("O_TMPFILE: an open file like any on leasefs: it takes a layout lease, named or not") {
    TestFs fs;
    LEASEFS_ONLY(fs, "leasefs's lease ioctl");
    Fd fd(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0600));
    REQUIRE(fd.ok());
    REQUIRE(PwriteAll(fd.get(), Pattern(64 << 10, 9), 0) == "");
    leasefs_lease l{};
    l.type = LEASEFS_LEASE_WRITE;
    CHECK(SYS(ioctl(fd.get(), LEASEFS_IOC_SETLEASE, &l)) == "OK");
    CHECK(l.id != 0);
    const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    REQUIRE(linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, fs.path("leased").c_str(), AT_SYMLINK_FOLLOW) ==
            0);
    // Another open file's exclusive lease conflicts with the one held.
    Fd other(open(fs.path("leased").c_str(), O_RDONLY));
    REQUIRE(other.ok());
    leasefs_lease r{};
    r.type = LEASEFS_LEASE_READ;
    r.flags = LEASEFS_LEASE_EXCLUSIVE | LEASEFS_LEASE_NONBLOCK;
    CHECK(SYS(ioctl(other.get(), LEASEFS_IOC_SETLEASE, &r)) == "EAGAIN");
    leasefs_lease u{};
    u.type = LEASEFS_LEASE_UNLOCK;
    CHECK(SYS(ioctl(fd.get(), LEASEFS_IOC_SETLEASE, &u)) == "OK");
    CHECK(ReadFile(fs.path("leased")) == Pattern(64 << 10, 9));
  }

  TEST_CASE("O_TMPFILE: closed without a name, it is freed at once (inodes and blocks back)") {
    TestFs fs;
    LEASEFS_ONLY(fs, "counts leasefs's own inodes");
    struct statvfs before {}, after {};
    REQUIRE(statvfs(fs.root().c_str(), &before) == 0);
    {
      Fd fd(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0600));
      REQUIRE(fd.ok());
      REQUIRE(PwriteAll(fd.get(), Pattern(1 << 20, 3), 0) == "");
    }
    // The kernel sends RELEASE and FORGET after close returns.
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(statvfs(fs.root().c_str(), &after) == 0);
      if (after.f_ffree == before.f_ffree && after.f_bfree == before.f_bfree) break;
      usleep(2000);
    }
    CHECK(after.f_ffree == before.f_ffree);
    CHECK(after.f_bfree == before.f_bfree);
  }

  TEST_CASE("O_TMPFILE: crash with it open and unnamed: the next mount reclaims it; linked, it stays") {
    TestFs fs;
    LEASEFS_ONLY(fs, "kills the daemon");
    Fd unnamed(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0600));
    REQUIRE(unnamed.ok());
    REQUIRE(PwriteAll(unnamed.get(), Pattern(300 << 10, 4), 0) == "");
    Fd named(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0600));
    REQUIRE(named.ok());
    REQUIRE(PwriteAll(named.get(), "kept", 0) == "");
    const std::string proc = "/proc/self/fd/" + std::to_string(named.get());
    REQUIRE(linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, fs.path("kept").c_str(), AT_SYMLINK_FOLLOW) ==
            0);
    fs.mount()->Kill();  // SIGKILL: both files still open
    unnamed.Close();
    named.Close();
    std::string out;
    REQUIRE(fs.mount()->Mount(&out));
    CHECK_MESSAGE(fs.mount()->DaemonLog().find(", 1 orphans reclaimed") != std::string::npos,
                  fs.mount()->DaemonLog());
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"kept"});
    CHECK(ReadFile(fs.path("kept")) == "kept");
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("O_TMPFILE: threads racing create, link and unlink leave a consistent pool") {
    TestFs fs;
    constexpr int kThreads = 4, kRounds = 40;
    std::vector<std::thread> threads;
    std::vector<std::string> errors(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kRounds && errors[t].empty(); ++i) {
          Fd fd(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0600));
          if (!fd.ok()) {
            errors[t] = "open " + ErrnoName(errno);
            break;
          }
          const std::string body = std::to_string(t) + ":" + std::to_string(i);
          if (PwriteAll(fd.get(), body, 0) != "") errors[t] = "write";
          const std::string name = fs.path("t" + std::to_string(t) + "_" + std::to_string(i % 3));
          const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
          unlink(name.c_str());  // the other rounds' file of that name, if any
          if (i % 2 == 0 && linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name.c_str(),
                                   AT_SYMLINK_FOLLOW) != 0)
            errors[t] = "link " + ErrnoName(errno);
          if (i % 2 == 0 && ReadFile(name) != body) errors[t] = "read back " + name;
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) CHECK_MESSAGE(errors[t] == "", "thread " << t);
    CHECK(fs.UnmountFsckRemount() == "");
  }

  // --- renameat2 ---------------------------------------------------------------

  TEST_CASE("RENAME_WHITEOUT: the file moves and a 0/0 character device is left at its old name") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "moved") == "");
    const ino_t ino = Lstat(fs.path("a")).st_ino;
    CHECK(NsopOut({"rename2", fs.path("a"), fs.path("b"), "whiteout"}) == "OK\n");
    CHECK(IsWhiteout(fs.path("a")));
    CHECK(Lstat(fs.path("a")).st_uid == 0);
    CHECK(Lstat(fs.path("b")).st_ino == ino);
    CHECK(ReadFile(fs.path("b")) == "moved");
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"a", "b"});
    CHECK(fs.UnmountFsckRemount() == "");
    CHECK(IsWhiteout(fs.path("a")));
  }

  TEST_CASE("RENAME_WHITEOUT: over an existing file, of a directory, and with NOREPLACE") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("a"), "new") == "");
    REQUIRE(WriteFile(fs.path("b"), "old") == "");
    CHECK(SYS(Renameat2(fs.path("a"), fs.path("b"), RENAME_WHITEOUT)) == "OK");
    CHECK(ReadFile(fs.path("b")) == "new");
    CHECK(IsWhiteout(fs.path("a")));
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("p").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("d/inner"), "i") == "");
    const nlink_t root_links = Lstat(fs.root()).st_nlink;
    CHECK(SYS(Renameat2(fs.path("d"), fs.path("p/d"), RENAME_WHITEOUT)) == "OK");
    CHECK(IsWhiteout(fs.path("d")));
    CHECK(ReadFile(fs.path("p/d/inner")) == "i");
    CHECK(Lstat(fs.root()).st_nlink == root_links - 1);  // the directory left; a whiteout is no subdir
    CHECK(Lstat(fs.path("p")).st_nlink == 3);
    // NOREPLACE with it: an existing target is EEXIST, and no whiteout appears.
    REQUIRE(WriteFile(fs.path("x"), "x") == "");
    CHECK(SYS(Renameat2(fs.path("x"), fs.path("b"), RENAME_NOREPLACE | RENAME_WHITEOUT)) ==
          "EEXIST");
    CHECK(S_ISREG(Lstat(fs.path("x")).st_mode));
    CHECK(SYS(Renameat2(fs.path("x"), fs.path("y"), RENAME_NOREPLACE | RENAME_WHITEOUT)) == "OK");
    CHECK(IsWhiteout(fs.path("x")));
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("renameat2: exact errors for bad flags and mixes") {
    TestFs fs;
    REQUIRE(WriteFile(fs.path("f"), "f") == "");
    REQUIRE(WriteFile(fs.path("g"), "g") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    REQUIRE(mkdir(fs.path("e").c_str(), 0755) == 0);
    REQUIRE(WriteFile(fs.path("e/full"), "") == "");
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("g"), RENAME_EXCHANGE | RENAME_WHITEOUT)) ==
          "EINVAL");
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("g"), RENAME_EXCHANGE | RENAME_NOREPLACE)) ==
          "EINVAL");
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("g"), 1u << 3)) == "EINVAL");
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("missing"), RENAME_EXCHANGE)) == "ENOENT");
    CHECK(SYS(Renameat2(fs.path("missing"), fs.path("g"), RENAME_WHITEOUT)) == "ENOENT");
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("g"), RENAME_NOREPLACE)) == "EEXIST");
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("d"), RENAME_WHITEOUT)) == "EISDIR");
    CHECK(SYS(Renameat2(fs.path("d"), fs.path("f"), RENAME_WHITEOUT)) == "ENOTDIR");
    CHECK(SYS(Renameat2(fs.path("d"), fs.path("e"), RENAME_WHITEOUT)) == "ENOTEMPTY");
    CHECK(SYS(Renameat2(fs.path("d"), fs.path("d/sub"), RENAME_WHITEOUT)) == "EINVAL");
    // A file and a directory may be exchanged: the types go with the names.
    CHECK(SYS(Renameat2(fs.path("f"), fs.path("d"), RENAME_EXCHANGE)) == "OK");
    CHECK(S_ISDIR(Lstat(fs.path("f")).st_mode));
    CHECK(ReadFile(fs.path("d")) == "f");
    // Nothing above left a whiteout.
    CHECK(ListDir(fs.root()) == std::vector<std::string>{"d", "e", "f", "g"});
  }

  TEST_CASE("RENAME_WHITEOUT by an ordinary user: allowed (Linux 5.8), and the usual rules hold") {
    TestFs fs;
    const std::string d = SharedDir(fs, "shared");
    CHECK(NsopAsNobody({"tmpfile", d, "link-proc=" + d + "/mine"}, "open OK\nlink OK\n") == "");
    CHECK(NsopAsNobody({"rename2", d + "/mine", d + "/moved", "whiteout"}, "OK\n") == "");
    CHECK(IsWhiteout(d + "/mine"));
    CHECK(Lstat(d + "/mine").st_uid == kNobody);
    // Sticky directory, root's file: EPERM. Read-only directory: EACCES.
    REQUIRE(WriteFile(d + "/roots", "r") == "");
    CHECK(NsopAsNobody({"rename2", d + "/roots", d + "/stolen", "whiteout"}, "EPERM\n") == "");
    const std::string ro = SharedDir(fs, "ro", 0755);
    REQUIRE(WriteFile(ro + "/f", "") == "");
    CHECK(NsopAsNobody({"rename2", ro + "/f", d + "/f", "whiteout"}, "EACCES\n") == "");
    CHECK(NsopAsNobody({"rename2", d + "/moved", d + "/x", "exchange|whiteout"}, "EINVAL\n") == "");
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("RENAME_WHITEOUT: threads racing renames onto one name and readers of the directory") {
    TestFs fs;
    constexpr int kThreads = 3, kRounds = 60;
    std::vector<std::thread> threads;
    std::vector<std::string> errors(kThreads + 1);
    std::atomic<bool> done{false};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kRounds && errors[t].empty(); ++i) {
          const std::string src = fs.path("s" + std::to_string(t));
          unlink(src.c_str());  // last round's whiteout
          if (WriteFile(src, std::to_string(t)) != "") errors[t] = "create";
          if (Renameat2(src, fs.path("target"), RENAME_WHITEOUT) != 0)
            errors[t] = "rename " + ErrnoName(errno);
          else if (!IsWhiteout(src))
            errors[t] = "no whiteout at " + src;
        }
      });
    }
    // A reader: every name listed is a whole file or a whiteout, never missing.
    threads.emplace_back([&] {
      while (!done.load() && errors[kThreads].empty()) {
        for (const std::string& name : ListDir(fs.root())) {
          // (One lstat: the name may change between two.)
          const struct stat st = Lstat(fs.path(name));
          const bool whiteout = S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
          if (st.st_ino != 0 && !S_ISREG(st.st_mode) && !whiteout)
            errors[kThreads] = name + " is neither a file nor a whiteout";
        }
      }
    });
    for (int t = 0; t < kThreads; ++t) threads[t].join();
    done.store(true);
    threads[kThreads].join();
    for (int t = 0; t <= kThreads; ++t) CHECK_MESSAGE(errors[t] == "", "thread " << t);
    CHECK(S_ISREG(Lstat(fs.path("target")).st_mode));
    CHECK(Lstat(fs.path("target")).st_nlink == 1);
    CHECK(fs.UnmountFsckRemount() == "");
  }

  TEST_CASE("mknod: a whiteout (character device 0/0) is anybody's to make; other devices are not") {
    TestFs fs;
    const std::string d = SharedDir(fs, "shared");
    CHECK(AsUser(kNobody, kNobody, {}, [&](ChildChecks& k) {
            KSYS(k, mknod((d + "/wh").c_str(), S_IFCHR | 0, makedev(0, 0)), "OK");
            KSYS(k, mknod((d + "/dev").c_str(), S_IFCHR | 0600, makedev(1, 3)), "EPERM");
          }) == "");
    CHECK(IsWhiteout(d + "/wh"));
  }

  // --- statx birth time --------------------------------------------------------

  TEST_CASE("statx: the birth time is set at create and never changed by writes, chmod, rename") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "ext4,xfs,tmpfs", "needs a filesystem with birth times");
    const int64_t before = NowNs();
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
    const int64_t after = NowNs();
    const int64_t born = Btime(fs.path("f"));
    // The kernel's clock and the daemon's may differ by a tick (coarse clock).
    CHECK(born >= before - 20'000'000);
    CHECK(born <= after + 20'000'000);
    CHECK(Btime(fs.path("d")) > 0);
    TickClock();
    REQUIRE(WriteFile(fs.path("f"), "rewritten") == "");
    REQUIRE(chmod(fs.path("f").c_str(), 0600) == 0);
    REQUIRE(rename(fs.path("f").c_str(), fs.path("g").c_str()) == 0);
    CHECK(Btime(fs.path("g")) == born);
    CHECK(Lstat(fs.path("g")).st_mtim.tv_sec * 1'000'000'000LL + Lstat(fs.path("g")).st_mtim.tv_nsec >
          born);
    // A tmpfile has one too.
    Fd fd(open(fs.root().c_str(), O_TMPFILE | O_RDWR, 0600));
    REQUIRE(fd.ok());
    struct statx sx {};
    REQUIRE(statx(fd.get(), "", AT_EMPTY_PATH, STATX_BTIME, &sx) == 0);
    CHECK((sx.stx_mask & STATX_BTIME) != 0);
    CHECK(sx.stx_btime.tv_sec >= before / 1'000'000'000);
    fd.Close();
    // leasefs keeps it across a remount.
    REQUIRE(fs.Remount() == "");
    CHECK(Btime(fs.path("g")) == born);
  }

  TEST_CASE("statx: coreutils' stat prints the birth time, as root and as another user") {
    TestFs fs;
    LEASEFS_AND_REFERENCE(fs, "ext4,xfs,tmpfs", "needs a filesystem with birth times");
    REQUIRE(WriteFile(fs.path("f"), "x") == "");
    const std::string want = std::to_string(Btime(fs.path("f")) / 1'000'000'000) + "\n";
    ProcessResult r = Run({"/usr/bin/stat", "-c", "%W", fs.path("f")});
    CHECK(r.exit_code == 0);
    CHECK(r.output == want);
    CHECK(AsUser(kNobody, kNobody, {}, [&](ChildChecks& k) {
            KEQ(k, Run({"/usr/bin/stat", "-c", "%W", fs.path("f")}).output, want);
            KEQ(k, NsopOut({"btime", fs.path("missing")}), "ENOENT\n");
          }) == "");
    // The default format's Birth line carries a date, not "-".
    ProcessResult full = Run({"/usr/bin/stat", fs.path("f")});
    CHECK(full.output.find("Birth: -") == std::string::npos);
    CHECK(full.output.find("Birth: 20") != std::string::npos);
  }
}

}  // namespace
}  // namespace leasefs::testing
