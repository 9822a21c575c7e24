// Shared mappings of leasefs files (docs/mmap.md): mmap(MAP_SHARED) works and
// stays coherent with read(2) and write(2) of other descriptors and
// processes, with truncate and fallocate, and with the leasefs ioctls that
// rewrite a file's bytes behind the kernel's back (collapse, insert, clone);
// msync makes the stores durable. A randomized run checks every byte against
// a model after every step. SQLite in WAL mode (whose -shm file is a shared
// mapping) and Python's mmap module run on the mount.
//
// Runs with one loop thread and with four (meson.build): the first proves
// that the write-back of dirty mapped pages that a clone or collapse forces
// cannot deadlock the daemon.
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "leasefs/ioctl.h"
#include "tests/fuse/mmap_model.h"
#include "tests/fuse/posix_fs.h"
#include "tests/support/sqlite.h"

namespace leasefs::testing {
namespace {

constexpr size_t B = 4096;
constexpr uid_t kAlice = 1000;

std::string Sqlite(const std::string& db, const std::string& sql, const std::string& more = "");

// --- basic coherence ----------------------------------------------------------

// The whole scenario of the first test, for root or another user: "" or
// what went wrong.
void StoresAreSeenEverywhere(const std::string& path, ChildChecks& k) {
  Fd fd(open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
  KTRUE(k, fd.ok());
  KSYS(k, ftruncate(fd.get(), 16 * B), "OK");
  Mapping m(fd.get(), 16 * B);
  KEQ(k, ErrnoName(m.err()), ErrnoName(0));
  if (m.get() == nullptr) return;
  const std::string a = Pattern(3 * B + 17, 1);
  std::memcpy(m.get() + 100, a.data(), a.size());
  // No msync: another descriptor and another process read the stores.
  Fd other(open(path.c_str(), O_RDONLY));
  KEQ(k, Diff(PreadAll(other.get(), a.size(), 100), a), "");
  const pid_t child = fork();
  if (child == 0) {
    Fd f(open(path.c_str(), O_RDWR));
    const bool same = PreadAll(f.get(), a.size(), 100) == a;
    const bool wrote = PwriteAll(f.get(), "written by the child", 9 * B + 5).empty();
    _exit(same && wrote ? 0 : 1);
  }
  int status = -1;
  waitpid(child, &status, 0);
  KEQ(k, std::to_string(status), "0");
  KEQ(k, Str(m.get() + 9 * B + 5, 20), "written by the child");
  // The size seen through fstat follows too.
  struct stat st{};
  KSYS(k, fstat(other.get(), &st), "OK");
  KEQ(k, std::to_string(st.st_size), std::to_string(16 * B));
}

TEST_CASE("mapped stores are read at once by other descriptors and processes, and back") {
  TestFs fs;
  ChildChecks k;
  StoresAreSeenEverywhere(fs.path("f"), k);
  CHECK(k.failures() == "");
}

TEST_CASE("an unprivileged user maps a file shared, with the same coherence") {
  TestFs fs;
  REQUIRE(SYS(chmod(fs.root().c_str(), 0777)) == "OK");
  CHECK(AsUser(kAlice, kAlice, {}, [&](ChildChecks& k) {
          StoresAreSeenEverywhere(fs.path("alice"), k);
        }) == "");
}

TEST_CASE("msync(MS_SYNC) makes mapped stores durable across a remount") {
  TestFs fs;
  LEASEFS_ONLY(fs, "remounts the pool");
  const std::string want = Pattern(40 * B + 123, 7);
  {
    Fd fd(open(fs.path("d").c_str(), O_RDWR | O_CREAT, 0644));
    REQUIRE(fd.ok());
    REQUIRE(SYS(ftruncate(fd.get(), static_cast<off_t>(want.size()))) == "OK");
    Mapping m(fd.get(), want.size());
    REQUIRE(m.get() != nullptr);
    std::memcpy(m.get(), want.data(), want.size());
    CHECK(SYS(msync(m.get(), want.size(), MS_SYNC)) == "OK");
  }
  REQUIRE(fs.UnmountFsckRemount() == "");
  bool ok = false;
  CHECK(Diff(ReadFile(fs.path("d"), &ok), want) == "");
  CHECK(ok);
}

TEST_CASE("-o mmap=private-only refuses shared mappings (ENODEV) and serves private ones") {
  FsOptions o;
  o.mount_options = "mmap=private-only";
  TestFs fs(o);
  LEASEFS_ONLY(fs, "a leasefs option");
  REQUIRE(WriteFile(fs.path("p"), Pattern(2 * B, 3)).empty());
  Fd fd(open(fs.path("p").c_str(), O_RDWR));
  void* p = mmap(nullptr, 2 * B, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  CHECK(ErrnoName(p == MAP_FAILED ? errno : 0) == "ENODEV");
  if (p != MAP_FAILED) munmap(p, 2 * B);
  p = mmap(nullptr, 2 * B, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
  REQUIRE(p != MAP_FAILED);
  CHECK(Str(static_cast<char*>(p), 2 * B) == Pattern(2 * B, 3));
  static_cast<char*>(p)[0] ^= 1;  // private: the file keeps its byte
  CHECK(PreadAll(fd.get(), 2 * B, 0) == Pattern(2 * B, 3));
  munmap(p, 2 * B);
  // What shared mappings are for: SQLite's WAL index cannot be mapped.
  const std::string db = fs.path("t.db");
  CHECK(Sqlite(db, "PRAGMA journal_mode=WAL;") == "0:wal\n");
  CHECK(Sqlite(db, "CREATE TABLE t(x);") == "10:Error: in prepare, disk I/O error (10)\n");
}

// --- the ioctls the kernel does not know of ----------------------------------

TEST_CASE("dirty mapped pages are written back before a clone or collapse reads them") {
  TestFs fs;
  LEASEFS_ONLY(fs, "leasefs ioctls");
  // A deadlock fails the test rather than hanging it.
  alarm(120);
  constexpr size_t kLen = 256 * B;
  Fd src(open(fs.path("src").c_str(), O_RDWR | O_CREAT, 0644));
  Fd dst(open(fs.path("dst").c_str(), O_RDWR | O_CREAT, 0644));
  REQUIRE(SYS(ftruncate(src.get(), kLen)) == "OK");
  REQUIRE(PwriteAll(dst.get(), Pattern(kLen, 9), 0).empty());
  Mapping ms(src.get(), kLen), md(dst.get(), kLen);
  REQUIRE((ms.get() != nullptr && md.get() != nullptr));
  const std::string a = Pattern(kLen, 10);
  std::memcpy(ms.get(), a.data(), kLen);  // every page of both dirty
  std::memset(md.get(), 'x', kLen);
  // The clone must take the mapped bytes of src, and the destination's
  // dirty pages must not land over the cloned bytes afterwards.
  CHECK(Clone(src.get(), 0, kLen, dst.get(), 0) == 0);
  CHECK(Diff(Str(md.get(), kLen), a) == "");
  CHECK(Diff(PreadAll(dst.get(), kLen, 0), a) == "");
  // Collapse the first 16 blocks of the dirty src: everything moves down.
  std::memset(ms.get(), 'y', 16 * B);
  CHECK(Range(src.get(), LEASEFS_IOC_COLLAPSE_RANGE, 0, 16 * B) == 0);
  const std::string collapsed = a.substr(16 * B);
  CHECK(Diff(PreadAll(src.get(), kLen, 0), collapsed) == "");
  CHECK(Diff(Str(ms.get(), collapsed.size()), collapsed) == "");
  alarm(0);
}

// --- randomized, against a model (tests/fuse/mmap_model.h) ------------------

TEST_CASE("random mapped and unmapped reads and writes, truncates and ioctls match a model") {
  TestFs fs;
  LEASEFS_ONLY(fs, "leasefs ioctls");
  const char* env = getenv("LEASEFS_MMAP_SEED");
  // A fixed seed unless told: the same run every time.
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : 20261205;
  // A SIGBUS (a mapping reaching past what the kernel takes for the end of
  // the file) kills the test: say which seed it was first.
  MESSAGE("LEASEFS_MMAP_SEED=" << seed);
  RandomRun run(fs.root(), seed);
  for (int i = 0; i < 1500; ++i) {
    const std::string err = run.Step(i);
    if (!err.empty()) {
      FAIL("seed " << seed << ": " << err);
      break;
    }
  }
}

// --- programs -----------------------------------------------------------------

// The sqlite3 shell on `db` (tests/support/sqlite.h): "exit code:output".
std::string Sqlite(const std::string& db, const std::string& sql, const std::string& more) {
  return RunSqlite({}, db, sql, more);
}

TEST_CASE("sqlite3 in WAL mode: two writers at once, then integrity_check and exact counts") {
  TestFs fs;
  const std::string db = fs.path("t.db");
  CHECK(Sqlite(db, "PRAGMA journal_mode=WAL;") == "0:wal\n");
  CHECK(Sqlite(db, "CREATE TABLE t(w INTEGER, i INTEGER, v TEXT);") == "0:");
  const std::vector<std::string> outs = RunWriters({}, db, {1, 2}, 40, 25);
  CHECK(outs[0] == "0:60000\n");
  CHECK(outs[1] == "0:60000\n");
  // While a connection is open, its WAL index is a shared mapping of
  // t.db-shm (SQLite deletes the file when the last connection closes).
  // (The shell's own output is buffered, that of .system is not.)
  const std::string open =
      Sqlite(db, "SELECT count(*) FROM t;", ".system test -s '" + db + "-shm' && echo mapped");
  CHECK((open == "0:2000\nmapped\n" || open == "0:mapped\n2000\n"));
  CHECK(Sqlite(db, "PRAGMA integrity_check;") == "0:ok\n");
  CHECK(Sqlite(db, "SELECT w, count(*), count(DISTINCT i), sum(i) FROM t GROUP BY w;") ==
        "0:1|1000|1000|499500\n2|1000|1000|499500\n");
  CHECK(Sqlite(db, "PRAGMA journal_mode;") == "0:wal\n");
}

TEST_CASE("python3's mmap module maps, stores, flushes and resizes a leasefs file") {
  TestFs fs;
  const std::string f = fs.path("py");
  REQUIRE(WriteFile(f, std::string(3 * B, 'a')).empty());
  const std::string script =
      "import mmap, os, sys\n"
      "f = open(sys.argv[1], 'r+b')\n"
      "m = mmap.mmap(f.fileno(), 0)\n"
      "m[10:15] = b'HELLO'\n"
      "m.flush()\n"
      "m.resize(5 * 4096)\n"
      "m[4 * 4096:4 * 4096 + 5] = b'WORLD'\n"
      "print(len(m), m[10:15].decode(), os.pread(f.fileno(), 5, 4 * 4096).decode())\n"
      "m.close()\n";
  ProcessResult r = Run({"/usr/bin/python3", "-c", script, f});
  CHECK(r.exit_code == 0);
  CHECK(r.output == "20480 HELLO WORLD\n");
  bool ok = false;
  const std::string got = ReadFile(f, &ok);
  CHECK(ok);
  CHECK(got.size() == 5 * B);
  CHECK(got.substr(10, 5) == "HELLO");
  CHECK(got.substr(4 * B, 5) == "WORLD");
}

}  // namespace
}  // namespace leasefs::testing
