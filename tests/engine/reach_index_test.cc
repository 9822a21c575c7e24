// The quarantine's in-memory index: coverage counts of overlapping ranges and
// the set of quarantined blocks.
#include "engine/reach_index.h"

#include <doctest/doctest.h>

namespace leasefs::engine {
namespace {

using Parts = std::vector<BlockRange>;

TEST_SUITE("dax") {
  TEST_CASE("Coverage: overlapping ranges count, and parts are merged") {
    Coverage c;
    CHECK(c.empty());
    c.Add({10, 10});  // 10-19
    c.Add({15, 10});  // 15-24
    CHECK_FALSE(c.Covers(9));
    CHECK(c.Covers(10));
    CHECK(c.Covers(24));
    CHECK_FALSE(c.Covers(25));
    CHECK(c.CoveredParts({0, 100}) == Parts{{10, 15}});
    CHECK(c.CoveredParts({12, 2}) == Parts{{12, 2}});
    c.Remove({10, 10});
    CHECK_FALSE(c.Covers(14));
    CHECK(c.CoveredParts({0, 100}) == Parts{{15, 10}});
    c.Add({30, 5});
    CHECK(c.CoveredParts({20, 100}) == Parts{{20, 5}, {30, 5}});
    c.Remove({15, 10});
    c.Remove({30, 5});
    CHECK(c.empty());
    CHECK(c.CoveredParts({0, 100}).empty());
  }

  TEST_CASE("Coverage: uncovered parts and the alternating walk complement the covered parts") {
    Coverage c;
    c.Add({10, 5});  // 10-14
    c.Add({20, 5});  // 20-24
    CHECK(c.UncoveredParts({0, 30}) == Parts{{0, 10}, {15, 5}, {25, 5}});
    CHECK(c.UncoveredParts({10, 5}).empty());
    CHECK(c.UncoveredParts({12, 10}) == Parts{{15, 5}});
    std::vector<std::pair<BlockRange, bool>> walk;
    c.ForEachPart({12, 15}, [&walk](BlockRange p, bool covered) { walk.push_back({p, covered}); });
    CHECK(walk == std::vector<std::pair<BlockRange, bool>>{
                      {{12, 3}, true}, {{15, 5}, false}, {{20, 5}, true}, {{25, 2}, false}});
    CHECK(c.CoversAny({14, 1}));
    CHECK(c.CoversAny({0, 11}));
    CHECK_FALSE(c.CoversAny({15, 5}));
    CHECK_FALSE(c.CoversAny({25, 0}));
  }

  TEST_CASE("Coverage: the same range twice needs two removals") {
    Coverage c;
    c.Add({5, 3});
    c.Add({5, 3});
    c.Remove({5, 3});
    CHECK(c.Covers(6));
    c.Remove({5, 3});
    CHECK_FALSE(c.Covers(6));
    CHECK(c.empty());
  }

  TEST_CASE("BlockSet: insert merges neighbours, erase cuts, counts are exact") {
    BlockSet s;
    s.Insert({10, 5});
    s.Insert({15, 5});  // adjacent: one run
    s.Insert({30, 2});
    CHECK(s.size() == 12);
    CHECK(s.Parts({0, 100}) == Parts{{10, 10}, {30, 2}});
    CHECK(s.CountIn({12, 20}) == 10);
    s.Erase({12, 3});
    CHECK(s.Parts({0, 100}) == Parts{{10, 2}, {15, 5}, {30, 2}});
    CHECK(s.size() == 9);
    CHECK(s.Contains(11));
    CHECK_FALSE(s.Contains(12));
    s.Erase({0, 100});
    CHECK(s.size() == 0);
  }

  TEST_CASE("BlockSet: a run inserted just before another joins it; first() is the lowest") {
    BlockSet s;
    s.Insert({1, 127});
    s.Insert({200, 5});
    CHECK(s.first() == 1);
    s.Insert({0, 1});  // (read a node it had erased, before)
    CHECK(s.Parts({0, 1000}) == Parts{{0, 128}, {200, 5}});
    CHECK(s.first() == 0);
    s.Insert({128, 72});  // joins both
    CHECK(s.Parts({0, 1000}) == Parts{{0, 205}});
    CHECK(s.size() == 205);
  }
}

}  // namespace
}  // namespace leasefs::engine
