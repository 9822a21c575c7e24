// CheckPool on clean pools, the superblock and the journal.
#include "engine/check/check.h"

#include <xxhash.h>

#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <sys/stat.h>

#include "engine/superblock.h"
#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;

void Reseal(Superblock* sb) { sb->checksum = engine::SuperblockChecksum(*sb); }

TEST_SUITE("check") {
  TEST_CASE("CheckPool: a freshly formatted pool is clean") {
    Image img;
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.clean());
    CHECK(r.ExitCode() == 0);
    CHECK_FALSE(r.journal_replayed);
    CHECK(r.inode_slots == img.sb().inode_count - 1);
    CHECK(r.inodes_in_use == 1);
    CHECK(r.directories == 1);
    CHECK(r.data_blocks == img.sb().data_blocks);
    CHECK(r.data_blocks_used == 0);
  }

  TEST_CASE("CheckPool: a tree using every structure is clean") {
    Image img;
    BuildTree(img);
    const check::CheckReport r = Check(img);
    CHECK(r.findings.empty());
    CHECK(r.ExitCode() == 0);
    CHECK(r.inodes_in_use == 82);
    CHECK(r.directories == 4);
    CHECK(r.regular_files == 74);
    CHECK(r.symlinks == 2);
    CHECK(r.special_files == 2);
    // file 3 (shared by clone), xattr 1, long symlink 1, frag 10 + 2 + chain 1,
    // directories: / 1, /dir 1, /dir/sub 1, /big 3; quarantine 2.
    CHECK(r.data_blocks_used == 27);
    CHECK(r.orphans == 0);
  }

  TEST_CASE("CheckPool: repairing a clean pool changes nothing") {
    Image img;
    BuildTree(img);
    const std::vector<char> before = img.Snapshot();
    const check::CheckReport r = Check(img, /*repair=*/true);
    CHECK(r.findings.empty());
    CHECK(r.ExitCode() == 0);
    CHECK(img.Snapshot() == before);
  }

  TEST_CASE("CheckPool: a check writes nothing even when it finds errors") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 9;
    *img.refcount(t.chain) = 0;
    const std::vector<char> before = img.Snapshot();
    const check::CheckReport r = Check(img);
    CHECK(r.errors == 2);
    CHECK(r.ExitCode() == 4);
    CHECK(img.Snapshot() == before);
  }

  TEST_CASE("CheckPool: findings print as one line each") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 3;
    const check::CheckReport look = Check(img);
    REQUIRE(look.findings.size() == 1);
    CHECK(look.findings[0].ToString() ==
          "error: inode " + std::to_string(t.file) + ": nlink 3 but 2 entries name it");
    const check::CheckReport fix = Check(img, true);
    REQUIRE(fix.findings.size() == 1);
    CHECK(fix.findings[0].ToString() == "repaired: inode " + std::to_string(t.file) +
                                            ": nlink 3 but 2 entries name it (set nlink to 2)");
  }

  TEST_CASE("CheckPool: max_findings caps the list but not the counts") {
    Image img;
    BuildTree(img);
    for (uint64_t b = img.sb().data_start + 100; b < img.sb().data_start + 140; b += 2)
      *img.refcount(b) = 1;  // 20 separate leaked blocks
    check::CheckOptions opts;
    opts.max_findings = 5;
    auto r = check::CheckPool(img.media(), opts);
    REQUIRE(r.ok());
    CHECK(r->findings.size() == 5);
    CHECK(r->errors == 20);
  }

  // ---------------------------------------------------------------------------
  // Superblock

  TEST_CASE("Superblock: a corrupt primary is restored from the backup") {
    Image img;
    BuildTree(img);
    img.super(0)->label[3] ^= 1;
    ExpectRepaired(img, {"superblock: primary is invalid: superblock checksum mismatch"});
    CHECK(std::memcmp(img.super(0), img.super(1), 256) == 0);
  }

  TEST_CASE("Superblock: a primary with a bad magic is restored from the backup") {
    Image img;
    std::memset(img.super(0), 0, 256);
    ExpectRepaired(img, {"superblock: primary is invalid: not a leasefs pool (bad magic)"});
  }

  TEST_CASE("Superblock: a backup that differs from the primary is rewritten") {
    Image img;
    std::memcpy(img.super(1)->label, "other", 5);
    Reseal(img.super(1));
    ExpectRepaired(img, {"superblock: backup in block 1 differs from the primary"});
    CHECK(std::memcmp(img.super(0), img.super(1), 256) == 0);
  }

  TEST_CASE("Superblock: a garbage backup is rewritten") {
    Image img;
    std::memset(img.super(1), 0xA5, 512);
    ExpectRepaired(img,
                   {"superblock: backup in block 1 is invalid: not a leasefs pool (bad magic)"});
  }

  TEST_CASE("Superblock: with no valid copy the pool cannot be checked further") {
    Image img;
    BuildTree(img);
    img.super(0)->checksum ^= 1;
    img.super(1)->data_blocks += 1;
    Reseal(img.super(1));
    for (bool repair : {false, true}) {
      const check::CheckReport r = Check(img, repair);
      CHECK(Problems(r) == std::vector<std::string>{
                               "superblock: no valid copy: primary: superblock checksum mismatch; "
                               "backup: data region out of bounds"});
      CHECK(r.ExitCode() == 4);
    }
  }

  TEST_CASE("Superblock: a pool without the magic is refused") {
    Image img;
    std::memset(img.super(0), 0, 512);
    std::memset(img.super(1), 0, 512);
    auto r = check::CheckPool(img.media(), check::CheckOptions{});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().err() == EUCLEAN);
    CHECK(r.status().message() == "not a leasefs pool (no superblock magic in block 0 or 1)");
  }

  TEST_CASE("Superblock: a newer format version is refused, not repaired") {
    Image img;
    for (uint64_t copy : {0, 1}) {
      img.super(copy)->version = kFormatVersion + 1;
      Reseal(img.super(copy));
    }
    check::CheckOptions opts;
    opts.repair = true;
    auto r = check::CheckPool(img.media(), opts);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().err() == EOPNOTSUPP);
  }

  TEST_CASE("Superblock: a pool smaller than two blocks is refused") {
    auto media = engine::SimMedia::Create(4096);
    auto r = check::CheckPool(*media, check::CheckOptions{});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().err() == EUCLEAN);
  }

  TEST_CASE("Superblock: an unknown state is reset to clean") {
    Image img;
    img.super(0)->state = 7;
    ExpectRepaired(img, {"superblock: unknown state 7"});
    CHECK(img.super(0)->state == kStateClean);
  }

  TEST_CASE("Superblock: a pool marked mounted is not an error") {
    Image img;
    img.super(0)->state = kStateMounted;
    CHECK(Check(img).findings.empty());
  }

  // ---------------------------------------------------------------------------
  // Journal

  std::vector<char> Bytes(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    return std::vector<char>(c, c + n);
  }

  TEST_CASE("Journal: a committed transaction is replayed before the check") {
    Image img;
    const Tree t = BuildTree(img);
    // The crash left the new link count in the journal only.
    Inode fixed = *img.inode(t.file);
    img.inode(t.file)->nlink = 1;
    img.CommitWithoutApplying({{img.offset(img.inode(t.file)), Bytes(&fixed, sizeof(fixed))}});
    const check::CheckReport r = Check(img);
    CHECK(r.journal_replayed);
    CHECK(Problems(r).empty());
    CHECK(Notes(r) ==
          std::vector<std::string>{"journal: replayed committed transaction 1 (1 record)"});
    CHECK(r.ExitCode() == 0);
    CHECK(img.inode(t.file)->nlink == 2);
    CHECK(Check(img).findings.empty());  // the replay cleared the magic
  }

  TEST_CASE("Journal: a transaction whose record points at the superblock is discarded") {
    Image img;
    const uint64_t zero = 0;
    img.CommitWithoutApplying({{8, Bytes(&zero, sizeof(zero))}});
    ExpectRepaired(img, {"journal: committed transaction 1 is corrupt: journal record outside "
                         "the metadata regions"});
    CHECK(img.super(0)->version == kFormatVersion);
  }

  TEST_CASE("Journal: a torn commit is ignored with a note") {
    Image img;
    const uint64_t zero = 0;
    img.CommitWithoutApplying({{img.offset(img.inode(5)), Bytes(&zero, sizeof(zero))}});
    reinterpret_cast<JournalHeader*>(img.block(img.sb().journal_start))->body_xxh64 ^= 1;
    const check::CheckReport r = Check(img);
    CHECK_FALSE(r.journal_replayed);
    CHECK(Notes(r) ==
          std::vector<std::string>{"journal: ignored transaction 1, which was never committed"});
    CHECK(r.ExitCode() == 0);
  }

  // ---------------------------------------------------------------------------
  // Preen

  TEST_CASE("Preen: repairs when every fix is safe") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 5;
    *img.refcount(t.xattr) = 3;
    const check::CheckReport r = Check(img, true, /*preen=*/true);
    CHECK_FALSE(r.preen_declined);
    CHECK(r.repaired == 2);
    CHECK(r.ExitCode() == 1);
    CHECK(Check(img).clean());
  }

  TEST_CASE("Preen: repairs nothing when a fix would lose data") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->nlink = 5;
    img.inline_extent(t.frag, 0)->flags = 0;
    img.inline_extent(t.frag, 0)->pool_block = 1;  // outside the data area
    const std::vector<char> before = img.Snapshot();
    const check::CheckReport r = Check(img, true, /*preen=*/true);
    CHECK(r.preen_declined);
    CHECK(r.repaired == 0);
    CHECK(r.errors == 3);  // nlink, the extent, and the block it no longer references
    CHECK(r.ExitCode() == 4);
    CHECK(img.Snapshot() == before);
  }

  TEST_CASE("Preen: reclaims orphans of an otherwise clean pool") {
    Image img;
    const uint64_t orphan = img.NewInode(S_IFREG | 0644);
    img.AddExtent(orphan, 0, img.AllocBlocks(2), 2);
    const check::CheckReport r = Check(img, true, /*preen=*/true);
    CHECK(r.ExitCode() == 0);
    CHECK(r.orphans == 1);
    CHECK(img.inode(orphan)->mode == 0);
    CHECK(Check(img).data_blocks_used == 0);
  }

  // ---------------------------------------------------------------------------
  // Interrupted repairs

  // Breaks the tree in ways whose repairs touch every kind of structure: the
  // backup superblock, an entry, link counts, a new /lost+found, an orphan,
  // an extent, refcounts.
  std::vector<char> DamagedTree() {
    Image img;
    const Tree t = BuildTree(img);
    img.super(1)->label[0] = 'x';
    img.inode(t.file)->nlink = 7;
    img.FindEntry(1, "fifo")->name_len = 0;
    const uint64_t orphan = img.NewInode(S_IFREG | 0600);
    img.AddExtent(orphan, 0, img.AllocBlocks(3), 3);
    img.inline_extent(t.frag, 3)->pool_block = 2;
    *img.refcount(t.xattr) = 0;
    *img.refcount(t.quarantined + 20) = 5;
    return img.Snapshot();
  }

  TEST_CASE("Repair: a crash at any persist point leaves a pool the next repair fixes") {
    const std::vector<char> damaged = DamagedTree();
    uint64_t points = 0;
    {
      Image img = Image::Load(damaged);
      CHECK(Check(img, true).repaired == 8);
      points = img.media().persist_points();
    }
    REQUIRE(points >= 10);
    for (uint64_t point = 1; point <= points; ++point) {
      for (bool torn : {false, true}) {
        CAPTURE(point);
        CAPTURE(torn);
        Image img = Image::Load(damaged);
        img.media().ArmCrash(point);
        Check(img, true);
        REQUIRE(img.media().crashed());
        Image after = Image::Load(img.media().CrashImage(point, torn));
        const check::CheckReport fix = Check(after, true);
        CHECK(fix.errors == 0);
        const check::CheckReport again = Check(after);
        CHECK(Problems(again).empty());
        CHECK(again.clean());
      }
    }
  }

  TEST_CASE("Progress: each walk that grows with the pool goes from 0 to its total by 4096s") {
    Image img(128 << 20);  // 8192 inode slots, 30000-odd data blocks
    std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> calls;
    check::CheckOptions opts;
    opts.progress = [&calls](std::string_view phase, uint64_t done, uint64_t total) {
      calls.push_back({std::string(phase), {done, total}});
    };
    auto r = check::CheckPool(img.media(), opts);
    REQUIRE(r.ok());
    CHECK(r->clean());
    // Each phase's calls, in order: 0, 4096, 8192, ... below its total, then
    // the total; the three walks of the inode table share theirs.
    std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> want;
    auto phase = [&](const char* name, uint64_t total) {
      for (uint64_t done = 0; done < total; done += check::kProgressStep)
        want.push_back({name, {done, total}});
      want.push_back({name, {total, total}});
    };
    REQUIRE(!calls.empty());
    // (The walks of the inode table cover the slots the pool has
    // initialized, which a lazily initialized table keeps under 4096.)
    const uint64_t slots = calls[0].second.second;
    CHECK(slots > 0);
    CHECK(slots < img.sb().inode_count);
    uint64_t blocks = 0;
    for (const auto& c : calls)
      if (c.first == "refcounts") blocks = c.second.second;
    CHECK(blocks > check::kProgressStep);
    CHECK(blocks <= img.sb().data_blocks);
    phase("inodes", slots);
    phase("directories", slots);
    phase("link counts", slots);
    phase("refcounts", blocks);
    CHECK(calls == want);
  }

}  // TEST_SUITE
}  // namespace
}  // namespace leasefs::testing
