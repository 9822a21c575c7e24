// leasectl against a real leasefs daemon (tests/support/mount.h): every
// subcommand's effect on the file's bytes and block map, exact output and
// exit codes, and the error lines of what leasefs refuses.
//
// Pool block numbers depend on the pool's geometry, so the tests read them
// from `leasectl bmap --json` and check that the text and the other files
// agree with them.
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "tests/tools/leasectl_util.h"

namespace leasefs::testing {
namespace {

using Json = nlohmann::ordered_json;

MountOptions SmallPool() {
  MountOptions o;
  o.pool_size = "64M";
  return o;
}

// One run of the block map, the fields the tests compare.
struct Run {
  uint64_t file_offset;
  uint64_t length;
  uint64_t pool_block;
  uint32_t refcount;
  std::string flags;  // comma-separated
  bool operator==(const Run&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Run& r) {
  return os << fmt::format("{{{}, {}, {}, {}, \"{}\"}}", r.file_offset, r.length, r.pool_block,
                           r.refcount, r.flags);
}

Json BmapJson(const std::string& path) {
  const ProcessResult r = Leasectl({"bmap", "--json", path});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  return Json::parse(r.output);
}

std::vector<Run> Runs(const std::string& path) {
  std::vector<Run> runs;
  const Json map = BmapJson(path);
  for (const Json& e : map["extents"]) {
    std::string flags;
    for (const Json& f : e["flags"]) flags += (flags.empty() ? "" : ",") + f.get<std::string>();
    runs.push_back(Run{e["file_offset"], e["length"], e["pool_block"], e["refcount"], flags});
  }
  return runs;
}

// The pool block of the file's first run, which must hold `blocks` blocks.
uint64_t FirstPoolBlock(const std::string& path, uint64_t blocks) {
  const std::vector<Run> runs = Runs(path);
  REQUIRE(!runs.empty());
  REQUIRE(runs[0].length == blocks * kBlock);
  return runs[0].pool_block;
}

std::string Bmap(const std::string& path) {
  const ProcessResult r = Leasectl({"bmap", path});
  CHECK(r.exit_code == 0);
  return r.output;
}

// The POOL-BLOCKS cell "first..last", padded to the column's width. Pool
// block numbers stay below 10000 in a 64 MiB pool, so the column is as wide
// as its title (11) in every test.
std::string PoolCell(uint64_t first, uint64_t blocks) {
  REQUIRE(first + blocks <= 10000);
  return fmt::format("{:<11}", fmt::format("{}..{}", first, first + blocks - 1));
}

// Runs leasectl, which must succeed silently.
void Ok(const std::vector<std::string>& args) {
  const ProcessResult r = Leasectl(args);
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  CHECK(r.output == "");
}

// Runs leasectl, which must fail (exit 1) with exactly `line`.
void Fails(const std::vector<std::string>& args, const std::string& line) {
  const ProcessResult r = Leasectl(args);
  CHECK(r.exit_code == 1);
  CHECK(r.output == line + "\n");
}

TEST_SUITE("leasectl") {
  TEST_CASE("reflink: both files show the same pool blocks, shared, refcount 2") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    Ok({"reflink", a, b});
    CHECK(ReadAll(b) == Blocks("abc"));
    const uint64_t p = FirstPoolBlock(a, 3);
    for (const std::string& f : {a, b}) {
      CAPTURE(f);
      CHECK(Bmap(f) == f + ": size 12288, block size 4096\n" +
                           " EXT: FILE-OFFSET BYTES    POOL-BLOCKS BLOCKS REFS FLAGS\n" +
                           "   0: [0..23]     0..12287 " + PoolCell(p, 3) +
                           "      3    2 shared\n");
      const Json extent = {{"file_offset", 0},   {"length", 12288}, {"pool_offset", p * kBlock},
                           {"pool_block", p},    {"blocks", 3},     {"refcount", 2},
                           {"flags", {"shared"}}};
      CHECK(BmapJson(f) == Json{{"file", f},
                                {"size", 12288},
                                {"block_size", 4096},
                                {"extents", Json::array({extent})}});
    }
  }

