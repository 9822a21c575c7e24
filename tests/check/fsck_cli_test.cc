// fsck.leasefs end to end: pool files, exit codes, output, -n leaving the
// file untouched, and refusing a pool that is in use. The binary comes from
// FSCK_LEASEFS_BIN (meson test sets it).
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/unique_fd.h"
#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using std::to_string;

struct Run {
  int code = -1;
  std::string out, err;
};

std::string ReadAll(int fd) {
  std::string s;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) s.append(buf, static_cast<size_t>(n));
  return s;
}

// Runs fsck.leasefs with `args`; stdout and stderr are read after it exits
// (the outputs here are small enough for the pipe buffers).
Run Fsck(const std::vector<std::string>& args) {
  const char* bin = std::getenv("FSCK_LEASEFS_BIN");
  REQUIRE_MESSAGE(bin != nullptr, "FSCK_LEASEFS_BIN is not set");
  int out[2], err[2];
  REQUIRE(pipe(out) == 0);
  REQUIRE(pipe(err) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    std::vector<char*> argv{const_cast<char*>(bin)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin, argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  Run r;
  r.out = ReadAll(out[0]);
  r.err = ReadAll(err[0]);
  close(out[0]);
  close(err[0]);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// A temporary directory removed (with its files) at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/fsck-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    for (const std::string& f : files_) unlink(f.c_str());
    rmdir(path_.c_str());
  }
  std::string File(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

void WriteFile(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A size no private writable mapping may have without MAP_NORESERVE under the
// default overcommit heuristic: more than RAM + swap, rounded up to a GiB.
uint64_t BeyondMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0, total_kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    if (key == "MemTotal:" || key == "SwapTotal:") total_kib += kib;
    std::getline(in, unit);
  }
  REQUIRE(total_kib > 0);
  const uint64_t gib = uint64_t{1} << 30;
  return (total_kib * 1024 / gib + 1) * gib;
}

// The summary line of BuildTree's pool, whose one reach record covers two
// quarantined blocks.
std::string Summary(const std::string& pool, const std::string& state) {
  const Image fresh;
  return pool + ": " + state + "; 82/511 inodes (4 directories, 74 files), 27/" +
         to_string(fresh.sb().data_blocks) + " data blocks, 1 reach record (2 blocks quarantined)\n";
}

TEST_SUITE("fsck") {
  TEST_CASE("fsck.leasefs: a clean pool exits 0") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    BuildTree(img);
    WriteFile(pool, img.Snapshot());
    for (const char* flag : {"-n", "-y", "-p", "-f"}) {
      CAPTURE(flag);
      const Run r = Fsck({flag, pool});
      CHECK(r.code == 0);
      CHECK(r.out == Summary(pool, "clean"));
      CHECK(r.err == "");
    }
  }

  TEST_CASE("fsck.leasefs: errors exit 4 and -n leaves the file alone") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 3;
    WriteFile(pool, img.Snapshot());
    const std::vector<char> before = ReadFile(pool);
    const std::string error =
        "error: inode " + to_string(t.file) + ": nlink 3 but 2 entries name it\n";
    for (std::vector<std::string> args : {std::vector<std::string>{"-n", pool}, {pool}}) {
      const Run r = Fsck(args);
      CHECK(r.code == 4);
      CHECK(r.out == error + Summary(pool, "1 error left uncorrected"));
    }
    CHECK(ReadFile(pool) == before);
  }

  TEST_CASE("fsck.leasefs: -y repairs, exits 1, and a second run is clean") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 3;
    WriteFile(pool, img.Snapshot());
    for (const char* flag : {"-y", "--repair"}) {
      CAPTURE(flag);
      WriteFile(pool, img.Snapshot());
      const Run r = Fsck({flag, pool});
      CHECK(r.code == 1);
      CHECK(r.out == "repaired: inode " + to_string(t.file) +
                         ": nlink 3 but 2 entries name it (set nlink to 2)\n" +
                         Summary(pool, "1 problem repaired"));
      CHECK(Fsck({"-n", pool}).code == 0);
    }
  }

  TEST_CASE("fsck.leasefs: -p repairs only what loses no data") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 3;
    SUBCASE("safe") {
      WriteFile(pool, img.Snapshot());
      CHECK(Fsck({"-p", pool}).code == 1);
      CHECK(Fsck({"-a", pool}).code == 0);
    }
    SUBCASE("losing data") {
      img.block(t.xattr)[0] = 0;
      WriteFile(pool, img.Snapshot());
      const std::vector<char> before = ReadFile(pool);
      const Run r = Fsck({"-p", pool});
      CHECK(r.code == 4);
      CHECK(r.out.find(pool + ": UNEXPECTED INCONSISTENCY") != std::string::npos);
      CHECK(ReadFile(pool) == before);
      CHECK(Fsck({"-y", pool}).code == 1);
      CHECK(Fsck({pool}).code == 0);
    }
  }

  TEST_CASE("fsck.leasefs: -n replays the journal in memory only") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    img.CommitWithoutApplying({{img.offset(&img.inode(40)->mtime_ns), std::vector<char>(8, 0)}});
    WriteFile(pool, img.Snapshot());
    const std::vector<char> before = ReadFile(pool);
    const Run r = Fsck({"-n", pool});
    CHECK(r.code == 0);
    CHECK(r.out.rfind("note: journal: replayed committed transaction 1 (1 record)\n", 0) == 0);
    CHECK(ReadFile(pool) == before);
    const Run q = Fsck({"-n", "-q", pool});
    CHECK(q.out == "");
  }

  TEST_CASE("fsck.leasefs: -n checks a pool larger than memory, replaying in memory") {
    // The pool is the small image with a committed transaction, in a sparse
    // file larger than RAM + swap: the whole file is mapped, and the replay
    // stores into that mapping without reaching the file.
    TempDir dir;
    const std::string pool = dir.File("big");
    Image img;
    BuildTree(img);
    img.CommitWithoutApplying({{img.offset(&img.inode(40)->mtime_ns), std::vector<char>(8, 0)}});
    const std::vector<char> image = img.Snapshot();
    WriteFile(pool, image);
    const uint64_t size = BeyondMemoryBytes();
    REQUIRE(truncate(pool.c_str(), static_cast<off_t>(size)) == 0);
    CAPTURE(size);
    const Run r = Fsck({"-n", pool});
    CHECK(r.code == 0);
    CHECK(r.err == "");
    CHECK(r.out ==
          "note: journal: replayed committed transaction 1 (1 record)\n" + Summary(pool, "clean"));
    std::vector<char> head(image.size());
    UniqueFd fd(open(pool.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    REQUIRE(pread(fd.get(), head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()));
    CHECK(head == image);
  }

  TEST_CASE("fsck.leasefs: a pool in use is refused") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    WriteFile(pool, img.Snapshot());
    UniqueFd fd(open(pool.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    REQUIRE(flock(fd.get(), LOCK_EX | LOCK_NB) == 0);
    for (const char* flag : {"-n", "-y", "-p"}) {
      CAPTURE(flag);
      const Run r = Fsck({flag, pool});
      CHECK(r.code == 8);
      CHECK(r.out == "");
      CHECK(r.err == "fsck.leasefs: " + pool + " is in use (mounted?)\n");
    }
    fd.reset();
    CHECK(Fsck({pool}).code == 0);
  }

  TEST_CASE("fsck.leasefs: what is not a pool is an operational error") {
    TempDir dir;
    SUBCASE("foreign file") {
      const std::string pool = dir.File("junk");
      std::vector<char> junk(8 << 20);
      for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(i * 7 + 3);
      WriteFile(pool, junk);
      const Run r = Fsck({pool});
      CHECK(r.code == 8);
      CHECK(r.err == "fsck.leasefs: " + pool +
                         ": not a leasefs pool (no superblock magic in block 0 or 1)\n");
    }
    SUBCASE("missing file") {
      const Run r = Fsck({dir.path() + "/none"});
      CHECK(r.code == 8);
      CHECK(r.err.rfind("fsck.leasefs: ", 0) == 0);
    }
    SUBCASE("too small") {
      const std::string pool = dir.File("small");
      WriteFile(pool, std::vector<char>(4096));
      CHECK(Fsck({pool}).code == 8);
    }
    SUBCASE("a directory") { CHECK(Fsck({dir.path()}).code == 8); }
  }

  TEST_CASE("fsck.leasefs: a pool with no valid superblock exits 4") {
    TempDir dir;
    const std::string pool = dir.File("pool");
    Image img;
    img.super(0)->checksum ^= 1;
    img.super(1)->checksum ^= 1;
    WriteFile(pool, img.Snapshot());
    const Run r = Fsck({"-y", pool});
    CHECK(r.code == 4);
    CHECK(r.out.rfind("error: superblock: no valid copy: primary: superblock checksum mismatch; "
                      "backup: superblock checksum mismatch\n",
                      0) == 0);
  }

  TEST_CASE("fsck.leasefs: usage errors exit 16") {
    CHECK(Fsck({}).code == 16);
    CHECK(Fsck({"-n", "-y", "pool"}).code == 16);
    CHECK(Fsck({"-p", "-y", "pool"}).code == 16);
    CHECK(Fsck({"--bogus", "pool"}).code == 16);
    CHECK(Fsck({"a", "b"}).code == 16);
    const Run help = Fsck({"--help"});
    CHECK(help.code == 0);
    CHECK(help.out.find("EXIT STATUS") != std::string::npos);
  }

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::testing
