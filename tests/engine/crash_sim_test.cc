// The crash simulator: for each operation below, stop the engine at every
// persist point it reaches (and, separately, with in-flight 8-byte words
// landing or not as several seeds decide), recover the image, and require
// that (1) the pool mounts (mount cross-checks link counts and refcounts),
// (2) the offline checker finds no error, and (3) what a user can see is
// exactly the state before the operation or exactly the state after it.
#include <fcntl.h>

#include <functional>
#include <string>

#include <doctest/doctest.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "fusefs/check/check.h"
#include "fusefs/engine/layout.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;

struct Scenario {
  const char* name;
  std::function<void(Filesystem&)> setup;
  std::function<void(Filesystem&)> op;
  FormatOptions format{};
  size_t pool_bytes = 8 << 20;
};

std::string Bytes(size_t n, char c) { return std::string(n, c); }

Ino At(Filesystem& fs, const std::string& path) {
  Ino cur = 1;
  size_t b = 1;
  while (b < path.size()) {
    size_t e = path.find('/', b);
    if (e == std::string::npos) e = path.size();
    cur = MustLookup(fs, cur, path.substr(b, e - b));
    b = e + 1;
  }
  return cur;
}

void Truncate(Filesystem& fs, Ino ino, uint64_t size) {
  SetAttrArgs a;
  a.valid = SetAttrArgs::kSize;
  a.size = size;
  REQUIRE(fs.SetAttr(kRoot, ino, a).ok());
}

// A small tree most scenarios start from.
void BaseTree(Filesystem& fs) {
  const Ino d = MustMkdir(fs, 1, "d");
  MustMkdir(fs, 1, "e");
  MustMkdir(fs, d, "sub");
  const Ino f = MustCreate(fs, d, "f");
  MustWrite(fs, f, 0, Bytes(10000, 'f'));
  MustCreate(fs, 1, "g");
  REQUIRE(fs.SetXattr(kRoot, f, "user.one", "1", 0).ok());
}

// A format with the smallest journal (64 KiB), so that freeing a file of
// 1000 extents takes several transactions.
FormatOptions SmallJournal() {
  FormatOptions fo;
  fo.geometry.journal_bytes = 64 << 10;
  return fo;
}

// Two files of 1000 one-block extents each (interleaved, so none merge).
void Fragmented(Filesystem& fs) {
  BaseTree(fs);
  const Ino a = MustCreate(fs, 1, "a"), b = MustCreate(fs, 1, "b");
  REQUIRE(fs.SetXattr(kRoot, a, "user.x", "y", 0).ok());
  for (uint64_t i = 0; i < 1000; ++i) {
    MustWrite(fs, a, i * kBlockSize, Bytes(kBlockSize, 'a'));
    MustWrite(fs, b, i * kBlockSize, Bytes(kBlockSize, 'b'));
  }
}