  TEST_CASE("reflink: a later write to the copy gives it a block of its own") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    Ok({"reflink", a, b});
    const uint64_t p = FirstPoolBlock(a, 3);
    WriteAt(b, kBlock, Blocks("x"));
    CHECK(ReadAll(a) == Blocks("abc"));
    CHECK(ReadAll(b) == Blocks("axc"));
    const std::vector<Run> rb = Runs(b);
    REQUIRE(rb.size() == 3);
    CHECK(rb[0] == Run{0, kBlock, p, 2, "shared"});
    CHECK(rb[1].refcount == 1);
    CHECK(rb[1].pool_block != p + 1);
    CHECK(rb[2] == Run{2 * kBlock, kBlock, p + 2, 2, "shared"});
    CHECK(Runs(a) == std::vector<Run>{{0, kBlock, p, 2, "shared"},
                                      {kBlock, kBlock, p + 1, 1, ""},
                                      {2 * kBlock, kBlock, p + 2, 2, "shared"}});
  }

  TEST_CASE("reflink: an existing DST is truncated first") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    WriteAt(b, 0, Blocks("xxxxx"));
    Ok({"reflink", a, b});
    CHECK(ReadAll(b) == Blocks("abc"));
    CHECK(Runs(b) == Runs(a));
  }

