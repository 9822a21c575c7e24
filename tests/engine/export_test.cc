// The lookups by inode number behind file handles, and the generations
// that tell a reused inode number apart (engine/export_ops.cc,
// docs/handles.md).
#include <cerrno>
#include <string>

#include <doctest/doctest.h>

#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;

template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

TEST_SUITE("export") {
  TEST_CASE("LookupInode and LookupParent: by number, linked inodes only, one reference each") {
    auto fs = MustMount(FormattedPool());
    const uint64_t free_before = fs->StatFs().f_ffree;
    const Ino d = MustMkdir(*fs, 1, "d");
    const Ino e = MustMkdir(*fs, d, "e");
    const Ino f = MustCreate(*fs, e, "f");
    auto self = fs->LookupInode(f);
    REQUIRE(self.ok());
    CHECK(self->attr.st_ino == f);
    CHECK(self->generation == fs->GetAttr(f)->generation);
    auto parent = fs->LookupParent(e);
    REQUIRE(parent.ok());
    CHECK(parent->attr.st_ino == d);
    CHECK(fs->LookupParent(1)->attr.st_ino == 1);  // the root is its own parent
    CHECK(Err(fs->LookupParent(f)) == ENOTDIR);
    CHECK(Err(fs->LookupInode(0)) == ENOENT);
    CHECK(Err(fs->LookupInode(1 << 30)) == ENOENT);
    CHECK(Err(fs->LookupInode(f + 1)) == ENOENT);  // a free slot

    // Unlinked: gone for handles, though references keep it.
    REQUIRE(fs->Unlink(kRoot, e, "f").ok());
    CHECK(Err(fs->LookupInode(f)) == ENOENT);
    REQUIRE(fs->Rmdir(kRoot, d, "e").ok());
    CHECK(Err(fs->LookupInode(e)) == ENOENT);
    CHECK(Err(fs->LookupParent(e)) == ENOENT);
    // Each answer took one reference: the creates' and the lookups' own
    // forgotten, everything is freed.
    fs->Forget(f, 2);  // create + LookupInode
    fs->Forget(e, 1);  // mkdir
    fs->Forget(d, 2);  // mkdir + LookupParent
    REQUIRE(fs->Rmdir(kRoot, 1, "d").ok());
    CHECK(fs->StatFs().f_ffree == free_before);
  }

  TEST_CASE(
      "Generations: a reused inode number gets a new one, and so does a pool formatted "
      "again") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    const uint64_t first = fs->GetAttr(f)->generation;
    REQUIRE(fs->Unlink(kRoot, 1, "f").ok());
    fs->Forget(f, 1);
    const Ino g = MustCreate(*fs, 1, "g");
    REQUIRE(g == f);
    CHECK(fs->GetAttr(g)->generation != first);
    // Two formats of a pool differ in their uuid, and so in generations.
    auto other = MustMount(FormattedPool());
    const Ino h = MustCreate(*other, 1, "f");
    REQUIRE(h == f);
    CHECK(other->GetAttr(h)->generation != first);
  }
}

}  // namespace
}  // namespace leasefs::engine
