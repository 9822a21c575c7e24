// The crash tests' workload, model and verifier, checked against tmpfs: no
// leasefs involved, so that a failure of the mounted crash tests can be
// blamed on leasefs rather than on the model.
#include "tests/crash/workload.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "tests/crash/crash_loop.h"

namespace leasefs::crashtest {
namespace {

// A fresh directory on /dev/shm (tmpfs), removed with its contents.
class TempDir {
 public:
  TempDir() {
    char t[] = "/dev/shm/leasefs-model-XXXXXX";
    if (!mkdtemp(t)) throw std::runtime_error("mkdtemp failed");
    path_ = t;
    chmod(path_.c_str(), 0755);
  }
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int type, struct FTW*) {
          return type == FTW_DP ? rmdir(p) : unlink(p);
        },
        16, FTW_DEPTH | FTW_PHYS);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string at(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// What tmpfs can run: no leasefs ioctls, no zero range.
constexpr unsigned kTmpfsOps = kPosixOps | kPortableRemap;

std::string Joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& l : v) s += l + "\n";
  return s;
}

TEST_SUITE("crash") {
  TEST_CASE("Workload: the same seed generates the same operations") {
    Model a, b;
    for (uint64_t k = 1; k <= 2000; ++k) {
      Op x = Generate(a, 42, k), y = Generate(b, 42, k);
      REQUIRE(Describe(x) == Describe(y));
      REQUIRE(x.data_seed == y.data_seed);
      REQUIRE(a.Apply(x) == b.Apply(y));
    }
    Model c;
    int same = 0;
    for (uint64_t k = 1; k <= 50; ++k) {
      Op x = Generate(c, 43, k);
      c.Apply(x);
      Model d;
      same += Describe(x) == Describe(Generate(d, 42, k));
    }
    CHECK(same < 50);
  }

  TEST_CASE("Workload: every kind of operation and of failure occurs") {
    Model m;
    std::map<std::string, int> kinds;
    std::set<int> errors;
    std::map<std::string, std::set<int>> outcomes;  // per kind: 0 and the errors
    bool whiteout = false, tmpfile = false;
    bool hole = false, multi_block = false, exchange = false, noreplace = false, long_name = false,
         block_symlink = false, self_clone = false, clone_to_eof = false, grow_zero = false,
         unlike_copy = false, alike_copy = false;
    for (uint64_t k = 1; k <= 20000; ++k) {
      Op op = Generate(m, 7, k);
      uint64_t size_before = 0;
      if (op.type == OpType::kWrite && m.Resolve(op.path) >= 0)
        size_before = m.node(m.Resolve(op.path)).data.size();
      const uint64_t dst_size =
          m.Resolve(op.path) >= 0 ? m.node(m.Resolve(op.path)).data.size() : 0;
      const bool same = !op.path2.empty() && m.Resolve(op.path) == m.Resolve(op.path2);
      int e = m.Apply(op);
      errors.insert(e);
      const std::string kind = Describe(op).substr(0, Describe(op).find(' '));
      kinds[kind]++;
      outcomes[kind].insert(e);
      if (e == 0 && op.type == OpType::kClone && same) self_clone = true;
      if (e == 0 && op.type == OpType::kClone && op.len == 0) clone_to_eof = true;
      if (e == 0 && op.type == OpType::kZeroRange && op.flags == 0 && op.off + op.len > dst_size)
        grow_zero = true;
      if (e == 0 && op.type == OpType::kCopyRange)
        (WriteLike(op) ? unlike_copy : alike_copy) = true;
      if (e == 0 && op.type == OpType::kWrite && op.off > size_before) hole = true;
      if (op.len > kBlock) multi_block = true;
      if (op.type == OpType::kRename && op.flags == RENAME_EXCHANGE && e == 0) exchange = true;
      if (op.type == OpType::kRename && op.flags == RENAME_NOREPLACE && e == 0) noreplace = true;
      if (op.type == OpType::kRename && (op.flags & RENAME_WHITEOUT) && e == 0) whiteout = true;
      if (op.type == OpType::kTmpfile && e == 0) tmpfile = true;
      if (op.path.size() > 200) long_name = true;
      if (op.type == OpType::kSymlink && op.text.size() > 144 && e == 0) block_symlink = true;
    }
    CHECK(kinds.size() == 26);
    // Every block-map operation both succeeds and fails (but unshare and
    // defrag, which only fail for a zero length or never).
    for (const char* k : {"clone", "copy_file_range", "collapse", "insert"}) {
      CAPTURE(k);
      CHECK(outcomes[k].count(0));
      CHECK(outcomes[k].count(EINVAL));
    }
    for (const char* k : {"punch", "zero_range", "unshare", "defrag"}) CHECK(outcomes[k].count(0));
    CHECK(self_clone);
    CHECK(clone_to_eof);
    CHECK(grow_zero);
    CHECK(unlike_copy);
    CHECK(alike_copy);
    // About a quarter of the operations are block-map ones.
    uint64_t remap = 0;
    for (const char* k : {"clone", "copy_file_range", "punch", "zero_range", "collapse", "insert",
                          "unshare", "defrag"})
      remap += kinds[k];
    CHECK(remap > 20000 * 18 / 100);
    CHECK(remap < 20000 * 32 / 100);
    // Without the leasefs-only ones, none of them comes up.
    Model t;
    for (uint64_t k = 1; k <= 3000; ++k) {
      Op op = Generate(t, 7, k, kTmpfsOps);
      t.Apply(op);
      CHECK(op.type != OpType::kClone);
      CHECK(op.type != OpType::kZeroRange);
      CHECK(op.type != OpType::kCollapse);
      CHECK(op.type != OpType::kDefrag);
    }
    for (int e : {0, EEXIST, ENOENT, ENOTEMPTY, ENOTDIR, EISDIR, EPERM, ENODATA, EINVAL})
      CHECK_MESSAGE(errors.count(e), ErrnoName(e));
    CHECK(hole);
    CHECK(multi_block);
    CHECK(exchange);
    CHECK(noreplace);
    CHECK(whiteout);
    CHECK(tmpfile);
    CHECK(long_name);
    CHECK(block_symlink);
  }

  TEST_CASE("Workload: the model predicts every outcome and the final tree on tmpfs") {
    // (The leasefs-only operations are checked on a mount: crash_loop.)
    for (uint64_t seed = 1; seed <= 12; ++seed) {
      CAPTURE(seed);
      TempDir dir;
      struct stat st {};
      REQUIRE(lstat(dir.path().c_str(), &st) == 0);
      Model m(st.st_mode);
      std::string failure = RunWorkload(dir.path(), seed, 1, 3000, m, kTmpfsOps);
      REQUIRE_MESSAGE(failure.empty(), failure);
      std::vector<std::string> diffs = Compare(TakeSnapshot(dir.path()), m);
      CHECK_MESSAGE(diffs.empty(), Joined(diffs));
      CHECK(m.node_count() > 5);
    }
  }

  TEST_CASE("Compare: each kind of damage to the tree is reported") {
    TempDir dir;
    struct stat st {};
    REQUIRE(lstat(dir.path().c_str(), &st) == 0);
    Model m(st.st_mode);
    REQUIRE(RunWorkload(dir.path(), 3, 1, 400, m, kTmpfsOps).empty());
    REQUIRE(Compare(TakeSnapshot(dir.path()), m).empty());
    std::string file, sub, lnk;
    for (const auto& p : m.Paths()) {
      const Node& n = m.node(m.Resolve(p));
      if (n.kind == Kind::kFile && n.data.size() > 10 && file.empty()) file = p;
      if (n.kind == Kind::kDir && sub.empty()) sub = p;
      if (n.kind == Kind::kSymlink && lnk.empty()) lnk = p;
    }
    REQUIRE(!file.empty());
    REQUIRE(!sub.empty());
    REQUIRE(!lnk.empty());

    auto expect_diff = [&](const std::string& what) {
      std::vector<std::string> d = Compare(TakeSnapshot(dir.path()), m);
      REQUIRE_MESSAGE(d.size() >= 1, what);
      bool named = false;
      for (const auto& l : d) named |= l.find(what) != std::string::npos;
      CHECK_MESSAGE(named, Joined(d));
    };
    SUBCASE("a changed byte") {
      int fd = open(dir.at(file).c_str(), O_WRONLY);
      char c = static_cast<char>(~m.node(m.Resolve(file)).data[3]);
      REQUIRE(pwrite(fd, &c, 1, 3) == 1);
      close(fd);
      expect_diff("differ, the first at offset 3");
    }
    SUBCASE("a changed size") {
      REQUIRE(truncate(dir.at(file).c_str(), 1) == 0);
      expect_diff(": size 1, expected");
    }
    SUBCASE("a missing entry") {
      REQUIRE(unlink(dir.at(lnk).c_str()) == 0);
      expect_diff(": missing");
    }
    SUBCASE("an unexpected entry") {
      REQUIRE(mkdir(dir.at("zz-extra").c_str(), 0700) == 0);
      expect_diff("zz-extra: unexpected directory");
    }
    SUBCASE("a changed mode") {
      REQUIRE(chmod(dir.at(sub).c_str(), 0) == 0);
      expect_diff(": mode 0000, expected");
    }
    SUBCASE("an extra hard link") {
      REQUIRE(link(dir.at(file).c_str(), dir.at("zz-link").c_str()) == 0);
      expect_diff("nlink");
    }
    SUBCASE("a changed xattr") {
      REQUIRE(setxattr(dir.at(sub).c_str(), "user.zz", "v", 1, 0) == 0);
      expect_diff("unexpected user.zz");
    }
    SUBCASE("a different symlink target") {
      REQUIRE(unlink(dir.at(lnk).c_str()) == 0);
      REQUIRE(symlink("elsewhere", dir.at(lnk).c_str()) == 0);
      expect_diff("symlink");
    }
    SUBCASE("a file replaced by a copy (hard links broken)") {
      // Give some file a second link in the model, then break it on disk.
      Op op;
      op.type = OpType::kLink;
      op.path = file;
      op.path2 = "zz-second";
      REQUIRE(m.Apply(op) == 0);
      REQUIRE(ApplyToDir(dir.path(), op) == 0);
      REQUIRE(Compare(TakeSnapshot(dir.path()), m).empty());
      REQUIRE(unlink(dir.at("zz-second").c_str()) == 0);
      int fd = open(dir.at("zz-second").c_str(), O_CREAT | O_WRONLY, 0600);
      const std::string& data = m.node(m.Resolve(file)).data;
      REQUIRE(write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
      fchmod(fd, m.node(m.Resolve(file)).perm);
      close(fd);
      expect_diff("nlink");
    }
  }

  TEST_CASE("Compare: a partly applied write passes only inside its range and sizes") {
    TempDir dir;
    struct stat st {};
    REQUIRE(lstat(dir.path().c_str(), &st) == 0);
    Model before(st.st_mode);
    Op create;
    create.type = OpType::kCreate;
    create.path = "f";
    create.mode = 0644;
    REQUIRE(before.Apply(create) == 0);
    REQUIRE(ApplyToDir(dir.path(), create) == 0);
    Op w1;
    w1.type = OpType::kWrite;
    w1.path = "f";
    w1.off = 0;
    w1.len = 3 * kBlock;
    w1.data_seed = 1;
    REQUIRE(before.Apply(w1) == 0);
    REQUIRE(ApplyToDir(dir.path(), w1) == 0);
    // The write in flight: overwrites [kBlock, 5 * kBlock).
    Op w2 = w1;
    w2.off = kBlock;
    w2.len = 4 * kBlock;
    w2.data_seed = 2;
    Model after = before;
    REQUIRE(after.Apply(w2) == 0);
    const int id = before.Resolve("f");
    Tolerance tol{id, &after.node(id).data};
    const std::string new_bytes = PatternBytes(2, w2.len);
    int fd = open(dir.at("f").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);

    SUBCASE("the first block of the write landed, the size is old") {
      REQUIRE(pwrite(fd, new_bytes.data(), kBlock, static_cast<off_t>(w2.off)) ==
              static_cast<ssize_t>(kBlock));
      CHECK(!Compare(TakeSnapshot(dir.path()), before).empty());
      CHECK(Compare(TakeSnapshot(dir.path()), before, tol).empty());
    }
    SUBCASE("the size is new and the data partly old") {
      REQUIRE(ftruncate(fd, static_cast<off_t>(5 * kBlock)) == 0);
      CHECK(Compare(TakeSnapshot(dir.path()), before, tol).empty());
    }
    SUBCASE("a size that is neither old nor new fails") {
      REQUIRE(ftruncate(fd, static_cast<off_t>(4 * kBlock)) == 0);
      CHECK(!Compare(TakeSnapshot(dir.path()), before, tol).empty());
    }
    SUBCASE("a byte outside the range changed fails") {
      char c = static_cast<char>(~before.node(id).data[10]);
      REQUIRE(pwrite(fd, &c, 1, 10) == 1);
      CHECK(!Compare(TakeSnapshot(dir.path()), before, tol).empty());
    }
    SUBCASE("a byte that is neither old nor new fails") {
      char c = static_cast<char>(~(before.node(id).data[kBlock + 7] ^ new_bytes[7]) | 1);
      if (c == before.node(id).data[kBlock + 7] || c == new_bytes[7]) c = static_cast<char>(c + 1);
      if (c == before.node(id).data[kBlock + 7] || c == new_bytes[7]) c = static_cast<char>(c + 1);
      REQUIRE(pwrite(fd, &c, 1, static_cast<off_t>(kBlock + 7)) == 1);
      CHECK(!Compare(TakeSnapshot(dir.path()), before, tol).empty());
    }
    close(fd);
  }

  // Crashes the workload process itself: on tmpfs every operation is atomic
  // with respect to SIGKILL, so the loop must always find op n or n+1.
  class KillWorkload : public CrashTarget {
   public:
    explicit KillWorkload(std::string root) : root_(std::move(root)) {}
    std::string root() const override { return root_; }
    void Crash(pid_t child) override { kill(child, SIGKILL); }
    std::string Recover(int) override { return {}; }

   private:
    std::string root_;
  };

  TEST_CASE("CrashLoop: a workload killed at random moments on tmpfs is always at op n or n+1") {
    TempDir dir;
    struct stat st {};
    REQUIRE(lstat(dir.path().c_str(), &st) == 0);
    Model m(st.st_mode);
    uint64_t ops = 0;
    KillWorkload target(dir.path());
    CrashLoopOptions opts;
    opts.seed = SeedFromEnv(11);
    opts.iterations = IterationsFromEnv(60);
    opts.max_delay_us = 30000;
    opts.progress_every = 0;
    opts.short_writes = true;
    opts.ops = kTmpfsOps;
    CrashLoopResult r = RunCrashLoop(target, opts, m, ops);
    REQUIRE_MESSAGE(r.failure.empty(), r.failure);
    CHECK(r.iterations == opts.iterations);
    // The loop did real work. How much depends on how fast the workload runs
    // before each random kill, which a loaded machine slows (an ASan run
    // beside other builds saw 50 ops in 60 rounds): no count is promised.
    CHECK(ops > 0);
    MESSAGE("ops " << ops << ", in flight found done " << r.in_flight_done << ", partial "
                   << r.in_flight_partial);
    CHECK(Compare(TakeSnapshot(dir.path()), m).empty());
  }

}  // TEST_SUITE

}  // namespace
}  // namespace leasefs::crashtest
