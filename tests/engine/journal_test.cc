#include "engine/journal.h"

#include <xxhash.h>

#include <cstring>

#include <doctest/doctest.h>

#include "engine/format.h"
#include "engine/sim_media.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace layout;

const Superblock& Sb(const Media& m) { return *reinterpret_cast<const Superblock*>(m.base()); }

// Pool byte offset of the first inode-table byte: journal records may write
// anywhere from there on.
char* Meta(Media& m, uint64_t off = 0) { return m.base() + Sb(m).inode_start * kBlockSize + off; }

void StageSample(Tx& tx, Media& m) {
  const char hello[] = "hello journal";
  tx.Copy(Meta(m, 8), hello, sizeof hello);
  auto* rc = reinterpret_cast<uint32_t*>(m.base() + Sb(m).refcount_start * kBlockSize);
  tx.Fill32(rc + 10, 7, 100);
}

void CheckSampleApplied(const char* base, const Superblock& sb) {
  CHECK(std::strcmp(base + sb.inode_start * kBlockSize + 8, "hello journal") == 0);
  const auto* rc = reinterpret_cast<const uint32_t*>(base + sb.refcount_start * kBlockSize);
  CHECK(rc[9] == 0);
  CHECK(rc[10] == 7);
  CHECK(rc[109] == 7);
  CHECK(rc[110] == 0);
}