std::vector<Scenario> Scenarios() {
  std::vector<Scenario> s;
  s.push_back({"create", BaseTree, [](Filesystem& fs) { MustCreate(fs, At(fs, "/d"), "new"); }});
  s.push_back({"create that grows the directory",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 for (int i = 0; i < 62; ++i) MustCreate(fs, At(fs, "/e"), "n" + std::to_string(i));
               },
               [](Filesystem& fs) { MustCreate(fs, At(fs, "/e"), "overflow"); }});
  s.push_back({"mkdir", BaseTree, [](Filesystem& fs) { MustMkdir(fs, At(fs, "/d/sub"), "deep"); }});
  s.push_back({"long symlink", BaseTree,
               [](Filesystem& fs) { REQUIRE(fs.Symlink(kRoot, 1, "l", Bytes(500, 't')).ok()); }});
  s.push_back({"hard link", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Link(kRoot, At(fs, "/d/f"), At(fs, "/e"), "f2").ok());
               }});
  s.push_back({"write into a hole", BaseTree,
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/d/f"), 100000, Bytes(20000, 'w')); }});
  s.push_back({"append in place", BaseTree, [](Filesystem& fs) {
                 MustWrite(fs, At(fs, "/d/f"), 10000, Bytes(100, 'a'));  // same block, size grows
               }});
  s.push_back({"extend a file past a partial block",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 Truncate(fs, At(fs, "/d/f"), 5000);  // block 1 keeps stale bytes past EOF
               },
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/d/f"), 9000, "z"); }});
  s.push_back({"truncate down", BaseTree, [](Filesystem& fs) { Truncate(fs, At(fs, "/d/f"), 3); }});
  s.push_back(
      {"truncate up", BaseTree, [](Filesystem& fs) { Truncate(fs, At(fs, "/d/f"), 1 << 20); }});
  s.push_back({"truncate of many extents with a small journal", Fragmented,
               [](Filesystem& fs) { Truncate(fs, At(fs, "/a"), 100); }, SmallJournal(), 16 << 20});
  s.push_back({"unlink", BaseTree, [](Filesystem& fs) { REQUIRE(fs.Unlink(kRoot, 1, "g").ok()); }});
  s.push_back({"unlink and free a file's blocks", BaseTree, [](Filesystem& fs) {
                 const Ino f = At(fs, "/d/f");  // one more reference
                 REQUIRE(fs.Unlink(kRoot, At(fs, "/d"), "f").ok());
                 fs.Forget(f, 1000);  // drop every reference: the inode is freed now
               }});
  s.push_back({"unlink and free a large fragmented file with a small journal", Fragmented,
               [](Filesystem& fs) {
                 const Ino a = At(fs, "/a");
                 REQUIRE(fs.Unlink(kRoot, 1, "a").ok());
                 fs.Forget(a, 1000);
               },
               SmallJournal(), 16 << 20});
  s.push_back({"rmdir and free a directory with blocks",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 const Ino big = MustMkdir(fs, 1, "big");
                 for (int i = 0; i < 200; ++i) MustCreate(fs, big, "n" + std::to_string(i));
                 for (int i = 0; i < 200; ++i)
                   REQUIRE(fs.Unlink(kRoot, big, "n" + std::to_string(i)).ok());
               },
               [](Filesystem& fs) {
                 const Ino big = At(fs, "/big");
                 REQUIRE(fs.Rmdir(kRoot, 1, "big").ok());
                 fs.Forget(big, 1000);
               }});
  s.push_back({"unlink and free a long symlink",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 REQUIRE(fs.Symlink(kRoot, 1, "l", Bytes(500, 't')).ok());
               },
               [](Filesystem& fs) {
                 const Ino l = At(fs, "/l");
                 REQUIRE(fs.Unlink(kRoot, 1, "l").ok());
                 fs.Forget(l, 1000);
               }});
  s.push_back({"rmdir", BaseTree,
               [](Filesystem& fs) { REQUIRE(fs.Rmdir(kRoot, At(fs, "/d"), "sub").ok()); }});
  s.push_back({"rename in a directory", BaseTree,
               [](Filesystem& fs) { REQUIRE(fs.Rename(kRoot, 1, "g", 1, "h", 0).ok()); }});
  s.push_back({"rename over a file", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "f", 0).ok());
               }});
  s.push_back({"move a directory", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, At(fs, "/d"), "sub", At(fs, "/e"), "moved", 0).ok());
               }});
  s.push_back({"exchange a file and a directory", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Rename(kRoot, 1, "g", At(fs, "/d"), "sub", RENAME_EXCHANGE).ok());
               }});
  s.push_back({"set an xattr", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.SetXattr(kRoot, At(fs, "/g"), "user.new", "value", 0).ok());
               }});
  s.push_back({"remove the last xattr", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.RemoveXattr(kRoot, At(fs, "/d/f"), "user.one").ok());
               }});
  s.push_back({"chmod and chown", BaseTree, [](Filesystem& fs) {
                 SetAttrArgs a;
                 a.valid = SetAttrArgs::kMode | SetAttrArgs::kUid | SetAttrArgs::kGid;
                 a.mode = 0600;
                 a.uid = 42;
                 a.gid = 43;
                 REQUIRE(fs.SetAttr(kRoot, At(fs, "/d/f"), a).ok());
               }});
  s.push_back({"preallocate", BaseTree, [](Filesystem& fs) {
                 REQUIRE(fs.Fallocate(kRoot, At(fs, "/g"), 0, 0, 50000).ok());
               }});
  s.push_back({"write into preallocated space",
               [](Filesystem& fs) {
                 BaseTree(fs);
                 REQUIRE(fs.Fallocate(kRoot, At(fs, "/g"), 0, 0, 50000).ok());
               },
               [](Filesystem& fs) { MustWrite(fs, At(fs, "/g"), 10000, Bytes(9000, 'p')); }});
  return s;
}

// Runs `sc` from its setup image with a crash armed at the k-th persist
// point of the operation (0: no crash); returns the media afterwards.
std::unique_ptr<Filesystem> RunOp(const Scenario& sc, const std::vector<char>& start, uint64_t k,
                                  SimMedia** raw) {
  auto fs = MountImage(start, raw);
  if (k) (*raw)->ArmCrash(k);
  sc.op(*fs);
  return fs;
}

void CheckRecovered(const std::vector<char>& image, const std::string& before,
                    const std::string& after) {
  // The offline checker sees the image as the daemon would find it.
  {
    auto m = SimMedia::FromImage(image);
    auto report = check::CheckPool(*m, check::CheckOptions{});
    REQUIRE_MESSAGE(report.ok(), report.status().ToString());
    std::string errors;
    for (const auto& f : report->findings)
      if (f.kind == check::Finding::kError) errors += f.where + ": " + f.what + "\n";
    CHECK_MESSAGE(errors.empty(), errors);
  }
  auto fs = MountImage(image);
  const std::string now = Observe(*fs);
  CHECK_MESSAGE((now == before || now == after), "recovered state is neither before nor after:\n",
                now, "\nbefore:\n", before, "\nafter:\n", after);
}

TEST_SUITE("crash") {
  TEST_CASE("Crash simulator: every operation is all or nothing at every persist point") {
    for (const Scenario& sc : Scenarios()) {
      CAPTURE(std::string(sc.name));
      SimMedia* raw;
      auto fs = MustMount(FormattedPool(sc.pool_bytes, sc.format), &raw);
      sc.setup(*fs);
      fs->Unmount();
      const std::vector<char> start = raw->Snapshot();
      fs.reset();
      const std::string before = Observe(*MountImage(start));

      // The operation without a crash: its end state and persist points.
      fs = MountImage(start, &raw);
      const uint64_t p0 = raw->persist_points();
      sc.op(*fs);
      const uint64_t points = raw->persist_points() - p0;
      const std::string after = Observe(*fs);
      REQUIRE_MESSAGE(before != after, "the operation must change something visible");
      REQUIRE(points > 0);
      fs.reset();

      for (uint64_t k = 1; k <= points; ++k) {
        CAPTURE(k);
        fs = RunOp(sc, start, k, &raw);
        REQUIRE(raw->crashed());
        for (uint64_t seed = 0; seed < 4; ++seed) {
          CAPTURE(seed);
          CheckRecovered(raw->CrashImage(seed, seed != 0), before, after);
        }
        fs.reset();
      }
      MESSAGE(std::string(sc.name) << ": " << points << " persist points, all recovered");
    }
  }
}

}  // namespace
}  // namespace leasefs::engine
