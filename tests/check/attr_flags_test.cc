// Attribute flags (docs/attr-flags.md): which inodes may carry them, the
// ATTR_FLAGS feature a pool with flags needs, and the superblock states a
// crash while adding that feature may leave (docs/pool_format.md, "Adding a
// feature").
#include <cerrno>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "engine/superblock.h"
#include "tests/check/image.h"

namespace leasefs::testing {
namespace {

using namespace layout;
using std::to_string;

std::string In(uint64_t ino) { return "inode " + to_string(ino) + ": "; }

// Both superblock copies with ATTR_FLAGS, as the engine leaves them.
void AddFeature(Image& img) {
  for (uint64_t copy : {0, 1})
    *img.super(copy) = engine::WithFeatures(*img.super(copy), kRoCompatAttrFlags, 0);
}

TEST_SUITE("check") {
  TEST_CASE("Attr flags: files and directories may carry them in a pool with the feature") {
    Image img;
    const Tree t = BuildTree(img);
    AddFeature(img);
    img.inode(t.file)->flags =
        kInodeImmutable | kInodeAppend | kInodeNodump | kInodeNoatime | kInodeSync;
    img.inode(t.dir)->flags = kInodeImmutable | kInodeDirsync;
    CHECK(Check(img).findings.empty());
  }

  TEST_CASE("Attr flags: on a type that cannot carry them they are cleared") {
    Image img;
    const Tree t = BuildTree(img);
    AddFeature(img);
    img.inode(t.fifo)->flags = kInodeImmutable;
    img.inode(t.file)->flags = kInodeNodump | kInodeDirsync;
    img.inode(t.longlink)->flags = kInodeAppend;
    ExpectRepaired(img, {In(t.file) + "attribute flags 0x200000 on a regular file",
                         In(t.longlink) + "attribute flags 0x40000 on a symlink",
                         In(t.fifo) + "attribute flags 0x20000 on a FIFO"});
    CHECK(img.inode(t.fifo)->flags == 0);
    CHECK(img.inode(t.file)->flags == kInodeNodump);
    CHECK(img.inode(t.longlink)->flags == 0);
  }

  TEST_CASE("Attr flags: without the feature in the superblock, the feature is added") {
    Image img;
    const Tree t = BuildTree(img);
    img.inode(t.file)->flags = kInodeImmutable;
    img.inode(t.dir)->flags = kInodeNodump;
    ExpectRepaired(img, {In(t.dir) + "has attribute flags, but the superblock lacks the "
                                     "ATTR_FLAGS feature"});
    CHECK(img.super(0)->feature_ro_compat == kRoCompatAttrFlags);
    CHECK(img.super(1)->feature_ro_compat == kRoCompatAttrFlags);
    CHECK(img.inode(t.file)->flags == kInodeImmutable);
  }

  TEST_CASE(
      "Attr flags: a read-only-compatible feature fsck does not know: checked, never "
      "repaired") {
    Image img;
    BuildTree(img);
    for (uint64_t copy : {0, 1})
      *img.super(copy) = engine::WithFeatures(*img.super(copy), uint64_t{1} << 9, 0);
    CHECK(Check(img).findings.empty());
    check::CheckOptions opts;
    opts.repair = true;
    const auto refused = check::CheckPool(img.media(), opts);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.status().err() == EOPNOTSUPP);
    CHECK(std::string(refused.status().message()) ==
          "the pool has read-only-compatible features this fsck does not know: it may check "
          "the pool but not repair it");
  }

  TEST_CASE("Attr flags: a crash while adding the feature leaves states fsck accepts") {
    Image img;
    BuildTree(img);
    const Superblock added = engine::WithFeatures(*img.super(0), kRoCompatAttrFlags, 0);
    SUBCASE("the backup has it, the primary not yet") {
      *img.super(1) = added;
      const check::CheckReport r = Check(img);
      CHECK(Problems(r).empty());
      CHECK(Notes(r) == std::vector<std::string>{
                            "superblock: the backup has (or was being given) feature bits the "
                            "primary lacks: adding a feature was interrupted before the primary "
                            "was written"});
    }
    SUBCASE("the backup torn between its feature word and its checksum") {
      *img.super(1) = added;
      img.super(1)->checksum = img.super(0)->checksum;
      CHECK(Problems(Check(img)).empty());
      CHECK(Notes(Check(img)).size() == 1);
    }
    SUBCASE("the primary torn between its feature word and its checksum") {
      *img.super(1) = added;
      img.super(0)->feature_ro_compat = kRoCompatAttrFlags;  // the checksum did not land
      const check::CheckReport r = Check(img);
      CHECK(Problems(r).empty());
      CHECK(Notes(r) == std::vector<std::string>{
                            "superblock: adding a feature was interrupted; the backup holds it"});
      CHECK(Problems(Check(img, /*repair=*/true)).empty());
      CHECK(img.super(0)->checksum == img.super(1)->checksum);
      CHECK(Check(img).findings.empty());
    }
    SUBCASE("a primary with a bit the backup lacks is not such a state") {
      *img.super(1) = added;
      img.super(0)->feature_ro_compat = kRoCompatAttrFlags | (uint64_t{1} << 5);
      CHECK(Problems(Check(img)) ==
            std::vector<std::string>{"superblock: primary is invalid: superblock checksum "
                                     "mismatch"});
    }
  }
}

}  // namespace
}  // namespace leasefs::testing