  TEST_CASE("reflink: an unaligned end of file is cloned too") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("ab") + "tail");
    Ok({"reflink", a, b});
    CHECK(ReadAll(b) == Blocks("ab") + "tail");
    CHECK(SizeOf(b) == 2 * kBlock + 4);
  }

  TEST_CASE("reflink --range: one block into a new file, at another offset") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    const uint64_t p = FirstPoolBlock(a, 3);
    Ok({"reflink", "--range", "4K:4K:8K", a, b});
    CHECK(ReadAll(b) == Blocks("00b"));
    CHECK(Bmap(b) == b + ": size 12288, block size 4096\n" +
                         " EXT: FILE-OFFSET BYTES       POOL-BLOCKS BLOCKS REFS FLAGS\n" +
                         "   0: [0..15]     0..8191     hole             2\n" +
                         "   1: [16..23]    8192..12287 " + PoolCell(p + 1, 1) +
                         "      1    2 shared\n");
    CHECK(Runs(a) == std::vector<Run>{{0, kBlock, p, 1, ""},
                                      {kBlock, kBlock, p + 1, 2, "shared"},
                                      {2 * kBlock, kBlock, p + 2, 1, ""}});
  }

  TEST_CASE("reflink --range: LEN 0 clones to the end of SRC; DST keeps the rest") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    WriteAt(b, 0, Blocks("xyzw"));
    Ok({"reflink", "--range", "4096:0", a, b});
    CHECK(ReadAll(b) == Blocks("xbcw"));
  }

  TEST_CASE("reflink --range: within one file, ranges apart") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("abcd"));
    const uint64_t p = FirstPoolBlock(a, 4);
    Ok({"reflink", "--range", "0:8K:8K", a, a});
    CHECK(ReadAll(a) == Blocks("abab"));
    CHECK(Runs(a) == std::vector<Run>{{0, 2 * kBlock, p, 2, "shared"},
                                      {2 * kBlock, 2 * kBlock, p, 2, "shared"}});
  }

  TEST_CASE("reflink: what leasefs refuses, one line each") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    WriteAt(b, 0, Blocks("xyz"));
    std::string b_after = Blocks("xyz");
    SUBCASE("unaligned offsets") {
      Fails({"reflink", "--range", "100:4096:0", a, b},
            "leasectl: reflink: " + b +
                ": Invalid argument (offsets and length must be multiples of 4096)");
    }
    SUBCASE("unaligned length that does not reach SRC's end of file") {
      Fails({"reflink", "--range", "0:5000", a, b},
            "leasectl: reflink: " + b +
                ": Invalid argument (offsets and length must be multiples of 4096)");
    }
    SUBCASE("SRC's unaligned end of file short of DST's") {
      WriteAt(a, 3 * kBlock, "tail");
      WriteAt(b, 3 * kBlock, Blocks("w"));
      Fails(
          {"reflink", "--range", "8K:0", a, b},
          "leasectl: reflink: " + b +
              ": Invalid argument (a range ending at SRC's unaligned end of file must reach DST's "
              "end of file)");
      CHECK(ReadAll(b) == Blocks("xyzw"));
      b_after = Blocks("xyzw");
    }
    SUBCASE("past SRC's end of file") {
      Fails({"reflink", "--range", "8K:8K", a, b},
            "leasectl: reflink: " + b + ": Invalid argument (the range goes past the end of SRC)");
    }
    SUBCASE("overlapping ranges of one file") {
      Fails({"reflink", "--range", "0:8K:4K", a, a},
            "leasectl: reflink: " + a + ": Invalid argument (the ranges overlap)");
      CHECK(ReadAll(a) == Blocks("abc"));
    }
    SUBCASE("the whole file onto itself") {
      Fails({"reflink", a, a}, "leasectl: reflink: " + a + ": SRC and DST are the same file");
      CHECK(ReadAll(a) == Blocks("abc"));
    }
    SUBCASE("SRC on another filesystem") {
      char t[] = "/dev/shm/leasectl-test-XXXXXX";
      const int fd = mkstemp(t);
      REQUIRE(fd >= 0);
      close(fd);
      WriteAt(t, 0, Blocks("s"));
      const std::string exdev =
          "leasectl: reflink: " + b +
          ": Invalid cross-device link (SRC and DST must be on the same leasefs mount)";
      Fails({"reflink", t, b}, exdev);
      Fails({"reflink", "--range", "0:4096", t, b}, exdev);
      unlink(t);
    }
    CHECK(ReadAll(b) == b_after);
  }

  TEST_CASE("fallocate --punch: a hole line, the size unchanged") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("abcd"));
    const uint64_t p = FirstPoolBlock(a, 4);
    Ok({"fallocate", "--punch", "4096", "4096", a});
    CHECK(ReadAll(a) == Blocks("a0cd"));
    CHECK(Bmap(a) == a + ": size 16384, block size 4096\n" +
                         " EXT: FILE-OFFSET BYTES       POOL-BLOCKS BLOCKS REFS FLAGS\n" +
                         "   0: [0..7]      0..4095     " + PoolCell(p, 1) + "      1    1 -\n" +
                         "   1: [8..15]     4096..8191  hole             1\n" +
                         "   2: [16..31]    8192..16383 " + PoolCell(p + 2, 2) +
                         "      2    1 -\n");
  }

  TEST_CASE("fallocate --alloc --keep-size: unwritten runs past the end of file") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("a"));
    const uint64_t p = FirstPoolBlock(a, 1);
    Ok({"fallocate", "--alloc", "--keep-size", "4K", "8K", a});
    CHECK(SizeOf(a) == kBlock);
    const std::vector<Run> runs = Runs(a);
    REQUIRE(runs.size() == 2);
    const uint64_t q = runs[1].pool_block;
    CHECK(runs[1] == Run{kBlock, 2 * kBlock, q, 1, "unwritten"});
    CHECK(Bmap(a) == a + ": size 4096, block size 4096\n" +
                         " EXT: FILE-OFFSET BYTES       POOL-BLOCKS BLOCKS REFS FLAGS\n" +
                         "   0: [0..7]      0..4095     " + PoolCell(p, 1) + "      1    1 -\n" +
                         "   1: [8..23]     4096..12287 " + PoolCell(q, 2) +
                         "      2    1 unwritten\n");
  }

  TEST_CASE("fallocate --alloc: the file grows, the new range reads as zeros") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("a"));
    Ok({"fallocate", "--alloc", "4K", "8K", a});
    CHECK(SizeOf(a) == 3 * kBlock);
    CHECK(ReadAll(a) == Blocks("a00"));
    const std::vector<Run> runs = Runs(a);
    REQUIRE(runs.size() == 2);
    CHECK(runs[1].flags == "unwritten");
  }

  TEST_CASE("fallocate --zero: zeros in place; past the end it grows the file unless --keep-size") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("abc"));
    Ok({"fallocate", "--zero", "4K", "4K", a});
    CHECK(ReadAll(a) == Blocks("a0c"));
    Ok({"fallocate", "--zero", "--keep-size", "12K", "4K", a});
    CHECK(SizeOf(a) == 3 * kBlock);
    Ok({"fallocate", "--zero", "12K", "4K", a});
    CHECK(ReadAll(a) == Blocks("a0c0"));
  }

  TEST_CASE("fallocate --collapse: the range goes, the rest moves down") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("abcd"));
    const uint64_t p = FirstPoolBlock(a, 4);
    Ok({"fallocate", "--collapse", "4096", "4096", a});
    CHECK(ReadAll(a) == Blocks("acd"));
    CHECK(Runs(a) == std::vector<Run>{{0, kBlock, p, 1, ""}, {kBlock, 2 * kBlock, p + 2, 1, ""}});
  }

  TEST_CASE("fallocate --insert: a hole opens, the rest moves up") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("abc"));
    const uint64_t p = FirstPoolBlock(a, 3);
    Ok({"fallocate", "--insert", "4K", "8K", a});
    CHECK(ReadAll(a) == Blocks("a00bc"));
    CHECK(Runs(a) ==
          std::vector<Run>{{0, kBlock, p, 1, ""}, {3 * kBlock, 2 * kBlock, p + 1, 1, ""}});
  }

  TEST_CASE("fallocate --unshare: the range gets blocks of its own") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    Ok({"reflink", a, b});
    const uint64_t p = FirstPoolBlock(a, 3);
    Ok({"fallocate", "--unshare", "4096", "4096", a});
    CHECK(ReadAll(a) == Blocks("abc"));
    const std::vector<Run> ra = Runs(a);
    REQUIRE(ra.size() == 3);
    CHECK(ra[0] == Run{0, kBlock, p, 2, "shared"});
    CHECK(ra[1].refcount == 1);
    CHECK(ra[1].flags == "");
    CHECK(ra[1].pool_block != p + 1);
    CHECK(ra[2] == Run{2 * kBlock, kBlock, p + 2, 2, "shared"});
    CHECK(Runs(b) == std::vector<Run>{{0, kBlock, p, 2, "shared"},
                                      {kBlock, kBlock, p + 1, 1, ""},
                                      {2 * kBlock, kBlock, p + 2, 2, "shared"}});
  }

  TEST_CASE("fallocate: what leasefs refuses, one line each, the file unchanged") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, 0, Blocks("abcd"));
    const std::string einval = "leasectl: fallocate: " + a + ": Invalid argument";
    SUBCASE("collapse, unaligned") {
      Fails({"fallocate", "--collapse", "100", "4096", a},
            einval + " (offset and length must be multiples of 4096)");
    }
    SUBCASE("insert, unaligned") {
      Fails({"fallocate", "--insert", "4096", "100", a},
            einval + " (offset and length must be multiples of 4096)");
    }
    SUBCASE("collapse reaching the end of file") {
      Fails({"fallocate", "--collapse", "8K", "8K", a},
            einval + " (the range must end before the end of the file)");
    }
    SUBCASE("insert at the end of file") {
      Fails({"fallocate", "--insert", "16K", "4K", a},
            einval + " (OFF must be before the end of the file)");
    }
    SUBCASE("length 0") {
      for (const char* mode : {"--collapse", "--insert", "--unshare", "--punch", "--zero"}) {
        CAPTURE(mode);
        Fails({"fallocate", mode, "0", "0", a}, einval + " (LEN must not be 0)");
      }
    }
    CHECK(ReadAll(a) == Blocks("abcd"));
  }

  TEST_CASE("bmap: holes between runs and up to the rounded-up end of file") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    WriteAt(a, kBlock, Blocks("b"));
    REQUIRE(truncate(a.c_str(), 10000) == 0);
    const uint64_t p = FirstPoolBlock(a, 1);
    CHECK(Bmap(a) == a + ": size 10000, block size 4096\n" +
                         " EXT: FILE-OFFSET BYTES       POOL-BLOCKS BLOCKS REFS FLAGS\n" +
                         "   0: [0..7]      0..4095     hole             1\n" +
                         "   1: [8..15]     4096..8191  " + PoolCell(p, 1) + "      1    1 -\n" +
                         "   2: [16..23]    8192..12287 hole             1\n");
  }

  TEST_CASE("bmap: a directory is a directory, not a file of another filesystem") {
    TestMount m(SmallPool());
    Fails({"bmap", m.mnt()}, "leasectl: bmap: " + m.mnt() + ": Is a directory");
  }

  TEST_CASE("bmap: an empty file has no extents") {
    TestMount m(SmallPool());
    const std::string e = m.path("e");
    WriteAt(e, 0, "");
    CHECK(Bmap(e) == e + ": size 0, block size 4096\n no extents\n");
    CHECK(BmapJson(e) ==
          Json{{"file", e}, {"size", 0}, {"block_size", 4096}, {"extents", Json::array()}});
  }

  TEST_CASE("bmap: more runs than one ioctl returns (LEASEFS_BMAP_MORE)") {
    TestMount m(SmallPool());
    const std::string a = m.path("a");
    // Every other block written: 300 runs, 299 holes.
    for (uint64_t i = 0; i < 300; ++i) WriteAt(a, 2 * i * kBlock, Blocks("x"));
    const std::vector<Run> runs = Runs(a);
    REQUIRE(runs.size() == 300);
    for (uint64_t i = 0; i < 300; ++i) CHECK(runs[i].file_offset == 2 * i * kBlock);
    const std::string text = Bmap(a);
    CHECK(std::count(text.begin(), text.end(), '\n') == 2 + 599);
    CHECK(text.find("\n 598: [4784..4791]") != std::string::npos);
  }

  TEST_CASE("defrag: a fragmented file becomes one run, its bytes unchanged") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    // Alternating writes interleave the two files' blocks in the pool.
    for (uint64_t i = 0; i < 3; ++i) {
      WriteAt(a, i * kBlock, Blocks(std::string(1, static_cast<char>('a' + i))));
      WriteAt(b, i * kBlock, Blocks("z"));
    }
    REQUIRE(unlink(b.c_str()) == 0);
    REQUIRE(Runs(a).size() == 3);
    const ProcessResult r = Leasectl({"defrag", a});
    CHECK(r.exit_code == 0);
    // How many blocks move depends on where free space lies: 1 to 3.
    const std::string line = r.output;
    const std::string moved_one = a + ": 3 extents -> 1 extent, 1 block moved\n";
    const std::string moved_two = a + ": 3 extents -> 1 extent, 2 blocks moved\n";
    const std::string moved_three = a + ": 3 extents -> 1 extent, 3 blocks moved\n";
    CHECK_MESSAGE((line == moved_one || line == moved_two || line == moved_three), line);
    CHECK(ReadAll(a) == Blocks("abc"));
    const std::vector<Run> runs = Runs(a);
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].length == 3 * kBlock);
  }

  TEST_CASE("defrag: shared blocks stay; one line per file") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), b = m.path("b");
    WriteAt(a, 0, Blocks("abc"));
    Ok({"reflink", a, b});
    const std::vector<Run> before = Runs(a);
    const ProcessResult r = Leasectl({"defrag", a, b});
    CHECK(r.exit_code == 0);
    CHECK(r.output == a + ": 1 extent -> 1 extent, 0 blocks moved\n" + b +
                          ": 1 extent -> 1 extent, 0 blocks moved\n");
    CHECK(Runs(a) == before);
  }

  TEST_CASE("defrag: a file that fails does not stop the others") {
    TestMount m(SmallPool());
    const std::string a = m.path("a"), d = m.path("d");
    WriteAt(a, 0, Blocks("ab"));
    REQUIRE(mkdir(d.c_str(), 0755) == 0);
    const ProcessResult r = Leasectl({"defrag", d, a});
    CHECK(r.exit_code == 1);
    CHECK(r.output == "leasectl: defrag: " + d + ": Is a directory\n" + a +
                          ": 1 extent -> 1 extent, 0 blocks moved\n");
  }
}

}  // namespace
}  // namespace leasefs::testing
