// A mounted pool going read-only and back, and changing its atime rule (a
// remount: engine/mount_state.cc).
#include <cerrno>
#include <cstring>
#include <string>

#include <doctest/doctest.h>

#include "engine/layout.h"
#include "tests/engine/test_pool.h"

namespace leasefs::engine {
namespace {

using namespace testing;
using layout::kBlockSize;

const Filesystem::ReachOwner kOwner{4242, 777, 0xb007};

int Err(const Status& s) { return s.err(); }
template <typename T>
int Err(const Result<T>& r) {
  return r.status().err();
}

uint32_t SuperState(const SimMedia& media) {
  return reinterpret_cast<const layout::Superblock*>(media.base())->state;
}

TEST_SUITE("mount_state") {
  TEST_CASE("SetReadOnly: refuses every change, marks the pool clean, and back") {
    SimMedia* raw;
    auto fs = MustMount(FormattedPool(), &raw);
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, "data");
    CHECK(SuperState(*raw) == layout::kStateMounted);

    REQUIRE(fs->SetReadOnly(true, /*dry_run=*/true).ok());
    CHECK_FALSE(fs->read_only());
    REQUIRE(fs->SetReadOnly(true).ok());
    CHECK(fs->read_only());
    CHECK(SuperState(*raw) == layout::kStateClean);
    CHECK(Err(fs->Create(kRoot, 1, "g", 0644, 0)) == EROFS);
    CHECK(Err(fs->Unlink(kRoot, 1, "f")) == EROFS);
    iovec iov{const_cast<char*>("x"), 1};
    CHECK(Err(fs->Write(kRoot, f, 0, &iov, 1)) == EROFS);
    CHECK(Err(fs->SetXattr(kRoot, f, "user.a", "1", 0)) == EROFS);
    CHECK(Err(fs->Fallocate(kRoot, f, 0, 0, kBlockSize)) == EROFS);
    CHECK(Err(fs->MapForDax(kRoot, f, 0, kBlockSize, false, 1, kOwner, 8)) == EROFS);
    CHECK((fs->StatFs().f_flag & ST_RDONLY) != 0);
    CHECK(ReadAll(*fs, f) == "data");
    // A crash now needs no recovery: the image is a clean pool.
    {
      MountReport report;
      auto copy = MustMount(SimMedia::FromImage(raw->Snapshot()), nullptr, &report);
      CHECK(report.was_clean);
      CHECK(ReadAll(*copy, MustLookup(*copy, 1, "f")) == "data");
    }

    REQUIRE(fs->SetReadOnly(false).ok());
    CHECK_FALSE(fs->read_only());
    CHECK(SuperState(*raw) == layout::kStateMounted);
    MustWrite(*fs, f, 0, "DATA");
    CHECK(ReadAll(*fs, f) == "DATA");
  }

  TEST_CASE(
      "SetReadOnly: an unlinked inode whose last reference goes while read-only is freed "
      "when the mount is read-write again") {
    auto fs = MustMount(FormattedPool());
    const uint64_t free_before = fs->StatFs().f_ffree;
    const Ino f = MustCreate(*fs, 1, "f");  // +1 reference, as the kernel's
    REQUIRE(fs->Unlink(kRoot, 1, "f").ok());
    REQUIRE(fs->SetReadOnly(true).ok());
    fs->Forget(f, 1);
    CHECK(fs->StatFs().f_ffree == free_before - 1);  // kept: nothing is written read-only
    REQUIRE(fs->SetReadOnly(false).ok());
    CHECK(fs->StatFs().f_ffree == free_before);
  }

  TEST_CASE(
      "SetReadOnly: refused while writable reach records are in use, and for a pool mounted "
      "read-only; read-only records stay, and are cleared when it is writable again") {
    SimMedia* pool = nullptr;
    auto fs = MustMount(FormattedPool(), &pool);
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, std::string(kBlockSize, 'a'));
    REQUIRE(fs->MapForDax(kRoot, f, 0, kBlockSize, /*writable=*/true, 7, kOwner, 8).ok());
    const Status busy = fs->SetReadOnly(true, /*dry_run=*/true);
    CHECK(busy.err() == EBUSY);
    CHECK(std::string(busy.message()) ==
          "1 writable DAX mapping records are in use (mappings or pins; `leasectl dax` lists "
          "them)");
    CHECK(Err(fs->SetReadOnly(true)) == EBUSY);
    CHECK_FALSE(fs->read_only());
    CHECK(fs->DropReach(7) == 1);

    REQUIRE(fs->MapForDax(kRoot, f, 0, kBlockSize, /*writable=*/false, 8, kOwner, 8).ok());
    REQUIRE(fs->SetReadOnly(true).ok());
    CHECK(fs->ReachRecords().size() == 1);
    CHECK(fs->DropReach(8) == 1);
    CHECK(fs->ReachRecords().empty());
    // Not written read-only: a mount of the pool as it is still finds it.
    const auto records_in_pool = [&] {
      MountOptions ro;
      ro.read_only = true;
      auto again = Filesystem::Mount(SimMedia::FromImage(pool->Snapshot()), ro);
      REQUIRE(again.ok());
      return (*again)->ReachRecords().size();
    };
    CHECK(records_in_pool() == 1);
    REQUIRE(fs->SetReadOnly(false).ok());
    CHECK(records_in_pool() == 0);
    CHECK(fs->ReachRecords().empty());
    CHECK(fs->DropReach(8) == 0);

    SimMedia* raw;
    auto rw = MustMount(FormattedPool(), &raw);
    rw->Unmount();
    MountOptions ro;
    ro.read_only = true;
    auto mounted = Filesystem::Mount(SimMedia::FromImage(raw->Snapshot()), ro);
    REQUIRE(mounted.ok());
    CHECK((*mounted)->SetReadOnly(true).ok());  // no change
    const Status refused = (*mounted)->SetReadOnly(false, /*dry_run=*/true);
    CHECK(refused.err() == EROFS);
    CHECK(Err((*mounted)->SetReadOnly(false)) == EROFS);
    CHECK((*mounted)->read_only());
  }

  TEST_CASE("SetAtime: the rule changes while mounted") {
    auto fs = MustMount(FormattedPool());
    const Ino f = MustCreate(*fs, 1, "f");
    MustWrite(*fs, f, 0, "x");
    SetAttrArgs old;
    old.valid = SetAttrArgs::kAtime | SetAttrArgs::kMtime;
    old.atime_ns = 1'000'000'000'000'000'000;
    old.mtime_ns = 1'500'000'000'000'000'000;
    REQUIRE(fs->SetAttr(kRoot, f, old).ok());
    fs->SetAtime(AtimeMode::kNever, false);
    ReadAll(*fs, f);
    CHECK(fs->GetAttr(f)->attr.st_atim.tv_sec == 1'000'000'000);
    fs->SetAtime(AtimeMode::kRelatime, false);
    ReadAll(*fs, f);
    CHECK(fs->GetAttr(f)->attr.st_atim.tv_sec > 1'500'000'000);
  }
}

}  // namespace
}  // namespace leasefs::engine
