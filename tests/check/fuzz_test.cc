// Random garbage over the metadata: the checker must neither crash nor hang,
// a check and a repair must agree, and after a repair the pool must be clean.
#include <cstring>
#include <random>
#include <string>

#include <doctest/doctest.h>

#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;

using Rng = std::mt19937_64;

// Overwrites `count` random bytes in [begin, end) of the pool.
void Scribble(Image& img, Rng& rng, uint64_t begin, uint64_t end, int count) {
  std::uniform_int_distribution<uint64_t> at(begin, end - 1);
  for (int i = 0; i < count; ++i) img.base()[at(rng)] = static_cast<char>(rng());
}

// Overwrites one random 8-byte aligned word with a small or a random value:
// small values (block and inode numbers, lengths) reach deeper than noise.
void Poke(Image& img, Rng& rng, uint64_t begin, uint64_t end) {
  std::uniform_int_distribution<uint64_t> at(begin / 8, end / 8 - 1);
  const uint64_t off = at(rng) * 8;
  uint64_t v;
  switch (rng() % 4) {
    case 0:
      v = rng() % 8;
      break;
    case 1:
      v = img.sb().data_start + rng() % img.sb().data_blocks;
      break;
    case 2:
      v = rng() % img.sb().inode_count;
      break;
    default:
      v = rng();
      break;
  }
  const int width = 1 << (rng() % 4);  // 1, 2, 4 or 8 bytes
  std::memcpy(img.base() + off, &v, width);
}

struct Region {
  const char* name;
  uint64_t begin, end;  // pool bytes
};

std::vector<Region> Regions(Image& img, const Tree& t) {
  const Superblock& sb = img.sb();
  const uint64_t B = kBlockSize;
  auto block = [&](uint64_t b) { return Region{"", b * B, (b + 1) * B}; };
  std::vector<Region> r = {
      {"inode table", sb.inode_start * B, sb.quarantine_start * B},
      {"first inodes", sb.inode_start * B, sb.inode_start * B + 100 * sizeof(Inode)},
      {"quarantine", sb.quarantine_start * B, sb.refcount_start * B},
      {"refcounts", sb.refcount_start * B, sb.data_start * B},
      {"journal", sb.journal_start * B, (sb.journal_start + 2) * B},
      {"used data", sb.data_start * B, (t.quarantined + 2) * B},
  };
  Region root = block(img.FileBlock(1, 0));
  root.name = "root directory block";
  Region big = block(img.FileBlock(t.big, 1));
  big.name = "directory block";
  Region chain = block(t.chain);
  chain.name = "extent chain block";
  Region xattr = block(t.xattr);
  xattr.name = "xattr block";
  r.insert(r.end(), {root, big, chain, xattr});
  return r;
}

void ExpectCheckAndRepairAgree(Image& img) {
  const check::CheckReport look = Check(img);
  const check::CheckReport fix = Check(img, true);
  CHECK(Problems(look) == Problems(fix));
  CHECK(fix.errors == 0);
  const check::CheckReport again = Check(img);
  CHECK(Problems(again).empty());
  CHECK(again.clean());
}

TEST_SUITE("check") {
  TEST_CASE("Fuzz: scribbles over one metadata region at a time") {
    for (uint64_t seed = 0; seed < 200; ++seed) {
      Image img;
      const Tree t = BuildTree(img);
      Rng rng(seed);
      const std::vector<Region> regions = Regions(img, t);
      const Region& r = regions[seed % regions.size()];
      CAPTURE(seed);
      CAPTURE(r.name);
      if (seed % 2 == 0) {
        Scribble(img, rng, r.begin, r.end, 1 + static_cast<int>(rng() % 64));
      } else {
        for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i)
          Poke(img, rng, r.begin, r.end);
      }
      ExpectCheckAndRepairAgree(img);
    }
  }

  TEST_CASE("Fuzz: pokes all over the metadata") {
    for (uint64_t seed = 1000; seed < 1100; ++seed) {
      Image img;
      const Tree t = BuildTree(img);
      Rng rng(seed);
      CAPTURE(seed);
      const uint64_t begin = img.sb().inode_start * kBlockSize;
      const uint64_t end = (t.quarantined + 2) * kBlockSize;
      for (int i = 0, n = 1 + static_cast<int>(rng() % 32); i < n; ++i) Poke(img, rng, begin, end);
      ExpectCheckAndRepairAgree(img);
    }
  }

  TEST_CASE("Fuzz: a committed journal transaction with random records") {
    for (uint64_t seed = 2000; seed < 2050; ++seed) {
      Image img;
      BuildTree(img);
      Rng rng(seed);
      CAPTURE(seed);
      std::vector<std::pair<uint64_t, std::vector<char>>> copies;
      for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i) {
        std::vector<char> bytes(1 + rng() % 64);
        for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? rng() : 0);
        const uint64_t dest =
            img.sb().inode_start * kBlockSize +
            rng() % ((img.sb().data_start - img.sb().inode_start + 50) * kBlockSize);
        copies.emplace_back(dest, std::move(bytes));
      }
      img.CommitWithoutApplying(copies);
      // In memory the replay is the same for both runs, so compare a copy.
      Image copy;
      std::memcpy(copy.base(), img.base(), img.media().size());
      const check::CheckReport look = Check(copy);
      const check::CheckReport fix = Check(img, true);
      CHECK(Problems(look) == Problems(fix));
      CHECK(Check(img).clean());
    }
  }

  TEST_CASE("Fuzz: random pools never crash the checker") {
    for (uint64_t seed = 3000; seed < 3020; ++seed) {
      Image img;
      BuildTree(img);
      Rng rng(seed);
      CAPTURE(seed);
      // Keep the superblocks (else there is nothing to check) but randomise
      // everything up to the end of the used data.
      const uint64_t begin = img.sb().journal_start * kBlockSize;
      for (uint64_t off = begin; off < (img.sb().data_start + 300) * kBlockSize; off += 8) {
        const uint64_t v = rng() % 3 == 0 ? rng() : rng() % 64;
        std::memcpy(img.base() + off, &v, 8);
      }
      ExpectCheckAndRepairAgree(img);
    }
  }

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::testing
