// File handles (name_to_handle_at / open_by_handle_at, what an NFS export
// runs on): stable across the kernel forgetting the inode, a new daemon and
// a new mount, stale once the file is gone, even when its inode number
// holds another file (docs/handles.md).
//
// The handles are made and opened by a small C program of the test build
// (tests/fuse/fhandle.c, LEASEFS_FHANDLE_BIN), as root and as other users;
// "the kernel forgot" is `echo 2 > /proc/sys/vm/drop_caches`, after which
// the kernel must ask the daemon (LOOKUP of "." and ".." by inode number).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#include "tests/fuse/posix_fs.h"

namespace leasefs::testing {
namespace {

// A handle as fhandle prints it: "TYPE HEX".
struct Handle {
  std::string type;
  std::string hex;
  bool operator==(const Handle&) const = default;
};

// What fhandle's open printed: "OK ino=N path=P data=D" or "ERR ENAME".
struct Opened {
  std::string err;  // "" when it opened
  uint64_t ino = 0;
  std::string path;
  std::string data;
};

std::string FhandleBin() { return ToolPath("LEASEFS_FHANDLE_BIN", "fhandle"); }

// fhandle [-u uid [-c]] args...; its one output line, without the newline.
std::string Fhandle(std::vector<std::string> args, uid_t uid = 0, bool keep_cap = false) {
  std::vector<std::string> argv = {FhandleBin()};
  if (uid != 0) {
    argv.push_back("-u");
    argv.push_back(std::to_string(uid));
    if (keep_cap) argv.push_back("-c");
  }
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = Run(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  while (!r.output.empty() && r.output.back() == '\n') r.output.pop_back();
  return r.output;
}

Handle NameOf(const std::string& path, uid_t uid = 0) {
  const std::string line = Fhandle({"name", path}, uid);
  const size_t sp = line.find(' ');
  REQUIRE_MESSAGE((sp != std::string::npos && line.rfind("ERR", 0) != 0), path << ": " << line);
  return {line.substr(0, sp), line.substr(sp + 1)};
}

Opened Parse(const std::string& line) {
  Opened o;
  if (line.rfind("ERR ", 0) == 0) {
    o.err = line.substr(4);
    return o;
  }
  const size_t p = line.find(" path="), d = line.find(" data=");
  REQUIRE_MESSAGE(
      (line.rfind("OK ino=", 0) == 0 && p != std::string::npos && d != std::string::npos), line);
  o.ino = std::stoull(line.substr(7, p - 7));
  o.path = line.substr(p + 6, d - p - 6);
  o.data = line.substr(d + 6);
  return o;
}

// Opens `h` with the mount of `mount_dir` (read-only, or write-only).
Opened OpenBy(const std::string& mount_dir, const Handle& h, uid_t uid = 0, bool keep_cap = false,
              bool write = false) {
  std::vector<std::string> args = {"open", mount_dir, h.type, h.hex};
  if (write) args.push_back("w");
  return Parse(Fhandle(args, uid, keep_cap));
}

// Makes the kernel forget every unused dentry and inode, ours included: the
// next decode of a handle must ask the daemon.
void DropCaches() {
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "2\n";
  f.flush();
  REQUIRE(f.good());
}

uint64_t FreeInodes(const std::string& path) {
  struct statvfs s {};
  REQUIRE(statvfs(path.c_str(), &s) == 0);
  return s.f_ffree;
}

// The mount's root, where handles are opened (any directory of the mount
// would do; the root is what an NFS export would use).
std::string MountDir(const TestFs& fs) { return fs.root(); }

TEST_CASE(
    "Handles: a file, a directory and a hard link open by handle from the kernel's cache, "
    "after it forgot them, and through a new daemon") {
  TestFs fs;
  REQUIRE(mkdir(fs.path("a").c_str(), 0755) == 0);
  REQUIRE(mkdir(fs.path("a/b").c_str(), 0755) == 0);
  REQUIRE(mkdir(fs.path("a/b/c").c_str(), 0755) == 0);
  REQUIRE(WriteFile(fs.path("a/b/f"), "hello handles") == "");
  REQUIRE(link(fs.path("a/b/f").c_str(), fs.path("a/g").c_str()) == 0);
  const Handle file = NameOf(fs.path("a/b/f")), dir = NameOf(fs.path("a/b/c"));
  const Handle hard_link = NameOf(fs.path("a/g"));
  CHECK(hard_link == file);  // one inode, one handle
  CHECK_FALSE(dir == file);
  const uint64_t file_ino = Stat(fs.path("a/b/f")).st_ino;
  const uint64_t dir_ino = Stat(fs.path("a/b/c")).st_ino;

  auto check_all = [&](const char* when) {
    INFO(when);
    for (const Handle* h : {&file, &hard_link}) {
      const Opened o = OpenBy(MountDir(fs), *h);
      CHECK(o.err == "");
      CHECK(o.ino == file_ino);
      CHECK(o.data == "hello handles");
    }
    // A directory's handle is connected to its path again, through its
    // parents ("..") up to the root.
    const Opened d = OpenBy(MountDir(fs), dir);
    CHECK(d.err == "");
    CHECK(d.ino == dir_ino);
    CHECK(d.path == fs.path("a/b/c"));
  };
  check_all("the kernel holds the inodes");
  DropCaches();
  check_all("after drop_caches: the daemon is asked");
  REQUIRE(fs.Remount() == "");
  check_all("through a new daemon and a new mount");
  DropCaches();
  check_all("new mount, after drop_caches");
  // The handle follows the inode, not a name: renamed and with its first
  // name gone, it still opens.
  REQUIRE(rename(fs.path("a/b/c").c_str(), fs.path("c2").c_str()) == 0);
  REQUIRE(unlink(fs.path("a/b/f").c_str()) == 0);
  DropCaches();
  const Opened f = OpenBy(MountDir(fs), file);
  CHECK(f.err == "");
  CHECK(f.data == "hello handles");
  const Opened d = OpenBy(MountDir(fs), dir);
  CHECK(d.err == "");
  CHECK(d.path == fs.path("c2"));
}

TEST_CASE(
    "Handles: a deleted file's handle is stale, also once its inode number holds a new "
    "file") {
  TestFs fs;
  REQUIRE(WriteFile(fs.path("old"), "old contents") == "");
  const Handle h = NameOf(fs.path("old"));
  const uint64_t ino = Stat(fs.path("old")).st_ino;
  REQUIRE(unlink(fs.path("old").c_str()) == 0);
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  DropCaches();
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");

  LEASEFS_ONLY(fs, "which inode number a new file gets is the filesystem's choice");
  // leasefs gives a new file the lowest free inode number: the old one, as
  // soon as the daemon has freed it (the kernel's FORGET comes on its own
  // time). Files made meanwhile keep other numbers.
  std::string reused;
  for (int i = 0; i < 1000 && reused.empty(); ++i) {
    const std::string p = fs.path("new" + std::to_string(i));
    REQUIRE(WriteFile(p, "new contents") == "");
    if (Stat(p).st_ino == ino) reused = p;
    if (reused.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE_MESSAGE(!reused.empty(), "no new file got inode " << ino);
  // The kernel holds the new inode: its generation differs.
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  // The kernel asks the daemon, which answers with the new file, and the
  // kernel compares the generation.
  DropCaches();
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  REQUIRE(fs.Remount() == "");
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  // The new file's own handle opens it.
  const Opened n = OpenBy(MountDir(fs), NameOf(reused));
  CHECK(n.err == "");
  CHECK(n.ino == ino);
  CHECK(n.data == "new contents");
}

TEST_CASE(
    "Handles: a handle of a pool formatted again is stale, though a new file has its "
    "inode number") {
  TestFs fs;
  LEASEFS_ONLY(fs, "formats the pool again");
  REQUIRE(WriteFile(fs.path("f"), "first format") == "");
  const Handle h = NameOf(fs.path("f"));
  const uint64_t ino = Stat(fs.path("f")).st_ino;
  REQUIRE(fs.mount()->Unmount() == 0);
  const ProcessResult mkfs = Run({MkfsBin(), "--force", "--size", "256M", fs.mount()->pool()});
  REQUIRE_MESSAGE(mkfs.exit_code == 0, mkfs.output);
  REQUIRE(fs.mount()->Mount());
  // Same number, same count of uses of the slot: only the pool's new uuid
  // tells the two files apart.
  REQUIRE(WriteFile(fs.path("f"), "second format") == "");
  REQUIRE(Stat(fs.path("f")).st_ino == ino);
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  DropCaches();
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  CHECK(OpenBy(MountDir(fs), NameOf(fs.path("f"))).data == "second format");
}

TEST_CASE("Handles: an unlinked file opens by handle while it is open, and is stale once closed") {
  TestFs fs;
  REQUIRE(WriteFile(fs.path("f"), "still here") == "");
  const Handle h = NameOf(fs.path("f"));
  Fd fd(open(fs.path("f").c_str(), O_RDONLY));
  REQUIRE(fd.ok());
  REQUIRE(unlink(fs.path("f").c_str()) == 0);
  // The kernel holds the inode (the descriptor keeps it), as ext4's does.
  Opened o = OpenBy(MountDir(fs), h);
  CHECK(o.err == "");
  CHECK(o.data == "still here");
  DropCaches();
  o = OpenBy(MountDir(fs), h);
  CHECK(o.err == "");
  CHECK(o.data == "still here");
  // Once it is gone, the daemon never hands it out again.
  CHECK(fd.Close() == "OK");
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
  DropCaches();
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
}

TEST_CASE("Handles: an orphan a new daemon reclaims is stale") {
  TestFs fs;
  LEASEFS_ONLY(fs, "unmounts with a file open");
  REQUIRE(WriteFile(fs.path("f"), "orphan") == "");
  const Handle h = NameOf(fs.path("f"));
  // A daemon killed while the unlinked file is open leaves an orphan, which
  // the next mount frees.
  Fd fd(open(fs.path("f").c_str(), O_RDONLY));
  REQUIRE(fd.ok());
  REQUIRE(unlink(fs.path("f").c_str()) == 0);
  fs.mount()->Kill();
  fd.Close();
  REQUIRE(fs.mount()->Mount());
  CHECK(fs.mount()->DaemonLog().find("1 orphans reclaimed") != std::string::npos);
  CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
}

TEST_CASE(
    "Handles: opening one needs CAP_DAC_READ_SEARCH, and the opener's rights are checked "
    "as for any open") {
  TestFs fs;
  REQUIRE(WriteFile(fs.path("f"), "root's file", 0644) == "");
  const Handle h = NameOf(fs.path("f"));
  // Anybody who may reach the file can name its handle.
  CHECK(NameOf(fs.path("f"), 65534) == h);
  // Only a caller that may bypass search permission opens by handle: the
  // kernel says no before the daemon hears of it.
  DropCaches();
  CHECK(OpenBy(MountDir(fs), h, 65534).err == "EPERM");
  // With CAP_DAC_READ_SEARCH alone, uid 65534 reads the file (others may)
  // but may not write it: the kernel (default_permissions) or the daemon
  // (alone) checks the open as it would by path.
  DropCaches();
  const Opened r = OpenBy(MountDir(fs), h, 65534, /*keep_cap=*/true);
  CHECK(r.err == "");
  CHECK(r.data == "root's file");
  DropCaches();
  CHECK(OpenBy(MountDir(fs), h, 65534, /*keep_cap=*/true, /*write=*/true).err == "EACCES");
  CHECK(OpenBy(MountDir(fs), h, 0, false, /*write=*/true).err == "");
}

TEST_CASE(
    "Handles: the lookups behind handles keep the daemon's counts, so deleted files are "
    "freed") {
  TestFs fs;
  LEASEFS_ONLY(fs, "counts free inodes, which other filesystems allocate as they like");
  const uint64_t before = FreeInodes(fs.root());
  REQUIRE(mkdir(fs.path("d").c_str(), 0755) == 0);
  REQUIRE(mkdir(fs.path("d/e").c_str(), 0755) == 0);
  REQUIRE(WriteFile(fs.path("d/e/f"), "x") == "");
  const Handle file = NameOf(fs.path("d/e/f")), dir = NameOf(fs.path("d/e"));
  for (int i = 0; i < 3; ++i) {
    DropCaches();  // each round the daemon answers "." and ".." anew
    CHECK(OpenBy(MountDir(fs), file).err == "");
    CHECK(OpenBy(MountDir(fs), dir).err == "");
  }
  CHECK(FreeInodes(fs.root()) == before - 3);
  REQUIRE(unlink(fs.path("d/e/f").c_str()) == 0);
  REQUIRE(rmdir(fs.path("d/e").c_str()) == 0);
  REQUIRE(rmdir(fs.path("d").c_str()) == 0);
  DropCaches();
  // The kernel's FORGETs arrive on their own time; a reference the daemon
  // took for a handle and never dropped would keep an inode for good.
  uint64_t now = 0;
  for (int i = 0; i < 2000 && (now = FreeInodes(fs.root())) != before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(now == before);
}

TEST_CASE(
    "Handles: opens racing the deletion of their file and the reuse of its inode open the "
    "old file or fail with ESTALE, never the new file") {
  TestFs fs;
  constexpr int kRounds = 40;
  for (int round = 0; round < kRounds; ++round) {
    const std::string old_path = fs.path("victim"), new_path = fs.path("other");
    const std::string old_data = "old " + std::to_string(round);
    REQUIRE(WriteFile(old_path, old_data) == "");
    const Handle h = NameOf(old_path);
    if (round % 4 == 0) DropCaches();
    // The child opens by handle as fast as it can while the parent deletes
    // the file and makes another (which takes its inode number when the
    // daemon has freed it in time).
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      close(pipefd[0]);
      // No doctest in the child: it reports what went wrong through the pipe.
      std::string bad;
      for (int i = 0; i < 30 && bad.empty(); ++i) {
        const ProcessResult r = Run({FhandleBin(), "open", MountDir(fs), h.type, h.hex});
        const std::string line = r.output.substr(0, r.output.find('\n'));
        const size_t data = line.find(" data=");
        const bool old_file = line.rfind("OK ", 0) == 0 && data != std::string::npos &&
                              line.substr(data + 6) == old_data;
        if (!old_file && line != "ERR ESTALE") bad = line;
      }
      (void)!write(pipefd[1], bad.data(), bad.size());
      _exit(0);
    }
    close(pipefd[1]);
    REQUIRE(unlink(old_path.c_str()) == 0);
    REQUIRE(WriteFile(new_path, "new " + std::to_string(round)) == "");
    std::string bad;
    char buf[256];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) bad.append(buf, static_cast<size_t>(n));
    close(pipefd[0]);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK_MESSAGE(bad.empty(), "round " << round << ": " << bad);
    CHECK(OpenBy(MountDir(fs), h).err == "ESTALE");
    REQUIRE(unlink(new_path.c_str()) == 0);
  }
}

}  // namespace
}  // namespace leasefs::testing
