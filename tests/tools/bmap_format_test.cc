// leasectl's argument parsing and block-map output, without a mount.
#include "tools/leasectl/bmap_format.h"

#include <doctest/doctest.h>

#include "tools/leasectl/args.h"
#include "tools/leasectl/cli.h"

namespace leasefs::leasectl {
namespace {

constexpr uint64_t kBlock = 4096;

leasefs_extent Run(uint64_t file_block, uint64_t pool_block, uint64_t blocks, uint32_t flags,
                   uint32_t refcount) {
  return leasefs_extent{file_block * kBlock, pool_block * kBlock, blocks * kBlock, flags, refcount};
}

// Runs of every kind, a hole between them and one up to the end of file.
BlockMap MixedMap() {
  BlockMap m;
  m.file = "/mnt/a";
  m.size = 24000;
  m.block_size = kBlock;
  m.extents = {
      Run(0, 1033, 2, LEASEFS_EXTENT_SHARED, 2),
      Run(3, 1040, 1, 0, 1),
      Run(4, 2000, 1, LEASEFS_EXTENT_UNWRITTEN | LEASEFS_EXTENT_QUARANTINED, 1),
  };
  return m;
}

TEST_SUITE("leasectl") {
  TEST_CASE("ParseOffset: bytes and K/M/G/T suffixes, at most INT64_MAX") {
    CHECK(ParseOffset("0") == 0u);
    CHECK(ParseOffset("4096") == 4096u);
    CHECK(ParseOffset("64K") == 65536u);
    CHECK(ParseOffset("1M") == 1048576u);
    CHECK(ParseOffset("2G") == 2147483648u);
    CHECK(ParseOffset("9223372036854775807") == 9223372036854775807u);
    CHECK(ParseOffset("9223372036854775808") == std::nullopt);
    CHECK(ParseOffset("8388607T") == 8388607ull << 40);
    CHECK(ParseOffset("8388608T") == std::nullopt);  // 2^63
    CHECK(ParseOffset("") == std::nullopt);
    CHECK(ParseOffset("-1") == std::nullopt);
    CHECK(ParseOffset("12Q") == std::nullopt);
  }

  TEST_CASE("ParseCloneRange: OFF:LEN[:DSTOFF], DSTOFF defaulting to OFF") {
    CHECK(ParseCloneRange("4K:8K") == CloneRangeArg{4096, 8192, 4096});
    CHECK(ParseCloneRange("4K:0:1M") == CloneRangeArg{4096, 0, 1048576});
    CHECK(ParseCloneRange("0:4096:0") == CloneRangeArg{0, 4096, 0});
    CHECK(ParseCloneRange("4096") == std::nullopt);
    CHECK(ParseCloneRange(":4096") == std::nullopt);
    CHECK(ParseCloneRange("0:") == std::nullopt);
    CHECK(ParseCloneRange("0:4096:") == std::nullopt);
    CHECK(ParseCloneRange("0:4096:0:0") == std::nullopt);
    CHECK(ParseCloneRange("a:b") == std::nullopt);
  }

  TEST_CASE("FlagNames: known bits as words in bit order, unknown bits in hex") {
    CHECK(FlagNames(0).empty());
    CHECK(FlagNames(LEASEFS_EXTENT_SHARED | LEASEFS_EXTENT_UNWRITTEN) ==
          std::vector<std::string>{"unwritten", "shared"});
    CHECK(FlagNames(LEASEFS_EXTENT_QUARANTINED | 0x10u) ==
          std::vector<std::string>{"quarantined", "0x10"});
  }

  TEST_CASE("FormatBlockMap: runs, holes between and up to the rounded-up end of file") {
    CHECK(FormatBlockMap(MixedMap()) ==
          "/mnt/a: size 24000, block size 4096\n"
          " EXT: FILE-OFFSET BYTES        POOL-BLOCKS BLOCKS REFS FLAGS\n"
          "   0: [0..15]     0..8191      1033..1034       2    2 shared\n"
          "   1: [16..23]    8192..12287  hole             1\n"
          "   2: [24..31]    12288..16383 1040..1040       1    1 -\n"
          "   3: [32..39]    16384..20479 2000..2000       1    1 unwritten,quarantined\n"
          "   4: [40..47]    20480..24575 hole             1\n");
  }

  TEST_CASE("FormatBlockMap: an empty file has no extents") {
    CHECK(FormatBlockMap(BlockMap{"e", 0, kBlock, {}}) ==
          "e: size 0, block size 4096\n"
          " no extents\n");
  }

  TEST_CASE("FormatBlockMap: a sparse file is one hole") {
    CHECK(FormatBlockMap(BlockMap{"s", 10000, kBlock, {}}) ==
          "s: size 10000, block size 4096\n"
          " EXT: FILE-OFFSET BYTES    POOL-BLOCKS BLOCKS REFS FLAGS\n"
          "   0: [0..23]     0..12287 hole             3\n");
  }

  TEST_CASE("FormatBlockMap: runs past the end of file are listed, no hole after them") {
    CHECK(
        FormatBlockMap(BlockMap{
            "p", 100, kBlock, {Run(0, 77, 1, 0, 1), Run(1, 78, 2, LEASEFS_EXTENT_UNWRITTEN, 1)}}) ==
        "p: size 100, block size 4096\n"
        " EXT: FILE-OFFSET BYTES       POOL-BLOCKS BLOCKS REFS FLAGS\n"
        "   0: [0..7]      0..4095     77..77           1    1 -\n"
        "   1: [8..23]     4096..12287 78..79           2    1 unwritten\n");
  }

  TEST_CASE("FormatBlockMap: columns widen for wide numbers") {
    BlockMap m{"w", 1ull << 40, kBlock, {Run(0, 123456789, 1000, 0, 65000)}};
    m.extents[0].file_offset = (1ull << 40) - 1000 * kBlock;
    CHECK(FormatBlockMap(m) ==
          "w: size 1099511627776, block size 4096\n"
          " EXT: FILE-OFFSET              BYTES                        POOL-BLOCKS             "
          "BLOCKS  REFS FLAGS\n"
          "   0: [0..2147475647]          0..1099507531775             hole                 "
          "268434456\n"
          "   1: [2147475648..2147483647] 1099507531776..1099511627775 123456789..123457788      "
          "1000 65000 -\n");
  }

  TEST_CASE("BlockMapJson: keys in order, pool blocks, flags as words, no holes") {
    CHECK(BlockMapJson(MixedMap()).dump() ==
          R"({"file":"/mnt/a","size":24000,"block_size":4096,"extents":[)"
          R"({"file_offset":0,"length":8192,"pool_offset":4231168,"pool_block":1033,"blocks":2,)"
          R"("refcount":2,"flags":["shared"]},)"
          R"({"file_offset":12288,"length":4096,"pool_offset":4259840,"pool_block":1040,)"
          R"("blocks":1,"refcount":1,"flags":[]},)"
          R"({"file_offset":16384,"length":4096,"pool_offset":8192000,"pool_block":2000,)"
          R"("blocks":1,"refcount":1,"flags":["unwritten","quarantined"]}]})");
  }

  TEST_CASE("Summary: the part of a man page's first line after the dash") {
    CHECK(Summary("leasectl bmap - print the map\n\nSYNOPSIS\n") == "print the map");
    CHECK(Summary("no dash here") == "no dash here");
  }
}

}  // namespace
}  // namespace leasefs::leasectl
