#include "engine/allocator.h"

#include <vector>

#include <doctest/doctest.h>

namespace leasefs::engine {
namespace {

// Refcounts for 100 blocks starting at 1000 where `used` blocks are taken.
BlockAllocator WithUsed(std::initializer_list<std::pair<uint64_t, uint64_t>> used) {
  std::vector<uint32_t> rc(100, 0);
  for (auto [b, n] : used)
    for (uint64_t i = b; i < b + n; ++i) rc[i - 1000] = 1;
  BlockAllocator a;
  a.Init(1000, 100, rc.data(), 100);
  return a;
}

TEST_SUITE("allocator") {
  TEST_CASE("BlockAllocator: builds free runs from refcounts") {
    BlockAllocator a = WithUsed({{1000, 10}, {1050, 5}});
    CHECK(a.free_blocks() == 85);
    CHECK(a.free_runs() == 2);
    CHECK(a.IsFree({1010, 40}));
    CHECK_FALSE(a.IsFree({1049, 2}));
  }

  TEST_CASE("BlockAllocator: reads only the known refcounts; the blocks after them are free") {
    // Refcounts past `known` are garbage (beyond the pool's refcount mark).
    std::vector<uint32_t> rc(100, 7);
    for (uint64_t i = 0; i < 30; ++i) rc[i] = i < 10 || (i >= 20 && i < 25) ? 1 : 0;
    BlockAllocator a;
    a.Init(1000, 100, rc.data(), 30);
    CHECK(a.free_blocks() == 10 + 5 + 70);
    // [1010, 1020) and [1025, 1100): the free tail of the known part joins
    // the unknown rest.
    CHECK(a.free_runs() == 2);
    CHECK(a.IsFree({1025, 75}));
    CHECK_FALSE(a.IsFree({1024, 2}));
    // Best fit: a request the hole holds goes there, a bigger one to the
    // start of the tail, so allocations stay low.
    std::vector<BlockRange> out;
    CHECK(a.Allocate(8, 0, &out) == 8);
    CHECK(out == std::vector<BlockRange>{{1010, 8}});
    out.clear();
    CHECK(a.Allocate(12, 0, &out) == 12);
    CHECK(out == std::vector<BlockRange>{{1025, 12}});
    // Nothing known: one run of everything.
    BlockAllocator b;
    b.Init(1000, 100, nullptr, 0);
    CHECK(b.free_runs() == 1);
    CHECK(b.IsFree({1000, 100}));
  }

  TEST_CASE("BlockAllocator: continues at the goal so files stay contiguous") {
    BlockAllocator a = WithUsed({});
    std::vector<BlockRange> out;
    CHECK(a.Allocate(10, 1040, &out) == 10);
    REQUIRE(out.size() == 1);
    CHECK(out[0] == BlockRange{1040, 10});
    out.clear();
    CHECK(a.Allocate(5, 1050, &out) == 5);
    CHECK(out[0] == BlockRange{1050, 5});
  }

  TEST_CASE("BlockAllocator: picks the smallest run that holds the request") {
    BlockAllocator a = WithUsed({{1000, 10}, {1013, 20}, {1040, 60}});  // free: 1010+3, 1033+7
    std::vector<BlockRange> out;
    CHECK(a.Allocate(5, 0, &out) == 5);
    CHECK(out == std::vector<BlockRange>{{1033, 5}});
    out.clear();
    CHECK(a.Allocate(3, 0, &out) == 3);
    CHECK(out == std::vector<BlockRange>{{1010, 3}});
  }

  TEST_CASE("BlockAllocator: gathers pieces when no run is big enough, and runs dry") {
    BlockAllocator a = WithUsed({{1002, 3}, {1010, 90}});  // free: 1000+2, 1005+5
    std::vector<BlockRange> out;
    CHECK(a.Allocate(10, 0, &out) == 7);
    CHECK(out == std::vector<BlockRange>{{1005, 5}, {1000, 2}});
    CHECK(a.free_blocks() == 0);
    out.clear();
    CHECK(a.Allocate(1, 0, &out) == 0);
    CHECK(out.empty());
  }

  TEST_CASE("BlockAllocator: freeing coalesces with both neighbours") {
    BlockAllocator a = WithUsed({{1010, 10}});
    CHECK(a.free_runs() == 2);
    a.Free({1010, 4});
    a.Free({1016, 4});
    CHECK(a.free_runs() == 2);
    a.Free({1014, 2});
    CHECK(a.free_runs() == 1);
    CHECK(a.free_blocks() == 100);
    CHECK(a.IsFree({1000, 100}));
  }

  TEST_CASE("BlockAllocator: a goal inside a used run is ignored") {
    BlockAllocator a = WithUsed({{1000, 50}});
    std::vector<BlockRange> out;
    CHECK(a.Allocate(4, 1020, &out) == 4);
    CHECK(out == std::vector<BlockRange>{{1050, 4}});
  }
}

}  // namespace
}  // namespace leasefs::engine