TEST_SUITE("journal") {
  TEST_CASE("Journal: a commit applies copies and fills and leaves no transaction behind") {
    auto m = testing::FormattedPool();
    Journal j(*m, Sb(*m));
    Tx tx = j.Begin();
    StageSample(tx, *m);
    CHECK(tx.record_count() == 2);
    j.Commit(tx);
    CheckSampleApplied(m->base(), Sb(*m));
    CHECK_FALSE(j.HasCommitted());
    CHECK(j.last_seq() == 1);
    auto again = j.Recover();
    REQUIRE(again.ok());
    CHECK_FALSE(*again);
  }

  TEST_CASE("Journal: adjacent copies merge into one record") {
    auto m = testing::FormattedPool();
    Journal j(*m, Sb(*m));
    Tx tx = j.Begin();
    uint64_t a = 1, b = 2, c = 3;
    tx.Put(reinterpret_cast<uint64_t*>(Meta(*m, 0)), a);
    tx.Put(reinterpret_cast<uint64_t*>(Meta(*m, 8)), b);
    tx.Put(reinterpret_cast<uint64_t*>(Meta(*m, 24)), c);  // not adjacent
    CHECK(tx.record_count() == 2);
    j.Commit(tx);
    uint64_t got[4];
    std::memcpy(got, Meta(*m), sizeof got);
    CHECK(got[0] == 1);
    CHECK(got[1] == 2);
    CHECK(got[2] == 0);
    CHECK(got[3] == 3);
  }

  // Crashes at each persist point of one commit and recovers the image.
  TEST_CASE("Journal: a crash at any persist point leaves the transaction all or nothing") {
    auto base = testing::FormattedPool();
    const std::vector<char> start = base->Snapshot();
    // Count the persist points of one commit.
    uint64_t points;
    {
      auto m = SimMedia::FromImage(start);
      Journal j(*m, Sb(*m));
      Tx tx = j.Begin();
      StageSample(tx, *m);
      j.Commit(tx);
      points = m->persist_points();
    }
    CHECK(points == 4);  // the body (and the blocks written in place), commit point, apply, clear
    for (uint64_t k = 1; k <= points; ++k) {
      for (uint64_t seed = 0; seed < 8; ++seed) {
        CAPTURE(k);
        CAPTURE(seed);
        auto m = SimMedia::FromImage(start);
        m->ArmCrash(k);
        Journal j(*m, Sb(*m));
        Tx tx = j.Begin();
        StageSample(tx, *m);
        j.Commit(tx);
        const std::vector<char> img = m->CrashImage(seed, seed != 0);
        auto r = SimMedia::FromImage(img);
        Journal rj(*r, Sb(*r));
        auto replayed = rj.Recover();
        REQUIRE(replayed.ok());
        const auto& sb = Sb(*r);
        const char* text = r->base() + sb.inode_start * kBlockSize + 8;
        if (k <= 2) {
          // Before the commit point: the transaction never happened, so the
          // home locations are untouched (nothing is applied before it).
          CHECK_FALSE(*replayed);
          CHECK(text[0] == 0);
        } else {
          CheckSampleApplied(r->base(), sb);
        }
        CHECK_FALSE(rj.HasCommitted());
      }
    }
  }

  TEST_CASE("Journal: a torn body fails its checksum and is ignored") {
    auto m = testing::FormattedPool();
    m->ArmCrash(3);  // crash when applying: the transaction is committed
    Journal j(*m, Sb(*m));
    Tx tx = j.Begin();
    StageSample(tx, *m);
    j.Commit(tx);
    std::vector<char> img = m->CrashImage(0, false);
    const auto& sb = *reinterpret_cast<const Superblock*>(img.data());
    img[(sb.journal_start + 1) * kBlockSize + 20] ^= 0x40;  // flip a payload bit
    auto r = SimMedia::FromImage(img);
    Journal rj(*r, Sb(*r));
    CHECK_FALSE(rj.HasCommitted());
    auto replayed = rj.Recover();
    REQUIRE(replayed.ok());
    CHECK_FALSE(*replayed);
  }

  TEST_CASE("Journal: a torn header is ignored") {
    auto m = testing::FormattedPool();
    m->ArmCrash(3);
    Journal j(*m, Sb(*m));
    Tx tx = j.Begin();
    StageSample(tx, *m);
    j.Commit(tx);
    std::vector<char> img = m->CrashImage(0, false);
    const auto& sb = *reinterpret_cast<const Superblock*>(img.data());
    img[sb.journal_start * kBlockSize + 16] ^= 1;  // body_bytes
    auto r = SimMedia::FromImage(img);
    Journal rj(*r, Sb(*r));
    auto replayed = rj.Recover();
    REQUIRE(replayed.ok());
    CHECK_FALSE(*replayed);
  }

  TEST_CASE("Journal: a checksummed record aimed at the superblock is corruption") {
    auto m = testing::FormattedPool();
    const Superblock& sb = Sb(*m);
    // Forge a well-checksummed transaction whose record targets block 0.
    uint64_t body[4] = {};
    JournalRecord rec{kRecCopy, 0, 8, 0};
    std::memcpy(body, &rec, sizeof rec);
    body[2] = 0xdeadbeef;
    char* jbody = m->base() + (sb.journal_start + 1) * kBlockSize;
    std::memcpy(jbody, body, 24);
    JournalHeader h{};
    std::memcpy(h.magic, kJournalMagic, 8);
    h.seq = 5;
    h.body_bytes = 24;
    h.body_xxh64 = XXH64(jbody, 24, 5);
    h.record_count = 1;
    h.header_xxh64 = XXH64(&h, 56, 0);
    std::memcpy(m->base() + sb.journal_start * kBlockSize, &h, sizeof h);
    const std::vector<char> before = m->Snapshot();
    Journal j(*m, sb);
    CHECK(j.HasCommitted());
    auto replayed = j.Recover();
    REQUIRE_FALSE(replayed.ok());
    CHECK(replayed.status().err() == EUCLEAN);
    CHECK(m->Snapshot() == before);  // nothing applied
  }

  TEST_CASE("Journal: replaying the same transaction twice is harmless") {
    auto m = testing::FormattedPool();
    m->ArmCrash(4);  // after apply, before the header is cleared
    Journal j(*m, Sb(*m));
    Tx tx = j.Begin();
    StageSample(tx, *m);
    j.Commit(tx);
    const std::vector<char> img = m->CrashImage(0, false);
    auto r = SimMedia::FromImage(img);
    {
      Journal rj(*r, Sb(*r));
      REQUIRE(rj.HasCommitted());
      // Replay without clearing by crashing at the clear.
      r->ArmCrash(2);
      REQUIRE(rj.Recover().ok());
    }
    auto r2 = SimMedia::FromImage(r->CrashImage(0, false));
    Journal rj2(*r2, Sb(*r2));
    auto again = rj2.Recover();
    REQUIRE(again.ok());
    CheckSampleApplied(r2->base(), Sb(*r2));
  }
}

}  // namespace
}  // namespace leasefs::engine
